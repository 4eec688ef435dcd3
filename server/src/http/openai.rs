//! OpenAI-compatible endpoints: `POST /v1/chat/completions`, `POST /v1/completions`,
//! `GET /v1/models`; streaming as SSE chunks ending with `data: [DONE]`.
//!
//! Supported beyond the basics: `stop`, `seed`, `max_tokens`/`max_completion_tokens`,
//! `stream_options.include_usage`, `logprobs`/`top_logprobs` (chat) and `logprobs` (completions),
//! and llama.cpp's sampling extensions (`top_k`, `min_p`, `repeat_penalty`, `repeat_last_n`,
//! `ignore_eos`). Refused with a clear 400: `n`/`best_of` ≠ 1, tools/function calling,
//! non-text content parts, `echo`, `suffix`, JSON response formats.
//!
//! This module does NOT implement generation; it maps requests onto the engine and events onto
//! OpenAI's response shapes.

use axum::Json;
use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use super::generate::{
    self, CollectedToken, check_model, collect, error_event, generation_engine, json_event,
    response_id, sse_response, stream_failure, unix_now,
};
use super::json::ApiJson;
use super::params::{self, Prompt};
use crate::engine::{
    Event, FinishReason, GenerationRequest, LogprobInfo, TokenCodec, TokenLogprob, Usage,
};
use crate::sampling::SamplingParams;
use bitnet_tokenizer::ChatMessage;

/// The most alternatives per token for `top_logprobs` / `logprobs`.
pub const MAX_TOP_LOGPROBS: i64 = 20;

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct InMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Value>,
}

/// `POST /v1/chat/completions` body.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<InMessage>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub repeat_last_n: Option<i64>,
    pub seed: Option<i64>,
    pub stop: Option<Value>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<i64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    pub ignore_eos: Option<bool>,
    pub tools: Option<Value>,
    pub functions: Option<Value>,
    pub response_format: Option<Value>,
}

/// `POST /v1/completions` body.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Option<Value>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub repeat_last_n: Option<i64>,
    pub seed: Option<i64>,
    pub stop: Option<Value>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<i64>,
    pub best_of: Option<i64>,
    pub logprobs: Option<i64>,
    pub echo: Option<bool>,
    pub suffix: Option<String>,
    pub ignore_eos: Option<bool>,
}

// ----- response shapes -----

#[derive(Debug, Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Debug, Serialize)]
struct ChatLogprobEntry {
    token: String,
    logprob: f32,
    bytes: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<Vec<ChatLogprobEntry>>,
}

#[derive(Debug, Serialize)]
struct ChatLogprobs {
    content: Vec<ChatLogprobEntry>,
}

#[derive(Debug, Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<ChatLogprobs>,
    finish_reason: FinishReason,
}

#[derive(Debug, Serialize)]
struct ChatCompletion<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'a str,
    choices: Vec<ChatChoice<'a>>,
    usage: Usage,
}

#[derive(Debug, Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<ChatLogprobs>,
    finish_reason: Option<FinishReason>,
}

#[derive(Debug, Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'a str,
    choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Debug, Serialize, Default)]
struct CompletionLogprobs {
    tokens: Vec<String>,
    token_logprobs: Vec<f32>,
    top_logprobs: Vec<serde_json::Map<String, Value>>,
    text_offset: Vec<usize>,
}

#[derive(Debug, Serialize)]
struct CompletionChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<CompletionLogprobs>,
    finish_reason: Option<FinishReason>,
}

#[derive(Debug, Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'a str,
    choices: Vec<CompletionChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

fn token_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn chat_entry(t: &TokenLogprob, top: Option<&[TokenLogprob]>) -> ChatLogprobEntry {
    ChatLogprobEntry {
        token: token_text(&t.bytes),
        logprob: t.logprob,
        bytes: t.bytes.clone(),
        top_logprobs: top.map(|top| top.iter().map(|t| chat_entry(t, None)).collect()),
    }
}

fn chat_logprobs(infos: &[&LogprobInfo]) -> ChatLogprobs {
    ChatLogprobs {
        content: infos
            .iter()
            .map(|i| chat_entry(&i.chosen, Some(&i.top)))
            .collect(),
    }
}

