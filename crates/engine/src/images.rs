//! Fetching images by URL for providers that only take image bytes (Ollama; Bedrock later).
//!
//! Fetching a URL the caller chose is risky twice over, and this module exists to contain both risks:
//!
//! * **Server-side request forgery.** Without a guard, any caller could make the gateway read
//!   `http://169.254.169.254/` or an internal admin page. Names reserved for the local host or network
//!   (`localhost`, `*.internal`, ...) are refused outright; every address a name resolves to is checked (in
//!   the resolver itself, so a DNS answer cannot change between check and connect); literal IPs, IPv6 forms
//!   that embed an IPv4 address, and every redirect hop are checked too. Private, loopback and link-local
//!   ranges are refused unless the operator allow-listed them (`images.allow_private_networks`). No proxy
//!   from the environment is used; a configured `images.proxy` gets only URLs whose names this module has
//!   resolved and checked itself, because the proxy would otherwise resolve them unchecked.
//! * **Amplification.** A request of a few hundred bytes can name many large images. The images fetched per
//!   request, their total size (inline `data:` images included), and the image bytes the whole gateway holds
//!   at once are bounded; the bytes are counted as they arrive and refused the moment a bound is crossed.
//!   Images are fetched a few at a time, inside the per-image timeout and the request's deadline, and before
//!   the request takes a provider's in-flight slot (the executor sees to that), so slow image hosts hold
//!   neither an upstream slot nor a request past its deadline.
//!
//! Only raster formats the vision models take (png, jpeg, gif, webp) are accepted, recognised by their
//! magic bytes: a hostile host can send any `Content-Type`, so the header is never trusted. A PNG labelled
//! `text/html` is therefore accepted as the PNG it is, and SVG (a document that can reference other URLs)
//! is refused whatever it is labelled.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use ipnet::IpNet;
use secrecy::ExposeSecret as _;
use switchyard_wire::image::{is_http_url, parse_data_url, sniff_media_type, to_data_url};
use switchyard_wire::types::{ChatRequest, Content, ContentPart};
use tokio::time::Instant;

use crate::config::ImageSettings;
use crate::error::GatewayError;

/// Redirect hops followed per image.
const MAX_REDIRECTS: usize = 3;
/// What a caller refused for the gateway-wide budget is told to wait: other requests' images are usually
/// done within seconds.
const BUSY_RETRY_MS: u64 = 1000;
/// Bytes needed to tell the accepted formats apart (webp's signature ends at byte 12).
const SNIFF_LEN: usize = 12;

/// Why an image could not be inlined. Each maps to one HTTP status and one stable code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    /// One image could not be fetched, was refused by the address guard, or is not a raster image.
    #[error("{message}")]
    Fetch {
        /// Where the image sits in the request: `messages[0].content[1].image_url`.
        param: String,
        message: String,
        /// The limit or check that refused it, for logs and metrics.
        reason: &'static str,
    },
    #[error(
        "the request has {count} image URLs for the gateway to fetch; at most {limit} are allowed (images.max_images): send fewer, or send them inline as data: URLs"
    )]
    TooMany { count: usize, limit: usize },
    #[error(
        "the images of this request add up to more than {} (images.max_request_size, inline data: images included), reached at {param}; send fewer or smaller images",
        Size(*limit)
    )]
    TooLarge { param: String, limit: usize },
    #[error(
        "the gateway's allowance for fetched images ({}, images.max_total_size) is taken by other requests; retry shortly",
        Size(*limit)
    )]
    Busy { limit: usize },
    #[error(
        "the request's deadline (routing.deadline, or its route's deadline) passed while its images were being fetched: {pending} of {total} unfinished, the first {first}; use faster image hosts or a longer deadline"
    )]
    Deadline { first: String, pending: usize, total: usize },
}

impl ImageError {
    pub fn status(&self) -> u16 {
        match self {
            ImageError::Fetch { .. } | ImageError::TooMany { .. } => 400,
            ImageError::TooLarge { .. } => 413,
            ImageError::Busy { .. } => 503,
            ImageError::Deadline { .. } => 504,
        }
    }

