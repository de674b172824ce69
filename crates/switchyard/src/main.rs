//! The `switchyard` command: `serve` the gateway, `check` a configuration file, `export` the live
//! configuration, or run a `mock` provider.
//!
//! This file only wires things together; behaviour lives in the engine, the server and the mock crates.
//! How the process logs is in `logging`; finding a local Ollama without a configuration in `ollama_probe`.

mod logging;
mod ollama_probe;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use switchyard_engine::config::{self, Config, KeyConfig, ProcessEnv, RouteConfig};
use switchyard_engine::Gateway;
use switchyard_mock::{Behavior, FaultKind, Flavor, MockConfig, MockServer};
use switchyard_wire::ProviderKind;

use crate::logging::{LogFormat, LogSettings};

// Many small, short-lived allocations per request (JSON trees, header maps): mimalloc spends less CPU on
// them than the system allocator, measured in docs/benchmarks.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "switchyard", version, about = "A self-hosted, OpenAI-compatible AI gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. Without --config, providers come from the standard environment variables
    /// (OPENAI_API_KEY, ANTHROPIC_API_KEY, AZURE_OPENAI_API_KEY + AZURE_OPENAI_ENDPOINT, GROQ_API_KEY, ...)
    /// and a local Ollama on 127.0.0.1:11434 if one answers.
    Serve(ServeArgs),
    /// Validate a configuration file without serving: exit 0 with a summary, or 1 with every error.
    Check {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// Also print, for each virtual key, every provider its requests can reach (with the providers'
        /// tags and how), and those they cannot: the residency report.
        #[arg(long)]
        explain: bool,
    },
    /// Write the live configuration as one YAML file that `check` accepts and `serve` runs: the
    /// configuration file with the virtual keys, teams and customers the management API wrote (read from
    /// --data-dir or --database-url). No secret is written: virtual keys as the SHA-256 of their value,
    /// provider keys written literally in the file as env.NAME (the names to set are printed).
    Export(ExportArgs),
    /// Run a mock upstream provider (OpenAI, Azure, Anthropic, Ollama, Cohere, Gemini or Bedrock wire format) for tests and demos.
    Mock(MockArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// YAML (or JSON) configuration file.
    #[arg(long, short, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides the file's `listen`; default 127.0.0.1:8080).
    #[arg(long, env = "SWITCHYARD_LISTEN")]
    listen: Option<SocketAddr>,
    /// Keep what the management API writes, the meters' use and the admin token in this directory
    /// (SQLite, `switchyard.db`); created if missing. Without it (and without --database-url) they live in
    /// memory and start afresh with every run.
    #[arg(long, env = "SWITCHYARD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Keep them in PostgreSQL instead (`postgres://user:pass@host/db`), shared by every replica.
    #[arg(long, env = "SWITCHYARD_DATABASE_URL", conflicts_with = "data_dir")]
    database_url: Option<String>,
    /// Count budgets and rate limits in Redis (`redis://host:6379`), shared by every replica (overrides
    /// the file's `governance.redis.url`; see docs/governance.md for what happens when it is unreachable).
    #[arg(long, env = "SWITCHYARD_REDIS_URL")]
    redis_url: Option<String>,
    /// Worker threads serving requests (default: one per CPU core). On a small box shared with other busy
    /// processes, fewer workers spend less CPU on waking each other (see docs/benchmarks.md).
    #[arg(long, env = "SWITCHYARD_WORKERS")]
    workers: Option<usize>,
    /// Also start two built-in mock providers, "cloud" (OpenAI format) and "local" (Ollama format), so the
    /// gateway answers without any key or network.
    #[arg(long)]
    demo: bool,
    /// Loopback port of the demo's "cloud" mock (default 0: a free port).
    #[arg(long, default_value_t = 0, requires = "demo")]
    demo_cloud_port: u16,
    /// Loopback port of the demo's "local" mock (default 0: a free port).
    #[arg(long, default_value_t = 0, requires = "demo")]
    demo_local_port: u16,
    #[command(flatten)]
    log: LogArgs,
    /// No per-request log line (also SWITCHYARD_REQUEST_LOG=off, or the filter
    /// SWITCHYARD_LOG=switchyard::request=off).
    #[arg(long)]
    no_request_log: bool,
}

