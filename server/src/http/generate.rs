//! Plumbing shared by the generation endpoints: readiness and model-name checks, prompt
//! tokenization, collecting a whole response, and turning engine events into an SSE stream that
//! ends on shutdown and cancels the generation when the client goes away.
//!
//! This module does NOT know any response format: endpoints pass closures that build their own
//! JSON.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::error::ApiError;
use super::params::{Prompt, PromptPiece};
use crate::engine::{Engine, Event, FinishReason, LogprobInfo, TokenCodec, Usage};

/// The engine, or 503 saying where the model is in its lifecycle.
pub fn ready_engine(state: &AppState) -> Result<Arc<Engine>, ApiError> {
    match (state.health.is_ready(), state.engine.get()) {
        (true, Some(engine)) => Ok(engine.clone()),
        _ => Err(ApiError::not_ready(&state.health.state().describe())),
    }
}

/// The engine of a generation model, or a 400 saying the loaded model only embeds (before any
/// prompt work: an embedding model has no chat template to render).
pub fn generation_engine(state: &AppState) -> Result<Arc<Engine>, ApiError> {
    let engine = ready_engine(state)?;
    if engine.handle.embedding_dim().is_some() {
        return Err(crate::engine::SubmitError::NotGenerative.into());
    }
    Ok(engine)
}

/// The engine of an embedding model, or a 400 saying the loaded model generates text (before
/// any tokenizing).
pub fn embedding_engine(state: &AppState) -> Result<Arc<Engine>, ApiError> {
    let engine = ready_engine(state)?;
    if engine.handle.embedding_dim().is_none() {
        return Err(crate::engine::SubmitError::NotEmbedding.into());
    }
    Ok(engine)
}

/// 404 unless `requested` (when given) is one of this server's model names, or the server
/// accepts any name (`--accept-any-model`: it serves one model, which every request goes to).
pub fn check_model(state: &AppState, requested: Option<&str>) -> Result<(), ApiError> {
    match requested {
        None => Ok(()),
        Some(_) if state.accept_any_model => Ok(()),
        Some(name) if state.model_names.iter().any(|n| n == name) => Ok(()),
        Some(name) => Err(ApiError::unknown_model(name, &state.model_id)),
    }
}

/// The most tokens one `/tokenize` or `/detokenize` request may produce or carry (128 Ki,
/// the longest context of any model this server loads). Generation requests are bounded by the
/// model's context instead (`SubmitError::ContextOverflow`). With the body limit this bounds
/// the work and the memory of every endpoint.
pub const MAX_REQUEST_TOKENS: usize = 1 << 17;

/// 400 when `count` tokens exceed [`MAX_REQUEST_TOKENS`], naming the field and the fix.
pub fn check_token_count(param: &str, count: usize) -> Result<(), ApiError> {
    if count <= MAX_REQUEST_TOKENS {
        return Ok(());
    }
    Err(ApiError::invalid_param(
        param,
        format!(
            "`{param}` is {count} tokens; one request may carry at most {MAX_REQUEST_TOKENS} \
             tokens: split it into smaller requests"
        ),
    )
    .with_code("too_many_tokens"))
}

/// Run CPU-heavy request work (tokenizing, chat templates, building large bodies) on tokio's
/// blocking pool, at most one job per core at a time: the async workers stay free for
/// `/health`, streams and new connections, and the memory such jobs hold is bounded by the
/// number of cores times what one body can cost. The permit travels with the job, so a client
/// that disconnects does not free a slot while its job still runs.
pub async fn cpu_work<T, F>(state: &AppState, job: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    let permit = state
        .cpu_work
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::internal("the server is shutting down"))?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        job()
    })
    .await
    .map_err(|e| ApiError::internal(format!("a request worker failed: {e}")))?
}

/// Tokenize a prompt. Text gets BOS (when the model has one) and special-token parsing;
/// token arrays are used as given.
pub fn tokenize_prompt(tok: &dyn TokenCodec, prompt: &Prompt) -> Result<Vec<u32>, ApiError> {
    let encode = |text: &str, bos: bool| {
        tok.encode(text, bos, true).map_err(|e| {
            ApiError::invalid_param("prompt", format!("the prompt could not be tokenized: {e}"))
        })
    };
    let tokens = match prompt {
        Prompt::Text(text) => encode(text, true)?,
        Prompt::Tokens(ids) => ids.clone(),
        Prompt::Mixed(pieces) => {
            let mut out = Vec::new();
            for (i, piece) in pieces.iter().enumerate() {
                match piece {
                    PromptPiece::Text(text) => out.extend(encode(text, i == 0)?),
                    PromptPiece::Token(id) => out.push(*id),
                }
            }
            out
        }
    };
    if tokens.is_empty() {
        return Err(ApiError::invalid_param(
            "prompt",
            "the prompt is empty after tokenization: give at least one token of text",
        ));
    }
    Ok(tokens)
}

/// One generated token as collected for a non-streaming response.
#[derive(Debug, Clone)]
pub struct CollectedToken {
    pub id: u32,
    pub logprob: Option<LogprobInfo>,
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct Collected {
    pub text: String,
    pub tokens: Vec<CollectedToken>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub stop_word: Option<String>,
    pub timings: Timings,
}

/// Wall-clock split between prompt processing and generation (llama.cpp's `timings`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub prompt: Duration,
    pub predicted: Duration,
}