    /// OpenAI's `type` field.
    pub fn kind(&self) -> &'static str {
        match self {
            ImageError::Fetch { .. } | ImageError::TooMany { .. } | ImageError::TooLarge { .. } => "invalid_request_error",
            ImageError::Busy { .. } => "overloaded_error",
            ImageError::Deadline { .. } => "upstream_error",
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ImageError::Fetch { .. } => "image_fetch_failed",
            ImageError::TooMany { .. } => "too_many_images",
            ImageError::TooLarge { .. } => "images_too_large",
            ImageError::Busy { .. } => "image_budget_exhausted",
            ImageError::Deadline { .. } => "image_fetch_timeout",
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            ImageError::Fetch { param, .. } | ImageError::TooLarge { param, .. } => Some(param),
            ImageError::Deadline { first, .. } => Some(first),
            ImageError::TooMany { .. } => Some("messages"),
            ImageError::Busy { .. } => None,
        }
    }

    pub fn retry_after_ms(&self) -> Option<u64> {
        matches!(self, ImageError::Busy { .. }).then_some(BUSY_RETRY_MS)
    }

    /// The limit or check behind the refusal (a fixed word: safe as a metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::Fetch { reason, .. } => reason,
            ImageError::TooMany { .. } => "images.max_images",
            ImageError::TooLarge { .. } => "images.max_request_size",
            ImageError::Busy { .. } => "images.max_total_size",
            ImageError::Deadline { .. } => "routing.deadline",
        }
    }
}

/// A byte count the way the configuration writes it (`20 MiB`), for messages.
struct Size(usize);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n >= 1 << 20 && n % (1 << 20) == 0 {
            write!(f, "{} MiB", n >> 20)
        } else if n >= 1 << 10 && n % (1 << 10) == 0 {
            write!(f, "{} KiB", n >> 10)
        } else {
            write!(f, "{n} bytes")
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Byte accounting
// ---------------------------------------------------------------------------------------------------------

/// The gateway-wide allowance of fetched image bytes. Never waited on: a request that does not fit is
/// refused at once (a wait would pin the request and its connection while others hold the memory).
#[derive(Debug)]
struct ByteBudget {
    used: AtomicUsize,
    max: usize,
}

impl ByteBudget {
    fn try_take(&self, n: usize) -> bool {
        let taken = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| used.checked_add(n).filter(|&u| u <= self.max));
        match taken {
            Ok(before) => {
                metrics::gauge!("switchyard_image_bytes_held").set((before + n) as f64);
                true
            }
            Err(_) => false,
        }
    }

    fn give(&self, n: usize) {
        let before = self.used.fetch_sub(n, Ordering::AcqRel);
        metrics::gauge!("switchyard_image_bytes_held").set(before.saturating_sub(n) as f64);
    }
}

/// One image's bytes held against the gateway-wide budget, given back when dropped: with the inlined request
/// (so the budget covers the copy that is sent upstream), or at once when the fetch fails.
#[derive(Debug)]
pub struct Held {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl Held {
    fn new(budget: &Arc<ByteBudget>) -> Self {
        Held { budget: budget.clone(), bytes: 0 }
    }

    fn grow(&mut self, n: usize) -> bool {
        let ok = self.budget.try_take(n);
        if ok {
            self.bytes += n;
        }
        ok
    }

    /// Gives back what a `Content-Length` promised but the body did not bring.
    fn shrink_to(&mut self, n: usize) {
        if n < self.bytes {
            self.budget.give(self.bytes - n);
            self.bytes = n;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.give(self.bytes);
        }
    }
}

/// One request's image bytes so far (inline images included), against `images.max_request_size`. Shared
/// by its concurrent fetches; never given back, since the request fails as soon as it is over.
struct RequestBytes {
    used: AtomicUsize,
    limit: usize,
}

impl RequestBytes {
    fn take(&self, n: usize) -> bool {
        self.used.fetch_add(n, Ordering::AcqRel).saturating_add(n) <= self.limit
    }
}

/// The request with its image URLs replaced by the images' bytes, holding those bytes' share of the
/// gateway-wide budget for as long as it lives.
#[derive(Debug)]
pub struct Inlined {
    request: ChatRequest,
    _held: Vec<Held>,
}

impl Inlined {
    pub fn request(&self) -> &ChatRequest {
        &self.request
    }
}

// ---------------------------------------------------------------------------------------------------------
// The address guard
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Guard {
    allow: Vec<IpNet>,
}

impl Guard {
    fn permits(&self, ip: IpAddr) -> bool {
        // An allow-listed 127.0.0.1/32 also opens ::ffff:127.0.0.1, the same address.
        let canonical = ip.to_canonical();
        !is_internal(ip) || self.allow.iter().any(|n| n.contains(&ip) || n.contains(&canonical))
    }
}

/// Addresses that reach the gateway's own host or network (or nothing at all) rather than the public
/// internet. IPv6 forms that carry an IPv4 address are classed by the address they carry.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xC0) == 64) // 100.64.0.0/10, carrier-grade NAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24, protocol assignments
        || (o[0] == 198 && (o[1] & 0xFE) == 18) // 198.18.0.0/15, benchmarking, often used inside networks
        || o[0] >= 240
}

