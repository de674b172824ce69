//! What the gateway knows about each upstream's health, and the rules that keep traffic away from trouble
//! without ever making an outage worse: outlier detection per provider ([`Health`]), key cooldowns after
//! 429/401/quota errors, a bounded number of in-flight requests per provider, observed first-byte latencies
//! (for hedging), and the hedge budget.
//!
//! Health only *reorders* a request's targets: a degraded provider goes behind the healthy ones (except for
//! an occasional probe) and is still tried when nothing healthier is left. Every piece is per provider or
//! per key, so there is no global lock: a provider's health takes its own small mutex to record a signal or
//! to be asked, and the limiter is a semaphore.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::{HealthPolicy, OverloadPolicy};

/// Milliseconds on the gateway's own monotonic clock (shared by every health structure). It is tokio's
/// clock, so tests can pause and advance it.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock { epoch: Instant::now() }
    }

    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a health lock leaves only counters behind; they are still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ok,
    Failed,
    Slow,
    /// A failure later judged to be the request's own (it failed everywhere while others succeeded).
    Retracted,
}

#[derive(Debug, Clone, Copy)]
struct Signal {
    seq: u64,
    at_ms: u64,
    kind: Kind,
}

#[derive(Debug)]
struct Inner {
    signals: VecDeque<Signal>,
    next_seq: u64,
    degraded: bool,
    last_success_ms: Option<u64>,
    last_failure_ms: Option<u64>,
    next_probe_ms: u64,
    probe_gap_ms: u64,
    /// Probes in a row that succeeded.
    probe_streak: u32,
    /// The usual pace of ordinary successes, one per [`Pace`] kind: streams' time to first byte in ms,
    /// and complete answers' ms per output token (what slow answers are measured against).
    baseline: [Option<f64>; 2],
    times_degraded: u64,
}

/// A failure signal that may be taken back (see [`Health::retract`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token(u64);

/// Where a provider stands for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Healthy,
    /// Degraded, and this request is its probe: it keeps its place in the plan.
    Probe,
    /// Degraded: tried after the healthy targets. `since_failure_ms` orders several degraded ones (the
    /// least recently failed first).
    Degraded {
        since_failure_ms: u64,
    },
}

/// What a success's latency is compared with. A stream's time to first byte does not depend on how long
/// the answer is; a complete answer's time does, so it is taken per output token, with an allowance of
/// [`PROMPT_ALLOWANCE_TOKENS`] for reading the prompt. A provider serving both kinds keeps one usual
/// pace for each, so long generations are never mistaken for a slow provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    FirstByte,
    Complete { output_tokens: u64 },
}

/// Tokens' worth of time allowed for reading the prompt when a complete answer's pace is computed.
pub const PROMPT_ALLOWANCE_TOKENS: u64 = 16;

impl Pace {
    /// `(baseline slot, sample)` for a latency in ms.
    fn sample(self, ms: f64) -> (usize, f64) {
        match self {
            Pace::FirstByte => (0, ms),
            Pace::Complete { output_tokens } => (1, ms / (output_tokens + PROMPT_ALLOWANCE_TOKENS) as f64),
        }
    }
}

/// Outlier detection for one provider over a short sliding window of health signals.
#[derive(Debug)]
pub struct Health {
    /// The provider's name, for logs and metrics.
    name: String,
    policy: HealthPolicy,
    inner: Mutex<Inner>,
}

/// The provider's health as shown at `/api/health/providers`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HealthView {
    /// `healthy` or `degraded`.
    pub state: &'static str,
    /// Signals in the window, and how many of them were failures or slow answers.
    pub signals: u32,
    pub failures: u32,
    /// The usual time to first byte of streams.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usual_first_byte_ms: Option<f64>,
    /// The usual time of complete answers per output token (see [`Pace`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usual_ms_per_token: Option<f64>,
    /// While degraded: milliseconds until the next probe may go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_probe_in_ms: Option<u64>,
    pub times_degraded: u64,
}

const MIN_PROBE_GAP_MS: u64 = 100;
/// Weight of a new sample in the usual-pace average; slow answers move it a hundred times less, so the burst
/// of slow answers already in flight when a provider turns slow does not make slowness the new normal, while
/// a provider that stays slow for a long time (thousands of answers) is eventually accepted as it is.
const BASELINE_ALPHA: f64 = 0.1;
const BASELINE_ALPHA_SLOW: f64 = 0.001;

