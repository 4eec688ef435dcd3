//! Structured logs on stderr through `tracing`: text or JSON, filtered by `RUST_LOG`
//! (default `info`).
//!
//! This module does NOT decide what is logged; secrets never reach it because they are wrapped in
//! `Secret`, whose formatting prints `***`.

pub use crate::config::LogFormat;
use std::io::Write;

use tracing_subscriber::EnvFilter;

/// Install the global subscriber (once, at start-up).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // `log_internal_errors(false)`: when stderr is gone (a closed pipe), a log line must be
    // dropped, not turned into a panic by the subscriber's fallback `eprintln!`.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