fn is_internal_v6(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    if v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() {
        return true;
    }
    if (s[0] & 0xfe00) == 0xfc00 // fc00::/7, unique local
        || (s[0] & 0xffc0) == 0xfe80 // fe80::/10, link-local
        || (s[0] & 0xffc0) == 0xfec0 // fec0::/10, the retired site-local range
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[..4] == [0x0100, 0, 0, 0])
    // 100::/64, discard-only
    {
        return true;
    }
    embedded_v4(v6).iter().any(|&v4| is_internal_v4(v4))
}

/// The IPv4 addresses an IPv6 address carries, for the forms that route to them: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, which `[::7f00:1]` spells), IPv4-translated
/// (`::ffff:0:a.b.c.d`), 6to4 (`2002:aabb:ccdd::/48`), NAT64 (`64:ff9b::a.b.c.d`) and Teredo (the client's
/// address, inverted). The local-use NAT64 prefix `64:ff9b:1::/48` lets each network choose where the IPv4
/// address sits (RFC 6052 prefix lengths /48 to /96), so every position it could sit in is returned.
fn embedded_v4(v6: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = v6.segments();
    let o = v6.octets();
    let v4 = |a: u8, b: u8, c: u8, d: u8| Ipv4Addr::new(a, b, c, d);
    let tail = v4(o[12], o[13], o[14], o[15]);
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return vec![tail];
    }
    if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        return vec![tail];
    }
    if s[0] == 0x2002 {
        return vec![v4(o[2], o[3], o[4], o[5])];
    }
    if s[..6] == [0x0064, 0xff9b, 0, 0, 0, 0] {
        return vec![tail];
    }
    if s[..3] == [0x0064, 0xff9b, 0x0001] {
        // A position is a real reading only if the bits after the IPv4 address are zero, as RFC 6052 asks.
        let zero_from = |i: usize| o[i..].iter().all(|&b| b == 0);
        let mut out = Vec::new();
        for (addr, suffix) in [
            (v4(o[6], o[7], o[9], o[10]), 11),   // a /48 prefix
            (v4(o[7], o[9], o[10], o[11]), 12),  // a /56 prefix
            (v4(o[9], o[10], o[11], o[12]), 13), // a /64 prefix
        ] {
            if zero_from(suffix) {
                out.push(addr);
            }
        }
        out.push(tail); // a /96 prefix
        return out;
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return vec![v4(!o[12], !o[13], !o[14], !o[15])];
    }
    Vec::new()
}

/// Host names that name the gateway's own host or network whatever they resolve to, refused outright (an
/// internal image host is reached by its address, allow-listed in `images.allow_private_networks`).
fn reserved_name(host: &str) -> Option<&'static str> {
    let name = host.trim_end_matches('.');
    let is = |suffix: &str| name == suffix || name.ends_with(&format!(".{suffix}"));
    if is("localhost") || is("localdomain") {
        Some("names the gateway's own host")
    } else if is("internal") || name == "metadata" || name == "instance-data" {
        Some("is an internal or cloud metadata name")
    } else if is("local") {
        Some("is a local-network (mDNS) name")
    } else {
        None
    }
}