#[derive(Args)]
struct ExportArgs {
    /// The configuration file the gateway serves.
    #[arg(long, short, env = "SWITCHYARD_CONFIG")]
    config: PathBuf,
    /// The gateway's data directory (its SQLite store).
    #[arg(long, env = "SWITCHYARD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The gateway's PostgreSQL store instead.
    #[arg(long, env = "SWITCHYARD_DATABASE_URL", conflicts_with = "data_dir")]
    database_url: Option<String>,
    /// Write the file here instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct LogArgs {
    /// Log format on standard error: auto (text, coloured only on a terminal and never when NO_COLOR is
    /// set), text (never coloured) or json (one JSON object per line).
    #[arg(long, value_enum, env = "SWITCHYARD_LOG_FORMAT", default_value = "auto")]
    log_format: LogFormat,
}

#[derive(Args)]
struct MockArgs {
    /// Wire format: openai, azure, anthropic, ollama, cohere, gemini (Gemini API and Vertex AI paths; `vertex` is the same) or bedrock.
    #[arg(long, default_value = "openai")]
    provider: String,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Print `listening on http://ADDR` as the first line of standard output (for scripts and tests).
    #[arg(long)]
    print_addr: bool,
    /// Models the mock serves (comma-separated); default: a few typical ones per format.
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Accept any model name.
    #[arg(long)]
    any_model: bool,
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Latency varies uniformly by up to this much either way.
    #[arg(long, default_value_t = 0)]
    latency_jitter_ms: u64,
    #[arg(long, default_value_t = 0)]
    ttft_ms: u64,
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Share (0..1) of requests that fail.
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// Status codes failures are drawn from, e.g. 429,500,529.
    #[arg(long, value_delimiter = ',')]
    fault_codes: Vec<u16>,
    /// A non-status fault instead: hang, slow_first_byte, reset, malformed, stream_error.
    #[arg(long)]
    fault_kind: Option<String>,
    /// Retry-After seconds on 429/503/529 faults.
    #[arg(long)]
    retry_after: Option<u64>,
    /// Require this API key; any other gets a 401.
    #[arg(long)]
    require_key: Option<String>,
    #[command(flatten)]
    log: LogArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli.command) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(ServeArgs { workers: Some(n), .. }) = &cli.command {
        builder.worker_threads((*n).max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Check { config, explain } => check(&config, explain),
        Command::Export(args) => runtime.block_on(export(args)),
        Command::Mock(args) => runtime.block_on(mock(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("{}", msg.trim_end());
            ExitCode::FAILURE
        }
    }
}

fn init_logging(command: &Command) -> Result<(), logging::LogSetupError> {
    let env = std::env::var("SWITCHYARD_REQUEST_LOG").ok();
    let settings = match command {
        Command::Serve(a) => {
            LogSettings { format: a.log.log_format, request_log: !a.no_request_log && logging::request_log_from_env(env.as_deref())? }
        }
        Command::Mock(a) => LogSettings { format: a.log.log_format, request_log: true },
        Command::Check { .. } | Command::Export(_) => LogSettings { format: LogFormat::Auto, request_log: true },
    };
    logging::init(settings)
}

/// `switchyard check`: the same loading and the same gateway construction as `serve`, so a file that
/// passes here starts there, and each route is shown as the targets `serve` would try.
fn check(path: &std::path::Path, explain: bool) -> Result<(), String> {
    // Building the gateway builds HTTP clients (the image fetcher's even without providers), which need it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = config::load_file(path, &ProcessEnv).map_err(|e| e.to_string())?;
    let gateway = Gateway::new(&cfg).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("{}: ok", path.display());
    print_summary(&cfg, &gateway);
    if explain {
        let lines = switchyard_engine::governance::residency::explain(&cfg);
        println!("  virtual keys: {}", cfg.governance.keys.len());
        for l in lines {
            println!("    {l}");
        }
    }
    Ok(())
}

fn print_summary(cfg: &Config, gateway: &Gateway) {
    let scope = if cfg.listen.ip().is_loopback() { "this machine only" } else { "reachable from the network" };
    println!("  listen: {} ({scope})", cfg.listen);
    println!("  providers: {}", cfg.providers.len());
    for p in &cfg.providers {
        let keys = if p.keys.is_empty() {
            "keyless".to_string()
        } else {
            let names: Vec<String> = p.keys.iter().map(|k| format!("{} weight {}", k.name, k.weight)).collect();
            format!("keys: {}", names.join(", "))
        };
        let tags = if p.tags.is_empty() { String::new() } else { format!(" [{}]", p.tags.join(", ")) };
        let models = if p.models.is_empty() {
            "models: any (none listed)".to_string()
        } else {
            format!("models: only {} (an allow-list)", p.models.join(", "))
        };
        println!("    {} ({}) {} {keys}{tags}; {models}", p.name, p.kind.as_str(), p.base_url);
    }
    let lines = route_lines(cfg, gateway);
    println!("  routed models: {}", lines.len());
    for l in lines {
        println!("    {l}");
    }
}

/// One line per routed model name: how the name resolves and the targets tried in order, computed by the
/// gateway's own planner (without the upstreams' model lists, which `serve` fetches at start).
fn route_lines(cfg: &Config, gateway: &Gateway) -> Vec<String> {
    let mut out = Vec::new();
    for r in &cfg.routes {
        let mut extras = Vec::new();
        if r.hedge.is_some() {
            extras.push("hedged".to_string());
        }
        if let Some(d) = r.deadline {
            extras.push(format!("deadline {}s", d.as_secs_f64()));
        }
        if r.fail_fast {
            extras.push("fail-fast".to_string());
        }
        if !r.context_fallbacks.is_empty() {
            let c: Vec<&str> = r.context_fallbacks.iter().map(|f| f.target.as_str()).collect();
            extras.push(format!("prompt too long: {}", c.join(" -> ")));
        }
        let extras = if extras.is_empty() { String::new() } else { format!(" ({})", extras.join("; ")) };
        for m in &r.models {
            match gateway.plan(m, &[]) {
                Ok(plan) => {
                    let labels: Vec<&str> = plan.targets.iter().map(|t| t.label.as_str()).collect();
                    let mut line = format!("{m} [{}]: {}{extras}", plan.via.describe(), labels.join(" -> "));
                    if plan.via == switchyard_engine::Via::OnlyProvider && !r.fallbacks.is_empty() {
                        line.push_str(&format!(
                            "\n      note: no provider lists \"{m}\", so it is sent to the only provider first; if it names the chain rather than a model, write targets: instead of fallbacks:"
                        ));
                    }
                    out.push(line);
                }
                Err(e) => out.push(format!(
                    "{m}: no provider lists it in the file; served only if a provider's own model list has it at start ({e})"
                )),
            }
        }
    }
    out
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    // Every HTTP client of the process (upstreams, image fetches, the Ollama probe) needs it, and reqwest
    // is built without a bundled one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cfg = match &args.config {
        Some(path) => config::load_file(path, &ProcessEnv).map_err(|e| e.to_string())?,
        None => {
            let mut cfg = config::from_env(&ProcessEnv);
            if let Some(base) = ollama_probe::probe().await {
                cfg.providers.push(config::keyless_provider("ollama", ProviderKind::Ollama, &base, &["on-prem"]));
            }
            cfg
        }
    };
    if let Some(listen) = args.listen {
        cfg.listen = listen;
    }
    // Kept alive for as long as the gateway serves.
    let _mocks = if args.demo {
        Some(add_demo_providers(&mut cfg, DemoPorts { cloud: args.demo_cloud_port, local: args.demo_local_port }).await?)
    } else {
        None
    };
    if cfg.providers.is_empty() {
        tracing::warn!("no providers configured: set OPENAI_API_KEY (or another provider's key), pass --config, or try --demo");
    }

    let stores = open_store(args.data_dir.as_deref(), args.database_url.as_deref()).await?;
    let store = stores.as_ref().map(|s| Arc::clone(&s.governance));
    let shared = open_shared_counters(&args, &cfg).await?;
    let counters = shared.as_ref().map(|s| Arc::clone(&s.0));
    let gateway = match &stores {
        Some(stores) => {
            // The providers the API wrote first: the stored virtual keys may name them.
            let catalog = switchyard_engine::providers::Catalog::load(&cfg, Arc::clone(&stores.providers))
                .await
                .map_err(|e| format!("error: the providers kept in the store cannot be used: {e}"))?;
            let all = catalog.config().await;
            let live = switchyard_engine::governance::live::Live::open(&all, Arc::clone(&stores.governance), counters)
                .await
                .map_err(|e| format!("error: the governance store cannot be used: {e}"))?;
            cfg.providers = all.providers;
            Gateway::with_catalog(catalog, live).await
        }
        None if counters.is_some() => {
            let kept = Arc::new(switchyard_engine::governance::store::MemoryStore::default());
            let live = switchyard_engine::governance::live::Live::open(&cfg, kept, counters)
                .await
                .map_err(|e| format!("error: the governance store cannot be used: {e}"))?;
            Gateway::with_governance(&cfg, live)
        }
        None => Gateway::new(&cfg),
    };
    let gateway = Arc::new(gateway.map_err(|e| format!("error: {e}"))?);
    let ledger = store.as_ref().map(|s| {
        let (ledger, writer) = switchyard_engine::account::Ledger::start(Arc::clone(s));
        gateway.set_ledger(ledger.clone());
        (ledger, writer)
    });
    if store.is_some() {
        // The meters' use is saved every few seconds, off the request path, and once more at shutdown.
        let saver = Arc::clone(&gateway);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(METER_SAVE_INTERVAL);
            let mut refused = String::new();
            loop {
                tick.tick().await;
                if let Err(e) = saver.governance().save_meters().await {
                    tracing::warn!("cannot save the meters' use: {e}");
                }
                // What other replicas sharing the store wrote through their management API.
                match saver.governance().sync().await {
                    Ok(true) => {
                        refused.clear();
                        tracing::info!("took up virtual keys, teams or customers another replica wrote");
                    }
                    Ok(false) => refused.clear(),
                    // Said once until it changes, not every few seconds.
                    Err(e) if e.to_string() != refused => {
                        refused = e.to_string();
                        tracing::warn!("what the store holds does not fit this gateway's configuration, so it is not taken up: {e}");
                    }
                    Err(_) => {}
                }
            }
        });
    }
    let tracer = match &cfg.traces {
        Some(t) => {
            let (tracer, exporter) = switchyard_engine::telemetry::trace::Tracer::start(t).map_err(|e| format!("error: traces: {e}"))?;
            gateway.sinks().add(tracer.clone());
            tracing::info!(endpoint = %t.endpoint, sample_ratio = t.sample_ratio, "exporting traces over OTLP/HTTP");
            Some((tracer, exporter))
        }
        None => None,
    };
    let refresher = gateway.clone();
    tokio::spawn(async move { refresher.refresh_models().await });

    let listener = tokio::net::TcpListener::bind(cfg.listen).await.map_err(|e| format!("error: cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| format!("error: {e}"))?;
    for p in &cfg.providers {
        log_provider(p);
    }
    // The same lines `check` prints, so what the operator reviewed is what runs.
    for l in route_lines(&cfg, &gateway) {
        tracing::info!("route {}", l.replace("\n      ", "; "));
    }
    let fd_limit = raise_fd_limit();
    let (limits, warning) = switchyard_server::ConnectionLimits::new(&cfg.server, fd_limit);
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    let human = switchyard_engine::human::duration;
    tracing::info!(
        max_connections = limits.max_connections,
        header_read_timeout = %human(limits.header_read_timeout),
        idle_timeout = %human(limits.idle_timeout),
        write_timeout = %human(limits.write_timeout),
        body_read_timeout = %human(cfg.server.body_read_timeout),
        "connection limits"
    );
    if !addr.ip().is_loopback() && !gateway.requires_virtual_key() {
        // Without virtual keys, whoever can connect on a reachable address spends the providers' keys.
        tracing::warn!(
            "listening on {addr}, which is not a loopback address, and no virtual key is required: anyone who can reach this port can use every configured provider and its keys; configure governance.virtual_keys (then every request needs one), listen on 127.0.0.1 (--listen 127.0.0.1:8080), or put the gateway behind a proxy that authenticates callers"
        );
    }
    if addr.ip().is_loopback() && cfg.server.allowed_hosts.is_empty() {
        tracing::info!("listening on a loopback address: requests for other host names are refused (server.allowed_hosts adds some)");
    }
    // Before the address is announced: whoever waits for it may read the token file next.
    let admin = Some(switchyard_server::admin::AdminToken::new(&admin_token(args.data_dir.as_deref())?));
    println!("switchyard listening on http://{addr} (OpenAI base URL: http://{addr}/v1)");
    let metrics = switchyard_server::install_metrics(&cfg.metrics);
    if metrics.is_some() {
        // Every finished request is counted from its record; budgets are read every few seconds.
        gateway.sinks().add(Arc::clone(gateway.request_metrics()) as Arc<dyn switchyard_engine::observe::RequestSink>);
        let reader = Arc::clone(&gateway);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(switchyard_engine::telemetry::metrics::BUDGET_INTERVAL);
            loop {
                tick.tick().await;
                reader.refresh_budget_gauges();
            }
        });
    }
    // After the metrics recorder, so that the log's counters are exported from 0; before serving.
    let request_log = start_request_log(&cfg.logs, stores.as_ref(), &gateway);
    if let Some((shared, _)) = &shared {
        shared.publish();
    }
    let state = switchyard_server::AppState {
        gateway,
        server: cfg.server.clone(),
        metrics,
        admin,
        request_log: request_log.as_ref().map(|l| Arc::clone(&l.store)),
    };
    let saver = Arc::clone(&state.gateway);
    switchyard_server::serve(listener, switchyard_server::router(state, addr), limits, shutdown_signal()).await;
    if store.is_some() {
        if let Err(e) = saver.governance().save_meters().await {
            tracing::warn!("cannot save the meters' use at shutdown: {e}");
        }
    }
    if let Some((shared, settler)) = shared {
        // Reservations of requests cut by the shutdown are released, and what they used sent.
        shared.drain(Duration::from_secs(5)).await;
        settler.abort();
    }
    if let Some((tracer, exporter)) = tracer {
        tracer.stop();
        if tokio::time::timeout(Duration::from_secs(5), exporter).await.is_err() {
            tracing::warn!("traces were still being exported after 5s at shutdown; the rest is lost");
        }
    }
    if let Some((ledger, writer)) = ledger {
        ledger.stop();
        if tokio::time::timeout(Duration::from_secs(10), writer).await.is_err() {
            tracing::warn!("the usage ledger was still being written after 10s at shutdown; the rest is lost");
        }
    }
    if let Some(log) = request_log {
        log.prune.abort();
        log.sink.stop();
        if tokio::time::timeout(Duration::from_secs(10), log.writer).await.is_err() {
            tracing::warn!("the request log was still being written after 10s at shutdown; the rest is lost");
        }
    }
    Ok(())
}

