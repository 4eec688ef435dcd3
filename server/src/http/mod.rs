//! The HTTP API (axum): routes, shared state, API-key check, request metrics, and the
//! `/health` and `/metrics` endpoints.
//!
//! Routes: OpenAI (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/models`),
//! llama.cpp (`/completion`, `/embedding`, `/embeddings`, `/tokenize`, `/detokenize`), and
//! operations (`/health`, `/metrics`).
//! The un-prefixed aliases llama.cpp's server also answers (`/chat/completions`, `/models`,
//! `/completions`) are routed the same way. With `--api-key`, everything except `/health` and
//! `/metrics` needs `Authorization: Bearer <key>`.
//!
//! This module does NOT start the listener or load the model (see `serve`).

pub mod embeddings;
pub mod error;
pub mod generate;
pub mod json;
pub mod llama;
pub mod metrics;
pub mod openai;
pub mod params;
pub mod structured;
pub mod tools;

use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::health::Health;
use crate::secret::Secret;
use error::ApiError;
use metrics::{Limits, Metrics};

/// What the API is configured with.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The name clients use for the model (`/v1/models`, the `model` field of every response).
    pub model_id: String,
    /// Other names a request may give (`--alias`), listed in `/v1/models` after the id.
    pub aliases: Vec<String>,
    /// Names accepted but not listed: the model file's name, with and without `.gguf`.
    pub file_names: Vec<String>,
    /// `--accept-any-model`: any `model` value goes to the one served model.
    pub accept_any_model: bool,
    pub api_key: Option<Secret>,
    /// Request body cap in bytes.
    pub max_body: usize,
    /// Time for a request body to arrive in full once its head has (`--body-timeout`).
    pub body_timeout: std::time::Duration,
    pub limits: Limits,
}

/// State shared by all handlers.
#[derive(Debug)]
pub struct Shared {
    pub health: Arc<Health>,
    /// Set once the model is loaded.
    pub engine: OnceLock<Arc<Engine>>,
    pub metrics: Metrics,
    pub model_id: String,
    /// Every name a request may give: the id, the aliases, the file names (see
    /// [`generate::check_model`]).
    pub model_names: Vec<String>,
    /// What `/v1/models` lists: the id, then the aliases.
    pub listed_models: Vec<String>,
    /// See [`ApiConfig::accept_any_model`].
    pub accept_any_model: bool,
    pub api_key: Option<Secret>,
    pub max_body: usize,
    /// See [`ApiConfig::body_timeout`].
    pub body_timeout: std::time::Duration,
    /// Fired at the shutdown deadline: open streams end.
    pub cancel: CancellationToken,
    /// Unix time the server started (`created` in `/v1/models`).
    pub created: u64,
    pub limits: Limits,
    /// Slots for CPU-heavy request work off the async workers (`generate::cpu_work`).
    pub cpu_work: Arc<tokio::sync::Semaphore>,
    /// API requests being served, counted until the last byte of the response body (streams
    /// included) is sent or the client goes away; shutdown waits for it to reach 0.
    pub in_flight: Arc<AtomicUsize>,
}

/// A cheap handle on [`Shared`].
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(config: ApiConfig, health: Arc<Health>, cancel: CancellationToken) -> Self {
        let mut listed_models = vec![config.model_id.clone()];
        for alias in config.aliases {
            if !listed_models.contains(&alias) {
                listed_models.push(alias);
            }
        }
        let mut model_names = listed_models.clone();
        for name in config.file_names {
            if !model_names.contains(&name) {
                model_names.push(name);
            }
        }
        AppState(Arc::new(Shared {
            health,
            engine: OnceLock::new(),
            metrics: Metrics::default(),
            model_id: config.model_id,
            model_names,
            listed_models,
            accept_any_model: config.accept_any_model,
            api_key: config.api_key,
            max_body: config.max_body,
            body_timeout: config.body_timeout,
            cancel,
            created: generate::unix_now(),
            limits: config.limits,
            cpu_work: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }))
    }

    /// Install the loaded engine (once). The caller then marks the health state ready.
    pub fn set_engine(&self, engine: Arc<Engine>) -> Result<(), Arc<Engine>> {
        self.engine.set(engine)
    }
}

