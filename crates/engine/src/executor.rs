//! The attempt machinery behind stage 6 of the request path: order the plan's targets by health, and for
//! each one choose a usable key, wait for an in-flight slot, send, classify, and carry out what
//! [`crate::retry`] says comes next (return, rotate key, next target, another round, wait for a key,
//! context fallback), hedging where the route asks for it.
//!
//! The rule behind every choice here: with the defaults the gateway never makes an outage worse than calling
//! the provider directly. Health reorders targets; it never takes away the last one. A key the provider
//! rejected sits out only while something else can serve. Failures the request itself caused are taken
//! back from the provider's health once the request is over.
//!
//! One [`Run`] is one request. It is shared by reference between the two branches of a hedged request, so
//! its bookkeeping sits behind a mutex that is never contended in practice.

use crate::governance::AttemptRefused;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use switchyard_wire::codec::{self, StreamDecoder};
use switchyard_wire::types::{ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse};
use switchyard_wire::ResponseCtx;
use tokio::time::Instant;

use crate::config::{HedgeDelay, HedgePolicy, KeyConfig, RetryPolicy, RouteConfig, Timeouts};
use crate::ctx::{RequestCtx, Served};
use crate::error::{Attempt, FailureClass, GatewayError};
use crate::governance::meter::Hold;
use crate::governance::{Estimate, Governance, Principal};
use crate::health::{CooldownReason, LimitError, Pace, Standing, Token};
use crate::images::Inlined;
use crate::keys;
use crate::observe::AttemptRecord;
use crate::plan::{Plan, Target};
use crate::pool::{endpoint, Provider, Upstreams};
use crate::pricing::{Price, PriceTable};
use crate::retry::{self, AfterFailure, AfterRound, RoundEnd};
use crate::upstream::{self, ChatStream, Failure, Label};

/// Latency samples needed before a `p95` hedge delay trusts them over its floor.
const HEDGE_MIN_SAMPLES: usize = 20;
/// What an overloaded target suggests for `Retry-After`.
const BUSY_RETRY_MS: u64 = 1000;

/// What is being asked of the upstreams.
// One per request, built once and borrowed: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Op<'r> {
    Chat {
        req: &'r ChatRequest,
        /// The request with image URLs replaced by their bytes, made once for the first target that needs it
        /// (and shared by both branches of a hedge). It holds the images' share of the gateway-wide image
        /// budget until the request is done with it.
        inlined: tokio::sync::OnceCell<Option<Inlined>>,
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

/// Why a target (or a walk over targets) produced no answer.
enum End {
    /// Nothing answered; what happened is on record in the attempts.
    Exhausted,
    /// The prompt is too long for this target's context; go to the context fallbacks if any.
    ContextTooLong(GatewayError),
    /// Stop the request with this error.
    Stop(GatewayError),
}

/// How one target of the walk fared in this request.
#[derive(Debug, Clone, Copy)]
struct Mark {
    provider: usize,
    /// The class of its last failed attempt (or of the reason it was skipped).
    last: Option<FailureClass>,
    /// The one health signal this request left on the provider for this target.
    signal: Option<Token>,
    signalled: bool,
}

struct State {
    attempts: Vec<Attempt>,
    /// Clock ms at which the soonest rate-limited key of this request resets.
    reset_at_ms: Option<u64>,
    /// A `Retry-After` suggestion from targets that were busy.
    busy_retry_ms: Option<u64>,
    /// The plan's targets, then its context targets.
    marks: Vec<Mark>,
    served: bool,
    /// The serving attempt's reservation and price, handed to the account when the run is over.
    won: Option<(Hold, Option<Price>)>,
}

/// What the run needs to reserve each attempt on the governance meters and to price it.
pub(crate) struct Metering<'a> {
    /// `None` when no budget or limit is configured: nothing is reserved then.
    pub governance: Option<&'a Governance>,
    pub who: Option<&'a Principal>,
    pub pricing: &'a PriceTable,
    /// Upper bounds of the request's prompt and output tokens.
    pub prompt_tokens: u64,
    pub max_output_tokens: u64,
    /// The admission, when it is reserved with the first attempt (counters in Redis: one round trip
    /// instead of two); empty when the gateway admitted the request itself.
    pub admission: Vec<(std::sync::Arc<crate::governance::meter::Meter>, f64)>,
}

/// One request's walk through its plan.
pub(crate) struct Run<'a> {
    up: &'a Upstreams,
    plan: &'a Plan,
    op: &'a Op<'a>,
    ctx: &'a RequestCtx,
    route: Option<&'a RouteConfig>,
    deadline: Instant,
    metering: Metering<'a>,
    state: Mutex<State>,
    /// The admission once reserved with an attempt (see `Metering::admission`); the lock also keeps two
    /// hedged attempts from both reserving it.
    admitted: tokio::sync::Mutex<Option<Hold>>,
}

