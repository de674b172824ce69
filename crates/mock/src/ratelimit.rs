//! The mock's rate limiter, as its answers report it. The mock enforces no limit; it only reports one, so
//! that clients and the gateway can be tested against realistic rate-limit headers. This module holds the
//! numbers every flavour shares (what a limit looks like after an answer, after a 429, how long a 429 says
//! to wait) and the two time formats the providers use; each flavour names the headers and picks the
//! responses that carry them as its provider does (see the crate docs, "Rate-limit headers").
//!
//! The model is the providers' own: a per-minute budget that refills continuously, so a limit is full again
//! `used / limit` of a minute after an answer used part of it. A 429 reports the limit it found used up with
//! nothing remaining and a reset equal to the wait that `retry-after` names (the `retry_after_secs` knob,
//! else [`DEFAULT_WAIT`]), so a client reading either header waits the same time.

use std::time::Duration;

use serde_json::Value;

use crate::common::{now_secs, rfc3339, Ctx};

/// The wait a 429 names when no `retry_after_secs` knob is set.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(1);

/// One limit as one answer reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limit {
    pub limit: u64,
    pub remaining: u64,
    /// Until the limit is full again.
    pub reset: Duration,
}

impl Limit {
    /// A per-minute limit after an answer that used `used` of it.
    pub fn after(limit: u64, used: u64) -> Limit {
        let used = used.min(limit);
        let nanos = u128::from(used) * 60_000_000_000 / u128::from(limit.max(1));
        Limit { limit, remaining: limit - used, reset: Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)) }
    }

    /// The limit a 429 found used up: nothing remains, and it frees up after `wait`.
    pub fn used_up(limit: u64, wait: Duration) -> Limit {
        Limit { limit, remaining: 0, reset: wait }
    }

    /// A limit the refused request did not touch.
    pub fn full(limit: u64) -> Limit {
        Limit { limit, remaining: limit, reset: Duration::ZERO }
    }

    /// The more restrictive of two limits (the smaller share left), as Anthropic's `tokens-*` reports.
    pub fn tighter(self, other: Limit) -> Limit {
        // remaining / limit, compared without division.
        let share = |l: &Limit, of: &Limit| u128::from(l.remaining) * u128::from(of.limit);
        if share(&other, &self) < share(&self, &other) {
            other
        } else {
            self
        }
    }
}

/// How long a 429 says to wait: the `retry_after_secs` knob, else [`DEFAULT_WAIT`].
pub(crate) fn wait(ctx: &Ctx) -> Duration {
    ctx.knobs.retry_after.map_or(DEFAULT_WAIT, Duration::from_secs)
}

/// The mock's estimate of the input tokens a request asks for: one per 4 bytes of body.
pub(crate) fn input_tokens(ctx: &Ctx) -> u64 {
    (ctx.raw.len() as u64).div_ceil(4)
}

/// The output budget the request asks for: the first of `fields` the body sets (0 when none is).
pub(crate) fn output_tokens(ctx: &Ctx, fields: &[&str]) -> u64 {
    let body = ctx.body.as_ref();
    fields.iter().find_map(|f| body.and_then(|b| b.get(*f)).and_then(Value::as_u64)).unwrap_or(0)
}

/// A duration as Go's `time.Duration` prints it, to the millisecond (rounded up): `0s`, `6ms`, `1s`,
/// `8.64s`, `1m30s`, `6m0s`, `1h0m0s`. OpenAI's `x-ratelimit-reset-*` values have this form.
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_string();
    }
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let (h, m, s_ms) = (ms / 3_600_000, (ms / 60_000) % 60, ms % 60_000);
    let secs = match s_ms % 1_000 {
        0 => (s_ms / 1_000).to_string(),
        frac => format!("{}.{}", s_ms / 1_000, format!("{frac:03}").trim_end_matches('0')),
    };
    match (h, m) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

/// The RFC 3339 time (whole seconds, UTC) `d` after the current second, `d` rounded up to whole seconds:
/// the form of Anthropic's `anthropic-ratelimit-*-reset`. A wait of N seconds gives the current second
/// plus N, so a client subtracting the current second from it gets exactly the `retry-after` value.
pub(crate) fn rfc3339_after(d: Duration) -> String {
    let secs = u64::try_from(d.as_nanos().div_ceil(1_000_000_000)).unwrap_or(u64::MAX);
    rfc3339(now_secs().saturating_add(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_micros(200)), "1ms");
        assert_eq!(go_duration(ms(6)), "6ms");
        assert_eq!(go_duration(ms(1_000)), "1s");
        assert_eq!(go_duration(ms(1_500)), "1.5s");
        assert_eq!(go_duration(ms(8_640)), "8.64s");
        assert_eq!(go_duration(ms(90_000)), "1m30s");
        assert_eq!(go_duration(ms(360_000)), "6m0s");
        assert_eq!(go_duration(ms(3_600_000)), "1h0m0s");
        assert_eq!(go_duration(ms(3_661_020)), "1h1m1.02s");
    }

    #[test]
    fn limits_refill_over_a_minute() {
        assert_eq!(Limit::after(10_000, 1), Limit { limit: 10_000, remaining: 9_999, reset: Duration::from_millis(6) });
        assert_eq!(Limit::after(160_000, 24).reset, Duration::from_millis(9));
        assert_eq!(Limit::after(100, 500), Limit { limit: 100, remaining: 0, reset: Duration::from_secs(60) });
        assert_eq!(Limit::used_up(50, Duration::from_secs(7)), Limit { limit: 50, remaining: 0, reset: Duration::from_secs(7) });
        assert_eq!(Limit::full(50), Limit { limit: 50, remaining: 50, reset: Duration::ZERO });
    }

    #[test]
    fn tighter_takes_the_smaller_share_left() {
        let input = Limit::after(2_000_000, 1_000);
        let output = Limit::after(400_000, 4_000);
        assert_eq!(input.tighter(output), output);
        assert_eq!(output.tighter(input), output);
        assert_eq!(Limit::full(10).tighter(Limit::full(20)), Limit::full(10));
    }

    #[test]
    fn reset_times_are_whole_seconds_ahead() {
        let now = now_secs();
        let at = rfc3339_after(Duration::from_secs(7));
        assert!(at == rfc3339(now + 7) || at == rfc3339(now + 8), "{at}");
        let soon = rfc3339_after(Duration::from_millis(15));
        assert!(soon == rfc3339(now + 1) || soon == rfc3339(now + 2), "{soon}");
    }
}