/// The request log while the gateway serves: where it is kept, its sink's writer, its pruner.
struct RequestLog {
    store: Arc<dyn switchyard_engine::reqlog::RequestLogStore>,
    sink: switchyard_engine::reqlog::LogSink,
    writer: tokio::task::JoinHandle<()>,
    prune: tokio::task::JoinHandle<()>,
}

/// Starts the request log (`logs:`) in the gateway's store, or in memory without one (the newest
/// records only, so that a gateway started with no flags still shows its requests).
fn start_request_log(cfg: &config::logs::LogSettings, stores: Option<&Stores>, gateway: &Gateway) -> Option<RequestLog> {
    use switchyard_engine::reqlog::{prune_task, LogSink, MemoryLog};
    if !cfg.enabled {
        tracing::info!("the request log is off (logs.enabled: false)");
        return None;
    }
    let store: Arc<dyn switchyard_engine::reqlog::RequestLogStore> = match stores {
        Some(s) => Arc::clone(&s.logs),
        None => {
            let rows = usize::try_from(cfg.max_rows).unwrap_or(usize::MAX).min(switchyard_engine::reqlog::memory::MEMORY_ROWS);
            tracing::info!(rows, "the request log is kept in memory (no --data-dir or --database-url): the newest {rows} requests");
            Arc::new(MemoryLog::new(rows))
        }
    };
    let (sink, writer) = LogSink::start(Arc::clone(&store), cfg.batching());
    gateway.sinks().add(Arc::new(sink.clone()));
    if cfg.bodies {
        gateway.sinks().capture_bodies(cfg.max_body_bytes);
        tracing::info!(max_body_bytes = cfg.max_body_bytes, "the request log keeps request and response bodies (logs.bodies)");
    }
    let prune = prune_task(Arc::clone(&store), cfg.retention, cfg.max_rows, cfg.stats_retention);
    Some(RequestLog { store, sink, writer, prune })
}