/// Resolves names for direct fetches, keeping only the addresses the guard permits. `proxy_host` (the
/// configured proxy's name, when it is one) is the one name resolved without the guard: the operator chose
/// it, and through a proxy it is the only name this client ever connects to.
struct GuardedResolver {
    guard: Arc<Guard>,
    proxy_host: Option<String>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let exempt = self.proxy_host.as_deref() == Some(name.as_str());
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs.iter().copied().filter(|a| exempt || guard.permits(a.ip())).collect();
            if allowed.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves only to private or local addresses, which image fetches may not reach").into();
                return Err(err);
            }
            let it: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(it)
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Fetching
// ---------------------------------------------------------------------------------------------------------

/// Fetches images under the guard and the byte bounds. Cheap to clone.
#[derive(Clone)]
pub struct ImageFetcher {
    client: reqwest::Client,
    guard: Arc<Guard>,
    budget: Arc<ByteBudget>,
    /// Through `images.proxy`: names are resolved and checked here, since the proxy resolves them again.
    proxied: bool,
    max_bytes: usize,
    max_images: usize,
    max_request_bytes: usize,
    concurrency: usize,
    timeout: Duration,
}

/// One image URL of the request, by position.
struct Job<'r> {
    message: usize,
    part: usize,
    url: &'r str,
}

impl Job<'_> {
    fn param(&self) -> String {
        param(self.message, self.part)
    }
}

fn param(message: usize, part: usize) -> String {
    format!("messages[{message}].content[{part}].image_url")
}

/// One fetched image, already as a `data:` URL (the raw bytes are gone).
struct Fetched {
    data_url: String,
    held: Held,
}

