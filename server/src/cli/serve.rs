//! `bitnet-server serve`: flags → options, a tokio runtime, SIGTERM/SIGINT handling, and the
//! model loader handed to `crate::serve`.
//!
//! This module does NOT implement the server (see `crate::serve`).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use super::model_args::HeadArg;
use crate::config::ServeArgs;
use crate::engine::bitnet::BitnetLoader;
use clap::Args;

#[derive(Debug, Args)]
pub struct ServeCommand {
    #[command(flatten)]
    pub args: ServeArgs,
    /// Output head arithmetic: f16 (as published) or q8 (half the memory traffic per token,
    /// slightly different logits).
    #[arg(long, value_enum, default_value_t = HeadArg::F16, env = "BITNET_HEAD", help_heading = "Engine")]
    pub head: HeadArg,
}

impl ServeCommand {
    pub fn run(self) -> ExitCode {
        let mut options = match self.args.to_options() {
            Ok(o) => o,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "bitnet-server serve: {e}");
                return ExitCode::from(2);
            }
        };
        options.load.head = self.head.kind();
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bitnet-http")
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "bitnet-server serve: could not start the async runtime: {e}"
                );
                return ExitCode::FAILURE;
            }
        };
        let result = runtime.block_on(crate::serve::run(
            options,
            Arc::new(BitnetLoader),
            shutdown_signal(),
        ));
        // Do not wait for blocking tasks (a lock wait, a hash) that outlived the server.
        runtime.shutdown_background();
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                let _ = writeln!(std::io::stderr(), "bitnet-server serve: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
