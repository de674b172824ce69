//! A tiny raw HTTP/1.1 client for the mock's integration tests. It exists so the tests see exactly what
//! went over the wire: status, headers, every byte of the body, and whether a chunked body ended properly
//! (a `reset` fault must not).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_mock::{Flavor, MockConfig, MockServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub async fn start(flavor: Flavor) -> MockServer {
    start_with(MockConfig::new(flavor)).await
}

pub async fn start_with(cfg: MockConfig) -> MockServer {
    MockServer::start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body ended as HTTP says it should (terminating chunk or full content-length).
    pub complete: bool,
    pub elapsed: Duration,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// SSE frames as (event, data JSON-or-string).
    pub fn sse(&self) -> Vec<(Option<String>, String)> {
        self.text()
            .split("\n\n")
            .filter(|f| !f.trim().is_empty())
            .map(|f| {
                let mut event = None;
                let mut data = String::new();
                for line in f.lines() {
                    if let Some(e) = line.strip_prefix("event: ") {
                        event = Some(e.to_string());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                (event, data)
            })
            .collect()
    }

    /// The data of every SSE frame except `[DONE]`, parsed.
    pub fn sse_json(&self) -> Vec<Value> {
        self.sse().into_iter().filter(|(_, d)| d != "[DONE]").map(|(_, d)| serde_json::from_str(&d).unwrap()).collect()
    }

    pub fn ndjson(&self) -> Vec<Value> {
        self.text().lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

pub async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let elapsed = started.elapsed();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("no header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let (body, complete) = if chunked {
        dechunk(rest)
    } else {
        let cl: Option<usize> = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok());
        (rest.to_vec(), cl.is_none_or(|cl| cl == rest.len()))
    };
    Resp { status, headers, body, complete, elapsed }
}

fn dechunk(mut data: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let size_str = String::from_utf8_lossy(&data[..eol]);
        let Ok(size) = usize::from_str_radix(size_str.trim(), 16) else {
            return (out, false);
        };
        data = &data[eol + 2..];
        if size == 0 {
            return (out, true);
        }
        if data.len() < size + 2 {
            out.extend_from_slice(&data[..size.min(data.len())]);
            return (out, false);
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

pub async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
    send(addr, "POST", path, headers, Some(&body.to_string())).await
}

pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    send(addr, "GET", path, headers, None).await
}

/// A 1x1 PNG.
pub const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

/// The mock's image note for `PNG_B64`.
pub fn png_note() -> String {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    let bytes = base64::engine::general_purpose::STANDARD.decode(PNG_B64).unwrap();
    let hex: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    format!(" [image image/png {} bytes sha256={}]", bytes.len(), &hex[..16])
}