impl ImageFetcher {
    pub fn new(settings: &ImageSettings) -> Result<Self, GatewayError> {
        let guard = Arc::new(Guard { allow: settings.allow_private.clone() });
        let proxy = match &settings.proxy {
            Some(url) => Some(
                reqwest::Proxy::all(url.expose_secret())
                    .map_err(|e| GatewayError::Internal(format!("images.proxy is not a usable proxy URL: {}", error_chain(&e))))?,
            ),
            None => None,
        };
        let proxy_host = settings
            .proxy
            .as_ref()
            .and_then(|u| reqwest::Url::parse(u.expose_secret()).ok())
            .and_then(|u| u.host_str().map(str::to_string));
        // Never a proxy from the environment: it would resolve names this guard never saw.
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { guard: guard.clone(), proxy_host }))
            // Redirects are followed by hand, so every hop passes the same checks as the first URL.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.fetch_timeout)
            .tcp_nodelay(true);
        if let Some(p) = proxy {
            builder = builder.proxy(p);
        }
        let client =
            builder.build().map_err(|e| GatewayError::Internal(format!("cannot build the image fetch client: {}", error_chain(&e))))?;
        Ok(ImageFetcher {
            client,
            guard,
            budget: Arc::new(ByteBudget { used: AtomicUsize::new(0), max: settings.max_total_bytes }),
            proxied: settings.proxy.is_some(),
            max_bytes: settings.max_bytes,
            max_images: settings.max_images,
            max_request_bytes: settings.max_request_bytes,
            concurrency: settings.max_concurrent_fetches.max(1),
            timeout: settings.fetch_timeout,
        })
    }

    /// Replaces every http(s) image URL in the request with the image's bytes, for providers that need them,
    /// fetching up to `images.max_concurrent_fetches` at once and giving up at `deadline`.
    /// Returns `None` when the request has no image URL (the common case: nothing is copied).
    pub async fn inline_images(&self, req: &ChatRequest, deadline: Instant) -> Result<Option<Inlined>, ImageError> {
        if !req.has_http_image_urls() {
            return Ok(None);
        }
        match self.inline_all(req, deadline).await {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                let reason = e.reason();
                metrics::counter!("switchyard_image_refusals_total", "reason" => reason).increment(1);
                // A refused or unreachable image URL is the caller's (4xx); only the gateway's own limits running
                // out (5xx: the image budget, the deadline) are the operator's to look at.
                if e.status() < 500 {
                    tracing::info!(limit = %reason, status = e.status(), code = %e.code(), "image fetch refused: {e}");
                } else {
                    tracing::warn!(limit = %reason, status = e.status(), code = %e.code(), "image fetch refused: {e}");
                }
                Err(e)
            }
        }
    }

    async fn inline_all(&self, req: &ChatRequest, deadline: Instant) -> Result<Inlined, ImageError> {
        let mut jobs = Vec::new();
        let mut inline_bytes = 0usize;
        let mut tipped = None;
        for (i, m) in req.messages.iter().enumerate() {
            let Some(Content::Parts(parts)) = &m.content else { continue };
            for (j, p) in parts.iter().enumerate() {
                let ContentPart::ImageUrl { image_url } = p else { continue };
                let url = image_url.url.as_str();
                if is_http_url(url) {
                    jobs.push(Job { message: i, part: j, url });
                } else if url.starts_with("data:") {
                    // Already in the request, but it is sent upstream beside the fetched ones: it counts.
                    inline_bytes += parse_data_url(url).map_or(url.len(), |d| d.base64.len() / 4 * 3);
                    if inline_bytes > self.max_request_bytes && tipped.is_none() {
                        tipped = Some(param(i, j));
                    }
                }
            }
        }
        if jobs.len() > self.max_images {
            return Err(ImageError::TooMany { count: jobs.len(), limit: self.max_images });
        }
        if let Some(param) = tipped {
            return Err(ImageError::TooLarge { param, limit: self.max_request_bytes });
        }
        let request = RequestBytes { used: AtomicUsize::new(inline_bytes), limit: self.max_request_bytes };
        let total = jobs.len();
        let mut done: Vec<Option<Fetched>> = (0..total).map(|_| None).collect();
        {
            // At most `concurrency` fetches run; each one that ends makes room for the next.
            let mut running = futures_util::stream::FuturesUnordered::new();
            let mut started = 0;
            while started < total.min(self.concurrency) {
                running.push(self.fetch_at(started, &jobs[started], &request));
                started += 1;
            }
            let expiry = tokio::time::sleep_until(deadline);
            tokio::pin!(expiry);
            loop {
                tokio::select! {
                    biased;
                    () = &mut expiry => {
                        let unfinished: Vec<usize> = (0..total).filter(|&k| done[k].is_none()).collect();
                        let first = unfinished.first().map_or_else(String::new, |&k| jobs[k].param());
                        return Err(ImageError::Deadline { first, pending: unfinished.len(), total });
                    }
                    next = running.next() => match next {
                        Some((k, Ok(f))) => {
                            done[k] = Some(f);
                            if started < total {
                                running.push(self.fetch_at(started, &jobs[started], &request));
                                started += 1;
                            }
                        }
                        // Dropping the set cancels the other fetches and gives their bytes back.
                        Some((_, Err(e))) => return Err(e),
                        None => break,
                    },
                }
            }
        }
        let mut out = req.clone();
        let mut held = Vec::with_capacity(total);
        for (job, fetched) in jobs.iter().zip(done) {
            let Some(f) = fetched else { continue };
            if let Some(Content::Parts(parts)) = &mut out.messages[job.message].content {
                if let Some(ContentPart::ImageUrl { image_url }) = parts.get_mut(job.part) {
                    image_url.url = f.data_url;
                }
            }
            held.push(f.held);
        }
        Ok(Inlined { request: out, _held: held })
    }

    /// [`Self::fetch`] for the `k`-th image URL of the request, returning `k` with the result.
    async fn fetch_at(&self, k: usize, job: &Job<'_>, request: &RequestBytes) -> (usize, Result<Fetched, ImageError>) {
        (k, self.fetch(job.url, &job.param(), request).await)
    }

    /// Downloads one image within `images.fetch_timeout` and returns it as a `data:` URL.
    async fn fetch(&self, url: &str, param: &str, request: &RequestBytes) -> Result<Fetched, ImageError> {
        match tokio::time::timeout(self.timeout, self.download(url, param, request)).await {
            Ok(r) => r,
            Err(_) => Err(fetch_error(
                param,
                "images.fetch_timeout",
                format!("fetching the image took longer than {} (images.fetch_timeout)", crate::human::duration(self.timeout)),
            )),
        }
    }

    async fn download(&self, url: &str, param: &str, request: &RequestBytes) -> Result<Fetched, ImageError> {
        let bad = |reason: &'static str, message: String| fetch_error(param, reason, message);
        let mut url = reqwest::Url::parse(url).map_err(|e| bad("invalid_url", format!("image URL is not valid: {e}")))?;
        let mut hops = 0;
        let mut resp = loop {
            self.admit(&url).await.map_err(|m| bad("images.allow_private_networks", m))?;
            let resp = self
                .client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| bad("unreachable", format!("could not fetch the image: {}", error_chain(&e.without_url()))))?;
            if !resp.status().is_redirection() {
                break resp;
            }
            let status = resp.status().as_u16();
            let next = resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).and_then(|l| url.join(l).ok());
            let Some(next) = next else {
                return Err(bad("http_status", format!("fetching the image returned HTTP {status} without a usable Location")));
            };
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(bad("redirects", format!("the image URL redirected more than {MAX_REDIRECTS} times")));
            }
            url = next;
        };
        if !resp.status().is_success() {
            return Err(bad("http_status", format!("fetching the image returned HTTP {}", resp.status().as_u16())));
        }
        let too_big = || bad("images.max_size", format!("the image is larger than {} (images.max_size)", Size(self.max_bytes)));
        let declared = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        let not_raster = || {
            let said = declared.as_deref().map(|d| format!(" (it was sent as {d})")).unwrap_or_default();
            bad(
                "not_an_image",
                format!("the URL did not return a png, jpeg, gif or webp image{said}; other formats, SVG included, are refused"),
            )
        };
        let mut held = Held::new(&self.budget);
        let expected = match resp.content_length() {
            Some(n) if n > self.max_bytes as u64 => return Err(too_big()),
            Some(n) => n as usize,
            None => 0,
        };
        // A declared length is claimed at once, so an image that cannot fit is refused before its body.
        self.reserve(expected, &mut held, request, param)?;
        let mut buf = Vec::with_capacity(expected);
        let mut sniffed = false;
        while let Some(chunk) =
            resp.chunk().await.map_err(|e| bad("unreachable", format!("could not read the image: {}", error_chain(&e.without_url()))))?
        {
            let len = buf.len() + chunk.len();
            if len > self.max_bytes {
                return Err(too_big());
            }
            if len > held.bytes {
                self.reserve(len - held.bytes, &mut held, request, param)?;
            }
            buf.extend_from_slice(&chunk);
            if !sniffed && buf.len() >= SNIFF_LEN {
                // Refused from its first bytes, not after reading megabytes of a web page.
                if sniff_media_type(&buf).is_none() {
                    return Err(not_raster());
                }
                sniffed = true;
            }
        }
        let media = sniff_media_type(&buf).ok_or_else(not_raster)?;
        held.shrink_to(buf.len());
        let data_url = to_data_url(media, &buf);
        drop(buf);
        Ok(Fetched { data_url, held })
    }

    /// Claims `n` more bytes: first against the request's bound (413), then the gateway's (503).
    fn reserve(&self, n: usize, held: &mut Held, request: &RequestBytes, param: &str) -> Result<(), ImageError> {
        if n == 0 {
            return Ok(());
        }
        if !request.take(n) {
            return Err(ImageError::TooLarge { param: param.to_string(), limit: request.limit });
        }
        if !held.grow(n) {
            return Err(ImageError::Busy { limit: self.budget.max });
        }
        Ok(())
    }

    /// Checks one URL (the first or a redirect's) before anything is sent to it.
    async fn admit(&self, url: &reqwest::Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("image URLs must be http or https, not {}", url.scheme()));
        }
        let Some(host) = url.host_str() else {
            return Err("the image URL has no host".into());
        };
        let private = |ip: IpAddr| {
            format!(
                "the image URL points to {ip}, a private or local address; allow it with images.allow_private_networks if that is intended"
            )
        };
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return if self.guard.permits(ip) { Ok(()) } else { Err(private(ip)) };
        }
        if let Some(why) = reserved_name(host) {
            return Err(format!("the image URL's host {host} {why}, which image fetches may not reach"));
        }
        if self.proxied {
            // The proxy resolves the name again; checking every address it might pick is the best we can do.
            let port = url.port_or_known_default().unwrap_or(80);
            let addrs = tokio::net::lookup_host((host, port)).await.map_err(|e| format!("cannot resolve {host}: {e}"))?;
            let mut any = false;
            for a in addrs {
                any = true;
                if !self.guard.permits(a.ip()) {
                    return Err(format!("{host} resolves to {}, a private or local address, which image fetches may not reach", a.ip()));
                }
            }
            if !any {
                return Err(format!("{host} resolves to no address"));
            }
        }
        Ok(())
    }
}

