//! llama.cpp-server-compatible endpoints: `POST /completion`, `POST /tokenize`,
//! `POST /detokenize`, with llama.cpp's field names (`n_predict`, `n_probs`, `stop_type`,
//! `tokens_predicted`, `timings`, …). A streamed `/completion` sends one object per token and ends
//! with an object carrying `"stop": true` and the totals (no `[DONE]`). `cache_prompt` (default
//! true) lets the prompt's leading tokens come from the prompt cache; `timings.cache_n` says how
//! many did and `timings.prompt_n` how many were computed, as llama.cpp reports them.
//!
//! This module does NOT implement generation (see `engine`) or the OpenAI shapes.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use super::generate::{
    Clock, Timings, check_model, check_token_count, collect, cpu_work, error_event,
    generation_engine, json_event, ready_engine, sse_response, stream_failure,
};
use super::json::ApiJson;
use super::params::{self, Prompt};
use super::structured;
use crate::engine::{
    Event, FinishReason, GenerationRequest, LogprobInfo, TokenCodec, TokenLogprob, Usage,
};
use crate::sampling::SamplingParams;
use bitnet_constraint::Grammar;

/// The most alternatives per token for `n_probs`.
pub const MAX_N_PROBS: i64 = 100;

/// `POST /completion` body.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Option<Value>,
    pub n_predict: Option<i64>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_k: Option<i64>,
    pub top_p: Option<f64>,
    pub min_p: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub repeat_last_n: Option<i64>,
    pub seed: Option<i64>,
    pub stop: Option<Value>,
    pub stream: Option<bool>,
    pub n_probs: Option<i64>,
    pub ignore_eos: Option<bool>,
    /// A JSON Schema the output must match.
    pub json_schema: Option<Value>,
    /// A GBNF grammar the output must match.
    pub grammar: Option<String>,
    /// Start from the prompt cache's longest match (default true); false computes the whole
    /// prompt (the sequence is still offered to the cache when it ends).
    pub cache_prompt: Option<bool>,
}

#[derive(Debug, Serialize)]
struct ProbEntry {
    id: u32,
    token: String,
    bytes: Vec<u8>,
    logprob: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<Vec<ProbEntry>>,
}

fn prob_entry(t: &TokenLogprob, top: Option<&[TokenLogprob]>) -> ProbEntry {
    ProbEntry {
        id: t.id,
        token: String::from_utf8_lossy(&t.bytes).into_owned(),
        bytes: t.bytes.clone(),
        logprob: t.logprob,
        top_logprobs: top.map(|top| top.iter().map(|t| prob_entry(t, None)).collect()),
    }
}

fn probs(infos: &[&LogprobInfo]) -> Vec<ProbEntry> {
    infos
        .iter()
        .map(|i| prob_entry(&i.chosen, Some(&i.top)))
        .collect()
}

#[derive(Debug, Serialize, Clone)]
struct GenerationSettings {
    n_predict: i64,
    temperature: f32,
    top_k: usize,
    top_p: f32,
    min_p: f32,
    repeat_penalty: f32,
    repeat_last_n: i64,
    presence_penalty: f32,
    frequency_penalty: f32,
    seed: u64,
    stop: Vec<String>,
    n_probs: usize,
    ignore_eos: bool,
}

#[derive(Debug, Serialize)]
struct TimingsOut {
    /// Prompt tokens taken from the prompt cache.
    cache_n: usize,
    /// Prompt tokens computed.
    prompt_n: usize,
    prompt_ms: f64,
    prompt_per_token_ms: f64,
    prompt_per_second: f64,
    predicted_n: usize,
    predicted_ms: f64,
    predicted_per_token_ms: f64,
    predicted_per_second: f64,
}

