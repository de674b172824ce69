//! Test harness shared by the integration suites: the real `switchyard` binary on a free port with a
//! temporary config, in-process mock providers, and small HTTP helpers.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use switchyard_mock::{Flavor, MockConfig, MockServer};

/// The gateway binary, running until dropped.
pub struct Gateway {
    child: Child,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts `switchyard serve` with this YAML config on 127.0.0.1:0 and waits until it listens.
    pub fn start(yaml: &str) -> Gateway {
        Gateway::start_with_env(yaml, &[])
    }

    /// [`Gateway::start`] with these variables added to the gateway's environment.
    pub fn start_with_env(yaml: &str, vars: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["serve", "--config"])
            .arg(&path)
            .args(["--listen", "127.0.0.1:0"])
            .env("SWITCHYARD_LOG", "error")
            .envs(vars.iter().copied());
        cmd.stderr(Stdio::inherit());
        Gateway::listening(cmd, dir, None)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the gateway as an operator does (SIGTERM) and waits until it has shut down.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }

    /// Starts `switchyard serve` (with this YAML config, if any) on 127.0.0.1:0 (unless `args` has its own
    /// `--listen`) plus `args`, in an environment holding only `env` (no provider keys or log settings leak
    /// in from the test's own), with its standard error captured as it would be by a log file or a pipe.
    pub fn start_logged(yaml: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> (Gateway, Logs) {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.arg("serve");
        if let Some(yaml) = yaml {
            let path = dir.path().join("switchyard.yaml");
            std::fs::write(&path, yaml).unwrap();
            cmd.arg("--config").arg(&path);
        }
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(args).env_clear().envs(env.iter().copied()).stderr(Stdio::piped());
        let logs = Logs::default();
        let gw = Gateway::listening(cmd, dir, Some(logs.clone()));
        (gw, logs)
    }

    /// Spawns the gateway command and waits for the line in which it prints its address; with `logs`, its
    /// standard error (which the command must pipe) is captured into them.
    fn listening(mut cmd: Command, dir: tempfile::TempDir, logs: Option<Logs>) -> Gateway {
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        if let Some(logs) = &logs {
            logs.follow(child.stderr.take().unwrap());
        }
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let log_text = logs.map(|l| l.text()).unwrap_or_default();
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("gateway did not print its address: {line:?}; its log: {log_text}"))
            .to_string();
        Gateway { child, base, _dir: dir }
    }
}

/// What a process wrote to standard error so far, read by a thread as it arrives.
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<String>>);

impl Logs {
    pub fn capture(from: impl std::io::Read + Send + 'static) -> Logs {
        Self::capture_joinable(from).0
    }

    /// Like [`Logs::capture`]; joining the thread waits for the end of the stream.
    pub fn capture_joinable(from: impl std::io::Read + Send + 'static) -> (Logs, std::thread::JoinHandle<()>) {
        let logs = Logs::default();
        let reader = logs.follow(from);
        (logs, reader)
    }