/// `switchyard export`: the file merged with the store's entities (see `governance::export`), checked to
/// load, written whole.
async fn export(args: ExportArgs) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.config).map_err(|e| format!("error: cannot read {}: {e}", args.config.display()))?;
    if let Some(dir) = &args.data_dir {
        // Opening a store creates it: a mistyped directory would export an empty one without a word.
        if !dir.join("switchyard.db").is_file() {
            return Err(format!("error: --data-dir {}: no switchyard.db there (is it the directory serve was given?)", dir.display()));
        }
    }
    let store = open_store(args.data_dir.as_deref(), args.database_url.as_deref())
        .await?
        .ok_or("error: export reads what the management API wrote from the gateway's store: give --data-dir DIR or --database-url URL")?;
    let stored = store.governance.load().await.map_err(|e| format!("error: reading the store: {e}"))?;
    let providers = store.providers.load_providers().await.map_err(|e| format!("error: reading the store: {e}"))?;
    let out = switchyard_engine::governance::export::export(&text, &stored, &providers)
        .map_err(|e| format!("error: {}: {e}", args.config.display()))?;
    for n in &out.notes {
        eprintln!("note: {n}");
    }
    if !out.needs_env.is_empty() {
        eprintln!("note: set before serving the exported file: {}", out.needs_env.join(", "));
    }
    match &args.output {
        Some(path) => {
            let aside = path.with_extension(format!("tmp-{}", std::process::id()));
            std::fs::write(&aside, &out.yaml)
                .and_then(|()| std::fs::rename(&aside, path))
                .map_err(|e| format!("error: cannot write {}: {e}", path.display()))?;
            eprintln!(
                "exported {} provider(s), {} customer(s), {} team(s), {} virtual key(s) from the store to {}",
                providers.len(),
                stored.customers.len(),
                stored.teams.len(),
                stored.keys.len(),
                path.display()
            );
        }
        None => print!("{}", out.yaml),
    }
    Ok(())
}

