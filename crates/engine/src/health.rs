//! What the gateway knows about each upstream's health, and the rules that keep traffic away from trouble:
//! circuit breakers per provider and per key, key cooldowns after 429/401, a bounded number of in-flight
//! requests per provider, observed first-byte latencies (for hedging), and the hedge budget.
//!
//! Every piece is per provider or per key, so there is no global lock: a breaker takes its own small mutex
//! only to record an outcome or to check its state, and the limiter is a semaphore.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{BreakerPolicy, OverloadPolicy};

/// Milliseconds on the gateway's own monotonic clock (shared by every health structure).
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
    // A panic while holding a breaker's lock leaves only counters behind; they are still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until_ms: u64 },
    HalfOpen { successes: u32, probes: u32 },
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    second: u64,
    total: u32,
    failures: u32,
}

#[derive(Debug)]
struct Inner {
    state: State,
    buckets: Vec<Bucket>,
    consecutive: u32,
    opened: u64,
}

/// A circuit breaker: closed (traffic flows), open (refused, fail fast), half-open (a share of traffic
/// probes; enough successes close it, one failure opens it again).
#[derive(Debug)]
pub struct Breaker {
    /// `provider` or `provider/key`, for logs.
    name: String,
    policy: BreakerPolicy,
    inner: Mutex<Inner>,
}

/// Permission to send one request through a breaker. Report the outcome with [`Permit::record`]; a permit
/// dropped without an outcome (a cancelled hedge, a client that left) releases its probe slot and changes
/// nothing else.
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    done: bool,
}

/// How an attempt counts for health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A failure that says something about the upstream (transient, timeout, malformed).
    Failure,
    /// Says nothing about the upstream's health (a caller fault, a rate limit on one key).
    Neutral,
}

impl Permit<'_> {
    pub fn record(mut self, clock: &Clock, outcome: Outcome) {
        self.done = true;
        self.breaker.record(clock.now_ms(), outcome, self.probe);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done && self.probe {
            let mut g = lock(&self.breaker.inner);
            if let State::HalfOpen { probes, .. } = &mut g.state {
                *probes = probes.saturating_sub(1);
            }
        }
    }
}

/// The breaker's state as shown at `/api/health/providers`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BreakerView {
    pub state: &'static str,
    pub requests_in_window: u32,
    pub failures_in_window: u32,
    pub consecutive_failures: u32,
    /// While open: milliseconds until probes are let through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opens_probes_in_ms: Option<u64>,
    pub times_opened: u64,
}

impl Breaker {
    pub fn new(name: String, policy: BreakerPolicy) -> Self {
        let n = policy.window.as_secs().max(1) as usize;
        Breaker {
            name,
            policy,
            inner: Mutex::new(Inner { state: State::Closed, buckets: vec![Bucket::default(); n], consecutive: 0, opened: 0 }),
        }
    }