    /// Appends what `from` writes to these logs, line by line, on a thread of its own.
    fn follow(&self, from: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<()> {
        let sink = self.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(from);
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                sink.0.lock().unwrap().push_str(&line);
                line.clear();
            }
        })
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_string).collect()
    }

    /// Waits until `done` holds for the log so far (a bound on a hang, not a speed target); returns the log.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text();
            if done(&text) {
                return text;
            }
            assert!(std::time::Instant::now() < deadline, "the log never showed {what}; it holds:\n{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs `switchyard ARGS` in an environment holding only `env` until it exits by itself (at most 20 s):
/// its exit code, standard output and standard error.
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, out_reader) = Logs::capture_joinable(child.stdout.take().unwrap());
    let (err, err_reader) = Logs::capture_joinable(child.stderr.take().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("switchyard {args:?} did not exit; stderr:\n{}", err.text());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The pipes close with the process: the readers have everything once they end.
    out_reader.join().unwrap();
    err_reader.join().unwrap();
    (status.code(), out.text(), err.text())
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A mock that accepts any model name (and so lists none).
pub async fn mock(flavor: Flavor) -> MockServer {
    mock_serving(flavor, &[]).await
}

/// A mock that serves exactly these models (empty: any).
pub async fn mock_serving(flavor: Flavor, models: &[&str]) -> MockServer {
    let mut cfg = MockConfig::new(flavor);
    cfg.models = models.iter().map(|m| m.to_string()).collect();
    MockServer::start(cfg, SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap()
}

/// Inference requests a mock received (model-list requests from the gateway's discovery excluded).
pub fn calls(m: &MockServer) -> u64 {
    m.stats()
        .by_path
        .iter()
        .filter(|(p, _)| {
            p.ends_with("/chat/completions")
                || p.ends_with("/messages")
                || p.ends_with("/api/chat")
                || p.ends_with("embeddings")
                || p.ends_with("/api/embed")
                || p.ends_with("/v2/chat")
                || p.ends_with("/v2/embed")
                || p.ends_with("/converse")
                || p.ends_with("/converse-stream")
                || p.ends_with("/invoke")
        })
        .map(|(_, n)| n)
        .sum()
}

pub fn client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(30))
}

/// A client that gives up after `d` (a request that hangs past it fails the test).
pub fn client_with_timeout(d: Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(d).build().unwrap()
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn post(c: &reqwest::Client, url: &str, body: &Value) -> Reply {
    let r = c.post(url).header("content-type", "application/json").body(serde_json::to_vec(body).unwrap()).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Reply { status, headers, body }
}

pub struct StreamReply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// Every `data:` payload except `[DONE]`, parsed.
    pub chunks: Vec<Value>,
    pub done: bool,
    pub raw: String,
}

impl StreamReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (an error answered before the stream began), or `Null`.
    pub fn body_json(&self) -> Value {
        serde_json::from_str(&self.raw).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        self.chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect()
    }

    pub fn finish_reason(&self) -> Option<String> {
        self.chunks.iter().rev().find_map(|c| c["choices"][0]["finish_reason"].as_str().map(str::to_string))
    }

    pub fn usage(&self) -> Option<&Value> {
        self.chunks.iter().find_map(|c| c.get("usage").filter(|u| !u.is_null()))
    }

    /// Tool calls reassembled from their fragments, by index: (id, name, arguments).
    pub fn tool_calls(&self) -> Vec<(String, String, String)> {
        let mut calls: Vec<(String, String, String)> = Vec::new();
        for c in &self.chunks {
            for t in c["choices"][0]["delta"]["tool_calls"].as_array().into_iter().flatten() {
                let i = t["index"].as_u64().unwrap() as usize;
                while calls.len() <= i {
                    calls.push(Default::default());
                }
                if let Some(id) = t["id"].as_str() {
                    calls[i].0 = id.to_string();
                }
                if let Some(n) = t["function"]["name"].as_str() {
                    calls[i].1.push_str(n);
                }
                if let Some(a) = t["function"]["arguments"].as_str() {
                    calls[i].2.push_str(a);
                }
            }
        }
        calls
    }
}

pub async fn stream(c: &reqwest::Client, url: &str, body: &Value) -> StreamReply {
    let r = c.post(url).header("content-type", "application/json").body(serde_json::to_vec(body).unwrap()).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let raw = String::from_utf8_lossy(&r.bytes().await.unwrap()).into_owned();
    let mut chunks = Vec::new();
    let mut done = false;
    for frame in raw.split("\n\n") {
        let Some(data) = frame.strip_prefix("data: ") else { continue };
        if data == "[DONE]" {
            done = true;
        } else {
            chunks.push(serde_json::from_str(data).unwrap_or_else(|e| panic!("bad chunk {data:?}: {e}")));
        }
    }
    StreamReply { status, headers, chunks, done, raw }
}

/// A 1×1 PNG.
pub const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

pub fn png_bytes() -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(PNG_B64).unwrap()
}