/// How often the meters' use is saved to the store.
const METER_SAVE_INTERVAL: Duration = Duration::from_secs(5);

/// One database seen through the engine's two store traits.
struct Stores {
    governance: Arc<dyn switchyard_engine::governance::store::GovernanceStore>,
    providers: Arc<dyn switchyard_engine::providers::store::ProviderStore>,
    logs: Arc<dyn switchyard_engine::reqlog::RequestLogStore>,
}

/// The store the flags ask for: SQLite in the data directory, or PostgreSQL.
async fn open_store(data_dir: Option<&std::path::Path>, database_url: Option<&str>) -> Result<Option<Stores>, String> {
    if let Some(url) = database_url {
        let s = Arc::new(switchyard_store::PostgresStore::connect(url).await.map_err(|e| format!("error: --database-url: {e}"))?);
        return Ok(Some(Stores { governance: s.clone(), providers: s.clone(), logs: s }));
    }
    if let Some(dir) = data_dir {
        let path = dir.join("switchyard.db");
        let s =
            Arc::new(switchyard_store::SqliteStore::open(&path).await.map_err(|e| format!("error: --data-dir {}: {e}", dir.display()))?);
        tracing::info!(path = %path.display(), "governance store");
        return Ok(Some(Stores { governance: s.clone(), providers: s.clone(), logs: s }));
    }
    Ok(None)
}

