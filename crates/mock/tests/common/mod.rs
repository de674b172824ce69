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

    /// The names of the headers that start with `prefix` (rate-limit families).
    pub fn header_names(&self, prefix: &str) -> Vec<&str> {
        self.headers.iter().map(|(n, _)| n.as_str()).filter(|n| n.starts_with(prefix)).collect()
    }

    /// A header parsed as a number.
    pub fn header_u64(&self, name: &str) -> u64 {
        self.header(name).unwrap_or_else(|| panic!("no {name} header")).parse().unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    pub fn ndjson(&self) -> Vec<Value> {
        self.text().lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// Connects and writes a request without reading the answer: the caller reads what it wants and drops
/// the stream to walk away (the mock's `cancelled` counter tests).
pub async fn open(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request_text(addr, method, path, headers, body).as_bytes()).await.unwrap();
    s
}

/// Reads from `s` until `needle` has arrived (panics after 5 s or at EOF); returns what was read.
pub async fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
            if raw.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                return true;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert_eq!(found, Ok(true), "{needle:?} never arrived; got {text:?}");
    text
}

fn request_text(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> String {
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
    req
}

pub async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
    let started = Instant::now();
    let mut s = open(addr, method, path, headers, body).await;
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

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Unix seconds of a UTC RFC 3339 time in whole seconds (`2025-08-21T12:40:59Z`), days from the civil
/// date after Howard Hinnant's algorithm.
pub fn unix_of_rfc3339(s: &str) -> u64 {
    let (date, time) = s.strip_suffix('Z').unwrap_or_else(|| panic!("not UTC: {s}")).split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let t: Vec<i64> = time.split(':').map(|p| p.parse().unwrap()).collect();
    assert_eq!((d.len(), t.len()), (3, 3), "{s}");
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    u64::try_from(days * 86_400 + t[0] * 3_600 + t[1] * 60 + t[2]).unwrap()
}
