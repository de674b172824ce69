//! Fetching images by URL for providers that only take image bytes (Ollama; Bedrock later).
//!
//! Fetching a URL the caller chose is a server-side request forgery risk: without a guard, any caller could
//! make the gateway read `http://169.254.169.254/` or an internal admin page. So every address a name
//! resolves to is checked (in the resolver itself, so a DNS answer cannot change between check and connect),
//! literal IPs and redirect targets are checked too, and private, loopback and link-local ranges are refused
//! unless the operator allow-listed them (`images.allow_private_networks`). Size and time are bounded.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use switchyard_wire::image::{is_http_url, sniff_media_type, to_data_url};
use switchyard_wire::types::{ChatRequest, Content, ContentPart};

use crate::config::ImageSettings;
use crate::error::GatewayError;

/// Fetches images under the SSRF guard. Cheap to clone.
#[derive(Clone)]
pub struct ImageFetcher {
    client: reqwest::Client,
    guard: Arc<Guard>,
    max_bytes: usize,
    timeout: Duration,
}

#[derive(Debug)]
struct Guard {
    allow: Vec<IpNet>,
}

impl Guard {
    fn permits(&self, ip: IpAddr) -> bool {
        !is_internal(ip) || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// Addresses that reach the gateway's own host or network rather than the public internet.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xC0) == 64) // 100.64.0.0/10, carrier-grade NAT
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

struct GuardedResolver {
    guard: Arc<Guard>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs.iter().copied().filter(|a| guard.permits(a.ip())).collect();
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

impl ImageFetcher {
    pub fn new(settings: &ImageSettings) -> Result<Self, GatewayError> {
        let guard = Arc::new(Guard { allow: settings.allow_private.clone() });
        let redirect_guard = guard.clone();
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver { guard: guard.clone() }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 3 {
                    return attempt.error("too many redirects");
                }
                match literal_ip(attempt.url()) {
                    Some(ip) if !redirect_guard.permits(ip) => attempt.error("redirect to a private or local address"),
                    _ => attempt.follow(),
                }
            }))
            .connect_timeout(settings.fetch_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| GatewayError::Internal(format!("cannot build the image fetch client: {e}")))?;
        Ok(ImageFetcher { client, guard, max_bytes: settings.max_bytes, timeout: settings.fetch_timeout })
    }

    /// Downloads one image and returns it as a `data:` URL.
    pub async fn fetch(&self, url: &str, param: &str) -> Result<String, GatewayError> {
        let bad = |msg: String| GatewayError::BadRequest { message: msg, param: Some(param.to_string()), code: "image_fetch_failed" };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(format!("image URL is not valid: {e}")))?;
        if let Some(ip) = literal_ip(&parsed) {
            if !self.guard.permits(ip) {
                return Err(bad(format!(
                    "image URL points to {ip}, a private or local address; allow it with images.allow_private_networks if that is intended"
                )));
            }
        }
        let work = async {
            let mut resp =
                self.client.get(parsed).send().await.map_err(|e| bad(format!("could not fetch the image: {}", error_chain(&e))))?;
            if !resp.status().is_success() {
                return Err(bad(format!("fetching the image returned HTTP {}", resp.status().as_u16())));
            }
            if resp.content_length().is_some_and(|n| n > self.max_bytes as u64) {
                return Err(bad(format!("the image is larger than the {} byte limit", self.max_bytes)));
            }
            let declared = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
            let mut buf = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| bad(format!("could not read the image: {e}")))? {
                if buf.len() + chunk.len() > self.max_bytes {
                    return Err(bad(format!("the image is larger than the {} byte limit", self.max_bytes)));
                }
                buf.extend_from_slice(&chunk);
            }
            let media = match sniff_media_type(&buf) {
                Some(m) => m.to_string(),
                None => match declared {
                    Some(d) if d.starts_with("image/") => d,
                    _ => return Err(bad("the URL did not return an image (png, jpeg, gif or webp)".into())),
                },
            };
            Ok(to_data_url(&media, &buf))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| bad(format!("fetching the image took longer than {:?}", self.timeout)))?
    }

    /// Replaces every http(s) image URL in the request with the image's bytes, for providers that need them.
    /// Returns `None` when the request has no image URL (the common case: nothing is copied).
    pub async fn inline_images(&self, req: &ChatRequest) -> Result<Option<ChatRequest>, GatewayError> {
        if !req.has_http_image_urls() {
            return Ok(None);
        }
        let mut out = req.clone();
        for (i, m) in out.messages.iter_mut().enumerate() {
            if let Some(Content::Parts(parts)) = &mut m.content {
                for (j, p) in parts.iter_mut().enumerate() {
                    if let ContentPart::ImageUrl { image_url } = p {
                        if is_http_url(&image_url.url) {
                            image_url.url = self.fetch(&image_url.url, &format!("messages[{i}].content[{j}].image_url")).await?;
                        }
                    }
                }
            }
        }
        Ok(Some(out))
    }
}

fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    url.host_str()?.trim_start_matches('[').trim_end_matches(']').parse().ok()
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
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn allow_list_opens_a_range() {
        let g = Guard { allow: vec!["127.0.0.1/32".parse().unwrap()] };
        assert!(g.permits("127.0.0.1".parse().unwrap()));
        assert!(!g.permits("127.0.0.2".parse().unwrap()));
    }
}