/// The counters the replicas share, when `governance.redis` or `--redis-url` asks for them: the client
/// (connecting lazily, so a Redis down at start does not stop the gateway) and the task that settles.
async fn open_shared_counters(
    args: &ServeArgs,
    cfg: &Config,
) -> Result<Option<(Arc<switchyard_engine::governance::shared::Shared>, tokio::task::JoinHandle<()>)>, String> {
    use secrecy::ExposeSecret;
    let section = match (&args.redis_url, &cfg.governance.redis) {
        (Some(url), Some(c)) => config::SharedCountersConfig { url: url.clone().into(), ..c.clone() },
        (Some(url), None) => config::SharedCountersConfig::with_url(url),
        (None, Some(c)) => c.clone(),
        (None, None) => return Ok(None),
    };
    let counters = switchyard_store::RedisCounters::new(section.url.expose_secret(), &section.prefix, section.timeout)
        .map_err(|e| format!("error: {e}"))?;
    match tokio::time::timeout(section.timeout * 4, counters.ping()).await {
        Ok(Ok(())) => tracing::info!("budgets and rate limits are counted in {}, shared by every replica", counters.describe_for_log()),
        Ok(Err(e)) => tracing::warn!("the shared counters ({}) do not answer yet: {e}", counters.describe_for_log()),
        Err(_) => tracing::warn!(
            "the shared counters ({}) do not answer yet (no answer within {:?})",
            counters.describe_for_log(),
            section.timeout * 4
        ),
    }
    let (shared, task) = switchyard_engine::governance::shared::Shared::start(Arc::new(counters), &section);
    Ok(Some((shared, task)))
}

