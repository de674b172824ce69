//! The retry policy as pure functions: from what just happened (a failure class, the time left, what the
//! other targets did) to what happens next. No I/O and no clock: the executor feeds in facts and carries out
//! the answer, so each rule is unit-tested on its own.
//!
//! The shape of a request's walk, which these rules decide:
//! - A key-specific failure (429, 401/403, quota) cools that key and rotates to another key of the same
//!   target at once.
//! - A transient failure (5xx, 529, reset, timeout, unreadable answer) moves to the next target at once; the
//!   same target is tried again only in a later *round*, after every target of the plan has had its turn
//!   and a backoff, while its retry policy allows.
//! - A caller fault is returned at once (or falls back, if the route says so); a context-length error goes
//!   to the context fallbacks.
//! - A self-hosted server that lacks the model (not pulled, started with another) moves to the next target
//!   at once and is not tried again: asking again will not pull it. It touches neither health nor keys.
//! - When a round ends with every target rate-limited, the request waits once for the soonest reset, if
//!   that is short (`routing.max_key_wait`) and inside the deadline; otherwise it answers 429 at once. A
//!   rejected key or an exhausted quota is never waited on.

use std::time::Duration;

use crate::config::{CooldownPolicy, RetryPolicy};
use crate::error::FailureClass;
use crate::health::CooldownReason;

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Cool the key down this long and try another key of the same target at once.
    RotateKey { cooldown: Duration, reason: CooldownReason },
    /// Go on to the next target.
    NextTarget,
    /// The prompt is too long for this target: go to the context fallbacks.
    ContextFallback,
    /// Return the upstream's own error to the caller.
    Stop,
}

pub fn after_failure(
    class: FailureClass,
    retry_after: Option<Duration>,
    cooldown: &CooldownPolicy,
    fallback_on_caller_fault: bool,
) -> AfterFailure {
    use FailureClass as C;
    match class {
        C::RateLimited => {
            AfterFailure::RotateKey { cooldown: retry_after.unwrap_or(cooldown.rate_limited), reason: CooldownReason::RateLimited }
        }
        C::KeyInvalid => AfterFailure::RotateKey { cooldown: cooldown.key_invalid, reason: CooldownReason::KeyInvalid },
        C::QuotaExhausted => AfterFailure::RotateKey { cooldown: cooldown.quota_exhausted, reason: CooldownReason::QuotaExhausted },
        C::ContextTooLong => AfterFailure::ContextFallback,
        C::CallerFault if !fallback_on_caller_fault => AfterFailure::Stop,
        // Every target is metered on the same counters: none could be reserved.
        C::CountersUnavailable => AfterFailure::Stop,
        C::CallerFault
        | C::ModelNotFound
        | C::Transient
        | C::Timeout
        | C::Malformed
        | C::TooLarge
        | C::Unsupported
        | C::Degraded
        | C::Overloaded
        | C::BudgetExceeded
        | C::LimitReached => AfterFailure::NextTarget,
    }
}

/// May a target whose last attempt failed with `class` be tried again in the next round, after `retries`
/// rounds of retries?
pub fn may_retry(class: FailureClass, retries: u32, policy: &RetryPolicy) -> bool {
    matches!(class, FailureClass::Transient | FailureClass::Timeout | FailureClass::Malformed) && retries < policy.max_retries
}

/// How a round over the plan ended without an answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundEnd {
    /// Rounds of retries already made.
    pub retries: u32,
    /// Some target may be tried again ([`may_retry`]).
    pub retryable: bool,
    /// Every failure in the round was a rate limit (sent, or every key of the target cooling for one).
    pub only_rate_limited: bool,
    /// The soonest a rate-limited key resets, from now.
    pub soonest_reset: Option<Duration>,
    /// The request already waited once for a key.
    pub waited: bool,
    /// Time left before the request's deadline.
    pub remaining: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRound {
    /// Sleep this long, then try the retryable targets again.
    Retry(Duration),
    /// Sleep until the soonest rate-limited key resets, then try those targets again.
    WaitForKey(Duration),
    /// Answer with the summary error.
    GiveUp,
}

/// `jitter` in [0, 1) spreads the backoff (see [`RetryPolicy::backoff_at`]).
pub fn after_round(r: &RoundEnd, policy: &RetryPolicy, max_key_wait: Duration, jitter: f64) -> AfterRound {
    if r.only_rate_limited {
        return match r.soonest_reset {
            Some(d) if !r.waited && d <= max_key_wait && d < r.remaining => AfterRound::WaitForKey(d),
            _ => AfterRound::GiveUp,
        };
    }
    if r.retryable {
        let pause = policy.backoff_at(r.retries + 1, jitter);
        if pause < r.remaining {
            return AfterRound::Retry(pause);
        }
    }
    AfterRound::GiveUp
}