/// The application router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/embedding", post(embeddings::llama_embedding))
        .route("/embeddings", post(embeddings::llama_embedding))
        .route("/v1/models", get(openai::models))
        .route("/models", get(openai::models))
        .route("/completion", post(llama::completion))
        .route("/completions", post(llama::completion))
        .route("/tokenize", post(llama::tokenize))
        .route("/detokenize", post(llama::detokenize))
        .route("/health", get(health))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(state.clone(), drain_gate))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body))
        .with_state(state)
}

/// `GET /health`: 200 when ready, 503 otherwise; the body says where the model is.
async fn health(State(state): State<AppState>) -> Response {
    // A dead engine is unhealthy from the moment it died, not from when `serve` notices.
    if let Some(message) = state.engine.get().and_then(|e| e.handle.fatal()) {
        state.health.engine_failed(&message);
    }
    let report = state.health.report();
    let status = if report.state == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}

/// `GET /metrics`.
async fn metrics_text(State(state): State<AppState>) -> Response {
    let stats = state
        .engine
        .get()
        .map(|e| (e.handle.stats(), e.kernel.clone()));
    let body = state.metrics.render(
        &state.health,
        stats.as_ref().map(|(s, k)| (s, k.as_str())),
        &state.limits,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn not_found(State(state): State<AppState>, req: Request) -> Response {
    state.metrics.record("other", 404);
    ApiError::not_found(format!(
        "no route for {} {}; see /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models, \
         /completion, /embedding, /tokenize, /detokenize, /health, /metrics",
        req.method(),
        req.uri().path()
    ))
    .with_code("not_found")
    .into_response()
}

async fn method_not_allowed(State(state): State<AppState>, req: Request) -> Response {
    state.metrics.record("other", 405);
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        ..ApiError::bad_request(format!(
            "{} is not allowed on {}",
            req.method(),
            req.uri().path()
        ))
    }
    .into_response()
}

/// Paths that stay open with `--api-key` (probes and scrapers).
fn is_public(path: &str) -> bool {
    matches!(path, "/health" | "/v1/health" | "/metrics")
}

async fn require_api_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key
        && !is_public(req.uri().path())
    {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        if !presented.is_some_and(|p| key.matches(p)) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// Once shutdown has begun ([`Health::begin_draining`]) refuse new API requests with 503
/// `shutting_down` and `Connection: close`; count the others in [`Shared::in_flight`] until their
/// response body ends. Probes pass untouched: `/health` must answer while draining.
async fn drain_gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    // Count first, then check: `serve` sets draining, then waits for 0, so a request either
    // sees draining or is counted before the wait reads the count (both SeqCst).
    let guard = InFlight::enter(state.in_flight.clone());
    if state.health.is_draining() {
        drop(guard);
        let mut response = ApiError::shutting_down().into_response();
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return response;
    }
    next.run(req)
        .await
        .map(|body| Body::new(BodyWith::new(body, guard)))
}

/// One request in [`Shared::in_flight`], until dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        InFlight(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that holds `guard` until the body is dropped (sent to the end, or the
/// connection closed): the request's [`InFlight`] count here, the connection's busy state in
/// `connections`.
pub(crate) struct BodyWith<G> {
    body: Body,
    _guard: G,
}

impl<G> BodyWith<G> {
    pub(crate) fn new(body: Body, guard: G) -> Self {
        Self {
            body,
            _guard: guard,
        }
    }
}

impl<G: Unpin> HttpBody for BodyWith<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Count the request for `/metrics` and write an access-log line (probes at debug level, so a
/// health check every few seconds does not flood the log).
async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "other".to_string());
    let method = req.method().clone();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    state.metrics.record(&endpoint, status);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if is_public(&endpoint) {
        tracing::debug!(%method, endpoint, status, ms, "request");
    } else {
        // For streams this is the time to the response head; the stream continues after it.
        tracing::info!(%method, endpoint, status, ms, "request");
    }
    response
}
