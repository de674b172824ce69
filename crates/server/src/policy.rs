//! What a browser page must not be able to make the gateway do: spend the user's credits with a forged
//! cross-origin POST, or read answers through DNS rebinding.
//!
//! A page may send "simple" cross-origin requests without asking first: `text/plain`, form-urlencoded or
//! multipart bodies, or a body with no type at all (a `Blob`). Requiring a JSON content type on every
//! request with a body forces the browser to ask first (a CORS preflight), which the gateway never
//! grants, so a forged request never arrives. DNS rebinding instead points a name the attacker owns at the
//! gateway's address, so the page is same-origin and may read answers; what gives it away is the `Host`
//! header, which carries the attacker's name. A gateway on a loopback address therefore answers only for
//! loopback names (and `server.allowed_hosts`); one on another address is meant to be reached by names
//! we cannot guess, so any `Host` is accepted there unless `server.allowed_hosts` is set.
//!
//! Which clients send what (checked, so the rule refuses none of them): the official OpenAI and
//! Anthropic Python SDKs and `openai-go` send `application/json`; `go-openai` and Java/OkHttp clients add
//! `; charset=utf-8`. `curl -d` sends `application/x-www-form-urlencoded` unless told otherwise; it is
//! refused like a browser form would be, with a message that says to add the header.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;

use crate::errors::{refusal_response, Refusal};
use crate::throttle::{more, Throttled};

static HOST_REFUSED: Throttled = Throttled::new("allowed_hosts");
static MEDIA_REFUSED: Throttled = Throttled::new("json_content_type");

/// The host rule, fixed at start from the listen address and `server.allowed_hosts`.
#[derive(Debug)]
pub(crate) struct HostPolicy {
    /// False when any `Host` is accepted.
    check: bool,
    port: u16,
    listen_ip: IpAddr,
    allowed: Vec<Pattern>,
}

#[derive(Debug, PartialEq)]
enum Pattern {
    Exact {
        host: String,
        port: Option<u16>,
    },
    /// `*.example.com` is stored as `.example.com`.
    Suffix {
        suffix: String,
        port: Option<u16>,
    },
}

impl HostPolicy {
    /// `allowed` holds entries already checked by the configuration (lowercase; `*` means any host).
    pub(crate) fn new(listen: SocketAddr, allowed: &[String]) -> Self {
        let any = allowed.iter().any(|a| a == "*");
        let patterns: Vec<Pattern> = allowed.iter().filter(|a| *a != "*").filter_map(|a| Pattern::parse(a)).collect();
        HostPolicy {
            check: !any && (listen.ip().is_loopback() || !patterns.is_empty()),
            port: listen.port(),
            listen_ip: listen.ip(),
            allowed: patterns,
        }
    }

    /// Whether a request naming this authority (`Host` header or absolute URI) is answered.
    pub(crate) fn allows(&self, authority: &str) -> bool {
        if !self.check {
            return true;
        }
        let Some((host, port)) = split_authority(authority) else { return false };
        let host = host.strip_suffix('.').unwrap_or(host);
        // A missing port is the scheme's default; the gateway speaks plain HTTP.
        if port.unwrap_or(80) == self.port && self.is_local_name(host) {
            return true;
        }
        self.allowed.iter().any(|p| p.matches(host, port))
    }

    /// Names a rebinding attacker cannot take over: `localhost` and its subdomains (RFC 6761 keeps them
    /// off DNS), loopback IP literals, and the listen address itself.
    fn is_local_name(&self, host: &str) -> bool {
        if host.eq_ignore_ascii_case("localhost")
            || (host.len() > ".localhost".len() && host[host.len() - ".localhost".len()..].eq_ignore_ascii_case(".localhost"))
        {
            return true;
        }
        let ip = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
            None => host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
        };
        ip.is_some_and(|ip| ip.is_loopback() || ip == self.listen_ip)
    }
}

impl Pattern {
    fn parse(entry: &str) -> Option<Pattern> {
        let (host, port) = split_authority(entry)?;
        match host.strip_prefix('*') {
            Some(suffix) => Some(Pattern::Suffix { suffix: suffix.to_string(), port }),
            None => Some(Pattern::Exact { host: host.strip_suffix('.').unwrap_or(host).to_string(), port }),
        }
    }

    fn matches(&self, host: &str, port: Option<u16>) -> bool {
        let (name_ok, want) = match self {
            Pattern::Exact { host: h, port } => (host.eq_ignore_ascii_case(h), port),
            Pattern::Suffix { suffix, port } => (
                host.len() > suffix.len() && host.is_char_boundary(host.len() - suffix.len()) && {
                    let tail = &host[host.len() - suffix.len()..];
                    tail.eq_ignore_ascii_case(suffix)
                },
                port,
            ),
        };
        name_ok && want.is_none_or(|w| port.unwrap_or(80) == w)
    }
}