fn completion_logprobs(infos: &[&LogprobInfo], start_offset: usize) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    let mut offset = start_offset;
    for info in infos {
        let text = token_text(&info.chosen.bytes);
        out.text_offset.push(offset);
        offset += text.len();
        out.tokens.push(text);
        out.token_logprobs.push(info.chosen.logprob);
        let mut map = serde_json::Map::new();
        for t in &info.top {
            map.insert(token_text(&t.bytes), Value::from(t.logprob));
        }
        out.top_logprobs.push(map);
    }
    out
}

fn fingerprint(engine: &crate::engine::Engine) -> String {
    format!(
        "bitnet-server-{}-{}",
        env!("CARGO_PKG_VERSION"),
        engine.kernel
    )
}

// ----- chat -----

fn message_text(index: usize, content: Option<&Value>) -> Result<String, ApiError> {
    let param = format!("messages[{index}].content");
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(text)) => texts.push(text.to_string()),
                    (Some(other), _) if other != "text" => {
                        return Err(ApiError::invalid_param(
                            &param,
                            format!(
                                "`{param}[{j}]` has type `{other}`; only text content is \
                                 supported by this model"
                            ),
                        ));
                    }
                    _ => {
                        return Err(ApiError::invalid_param(
                            &param,
                            format!(
                                "`{param}[{j}]` must be {{\"type\": \"text\", \"text\": \"…\"}}"
                            ),
                        ));
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        Some(other) => Err(ApiError::invalid_param(
            &param,
            format!(
                "`{param}` must be a string or an array of text parts, got {}",
                params::type_name(other)
            ),
        )),
    }
}

fn parse_messages(messages: &[InMessage]) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "`messages` is empty: send at least one message, e.g. \
             [{\"role\": \"user\", \"content\": \"Hello\"}]",
        ));
    }
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            "tool" => "tool",
            other => {
                return Err(ApiError::invalid_param(
                    &format!("messages[{i}].role"),
                    format!(
                        "`messages[{i}].role` is {other:?}; expected one of system, developer, \
                         user, assistant, tool"
                    ),
                ));
            }
        };
        out.push(ChatMessage {
            role: role.to_string(),
            content: message_text(i, m.content.as_ref())?,
        });
    }
    Ok(out)
}

