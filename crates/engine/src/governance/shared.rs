//! Counters shared by several gateway replicas (Redis), so that a budget or rate limit holds across all of
//! them instead of once per replica.
//!
//! The engine knows no Redis: [`SharedCounters`] is what it needs (one atomic call to reserve on every meter
//! of a request at once, one to settle a batch of requests), and the `switchyard-store` crate implements it.
//! [`Shared`] wraps an implementation with the gateway's side of the contract:
//! - every call is bounded by a timeout, so a hung Redis costs a request at most that, and after a failure
//!   the next calls skip Redis for a moment instead of each paying the timeout;
//! - settling never waits: settlements are queued to one task that sends them in batches and keeps them,
//!   bounded, while Redis is unreachable, so what was used is not lost;
//! - what happens while Redis is unreachable is a policy ([`WhenUnreachable`]): serve on the process's own
//!   counters (default) or refuse with 503 `counters_unavailable`.
//!
//! The local meters mirror the last use Redis reported, so that serving on them during an outage resumes
//! from there rather than from zero.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::meter::Measure;
use crate::config::{SharedCountersConfig, WhenUnreachable};

pub type CounterFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, CounterError>> + Send + 'a>>;

/// Redis could not be reached, or answered something this gateway cannot read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("shared counters unavailable while {what}: {message}")]
pub struct CounterError {
    pub what: &'static str,
    pub message: String,
}

/// One meter of a reservation.
#[derive(Debug, Clone)]
pub struct Want {
    /// The meter's stable name (`vk:<handle>:budget`, ...): the same in every replica and every version.
    pub name: String,
    pub measure: Measure,
    pub limit: f64,
    pub amount: f64,
    /// The window's length and alignment as text; a different one starts a new window.
    pub period: String,
    /// The window that contains now, should the stored one be over (or absent); `None`: never resets.
    pub next_window: Option<(i64, i64)>,
}

/// A meter's state as the shared store saw it during the call.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Seen {
    pub used: f64,
    pub reserved: f64,
    pub window: Option<(i64, i64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every meter reserved: the amount granted on each (in `wants` order) and what each showed after.
    Held { grants: Vec<f64>, seen: Vec<Seen> },
    /// The request would fit once reservations in flight settle: wait on meter `index`.
    Wait { index: usize, seen: Seen },
    /// No room on meter `index`.
    Full { index: usize, seen: Seen },
}

/// One meter's part of a settlement.
#[derive(Debug, Clone)]
pub struct SettlePart {
    pub name: String,
    pub measure: Measure,
    /// What was used, added to the meter (nothing for concurrency).
    pub used: f64,
    pub period: String,
    pub next_window: Option<(i64, i64)>,
}

/// The settlement of one reservation, or (`local`) of use counted while Redis was unreachable, with no
/// reservation there. Applying one twice changes nothing: a call that timed out may have run, and is sent
/// again. A reservation's use is added only if the reservation is still there (released once); a local
/// one's `id` is remembered for a day.
#[derive(Debug, Clone)]
pub struct Settlement {
    pub id: String,
    pub local: bool,
    pub parts: Vec<SettlePart>,
}

/// What the engine needs from a shared counter store.
pub trait SharedCounters: Send + Sync {
    /// Atomically: on every meter roll an ended window, let go of reservations whose lease ran out, then
    /// either reserve on all of them (under `id`, until `lease_until_ms`) or on none.
    fn reserve<'a>(&'a self, id: &'a str, wants: &'a [Want], now_ms: i64, lease_until_ms: i64) -> CounterFuture<'a, Outcome>;
    /// Releases each settlement's reservation and adds what was used, all in one call.
    fn settle<'a>(&'a self, batch: &'a [Settlement], now_ms: i64) -> CounterFuture<'a, ()>;
    /// Where the counters live, for logs (no secret).
    fn describe(&self) -> String;
}

/// Settlements kept while Redis is unreachable; beyond this the oldest are dropped (and counted).
const BACKLOG: usize = 100_000;
/// Settlements sent in one call.
const BATCH: usize = 500;
/// After a failed call, how long requests use the fallback before Redis is tried again.
const BACKOFF: Duration = Duration::from_secs(1);

pub struct Shared {
    counters: Arc<dyn SharedCounters>,
    pub(crate) timeout: Duration,
    pub(crate) lease: Duration,
    pub(crate) when_unreachable: WhenUnreachable,
    /// Unix ms before which Redis is not tried again.
    down_until: AtomicI64,
    up: AtomicBool,
    tx: mpsc::UnboundedSender<Settlement>,
    /// Settlements queued and not yet sent.
    pending: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shared({})", self.counters.describe())
    }
}