impl Health {
    pub fn new(name: String, policy: HealthPolicy) -> Self {
        Health {
            name,
            policy,
            inner: Mutex::new(Inner {
                signals: VecDeque::with_capacity(policy.window_size as usize),
                next_seq: 0,
                degraded: false,
                last_success_ms: None,
                last_failure_ms: None,
                next_probe_ms: 0,
                probe_gap_ms: policy.probe_interval.as_millis() as u64,
                probe_streak: 0,
                baseline: [None, None],
                times_degraded: 0,
            }),
        }
    }

    /// Where the provider stands for a request arriving now. Claims the probe when one is due.
    pub fn standing(&self, now_ms: u64) -> Standing {
        if !self.policy.enabled {
            return Standing::Healthy;
        }
        let mut g = lock(&self.inner);
        if !self.evaluate(&mut g, now_ms) {
            return Standing::Healthy;
        }
        if now_ms >= g.next_probe_ms {
            g.next_probe_ms = now_ms + g.probe_gap_ms;
            return Standing::Probe;
        }
        Standing::Degraded { since_failure_ms: g.last_failure_ms.map_or(u64::MAX, |f| now_ms.saturating_sub(f)) }
    }

    /// A successful attempt: how long it took and what kind of answer it was. A probe's success brings the
    /// next probe closer.
    pub fn success(&self, now_ms: u64, latency: Duration, pace: Pace, probe: bool) {
        if !self.policy.enabled {
            return;
        }
        let ms = latency.as_secs_f64() * 1000.0;
        let (slot, sample) = pace.sample(ms);
        let mut g = lock(&self.inner);
        let slow = self.policy.slow_factor > 0.0
            && ms > self.policy.slow_floor.as_secs_f64() * 1000.0
            && g.baseline[slot].is_some_and(|b| sample > b * self.policy.slow_factor);
        let alpha = if slow { BASELINE_ALPHA_SLOW } else { BASELINE_ALPHA };
        g.baseline[slot] = Some(g.baseline[slot].map_or(sample, |b| b + alpha * (sample - b)));
        g.last_success_ms = Some(now_ms);
        if probe {
            self.count_probe(if slow { "slow" } else { "ok" });
        }
        if probe && slow {
            // A slow probe is a failed probe: the provider answers, but not at its usual pace.
            self.probe_failed(&mut g, now_ms);
        } else if probe {
            // Two good probes in a row start bringing the next ones closer; a provider that fails 40% of the
            // time rarely gets there, a recovered one is back within seconds.
            g.probe_streak += 1;
            if g.probe_streak >= 2 {
                g.probe_gap_ms = (g.probe_gap_ms / 2).max(MIN_PROBE_GAP_MS);
            }
            g.next_probe_ms = now_ms + g.probe_gap_ms;
        }
        self.push(&mut g, now_ms, if slow { Kind::Slow } else { Kind::Ok });
    }

    /// A failed attempt that says something about the provider (transient, timeout, malformed).
    pub fn failure(&self, now_ms: u64, probe: bool) -> Option<Token> {
        if !self.policy.enabled {
            return None;
        }
        let mut g = lock(&self.inner);
        g.last_failure_ms = Some(now_ms);
        if probe {
            self.count_probe("failed");
            self.probe_failed(&mut g, now_ms);
        }
        Some(Token(self.push(&mut g, now_ms, Kind::Failed)))
    }

    /// `switchyard_health_probes_total{provider, outcome}`: `ok`, `slow` or `failed`.
    fn count_probe(&self, outcome: &'static str) {
        metrics::counter!("switchyard_health_probes_total", "provider" => self.name.clone(), "outcome" => outcome).increment(1);
    }

    /// Probes go back to the configured interval.
    fn probe_failed(&self, g: &mut Inner, now_ms: u64) {
        g.probe_streak = 0;
        g.probe_gap_ms = self.policy.probe_interval.as_millis() as u64;
        g.next_probe_ms = now_ms + g.probe_gap_ms;
    }

