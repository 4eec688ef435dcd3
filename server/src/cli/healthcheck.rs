//! `bitnet-server healthcheck`: probe `/health` and exit 0 only when the model is ready.
//!
//! This module does NOT implement the HTTP request (see `crate::healthcheck`).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

#[derive(Debug, Args)]
pub struct HealthcheckCommand {
    /// The health endpoint [default: http://127.0.0.1:$BITNET_PORT/health, port 8080].
    #[arg(long, env = "BITNET_HEALTHCHECK_URL")]
    pub url: Option<String>,

    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 3.0)]
    pub timeout: f64,

    /// Print nothing; only the exit code tells.
    #[arg(long, short)]
    pub quiet: bool,
}

impl HealthcheckCommand {
    pub fn run(self) -> ExitCode {
        let url = self.url.unwrap_or_else(|| {
            let port = std::env::var("BITNET_PORT")
                .ok()
                .filter(|p| p.parse::<u16>().is_ok());
            format!(
                "http://127.0.0.1:{}/health",
                port.as_deref().unwrap_or("8080")
            )
        });
        let timeout = if self.timeout.is_finite() && self.timeout > 0.0 {
            Duration::from_secs_f64(self.timeout.min(3600.0))
        } else {
            Duration::from_secs(3)
        };
        match crate::healthcheck::probe(&url, timeout) {
            Ok(result) if result.ready() => {
                if !self.quiet {
                    let _ = writeln!(std::io::stdout(), "ready: {}", result.body.trim());
                }
                ExitCode::SUCCESS
            }
            Ok(result) => {
                if !self.quiet {
                    let _ = writeln!(
                        std::io::stderr(),
                        "not ready (HTTP {}): {}",
                        result.status,
                        result.body.trim()
                    );
                }
                ExitCode::FAILURE
            }
            Err(e) => {
                if !self.quiet {
                    let _ = writeln!(std::io::stderr(), "unhealthy: {e}");
                }
                ExitCode::FAILURE
            }
        }
    }
}