/// What the mock says about the PNG: ` [image image/png 70 bytes sha256=…]`.
pub fn png_description() -> String {
    use sha2::Digest as _;
    let bytes = png_bytes();
    let hash = sha2::Sha256::digest(&bytes);
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("[image image/png {} bytes sha256={hex}]", bytes.len())
}

/// Serves the PNG at `/cat.png` on a free loopback port (an image URL for the fetch tests), and beside it the
/// misbehaving kinds of image host: `/redirect` (302 to `/cat.png`), `/loop` (redirects to itself forever),
/// `/big` (a 2 KiB PNG-looking body), `/slow` (answers after 3 s).
pub async fn image_server() -> String {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    let png = || ([(header::CONTENT_TYPE, "image/png")], png_bytes());
    let app = axum::Router::new()
        .route("/cat.png", get(move || async move { png() }))
        .route("/redirect", get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/cat.png")]) }))
        .route("/loop", get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/loop")]) }))
        .route(
            "/big",
            get(|| async {
                let mut body = png_bytes();
                body.resize(2048, 0);
                ([(header::CONTENT_TYPE, "image/png")], body)
            }),
        )
        .route(
            "/slow",
            get(move || async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                png()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/cat.png")
}

/// What [`ImageHost`] has seen so far: requests per path, and the requests parked at `/barrier` now and at
/// most at once.
#[derive(Debug, Clone, Default)]
pub struct HostSeen {
    pub hits: std::collections::BTreeMap<String, u64>,
    pub at_barrier: u64,
    pub most_at_barrier: u64,
}

/// A hostile image host for the image-fetch suites, with what it saw observable for event-driven waits.
///
/// Paths: `/cat.png` (the PNG); `/sized?bytes=N` (a PNG-looking body of N bytes, `&chunked=1` without a
/// length); `/hold?bytes=N` (declares N bytes, sends 64 KiB, then the rest once [`ImageHost::release`] is
/// called); `/gate` (the PNG once released); `/stall` (nothing until released); `/barrier?n=N` (the PNG
/// once N requests wait there at the same time, so only concurrent fetches get through; 503 after 30 s);
/// `/svg` (an SVG image); `/png-as-html` (the PNG labelled `text/html`); `/html-as-png` (a web page
/// labelled `image/png`); `/to?url=U` (302 to U).
pub struct ImageHost {
    pub base: String,
    seen: std::sync::Arc<tokio::sync::watch::Sender<HostSeen>>,
    released: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

/// Bytes every sized body is cut from: the PNG, then zeros.
const HOST_MAX_BODY: usize = 32 << 20;

impl ImageHost {
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }

    pub fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub fn seen(&self) -> HostSeen {
        self.seen.borrow().clone()
    }

    pub fn hits(&self, path: &str) -> u64 {
        self.seen.borrow().hits.get(path).copied().unwrap_or(0)
    }

    /// Waits (woken by each request) until `path` has had at least `n` requests.
    pub async fn wait_hits(&self, path: &str, n: u64) {
        let mut rx = self.seen.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|s| s.hits.get(path).copied().unwrap_or(0) >= n)).await;
        assert!(waited.is_ok(), "{path} never had {n} requests; seen {:?}", self.seen());
    }

    /// Lets every parked `/hold`, `/gate` and `/stall` request (and later ones) finish.
    pub fn release(&self) {
        self.released.send_replace(true);
    }
}

pub async fn image_host() -> ImageHost {
    use axum::body::{Body, Bytes};
    use axum::http::{header, StatusCode, Uri};
    use axum::response::{IntoResponse, Response};
    use futures_util::StreamExt as _;
    use std::sync::Arc;

    let seen = Arc::new(tokio::sync::watch::Sender::new(HostSeen::default()));
    let released = Arc::new(tokio::sync::watch::Sender::new(false));
    let mut big = png_bytes();
    big.resize(HOST_MAX_BODY, 0);
    let big = Bytes::from(big);

    let handler = {
        let (seen, released) = (seen.clone(), released.clone());
        move |uri: Uri| {
            let (seen, released, big) = (seen.clone(), released.clone(), big.clone());
            async move {
                let path = uri.path().to_string();
                let query = uri.query().unwrap_or("").to_string();
                let arg = |name: &str| {
                    query.split('&').find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('='))).map(str::to_string)
                };
                let size = || arg("bytes").and_then(|v| v.parse::<usize>().ok()).unwrap_or(1024).min(HOST_MAX_BODY);
                seen.send_modify(|s| *s.hits.entry(path.clone()).or_default() += 1);
                let open = || {
                    let mut rx = released.subscribe();
                    async move {
                        let _ = rx.wait_for(|r| *r).await;
                    }
                };
                let png = || ([(header::CONTENT_TYPE, "image/png")], png_bytes()).into_response();
                match path.as_str() {
                    "/cat.png" => png(),
                    "/sized" if arg("chunked").is_some() => {
                        let body = big.slice(..size());
                        let chunks = futures_util::stream::iter(
                            (0..body.len())
                                .step_by(64 << 10)
                                .map(move |at| Ok::<_, std::io::Error>(body.slice(at..(at + (64 << 10)).min(body.len())))),
                        );
                        ([(header::CONTENT_TYPE, "image/png")], Body::from_stream(chunks)).into_response()
                    }
                    "/sized" => ([(header::CONTENT_TYPE, "image/png")], big.slice(..size())).into_response(),
                    "/hold" => {
                        let n = size();
                        let first = big.slice(..n.min(64 << 10));
                        let rest = big.slice(first.len()..n);
                        let wait = open();
                        let parts = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
                            futures_util::stream::once(async move {
                                wait.await;
                                Ok(rest)
                            }),
                        );
                        let mut r = ([(header::CONTENT_TYPE, "image/png")], Body::from_stream(parts)).into_response();
                        r.headers_mut().insert(header::CONTENT_LENGTH, n.into());
                        r
                    }
                    "/gate" => {
                        open().await;
                        png()
                    }
                    "/stall" => {
                        open().await;
                        png()
                    }
                    "/barrier" => {
                        let n: u64 = arg("n").and_then(|v| v.parse().ok()).unwrap_or(1);
                        seen.send_modify(|s| {
                            s.at_barrier += 1;
                            s.most_at_barrier = s.most_at_barrier.max(s.at_barrier);
                        });
                        let mut rx = seen.subscribe();
                        let passed = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|s| s.most_at_barrier >= n)).await.is_ok();
                        seen.send_modify(|s| s.at_barrier -= 1);
                        if passed {
                            png()
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE.into_response()
                        }
                    }
                    "/svg" => (
                        [(header::CONTENT_TYPE, "image/svg+xml")],
                        r#"<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"><image href="http://169.254.169.254/"/></svg>"#,
                    )
                        .into_response(),
                    "/png-as-html" => ([(header::CONTENT_TYPE, "text/html")], png_bytes()).into_response(),
                    "/html-as-png" => {
                        ([(header::CONTENT_TYPE, "image/png")], "<!doctype html><html><body>not an image</body></html>").into_response()
                    }
                    "/to" => {
                        let to = arg("url").unwrap_or_default();
                        Response::builder().status(StatusCode::FOUND).header(header::LOCATION, to).body(Body::empty()).unwrap()
                    }
                    _ => StatusCode::NOT_FOUND.into_response(),
                }
            }
        }
    };
    let app = axum::Router::new().fallback(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    ImageHost { base: format!("http://{addr}"), seen, released }
}

/// `switchyard check --config FILE` on this YAML: (exit code 0?, stdout, stderr).
pub fn check(yaml: &str, vars: &[(&str, &str)]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_switchyard")).args(["check", "--config"]).arg(&path).envs(vars.iter().copied()).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A management-API call (`Authorization: Bearer <token>` when given, a JSON body when given): its status
/// and JSON answer (`null` when the answer is not JSON).
pub async fn admin(c: &reqwest::Client, method: reqwest::Method, url: String, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut r = c.request(method, url);
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        r = r.header("content-type", "application/json").body(serde_json::to_vec(&b).unwrap());
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null))
}
