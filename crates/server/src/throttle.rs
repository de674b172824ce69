//! Rate-limited warnings for limits that hostile traffic hits over and over.
//!
//! An operator must learn that a limit is being hit, but a flood of slow or refused connections must not
//! become a flood of log lines (that would be a second way to hurt the host). Each kind of event gets one
//! [`Throttled`]: the first hit logs at once, later ones at most once per [`WINDOW`], with the count of
//! the hits that were not logged in between. Every hit also counts in
//! `switchyard_server_limit_hits_total{limit}`, so the rate is visible even while the log is quiet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// At most one line per kind of event in this window.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

pub(crate) struct Throttled {
    /// The metric label: which limit (a fixed name, never caller input).
    limit: &'static str,
    /// Milliseconds since [`origin`] before which nothing is logged; 0 before the first hit.
    next_ms: AtomicU64,
    /// Hits since the last logged one.
    suppressed: AtomicU64,
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Throttled {
    pub(crate) const fn new(limit: &'static str) -> Self {
        Throttled { limit, next_ms: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// Records a hit. `Some(n)` when this one should be logged, `n` being the hits not logged since the
    /// previous line.
    pub(crate) fn hit(&self) -> Option<u64> {
        metrics::counter!("switchyard_server_limit_hits_total", "limit" => self.limit).increment(1);
        // +1 so that a hit in the process's first millisecond is not mistaken for "never logged".
        let now = origin().elapsed().as_millis() as u64 + 1;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next && self.next_ms.compare_exchange(next, now + WINDOW.as_millis() as u64, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// " (N more since the last report)" or nothing.
pub(crate) fn more(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more since the last report)")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn first_hit_logs_then_the_window_counts() {
        let t = Throttled::new("test");
        assert_eq!(t.hit(), Some(0));
        assert_eq!(t.hit(), None);
        assert_eq!(t.hit(), None);
        assert_eq!(t.suppressed.load(Ordering::Relaxed), 2);
        // Open the window by hand instead of waiting ten seconds.
        t.next_ms.store(1, Ordering::Relaxed);
        assert_eq!(t.hit(), Some(2));
        assert_eq!(more(0), "");
        assert_eq!(more(3), " (3 more since the last report)");
    }
}