/// `host[:port]` or `[v6][:port]`; `None` when the port is not a number.
fn split_authority(a: &str) -> Option<(&str, Option<u16>)> {
    let a = a.trim();
    let (host, port) = if a.starts_with('[') {
        let end = a.find(']')?;
        let (h, rest) = a.split_at(end + 1);
        (h, rest.strip_prefix(':'))
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    (!host.is_empty()).then_some((host, port))
}

/// `application/json`, with or without parameters, or any `application/*+json`.
pub(crate) fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let Some((kind, sub)) = essence.split_once('/') else { return false };
    kind.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json") || (sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case("+json")))
}

/// The router's outermost check: the host rule for every request, the JSON rule for every request that
/// carries a body to an API route.
pub(crate) async fn guard(State(policy): State<Arc<HostPolicy>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let authorities =
        req.uri().authority().map(|a| a.as_str()).into_iter().chain(headers.get_all(header::HOST).iter().filter_map(|v| v.to_str().ok()));
    let mut refused_host = None;
    for a in authorities {
        if !policy.allows(a) {
            refused_host = Some(a.to_string());
            break;
        }
    }
    // A Host that is not even text is not one of ours either.
    if refused_host.is_none() && policy.check && headers.get_all(header::HOST).iter().any(|v| v.to_str().is_err()) {
        refused_host = Some("(not text)".into());
    }
    if let Some(host) = refused_host {
        let shown: String = host.chars().take(100).collect();
        if let Some(n) = HOST_REFUSED.hit() {
            // A caller's 403 (a wrong name, or a page trying DNS rebinding): INFO, never the operator's WARN.
            tracing::info!(host = %shown.escape_debug(), "refused a request for a host this gateway does not serve (server.allowed_hosts){}", more(n));
        }
        return refusal_response(&Refusal::HostNotAllowed(shown));
    }
    if matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
        let ct = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not text)"));
        if !ct.is_some_and(is_json) {
            let shown = ct.map(|t| t.chars().take(100).collect::<String>());
            if let Some(n) = MEDIA_REFUSED.hit() {
                // The caller's 415: INFO.
                tracing::info!(
                    content_type = %shown.as_deref().unwrap_or("(none)").escape_debug(),
                    path = %req.uri().path().chars().take(100).collect::<String>().escape_debug(),
                    "refused a request body that is not labelled JSON (415){}",
                    more(n)
                );
            }
            return refusal_response(&Refusal::NotJson(shown));
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn policy(listen: &str, allowed: &[&str]) -> HostPolicy {
        HostPolicy::new(listen.parse().unwrap(), &allowed.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/vnd.api+json",
            " application/json ;x=y",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
            "json",
            "application/jsonp",
            "text/json+json",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
    }

    #[test]
    fn loopback_answers_only_loopback_names_on_its_port() {
        let p = policy("127.0.0.1:8080", &[]);
        for ok in
            ["localhost:8080", "LOCALHOST:8080", "127.0.0.1:8080", "[::1]:8080", "127.0.0.2:8080", "app.localhost:8080", "localhost.:8080"]
        {
            assert!(p.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "localhost:9090",
            "localhost",
            "127.0.0.1",
            "evil-localhost:8080",
            "10.0.0.1:8080",
            "[::1]",
            "localhost:x",
            "",
        ] {
            assert!(!p.allows(bad), "{bad}");
        }
        let p80 = policy("127.0.0.1:80", &[]);
        assert!(p80.allows("localhost") && p80.allows("localhost:80"));
    }

    #[test]
    fn allow_list_entries() {
        let p = policy("[::1]:8080", &["gateway.internal", "*.corp.example", "api.example:443"]);
        for ok in [
            "gateway.internal:8080",
            "gateway.internal",
            "Gateway.Internal:1",
            "a.corp.example:8080",
            "a.b.corp.example",
            "api.example:443",
            "[::1]:8080",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for bad in ["corp.example", "xcorp.example:8080", "api.example:8443", "api.example", "evil.example"] {
            assert!(!p.allows(bad), "{bad}");
        }
        assert!(policy("127.0.0.1:8080", &["*"]).allows("anything.example"));
    }

    #[test]
    fn other_addresses_answer_any_host_unless_told() {
        assert!(policy("0.0.0.0:8080", &[]).allows("whatever.example:1234"));
        let p = policy("0.0.0.0:8080", &["gw.example"]);
        assert!(p.allows("gw.example:8080") && p.allows("localhost:8080"));
        assert!(!p.allows("whatever.example:8080"));
        let p = policy("192.168.1.5:8080", &["gw.example"]);
        assert!(p.allows("192.168.1.5:8080"), "the listen address itself");
    }
}
