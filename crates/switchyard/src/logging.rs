//! How the process logs: which lines (`SWITCHYARD_LOG`, `--no-request-log`), and in what shape
//! (`--log-format`).
//!
//! Logs go to standard error and are read by people as often as by machines, so the defaults are for a
//! person at a terminal: text, coloured only when standard error *is* a terminal and `NO_COLOR` is not set,
//! so that a log file, `journalctl` or `docker logs` never fills with escape codes. `json` writes one object
//! per line for log shippers, with every field at the top level.
//!
//! The one INFO line per finished request has its own target, `switchyard::request`, so that it can be
//! switched off like any other target (`SWITCHYARD_LOG=switchyard::request=off`); `--no-request-log`
//! and `SWITCHYARD_REQUEST_LOG=off` say the same more plainly.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// The target of the per-request line (written by the server; named here to switch it off).
const REQUEST_TARGET: &str = "switchyard::request";

/// `--log-format` / `SWITCHYARD_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Text, coloured only when standard error is a terminal and NO_COLOR is not set.
    #[default]
    Auto,
    /// Text without colour.
    Text,
    /// One JSON object per line.
    Json,
}

/// Bad logging settings, found before anything else is done.
#[derive(Debug, thiserror::Error)]
pub enum LogSetupError {
    #[error("SWITCHYARD_REQUEST_LOG must be on or off, got {0:?}")]
    RequestLogValue(String),
    #[error("{var} is not a valid log filter: {reason} (example: SWITCHYARD_LOG=info,switchyard::request=off)")]
    Filter { var: &'static str, reason: String },
}

/// What the logging setup needs from the command line and the environment.
#[derive(Debug, Clone, Copy)]
pub struct LogSettings {
    pub format: LogFormat,
    /// The per-request line (`--no-request-log`, `SWITCHYARD_REQUEST_LOG`).
    pub request_log: bool,
}

/// `SWITCHYARD_REQUEST_LOG`: `off`/`false`/`0`/`no` switch the request line off, `on`/`true`/`1`/`yes`
/// (or unset) leave it on; anything else is refused rather than guessed at.
pub fn request_log_from_env(value: Option<&str>) -> Result<bool, LogSetupError> {
    match value.map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(true),
        Some(v) => match v.as_str() {
            "" | "on" | "true" | "1" | "yes" => Ok(true),
            "off" | "false" | "0" | "no" => Ok(false),
            _ => Err(LogSetupError::RequestLogValue(v)),
        },
    }
}

/// Colour only for a person at a terminal who did not ask for none (<https://no-color.org>: any non-empty
/// `NO_COLOR` means no colour).
fn colour(format: LogFormat, stderr_is_terminal: bool, no_color: Option<&str>) -> bool {
    format == LogFormat::Auto && stderr_is_terminal && no_color.is_none_or(str::is_empty)
}

/// A filter that names only targets (`switchyard::request=off`, `switchyard_engine=debug`) leaves every other
/// target at `info`: without this, the first would silence the whole log, which nobody who writes it means.
fn with_default_level(spec: &str) -> String {
    let has_level = spec.split(',').map(str::trim).any(|d| d.parse::<tracing_subscriber::filter::LevelFilter>().is_ok());
    if has_level {
        spec.to_string()
    } else {
        format!("info,{spec}")
    }
}

/// The filter: `SWITCHYARD_LOG`, else `RUST_LOG`, else `info`; then the request line off if asked.
fn filter(request_log: bool) -> Result<EnvFilter, LogSetupError> {
    let from = |var: &'static str| -> Result<Option<EnvFilter>, LogSetupError> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => EnvFilter::builder()
                .parse(with_default_level(v.trim()))
                .map(Some)
                .map_err(|e| LogSetupError::Filter { var, reason: e.to_string() }),
            _ => Ok(None),
        }
    };
    let mut filter = match from("SWITCHYARD_LOG")? {
        Some(f) => f,
        None => from("RUST_LOG")?.unwrap_or_else(|| EnvFilter::new("info")),
    };
    if !request_log {
        filter = filter.add_directive(format!("{REQUEST_TARGET}=off").parse().map_err(|e: tracing_subscriber::filter::ParseError| {
            LogSetupError::Filter { var: "--no-request-log", reason: e.to_string() }
        })?);
    }
    Ok(filter)
}

/// Installs the process's log subscriber on standard error.
pub fn init(settings: LogSettings) -> Result<(), LogSetupError> {
    let filter = filter(settings.request_log)?;
    let no_color = std::env::var("NO_COLOR").ok();
    let ansi = colour(settings.format, std::io::stderr().is_terminal(), no_color.as_deref());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match settings.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).init(),
        LogFormat::Auto | LogFormat::Text => builder.with_ansi(ansi).init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_for_a_terminal_without_no_color() {
        assert!(colour(LogFormat::Auto, true, None));
        assert!(colour(LogFormat::Auto, true, Some("")), "an empty NO_COLOR does not count");
        assert!(!colour(LogFormat::Auto, true, Some("1")));
        assert!(!colour(LogFormat::Auto, false, None), "a pipe or a file never gets escape codes");
        assert!(!colour(LogFormat::Text, true, None), "text is plain");
        assert!(!colour(LogFormat::Json, true, None));
    }

    #[test]
    fn a_filter_of_targets_only_keeps_the_rest_at_info() {
        assert_eq!(with_default_level("switchyard::request=off"), "info,switchyard::request=off");
        assert_eq!(with_default_level("switchyard_engine=debug"), "info,switchyard_engine=debug");
        assert_eq!(with_default_level("warn,switchyard::request=off"), "warn,switchyard::request=off");
        assert_eq!(with_default_level("debug"), "debug");
        assert_eq!(with_default_level("off"), "off");
    }

    #[test]
    fn the_request_log_switch_takes_plain_words_only() {
        assert!(request_log_from_env(None).unwrap());
        for on in ["on", "ON", "true", "1", "yes", ""] {
            assert!(request_log_from_env(Some(on)).unwrap(), "{on}");
        }
        for off in ["off", "Off", "false", "0", "no"] {
            assert!(!request_log_from_env(Some(off)).unwrap(), "{off}");
        }
        let e = request_log_from_env(Some("quiet")).unwrap_err();
        assert_eq!(e.to_string(), "SWITCHYARD_REQUEST_LOG must be on or off, got \"quiet\"");
    }
}