    /// Takes a failure back: the request failed everywhere while other requests succeeded here, so the
    /// failure was the request's, not the provider's. A no-op once the signal has left the window.
    pub fn retract(&self, token: Token, now_ms: u64) {
        let mut g = lock(&self.inner);
        if let Some(s) = g.signals.iter_mut().find(|s| s.seq == token.0) {
            s.kind = Kind::Retracted;
        }
        // Judged as if the failure had never been: if it was what degraded the provider, it is healthy again.
        let (n, f) = self.counts(&g, now_ms);
        if g.degraded && !self.trips(n, f) {
            g.degraded = false;
            self.announce(false, n, f);
        }
    }

    /// Has any request succeeded here within the window?
    pub fn recently_succeeded(&self, now_ms: u64) -> bool {
        let g = lock(&self.inner);
        g.last_success_ms.is_some_and(|t| t + self.policy.window.as_millis() as u64 > now_ms)
    }

    fn push(&self, g: &mut Inner, now_ms: u64, kind: Kind) -> u64 {
        let seq = g.next_seq;
        g.next_seq += 1;
        if g.signals.len() >= self.policy.window_size as usize {
            g.signals.pop_front();
        }
        g.signals.push_back(Signal { seq, at_ms: now_ms, kind });
        self.evaluate(g, now_ms);
        seq
    }

    /// `(signals, failures)` in the window.
    fn counts(&self, g: &Inner, now_ms: u64) -> (u32, u32) {
        let horizon = now_ms.saturating_sub(self.policy.window.as_millis() as u64);
        g.signals
            .iter()
            .filter(|s| s.at_ms >= horizon && s.kind != Kind::Retracted)
            .fold((0, 0), |(n, f), s| (n + 1, f + u32::from(matches!(s.kind, Kind::Failed | Kind::Slow))))
    }

    /// Recomputes the state from the window, logging and exporting a change. With hysteresis: a provider
    /// is degraded by `min_failures` failures making up `failure_rate` of its window, and healthy again only
    /// once its window holds fewer than `min_failures - 1` of them (or under half the rate), so a provider
    /// hovering at the threshold does not flap traffic back and forth.
    fn evaluate(&self, g: &mut Inner, now_ms: u64) -> bool {
        let (n, f) = self.counts(g, now_ms);
        let p = &self.policy;
        let degraded =
            if g.degraded { !(f + 1 < p.min_failures || f64::from(f) < p.failure_rate * f64::from(n) / 2.0) } else { self.trips(n, f) };
        if degraded != g.degraded {
            g.degraded = degraded;
            if degraded {
                g.times_degraded += 1;
                g.probe_streak = 0;
                g.probe_gap_ms = p.probe_interval.as_millis() as u64;
                g.next_probe_ms = now_ms + g.probe_gap_ms;
            }
            self.announce(degraded, n, f);
        }
        degraded
    }

    /// Do `f` failures among `n` signals degrade a healthy provider?
    fn trips(&self, n: u32, f: u32) -> bool {
        f >= self.policy.min_failures && f64::from(f) >= self.policy.failure_rate * f64::from(n)
    }

    /// Logs a change and counts a degradation. The state itself (`switchyard_provider_degraded`) is read
    /// when `/metrics` is rendered, so it exists, at 0, for a provider that was never degraded.
    fn announce(&self, degraded: bool, n: u32, f: u32) {
        if degraded {
            metrics::counter!("switchyard_provider_degraded_total", "provider" => self.name.clone()).increment(1);
            tracing::warn!(provider = %self.name, failures = f, signals = n, "provider degraded: traffic moves to healthy targets, probes continue");
        } else {
            tracing::info!(provider = %self.name, failures = f, signals = n, "provider healthy again");
        }
    }

    pub fn view(&self, now_ms: u64) -> HealthView {
        let mut g = lock(&self.inner);
        let degraded = self.policy.enabled && self.evaluate(&mut g, now_ms);
        let (signals, failures) = self.counts(&g, now_ms);
        HealthView {
            state: if degraded { "degraded" } else { "healthy" },
            signals,
            failures,
            usual_first_byte_ms: g.baseline[0].map(|b| (b * 10.0).round() / 10.0),
            usual_ms_per_token: g.baseline[1].map(|b| (b * 100.0).round() / 100.0),
            next_probe_in_ms: degraded.then(|| g.next_probe_ms.saturating_sub(now_ms)),
            times_degraded: g.times_degraded,
        }
    }
}

/// Why a key is sitting out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CooldownReason {
    RateLimited,
    KeyInvalid,
    QuotaExhausted,
}