/// llama.cpp's `timings` for a request of this `usage`: the prompt figures count the computed
/// tokens only.
fn timings_out(t: Timings, usage: Usage) -> TimingsOut {
    let (cache_n, prompt_n, predicted_n) = (
        usage.cached_tokens,
        usage.computed_prompt_tokens(),
        usage.completion_tokens,
    );
    let per = |ms: f64, n: usize| if n > 0 { ms / n as f64 } else { 0.0 };
    let rate = |ms: f64, n: usize| {
        if ms > 0.0 {
            n as f64 * 1000.0 / ms
        } else {
            0.0
        }
    };
    let (pm, gm) = (
        t.prompt.as_secs_f64() * 1000.0,
        t.predicted.as_secs_f64() * 1000.0,
    );
    TimingsOut {
        cache_n,
        prompt_n,
        prompt_ms: pm,
        prompt_per_token_ms: per(pm, prompt_n),
        prompt_per_second: rate(pm, prompt_n),
        predicted_n,
        predicted_ms: gm,
        predicted_per_token_ms: per(gm, predicted_n),
        predicted_per_second: rate(gm, predicted_n),
    }
}

/// The final `/completion` object (also the last streamed one).
#[derive(Debug, Serialize)]
struct Final<'a> {
    index: u32,
    content: &'a str,
    tokens: Vec<u32>,
    id_slot: i32,
    stop: bool,
    model: &'a str,
    tokens_predicted: usize,
    tokens_evaluated: usize,
    generation_settings: GenerationSettings,
    prompt: &'a str,
    has_new_line: bool,
    truncated: bool,
    stop_type: &'static str,
    stopping_word: &'a str,
    tokens_cached: usize,
    timings: TimingsOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_probabilities: Option<Vec<ProbEntry>>,
}

/// One streamed token.
#[derive(Debug, Serialize)]
struct Partial<'a> {
    index: u32,
    content: &'a str,
    tokens: [u32; 1],
    stop: bool,
    id_slot: i32,
    tokens_predicted: usize,
    tokens_evaluated: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_probabilities: Option<Vec<ProbEntry>>,
}

fn stop_type(reason: FinishReason, word: Option<&str>) -> &'static str {
    match (reason, word) {
        (FinishReason::Length, _) => "limit",
        (FinishReason::Stop, Some(_)) => "word",
        (FinishReason::Stop | FinishReason::ToolCalls, None) => "eos",
        (FinishReason::ToolCalls, Some(_)) => "word",
    }
}

fn settings(
    s: &SamplingParams,
    n_predict: i64,
    stop: &[String],
    n_probs: usize,
    ignore_eos: bool,
) -> GenerationSettings {
    GenerationSettings {
        n_predict,
        temperature: s.temperature,
        top_k: s.top_k,
        top_p: s.top_p,
        min_p: s.min_p,
        repeat_penalty: s.repeat_penalty,
        repeat_last_n: i64::try_from(s.repeat_last_n).unwrap_or(-1),
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
        seed: s.seed,
        stop: stop.to_vec(),
        n_probs,
        ignore_eos,
    }
}

