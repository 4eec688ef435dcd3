//! Structured logs on stderr through `tracing`: text or JSON (`--log-format json`,
//! `BITNET_LOG_FORMAT=json`, for log collectors), filtered by `RUST_LOG` (default `info`). Text is
//! coloured only when stderr is a terminal and `NO_COLOR` is unset or empty, so container logs
//! and files carry no ANSI escapes.
//!
//! This module does NOT decide what is logged; secrets never reach it because they are wrapped in
//! `Secret`, whose formatting prints `***`.

pub use crate::config::LogFormat;
use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;

/// Install the global subscriber (once, at start-up).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // `log_internal_errors(false)`: when stderr is gone (a closed pipe), a log line must be
    // dropped, not turned into a panic by the subscriber's fallback `eprintln!`.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .log_internal_errors(false);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .flatten_event(true)
            .try_init(),
    };
    if let Err(e) = result {
        let _ = writeln!(
            std::io::stderr(),
            "bitnet-server: could not set up logging: {e}"
        );
    }
}

/// Whether log lines get ANSI colours: only on a terminal, and never when `NO_COLOR` is set to a
/// non-empty value (the no-color.org convention).
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new(""))));
    }
}
