//! The `serve` lifecycle: listen at once, acquire and load the model in the background while
//! `/health` reports progress (a failed attempt shows as `failed`, 503 with the reason, and is
//! retried with backoff, see [`crate::config::RetryPolicy`]), then serve; on the shutdown signal
//! drain: `/health` says `draining` (503), new API requests get 503 `shutting_down`, in-flight
//! ones finish for up to the shutdown timeout; then close the listener, cancel what is left, and
//! return.
//!
//! This module does NOT parse flags (see `config`), install signal handlers or logging (the
//! binary does), serve connections (see `connections`: cap and timers), or know how a model is
//! built: a [`ModelLoader`] is passed in.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ServeOptions;
use crate::connections;
use crate::download::{self, Phase, Progress, ProgressSink};
use crate::engine::{Engine, ModelLoader};
use crate::health::{Health, ModelState};
use crate::http::{self, AppState};

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "could not listen on {addr}: {source}. Is another process using the port? Choose \
         another with --port (BITNET_PORT)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Server(std::io::Error),
    #[error(
        "the inference engine stopped and cannot serve any more requests: {0}. Exiting with \
         status 1 so that the supervisor (Docker restart policy, Kubernetes, systemd) restarts \
         the server; please report the message above"
    )]
    EngineFailed(String),
}

/// After the drain (or its timeout), how long open connections get to write their last bytes
/// before they are closed: the process exits within `--shutdown-timeout` + this (+ stopping the
/// engine thread), which must fit the orchestrator's stop window (Docker: 10 s by default).
pub const FINAL_WRITE_GRACE: Duration = Duration::from_secs(1);

/// Bind `options.listen` and run until `shutdown` completes.
pub async fn run(
    options: ServeOptions,
    loader: Arc<dyn ModelLoader>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: options.listen,
            source,
        })?;
    run_on(listener, options, loader, shutdown).await
}

/// A running server's state, for callers that embed it (tests, benchmarks).
pub struct Running {
    pub state: AppState,
    pub health: Arc<Health>,
}

/// Serve on an already bound listener until `shutdown` completes.
pub async fn run_on(
    listener: TcpListener,
    options: ServeOptions,
    loader: Arc<dyn ModelLoader>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    run_with(listener, options, loader, shutdown, |_| {}).await
}