/// One key's cooldown.
#[derive(Debug, Default)]
pub struct KeyHealth {
    /// Clock ms until which the key is not used (0: none).
    until_ms: AtomicU64,
    reason: Mutex<Option<CooldownReason>>,
}

impl KeyHealth {
    /// `Some(ms left)` while cooling down.
    pub fn cooling(&self, now_ms: u64) -> Option<u64> {
        let until = self.until_ms.load(Ordering::Relaxed);
        (until > now_ms).then(|| until - now_ms)
    }

    pub fn cool_down(&self, now_ms: u64, d: Duration, reason: CooldownReason) {
        let until = now_ms + d.as_millis() as u64;
        self.until_ms.fetch_max(until, Ordering::Relaxed);
        *lock(&self.reason) = Some(reason);
    }

    /// A success clears any cooldown (the key works again).
    pub fn recovered(&self) {
        if self.until_ms.load(Ordering::Relaxed) != 0 {
            self.until_ms.store(0, Ordering::Relaxed);
            *lock(&self.reason) = None;
        }
    }

    pub fn reason(&self) -> Option<CooldownReason> {
        *lock(&self.reason)
    }
}

/// Bounded concurrency towards one provider: `max_in_flight` requests at once and at most `max_queue`
/// waiting. A full queue is refused at once, never waited on.
#[derive(Debug)]
pub struct Limiter {
    sem: Arc<Semaphore>,
    waiting: AtomicUsize,
    policy: OverloadPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitError {
    QueueFull,
    /// No slot came free before the request's deadline.
    Deadline,
}

impl Limiter {
    pub fn new(policy: OverloadPolicy) -> Self {
        Limiter { sem: Arc::new(Semaphore::new(policy.max_in_flight)), waiting: AtomicUsize::new(0), policy }
    }

    pub async fn acquire(&self, wait: Duration) -> Result<OwnedSemaphorePermit, LimitError> {
        if let Ok(p) = self.sem.clone().try_acquire_owned() {
            return Ok(p);
        }
        // The guard gives the queue place back however this future ends, also when a client that left
        // drops it while it waits.
        let _queued = Queued::join(&self.waiting);
        if _queued.ahead >= self.policy.max_queue {
            return Err(LimitError::QueueFull);
        }
        let r = tokio::time::timeout(wait, self.sem.clone().acquire_owned()).await;
        match r {
            Ok(Ok(p)) => Ok(p),
            // The semaphore is never closed; treat it like a timeout if it ever were.
            Ok(Err(_)) | Err(_) => Err(LimitError::Deadline),
        }
    }

    /// A slot if one is free now, never waiting (for work that may simply not happen, like a probe).
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.sem.clone().try_acquire_owned().ok()
    }