    /// May a request go through now? `Err(ms)`: no, and probes start in `ms`.
    pub fn admit(&self, now_ms: u64, rng: &mut fastrand::Rng) -> Result<Permit<'_>, u64> {
        if !self.policy.enabled {
            return Ok(Permit { breaker: self, probe: false, done: false });
        }
        let mut g = lock(&self.inner);
        if let State::Open { until_ms } = g.state {
            if now_ms < until_ms {
                return Err(until_ms - now_ms);
            }
            tracing::info!(breaker = %self.name, "circuit half-open: letting probes through");
            g.state = State::HalfOpen { successes: 0, probes: 0 };
        }
        match &mut g.state {
            State::Closed => Ok(Permit { breaker: self, probe: false, done: false }),
            State::HalfOpen { probes, .. } => {
                // The first request always probes; more only at the configured share, a few at a time.
                if *probes == 0 || (*probes < 8 && rng.f64() < self.policy.half_open_share) {
                    *probes += 1;
                    Ok(Permit { breaker: self, probe: true, done: false })
                } else {
                    Err(100)
                }
            }
            State::Open { .. } => Err(0),
        }
    }

    fn record(&self, now_ms: u64, outcome: Outcome, probe: bool) {
        let p = &self.policy;
        let mut g = lock(&self.inner);
        if probe {
            if let State::HalfOpen { probes, .. } = &mut g.state {
                *probes = probes.saturating_sub(1);
            }
        }
        if outcome == Outcome::Neutral {
            return;
        }
        let failed = outcome == Outcome::Failure;
        let second = now_ms / 1000;
        let n = g.buckets.len();
        let b = &mut g.buckets[(second as usize) % n];
        if b.second != second {
            *b = Bucket { second, total: 0, failures: 0 };
        }
        b.total += 1;
        b.failures += u32::from(failed);
        g.consecutive = if failed { g.consecutive + 1 } else { 0 };

        match g.state {
            State::HalfOpen { successes, probes } if probe => {
                if failed {
                    self.open(&mut g, now_ms, "a probe failed");
                } else if successes + 1 >= p.half_open_successes {
                    tracing::info!(breaker = %self.name, "circuit closed: probes succeeded");
                    metrics::gauge!("switchyard_circuit_open", "breaker" => self.name.clone()).set(0.0);
                    g.state = State::Closed;
                    g.consecutive = 0;
                    g.buckets.iter_mut().for_each(|b| *b = Bucket::default());
                } else {
                    g.state = State::HalfOpen { successes: successes + 1, probes };
                }
            }
            State::Closed if failed => {
                let (total, failures) = window_totals(&g.buckets, second, n as u64);
                let rate_trips = total >= p.min_requests && f64::from(failures) >= p.failure_rate * f64::from(total);
                let streak_trips = p.consecutive_failures > 0 && g.consecutive >= p.consecutive_failures;
                if rate_trips || streak_trips {
                    let why = if streak_trips {
                        format!("{} consecutive failures", g.consecutive)
                    } else {
                        format!("{failures} of {total} requests failed in {:?}", p.window)
                    };
                    self.open(&mut g, now_ms, &why);
                }
            }
            _ => {}
        }
    }

    fn open(&self, g: &mut Inner, now_ms: u64, why: &str) {
        tracing::warn!(breaker = %self.name, open_for = ?self.policy.open_for, "circuit opened: {why}");
        metrics::gauge!("switchyard_circuit_open", "breaker" => self.name.clone()).set(1.0);
        metrics::counter!("switchyard_circuit_opened_total", "breaker" => self.name.clone()).increment(1);
        g.state = State::Open { until_ms: now_ms + self.policy.open_for.as_millis() as u64 };
        g.opened += 1;
    }

    pub fn view(&self, now_ms: u64) -> BreakerView {
        let g = lock(&self.inner);
        let n = g.buckets.len() as u64;
        let (total, failures) = window_totals(&g.buckets, now_ms / 1000, n);
        let (state, opens) = match g.state {
            State::Closed => ("closed", None),
            State::Open { until_ms } if now_ms < until_ms => ("open", Some(until_ms - now_ms)),
            State::Open { .. } | State::HalfOpen { .. } => ("half_open", None),
        };
        BreakerView {
            state,
            requests_in_window: total,
            failures_in_window: failures,
            consecutive_failures: g.consecutive,
            opens_probes_in_ms: opens,
            times_opened: g.opened,
        }
    }
}

fn window_totals(buckets: &[Bucket], second: u64, n: u64) -> (u32, u32) {
    buckets
        .iter()
        .filter(|b| b.total > 0 && b.second + n > second && b.second <= second)
        .fold((0, 0), |(t, f), b| (t + b.total, f + b.failures))
}

/// Why a key is sitting out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CooldownReason {
    RateLimited,
    KeyInvalid,
}

/// One key's health: its breaker and its cooldown.
#[derive(Debug)]
pub struct KeyHealth {
    pub breaker: Breaker,
    /// Clock ms until which the key is not used (0: none).
    until_ms: AtomicU64,
    reason: Mutex<Option<CooldownReason>>,
}

impl KeyHealth {
    pub fn new(name: String, policy: BreakerPolicy) -> Self {
        KeyHealth { breaker: Breaker::new(name, policy), until_ms: AtomicU64::new(0), reason: Mutex::new(None) }
    }

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