fn non_empty(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

/// A requested number of alternatives per token (`top_logprobs` of chat, `logprobs` of legacy
/// completions): 0 to [`MAX_TOP_LOGPROBS`], else a 400 naming `param`.
fn logprob_count(param: &'static str, n: i64) -> Result<usize, ApiError> {
    if (0..=MAX_TOP_LOGPROBS).contains(&n) {
        return Ok(n as usize);
    }
    Err(ApiError::invalid_param(
        param,
        format!("`{param}` must be between 0 and {MAX_TOP_LOGPROBS}, got {n}"),
    ))
}

/// `stream_options.include_usage`, false when absent.
fn include_usage(options: Option<&StreamOptions>) -> bool {
    options.and_then(|o| o.include_usage).unwrap_or(false)
}

/// A chat request with every field checked: what the handler needs besides the model name
/// and the engine.
#[derive(Debug)]
pub struct ChatSettings {
    pub messages: Vec<ChatMessage>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// `max_completion_tokens` or `max_tokens`; `None` = until the context is full.
    pub requested: Option<usize>,
    pub logprobs: Option<usize>,
    pub stream: bool,
    pub include_usage: bool,
    pub ignore_eos: bool,
}

impl ChatRequest {
    /// Checks every field but `model` (which needs the server's names): a 400 naming the
    /// parameter for anything this server does not accept.
    pub fn settings(&self) -> Result<ChatSettings, ApiError> {
        params::check_n("n", self.n)?;
        if non_empty(&self.tools) || non_empty(&self.functions) {
            return Err(ApiError::invalid_param(
                "tools",
                "tool and function calling are not supported by this server",
            ));
        }
        if let Some(format) = &self.response_format {
            let kind = format.get("type").and_then(Value::as_str);
            if kind != Some("text") {
                return Err(ApiError::invalid_param(
                    "response_format",
                    "only `response_format: {\"type\": \"text\"}` is supported",
                ));
            }
        }
        let messages = parse_messages(&self.messages)?;
        let sampling = params::sampling(&params::raw_sampling!(self))?;
        let stop = params::stop_list(self.stop.as_ref())?;
        let requested = match self.max_completion_tokens {
            Some(n) => params::max_tokens("max_completion_tokens", Some(n), false)?,
            None => params::max_tokens("max_tokens", self.max_tokens, false)?,
        };
        let logprobs = match (self.logprobs.unwrap_or(false), self.top_logprobs) {
            (false, None) => None,
            (false, Some(_)) => {
                return Err(ApiError::invalid_param(
                    "top_logprobs",
                    "`top_logprobs` requires `logprobs: true`",
                ));
            }
            (true, None) => Some(0),
            (true, Some(n)) => Some(logprob_count("top_logprobs", n)?),
        };
        Ok(ChatSettings {
            messages,
            sampling,
            stop,
            requested,
            logprobs,
            stream: self.stream.unwrap_or(false),
            include_usage: include_usage(self.stream_options.as_ref()),
            ignore_eos: self.ignore_eos.unwrap_or(false),
        })
    }
}

/// The prompt tokens of a chat: the model's chat template, then the tokenizer with special
/// tokens parsed (the template writes BOS itself).
pub fn chat_prompt(tok: &dyn TokenCodec, messages: &[ChatMessage]) -> Result<Vec<u32>, ApiError> {
    let rendered = tok.apply_chat_template(messages, true).map_err(|e| {
        ApiError::invalid_param(
            "messages",
            format!("the chat template rejected the messages: {e}"),
        )
    })?;
    tok.encode(&rendered, false, true).map_err(|e| {
        ApiError::invalid_param(
            "messages",
            format!("the messages could not be tokenized: {e}"),
        )
    })
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    check_model(&state, req.model.as_deref())?;
    let ChatSettings {
        messages,
        sampling,
        stop,
        requested,
        logprobs,
        stream,
        include_usage,
        ignore_eos,
    } = req.settings()?;

    let engine = generation_engine(&state)?;
    let prompt_tokens = {
        let engine = engine.clone();
        generate::cpu_work(&state, move || chat_prompt(&*engine.tokenizer, &messages)).await?
    };
    let max_tokens =
        params::effective_max_tokens(requested, prompt_tokens.len(), engine.handle.n_ctx());
    let rx = engine.handle.submit(GenerationRequest {
        prompt_tokens,
        max_tokens,
        sampling,
        stop,
        logprobs,
        ignore_eos,
    })?;

    let id = response_id("chatcmpl");
    let created = unix_now();
    let model = state.model_id.clone();
    let fingerprint = fingerprint(&engine);
    if !stream {
        let done = collect(rx).await?;
        let infos: Vec<&LogprobInfo> = done
            .tokens
            .iter()
            .filter_map(|t: &CollectedToken| t.logprob.as_ref())
            .collect();
        let body = ChatCompletion {
            id,
            object: "chat.completion",
            created,
            model: &model,
            system_fingerprint: &fingerprint,
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: &done.text,
                },
                logprobs: logprobs.map(|_| chat_logprobs(&infos)),
                finish_reason: done.finish_reason,
            }],
            usage: done.usage,
        };
        return Ok(Json(body).into_response());
    }

    let mut sent_role = false;
    let usage_chunk = {
        let (id, model, fp) = (id.clone(), model.clone(), fingerprint.clone());
        move |usage: Usage| {
            json_event(&ChatChunk {
                id: &id,
                object: "chat.completion.chunk",
                created,
                model: &model,
                system_fingerprint: &fp,
                choices: vec![],
                usage: Some(usage),
            })
        }
    };
    let chunk =
        move |delta: Delta<'_>, logprobs: Option<ChatLogprobs>, finish: Option<FinishReason>| {
            json_event(&ChatChunk {
                id: &id,
                object: "chat.completion.chunk",
                created,
                model: &model,
                system_fingerprint: &fingerprint,
                choices: vec![ChunkChoice {
                    index: 0,
                    delta,
                    logprobs,
                    finish_reason: finish,
                }],
                usage: None,
            })
        };
    Ok(sse_response(rx, state.cancel.clone(), move |event| {
        let mut out: Vec<SseEvent> = Vec::new();
        if !sent_role {
            sent_role = true;
            out.push(chunk(
                Delta {
                    role: Some("assistant"),
                    content: Some(""),
                },
                None,
                None,
            ));
        }
        match event {
            Some(Event::Token { text, logprob, .. }) => {
                let lp = logprob.as_ref().map(|l| chat_logprobs(&[l]));
                if !text.is_empty() || lp.is_some() {
                    out.push(chunk(
                        Delta {
                            role: None,
                            content: Some(&text),
                        },
                        lp,
                        None,
                    ));
                }
                (out, false)
            }
            Some(Event::Done {
                finish_reason,
                usage,
                text,
                ..
            }) => {
                if !text.is_empty() {
                    out.push(chunk(
                        Delta {
                            role: None,
                            content: Some(&text),
                        },
                        None,
                        None,
                    ));
                }
                out.push(chunk(Delta::default(), None, Some(finish_reason)));
                if include_usage {
                    out.push(usage_chunk(usage));
                }
                out.push(SseEvent::default().data("[DONE]"));
                (out, true)
            }
            other => {
                out.push(error_event(&stream_failure(other.as_ref())));
                (out, true)
            }
        }
    }))
}

