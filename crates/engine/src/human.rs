//! Plain text for values that people read in log lines and error messages.
//!
//! Rust's `Debug` output (`Some(429)`, `1.234567ms`, `"primary"`) is for programmers; an operator reading
//! the log wants `429`, `250ms`, `10s`: round figures in the units the configuration itself uses.

use std::time::Duration;

/// `0ms`, `250ms`, `1.5s`, `10s`, `90s`, `5m`, `2h`: milliseconds below a second, then seconds (one
/// decimal when not whole), and whole minutes or hours when the value is exactly that.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms % 1000 != 0 {
        let tenths = (ms + 50) / 100;
        return if tenths % 10 == 0 { format!("{}s", tenths / 10) } else { format!("{}.{}s", tenths / 10, tenths % 10) };
    }
    let s = ms / 1000;
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 120 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_the_configuration() {
        let cases = [
            (Duration::ZERO, "0ms"),
            (Duration::from_micros(1500), "1ms"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(1234), "1.2s"),
            (Duration::from_millis(1999), "2s"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(7200), "2h"),
        ];
        for (d, want) in cases {
            assert_eq!(duration(d), want, "{d:?}");
        }
    }
}