/// Was a failed attempt the request's own fault rather than the provider's? Yes when the request failed
/// everywhere, more than once (a retry or another target failed it too), while other requests succeeded
/// on this provider recently. Then the failure is taken back from the provider's health.
pub fn request_caused(request_succeeded: bool, failed_attempts: usize, provider_recently_succeeded: bool) -> bool {
    !request_succeeded && failed_attempts >= 2 && provider_recently_succeeded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end() -> RoundEnd {
        RoundEnd {
            retries: 0,
            retryable: true,
            only_rate_limited: false,
            soonest_reset: None,
            waited: false,
            remaining: Duration::from_secs(600),
        }
    }

    #[test]
    fn key_failures_rotate_and_cool_for_their_own_time() {
        let c = CooldownPolicy::default();
        let ra = Some(Duration::from_millis(1500));
        assert_eq!(
            after_failure(FailureClass::RateLimited, ra, &c, false),
            AfterFailure::RotateKey { cooldown: Duration::from_millis(1500), reason: CooldownReason::RateLimited }
        );
        assert_eq!(
            after_failure(FailureClass::RateLimited, None, &c, false),
            AfterFailure::RotateKey { cooldown: c.rate_limited, reason: CooldownReason::RateLimited }
        );
        // A rejected key or an empty quota ignores Retry-After: it will not heal by itself.
        assert_eq!(
            after_failure(FailureClass::KeyInvalid, ra, &c, false),
            AfterFailure::RotateKey { cooldown: c.key_invalid, reason: CooldownReason::KeyInvalid }
        );
        assert_eq!(
            after_failure(FailureClass::QuotaExhausted, ra, &c, false),
            AfterFailure::RotateKey { cooldown: c.quota_exhausted, reason: CooldownReason::QuotaExhausted }
        );
    }

    #[test]
    fn caller_faults_stop_unless_the_route_falls_back_and_transients_move_on() {
        let c = CooldownPolicy::default();
        assert_eq!(after_failure(FailureClass::CallerFault, None, &c, false), AfterFailure::Stop);
        assert_eq!(after_failure(FailureClass::CallerFault, None, &c, true), AfterFailure::NextTarget);
        assert_eq!(after_failure(FailureClass::ContextTooLong, None, &c, true), AfterFailure::ContextFallback);
        for class in
            [FailureClass::Transient, FailureClass::Timeout, FailureClass::Malformed, FailureClass::Overloaded, FailureClass::ModelNotFound]
        {
            assert_eq!(after_failure(class, None, &c, false), AfterFailure::NextTarget, "{class:?}");
        }
    }

    #[test]
    fn only_server_side_failures_are_retried_and_only_while_the_policy_allows() {
        let p = RetryPolicy::default();
        assert!(may_retry(FailureClass::Transient, 0, &p));
        assert!(!may_retry(FailureClass::Transient, 1, &p), "default: one retry");
        for class in [
            FailureClass::RateLimited,
            FailureClass::KeyInvalid,
            FailureClass::QuotaExhausted,
            FailureClass::CallerFault,
            FailureClass::ModelNotFound,
        ] {
            assert!(!may_retry(class, 0, &p), "{class:?}");
        }
    }

    #[test]
    fn rounds_retry_with_growing_backoff_inside_the_deadline() {
        let p = RetryPolicy { max_retries: 3, initial_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(2) };
        assert_eq!(after_round(&end(), &p, Duration::from_secs(3), 0.0), AfterRound::Retry(Duration::from_millis(50)));
        let second = RoundEnd { retries: 1, ..end() };
        assert_eq!(after_round(&second, &p, Duration::from_secs(3), 0.999), AfterRound::Retry(Duration::from_micros(199_900)));
        let late = RoundEnd { remaining: Duration::from_millis(40), ..end() };
        assert_eq!(after_round(&late, &p, Duration::from_secs(3), 0.0), AfterRound::GiveUp, "no sleeping past the deadline");
        let spent = RoundEnd { retryable: false, ..end() };
        assert_eq!(after_round(&spent, &p, Duration::from_secs(3), 0.0), AfterRound::GiveUp);
    }

    #[test]
    fn rate_limits_are_waited_for_only_briefly_and_once() {
        let p = RetryPolicy::default();
        let limited = RoundEnd { only_rate_limited: true, retryable: false, soonest_reset: Some(Duration::from_secs(1)), ..end() };
        let max = Duration::from_secs(3);
        assert_eq!(after_round(&limited, &p, max, 0.5), AfterRound::WaitForKey(Duration::from_secs(1)));
        assert_eq!(after_round(&RoundEnd { waited: true, ..limited }, &p, max, 0.5), AfterRound::GiveUp, "once");
        let long = RoundEnd { soonest_reset: Some(Duration::from_secs(7)), ..limited };
        assert_eq!(after_round(&long, &p, max, 0.5), AfterRound::GiveUp, "a 7 s reset is the caller's to wait for");
        let unknown = RoundEnd { soonest_reset: None, ..limited };
        assert_eq!(after_round(&unknown, &p, max, 0.5), AfterRound::GiveUp);
        let tight = RoundEnd { remaining: Duration::from_millis(900), ..limited };
        assert_eq!(after_round(&tight, &p, max, 0.5), AfterRound::GiveUp, "inside the deadline only");
    }

    #[test]
    fn a_failure_everywhere_while_others_succeed_is_the_requests() {
        assert!(request_caused(false, 2, true));
        assert!(!request_caused(false, 1, true), "one failure proves nothing about the request");
        assert!(!request_caused(false, 3, false), "nobody succeeds there: the provider's");
        assert!(!request_caused(true, 2, true), "served elsewhere: the failed provider's");
    }
}