// ----- completions -----

/// A completion request with every field checked: what the handler needs besides the model
/// name and the engine.
#[derive(Debug)]
pub struct CompletionSettings {
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// `max_tokens`, 16 when absent (OpenAI's default for legacy completions).
    pub requested: Option<usize>,
    pub logprobs: Option<usize>,
    pub stream: bool,
    pub include_usage: bool,
    pub ignore_eos: bool,
}

impl CompletionRequest {
    /// Checks every field but `model` (which needs the server's names): a 400 naming the
    /// parameter for anything this server does not accept.
    pub fn settings(&self) -> Result<CompletionSettings, ApiError> {
        params::check_n("n", self.n)?;
        params::check_n("best_of", self.best_of)?;
        if self.echo.unwrap_or(false) {
            return Err(ApiError::invalid_param(
                "echo",
                "`echo: true` is not supported",
            ));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::invalid_param(
                "suffix",
                "`suffix` (insertion) is not supported",
            ));
        }
        let prompt = params::prompt(self.prompt.as_ref())?;
        let sampling = params::sampling(&params::raw_sampling!(self))?;
        let stop = params::stop_list(self.stop.as_ref())?;
        // OpenAI's legacy completions default to 16 tokens.
        let requested = params::max_tokens("max_tokens", self.max_tokens, false)?.or(Some(16));
        let logprobs = match self.logprobs {
            None => None,
            Some(n) => Some(logprob_count("logprobs", n)?),
        };
        Ok(CompletionSettings {
            prompt,
            sampling,
            stop,
            requested,
            logprobs,
            stream: self.stream.unwrap_or(false),
            include_usage: include_usage(self.stream_options.as_ref()),
            ignore_eos: self.ignore_eos.unwrap_or(false),
        })
    }
}