/// The management API's token: `SWITCHYARD_ADMIN_TOKEN`; else the one kept in the data directory; else
/// one made now, kept there if there is a data directory, and logged once (in the log's own format, so a
/// JSON log stays JSON).
fn admin_token(data_dir: Option<&std::path::Path>) -> Result<String, String> {
    if let Some(t) = std::env::var("SWITCHYARD_ADMIN_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        return Ok(t.trim().to_string());
    }
    let file = data_dir.map(|d| d.join("admin-token"));
    if let Some(f) = &file {
        if let Ok(t) = std::fs::read_to_string(f) {
            if !t.trim().is_empty() {
                return Ok(t.trim().to_string());
            }
        }
    }
    let mut rng = fastrand::Rng::new();
    let token: String = std::iter::repeat_with(|| rng.alphanumeric()).take(40).collect();
    let token = format!("sy-admin-{token}");
    let kept = match &file {
        Some(f) => {
            write_private(f, &token).map_err(|e| format!("error: cannot keep the admin token in {}: {e}", f.display()))?;
            format!("kept in {}", f.display())
        }
        None => "not kept: the next start makes another".to_string(),
    };
    tracing::info!(admin_token = %token, "the management API (/api/providers, /api/governance/...) needs an admin token and none was set: made one, shown once ({kept}); set SWITCHYARD_ADMIN_TOKEN to choose one");
    Ok(token)
}

/// Writes a file only its owner can read, whole or not at all (written aside, then renamed into place),
/// so that nobody ever reads half a token.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let aside = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    let mut f = o.open(&aside)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&aside, path)
}

/// Raises the soft open-file limit to the hard one: every client and upstream connection is a file
/// descriptor, and the usual soft default (1024) would cap the gateway long before its own limits do.
/// Returns the limit now in force, which sizes the default connection cap.
#[cfg(unix)]
fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => {
            tracing::info!(open_file_limit = n, "open-file limit");
            Some(n)
        }
        Err(e) => {
            let current = rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft);
            tracing::warn!(open_file_limit = current, "cannot raise the open-file limit: {e}");
            current
        }
    }
}

