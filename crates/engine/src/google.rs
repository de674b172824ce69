//! Access tokens for Vertex AI: one cached token per provider, exchanged from its Google credential
//! (`wire::google_auth` builds and reads the exchange) and refreshed five minutes before it expires.
//!
//! Why a module: a token is shared by every request to the provider, so the exchange must happen once
//! however many requests want it at the same moment (single flight), and a refused credential must fail
//! the attempt as the provider refusing our credentials (a key failure), not as a broken upstream.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_wire::google_auth::{parse_token_response, GoogleCredential};
use switchyard_wire::ProviderKind;

use crate::config::Timeouts;
use crate::error::FailureClass;
use crate::upstream::{self, Failure, Label};

/// Refresh this long before the token's stated expiry, so no request goes out with a token about to lapse.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// The exchange is one small POST; it must not take a request's whole deadline.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct TokenSource {
    credential: Arc<GoogleCredential>,
    cached: Mutex<Option<(Arc<str>, Instant)>>,
    /// Held while one exchange is under way; others wait for it and take its result from the cache.
    exchange: tokio::sync::Mutex<()>,
}

impl TokenSource {
    pub(crate) fn new(credential: Arc<GoogleCredential>) -> Self {
        TokenSource { credential, cached: Mutex::new(None), exchange: tokio::sync::Mutex::new(()) }
    }

    pub(crate) fn credential(&self) -> &Arc<GoogleCredential> {
        &self.credential
    }

    pub(crate) fn fresh(&self) -> Option<Arc<str>> {
        let cached = self.cached.lock().ok()?;
        cached.as_ref().filter(|(_, until)| Instant::now() < *until).map(|(t, _)| Arc::clone(t))
    }

    /// A token valid for at least [`REFRESH_MARGIN`], exchanged now if the cached one is not.
    pub(crate) async fn token(&self, client: &upstream::Client, timeouts: &Timeouts, label: &Label<'_>) -> Result<Arc<str>, Failure> {
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let _one = self.exchange.lock().await;
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let started = Instant::now();
        let req = self
            .credential
            .token_request(crate::executor::unix_now())
            .map_err(|e| label.fail(started, None, FailureClass::KeyInvalid, format!("google credentials: {e}")))?;
        let t = Timeouts { total: EXCHANGE_TIMEOUT.min(timeouts.total), ..*timeouts };
        // The token endpoint's errors are OAuth's, not Vertex's; a 4xx there is our credential refused.
        let body = upstream::send_complete(client, ProviderKind::Vertex, &t, label, req).await.map_err(|mut f| {
            if matches!(f.attempt.status, Some(400..=499)) {
                f.attempt.class = FailureClass::KeyInvalid;
            }
            f.attempt.message = format!("google token exchange for {} failed: {}", self.credential.principal(), f.attempt.message);
            f
        })?;
        let (token, expires_in) = parse_token_response(&body)
            .map_err(|e| label.fail(started, Some(200), FailureClass::KeyInvalid, format!("google token exchange: {e}")))?;
        let token: Arc<str> = Arc::from(token);
        crate::scrub::remember(std::iter::once(&*token));
        let until = Instant::now() + Duration::from_secs(expires_in).saturating_sub(REFRESH_MARGIN);
        if let Ok(mut c) = self.cached.lock() {
            *c = Some((Arc::clone(&token), until));
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A token endpoint on a free port that answers every request with `status` and `body`, counting them.
    async fn token_endpoint(status: u16, body: &'static str) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut seen = Vec::new();
                    // The form is small: read until the headers and the declared body are in.
                    loop {
                        let n = sock.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&seen);
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            if seen.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    // Slow enough that concurrent callers overlap with the exchange.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        (url, hits)
    }

    fn source(token_uri: &str) -> TokenSource {
        let json = format!(
            r#"{{"type":"authorized_user","client_id":"cid","client_secret":"cs","refresh_token":"rt","token_uri":"{token_uri}"}}"#
        );
        TokenSource::new(Arc::new(GoogleCredential::from_json(&json).unwrap()))
    }

    fn client() -> upstream::Client {
        let cfg = crate::config::from_env(&BTreeMap::<String, String>::new());
        upstream::build_client(&Timeouts::default(), &upstream::Shared::new(&cfg)).unwrap()
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_exchange_and_the_token_is_cached() {
        let (url, hits) = token_endpoint(200, r#"{"access_token":"ya29.test-token","expires_in":3599,"token_type":"Bearer"}"#).await;
        let ts = source(&url);
        let c = client();
        let label = Label { target: "vertex/gemini-2.5-flash", key: None };
        let t = Timeouts::default();
        let (a, b) = tokio::join!(ts.token(&c, &t, &label), ts.token(&c, &t, &label));
        assert_eq!((&*a.unwrap(), &*b.unwrap()), ("ya29.test-token", "ya29.test-token"));
        assert_eq!(&*ts.token(&c, &t, &label).await.unwrap(), "ya29.test-token");
        assert_eq!(hits.load(Ordering::SeqCst), 1, "one exchange for three callers");
        assert_eq!(ts.fresh().as_deref(), Some("ya29.test-token"));
    }

    #[tokio::test]
    async fn a_refused_credential_is_a_key_failure_and_nothing_is_cached() {
        let (url, hits) =
            token_endpoint(400, r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#).await;
        let ts = source(&url);
        let c = client();
        let label = Label { target: "vertex/gemini-2.5-flash", key: None };
        let f = ts.token(&c, &Timeouts::default(), &label).await.unwrap_err();
        assert_eq!((f.attempt.class, f.attempt.status), (FailureClass::KeyInvalid, Some(400)));
        assert!(f.attempt.message.starts_with("google token exchange for cid failed"), "{}", f.attempt.message);
        assert!(ts.fresh().is_none());
        // The next request tries again rather than repeating a cached refusal.
        assert!(ts.token(&c, &Timeouts::default(), &label).await.is_err());
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_short_lived_token_is_refreshed_before_it_lapses() {
        // Less lifetime than the refresh margin: usable once, never cached as fresh.
        let (url, hits) = token_endpoint(200, r#"{"access_token":"ya29.short","expires_in":60}"#).await;
        let ts = source(&url);
        let c = client();
        let label = Label { target: "vertex/m", key: None };
        assert_eq!(&*ts.token(&c, &Timeouts::default(), &label).await.unwrap(), "ya29.short");
        assert!(ts.fresh().is_none());
        ts.token(&c, &Timeouts::default(), &label).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }
}
