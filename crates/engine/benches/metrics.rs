//! What `/metrics` costs after 10 000 requests across 10 providers (3 models each) and 50 virtual keys
//! (in 5 teams, each key with a budget): the page's size, the time to render it (the recorder's part and
//! the request metrics' own part, as the handler does), and the time to count one request from its record.
//! Figures in docs/benchmarks.md. `cargo bench -p switchyard-engine --bench metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard_engine::config::parse_str;
use switchyard_engine::observe::{AttemptRecord, Caller, RequestRecord, RequestSink};
use switchyard_engine::telemetry::metrics::{LATENCY_HISTOGRAMS, OVERHEAD_HISTOGRAMS};
use switchyard_engine::Gateway;

const PROVIDERS: usize = 10;
const KEYS: usize = 50;
const REQUESTS: usize = 10_000;

fn config() -> String {
    let mut y = String::from("providers:\n");
    for p in 0..PROVIDERS {
        let tag = if p % 3 == 0 { "on-prem" } else { "cloud" };
        let _ = writeln!(
            y,
            "  p{p}:\n    type: openai\n    base_url: http://127.0.0.1:1\n    keys: [{{name: a, value: sk-a{p}}}, {{name: b, value: sk-b{p}}}]\n    models: [m0, m1, m2]\n    tags: [{tag}]"
        );
    }
    y.push_str("governance:\n  teams:\n");
    for t in 0..5 {
        let _ = writeln!(y, "    - {{id: team-{t}, name: team-{t}, budget: {{max_limit: 1000}}}}");
    }
    y.push_str("  virtual_keys:\n");
    for k in 0..KEYS {
        let _ = writeln!(y, "    - {{id: vk-{k}, name: key-{k}, team_id: team-{}, budget: {{max_limit: 100}}}}", k % 5);
    }
    y
}

fn record(rng: &mut fastrand::Rng) -> RequestRecord {
    let p = rng.usize(..PROVIDERS);
    let k = rng.usize(..KEYS);
    let model = format!("m{}", rng.usize(..3));
    let status = match rng.u8(..100) {
        0..=89 => 200,
        90..=94 => 502,
        _ => 429,
    };
    let fell_back = rng.u8(..10) == 0;
    let stream = rng.u8(..10) < 3;
    let mut attempt = |provider: usize, outcome: &str| AttemptRecord {
        target: format!("p{provider}/{model}"),
        provider: format!("p{provider}"),
        model: model.clone(),
        key: Some(if rng.bool() { "a" } else { "b" }.into()),
        outcome: outcome.into(),
        latency_ms: rng.u64(20..2000),
        ..AttemptRecord::default()
    };
    let mut attempts = Vec::new();
    if fell_back {
        attempts.push(attempt((p + 1) % PROVIDERS, "transient"));
    }
    attempts.push(attempt(p, if status == 200 { "success" } else { "transient" }));
    let served = status == 200;
    RequestRecord {
        id: format!("r{}", rng.u64(..)),
        endpoint: "chat".into(),
        provider: served.then(|| format!("p{p}")),
        served_model: served.then(|| model.clone()),
        provider_tags: vec![if p % 3 == 0 { "on-prem" } else { "cloud" }.into()],
        attempts,
        fallback_index: served.then_some(usize::from(fell_back)),
        status: Some(status),
        latency_ms: rng.u64(20..3000),
        overhead_us: Some(rng.u64(50..2000)),
        ttft_ms: stream.then(|| rng.u64(50..800)),
        stream,
        tokens_in: served.then(|| rng.u64(10..2000)),
        tokens_out: served.then(|| rng.u64(1..800)),
        cost_nano_usd: served.then(|| rng.u64(1000..5_000_000)),
        caller: Some(Caller {
            virtual_key_id: format!("vk-{k}"),
            virtual_key: format!("key-{k}"),
            team: Some(format!("team-{}", k % 5)),
            ..Caller::default()
        }),
        ..RequestRecord::default()
    }
}

fn bench(c: &mut Criterion) {
    let cfg = parse_str(&config(), &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
    let gw = Gateway::new(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let m = Arc::clone(gw.request_metrics());
    let mut builder = metrics_exporter_prometheus::PrometheusBuilder::new();
    for name in LATENCY_HISTOGRAMS {
        builder = builder
            .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Full(name.into()), &cfg.metrics.latency_buckets)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for name in OVERHEAD_HISTOGRAMS {
        builder = builder
            .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Full(name.into()), &cfg.metrics.overhead_buckets)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    let mut rng = fastrand::Rng::with_seed(7);
    let records: Vec<Arc<RequestRecord>> = (0..REQUESTS).map(|_| Arc::new(record(&mut rng))).collect();
    metrics::with_local_recorder(&recorder, || {
        for r in &records {
            m.record(r);
        }
        m.inter_token_gaps("p0", "m0").record(0.02);
    });
    gw.refresh_budget_gauges();
    let render = || {
        let mut text = handle.render();
        m.render_into(&mut text, &gw.health());
        text
    };
    let page = render();
    let series = page.lines().filter(|l| !l.starts_with('#')).count();
    println!("/metrics after {REQUESTS} requests, {PROVIDERS} providers, {KEYS} keys: {} bytes, {series} series", page.len());

    c.bench_function("render /metrics (10 000 requests, 10 providers, 50 keys)", |b| b.iter(|| render().len()));
    let mut i = 0;
    c.bench_function("count one request from its record", |b| {
        metrics::with_local_recorder(&recorder, || {
            b.iter(|| {
                i = (i + 1) % records.len();
                m.record(&records[i]);
            })
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