    pub fn in_flight(&self) -> usize {
        self.policy.max_in_flight - self.sem.available_permits()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// One place in a limiter's queue, given back on drop.
struct Queued<'a> {
    count: &'a AtomicUsize,
    /// Requests that were waiting before this one.
    ahead: usize,
}

impl<'a> Queued<'a> {
    fn join(count: &'a AtomicUsize) -> Self {
        Queued { ahead: count.fetch_add(1, Ordering::AcqRel), count }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Recent times to first byte of successful attempts, for the `p95` hedge delay.
#[derive(Debug, Default)]
pub struct Latency {
    samples: Mutex<VecDeque<u32>>,
}

const LATENCY_SAMPLES: usize = 256;

impl Latency {
    pub fn record(&self, d: Duration) {
        let mut s = lock(&self.samples);
        if s.len() == LATENCY_SAMPLES {
            s.pop_front();
        }
        s.push_back(d.as_micros().min(u128::from(u32::MAX)) as u32);
    }

    /// The 95th percentile, once at least `min` samples exist.
    pub fn p95(&self, min: usize) -> Option<Duration> {
        let s = lock(&self.samples);
        if s.len() < min.max(1) {
            return None;
        }
        let mut v: Vec<u32> = s.iter().copied().collect();
        drop(s);
        let last = v.len() - 1;
        let i = (((v.len() as f64) * 0.95).ceil() as usize).saturating_sub(1).min(last);
        let (_, p, _) = v.select_nth_unstable(i);
        Some(Duration::from_micros(u64::from(*p)))
    }
}

/// Caps hedging at a share of requests: every request earns `share` of a token, a hedge spends one, and
/// the bucket holds at most a few tokens so a quiet period cannot bank a burst.
#[derive(Debug, Default)]
pub struct HedgeBudget {
    /// Thousandths of a token.
    milli: AtomicU64,
    pub hedged: AtomicU64,
    pub requests: AtomicU64,
}

const HEDGE_BURST_MILLI: u64 = 5_000;

impl HedgeBudget {
    pub fn earn(&self, share: f64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let add = (share * 1000.0) as u64;
        let _ = self.milli.fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| Some((m + add).min(HEDGE_BURST_MILLI)));
    }

    pub fn try_spend(&self) -> bool {
        let ok = self.milli.fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| m.checked_sub(1000)).is_ok();
        if ok {
            self.hedged.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        Health::new("p".into(), HealthPolicy::default())
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_blip_does_not_degrade_but_a_forty_percent_outage_does_within_a_few_requests() {
        let h = health();
        // Two failures in a row among successes: a blip.
        for i in 0..30 {
            if i == 10 || i == 11 {
                h.failure(i * 50, false);
            } else {
                h.success(i * 50, ms(300), Pace::FirstByte, false);
            }
            assert_eq!(h.standing(i * 50), Standing::Healthy, "request {i}");
        }
        // Three failures spread over 20 successes: still a blip (15%).
        let h = health();
        for i in 0..23u64 {
            if i % 8 == 0 {
                h.failure(i * 50, false);
            } else {
                h.success(i * 50, ms(300), Pace::FirstByte, false);
            }
        }
        assert_eq!(h.standing(23 * 50), Standing::Healthy);
        // 40% failures: degraded by the third failure.
        let h = health();
        let pattern = [true, false, false, true, false, true]; // failure, ok, ok, failure, ok, failure
        for (i, fail) in pattern.iter().enumerate() {
            if *fail {
                h.failure(i as u64 * 66, false);
            } else {
                h.success(i as u64 * 66, ms(300), Pace::FirstByte, false);
            }
        }
        assert_ne!(h.standing(400), Standing::Healthy, "3 of 6 failed");
    }

    #[test]
    fn degraded_providers_are_probed_and_come_back_after_successful_probes() {
        let h = health();
        for i in 0..3 {
            h.failure(i, false);
        }
        // The first request after degradation waits for the probe interval; one probe per interval.
        assert!(matches!(h.standing(10), Standing::Degraded { .. }));
        assert_eq!(h.standing(2003), Standing::Probe);
        assert!(matches!(h.standing(2004), Standing::Degraded { .. }), "one probe at a time");
        // A successful probe halves the gap: the next probe comes sooner.
        h.success(2005, ms(300), Pace::FirstByte, true);
        let mut now = 2005;
        let mut probes = 0;
        loop {
            match h.standing(now) {
                Standing::Healthy => break,
                Standing::Probe => {
                    h.success(now, ms(300), Pace::FirstByte, true);
                    probes += 1;
                }
                Standing::Degraded { .. } => {}
            }
            now += 10;
            assert!(now < 60_000, "never recovered");
        }
        assert!(now < 2005 + 10_000, "recovered in {} ms after {probes} probes", now - 2005);
        // A failed probe keeps it out and resets the gap.
        let h = health();
        for i in 0..3 {
            h.failure(i, false);
        }
        assert_eq!(h.standing(2003), Standing::Probe);
        h.failure(2003, true);
        assert!(matches!(h.standing(3000), Standing::Degraded { .. }));
        assert_eq!(h.standing(4003), Standing::Probe);
    }

    #[test]
    fn failures_leave_the_window_with_time_and_retracted_ones_do_not_count() {
        let h = health();
        let tokens: Vec<Token> = (0..3).filter_map(|i| h.failure(i, false)).collect();
        assert_ne!(h.standing(5), Standing::Healthy);
        assert_eq!(h.standing(30_010), Standing::Healthy, "30 s later the window is empty");
        let h = health();
        let tokens2: Vec<Token> = (0..3).filter_map(|i| h.failure(i, false)).collect();
        h.retract(tokens2[2], 3);
        assert_eq!(h.standing(4), Standing::Healthy, "two failures are a blip");
        assert_eq!(tokens.len(), 3);
    }

    #[test]
    fn slow_answers_weigh_like_failures_once_the_usual_latency_is_known() {
        let h = health();
        for i in 0..6 {
            h.success(i, ms(300), Pace::FirstByte, false);
        }
        h.success(6, ms(1200), Pace::FirstByte, false);
        assert_eq!(h.standing(7), Standing::Healthy, "4x the usual latency is not slow");
        for i in 10..13 {
            h.success(i, ms(3000), Pace::FirstByte, false);
        }
        assert_ne!(h.standing(14), Standing::Healthy, "3 of 10 far slower than usual");
        assert!(h.view(14).usual_first_byte_ms.unwrap() < 500.0, "slow answers barely move the usual latency");
        // Complete answers are judged per output token: a long generation is not a slow provider.
        let h = health();
        for i in 0..6 {
            h.success(i, ms(300), Pace::Complete { output_tokens: 10 }, false);
        }
        for i in 6..10 {
            h.success(i, ms(20_000), Pace::Complete { output_tokens: 2000 }, false);
        }
        assert_eq!(h.standing(11), Standing::Healthy, "long answers at the usual pace");
        for i in 11..14 {
            h.success(i, ms(3000), Pace::Complete { output_tokens: 10 }, false);
        }
        assert_ne!(h.standing(15), Standing::Healthy, "short answers ten times slower than usual");
        // A slow probe is a failed one: probes stay at the interval instead of speeding up, and a provider
        // that stays slow stays degraded.
        let mut now = 15;
        let mut probes = Vec::new();
        while now < 20_000 {
            if h.standing(now) == Standing::Probe {
                probes.push(now);
                h.success(now, ms(3000), Pace::Complete { output_tokens: 10 }, true);
            }
            now += 10;
        }
        assert!(probes.windows(2).all(|w| w[1] - w[0] >= 2000), "probes every interval: {probes:?}");
        assert_ne!(h.standing(now), Standing::Healthy, "still slow, still degraded");
        // Disabled: always healthy.
        let off = Health::new("p".into(), HealthPolicy { enabled: false, ..HealthPolicy::default() });
        for i in 0..10 {
            off.failure(i, false);
        }
        assert_eq!(off.standing(11), Standing::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_follows_paused_time() {
        let c = Clock::new();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(c.now_ms(), 5000);
    }

    #[tokio::test]
    async fn limiter_refuses_a_full_queue_at_once() {
        let l = Limiter::new(OverloadPolicy { max_in_flight: 1, max_queue: 1 });
        let held = l.acquire(Duration::from_secs(1)).await.unwrap();
        assert_eq!(l.acquire(Duration::from_millis(20)).await.unwrap_err(), LimitError::Deadline);
        assert_eq!(l.in_flight(), 1);
        drop(held);
        assert!(l.acquire(Duration::from_millis(20)).await.is_ok());
        // A waiter that is dropped (its client left) gives its queue place back.
        let waiter = tokio::spawn(async {
            let l = Arc::new(Limiter::new(OverloadPolicy { max_in_flight: 1, max_queue: 1 }));
            let held = l.acquire(Duration::from_secs(1)).await.unwrap();
            let l2 = l.clone();
            let queued = tokio::spawn(async move { l2.acquire(Duration::from_secs(60)).await.map(drop) });
            while l.waiting() == 0 {
                tokio::task::yield_now().await;
            }
            queued.abort();
            let _ = queued.await;
            drop(held);
            l
        });
        let l = waiter.await.unwrap();
        assert_eq!(l.waiting(), 0, "the aborted waiter's place was given back");
        assert!(l.acquire(Duration::from_millis(20)).await.is_ok());
        let l0 = Limiter::new(OverloadPolicy { max_in_flight: 1, max_queue: 0 });
        let _p = l0.acquire(Duration::from_secs(1)).await.unwrap();
        assert_eq!(l0.acquire(Duration::from_secs(5)).await.unwrap_err(), LimitError::QueueFull);
    }

    #[test]
    fn p95_and_hedge_budget() {
        let l = Latency::default();
        assert!(l.p95(10).is_none());
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.p95(10), Some(Duration::from_millis(95)));
        let b = HedgeBudget::default();
        let mut hedged = 0;
        for _ in 0..1000 {
            b.earn(0.1);
            hedged += usize::from(b.try_spend());
        }
        assert!((95..=100).contains(&hedged), "{hedged}");
    }
}
