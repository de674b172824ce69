//! Hostile clients against the real binary: sockets that say nothing, headers and bodies that trickle,
//! more connections than the cap, idle keep-alives, stream clients that stop reading, and the requests a
//! browser page could forge (form and text bodies, foreign `Host` names).
//!
//! Each test runs with the default settings unless it says which one it pins and why; the timeouts are
//! pinned short only where the default (seconds to a minute) would make the test slow, never to make it
//! pass. Every wait is for an event (a closed socket, a mock counter, a log line) bounded by `PATIENCE`,
//! which is a bound on a hang, not a speed target. Without the limit under test each test would hang
//! until `PATIENCE` and fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{calls, client, mock};
use serde_json::{json, Value};
use switchyard_mock::{Flavor, MockServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for an event before it fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// The gateway binary with its log (WARN and above) collected, running until dropped.
struct Gateway {
    child: Child,
    base: String,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    fn start(yaml: &str) -> Gateway {
        Gateway::start_in(yaml, Command::new(env!("CARGO_BIN_EXE_switchyard")))
    }

    /// Starts the gateway with its open-file limit (soft and hard) set to `n` by the shell.
    fn start_with_fd_limit(yaml: &str, n: u32) -> Gateway {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!("ulimit -n {n} && exec \"$0\" \"$@\"")).arg(env!("CARGO_BIN_EXE_switchyard"));
        Gateway::start_in(yaml, cmd)
    }

    fn start_in(yaml: &str, mut cmd: Command) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(&path)
            .args(["--listen", "127.0.0.1:0"])
            // INFO: most of these limits are hit by a client, which is logged at INFO, not WARN.
            .env("SWITCHYARD_LOG", "info,switchyard::request=off")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("gateway: {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("gateway did not print its address: {line:?}"))
            .to_string();
        let addr = base.trim_start_matches("http://").parse().unwrap();
        Gateway { child, base, addr, log, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The `Host` header a client of this gateway sends.
    fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Waits for a log line containing `needle`.
    async fn wait_log(&self, needle: &str) -> String {
        let give_up = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            assert!(tokio::time::Instant::now() < give_up, "no log line with {needle:?}; log: {:#?}", self.log.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(up: &MockServer, server: &str, provider_extra: &str) -> String {
    let server = if server.is_empty() { String::new() } else { format!("server:\n{server}") };
    format!("{server}providers:\n  openai:\n    base_url: \"{}\"\n    keys: [{{value: sk-test}}]\n{provider_extra}", up.base_url())
}

fn chat(text: &str) -> Value {
    json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": text}]})
}

/// Reads until the peer closes (EOF or reset); fails the test if it is still open after `PATIENCE`.
async fn closed_by_peer(tcp: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let read = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read).await.expect("the gateway kept the connection open");
    got
}

/// One HTTP/1.1 answer read from a raw socket: status, lowercase header lines, body (by content-length).
async fn read_answer(tcp: &mut TcpStream) -> (u16, Vec<String>, Vec<u8>) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let work = async {
        let head_end = loop {
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before an answer: {:?}", String::from_utf8_lossy(&raw));
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        let headers: Vec<String> = lines.map(|l| l.to_ascii_lowercase()).collect();
        let len: usize = headers.iter().find_map(|h| h.strip_prefix("content-length:")).map(|v| v.trim().parse().unwrap()).unwrap_or(0);
        let mut body = raw[head_end + 4..].to_vec();
        while body.len() < len {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed inside the body");
            body.extend_from_slice(&buf[..n]);
        }
        (status, headers, body)
    };
    tokio::time::timeout(PATIENCE, work).await.expect("no answer")
}

fn error_code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)));
    assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string(), "not the OpenAI error shape: {v}");
    v["error"]["code"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_header_timeout() {
    let up = mock(Flavor::OpenAi).await;
    // The default is 10 s; pinned to 500 ms so the test does not sit for it.
    let gw = Gateway::start(&config(&up, "  header_read_timeout: 500ms\n", ""));
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    for tcp in &mut silent {
        assert!(closed_by_peer(tcp).await.is_empty(), "a silent connection gets no answer, only closed");
    }
    gw.wait_log("server.header_read_timeout").await;
    let r = client().get(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn slowloris_headers_are_cut_off() {
    let up = mock(Flavor::OpenAi).await;
    // The default is 10 s; pinned to 1 s so the trickle is cut quickly.
    let gw = Gateway::start(&config(&up, "  header_read_timeout: 1s\n", ""));
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    wr.write_all(format!("GET /health HTTP/1.1\r\nhost: {}\r\n", gw.host()).as_bytes()).await.unwrap();
    // One header line every 100 ms, forever: the headers never end on their own.
    let trickle = tokio::spawn(async move {
        for i in 0u64.. {
            if wr.write_all(format!("x-slow-{i}: a\r\n").as_bytes()).await.is_err() {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        unreachable!()
    });
    let mut buf = [0u8; 1024];
    let ended = tokio::time::timeout(PATIENCE, rd.read(&mut buf)).await.expect("the slowloris connection stayed open");
    if let Ok(n) = ended {
        assert_eq!(n, 0, "a request whose headers never end got an answer: {:?}", String::from_utf8_lossy(&buf[..n]));
    }
    trickle.abort();
    gw.wait_log("server.header_read_timeout").await;
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408() {
    let up = mock(Flavor::OpenAi).await;
    // The default is 60 s; pinned to 1 s.
    let gw = Gateway::start(&config(&up, "  body_read_timeout: 1s\n", ""));
    let head = |len: usize| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n",
            gw.host()
        )
    };

    // A body that stops.
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(format!("{}{{\"model\":", head(1000)).as_bytes()).await.unwrap();
    let (status, headers, body) = read_answer(&mut tcp).await;
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&body));
    assert_eq!(error_code(&body), "request_timeout");
    assert!(headers.iter().any(|h| h == "connection: close"), "{headers:?}");
    closed_by_peer(&mut tcp).await;

    // A body that trickles: ten bytes every 100 ms of a 100 kB body would take 100 s.
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    wr.write_all(head(100_000).as_bytes()).await.unwrap();
    let trickle = tokio::spawn(async move {
        while wr.write_all(b"          ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
            match rd.read(&mut buf).await.unwrap() {
                0 => break,
                n => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the trickling body got no answer");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    trickle.abort();
    assert_eq!(calls(&up), 0, "nothing went upstream");
    gw.wait_log("server.body_read_timeout").await;
}

#[tokio::test]
async fn the_connection_cap_refuses_cleanly_and_recovers() {
    let up = mock(Flavor::OpenAi).await;
    // A cap of 3 instead of the default 10 000, and a long header timeout so the held keep-alive
    // connections stay open for the whole test on a slow machine too (they are idle, so the idle clock
    // applies: pinned long as well).
    let gw = Gateway::start(&config(&up, "  max_connections: 3\n  header_read_timeout: 5m\n  idle_timeout: 5m\n", ""));
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
        tcp.write_all(format!("GET /health HTTP/1.1\r\nhost: {}\r\n\r\n", gw.host()).as_bytes()).await.unwrap();
        let (status, _, _) = read_answer(&mut tcp).await;
        assert_eq!(status, 200, "the connections under the cap are served");
        held.push(tcp);
    }
    let c = client();
    let r = common::post(&c, &gw.url("/v1/chat/completions"), &chat("over the cap")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "too_many_connections", "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert_eq!(calls(&up), 0);
    gw.wait_log("server.max_connections").await;

    // Once the held connections close, their places are given back.
    drop(held);
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = common::post(&c, &gw.url("/v1/chat/completions"), &chat("after")).await;
        if r.status == 200 {
            assert_eq!(r.body["choices"][0]["message"]["content"], "echo: after");
            break;
        }
        assert_eq!(r.body["error"]["code"], "too_many_connections", "{}", r.body);
        assert!(tokio::time::Instant::now() < give_up, "closed connections never gave their places back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let up = mock(Flavor::OpenAi).await;
    // The default is 60 s; pinned to 1 s. The header timeout is pinned long so that only the idle clock can
    // close the connection.
    let gw = Gateway::start(&config(&up, "  idle_timeout: 1s\n  header_read_timeout: 5m\n", ""));
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    for _ in 0..2 {
        tcp.write_all(format!("GET /health HTTP/1.1\r\nhost: {}\r\n\r\n", gw.host()).as_bytes()).await.unwrap();
        let (status, headers, _) = read_answer(&mut tcp).await;
        assert_eq!(status, 200);
        assert!(!headers.iter().any(|h| h == "connection: close"), "keep-alive works: {headers:?}");
    }
    assert!(closed_by_peer(&mut tcp).await.is_empty());
}

#[tokio::test]
async fn a_stream_client_that_stops_reading_frees_its_upstream_slot() {
    let up = mock(Flavor::OpenAi).await;
    // One request in flight and no queue, so a held slot shows as a 503 for the next request; the stream
    // idle timeout pinned to 1 s (the default is 60 s).
    let gw = Gateway::start(&config(&up, "", "    max_in_flight: 1\n    max_queue: 0\n    stream_idle_timeout: 1s\n"));
    // About 8 MB of answer: far more than the socket buffers on both sides and the gateway's own, so the
    // stream cannot finish while the client reads nothing.
    let word = "w".repeat(1000);
    let text = vec![word.as_str(); 8000].join(" ");
    let body = json!({"model": "openai/gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": text}]}).to_string();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader_that_never_reads = socket.connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        gw.host(),
        body.len()
    );
    reader_that_never_reads.write_all(head.as_bytes()).await.unwrap();
    reader_that_never_reads.write_all(body.as_bytes()).await.unwrap();

    assert!(up.wait_for(|s| s.cancelled == 1, PATIENCE).await, "the upstream stream was never closed: {:?}", up.stats());
    let r = common::post(&client(), &gw.url("/v1/chat/completions"), &chat("next")).await;
    assert_eq!(r.status, 200, "the slot was given back: {}", r.body);
    assert_eq!(r.body["choices"][0]["message"]["content"], "echo: next");
    gw.wait_log("stream_idle_timeout").await;
    drop(reader_that_never_reads);
}

#[tokio::test]
async fn bodies_not_labelled_json_are_refused_with_415() {
    let up = mock(Flavor::OpenAi).await;
    let gw = Gateway::start(&config(&up, "", ""));
    let c = client();
    let valid = chat("spend my credits").to_string();
    // What a web page can send cross-origin without a preflight, what `curl -d` sends, and no type at all.
    for ct in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        for path in ["/v1/chat/completions", "/openai/v1/chat/completions", "/v1/embeddings"] {
            let mut rb = c.post(gw.url(path)).body(valid.clone());
            if let Some(ct) = ct {
                rb = rb.header("content-type", ct);
            }
            let r = rb.send().await.unwrap();
            assert_eq!(r.status(), 415, "{ct:?} {path}");
            let body = r.bytes().await.unwrap();
            assert_eq!(error_code(&body), "unsupported_media_type", "{ct:?} {path}");
            if ct == Some("application/x-www-form-urlencoded") {
                assert!(String::from_utf8_lossy(&body).contains("Content-Type: application/json"), "the message says the fix");
            }
        }
    }
    assert_eq!(calls(&up), 0, "nothing went upstream");
    gw.wait_log("not labelled JSON").await;
    let metrics = c.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("switchyard_server_limit_hits_total{limit=\"json_content_type\"} 15"), "{metrics}");
    for ct in ["application/json; charset=utf-8", "application/vnd.switchyard+json"] {
        let r = c.post(gw.url("/v1/chat/completions")).header("content-type", ct).body(valid.clone()).send().await.unwrap();
        assert_eq!(r.status(), 200, "{ct}");
    }
}

/// A raw `GET`/`POST` with a chosen `Host`, on a connection that closes after the answer.
async fn with_host(gw: &Gateway, method: &str, path: &str, host: &str, body: &str) -> (u16, Vec<u8>) {
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let (status, _, body) = read_answer(&mut tcp).await;
    (status, body)
}

#[tokio::test]
async fn foreign_hosts_are_refused_on_loopback_and_allowed_hosts_work() {
    let up = mock(Flavor::OpenAi).await;
    let gw = Gateway::start(&config(&up, "", ""));
    let port = gw.addr.port();
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("LocalHost:{port}")] {
        assert_eq!(with_host(&gw, "GET", "/v1/models", &host, "").await.0, 200, "{host}");
    }
    // A DNS-rebinding page sends its own name; a page on another local port sends that port.
    for host in [format!("attacker.example:{port}"), "attacker.example".to_string(), "localhost:1".to_string()] {
        let (status, body) = with_host(&gw, "GET", "/v1/models", &host, "").await;
        assert_eq!((status, error_code(&body).as_str()), (403, "host_not_allowed"), "{host}");
        let (status, _) = with_host(&gw, "POST", "/v1/chat/completions", &host, &chat("x").to_string()).await;
        assert_eq!(status, 403, "{host}");
    }
    assert_eq!(calls(&up), 0, "a refused host spends nothing");
    gw.wait_log("refused a request for a host this gateway does not serve (server.allowed_hosts)").await;

    let gw = Gateway::start(&config(&up, "  allowed_hosts: [\"gateway.test\", \"*.corp.test\"]\n", ""));
    let port = gw.addr.port();
    for host in ["gateway.test".to_string(), format!("gateway.test:{port}"), format!("api.corp.test:{port}"), format!("localhost:{port}")] {
        let (status, body) = with_host(&gw, "POST", "/v1/chat/completions", &host, &chat("allowed").to_string()).await;
        assert_eq!(status, 200, "{host}: {}", String::from_utf8_lossy(&body));
    }
    assert_eq!(with_host(&gw, "GET", "/v1/models", &format!("attacker.example:{port}"), "").await.0, 403);
}

#[tokio::test]
async fn an_sdk_like_json_request_is_served() {
    let up = mock(Flavor::OpenAi).await;
    let gw = Gateway::start(&config(&up, "", ""));
    // The headers the official openai Python SDK sends (httpx), give or take its version numbers.
    let sdk = |rb: reqwest::RequestBuilder| {
        rb.header("content-type", "application/json")
            .header("accept", "application/json")
            .header("user-agent", "OpenAI/Python 1.109.1")
            .header("x-stainless-lang", "python")
            .header("x-stainless-package-version", "1.109.1")
            .header("x-stainless-retry-count", "0")
            .header("authorization", "Bearer sk-anything")
    };
    let c = client();
    let r = sdk(c.post(gw.url("/v1/chat/completions"))).body(chat("hello sdk").to_string()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hello sdk");

    let mut streamed = chat("hello stream");
    streamed["stream"] = json!(true);
    let r = sdk(c.post(gw.url("/v1/chat/completions"))).body(streamed.to_string()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let raw = String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap();
    assert!(raw.contains("\"content\":\"hello \"") && raw.ends_with("data: [DONE]\n\n"), "{raw}");
}

#[tokio::test]
async fn running_out_of_file_descriptors_is_logged_and_survived() {
    let up = mock(Flavor::OpenAi).await;
    // A limit of 64 descriptors for the gateway, and a cap above what that allows, so that accepting
    // fails for want of descriptors before the cap refuses anything (the situation of the report: the
    // default cap is fitted to the limit, which is why the cap is pinned here).
    let gw = Gateway::start_with_fd_limit(&config(&up, "  max_connections: 1000\n  header_read_timeout: 5m\n  idle_timeout: 5m\n", ""), 64);
    gw.wait_log("server.max_connections is 1000, but the open-file limit (64)").await;
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
        tcp.write_all(format!("GET /health HTTP/1.1\r\nhost: {}\r\n\r\n", gw.host()).as_bytes()).await.unwrap();
        clients.push(tcp);
    }
    // Each client is served, refused with a 503, or closed; none is left hanging in the backlog.
    let (mut served, mut refused) = (0, 0);
    for tcp in &mut clients {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let answered = tokio::time::timeout(PATIENCE, async {
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(answered.is_ok(), "a client was left hanging");
        let text = String::from_utf8_lossy(&got);
        if text.starts_with("HTTP/1.1 200 ") {
            served += 1;
        } else if text.starts_with("HTTP/1.1 503 ") {
            refused += 1;
        }
    }
    assert!(served > 0 && refused > 0, "served {served}, refused {refused}");
    gw.wait_log("cannot accept connections").await;

    drop(clients);
    let c = client();
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(r) = c.get(gw.url("/health")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < give_up, "the gateway did not recover after the connections closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_client_that_takes_no_response_data_is_disconnected() {
    let up = mock(Flavor::OpenAi).await;
    // The default is 60 s; pinned to 1 s.
    let gw = Gateway::start(&config(&up, "  write_timeout: 1s\n", ""));
    // An answer of about 8 MB, far more than the socket buffers hold while the client reads nothing.
    let word = "w".repeat(1000);
    let body = chat(&vec![word.as_str(); 8000].join(" ")).to_string();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        gw.host(),
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body.as_bytes()).await.unwrap();
    gw.wait_log("server.write_timeout").await;
    // What the socket still holds, then the end: the answer was cut, not delivered.
    let got = closed_by_peer(&mut tcp).await;
    assert!(got.starts_with(b"HTTP/1.1 200 "), "{:?}", String::from_utf8_lossy(&got[..got.len().min(200)]));
    assert!(got.len() < body.len(), "the whole answer arrived ({} bytes)", got.len());
}