#[cfg(not(unix))]
fn raise_fd_limit() -> Option<u64> {
    None
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// One line per provider at start: what it is, where, and with which keys (names only) and tags.
fn log_provider(p: &config::ProviderConfig) {
    let key_names: Vec<&str> = p.keys.iter().map(|k| k.name.as_str()).collect();
    let keys = if key_names.is_empty() { "no keys".to_string() } else { format!("{} key(s): {}", key_names.len(), key_names.join(", ")) };
    let tags = (!p.tags.is_empty()).then(|| p.tags.join(","));
    tracing::info!(
        provider = %p.name,
        kind = %p.kind.as_str(),
        base_url = %p.base_url,
        keys = key_names.len(),
        key_names = (!key_names.is_empty()).then(|| key_names.join(",")).map(tracing::field::display),
        tags = tags.as_deref().map(tracing::field::display),
        "provider {} ({}) at {}, {keys}",
        p.name,
        p.kind.as_str(),
        p.base_url
    );
}

/// `--demo-cloud-port`, `--demo-local-port` (0: a free port).
struct DemoPorts {
    cloud: u16,
    local: u16,
}

/// Starts the demo's built-in providers on loopback ports and adds them to the configuration.
async fn add_demo_providers(cfg: &mut Config, ports: DemoPorts) -> Result<Vec<MockServer>, String> {
    let mut servers = Vec::new();
    for (name, flavor, kind, tags, port, flag) in [
        ("cloud", Flavor::OpenAi, ProviderKind::OpenAi, ["cloud"], ports.cloud, "--demo-cloud-port"),
        ("local", Flavor::Ollama, ProviderKind::Ollama, ["on-prem"], ports.local, "--demo-local-port"),
    ] {
        if cfg.providers.iter().any(|p| p.name == name) {
            tracing::warn!(provider = %name, "--demo: a provider with this name is configured already; the demo one is not added");
            continue;
        }
        let mut mcfg = MockConfig::new(flavor);
        mcfg.name = format!("demo-{name}");
        let models = mcfg.models.clone();
        let at = SocketAddr::from(([127, 0, 0, 1], port));
        let server = MockServer::start(mcfg, at).await.map_err(|e| {
            let fix = if port == 0 { String::new() } else { format!("; choose another port with {flag}, or 0 for a free one") };
            format!("error: cannot start the demo {name} provider on {at} ({flag} {port}): {e}{fix}")
        })?;
        let mut p = config::keyless_provider(name, kind, &server.base_url(), &tags);
        if kind.requires_key() {
            p.keys.push(KeyConfig { name: "demo".into(), secret: SecretString::from("sk-demo"), weight: 1.0, models: vec![] });
        }
        p.models = models;
        tracing::info!(provider = %name, base_url = %server.base_url(), "demo provider started");
        cfg.providers.push(p);
        servers.push(server);
    }
    if cfg.providers.iter().any(|p| p.name == "cloud") && cfg.providers.iter().any(|p| p.name == "local") {
        cfg.routes.push(RouteConfig::new(&["cloud/gpt-4o-mini"], &["local/llava:latest"]));
    }
    Ok(servers)
}

async fn mock(args: MockArgs) -> Result<(), String> {
    let flavor = Flavor::parse(&args.provider).ok_or_else(|| {
        format!("error: --provider must be openai, azure, anthropic, ollama, cohere, gemini or bedrock, got {}", args.provider)
    })?;
    let mut cfg = MockConfig::new(flavor);
    if let Some(m) = args.models {
        cfg.models = m;
    }
    if args.any_model {
        cfg.models.clear();
    }
    let fault_kind = match args.fault_kind.as_deref() {
        Some(k) => Some(FaultKind::parse(k).ok_or_else(|| format!("error: unknown --fault-kind {k}"))?),
        None => None,
    };
    cfg.behavior = Behavior {
        latency_ms: args.latency_ms,
        latency_jitter_ms: args.latency_jitter_ms,
        ttft_ms: args.ttft_ms,
        chunk_delay_ms: args.chunk_delay_ms,
        fault_rate: args.fault_rate,
        fault_codes: args.fault_codes,
        fault_kind,
        retry_after_secs: args.retry_after,
        ..Behavior::default()
    };
    cfg.require_key = args.require_key;
    let server = MockServer::start(cfg, args.listen).await.map_err(|e| format!("error: cannot listen on {}: {e}", args.listen))?;
    if args.print_addr {
        println!("listening on {}", server.base_url());
    } else {
        println!("mock {} provider listening on {}", flavor.as_str(), server.base_url());
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    shutdown_signal().await;
    server.shutdown().await;
    Ok(())
}