/// `POST /v1/completions`.
pub async fn completions(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    check_model(&state, req.model.as_deref())?;
    let CompletionSettings {
        prompt,
        sampling,
        stop,
        requested,
        logprobs,
        stream,
        include_usage,
        ignore_eos,
    } = req.settings()?;

    let engine = generation_engine(&state)?;
    let prompt_tokens = {
        let engine = engine.clone();
        generate::cpu_work(&state, move || {
            generate::tokenize_prompt(&*engine.tokenizer, &prompt)
        })
        .await?
    };
    let max_tokens =
        params::effective_max_tokens(requested, prompt_tokens.len(), engine.handle.n_ctx());
    let rx = engine.handle.submit(GenerationRequest {
        prompt_tokens,
        max_tokens,
        sampling,
        stop,
        logprobs,
        ignore_eos,
    })?;

    let id = response_id("cmpl");
    let created = unix_now();
    let model = state.model_id.clone();
    let fingerprint = fingerprint(&engine);
    if !stream {
        let done = collect(rx).await?;
        let infos: Vec<&LogprobInfo> = done
            .tokens
            .iter()
            .filter_map(|t| t.logprob.as_ref())
            .collect();
        let body = Completion {
            id: &id,
            object: "text_completion",
            created,
            model: &model,
            system_fingerprint: &fingerprint,
            choices: vec![CompletionChoice {
                text: &done.text,
                index: 0,
                logprobs: logprobs.map(|_| completion_logprobs(&infos, 0)),
                finish_reason: Some(done.finish_reason),
            }],
            usage: Some(done.usage),
        };
        return Ok(Json(body).into_response());
    }

    let mut offset = 0usize;
    let chunk = move |text: &str,
                      lp: Option<CompletionLogprobs>,
                      finish: Option<FinishReason>,
                      usage: Option<Usage>| {
        let choices = if usage.is_some() {
            vec![]
        } else {
            vec![CompletionChoice {
                text,
                index: 0,
                logprobs: lp,
                finish_reason: finish,
            }]
        };
        json_event(&Completion {
            id: &id,
            object: "text_completion",
            created,
            model: &model,
            system_fingerprint: &fingerprint,
            choices,
            usage,
        })
    };
    Ok(sse_response(
        rx,
        state.cancel.clone(),
        move |event| match event {
            Some(Event::Token { text, logprob, .. }) => {
                let lp = logprob.as_ref().map(|l| completion_logprobs(&[l], offset));
                offset += text.len();
                if text.is_empty() && lp.is_none() {
                    return (vec![], false);
                }
                (vec![chunk(&text, lp, None, None)], false)
            }
            Some(Event::Done {
                finish_reason,
                usage,
                text,
                ..
            }) => {
                let mut out = vec![chunk(&text, None, Some(finish_reason), None)];
                if include_usage {
                    out.push(chunk("", None, None, Some(usage)));
                }
                out.push(SseEvent::default().data("[DONE]"));
                (out, true)
            }
            other => (vec![error_event(&stream_failure(other.as_ref()))], true),
        },
    ))
}

// ----- models -----

#[derive(Debug, Serialize)]
struct ModelEntry<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

#[derive(Debug, Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelEntry<'a>>,
}

/// `GET /v1/models`: the one model this server serves (listed before it is ready, too), first
/// under its id, then once under each `--alias`. An alias is an entry of its own (as
/// llama-swap's and LM Studio's aliases are) so that a client which checks its configured name
/// against this list, or offers the list in a menu, finds the alias; `data[0]` stays the id,
/// the name every response carries.
pub async fn models(State(state): State<AppState>) -> Response {
    Json(ModelList {
        object: "list",
        data: state
            .listed_models
            .iter()
            .map(|id| ModelEntry {
                id,
                object: "model",
                created: state.created,
                owned_by: "bitnet-server",
            })
            .collect(),
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_are_validated() {
        let e = parse_messages(&[]).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        let msg = |role: &str, content: Value| InMessage {
            role: role.into(),
            content: Some(content),
        };
        let ok = parse_messages(&[
            msg("developer", json!("be brief")),
            msg(
                "user",
                json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]),
            ),
        ])
        .unwrap();
        assert_eq!(ok[0].role, "system");
        assert_eq!(ok[1].content, "a\nb");
        let e = parse_messages(&[msg("wizard", json!("x"))]).unwrap_err();
        assert!(e.message.contains("wizard"), "{}", e.message);
        let e = parse_messages(&[msg("user", json!([{"type": "image_url", "image_url": {}}]))])
            .unwrap_err();
        assert!(e.message.contains("only text"), "{}", e.message);
        let e = parse_messages(&[msg("user", json!(5))]).unwrap_err();
        assert!(e.message.contains("messages[0].content"), "{}", e.message);
    }
}
