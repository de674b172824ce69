//! The attempt machinery behind stage 6 of the request path: walk the plan's targets, and for each one
//! respect its circuit breaker, choose a healthy key, wait for an in-flight slot, send, classify, and decide
//! what happens next (return, retry with backoff, rotate key, next target, context fallback, hedge).
//!
//! One [`Run`] is one request. It is shared by reference between the two branches of a hedged request, so
//! its bookkeeping (the attempt list) sits behind a mutex that is never contended in practice.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use switchyard_wire::codec::{self, StreamDecoder};
use switchyard_wire::types::{ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse};
use switchyard_wire::ResponseCtx;

use crate::config::{HedgeDelay, KeyConfig, RetryPolicy, Timeouts};
use crate::error::{Attempt, FailureClass, GatewayError};
use crate::gateway::{endpoint, Gateway, Plan, Provider, RequestCtx, Served, Target};
use crate::health::{CooldownReason, LimitError, Outcome};
use crate::keys;
use crate::upstream::{self, ChatStream, Failure, Label};

/// Latency samples needed before a `p95` hedge delay trusts them over its floor.
const HEDGE_MIN_SAMPLES: usize = 20;

/// What is being asked of the upstreams.
// One per request, built once and borrowed: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Op<'r> {
    Chat {
        req: &'r ChatRequest,
        /// The request with image URLs replaced by their bytes, made once for the first target that needs it
        /// (and shared by both branches of a hedge).
        inlined: tokio::sync::OnceCell<Option<ChatRequest>>,
    },
    Embeddings(&'r EmbeddingsRequest),
}

impl<'r> Op<'r> {
    pub(crate) fn chat(req: &'r ChatRequest) -> Self {
        Op::Chat { req, inlined: tokio::sync::OnceCell::new() }
    }
}

// Moved once, from the attempt to the caller.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Output {
    Complete(ChatResponse),
    Stream(ChatStream),
    Embeddings(EmbeddingsResponse),
}

/// Why a target produced no answer.
enum TargetEnd {
    /// Try the next target.
    Next,
    /// The prompt is too long for this target's context; go to the context fallbacks if any.
    ContextTooLong(GatewayError),
    /// Stop the request with this error.
    Stop(GatewayError),
}

/// One request's walk through its plan.
pub(crate) struct Run<'a> {
    gw: &'a Gateway,
    plan: &'a Plan,
    op: &'a Op<'a>,
    ctx: &'a RequestCtx,
    deadline: Instant,
    retry: Option<RetryPolicy>,
    attempts: Mutex<Vec<Attempt>>,
    /// Seconds to suggest in `Retry-After`, and the soonest moment a cooling key or open circuit frees up.
    retry_after: Mutex<Option<u64>>,
    soonest_ms: Mutex<Option<u64>>,
    /// Some target failed for a reason other than a cooling key or an open circuit: then waiting for a
    /// cooldown would not help, and the request does not wait.
    hot_failure: AtomicBool,
}

impl<'a> Run<'a> {
    pub(crate) fn new(gw: &'a Gateway, plan: &'a Plan, op: &'a Op<'a>, ctx: &'a RequestCtx) -> Self {
        let route = plan.route.map(|i| &gw.routes[i]);
        let deadline = Instant::now() + route.and_then(|r| r.deadline).unwrap_or(gw.routing.deadline);
        Run {
            gw,
            plan,
            op,
            ctx,
            deadline,
            retry: route.and_then(|r| r.retry),
            attempts: Mutex::new(Vec::new()),
            retry_after: Mutex::new(None),
            soonest_ms: Mutex::new(None),
            hot_failure: AtomicBool::new(false),
        }
    }

    fn attempts(&self) -> std::sync::MutexGuard<'_, Vec<Attempt>> {
        self.attempts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note_soonest(&self, in_ms: u64) {
        let at = self.gw.clock.now_ms() + in_ms;
        let mut s = self.soonest_ms.lock().unwrap_or_else(|e| e.into_inner());
        *s = Some(s.map_or(at, |x| x.min(at)));
        drop(s);
        self.suggest_retry_after(in_ms.div_ceil(1000).max(1));
    }

