//! Hostile image URLs against the real binary: a request naming many or large images costs bounded memory
//! and is refused with the status that says why (400 too many, 413 too large, 503 the gateway's image
//! budget is taken), slow images are fetched side by side and inside the request's deadline without holding
//! the provider's in-flight slot, no proxy from the environment ever sees a fetch, a configured proxy never
//! sees an internal name, and only raster images, recognised by their bytes, are accepted.
//!
//! The provider is the Ollama mock, which takes only image bytes, so the gateway fetches every image URL.
//! Every gateway allow-lists 127.0.0.1/32 (`images.allow_private_networks`): the test's image host listens
//! on loopback, which the guard refuses by default. Other limits are the defaults unless a test says why it
//! pins one. Each test starts its own gateway with its log captured, and checks from the image host's (or
//! the proxy's) side what really happened.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{calls, client, image_host, mock, png_description, post, ImageHost, Reply};
use serde_json::{json, Value};
use switchyard_mock::{Flavor, MockServer};

/// How long an event-driven wait may take before the test gives up (a bound on a hang, not a speed target).
const PATIENCE: Duration = Duration::from_secs(20);
const ALLOW_LOOPBACK: &str = "images:\n  allow_private_networks: [\"127.0.0.1/32\"]\n";

/// The gateway binary with its log captured, in an environment the test chooses.
struct Gw {
    child: Child,
    base: String,
    log: Arc<(Mutex<String>, Condvar)>,
    _dir: tempfile::TempDir,
}

impl Gw {
    fn start(yaml: &str) -> Gw {
        Gw::start_with_env(yaml, &[])
    }

    fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Gw {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["serve", "--config"])
            .arg(&path)
            .args(["--listen", "127.0.0.1:0"])
            // INFO: a refused image URL is the caller's fault, logged at INFO (the gateway's own limits at WARN).
            .env("SWITCHYARD_LOG", "info,switchyard::request=off")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let (text, changed) = &*sink;
                let mut t = text.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
                changed.notify_all();
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("gateway did not print its address: {line:?}; log:\n{}", log.0.lock().unwrap()))
            .to_string();
        Gw { child, base, log, _dir: dir }
    }

    fn chat_url(&self) -> String {
        format!("{}/v1/chat/completions", self.base)
    }

    /// Waits until the log holds `needle` (woken by each new line).
    fn wait_log(&self, needle: &str) {
        let (text, changed) = &*self.log;
        let guard = text.lock().unwrap();
        let (guard, timeout) = changed.wait_timeout_while(guard, PATIENCE, |t| !t.contains(needle)).unwrap();
        assert!(!timeout.timed_out(), "{needle:?} never logged; log:\n{}", *guard);
    }

    /// The gateway's peak resident memory so far, in bytes (`VmHWM` in `/proc/<pid>/status`).
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM in {status}"));
        kb * 1024
    }

    /// `switchyard_image_bytes_held` from `/metrics` (0 before any image was fetched).
    async fn bytes_held(&self, c: &reqwest::Client) -> f64 {
        let text = c.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap();
        text.lines().find_map(|l| l.strip_prefix("switchyard_image_bytes_held ")).map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// Polls `/metrics` until the gateway-wide image bytes satisfy `cond`.
    async fn until_held(&self, c: &reqwest::Client, cond: impl Fn(f64) -> bool) -> f64 {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let b = self.bytes_held(c).await;
            if cond(b) {
                return b;
            }
            assert!(tokio::time::Instant::now() < deadline, "image bytes held stuck at {b}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `images:` settings (always with loopback allowed) and one Ollama provider.
fn config(images: &str, up: &MockServer, provider_extra: &str) -> String {
    format!("{ALLOW_LOOPBACK}{images}providers:\n  local:\n    type: ollama\n    base_url: \"{}\"\n{provider_extra}", up.base_url())
}

/// A chat request with these image URLs after one text part.
fn ask(urls: &[String]) -> Value {
    let mut parts = vec![json!({"type": "text", "text": "what"})];
    parts.extend(urls.iter().map(|u| json!({"type": "image_url", "image_url": {"url": u}})));
    json!({"model": "local/llava:latest", "messages": [{"role": "user", "content": parts}]})
}

fn content(r: &Reply) -> &str {
    r.body["choices"][0]["message"]["content"].as_str().unwrap_or_else(|| panic!("no content: {} {}", r.status, r.body))
}

fn error(r: &Reply) -> (u16, &str, &str) {
    let e = &r.body["error"];
    (r.status, e["code"].as_str().unwrap_or_else(|| panic!("not an error: {} {}", r.status, r.body)), e["message"].as_str().unwrap())
}

/// Images the mock saw in the request it was sent, by their description.
fn images_seen(r: &Reply) -> usize {
    content(r).matches("[image image/png").count()
}

#[tokio::test]
async fn too_many_image_urls_are_refused_before_any_is_fetched() {
    let host = image_host().await;
    let up = mock(Flavor::Ollama).await;
    let gw = Gw::start(&config("", &up, ""));
    let c = client();

    let r = post(&c, &gw.chat_url(), &ask(&vec![host.url("/cat.png"); 21])).await;
    let (status, code, message) = error(&r);
    assert_eq!((status, code), (400, "too_many_images"), "{}", r.body);
    assert!(message.contains("21 image URLs") && message.contains("images.max_images"), "{message}");
    assert_eq!(r.body["error"]["param"], "messages");
    assert_eq!(r.body["error"]["type"], "invalid_request_error");
    gw.wait_log("limit=images.max_images");
    assert_eq!(host.hits("/cat.png"), 0, "nothing was fetched");
    assert_eq!(calls(&up), 0, "nothing reached the provider");

    // The default limit itself is served.
    let r = post(&c, &gw.chat_url(), &ask(&vec![host.url("/cat.png"); 20])).await;
    assert_eq!((r.status, images_seen(&r)), (200, 20), "{}", r.body);
    assert!(content(&r).contains(&png_description()));
}

#[tokio::test]
async fn images_over_the_request_bound_get_413_and_the_gateways_memory_stays_bounded() {
    let host = image_host().await;
    let up = mock(Flavor::Ollama).await;
    let gw = Gw::start(&config("", &up, ""));
    let c = client();
    let before = gw.peak_rss();

    // 16 URLs of a 16 MiB image, declared (Content-Length) or streamed without a length: 256 MiB per
    // request, 768 MiB for the three at once, twice over. Unbounded, this took the gateway past 1 GiB.
    let declared = host.url(&format!("/sized?bytes={}", 16 << 20));
    let streamed = host.url(&format!("/sized?bytes={}&chunked=1", 16 << 20));
    for round in 0..2 {
        let burst: Vec<_> = (0..3)
            .map(|i| {
                let (c, url) = (c.clone(), gw.chat_url());
                let urls: Vec<String> = (0..16).map(|k| if (i + k) % 2 == 0 { declared.clone() } else { streamed.clone() }).collect();
                tokio::spawn(async move { post(&c, &url, &ask(&urls)).await })
            })
            .collect();
        for r in burst {
            let r = r.await.unwrap();
            let (status, code, message) = error(&r);
            assert_eq!((status, code), (413, "images_too_large"), "round {round}: {}", r.body);
            assert!(message.contains("32 MiB") && message.contains("images.max_request_size"), "{message}");
            assert!(r.body["error"]["param"].as_str().unwrap().starts_with("messages[0].content["), "{}", r.body);
        }
    }
    gw.wait_log("limit=images.max_request_size");
    assert!(host.hits("/sized") >= 6, "the images were really served: {:?}", host.seen());
    assert_eq!(calls(&up), 0);
    // Generous: the bound allows 32 MiB per request (plus buffer growth); unbounded it was gigabytes.
    let peak = gw.peak_rss();
    assert!(peak < 400 << 20, "peak RSS {} MiB (was {} MiB before the bursts)", peak >> 20, before >> 20);
    // Nothing is left held against the gateway-wide budget once the requests are over.
    gw.until_held(&c, |b| b == 0.0).await;
}

#[tokio::test]
async fn inline_data_images_count_against_the_request_bound() {
    use base64::Engine as _;
    let host = image_host().await;
    let up = mock(Flavor::Ollama).await;
    let gw = Gw::start(&config("", &up, ""));
    let c = client();
    let mut inline = common::png_bytes();
    inline.resize(20 << 20, 0);
    let data_url = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&inline));
    let fetched = host.url(&format!("/sized?bytes={}", 16 << 20));

    // 20 MiB inline and 16 MiB fetched: 36 MiB, over the default 32 MiB.
    let mut body = ask(&[fetched]);
    body["messages"][0]["content"].as_array_mut().unwrap().insert(1, json!({"type": "image_url", "image_url": {"url": data_url}}));
    let r = post(&c, &gw.chat_url(), &body).await;
    let (status, code, _) = error(&r);
    assert_eq!((status, code), (413, "images_too_large"), "{}", r.body);
    assert_eq!(r.body["error"]["param"], "messages[0].content[2].image_url", "the fetched image tipped it over");

    // The inline image alone with a small fetched one fits.
    body["messages"][0]["content"][2]["image_url"]["url"] = json!(host.url("/cat.png"));
    let r = post(&c, &gw.chat_url(), &body).await;
    assert_eq!((r.status, images_seen(&r)), (200, 2), "{}", r.body);
}

#[tokio::test]
async fn the_gateway_wide_image_budget_refuses_with_503_while_other_requests_hold_it() {
    // A 4 MiB budget, so that one request holding 3 MiB fills it; the default (256 MiB) would need that much
    // concurrent traffic. The per-request bound is lowered with it (the configuration requires it to fit).
    let host = image_host().await;
    let up = mock(Flavor::Ollama).await;
    let gw = Gw::start(&config("  max_total_size: 4MiB\n  max_request_size: 4MiB\n", &up, ""));
    let c = client();

    let holder = {
        let (c, url, img) = (c.clone(), gw.chat_url(), host.url(&format!("/hold?bytes={}", 3 << 20)));
        tokio::spawn(async move { post(&c, &url, &ask(&[img])).await })
    };
    let held = gw.until_held(&c, |b| b >= f64::from(3 << 20)).await;
    assert_eq!(held, f64::from(3 << 20), "the declared length is claimed at once");

    let second = host.url(&format!("/sized?bytes={}", 2 << 20));
    let r = post(&c, &gw.chat_url(), &ask(std::slice::from_ref(&second))).await;
    let (status, code, message) = error(&r);
    assert_eq!((status, code), (503, "image_budget_exhausted"), "{}", r.body);
    assert!(message.contains("images.max_total_size") && message.contains("retry"), "{message}");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("retry-after-ms"), Some("1000"));
    gw.wait_log("limit=images.max_total_size");
    assert!(!holder.is_finished(), "the holder is still fetching");

    host.release();
    let r = holder.await.unwrap();
    assert_eq!((r.status, images_seen(&r)), (200, 1), "{}", r.body);
    assert!(content(&r).contains(&format!("{} bytes", 3 << 20)), "{}", content(&r));
    gw.until_held(&c, |b| b == 0.0).await;
    let r = post(&c, &gw.chat_url(), &ask(&[second])).await;
    assert_eq!((r.status, images_seen(&r)), (200, 1), "served once the budget is free: {}", r.body);
}