impl<'a> Run<'a> {
    pub(crate) fn new(up: &'a Upstreams, plan: &'a Plan, op: &'a Op<'a>, ctx: &'a RequestCtx, metering: Metering<'a>) -> Self {
        let route = plan.route.map(|i| &up.routes[i]);
        let budget = route.and_then(|r| r.deadline).unwrap_or(up.routing.deadline);
        // From the request's arrival: time spent identifying and admitting it counts.
        let deadline = Instant::from_std(ctx.arrived) + budget;
        let marks = plan
            .targets
            .iter()
            .chain(&plan.context)
            .map(|t| Mark { provider: t.provider, last: None, signal: None, signalled: false })
            .collect();
        let state = State { attempts: Vec::new(), reset_at_ms: None, busy_retry_ms: None, marks, served: false, won: None };
        Run { up, plan, op, ctx, route, deadline, metering, state: Mutex::new(state), admitted: tokio::sync::Mutex::new(None) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Puts a failed attempt on record, and on the request's trail (see `observe`).
    fn fail(&self, index: usize, attempt: Attempt, at: Trail) {
        self.trail(index, at, attempt.key.clone(), attempt.status, attempt.class.as_str(), attempt.skipped, Some(&attempt.message));
        let mut st = self.state();
        st.marks[index].last = Some(attempt.class);
        st.attempts.push(attempt);
    }

    /// One attempt on the request's trail, the log's and the trace's view of it.
    #[allow(clippy::too_many_arguments)]
    fn trail(
        &self,
        index: usize,
        at: Trail,
        key: Option<String>,
        status: Option<u16>,
        outcome: &str,
        skipped: bool,
        message: Option<&str>,
    ) {
        let Some(t) = self.plan.targets.iter().chain(&self.plan.context).nth(index) else { return };
        let latency_us = if skipped { 0 } else { (self.ctx.arrived.elapsed().as_micros() as u64).saturating_sub(at.start_us) };
        let record = AttemptRecord {
            target: t.label.clone(),
            provider: self.up.providers[t.provider].cfg.name.clone(),
            kind: self.up.providers[t.provider].cfg.kind.as_str().to_string(),
            model: t.model.clone(),
            key,
            status,
            outcome: outcome.to_string(),
            start_ms: at.start_us / 1000,
            latency_ms: latency_us / 1000,
            start_us: at.start_us,
            latency_us,
            hedged: at.hedged,
            skipped,
            message: message.map(|m| m.chars().take(500).collect()),
            span_id: at.span_id,
        };
        self.ctx.observed.with(|o| o.attempts.push(record));
    }

    /// Puts on record a target that was skipped without sending anything.
    fn skip(&self, target: &Target, index: usize, key: Option<&KeyConfig>, class: FailureClass, message: String) {
        let attempt = Attempt {
            target: target.label.clone(),
            key: key.map(|k| k.name.clone()),
            status: None,
            class,
            message,
            latency_ms: 0,
            skipped: true,
        };
        let start_us = self.ctx.arrived.elapsed().as_micros() as u64;
        self.fail(index, attempt, Trail { start_us, hedged: false, span_id: String::new() });
    }

    fn note_reset(&self, in_ms: u64) {
        let at = self.up.clock.now_ms() + in_ms;
        let mut st = self.state();
        st.reset_at_ms = Some(st.reset_at_ms.map_or(at, |x| x.min(at)));
    }

    /// Runs the plan to an answer or a final error.
    /// The last `Hold`: the admission, when it was reserved with an attempt (otherwise empty).
    pub(crate) async fn execute(self) -> Result<(Output, Served, Option<(Hold, Option<Price>)>, Hold), GatewayError> {
        if let Some((i, h)) = self.hedge() {
            self.up.hedge_budgets[i].earn(h.max_share);
        }
        let mut result = self.walk(&self.plan.targets, 0).await;
        if matches!(result, Err(End::ContextTooLong(_))) && !self.plan.context.is_empty() {
            result = self.walk(&self.plan.context, self.plan.targets.len()).await;
        }
        self.settle();
        match result {
            Ok((out, served)) => {
                let won = self.state().won.take();
                let admitted = self.admitted.into_inner().unwrap_or_default();
                Ok((out, served, won, admitted))
            }
            Err(End::Stop(e) | End::ContextTooLong(e)) => Err(e),
            Err(End::Exhausted) => Err(self.exhausted()),
        }
    }

    /// Reserves an attempt on `t` on the governance meters: `None` when there is nothing to reserve on.
    /// A target with no room is skipped on record (budget or limit), so the walk moves to the next one.
    async fn reserve(&self, p: &Provider, t: &Target, index: usize) -> Result<(Hold, Option<Price>), End> {
        let m = &self.metering;
        let price = m.pricing.price(&p.cfg.name, p.cfg.kind, &t.model);
        let Some(gov) = m.governance else {
            return Ok((Hold::default(), price));
        };
        let estimate = Estimate {
            usd: price.map_or(0.0, |pr| pr.estimate(m.prompt_tokens, m.max_output_tokens)),
            tokens: m.prompt_tokens + m.max_output_tokens,
        };
        let mut admitted = if m.admission.is_empty() { None } else { Some(self.admitted.lock().await) };
        let admission = match &admitted {
            Some(a) if a.is_none() => &m.admission[..],
            _ => &[],
        };
        match gov.reserve_attempt(m.who, &p.cfg.name, &t.model, estimate, self.remaining(), admission).await {
            Ok((hold, with)) => {
                if let (Some(slot), Some(a)) = (admitted.as_mut(), with) {
                    **slot = Some(a);
                }
                Ok((hold, price))
            }
            Err(AttemptRefused::Admission(e)) => Err(End::Stop(e)),
            Err(AttemptRefused::Skip(class, message, retry_after_ms)) => {
                if let Some(ms) = retry_after_ms {
                    self.note_reset(ms);
                }
                self.skip(t, index, None, class, message);
                Err(End::Exhausted)
            }
        }
    }

    fn hedge(&self) -> Option<(usize, HedgePolicy)> {
        self.plan.route.and_then(|i| self.up.routes[i].hedge.map(|h| (i, h)))
    }

    fn retry_policy(&self, t: &Target) -> RetryPolicy {
        self.route.and_then(|r| r.retry).unwrap_or(self.up.providers[t.provider].cfg.retry)
    }

    /// Healthy targets (and a degraded one whose probe is due) in plan order, then the degraded ones, the
    /// least recently failed first. `probes[i]`: target `i` goes as its provider's probe. A due probe is
    /// sent as a mirror instead when a healthy target can serve the request (see [`Run::mirror`]); the
    /// degraded target then waits behind the others like the rest.
    fn order(&self, targets: &[Target], offset: usize) -> (Vec<usize>, Vec<bool>) {
        let now = self.up.clock.now_ms();
        let standings: Vec<Standing> = targets.iter().map(|t| self.up.providers[t.provider].health.standing(now)).collect();
        let healthy_exists = standings.contains(&Standing::Healthy);
        let mut order = Vec::with_capacity(targets.len());
        let mut degraded = Vec::new();
        let mut probes = vec![false; targets.len()];
        for (i, standing) in standings.into_iter().enumerate() {
            match standing {
                Standing::Healthy => order.push(i),
                Standing::Probe if healthy_exists && self.mirror(&targets[i]) => degraded.push((0, i)),
                Standing::Probe => {
                    probes[i] = true;
                    order.push(i);
                }
                Standing::Degraded { since_failure_ms } => degraded.push((since_failure_ms, i)),
            }
        }
        degraded.sort_by_key(|d| std::cmp::Reverse(d.0));
        if self.route.is_some_and(|r| r.fail_fast) {
            for (_, i) in degraded.drain(..) {
                let name = &self.up.providers[targets[i].provider].cfg.name;
                self.skip(
                    &targets[i],
                    offset + i,
                    None,
                    FailureClass::Degraded,
                    format!("provider {name} is degraded and the route fails fast"),
                );
                self.state().busy_retry_ms.get_or_insert(BUSY_RETRY_MS);
            }
        }
        order.extend(degraded.into_iter().map(|(_, i)| i));
        (order, probes)
    }

    /// Rounds over `targets` until one answers or [`retry::after_round`] gives up.
    async fn walk(&self, targets: &[Target], offset: usize) -> Result<(Output, Served), End> {
        let (mut order, mut probes) = self.order(targets, offset);
        let (mut retries, mut waited) = (0u32, false);
        while !order.is_empty() {
            let round = match self.hedge() {
                Some((route, h)) if retries == 0 && !waited && order.len() > 1 => {
                    self.hedged(targets, offset, &order, &probes, route, h.delay).await
                }
                _ => self.sequence(targets, offset, &order, &probes, false).await,
            };
            match round {
                Err(End::Exhausted) => {}
                other => return other,
            }
            probes.iter_mut().for_each(|p| *p = false);
            let (end, retryable, limited) = {
                let st = self.state();
                let last = |i: usize| st.marks[offset + i].last;
                let retryable: Vec<usize> = order
                    .iter()
                    .copied()
                    .filter(|&i| last(i).is_some_and(|c| retry::may_retry(c, retries, &self.retry_policy(&targets[i]))))
                    .collect();
                let limited: Vec<usize> = order.iter().copied().filter(|&i| last(i) == Some(FailureClass::RateLimited)).collect();
                let now = self.up.clock.now_ms();
                let end = RoundEnd {
                    retries,
                    retryable: !retryable.is_empty(),
                    only_rate_limited: limited.len() == order.len(),
                    soonest_reset: st.reset_at_ms.map(|at| Duration::from_millis(at.saturating_sub(now) + 1)),
                    waited,
                    remaining: self.remaining(),
                };
                (end, retryable, limited)
            };
            let backoff = retryable.first().map_or_else(RetryPolicy::default, |&i| self.retry_policy(&targets[i]));
            match retry::after_round(&end, &backoff, self.up.routing.max_key_wait, fastrand::f64()) {
                AfterRound::Retry(pause) => {
                    tokio::time::sleep(pause).await;
                    retries += 1;
                    order = retryable;
                }
                AfterRound::WaitForKey(wait) => {
                    tracing::info!(wait = %crate::human::duration(wait), "every target is rate-limited; waiting for the soonest key reset");
                    tokio::time::sleep(wait).await;
                    waited = true;
                    self.state().reset_at_ms = None;
                    order = limited;
                }
                AfterRound::GiveUp => break,
            }
        }
        Err(End::Exhausted)
    }

    /// The summary error; `Retry-After` is the soonest known reset (or a busy target's suggestion).
    fn exhausted(&self) -> GatewayError {
        let now = self.up.clock.now_ms();
        let mut st = self.state();
        let reset = st.reset_at_ms.map(|at| at.saturating_sub(now).max(1));
        let retry_after_ms = match (reset, st.busy_retry_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        GatewayError::all_failed(std::mem::take(&mut st.attempts), retry_after_ms)
    }

    /// Once the request is over: a failure it met everywhere while other requests succeeded on that
    /// provider was the request's own, and is taken back from the provider's health.
    fn settle(&self) {
        let st = self.state();
        let failed = st.attempts.iter().filter(|a| !a.skipped && a.class.is_provider_health()).count();
        let now = self.up.clock.now_ms();
        for m in &st.marks {
            if let Some(token) = m.signal {
                let health = &self.up.providers[m.provider].health;
                if retry::request_caused(st.served, failed, health.recently_succeeded(now)) {
                    health.retract(token, now);
                }
            }
        }
    }

    /// Sends a copy of the request to a degraded target as its provider's probe, beside the request, and
    /// feeds only the provider's health with the outcome: the caller is served by a healthy target and never
    /// waits on the probe. `false` when no copy can go now (mirroring off, no free slot or usable key, images
    /// still to be fetched); the request itself is then the probe.
    fn mirror(&self, t: &Target) -> bool {
        let p = &self.up.providers[t.provider];
        if !p.cfg.health.mirror_probes {
            return false;
        }
        let key = if p.cfg.keys.is_empty() {
            None
        } else {
            let now = self.up.clock.now_ms();
            let usable: Vec<usize> =
                (0..p.cfg.keys.len()).filter(|&i| keys::allows(&p.cfg.keys[i], &t.model) && p.keys[i].cooling(now).is_none()).collect();
            match keys::choose_among(&p.cfg.keys, &usable, &mut fastrand::Rng::new()) {
                Some(i) => Some(&p.cfg.keys[i]),
                None => return false,
            }
        };
        // A probe never waits on a token exchange: without a fresh token it is not sent.
        let token = match &p.tokens {
            Some(t) => match t.fresh() {
                Some(t) => Some(t),
                None => return false,
            },
            None => None,
        };
        let ep = endpoint(p, key, token.as_deref());
        let (wire, kind) = match self.op {
            Op::Chat { req, .. } if p.cfg.kind.accepts_image_urls() || !req.has_http_image_urls() => {
                let replaced;
                let body = match &t.params {
                    Some(params) => match with_params(*req, params) {
                        Ok(r) => {
                            replaced = r;
                            &replaced
                        }
                        Err(_) => return false,
                    },
                    None => *req,
                };
                (codec::build_chat(&ep, body, &t.model), if body.is_stream() { Mirrored::Stream } else { Mirrored::Chat })
            }
            Op::Chat { .. } => return false,
            Op::Embeddings(req) if t.params.is_none() => {
                (codec::build_embeddings(&ep, req, &t.model), Mirrored::Embeddings(req.encoding_format.clone()))
            }
            Op::Embeddings(_) => return false,
        };
        let wire = wire.and_then(|mut w| codec::authorize(&ep, &mut w, unix_now()).map(|()| w));
        let (Ok(wire), Some(slot)) = (wire, p.limiter.try_acquire()) else {
            return false;
        };
        let remaining = self.remaining();
        let timeouts =
            Timeouts { first_byte: p.cfg.timeouts.first_byte.min(remaining), total: p.cfg.timeouts.total.min(remaining), ..p.cfg.timeouts };
        let (client, provider_kind, health, clock) = (p.client.clone(), p.cfg.kind, Arc::clone(&p.health), self.up.clock);
        let (target, key_name, id, created, model) =
            (t.label.clone(), key.map(|k| k.name.clone()), self.ctx.id.clone(), self.ctx.created, t.model.clone());
        tracing::debug!(upstream = %target, "probing a degraded provider with a copy of the request");
        tokio::spawn(async move {
            let label = Label { target: &target, key: key_name.as_deref() };
            let rctx = ResponseCtx { id: &id, created, model: &model };
            let started = std::time::Instant::now();
            let outcome = match kind {
                Mirrored::Stream => {
                    let decoder = StreamDecoder::new(provider_kind, rctx);
                    // Dropped at its first chunk, which closes the upstream stream: the pace is known.
                    upstream::open_stream(&client, provider_kind, &timeouts, &label, wire, decoder).await.map(|_| Pace::FirstByte)
                }
                Mirrored::Chat | Mirrored::Embeddings(_) => {
                    match upstream::send_complete(&client, provider_kind, &timeouts, &label, wire).await {
                        Ok(bytes) => match &kind {
                            Mirrored::Embeddings(format) => codec::parse_embeddings(provider_kind, &bytes, rctx, format.as_deref())
                                .map(|_| Pace::Complete { output_tokens: 0 }),
                            _ => codec::parse_chat(provider_kind, &bytes, rctx)
                                .map(|r| Pace::Complete { output_tokens: r.usage.map_or(0, |u| u.completion_tokens) }),
                        }
                        .map_err(|e| upstream::wire_failure(&label, started, e)),
                        Err(f) => Err(f),
                    }
                }
            };
            drop(slot);
            let now = clock.now_ms();
            match outcome.map_err(|f| f.attempt) {
                Ok(pace) => health.success(now, started.elapsed(), pace, true),
                Err(a) if a.class.is_provider_health() => {
                    health.failure(now, true);
                }
                // A key's trouble says nothing about the provider's health; the next probe asks again.
                Err(a) => tracing::debug!(upstream = %target, class = %a.class.as_str(), "probe copy not answered: {}", a.message),
            }
        });
        true
    }

    /// Tries the targets of `order` one after the other; `offset` is the first target's index in the walk.
    async fn sequence(
        &self,
        targets: &[Target],
        offset: usize,
        order: &[usize],
        probes: &[bool],
        hedged: bool,
    ) -> Result<(Output, Served), End> {
        for (pos, &i) in order.iter().enumerate() {
            let last_resort = pos + 1 == order.len();
            match self.target(&targets[i], offset + i, hedged, probes[i], last_resort).await {
                Err(End::Exhausted) => continue,
                other => return other,
            }
        }
        Err(End::Exhausted)
    }

    /// The first target alone; if it has not answered within the hedge delay (and the budget allows), the
    /// rest of the order races it, and the first answer wins. The loser is dropped, which cancels its
    /// upstream request.
    async fn hedged(
        &self,
        targets: &[Target],
        offset: usize,
        order: &[usize],
        probes: &[bool],
        route: usize,
        delay: HedgeDelay,
    ) -> Result<(Output, Served), End> {
        let (head, rest_order) = (order[0], &order[1..]);
        let first_provider = &self.up.providers[targets[head].provider];
        let delay = match delay {
            HedgeDelay::Fixed(d) => d,
            HedgeDelay::P95 { floor } => first_provider.latency.p95(HEDGE_MIN_SAMPLES).map_or(floor, |p| p.max(floor)),
        };
        let mut first = pin!(self.target(&targets[head], offset + head, false, probes[head], false));
        tokio::select! {
            r = &mut first => {
                return match r {
                    Err(End::Exhausted) => self.sequence(targets, offset, rest_order, probes, false).await,
                    other => other,
                };
            }
            _ = tokio::time::sleep(delay) => {}
        }
        if !self.up.hedge_budgets[route].try_spend() {
            return match first.await {
                Err(End::Exhausted) => self.sequence(targets, offset, rest_order, probes, false).await,
                other => other,
            };
        }
        tracing::debug!(after = %crate::human::duration(delay), upstream = %targets[rest_order[0]].label, "hedging: the first target is slow");
        metrics::counter!("switchyard_hedges_total", "provider" => first_provider.cfg.name.clone()).increment(1);
        let mut rest = pin!(self.sequence(targets, offset, rest_order, probes, true));
        let (mut first_done, mut rest_done) = (false, false);
        loop {
            tokio::select! {
                r = &mut first, if !first_done => match r {
                    Err(End::Exhausted) => {
                        first_done = true;
                        if rest_done {
                            return Err(End::Exhausted);
                        }
                    }
                    other => return other,
                },
                r = &mut rest, if !rest_done => match r {
                    Err(End::Exhausted) => {
                        rest_done = true;
                        if first_done {
                            return Err(End::Exhausted);
                        }
                    }
                    other => return other,
                },
            }
        }
    }

    /// One target: key choice, in-flight slot, send; rotates keys after key-specific failures.
    async fn target(&self, t: &Target, index: usize, hedged: bool, probe: bool, last_resort: bool) -> Result<(Output, Served), End> {
        let p = &self.up.providers[t.provider];
        let mut held = Some(self.reserve(p, t, index).await?);
        // Keys this request already saw refused; not tried again by it.
        let mut refused: Vec<usize> = Vec::new();
        loop {
            if self.remaining().is_zero() {
                self.skip(t, index, None, FailureClass::Timeout, "the request's deadline passed".into());
                return Err(End::Exhausted);
            }
            let key = self.choose_key(p, t, index, &refused, last_resort)?;
            let key_cfg = key.map(|(_, k)| k);
            // Before the slot: a slow image host must not hold the provider's capacity.
            self.inlined(p).await.map_err(End::Stop)?;
            let slot = self.slot(p, t, index, key_cfg).await?;
            let started = std::time::Instant::now();
            let span_id = crate::ctx::new_span_id();
            let start_us = started.duration_since(self.ctx.arrived).as_micros() as u64;
            let at = || Trail { start_us, hedged, span_id: span_id.clone() };
            let label = Label { target: &t.label, key: key_cfg.map(|k| k.name.as_str()) };
            let mut f = match self.send(p, t, key_cfg, &label, slot, last_resort, &span_id).await {
                Ok(out) => {
                    // Every provider answers a success (a stream's opening too) with 200.
                    self.state().won = held.take();
                    self.trail(index, at(), key_cfg.map(|k| k.name.clone()), Some(200), "success", false, None);
                    return Ok(self.answered(p, t, index, key, hedged, probe, started.elapsed(), out));
                }
                Err(Ok(f)) => f,
                Err(Err(stop)) => return Err(End::Stop(stop)),
            };
            let class = f.attempt.class;
            if class == FailureClass::ModelNotFound {
                let fix = crate::error::missing_model_fix(p.cfg.kind, &p.cfg.base_url, &t.model);
                f.attempt.message = format!("{}; {fix}", f.attempt.message);
            }
            log_failed_attempt(&f.attempt);
            if class.is_provider_health() {
                let mut st = self.state();
                let m = &mut st.marks[index];
                if !m.signalled {
                    m.signalled = true;
                    m.signal = p.health.failure(self.up.clock.now_ms(), probe);
                }
            }
            let falls_back = self.route.is_some_and(|r| r.fallback_on_caller_fault);
            match retry::after_failure(class, f.retry_after, &p.cfg.cooldown, falls_back) {
                AfterFailure::RotateKey { cooldown, reason } => {
                    if reason == CooldownReason::RateLimited {
                        self.note_reset(cooldown.as_millis() as u64);
                    }
                    let Some((i, _)) = key else {
                        self.fail(index, f.attempt, at());
                        return Err(End::Exhausted);
                    };
                    p.keys[i].cool_down(self.up.clock.now_ms(), cooldown, reason);
                    metrics::counter!("switchyard_key_cooldowns_total", "provider" => p.cfg.name.clone(), "key" => p.cfg.keys[i].name.clone(), "reason" => class.as_str())
                        .increment(1);
                    tracing::warn!(provider = %p.cfg.name, key = %p.cfg.keys[i].name, cooldown = %crate::human::duration(cooldown), reason = %class.as_str(), "key taken out of rotation");
                    refused.push(i);
                    self.fail(index, f.attempt, at());
                }
                AfterFailure::NextTarget => {
                    self.fail(index, f.attempt, at());
                    return Err(End::Exhausted);
                }
                after @ (AfterFailure::ContextFallback | AfterFailure::Stop) => {
                    self.trail(index, at(), f.attempt.key.clone(), f.attempt.status, class.as_str(), false, Some(&f.attempt.message));
                    let e = self.caller_error(p, f);
                    return Err(if after == AfterFailure::Stop { End::Stop(e) } else { End::ContextTooLong(e) });
                }
            }
        }
    }

    /// Books a successful attempt: health (once per target and request), metrics, the key back in rotation.
    #[allow(clippy::too_many_arguments)]
    fn answered(
        &self,
        p: &Provider,
        t: &Target,
        index: usize,
        key: Option<(usize, &KeyConfig)>,
        hedged: bool,
        probe: bool,
        took: Duration,
        out: Output,
    ) -> (Output, Served) {
        p.latency.record(took);
        if let Some((i, _)) = key {
            p.keys[i].recovered();
        }
        let mut st = self.state();
        st.served = true;
        if !std::mem::replace(&mut st.marks[index].signalled, true) {
            let pace = match &out {
                Output::Stream(_) => Pace::FirstByte,
                Output::Complete(r) => Pace::Complete { output_tokens: r.usage.as_ref().map_or(0, |u| u.completion_tokens) },
                Output::Embeddings(_) => Pace::Complete { output_tokens: 0 },
            };
            p.health.success(self.up.clock.now_ms(), took, pace, probe);
        }
        let attempts = st.attempts.iter().filter(|a| !a.skipped).count() + 1;
        drop(st);
        if attempts > 1 {
            tracing::info!(upstream = %t.label, attempts, hedged, "served after earlier attempts failed");
        }
        let served = Served {
            provider: p.cfg.name.clone(),
            model: t.model.clone(),
            key: key.map(|(_, k)| k.name.clone()),
            attempts,
            fallback_index: index,
            hedged,
            virtual_key: self.metering.who.map(|w| w.name().to_string()),
            cost_nano_usd: None,
            provider_tags: p.cfg.tags.clone(),
        };
        (out, served)
    }

    /// An in-flight slot under the provider's limit, or the target skipped on record.
    async fn slot(
        &self,
        p: &Provider,
        t: &Target,
        index: usize,
        key: Option<&KeyConfig>,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, End> {
        let (class, message) = match p.limiter.acquire(self.remaining()).await {
            Ok(s) => return Ok(s),
            Err(LimitError::QueueFull) => {
                // Refused at once, never waited on: the caller hears when to come back.
                self.state().busy_retry_ms.get_or_insert(BUSY_RETRY_MS);
                (FailureClass::Overloaded, format!("provider {} is at its in-flight limit and queue", p.cfg.name))
            }
            Err(LimitError::Deadline) => {
                (FailureClass::Timeout, format!("no in-flight slot for provider {} before the deadline", p.cfg.name))
            }
        };
        self.skip(t, index, key, class, message);
        Err(End::Exhausted)
    }

    /// The chat request with its image URLs replaced by the images, for a provider that only takes bytes:
    /// fetched by the first target that needs it, within the request's deadline. `None`: send the request
    /// as it is.
    async fn inlined(&self, p: &Provider) -> Result<Option<&ChatRequest>, GatewayError> {
        match self.op {
            Op::Chat { req, inlined } if !p.cfg.kind.accepts_image_urls() => {
                let copy = inlined.get_or_try_init(|| self.up.images.inline_images(req, self.deadline)).await?;
                Ok(copy.as_ref().map(Inlined::request))
            }
            _ => Ok(None),
        }
    }

    /// The upstream's own error, with every attempt so far.
    fn caller_error(&self, p: &Provider, f: Failure) -> GatewayError {
        let status = f.attempt.status.unwrap_or(400);
        let class = f.attempt.class;
        let mut attempts = std::mem::take(&mut self.state().attempts);
        attempts.push(f.attempt);
        GatewayError::Upstream { status, error: Box::new(f.upstream.unwrap_or_default()), provider: p.cfg.name.clone(), class, attempts }
    }

    /// Weighted choice among the keys allowed for the model that are neither cooling down nor refused in
    /// this request. `Ok(None)` for a keyless provider. When no key is usable: a key the provider rejected
    /// is still tried if this target is the request's last resort (calling the provider directly would do
    /// no better); a rate-limited key never is. Otherwise the target is skipped on record.
    fn choose_key<'p>(
        &self,
        p: &'p Provider,
        t: &Target,
        index: usize,
        refused: &[usize],
        last_resort: bool,
    ) -> Result<Option<(usize, &'p KeyConfig)>, End> {
        if p.cfg.keys.is_empty() {
            return Ok(None);
        }
        let now = self.up.clock.now_ms();
        let mut usable: Vec<usize> = Vec::new();
        let mut limited: Option<u64> = None;
        let mut rejected: Option<(u64, usize)> = None;
        for i in (0..p.cfg.keys.len()).filter(|&i| keys::allows(&p.cfg.keys[i], &t.model) && !refused.contains(&i)) {
            match p.keys[i].cooling(now) {
                None => usable.push(i),
                Some(ms) if p.keys[i].reason() == Some(CooldownReason::RateLimited) => limited = Some(limited.map_or(ms, |x| x.min(ms))),
                Some(ms) => rejected = Some(rejected.map_or((ms, i), |x| x.min((ms, i)))),
            }
        }
        if let Some(i) = keys::choose_among(&p.cfg.keys, &usable, &mut fastrand::Rng::new()) {
            return Ok(Some((i, &p.cfg.keys[i])));
        }
        match (limited, rejected) {
            (_, Some((_, i))) if last_resort => Ok(Some((i, &p.cfg.keys[i]))),
            (Some(ms), _) => {
                self.note_reset(ms);
                let message =
                    format!("every key of provider {} allowed for {} is rate-limited; the first resets in {ms} ms", p.cfg.name, t.model);
                self.skip(t, index, None, FailureClass::RateLimited, message);
                Err(End::Exhausted)
            }
            (None, Some((ms, i))) => {
                let reason = p.keys[i].reason().unwrap_or(CooldownReason::KeyInvalid);
                let class = if reason == CooldownReason::QuotaExhausted { FailureClass::QuotaExhausted } else { FailureClass::KeyInvalid };
                let message = format!(
                    "every key of provider {} allowed for {} was rejected by the provider ({}) and sits out for {ms} ms more",
                    p.cfg.name,
                    t.model,
                    class.as_str()
                );
                self.skip(t, index, Some(&p.cfg.keys[i]), class, message);
                Err(End::Exhausted)
            }
            // Every usable key was refused in this request already: those attempts are on record.
            (None, None) if !refused.is_empty() => Err(End::Exhausted),
            (None, None) => {
                self.skip(
                    t,
                    index,
                    None,
                    FailureClass::Unsupported,
                    format!("no key of provider {} is allowed to use model {}", p.cfg.name, t.model),
                );
                Err(End::Exhausted)
            }
        }
    }

    /// One upstream call. `Err(Ok(failure))`: a failed attempt; `Err(Err(error))`: stop the request.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        p: &Provider,
        t: &Target,
        key: Option<&KeyConfig>,
        label: &Label<'_>,
        slot: tokio::sync::OwnedSemaphorePermit,
        last_resort: bool,
        span_id: &str,
    ) -> Result<Output, Result<Failure, GatewayError>> {
        let started = std::time::Instant::now();
        let remaining = attempt_budget(self.remaining(), last_resort);
        let token = match &p.tokens {
            Some(t) => Some(t.token(&p.client, &p.cfg.timeouts, label).await.map_err(Ok)?),
            None => None,
        };
        let ep = endpoint(p, key, token.as_deref());
        let rctx = ResponseCtx { id: &self.ctx.id, created: self.ctx.created, model: &t.model };
        match self.op {
            Op::Chat { req, .. } => {
                let mut body: &ChatRequest = req;
                // Fetched in `target` before the slot was taken; here it is only looked up.
                if let Some(copy) = self.inlined(p).await.map_err(Err)? {
                    body = copy;
                }
                let replaced;
                if let Some(params) = &t.params {
                    replaced = with_params(body, params).map_err(Err)?;
                    body = &replaced;
                }
                let mut wire = codec::build_chat(&ep, body, &t.model).map_err(|e| Ok(upstream::wire_failure(label, started, e)))?;
                wire.headers.push(("traceparent".into(), self.ctx.upstream_traceparent(span_id)));
                codec::authorize(&ep, &mut wire, unix_now()).map_err(|e| Ok(upstream::wire_failure(label, started, e)))?;
                if body.is_stream() {
                    // The deadline bounds the wait for the first chunk; the stream itself may then run on.
                    let timeouts = Timeouts { first_byte: p.cfg.timeouts.first_byte.min(remaining), ..p.cfg.timeouts };
                    let decoder = StreamDecoder::new(p.cfg.kind, rctx);
                    let mut s = upstream::open_stream(&p.client, p.cfg.kind, &timeouts, label, wire, decoder).await.map_err(Ok)?;
                    s.hold(slot);
                    s.report_to(Arc::clone(&p.health), self.up.clock);
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
                // Most providers take one request; Bedrock's Titan models one per text (see the codec).
                let parts =
                    codec::build_embeddings_parts(&ep, body, &t.model).map_err(|e| Ok(upstream::wire_failure(label, started, e)))?;
                let mut answers = Vec::with_capacity(parts.len());
                for mut wire in parts {
                    wire.headers.push(("traceparent".into(), self.ctx.upstream_traceparent(span_id)));
                    codec::authorize(&ep, &mut wire, unix_now()).map_err(|e| Ok(upstream::wire_failure(label, started, e)))?;
                    // The parts go one after another, all inside the attempt's one deadline.
                    let left = remaining.saturating_sub(started.elapsed());
                    let timeouts = Timeouts { total: p.cfg.timeouts.total.min(left), ..p.cfg.timeouts };
                    answers.push(upstream::send_complete(&p.client, p.cfg.kind, &timeouts, label, wire).await.map_err(Ok)?);
                }
                drop(slot);
                let bodies: Vec<&[u8]> = answers.iter().map(|b| b.as_ref()).collect();
                codec::parse_embeddings_parts(p.cfg.kind, &bodies, rctx, body.encoding_format.as_deref())
                    .map(Output::Embeddings)
                    .map_err(|e| Ok(upstream::wire_failure(label, started, e)))
            }
        }
    }
}

/// When an attempt started and under which span, for the request's trail.
struct Trail {
    /// From the request's arrival, in microseconds: the request's overhead is measured from it.
    start_us: u64,
    hedged: bool,
    span_id: String,
}

/// How much of what is left of the deadline one attempt may use before it must have answered (a stream:
/// its first chunk). An attempt with targets still behind it gets at most half, so a hung upstream leaves
/// the fallback as much time as it took; the request's last resort gets all of it.
fn attempt_budget(remaining: Duration, last_resort: bool) -> Duration {
    if last_resort {
        remaining
    } else {
        remaining / 2
    }
}

/// What a probe copy asks for (see [`Run::mirror`]).
enum Mirrored {
    Stream,
    Chat,
    /// With the caller's `encoding_format`.
    Embeddings(Option<String>),
}

/// One line per failed attempt. WARN only for what the operator must act on (a provider failing, a key
/// refused, a model missing from a self-hosted server); a failure the request caused (a 400 from the
/// upstream, a prompt too long, a parameter the target cannot take) is the caller's, and only INFO.
fn log_failed_attempt(a: &Attempt) {
    let key = a.key.as_deref().map(tracing::field::display);
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(upstream = %a.target, key, status = a.status, class = %a.class.as_str(), latency_ms = a.latency_ms,
                "upstream attempt failed: {}", a.message)
        };
    }
    match a.class {
        FailureClass::CallerFault | FailureClass::ContextTooLong | FailureClass::Unsupported | FailureClass::TooLarge => line!(info),
        _ => line!(warn),
    }
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

/// Unix seconds now, the time a request is signed at (AWS SigV4 refuses a signature more than five minutes
/// off, so a retry minutes after the request arrived signs afresh).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