/// [`run_on`], handing the state to `on_start` once the listener is serving.
pub async fn run_with(
    listener: TcpListener,
    options: ServeOptions,
    loader: Arc<dyn ModelLoader>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_start: impl FnOnce(Running),
) -> Result<(), ServeError> {
    let addr = listener.local_addr().map_err(ServeError::Server)?;
    let health = Arc::new(Health::new(options.api.model_id.clone()));
    let stream_cancel = CancellationToken::new();
    let state = AppState::new(options.api.clone(), health.clone(), stream_cancel.clone());
    let app = http::router(state.clone());

    tracing::info!(%addr, model = %options.source, "listening; the model is acquired in the background");
    if options.api.api_key.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "serving WITHOUT an API key on a non-loopback address: anyone who can reach this \
             port can use the model. Set --api-key (BITNET_API_KEY), or listen on 127.0.0.1 \
             (--host, BITNET_HOST) behind a proxy that authenticates"
        );
    }
    let lifecycle = {
        let (options, state) = (options.clone(), state.clone());
        tokio::spawn(async move {
            let health = state.health.clone();
            for failures in 1u32.. {
                let run = AssertUnwindSafe(acquire_and_load(
                    options.clone(),
                    loader.clone(),
                    state.clone(),
                ))
                .catch_unwind();
                let reason = match run.await {
                    Ok(Ok(())) => return,
                    Ok(Err(reason)) => reason,
                    // Never leave /health saying "downloading" forever.
                    Err(panic) => {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "unknown panic".into());
                        format!("internal error while preparing the model: {what}")
                    }
                };
                // `failed` (503 with the reason) until the next attempt starts.
                let delay = options.retry.delay(failures);
                health.set(ModelState::Failed {
                    reason: format!(
                        "{reason} (attempt {failures}; retrying in {:.1} s)",
                        delay.as_secs_f64()
                    ),
                });
                tokio::time::sleep(delay).await;
            }
        })
    };

    let draining = CancellationToken::new();
    tracing::info!(
        max_connections = connections::max_connections(&options.connections),
        header_timeout_s = options.connections.header_timeout.as_secs_f64(),
        keep_alive_timeout_s = options.connections.keep_alive_timeout.as_secs_f64(),
        write_timeout_s = options.connections.write_timeout.as_secs_f64(),
        body_timeout_s = options.api.body_timeout.as_secs_f64(),
        "connection limits"
    );
    let server = connections::serve(listener, app, options.connections, draining.clone());
    let mut server = tokio::spawn(server);
    on_start(Running {
        state: state.clone(),
        health,
    });

    // The shutdown future is polled here, not in a task of its own: if it ever failed, the
    // failure would surface instead of leaving a server that ignores SIGTERM. A dead engine
    // (scheduler panic) ends the server the same way, then `run` returns an error: a process
    // that answers every request with 503 must not stay up looking alive.
    tokio::pin!(shutdown);
    let fatal = engine_failure(state.clone());
    tokio::pin!(fatal);
    let failure = tokio::select! {
        _ = &mut shutdown => None,
        message = &mut fatal => {
            state.health.engine_failed(&message);
            tracing::error!(%message, "the inference engine stopped; shutting down to be restarted");
            Some(message)
        }
        result = &mut server => {
            // The accept loop ends only when told to, so this is a panic in it.
            lifecycle.abort();
            stop_engine(&state).await;
            return result.map_err(|e| ServeError::Server(std::io::Error::other(e)));
        }
    };
    // Drain with the listener open: `/health` says `draining` (503) so probes and load
    // balancers see the shutdown, new API requests get 503 `shutting_down`, and the requests
    // already running finish, each counted until its response body is sent to the end (waiting
    // on the engine instead would cut streams whose last events are generated but not sent).
    lifecycle.abort();
    state.health.begin_draining();
    if let Some(engine) = state.engine.get() {
        engine.handle.begin_shutdown();
    }
    tracing::info!(
        timeout_s = options.shutdown_timeout.as_secs_f64(),
        in_flight = state.in_flight.load(Ordering::SeqCst),
        "shutting down: /health says draining, new requests get 503; letting in-flight \
         requests finish"
    );
    let drained = tokio::time::timeout(options.shutdown_timeout, async {
        while state.in_flight.load(Ordering::SeqCst) > 0 && !server.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .is_ok();
    // Close the listener: idle keep-alive connections end, a probe being answered finishes.
    draining.cancel();
    if !drained {
        let stats = state
            .engine
            .get()
            .map(|e| e.handle.stats())
            .unwrap_or_default();
        tracing::warn!(
            in_flight = state.in_flight.load(Ordering::SeqCst),
            active = stats.active,
            queued = stats.queued,
            "shutdown timeout reached; cancelling the remaining requests"
        );
        // End open streams and fail whatever is still generating; the connections get
        // FINAL_WRITE_GRACE to write their final bytes.
        stream_cancel.cancel();
        stop_engine(&state).await;
    }
    let finished = match tokio::time::timeout(FINAL_WRITE_GRACE, &mut server).await {
        Ok(result) => Some(result),
        Err(_) => {
            tracing::warn!("connections still open after the shutdown deadline; closing them");
            server.abort();
            None
        }
    };
    stop_engine(&state).await;
    if let Some(message) = failure {
        return Err(ServeError::EngineFailed(message));
    }
    if let Some(Err(e)) = finished {
        return Err(ServeError::Server(std::io::Error::other(e)));
    }
    tracing::info!("shut down");
    Ok(())
}

/// Resolves with the engine's fatal message once it has one (see `EngineHandle::fatal`); never
/// while no engine is loaded or it is healthy.
async fn engine_failure(state: AppState) -> String {
    loop {
        if let Some(message) = state.engine.get().and_then(|e| e.handle.fatal()) {
            return message;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stop_engine(state: &AppState) {
    if let Some(engine) = state.engine.get().cloned() {
        let _ = tokio::task::spawn_blocking(move || engine.stop()).await;
    }
}

/// Relays download progress into the health state.
struct HealthSink(Arc<Health>);

impl ProgressSink for HealthSink {
    fn report(&self, p: Progress) {
        self.0.set(match p.phase {
            Phase::Downloading | Phase::Waiting => ModelState::Downloading {
                bytes: p.bytes,
                total: p.total,
                bytes_per_second: p.bytes_per_second,
                by_another_process: p.phase == Phase::Waiting,
            },
            Phase::Verifying => ModelState::Verifying {
                bytes: p.bytes,
                total: p.total,
            },
        });
    }
}

/// One attempt of the background task: model file → loaded engine → ready, or the reason it
/// failed (the caller reports it and retries).
async fn acquire_and_load(
    options: ServeOptions,
    loader: Arc<dyn ModelLoader>,
    state: AppState,
) -> Result<(), String> {
    let health = state.health.clone();
    let sink = HealthSink(health.clone());
    let acquired = download::acquire(&options.source, &options.download, &sink)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(
        path = %acquired.path.display(),
        sha256 = acquired.sha256.as_ref().map(|s| s.to_string()).unwrap_or_default(),
        verified = acquired.verified,
        cached = acquired.from_cache,
        "model file ready; loading"
    );
    health.set(ModelState::Loading);
    let path = acquired.path.clone();
    let load = options.load.clone();
    let parallel = options.engine.parallel;
    let loaded = tokio::task::spawn_blocking(move || loader.load(&path, &load, parallel)).await;
    let model = match loaded {
        Ok(Ok(model)) => model,
        Ok(Err(e)) => return Err(format!("could not load {}: {e}", acquired.path.display())),
        Err(e) => return Err(format!("the model loader crashed: {e}")),
    };
    let kernel = model.kernel.clone();
    match Engine::start(model, options.engine.clone()) {
        Ok(engine) => {
            match engine.handle.embedding_dim() {
                Some(dim) => tracing::info!(
                    n_ctx = engine.handle.n_ctx(),
                    %kernel,
                    embedding_dim = dim,
                    "embedding model loaded: serving /v1/embeddings and /embedding"
                ),
                None => tracing::info!(n_ctx = engine.handle.n_ctx(), %kernel, "model loaded"),
            }
            // The grammar engine's view of the vocabulary (about half a second for 128k
            // tokens) is built before the server says ready, so the first structured request
            // does not wait for it.
            let engine = Arc::new(engine);
            if engine.handle.embedding_dim().is_none() {
                let e2 = engine.clone();
                let built = tokio::task::spawn_blocking(move || e2.grammar_vocabulary()).await;
                match built {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "structured outputs are unavailable"),
                    Err(e) => tracing::warn!(error = %e, "building the grammar vocabulary crashed"),
                }
            }
            health.set_loaded(kernel, engine.handle.embedding_dim());
            if state.set_engine(engine.clone()).is_ok() {
                health.set(ModelState::Ready);
            }
            Ok(())
        }
        Err(e) => Err(format!("could not start the engine thread: {e}")),
    }
}