#[tokio::test]
async fn slow_images_are_fetched_side_by_side_at_most_four_at_a_time() {
    // Every image waits at a barrier until four requests wait there together: fetched one after the other,
    // the first would sit there until its fetch timeout and the request would fail.
    let host = image_host().await;
    let up = mock(Flavor::Ollama).await;
    let gw = Gw::start(&config("", &up, ""));
    let c = client();
    let r = post(&c, &gw.chat_url(), &ask(&vec![host.url("/barrier?n=4"); 8])).await;
    assert_eq!((r.status, images_seen(&r)), (200, 8), "{}", r.body);
    let seen = host.seen();
    assert_eq!(seen.hits.get("/barrier"), Some(&8));
    assert_eq!(seen.most_at_barrier, 4, "four at once (images.max_concurrent_fetches), never more");
}

#[tokio::test]
async fn the_request_deadline_ends_the_fetch_phase_with_a_clear_error() {
    // A 2 s deadline, so the test does not wait for the default 600 s; the per-image fetch timeout stays at
    // its default 10 s, longer than the deadline, so only the deadline can end these fetches. Before the fix
    // the four images were fetched in turn, each until its own timeout, far past the deadline.
    let host = image_host().await;
    let up = mock(Flavor::Ollama).await;
    let gw = Gw::start(&format!("routing:\n  deadline: 2s\n{}", config("", &up, "")));
    let c = client();
    let r = post(&c, &gw.chat_url(), &ask(&vec![host.url("/stall"); 4])).await;
    let (status, code, message) = error(&r);
    assert_eq!((status, code), (504, "image_fetch_timeout"), "{}", r.body);
    assert!(message.contains("deadline") && message.contains("4 of 4 unfinished"), "{message}");
    assert_eq!(r.body["error"]["param"], "messages[0].content[1].image_url");
    assert_eq!(host.hits("/stall"), 4, "all four were being fetched at once");
    gw.wait_log("limit=routing.deadline");
    assert_eq!(calls(&up), 0);
    host.release();
}