fn fetch_error(param: &str, reason: &'static str, message: String) -> ImageError {
    ImageError::Fetch { param: param.to_string(), message, reason }
}

/// reqwest's top-level error says little ("error sending request"); the cause says why.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internal(s: &str) -> bool {
        is_internal(s.parse().unwrap())
    }

    #[test]
    fn internal_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "198.18.0.1",
            "192.0.0.8",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(internal(ip), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "100.128.0.1", "2606:4700::1111", "2a00:1450:4001:82a::200e"] {
            assert!(!internal(ip), "{ip}");
        }
    }

    #[test]
    fn ipv6_forms_that_embed_an_ipv4_are_classed_by_it() {
        for ip in [
            "::ffff:127.0.0.1",                     // IPv4-mapped
            "::ffff:a9fe:a9fe",                     // mapped 169.254.169.254, written in hex
            "::7f00:1",                             // IPv4-compatible 127.0.0.1
            "::127.0.0.1",                          // the same, dotted
            "::a00:1",                              // compatible 10.0.0.1
            "::ffff:0:7f00:1",                      // IPv4-translated 127.0.0.1
            "2002:7f00:1::",                        // 6to4 of 127.0.0.1
            "2002:a9fe:a9fe::1",                    // 6to4 of 169.254.169.254
            "64:ff9b::7f00:1",                      // NAT64 of 127.0.0.1
            "64:ff9b::10.0.0.1",                    // NAT64 of 10.0.0.1
            "64:ff9b:1::a00:1",                     // local-use NAT64, /96 position
            "64:ff9b:1:7f00:0:100::",               // local-use NAT64, /48 position: 127.0.0.1
            "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo, client 127.0.0.1 inverted
        ] {
            assert!(internal(ip), "{ip} embeds an internal IPv4");
        }
        for ip in [
            "::ffff:8.8.8.8",
            "::808:808",
            "2002:808:808::1",
            "64:ff9b::808:808",
            "64:ff9b:1::808:808", // local-use NAT64 read at /96: the other positions are not valid readings
            "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
        ] {
            assert!(!internal(ip), "{ip} embeds a public IPv4");
        }
    }

    #[test]
    fn allow_list_opens_a_range_in_either_spelling() {
        let g = Guard { allow: vec!["127.0.0.1/32".parse().unwrap()] };
        assert!(g.permits("127.0.0.1".parse().unwrap()));
        assert!(g.permits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!g.permits("127.0.0.2".parse().unwrap()));
        assert!(!g.permits("::1".parse().unwrap()));
    }

    #[test]
    fn reserved_names() {
        for n in [
            "localhost",
            "LOCALHOST.",
            "a.localhost",
            "metadata.google.internal",
            "metadata",
            "instance-data",
            "printer.local",
            "x.localdomain",
        ] {
            assert!(reserved_name(&n.to_ascii_lowercase()).is_some(), "{n}");
        }
        for n in ["example.com", "localhost.example.com", "internal.example.com", "images.local-cdn.net"] {
            assert!(reserved_name(n).is_none(), "{n}");
        }
    }

    #[test]
    fn budget_is_taken_and_given_back() {
        let budget = Arc::new(ByteBudget { used: AtomicUsize::new(0), max: 100 });
        let mut a = Held::new(&budget);
        assert!(a.grow(60));
        let mut b = Held::new(&budget);
        assert!(!b.grow(41), "over the budget");
        assert!(b.grow(40));
        a.shrink_to(10);
        assert_eq!(budget.used.load(Ordering::Acquire), 50);
        drop(a);
        drop(b);
        assert_eq!(budget.used.load(Ordering::Acquire), 0);
    }

    #[test]
    fn request_bytes_stop_at_the_limit() {
        let r = RequestBytes { used: AtomicUsize::new(10), limit: 20 };
        assert!(r.take(10));
        assert!(!r.take(1));
    }

    #[test]
    fn sizes_read_like_the_config() {
        assert_eq!(Size(32 << 20).to_string(), "32 MiB");
        assert_eq!(Size(1024).to_string(), "1 KiB");
        assert_eq!(Size(1500).to_string(), "1500 bytes");
    }
}