/// A `/completion` request with every field checked: what the handler needs besides the model
/// name and the engine.
#[derive(Debug)]
pub struct CompletionSettings {
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// `n_predict` (or `max_tokens`); `None` (or -1) = until the context is full.
    pub requested: Option<usize>,
    pub n_probs: usize,
    pub ignore_eos: bool,
    pub stream: bool,
    /// `json_schema` or `grammar`, with the field it came from.
    pub grammar: Option<(&'static str, Grammar)>,
    /// `cache_prompt`, default true.
    pub cache_prompt: bool,
}

impl CompletionRequest {
    /// Checks every field but `model` (which needs the server's names): a 400 naming the
    /// parameter for anything this server does not accept.
    pub fn settings(&self) -> Result<CompletionSettings, ApiError> {
        let prompt = params::prompt(self.prompt.as_ref())?;
        let sampling = params::sampling(&params::raw_sampling!(self))?;
        let stop = params::stop_list(self.stop.as_ref())?;
        let (name, raw_n) = match self.n_predict {
            Some(n) => ("n_predict", Some(n)),
            None => ("max_tokens", self.max_tokens),
        };
        let requested = match raw_n {
            Some(-1) | None => None,
            other => params::max_tokens(name, other, true)?,
        };
        let n_probs = match self.n_probs.unwrap_or(0) {
            n if (0..=MAX_N_PROBS).contains(&n) => n as usize,
            n => {
                return Err(ApiError::invalid_param(
                    "n_probs",
                    format!("`n_probs` must be between 0 and {MAX_N_PROBS}, got {n}"),
                ));
            }
        };
        let ignore_eos = self.ignore_eos.unwrap_or(false);
        let stream = self.stream.unwrap_or(false);
        let grammar =
            structured::llama_grammar(self.json_schema.as_ref(), self.grammar.as_deref())?.map(
                |g| {
                    let param = if matches!(g, Grammar::Gbnf(_)) {
                        "grammar"
                    } else {
                        "json_schema"
                    };
                    (param, g)
                },
            );
        Ok(CompletionSettings {
            prompt,
            sampling,
            stop,
            requested,
            n_probs,
            ignore_eos,
            stream,
            grammar,
            cache_prompt: self.cache_prompt.unwrap_or(true),
        })
    }
}

/// `POST /completion`.
pub async fn completion(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    check_model(&state, req.model.as_deref())?;
    let CompletionSettings {
        prompt,
        sampling,
        stop,
        requested,
        n_probs,
        ignore_eos,
        stream,
        grammar,
        cache_prompt,
    } = req.settings()?;

    let engine = generation_engine(&state)?;
    let (prompt_tokens, prompt_text, constraint) = {
        let engine = engine.clone();
        cpu_work(&state, move || {
            let constraint = match &grammar {
                Some((param, g)) => Some(structured::compile(&engine, param, g)?),
                None => None,
            };
            let tokens = super::generate::tokenize_prompt(&*engine.tokenizer, &prompt)?;
            let text = match prompt {
                Prompt::Text(t) => t,
                _ => engine.tokenizer.decode(&tokens).unwrap_or_default(),
            };
            Ok((tokens, text, constraint))
        })
        .await?
    };
    let prompt_n = prompt_tokens.len();
    let max_tokens = params::effective_max_tokens(requested, prompt_n, engine.handle.n_ctx());
    let gen_settings = settings(
        &sampling,
        requested.map(|n| n as i64).unwrap_or(-1),
        &stop,
        n_probs,
        ignore_eos,
    );
    let rx = engine.handle.submit(GenerationRequest {
        prompt_tokens,
        max_tokens,
        sampling,
        stop,
        logprobs: (n_probs > 0).then_some(n_probs),
        ignore_eos,
        constraint,
        n: 1,
        cache_prompt,
    })?;
    let model = state.model_id.clone();

    if !stream {
        let done = collect(rx, 1).await?.swap_remove(0);
        let infos: Vec<&LogprobInfo> = done
            .tokens
            .iter()
            .filter_map(|t| t.logprob.as_ref())
            .collect();
        let body = Final {
            index: 0,
            content: &done.text,
            tokens: done.tokens.iter().map(|t| t.id).collect(),
            id_slot: 0,
            stop: true,
            model: &model,
            tokens_predicted: done.usage.completion_tokens,
            tokens_evaluated: prompt_n,
            generation_settings: gen_settings,
            prompt: &prompt_text,
            has_new_line: done.text.contains('\n'),
            truncated: false,
            stop_type: stop_type(done.finish_reason, done.stop_word.as_deref()),
            stopping_word: done.stop_word.as_deref().unwrap_or(""),
            tokens_cached: prompt_n + done.usage.completion_tokens,
            timings: timings_out(done.timings, done.usage),
            completion_probabilities: (n_probs > 0).then(|| probs(&infos)),
        };
        return Ok(Json(body).into_response());
    }

    let mut clock = Clock::start();
    let mut predicted = 0usize;
    let mut has_new_line = false;
    Ok(sse_response(
        rx,
        state.cancel.clone(),
        move |event| match event {
            Some(Event::Token {
                id, text, logprob, ..
            }) => {
                clock.token();
                predicted += 1;
                has_new_line |= text.contains('\n');
                let partial = Partial {
                    index: 0,
                    content: &text,
                    tokens: [id],
                    stop: false,
                    id_slot: 0,
                    tokens_predicted: predicted,
                    tokens_evaluated: prompt_n,
                    completion_probabilities: logprob.as_ref().map(|l| probs(&[l])),
                };
                (vec![json_event(&partial)], false)
            }
            Some(Event::Done {
                finish_reason,
                usage,
                stop_word,
                text,
                ..
            }) => {
                let last = Final {
                    index: 0,
                    content: &text,
                    tokens: vec![],
                    id_slot: 0,
                    stop: true,
                    model: &model,
                    tokens_predicted: usage.completion_tokens,
                    tokens_evaluated: prompt_n,
                    generation_settings: gen_settings.clone(),
                    prompt: &prompt_text,
                    has_new_line: has_new_line || text.contains('\n'),
                    truncated: false,
                    stop_type: stop_type(finish_reason, stop_word.as_deref()),
                    stopping_word: stop_word.as_deref().unwrap_or(""),
                    tokens_cached: prompt_n + usage.completion_tokens,
                    timings: timings_out(clock.timings(), usage),
                    completion_probabilities: None,
                };
                (vec![json_event(&last)], true)
            }
            other => (vec![error_event(&stream_failure(other.as_ref()))], true),
        },
    ))
}

/// `POST /tokenize` body.
#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub content: String,
    pub add_special: Option<bool>,
    pub parse_special: Option<bool>,
    pub with_pieces: Option<bool>,
}

