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