impl Shared {
    /// Starts the settling task; it ends once every `Shared` is dropped and its queue is sent (or, with Redis
    /// unreachable, after `drain` at shutdown).
    pub fn start(counters: Arc<dyn SharedCounters>, cfg: &SharedCountersConfig) -> (Arc<Shared>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            counters,
            timeout: cfg.timeout,
            lease: cfg.lease,
            when_unreachable: cfg.when_unreachable,
            down_until: AtomicI64::new(0),
            up: AtomicBool::new(true),
            tx,
            pending: Arc::new(AtomicUsize::new(0)),
        });
        metrics::gauge!("switchyard_shared_counters_up").set(1.0);
        let task = tokio::spawn(settle_loop(
            Arc::downgrade(&shared),
            Arc::clone(&shared.counters),
            shared.timeout,
            Arc::clone(&shared.pending),
            rx,
        ));
        (shared, task)
    }

    pub fn describe(&self) -> String {
        self.counters.describe()
    }

    /// Sets the `switchyard_shared_counters_up` gauge to the current state (for a metrics recorder
    /// installed after the start).
    pub fn publish(&self) {
        metrics::gauge!("switchyard_shared_counters_up").set(f64::from(u8::from(self.up.load(Ordering::Relaxed))));
    }

    /// Whether Redis is being skipped after a failure.
    pub(crate) fn skipping(&self, now_ms: i64) -> bool {
        now_ms < self.down_until.load(Ordering::Relaxed)
    }

    pub(crate) fn failed(&self, op: &'static str, e: &CounterError, now_ms: i64) {
        metrics::counter!("switchyard_shared_counters_errors_total", "op" => op).increment(1);
        self.down_until.store(now_ms + BACKOFF.as_millis() as i64, Ordering::Relaxed);
        if self.up.swap(false, Ordering::Relaxed) {
            metrics::gauge!("switchyard_shared_counters_up").set(0.0);
            let then = match self.when_unreachable {
                WhenUnreachable::Local => "metered requests are served on this process's own counters until it is back",
                WhenUnreachable::Refuse => "metered requests are refused (503 counters_unavailable) until it is back",
            };
            tracing::warn!("the shared counters at {} cannot be reached ({e}); {then}", self.counters.describe());
        }
    }

    pub(crate) fn answered(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            metrics::gauge!("switchyard_shared_counters_up").set(1.0);
            tracing::info!("the shared counters at {} answer again", self.counters.describe());
        }
    }

    pub(crate) async fn reserve(&self, id: &str, wants: &[Want], now_ms: i64) -> Result<Outcome, CounterError> {
        let lease_until = now_ms + self.lease.as_millis() as i64;
        match tokio::time::timeout(self.timeout, self.counters.reserve(id, wants, now_ms, lease_until)).await {
            Ok(r) => r,
            Err(_) => Err(CounterError { what: "reserving", message: format!("no answer within {:?}", self.timeout) }),
        }
    }

    /// Queues a settlement; never waits.
    pub(crate) fn settle(&self, s: Settlement) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(s).is_err() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// At shutdown: waits, at most `within`, until every queued settlement has reached Redis. `false`: some
    /// could not be sent.
    pub async fn drain(&self, within: Duration) -> bool {
        let until = tokio::time::Instant::now() + within;
        while self.pending.load(Ordering::Relaxed) > 0 {
            if tokio::time::Instant::now() >= until {
                let left = self.pending.load(Ordering::Relaxed);
                tracing::error!("{left} settlements of the shared counters could not be sent to Redis before shutdown");
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

async fn settle_loop(
    shared: std::sync::Weak<Shared>,
    counters: Arc<dyn SharedCounters>,
    timeout: Duration,
    pending: Arc<AtomicUsize>,
    mut rx: mpsc::UnboundedReceiver<Settlement>,
) {
    let mut backlog: std::collections::VecDeque<Settlement> = std::collections::VecDeque::new();
    loop {
        if backlog.is_empty() {
            match rx.recv().await {
                Some(s) => backlog.push_back(s),
                None => return,
            }
        }
        while let Ok(s) = rx.try_recv() {
            backlog.push_back(s);
        }
        if backlog.len() > BACKLOG {
            let dropped = backlog.len() - BACKLOG;
            backlog.drain(..dropped);
            pending.fetch_sub(dropped, Ordering::Relaxed);
            metrics::counter!("switchyard_shared_counters_settlements_dropped_total").increment(dropped as u64);
            tracing::error!("{dropped} settlements of the shared counters were dropped: Redis has been unreachable too long");
        }
        let n = backlog.len().min(BATCH);
        let batch: Vec<Settlement> = backlog.iter().take(n).cloned().collect();
        let now = super::meter::now_ms();
        let r = match tokio::time::timeout(timeout, counters.settle(&batch, now)).await {
            Ok(r) => r,
            Err(_) => Err(CounterError { what: "settling", message: format!("no answer within {timeout:?}") }),
        };
        match r {
            Ok(()) => {
                backlog.drain(..n);
                pending.fetch_sub(n, Ordering::Relaxed);
                if let Some(s) = shared.upgrade() {
                    s.answered();
                }
            }
            Err(e) => {
                if let Some(s) = shared.upgrade() {
                    s.failed("settle", &e, now);
                }
                // Kept, in order; tried again after a pause, with whatever arrived meanwhile.
                tokio::time::sleep(BACKOFF).await;
                if shared.strong_count() == 0 {
                    tracing::error!("{} settlements of the shared counters could not be sent before shutdown", backlog.len());
                    return;
                }
            }
        }
    }
}