#[tokio::test]
async fn an_image_fetch_does_not_hold_the_providers_in_flight_slot() {
    // One in-flight slot, so a slot held by the image request would make the text request wait for it.
    let host = image_host().await;
    let up = mock(Flavor::Ollama).await;
    let gw = Gw::start(&config("", &up, "    max_in_flight: 1\n"));
    let c = client();

    let image = {
        let (c, url, img) = (c.clone(), gw.chat_url(), host.url("/gate"));
        tokio::spawn(async move { post(&c, &url, &ask(&[img])).await })
    };
    host.wait_hits("/gate", 1).await;
    let text = json!({"model": "local/llava:latest", "messages": [{"role": "user", "content": "hello"}]});
    let r = tokio::time::timeout(PATIENCE, post(&c, &gw.chat_url(), &text))
        .await
        .expect("the text request waited for the image request's slot");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!image.is_finished(), "the image request is still fetching");
    assert_eq!(calls(&up), 1, "only the text request reached the provider so far");

    host.release();
    let r = image.await.unwrap();
    assert_eq!((r.status, images_seen(&r)), (200, 1), "{}", r.body);
}

/// A forward proxy that would serve anything: it answers every request with the PNG (or, for a path
/// ending in `/to-metadata`, a redirect to the metadata service) and records the request line.
async fn open_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    use axum::http::{header, Method, StatusCode, Uri};
    use axum::response::IntoResponse;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(format!("{method} {uri}"));
            if uri.path().ends_with("/to-metadata") {
                return (StatusCode::FOUND, [(header::LOCATION, "http://metadata.google.internal/computeMetadata/v1/")]).into_response();
            }
            ([(header::CONTENT_TYPE, "image/png")], common::png_bytes()).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