/// Tracks when the first token arrived.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    first: Option<Instant>,
}

impl Clock {
    pub fn start() -> Self {
        Self {
            start: Instant::now(),
            first: None,
        }
    }

    pub fn token(&mut self) {
        self.first.get_or_insert_with(Instant::now);
    }

    pub fn timings(&self) -> Timings {
        let now = Instant::now();
        let first = self.first.unwrap_or(now);
        Timings {
            prompt: first - self.start,
            predicted: now - first,
        }
    }
}

/// Wait for the whole generation of every one of the request's `n` choices; the result is in
/// choice order. A failure of any choice fails the request.
pub async fn collect(
    mut rx: UnboundedReceiver<Event>,
    n: usize,
) -> Result<Vec<Collected>, ApiError> {
    struct Partial {
        clock: Clock,
        text: String,
        tokens: Vec<CollectedToken>,
    }
    let n = n.max(1);
    let start = Clock::start();
    let mut partial: Vec<Partial> = (0..n)
        .map(|_| Partial {
            clock: start,
            text: String::new(),
            tokens: Vec::new(),
        })
        .collect();
    let mut done: Vec<Option<Collected>> = (0..n).map(|_| None).collect();
    let mut remaining = n;
    while let Some(event) = rx.recv().await {
        match event {
            Event::Token {
                choice,
                id,
                text: piece,
                logprob,
            } => {
                let Some(p) = partial.get_mut(choice) else {
                    continue;
                };
                p.clock.token();
                p.text.push_str(&piece);
                p.tokens.push(CollectedToken { id, logprob });
            }
            Event::Done {
                choice,
                finish_reason,
                usage,
                stop_word,
                text: tail,
            } => {
                let (Some(p), Some(slot)) = (partial.get_mut(choice), done.get_mut(choice)) else {
                    continue;
                };
                if slot.is_some() {
                    continue;
                }
                let mut text = std::mem::take(&mut p.text);
                text.push_str(&tail);
                *slot = Some(Collected {
                    text,
                    tokens: std::mem::take(&mut p.tokens),
                    finish_reason,
                    usage,
                    stop_word,
                    timings: p.clock.timings(),
                });
                remaining -= 1;
                if remaining == 0 {
                    return Ok(done.into_iter().flatten().collect());
                }
            }
            Event::Failed { message } => {
                return Err(ApiError::internal(format!("generation failed: {message}")));
            }
        }
    }
    Err(ApiError::internal(
        "the generation ended without a result (the engine stopped)",
    ))
}

/// The usage of a request from its choices: the prompt counted once (it was processed once),
/// the completion tokens of every choice added up.
pub fn total_usage(choices: &[Collected]) -> Usage {
    Usage::of_choices(choices.iter().map(|c| c.usage))
}

/// What a stream step produces: SSE events to send, and whether the stream is finished.
pub type StreamStep = (Vec<SseEvent>, bool);

/// Stream engine events as SSE. `on_event` gets each event (`None` if the engine went away
/// without finishing) and returns what to send. The stream ends when `on_event` says so or when
/// `cancel` fires (shutdown deadline). Dropping the stream (client gone) drops the receiver,
/// which cancels the generation in the scheduler.
pub fn sse_response<F>(
    rx: UnboundedReceiver<Event>,
    cancel: CancellationToken,
    on_event: F,
) -> Response
where
    F: FnMut(Option<Event>) -> StreamStep + Send + 'static,
{
    let stream = futures_util::stream::unfold(
        (rx, on_event, VecDeque::<SseEvent>::new(), false),
        |(mut rx, mut on_event, mut queue, mut finished)| async move {
            loop {
                if let Some(event) = queue.pop_front() {
                    return Some((Ok::<_, Infallible>(event), (rx, on_event, queue, finished)));
                }
                if finished {
                    return None;
                }
                let event = rx.recv().await;
                let ended = event.is_none();
                let (events, done) = on_event(event);
                queue.extend(events);
                finished = done || ended;
            }
        },
    );
    let stream = stream.take_until(cancel.cancelled_owned());
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// An SSE `data:` event carrying JSON.
pub fn json_event<T: serde::Serialize>(value: &T) -> SseEvent {
    SseEvent::default().data(serde_json::to_string(value).unwrap_or_else(|_| "{}".into()))
}

/// An SSE error event in OpenAI's error shape.
pub fn error_event(error: &ApiError) -> SseEvent {
    SseEvent::default().data(error.body_json())
}

/// The error for an engine event stream that ended badly.
pub fn stream_failure(event: Option<&Event>) -> ApiError {
    match event {
        Some(Event::Failed { message }) => {
            ApiError::internal(format!("generation failed: {message}"))
        }
        _ => ApiError::internal("the generation ended without a result (the engine stopped)"),
    }
}

/// Unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A response id like `chatcmpl-1f0c…`.
pub fn response_id(prefix: &str) -> String {
    format!(
        "{prefix}-{:016x}{:08x}",
        bitnet_rng::random_u64(),
        bitnet_rng::random_u64() as u32
    )
}