    fn suggest_retry_after(&self, secs: u64) {
        let mut ra = self.retry_after.lock().unwrap_or_else(|e| e.into_inner());
        *ra = Some(ra.map_or(secs, |x| x.min(secs)));
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Puts on record a target that was skipped without sending anything.
    fn record(&self, target: &Target, key: Option<&KeyConfig>, class: FailureClass, message: String) {
        count_attempt(&self.gw.providers[target.provider].cfg.name, class.as_str());
        self.attempts().push(Attempt {
            target: target.label.clone(),
            key: key.map(|k| k.name.clone()),
            status: None,
            class,
            message,
            latency_ms: 0,
            skipped: true,
        });
    }

    fn served(&self, target: &Target, key: Option<&KeyConfig>, index: usize, hedged: bool) -> Served {
        let attempts = self.attempts().iter().filter(|a| !a.skipped).count() + 1;
        if attempts > 1 {
            tracing::info!(target = %target.label, attempts, hedged, "served after earlier attempts failed");
        }
        Served {
            provider: self.gw.providers[target.provider].cfg.name.clone(),
            model: target.model.clone(),
            key: key.map(|k| k.name.clone()),
            attempts,
            fallback_index: index,
            hedged,
        }
    }

    /// Runs the plan to an answer or a final error.
    pub(crate) async fn execute(self) -> Result<(Output, Served), GatewayError> {
        let route = self.plan.route;
        let hedge = route.and_then(|i| self.gw.routes[i].hedge.map(|h| (i, h)));
        if let Some((i, h)) = hedge {
            self.gw.hedge_budgets[i].earn(h.max_share);
        }
        let mut waited = false;
        loop {
            let targets = &self.plan.targets;
            let result = match hedge {
                Some((route, policy)) if targets.len() > 1 => self.hedged(route, policy.delay).await,
                _ => self.sequence(targets, 0, false).await,
            };
            match result {
                Ok(v) => return Ok(v),
                Err(TargetEnd::Stop(e)) => return Err(e),
                Err(TargetEnd::ContextTooLong(e)) => {
                    if self.plan.context.is_empty() {
                        return Err(e);
                    }
                    return match self.sequence(&self.plan.context, targets.len(), false).await {
                        Ok(v) => Ok(v),
                        Err(TargetEnd::Stop(e)) | Err(TargetEnd::ContextTooLong(e)) => Err(e),
                        Err(TargetEnd::Next) => Err(self.exhausted()),
                    };
                }
                Err(TargetEnd::Next) => {}
            }
            // Every target failed. If the only reason was keys cooling down (circuits open count as neither
            // reason: they fail fast) and one frees up before the deadline, wait for it once rather than
            // answering "nothing available".
            let soonest = *self.soonest_ms.lock().unwrap_or_else(|e| e.into_inner());
            match soonest {
                Some(at) if !waited && !self.hot_failure.load(Ordering::Relaxed) => {
                    let wait = Duration::from_millis(at.saturating_sub(self.gw.clock.now_ms()));
                    if wait >= self.remaining() {
                        break;
                    }
                    tracing::info!(?wait, "every target is cooling down or open; waiting for the first to free up");
                    tokio::time::sleep(wait).await;
                    waited = true;
                    *self.soonest_ms.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                _ => break,
            }
        }
        Err(self.exhausted())
    }

    fn exhausted(&self) -> GatewayError {
        let attempts = std::mem::take(&mut *self.attempts());
        let retry_after = *self.retry_after.lock().unwrap_or_else(|e| e.into_inner());
        GatewayError::all_failed(attempts, retry_after)
    }

    /// Tries `targets` in order; `offset` is the first one's index in the plan.
    async fn sequence(&self, targets: &[Target], offset: usize, hedged: bool) -> Result<(Output, Served), TargetEnd> {
        for (i, t) in targets.iter().enumerate() {
            match self.target(t, offset + i, hedged).await {
                Ok(v) => return Ok(v),
                Err(TargetEnd::Next) => continue,
                Err(other) => return Err(other),
            }
        }
        Err(TargetEnd::Next)
    }

    /// The first target alone; if it has not answered within the hedge delay (and the budget allows), the
    /// rest of the plan races it, and the first answer wins. The loser is dropped, which cancels its
    /// upstream request.
    async fn hedged(&self, route: usize, delay: HedgeDelay) -> Result<(Output, Served), TargetEnd> {
        let targets = &self.plan.targets;
        let first_provider = &self.gw.providers[targets[0].provider];
        let delay = match delay {
            HedgeDelay::Fixed(d) => d,
            HedgeDelay::P95 { floor } => first_provider.latency.p95(HEDGE_MIN_SAMPLES).map_or(floor, |p| p.max(floor)),
        };
        let mut first = pin!(self.target(&targets[0], 0, false));
        tokio::select! {
            r = &mut first => {
                return match r {
                    Err(TargetEnd::Next) => self.sequence(&targets[1..], 1, false).await,
                    other => other,
                };
            }
            _ = tokio::time::sleep(delay) => {}
        }
        if !self.gw.hedge_budgets[route].try_spend() {
            return match first.await {
                Err(TargetEnd::Next) => self.sequence(&targets[1..], 1, false).await,
                other => other,
            };
        }
        tracing::debug!(after = ?delay, target = %targets[1].label, "hedging: the first target is slow");
        metrics::counter!("switchyard_hedges_total", "provider" => first_provider.cfg.name.clone()).increment(1);
        let mut rest = pin!(self.sequence(&targets[1..], 1, true));
        let (mut first_done, mut rest_done) = (false, false);
        loop {
            tokio::select! {
                r = &mut first, if !first_done => match r {
                    Err(TargetEnd::Next) => {
                        first_done = true;
                        if rest_done {
                            return Err(TargetEnd::Next);
                        }
                    }
                    other => return other,
                },
                r = &mut rest, if !rest_done => match r {
                    Err(TargetEnd::Next) => {
                        rest_done = true;
                        if first_done {
                            return Err(TargetEnd::Next);
                        }
                    }
                    other => return other,
                },
            }
        }
    }

    /// Every attempt at one target: breaker check, key choice, in-flight slot, send; retries transient
    /// failures with backoff and rotates keys after a 429/401.
    async fn target(&self, t: &Target, index: usize, hedged: bool) -> Result<(Output, Served), TargetEnd> {
        let p = &self.gw.providers[t.provider];
        let policy = self.retry.unwrap_or(p.cfg.retry);
        let mut rng = fastrand::Rng::new();
        let mut retries = 0u32;
        // Keys this request already saw refused; not tried again by it.
        let mut refused: Vec<usize> = Vec::new();
        loop {
            if self.remaining().is_zero() {
                self.record(t, None, FailureClass::Timeout, "the request's deadline passed".into());
                return Err(TargetEnd::Next);
            }
            let now = self.gw.clock.now_ms();
            let permit = match p.breaker.admit(now, &mut rng) {
                Ok(permit) => permit,
                Err(in_ms) => {
                    // Fail fast: an open circuit is never waited on; the caller hears when probes start.
                    self.suggest_retry_after(in_ms.div_ceil(1000).max(1));
                    self.record(t, None, FailureClass::CircuitOpen, format!("circuit open for provider {}; skipped", p.cfg.name));
                    return Err(TargetEnd::Next);
                }
            };
            let key = match self.choose_key(p, t, &refused, now, &mut rng) {
                Ok(k) => k,
                // Every key this request could use was refused already: those attempts are on record.
                Err(None) => return Err(TargetEnd::Next),
                Err(Some((class, message))) => {
                    if class != FailureClass::RateLimited {
                        self.hot_failure.store(true, Ordering::Relaxed);
                    }
                    self.record(t, None, class, message);
                    return Err(TargetEnd::Next);
                }
            };
            let key_permit = match key {
                Some((i, _)) => match p.keys[i].breaker.admit(now, &mut rng) {
                    Ok(kp) => Some(kp),
                    Err(_) => {
                        refused.push(i);
                        continue;
                    }
                },
                None => None,
            };
            let key_cfg = key.map(|(_, k)| k);
            let slot = match p.limiter.acquire(self.remaining()).await {
                Ok(s) => s,
                Err(LimitError::QueueFull) => {
                    // Refused at once, never waited on: the caller hears when to come back.
                    self.suggest_retry_after(1);
                    self.hot_failure.store(true, Ordering::Relaxed);
                    self.record(
                        t,
                        key_cfg,
                        FailureClass::Overloaded,
                        format!("provider {} is at its in-flight limit and queue", p.cfg.name),
                    );
                    return Err(TargetEnd::Next);
                }
                Err(LimitError::Deadline) => {
                    self.hot_failure.store(true, Ordering::Relaxed);
                    self.record(
                        t,
                        key_cfg,
                        FailureClass::Timeout,
                        format!("no in-flight slot for provider {} before the deadline", p.cfg.name),
                    );
                    return Err(TargetEnd::Next);
                }
            };
            let started = Instant::now();
            let label = Label { target: &t.label, key: key_cfg.map(|k| k.name.as_str()) };
            let result = self.send(p, t, key_cfg, &label, slot).await;
            let clock = &self.gw.clock;
            let f = match result {
                Ok(out) => {
                    count_attempt(&p.cfg.name, "success");
                    if hedged {
                        metrics::counter!("switchyard_hedge_wins_total", "provider" => p.cfg.name.clone()).increment(1);
                    }
                    p.latency.record(started.elapsed());
                    permit.record(clock, Outcome::Success);
                    if let (Some(kp), Some((i, _))) = (key_permit, key) {
                        kp.record(clock, Outcome::Success);
                        p.keys[i].recovered();
                    }
                    return Ok((out, self.served(t, key_cfg, index, hedged)));
                }
                Err(Ok(f)) => f,
                Err(Err(stop)) => return Err(TargetEnd::Stop(stop)),
            };
            let class = f.attempt.class;
            count_attempt(&p.cfg.name, class.as_str());
            tracing::warn!(target = %t.label, key = ?f.attempt.key, status = ?f.attempt.status, class = class.as_str(),
                latency_ms = f.attempt.latency_ms, "upstream attempt failed: {}", f.attempt.message);
            let health = match class {
                FailureClass::Transient | FailureClass::Timeout | FailureClass::Malformed => Outcome::Failure,
                _ => Outcome::Neutral,
            };
            permit.record(clock, health);
            if let Some(kp) = key_permit {
                kp.record(clock, health);
            }
            if let Some(s) = f.retry_after {
                self.suggest_retry_after(s);
            }
            match class {
                FailureClass::RateLimited | FailureClass::KeyInvalid => {
                    let Some((i, _)) = key else {
                        self.attempts().push(f.attempt);
                        return Err(TargetEnd::Next);
                    };
                    let (d, reason) = if class == FailureClass::RateLimited {
                        (f.retry_after.map(Duration::from_secs).unwrap_or(p.cfg.cooldown.rate_limited), CooldownReason::RateLimited)
                    } else {
                        (p.cfg.cooldown.key_invalid, CooldownReason::KeyInvalid)
                    };
                    p.keys[i].cool_down(clock.now_ms(), d, reason);
                    metrics::counter!("switchyard_key_cooldowns_total", "provider" => p.cfg.name.clone(), "key" => p.cfg.keys[i].name.clone(), "reason" => class.as_str())
                        .increment(1);
                    tracing::warn!(provider = %p.cfg.name, key = %p.cfg.keys[i].name, cooldown = ?d, reason = class.as_str(), "key taken out of rotation");
                    refused.push(i);
                    self.attempts().push(f.attempt);
                    // Rotate to another key at once: no sleeping on a key we know is cold.
                    continue;
                }
                FailureClass::Transient | FailureClass::Timeout | FailureClass::Malformed => {
                    self.hot_failure.store(true, Ordering::Relaxed);
                    self.attempts().push(f.attempt);
                    if retries >= policy.max_retries {
                        return Err(TargetEnd::Next);
                    }
                    retries += 1;
                    let pause = policy.backoff(retries, &mut rng);
                    if pause >= self.remaining() {
                        return Err(TargetEnd::Next);
                    }
                    tokio::time::sleep(pause).await;
                }
                FailureClass::ContextTooLong => {
                    let e = self.caller_error(p, f);
                    return Err(TargetEnd::ContextTooLong(e));
                }
                FailureClass::CallerFault => {
                    let falls_back = self.plan.route.is_some_and(|r| self.gw.routes[r].fallback_on_caller_fault);
                    if falls_back {
                        self.hot_failure.store(true, Ordering::Relaxed);
                        self.attempts().push(f.attempt);
                        return Err(TargetEnd::Next);
                    }
                    return Err(TargetEnd::Stop(self.caller_error(p, f)));
                }
                FailureClass::Unsupported | FailureClass::CircuitOpen | FailureClass::Overloaded => {
                    self.hot_failure.store(true, Ordering::Relaxed);
                    self.attempts().push(f.attempt);
                    return Err(TargetEnd::Next);
                }
            }
        }
    }

    /// The upstream's own error, with every attempt so far.
    fn caller_error(&self, p: &Provider, f: Failure) -> GatewayError {
        let status = f.attempt.status.unwrap_or(400);
        let class = f.attempt.class;
        let mut attempts = std::mem::take(&mut *self.attempts());
        attempts.push(f.attempt);
        GatewayError::Upstream { status, error: Box::new(f.upstream.unwrap_or_default()), provider: p.cfg.name.clone(), class, attempts }
    }

    /// Weighted choice among the keys allowed for the model that are neither cooling down nor refused in
    /// this request. `Ok(None)` for a keyless provider; `Err(Some(why))` when no key can be used for a
    /// reason to put on record, `Err(None)` when this request already tried every usable key.
    #[allow(clippy::type_complexity)]
    fn choose_key<'p>(
        &self,
        p: &'p Provider,
        t: &Target,
        refused: &[usize],
        now: u64,
        rng: &mut fastrand::Rng,
    ) -> Result<Option<(usize, &'p KeyConfig)>, Option<(FailureClass, String)>> {
        if p.cfg.keys.is_empty() {
            return Ok(None);
        }
        let mut cooling_soonest: Option<u64> = None;
        let mut usable: Vec<usize> = Vec::new();
        for i in (0..p.cfg.keys.len()).filter(|&i| keys::allows(&p.cfg.keys[i], &t.model)) {
            if let Some(ms) = p.keys[i].cooling(now) {
                cooling_soonest = Some(cooling_soonest.map_or(ms, |x| x.min(ms)));
            } else if !refused.contains(&i) {
                usable.push(i);
            }
        }
        if let Some(i) = keys::choose_among(&p.cfg.keys, &usable, rng) {
            return Ok(Some((i, &p.cfg.keys[i])));
        }
        if let Some(ms) = cooling_soonest {
            // Worth waiting for, if every other target fails too.
            self.note_soonest(ms);
        }
        if !refused.is_empty() {
            // This request's own attempts already say why.
            return Err(None);
        }
        match cooling_soonest {
            Some(ms) => Err(Some((
                FailureClass::RateLimited,
                format!("every key of provider {} allowed for {} is cooling down (the first for {ms} ms more)", p.cfg.name, t.model),
            ))),
            None => {
                Err(Some((FailureClass::Unsupported, format!("no key of provider {} is allowed to use model {}", p.cfg.name, t.model))))
            }
        }
    }

    /// One upstream call. `Err(Ok(failure))`: a failed attempt; `Err(Err(error))`: stop the request.
    async fn send(
        &self,
        p: &Provider,
        t: &Target,
        key: Option<&KeyConfig>,
        label: &Label<'_>,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Output, Result<Failure, GatewayError>> {
        let started = Instant::now();
        let remaining = self.remaining();
        let ep = endpoint(p, key);
        let rctx = ResponseCtx { id: &self.ctx.id, created: self.ctx.created, model: &t.model };
        match self.op {
            Op::Chat { req, inlined } => {
                let mut body: &ChatRequest = req;
                if !p.cfg.kind.accepts_image_urls() {
                    let copy = inlined.get_or_try_init(|| self.gw.images.inline_images(req)).await.map_err(Err)?;
                    body = copy.as_ref().unwrap_or(req);
                }
                let replaced;
                if let Some(params) = &t.params {
                    replaced = with_params(body, params).map_err(Err)?;
                    body = &replaced;
                }
                let wire = codec::build_chat(&ep, body, &t.model).map_err(|e| Ok(upstream::wire_failure(label, started, e)))?;
                if body.is_stream() {
                    // The deadline bounds the wait for the first chunk; the stream itself may then run on.
                    let timeouts = Timeouts { first_byte: p.cfg.timeouts.first_byte.min(remaining), ..p.cfg.timeouts };
                    let decoder = StreamDecoder::new(p.cfg.kind, rctx);
                    let mut s = upstream::open_stream(&p.client, p.cfg.kind, &timeouts, label, wire, decoder).await.map_err(Ok)?;
                    s.hold(slot);
                    Ok(Output::Stream(s))
                } else {
                    let timeouts = Timeouts { total: p.cfg.timeouts.total.min(remaining), ..p.cfg.timeouts };
                    let bytes = upstream::send_complete(&p.client, p.cfg.kind, &timeouts, label, wire).await.map_err(Ok)?;
                    drop(slot);
                    codec::parse_chat(p.cfg.kind, &bytes, rctx)
                        .map(Output::Complete)
                        .map_err(|e| Ok(upstream::wire_failure(label, started, e)))
                }
            }
            Op::Embeddings(req) => {
                let replaced;
                let mut body: &EmbeddingsRequest = req;
                if let Some(params) = &t.params {
                    replaced = with_params(body, params).map_err(Err)?;
                    body = &replaced;
                }
                let wire = codec::build_embeddings(&ep, body, &t.model).map_err(|e| Ok(upstream::wire_failure(label, started, e)))?;
                let timeouts = Timeouts { total: p.cfg.timeouts.total.min(remaining), ..p.cfg.timeouts };
                let bytes = upstream::send_complete(&p.client, p.cfg.kind, &timeouts, label, wire).await.map_err(Ok)?;
                drop(slot);
                codec::parse_embeddings(p.cfg.kind, &bytes, rctx, body.encoding_format.as_deref())
                    .map(Output::Embeddings)
                    .map_err(|e| Ok(upstream::wire_failure(label, started, e)))
            }
        }
    }
}

/// `switchyard_upstream_attempts_total{provider, outcome}`: `success` or the failure class.
fn count_attempt(provider: &str, outcome: &'static str) {
    metrics::counter!("switchyard_upstream_attempts_total", "provider" => provider.to_string(), "outcome" => outcome).increment(1);
}

/// The request with a fallback target's parameters laid over it (only for targets that have some).
fn with_params<T: Serialize + DeserializeOwned>(req: &T, params: &Map<String, Value>) -> Result<T, GatewayError> {
    let mut v = serde_json::to_value(req).map_err(|e| GatewayError::Internal(format!("cannot apply fallback params: {e}")))?;
    if let Value::Object(o) = &mut v {
        for (k, val) in params {
            o.insert(k.clone(), val.clone());
        }
    }
    serde_json::from_value(v).map_err(|e| GatewayError::BadRequest {
        message: format!("a route's fallback params do not fit the request: {e}"),
        param: None,
        code: "invalid_fallback_params",
    })
}