/// URLs naming the gateway's own host or network in ways the guard must see through.
fn internal_urls(host: &ImageHost) -> Vec<String> {
    let port = host.port();
    vec![
        format!("http://localhost:{port}/cat.png"),
        format!("http://img.localhost:{port}/cat.png"),
        "http://metadata.google.internal/computeMetadata/v1/".to_string(),
        "http://metadata/computeMetadata/v1/".to_string(),
        format!("http://[::7f00:1]:{port}/cat.png"),
        format!("http://[::ffff:7f00:2]:{port}/cat.png"),
        format!("http://[2002:a9fe:a9fe::1]:{port}/latest/meta-data/"),
        format!("http://[64:ff9b::a9fe:a9fe]:{port}/latest/meta-data/"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        format!("http://10.0.0.1:{port}/cat.png"),
    ]
}

async fn assert_refused(c: &reqwest::Client, gw: &Gw, url: &str) {
    let r = post(c, &gw.chat_url(), &ask(&[url.to_string()])).await;
    let (status, code, message) = error(&r);
    assert_eq!((status, code), (400, "image_fetch_failed"), "{url}: {}", r.body);
    assert!(
        ["own host", "internal or cloud metadata name", "private or local address"].iter().any(|w| message.contains(w)),
        "{url}: {message}"
    );
}

#[tokio::test]
async fn proxies_from_the_environment_are_never_used() {
    let host = image_host().await;
    let up = mock(Flavor::Ollama).await;
    let (proxy, proxy_seen) = open_proxy().await;
    let mut env: Vec<(&str, &str)> =
        ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"].iter().map(|v| (*v, proxy.as_str())).collect();
    // The provider client does honour the environment's proxy (an operator's way out to cloud providers):
    // exempt only the mock provider's address, so that the proxy would still get every image URL here.
    env.extend([("NO_PROXY", "127.0.0.1"), ("no_proxy", "127.0.0.1")]);
    let gw = Gw::start_with_env(&config("", &up, ""), &env);
    let c = client();

    for url in internal_urls(&host) {
        assert_refused(&c, &gw, &url).await;
    }
    // A redirect to an internal name is refused at that hop.
    let r = post(&c, &gw.chat_url(), &ask(&[host.url(&format!("/to?url=http://localhost:{}/cat.png", host.port()))])).await;
    assert_eq!(error(&r).0, 400, "{}", r.body);
    assert_eq!(host.hits("/to"), 1);
    // An allowed address is fetched directly: the image host sees it, the proxy does not.
    let r = post(&c, &gw.chat_url(), &ask(&[host.url("/cat.png")])).await;
    assert_eq!((r.status, images_seen(&r)), (200, 1), "{}", r.body);
    assert_eq!(host.hits("/cat.png"), 1);
    assert_eq!(*proxy_seen.lock().unwrap(), Vec::<String>::new(), "the environment's proxy saw nothing");
}

#[tokio::test]
async fn a_configured_proxy_gets_only_checked_urls() {
    let host = image_host().await;
    let up = mock(Flavor::Ollama).await;
    let (proxy, proxy_seen) = open_proxy().await;
    let gw = Gw::start(&config(&format!("  proxy: \"{proxy}\"\n"), &up, ""));
    let c = client();

    // An allowed address goes through the proxy (which answers for it; the image host never sees it).
    let r = post(&c, &gw.chat_url(), &ask(&[host.url("/cat.png")])).await;
    assert_eq!((r.status, images_seen(&r)), (200, 1), "{}", r.body);
    assert_eq!(*proxy_seen.lock().unwrap(), vec![format!("GET {}", host.url("/cat.png"))]);
    assert_eq!(host.hits("/cat.png"), 0);

    for url in internal_urls(&host) {
        assert_refused(&c, &gw, &url).await;
    }
    // A redirect the proxy hands back to an internal name is refused before it is followed.
    let r = post(&c, &gw.chat_url(), &ask(&[host.url("/to-metadata")])).await;
    let (status, _, message) = error(&r);
    assert_eq!(status, 400, "{}", r.body);
    assert!(message.contains("metadata.google.internal"), "{message}");
    assert_eq!(proxy_seen.lock().unwrap().len(), 2, "the proxy saw the allowed fetch and the redirecting one only");

    // Without the allow-list, a name is resolved and checked before the proxy gets it: the machine's own
    // host name resolves to a local address (or to nothing), and the proxy never hears of it.
    let strict =
        Gw::start(&format!("images:\n  proxy: \"{proxy}\"\nproviders:\n  local:\n    type: ollama\n    base_url: \"{}\"\n", up.base_url()));
    let name = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_string();
    let name = if name.is_empty() { "localhost".to_string() } else { name };
    let r = post(&c, &strict.chat_url(), &ask(&[format!("http://{name}:{}/cat.png", host.port())])).await;
    let (status, code, message) = error(&r);
    assert_eq!((status, code), (400, "image_fetch_failed"), "{}", r.body);
    assert!(["resolves to", "cannot resolve", "own host"].iter().any(|w| message.contains(w)), "{message}");
    assert_eq!(proxy_seen.lock().unwrap().len(), 2, "the proxy saw nothing more");
}

#[tokio::test]
async fn only_raster_images_are_accepted_and_their_bytes_decide() {
    let host = image_host().await;
    let up = mock(Flavor::Ollama).await;
    let gw = Gw::start(&config("", &up, ""));
    let c = client();

    let r = post(&c, &gw.chat_url(), &ask(&[host.url("/svg")])).await;
    let (status, code, message) = error(&r);
    assert_eq!((status, code), (400, "image_fetch_failed"), "{}", r.body);
    assert!(message.contains("image/svg+xml") && message.contains("SVG"), "{message}");

    // A web page labelled image/png is refused by its bytes.
    let r = post(&c, &gw.chat_url(), &ask(&[host.url("/html-as-png")])).await;
    let (status, _, message) = error(&r);
    assert_eq!(status, 400, "{}", r.body);
    assert!(message.contains("sent as image/png"), "{message}");

    // Deliberately accepted: a real PNG labelled text/html is a PNG (many hosts mislabel images), and it is
    // passed on as image/png, the type its bytes show, never as the label.
    let r = post(&c, &gw.chat_url(), &ask(&[host.url("/png-as-html")])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(content(&r).contains(&png_description()), "{}", content(&r));
    gw.wait_log("limit=not_an_image");
    assert_eq!(calls(&up), 1, "only the PNG reached the provider");
}
