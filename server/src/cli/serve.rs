//! `bitnet-server serve`: flags → options, a tokio runtime, SIGTERM/SIGINT handling, and the
//! model loader handed to `crate::serve`.
//!
//! This module does NOT implement the server (see `crate::serve`).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::model_args::HeadArg;
use crate::config::ServeArgs;
use crate::connections;
use crate::download::ModelSource;
use crate::engine::bitnet::BitnetLoader;
use crate::engine::{LoadError, LoadedModel, ModelLoader};
use crate::memory;
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
        let allow_beyond_training = self.args.allow_ctx_beyond_training;
        let cache_ram = self.args.cache_ram;
        // A local file can be checked now: a --ctx-size the machine cannot hold is a
        // configuration error (exit 2), not a server that looks healthy until a long request
        // aborts it. Downloaded files are checked at load (`CheckedLoader`).
        if let ModelSource::Local { path, .. } = &options.source
            && let Err(e) = memory::check_model_file(
                path,
                options.load.n_ctx,
                options.engine.parallel,
                cache_ram,
                allow_beyond_training,
            )
        {
            let _ = writeln!(std::io::stderr(), "bitnet-server serve: {e}");
            return ExitCode::from(2);
        }
        // Every connection is a file descriptor: use the whole open-file allowance, and refuse
        // a cap it cannot hold (accept would fail with EMFILE instead).
        let files = connections::raise_file_limit();
        if let Some(f) = files {
            tracing::info!(soft = f.soft, hard = f.hard, raised_from = ?f.raised_from, "open-file limit");
        }
        if let (Some(cap), Some(files)) = (options.connections.max_connections, files) {
            let needed = cap as u64 + connections::RESERVED_FILES;
            if needed > files.soft {
                let _ = writeln!(
                    std::io::stderr(),
                    "bitnet-server serve: --max-connections {cap} needs {needed} open files \
                     ({} kept for the model, downloads and the runtime), but the limit is {} \
                     (hard limit {}); lower --max-connections (BITNET_MAX_CONNECTIONS), or omit \
                     it to fit the limit, or raise the limit (ulimit -n, docker run --ulimit \
                     nofile=N:N, LimitNOFILE= in systemd)",
                    connections::RESERVED_FILES,
                    files.soft,
                    files.hard
                );
                return ExitCode::from(2);
            }
        }
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
            Arc::new(CheckedLoader {
                allow_beyond_training,
                cache_ram,
            }),
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

/// [`BitnetLoader`] behind the `--ctx-size` and `--cache-ram` bounds
/// ([`memory::check_model_file`]): a refused context makes the load fail with the reason, shown
/// by `/health` as `failed`; otherwise the backend's prompt cache gets the budget the check
/// allows.
struct CheckedLoader {
    allow_beyond_training: bool,
    /// `--cache-ram` as given.
    cache_ram: Option<usize>,
}

impl ModelLoader for CheckedLoader {
    fn load(
        &self,
        path: &Path,
        options: &bitnet_model::LoadOptions,
        parallel: usize,
    ) -> Result<LoadedModel, LoadError> {
        let cache_ram = memory::check_model_file(
            path,
            options.n_ctx,
            parallel,
            self.cache_ram,
            self.allow_beyond_training,
        )
        .map_err(LoadError)?;
        let mut model = BitnetLoader.load(path, options, parallel)?;
        if model.backend.embedding_dim().is_none() {
            tracing::info!(
                bytes = cache_ram,
                requested = ?self.cache_ram,
                "prompt cache budget"
            );
            model.backend.set_prompt_cache_budget(cache_ram);
        }
        Ok(model)
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
