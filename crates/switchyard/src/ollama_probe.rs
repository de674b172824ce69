//! Finding a local Ollama when `serve` runs without a configuration file, and saying what was found.
//!
//! A newcomer who has Ollama running expects the gateway to use it, and one whose Ollama listens elsewhere
//! sets `OLLAMA_HOST` as Ollama's own command line reads it. Either way the log says in one line what
//! happened (found at URL, nothing answered at URL, or the variable is not an address), so that a missing
//! `ollama/...` provider is never a mystery.
//!
//! `OLLAMA_HOST` is read the way Ollama reads it (`envconfig.Host`): `host`, `host:port`, `:port`, or a
//! URL with `http://` or `https://`; without a scheme the port defaults to 11434 (with one, to the scheme's
//! port). A server's bind address such as `0.0.0.0` is reached on the loopback address.

use std::time::Duration;

/// Ollama's own default.
const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_PORT: u16 = 11434;
/// A local server answers its version in milliseconds, and a port nobody listens on is refused at once; only
/// an address that swallows packets makes `serve` wait, and then not for long. Generous enough for a busy
/// machine, whose Ollama may take a moment.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// Why `OLLAMA_HOST` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("the scheme {0} is not http or https")]
    Scheme(String),
    #[error("the port {0} is not a number from 1 to 65535")]
    Port(String),
    #[error("{0} is not a host name or IP address")]
    Host(String),
}

/// The base URL `OLLAMA_HOST` points at (`None`: unset or empty, so the default address).
pub fn base_url(ollama_host: Option<&str>) -> Result<String, HostError> {
    let raw = ollama_host.map(str::trim).unwrap_or("");
    if raw.is_empty() {
        return Ok(format!("http://{DEFAULT_HOST}:{DEFAULT_PORT}"));
    }
    let (scheme, rest, default_port) = match raw.split_once("://") {
        None => ("http", raw, DEFAULT_PORT),
        Some((s, rest)) if s.eq_ignore_ascii_case("http") => ("http", rest, 80),
        Some((s, rest)) if s.eq_ignore_ascii_case("https") => ("https", rest, 443),
        Some((s, _)) => return Err(HostError::Scheme(s.to_string())),
    };
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = split_host_port(hostport)?;
    let port = match port {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| HostError::Port(p.to_string()))?,
    };
    let host = match host {
        "" | "0.0.0.0" => DEFAULT_HOST.to_string(),
        "::" => "[::1]".to_string(),
        h if h.contains(':') => format!("[{h}]"),
        h => h.to_string(),
    };
    let path = path.trim_end_matches('/');
    let url = if path.is_empty() { format!("{scheme}://{host}:{port}") } else { format!("{scheme}://{host}:{port}/{path}") };
    match reqwest::Url::parse(&url) {
        Ok(u) if u.host_str().is_some() => Ok(url),
        _ => Err(HostError::Host(host)),
    }
}

/// `host:port`, `[v6]:port`, `host`, `[v6]`, `v6` or `:port`.
fn split_host_port(s: &str) -> Result<(&str, Option<&str>), HostError> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| HostError::Host(s.to_string()))?;
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(HostError::Host(s.to_string())),
        };
    }
    match s.matches(':').count() {
        0 => Ok((s, None)),
        1 => s.split_once(':').map(|(h, p)| (h, Some(p))).ok_or_else(|| HostError::Host(s.to_string())),
        // A bare IPv6 address.
        _ => Ok((s, None)),
    }
}

/// The Ollama to add as provider `ollama`, or `None`; the outcome is logged either way.
pub async fn probe() -> Option<String> {
    let var = std::env::var("OLLAMA_HOST").ok().filter(|h| !h.trim().is_empty());
    let from = if var.is_some() { "OLLAMA_HOST" } else { "the default address; set OLLAMA_HOST if it listens elsewhere" };
    let base = match base_url(var.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(
                "no local Ollama: OLLAMA_HOST is not a valid address ({e}); it holds \"{}\"",
                var.unwrap_or_default().escape_debug()
            );
            return None;
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder().timeout(PROBE_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("no local Ollama: cannot build an HTTP client to look for it: {e}");
            return None;
        }
    };
    match client.get(format!("{base}/api/version")).send().await {
        Ok(r) if r.status().is_success() => {
            tracing::info!("found a local Ollama at {base} ({from}); its models are served as ollama/MODEL");
            Some(base)
        }
        Ok(r) => {
            tracing::info!("no local Ollama: {base} ({from}) answered {} to GET /api/version, not like Ollama", r.status().as_u16());
            None
        }
        Err(e) => {
            let within =
                if e.is_timeout() { format!(" within {}", switchyard_engine::human::duration(PROBE_TIMEOUT)) } else { String::new() };
            tracing::info!("no local Ollama: nothing answered at {base}{within} ({from})");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_host_is_read_like_ollama_reads_it() {
        let ok = |v: Option<&str>| base_url(v).unwrap();
        assert_eq!(ok(None), "http://127.0.0.1:11434");
        assert_eq!(ok(Some(" ")), "http://127.0.0.1:11434");
        assert_eq!(ok(Some("gpu-box")), "http://gpu-box:11434", "no scheme: Ollama's port");
        assert_eq!(ok(Some("0.0.0.0")), "http://127.0.0.1:11434", "a bind address is reached on loopback");
        assert_eq!(ok(Some("0.0.0.0:8080")), "http://127.0.0.1:8080");
        assert_eq!(ok(Some(":9000")), "http://127.0.0.1:9000");
        assert_eq!(ok(Some("10.0.0.5:11434/")), "http://10.0.0.5:11434");
        assert_eq!(ok(Some("http://gpu-box")), "http://gpu-box:80", "a scheme brings its own port");
        assert_eq!(ok(Some("https://ollama.example/api-base/")), "https://ollama.example:443/api-base");
        assert_eq!(ok(Some("[::1]:11500")), "http://[::1]:11500");
        assert_eq!(ok(Some("::")), "http://[::1]:11434");
        assert_eq!(base_url(Some("ftp://x")), Err(HostError::Scheme("ftp".into())));
        assert_eq!(base_url(Some("gpu-box:eleven")), Err(HostError::Port("eleven".into())));
        assert_eq!(base_url(Some("gpu-box:0")), Err(HostError::Port("0".into())));
        assert!(matches!(base_url(Some("[::1")), Err(HostError::Host(_))));
        assert!(matches!(base_url(Some("bad host:1")), Err(HostError::Host(_))));
    }
}