    /// A success clears a cooldown that has run out (the key recovered).
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
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.policy.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitError::QueueFull);
        }
        let r = tokio::time::timeout(wait, self.sem.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match r {
            Ok(Ok(p)) => Ok(p),
            // The semaphore is never closed; treat it like a timeout if it ever were.
            Ok(Err(_)) | Err(_) => Err(LimitError::Deadline),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.policy.max_in_flight - self.sem.available_permits()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
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

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            enabled: true,
            window: Duration::from_secs(10),
            min_requests: 10,
            failure_rate: 0.5,
            consecutive_failures: 0,
            open_for: Duration::from_secs(5),
            half_open_share: 0.5,
            half_open_successes: 2,
        }
    }

    fn outcome(b: &Breaker, now: u64, o: Outcome, rng: &mut fastrand::Rng) -> bool {
        match b.admit(now, rng) {
            Ok(p) => {
                p.record_at(now, o);
                true
            }
            Err(_) => false,
        }
    }

    impl Permit<'_> {
        fn record_at(mut self, now: u64, o: Outcome) {
            self.done = true;
            self.breaker.record(now, o, self.probe);
        }
    }

    #[test]
    fn opens_on_error_rate_fails_fast_then_probes_and_closes() {
        let b = Breaker::new("p".into(), policy());
        let mut rng = fastrand::Rng::with_seed(7);
        for i in 0..9 {
            assert!(outcome(&b, 1000 + i, if i % 2 == 0 { Outcome::Failure } else { Outcome::Success }, &mut rng));
        }
        assert_eq!(b.view(1010).state, "closed", "fewer than min_requests");
        // The tenth request reaches min_requests with 6 of 10 failed: open.
        assert!(outcome(&b, 1010, Outcome::Failure, &mut rng));
        assert_eq!(b.view(1011).state, "open");
        assert!(b.admit(2000, &mut rng).is_err(), "open: fail fast");
        // After open_for, one probe at least goes through; two successes close it.
        let now = 1010 + 5000;
        assert!(outcome(&b, now, Outcome::Success, &mut rng));
        assert_eq!(b.view(now).state, "half_open");
        let mut closed = false;
        for i in 0..50 {
            outcome(&b, now + i, Outcome::Success, &mut rng);
            if b.view(now + i).state == "closed" {
                closed = true;
                break;
            }
        }
        assert!(closed);
    }

    #[test]
    fn a_failed_probe_reopens_and_neutral_outcomes_do_not_count() {
        let mut p = policy();
        p.consecutive_failures = 3;
        let b = Breaker::new("p".into(), p);
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..20 {
            outcome(&b, 100, Outcome::Neutral, &mut rng);
        }
        assert_eq!(b.view(100).state, "closed");
        for _ in 0..3 {
            outcome(&b, 200, Outcome::Failure, &mut rng);
        }
        assert_eq!(b.view(200).state, "open", "three in a row");
        assert!(outcome(&b, 5300, Outcome::Failure, &mut rng));
        assert_eq!(b.view(5300).state, "open");
        assert_eq!(b.view(5300).times_opened, 2);
    }

    #[test]
    fn a_dropped_probe_frees_its_slot() {
        let b = Breaker::new("p".into(), BreakerPolicy { consecutive_failures: 1, ..policy() });
        let mut rng = fastrand::Rng::with_seed(2);
        outcome(&b, 0, Outcome::Failure, &mut rng);
        let first = b.admit(5000, &mut rng).unwrap();
        drop(first);
        assert!(b.admit(5000, &mut rng).is_ok(), "the slot came back");
    }

    #[test]
    fn old_buckets_leave_the_window() {
        let b = Breaker::new("p".into(), policy());
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..9 {
            outcome(&b, 0, Outcome::Failure, &mut rng);
        }
        // Eleven seconds later the old failures are gone: two new failures do not trip it.
        outcome(&b, 11_000, Outcome::Failure, &mut rng);
        outcome(&b, 11_000, Outcome::Failure, &mut rng);
        assert_eq!(b.view(11_000).state, "closed");
        assert_eq!(b.view(11_000).requests_in_window, 2);
    }

    #[tokio::test]
    async fn limiter_refuses_a_full_queue_at_once() {
        let l = Limiter::new(OverloadPolicy { max_in_flight: 1, max_queue: 1 });
        let held = l.acquire(Duration::from_secs(1)).await.unwrap();
        assert_eq!(l.acquire(Duration::from_millis(20)).await.unwrap_err(), LimitError::Deadline);
        assert_eq!(l.in_flight(), 1);
        drop(held);
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