/// One `with_pieces` entry: the piece is a string when it is valid UTF-8 on its own and a byte
/// array otherwise.
#[derive(Serialize)]
struct Piece {
    id: u32,
    piece: PieceText,
}

#[derive(Serialize)]
#[serde(untagged)]
enum PieceText {
    Text(String),
    Bytes(Vec<u8>),
}

/// `POST /tokenize`: `{"tokens": [ids]}`, or with `with_pieces` `[{"id", "piece"}]`. At most
/// [`super::generate::MAX_REQUEST_TOKENS`] tokens; the work runs off the async workers and the body is
/// serialised straight to bytes (no JSON value per token).
pub async fn tokenize(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TokenizeRequest>,
) -> Result<Response, ApiError> {
    let engine = ready_engine(&state)?;
    let body = cpu_work(&state, move || tokenize_body(&*engine.tokenizer, req)).await?;
    Ok(json_bytes(body))
}

/// The `/tokenize` response body for a request: the ids (or ids with pieces), serialised, or a
/// 400 when the content is more than [`super::generate::MAX_REQUEST_TOKENS`] tokens.
pub fn tokenize_body(tok: &dyn TokenCodec, req: TokenizeRequest) -> Result<Vec<u8>, ApiError> {
    let ids = tok
        .encode(
            &req.content,
            req.add_special.unwrap_or(false),
            req.parse_special.unwrap_or(true),
        )
        .map_err(|e| ApiError::invalid_param("content", format!("could not tokenize: {e}")))?;
    drop(req.content);
    check_token_count("content", ids.len())?;
    let body = if req.with_pieces.unwrap_or(false) {
        let pieces: Vec<Piece> = ids
            .iter()
            .map(|&id| Piece {
                id,
                piece: match String::from_utf8(tok.token_bytes(id).unwrap_or_default()) {
                    Ok(s) => PieceText::Text(s),
                    Err(e) => PieceText::Bytes(e.into_bytes()),
                },
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({ "tokens": pieces }))
    } else {
        serde_json::to_vec(&serde_json::json!({ "tokens": ids }))
    };
    body.map_err(|e| ApiError::internal(format!("could not encode the response: {e}")))
}

/// A JSON response from already serialised bytes.
fn json_bytes(body: Vec<u8>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// `POST /detokenize` body.
#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    pub tokens: Vec<u32>,
}

/// `POST /detokenize`: `{"content": text}`. At most [`super::generate::MAX_REQUEST_TOKENS`] tokens, decoded off
/// the async workers.
pub async fn detokenize(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<DetokenizeRequest>,
) -> Result<Response, ApiError> {
    let engine = ready_engine(&state)?;
    let content = cpu_work(&state, move || detokenize_content(&*engine.tokenizer, &req)).await?;
    Ok(Json(serde_json::json!({ "content": content })).into_response())
}

/// The `/detokenize` text for a request: a 400 for more than
/// [`super::generate::MAX_REQUEST_TOKENS`] tokens or an id outside the vocabulary.
pub fn detokenize_content(
    tok: &dyn TokenCodec,
    req: &DetokenizeRequest,
) -> Result<String, ApiError> {
    check_token_count("tokens", req.tokens.len())?;
    tok.decode(&req.tokens)
        .map_err(|e| ApiError::invalid_param("tokens", e.to_string()))
}
