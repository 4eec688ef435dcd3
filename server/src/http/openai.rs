//! OpenAI-compatible endpoints: `POST /v1/chat/completions`, `POST /v1/completions`,
//! `GET /v1/models`; streaming as SSE chunks ending with `data: [DONE]`.
//!
//! Supported beyond the basics: `n` (several choices from one prompt pass), `stop`, `seed`,
//! `max_tokens`/`max_completion_tokens`, `stream_options.include_usage`,
//! `logprobs`/`top_logprobs` (chat) and `logprobs` (completions), structured outputs
//! (`response_format` `json_object`/`json_schema`, see `structured.rs`), tool calling (`tools`,
//! `tool_choice`, `parallel_tool_calls`, the `tool` role, see `tools.rs`), and llama.cpp's
//! sampling extensions (`top_k`, `min_p`, `repeat_penalty`, `repeat_last_n`, `ignore_eos`).
//! Refused with a clear 400: `best_of` ≠ 1, the legacy `functions`, non-text content parts,
//! `echo`, `suffix`. `usage.prompt_tokens_details.cached_tokens` counts the prompt tokens taken
//! from the prompt cache (every request may use it).
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
use super::structured;
use super::tools::{self, DeltaToolCall, MessageToolCall, Reply, StreamDelta, ToolStream, Tools};
use crate::engine::{
    Event, FinishReason, GenerationRequest, LogprobInfo, MAX_CHOICES, TokenCodec, TokenLogprob,
    Usage,
};
use crate::sampling::SamplingParams;
use bitnet_constraint::Grammar;
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
    /// The calls an earlier assistant turn made.
    #[serde(default)]
    pub tool_calls: Option<Value>,
    /// Which call a `tool` message answers.
    #[serde(default)]
    pub tool_call_id: Option<Value>,
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
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
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
    /// `null` when the reply is tool calls (OpenAI's shape).
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<MessageToolCall<'a>>>,
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
    index: usize,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<DeltaToolCall<'a>>>,
}

#[derive(Debug, Serialize)]
struct ChunkChoice<'a> {
    index: usize,
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
    index: usize,
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

/// The conversation as the chat template sees it: roles checked (`developer` is `system`),
/// content parts joined, earlier tool calls and `tool` results rendered in the tool-call format
/// (`tools::History`), and, when `tools` are offered, their instructions at the start of the
/// system message (a new first message when there is none).
fn parse_messages(
    messages: &[InMessage],
    tools: Option<&Tools>,
) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "`messages` is empty: send at least one message, e.g. \
             [{\"role\": \"user\", \"content\": \"Hello\"}]",
        ));
    }
    let mut out = Vec::with_capacity(messages.len() + 1);
    let mut history = tools::History::new();
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
        let text = message_text(i, m.content.as_ref())?;
        let content = match role {
            "assistant" => history.assistant_text(i, &text, m.tool_calls.as_ref())?,
            "tool" => history.tool_result_text(i, m.tool_call_id.as_ref(), &text)?,
            _ => text,
        };
        out.push(ChatMessage {
            role: role.to_string(),
            content,
        });
    }
    let instructions = tools.map(Tools::system_prompt).unwrap_or_default();
    if !instructions.is_empty() {
        match out.first_mut() {
            Some(first) if first.role == "system" => {
                first.content = format!("{instructions}\n\n{}", first.content);
            }
            _ => out.insert(0, ChatMessage::new("system", instructions)),
        }
    }
    Ok(out)
}

/// OpenAI's `n`: 1 when absent, at most [`MAX_CHOICES`] (the engine also bounds it by the
/// server's `--parallel`).
fn choice_count(n: Option<i64>) -> Result<usize, ApiError> {
    match n {
        None => Ok(1),
        Some(n) if (1..=MAX_CHOICES as i64).contains(&n) => Ok(n as usize),
        Some(n) => Err(ApiError::invalid_param(
            "n",
            format!("`n` must be between 1 and {MAX_CHOICES} (choices to generate), got {n}"),
        )),
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
    /// Choices to generate.
    pub n: usize,
    /// What the reply must match: the tool-call format when tools may be called, else the
    /// `response_format`, with the field it came from (named in a 400).
    pub grammar: Option<(&'static str, Grammar)>,
    /// The tools the model may call (none under `tool_choice: "none"`): the reply is read back
    /// as tool calls or text.
    pub tools: Option<Tools>,
}

impl ChatRequest {
    /// Checks every field but `model` (which needs the server's names): a 400 naming the
    /// parameter for anything this server does not accept.
    pub fn settings(&self) -> Result<ChatSettings, ApiError> {
        let n = choice_count(self.n)?;
        let tools = Tools::parse(
            self.tools.as_ref(),
            self.tool_choice.as_ref(),
            self.parallel_tool_calls,
            self.functions.as_ref(),
        )?;
        let format = structured::response_format(self.response_format.as_ref())?;
        let grammar = reply_grammar(tools.as_ref(), format);
        let messages = parse_messages(&self.messages, tools.as_ref())?;
        let tools = tools.filter(|t| t.choice != tools::ToolChoice::None);
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
            n,
            grammar,
            tools,
        })
    }
}

/// The grammar of a chat reply: with tools that may be called, the tool-call format (under
/// `auto`, or text — or the `response_format`'s JSON when one is set); else the
/// `response_format`'s.
fn reply_grammar(
    tools: Option<&Tools>,
    format: Option<Grammar>,
) -> Option<(&'static str, Grammar)> {
    match tools {
        Some(t) if t.choice != tools::ToolChoice::None => {
            t.grammar(format.as_ref()).map(|g| ("tools", g))
        }
        _ => format.map(|g| ("response_format", g)),
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

/// What one choice of a streamed chat reply has sent so far.
struct ChoiceState {
    sent_role: bool,
    /// Reads the reply as tool calls or text when tools are offered.
    tools: Option<ToolStream>,
    /// A tool call was streamed: the choice finishes with `tool_calls`.
    called: bool,
    completion_tokens: usize,
}

/// The chunks of a choice's new text: content as it comes, or tool-call increments (`end`:
/// the reply is over, release what the reader held back). `chunk` builds one SSE event.
fn text_chunks(
    state: &mut ChoiceState,
    index: usize,
    text: &str,
    mut lp: Option<ChatLogprobs>,
    end: bool,
    out: &mut Vec<SseEvent>,
    chunk: &impl Fn(usize, Delta<'_>, Option<ChatLogprobs>, Option<FinishReason>) -> SseEvent,
) {
    let deltas = match &mut state.tools {
        None if text.is_empty() => Vec::new(),
        None => vec![StreamDelta::Content(text.to_string())],
        Some(reader) => {
            let mut d = reader.push(text);
            if end {
                d.extend(reader.finish());
            }
            d
        }
    };
    for delta in &deltas {
        let body = match delta {
            StreamDelta::Content(text) => Delta {
                content: Some(text),
                ..Delta::default()
            },
            call => {
                state.called = true;
                Delta {
                    tool_calls: call.tool_call().map(|c| vec![c]),
                    ..Delta::default()
                }
            }
        };
        out.push(chunk(index, body, lp.take(), None));
    }
    if let Some(lp) = lp {
        // The log-probabilities of a token whose text is held back still go out.
        out.push(chunk(index, Delta::default(), Some(lp), None));
    }
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
        n,
        grammar,
        tools,
    } = req.settings()?;

    let engine = generation_engine(&state)?;
    let (prompt_tokens, constraint) = {
        let engine = engine.clone();
        let tools = tools.clone();
        generate::cpu_work(&state, move || {
            let constraint = match (&grammar, &tools) {
                // A tool grammar that does not compile: the error names the function.
                (Some(("tools", g)), Some(t)) => {
                    Some(structured::compile_or(&engine, g, |v, e| {
                        t.grammar_error(v, &e)
                    })?)
                }
                (Some((param, g)), _) => Some(structured::compile(&engine, param, g)?),
                (None, _) => None,
            };
            Ok((chat_prompt(&*engine.tokenizer, &messages)?, constraint))
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
        constraint,
        n,
        // OpenAI's endpoints always reuse cached prefixes (as OpenAI's own API does).
        cache_prompt: true,
    })?;

    let id = response_id("chatcmpl");
    let created = unix_now();
    let model = state.model_id.clone();
    let fingerprint = fingerprint(&engine);
    let with_tools = tools.is_some();
    if !stream {
        let done = collect(rx, n).await?;
        let replies: Vec<Reply> = done
            .iter()
            .map(|c| match with_tools {
                true => tools::parse_reply(&c.text),
                false => Reply::Content(c.text.clone()),
            })
            .collect();
        let choices = done
            .iter()
            .zip(&replies)
            .enumerate()
            .map(|(index, (c, reply))| {
                let infos: Vec<&LogprobInfo> = c
                    .tokens
                    .iter()
                    .filter_map(|t: &CollectedToken| t.logprob.as_ref())
                    .collect();
                let (message, finish_reason) = match reply {
                    Reply::Content(text) => (
                        AssistantMessage {
                            role: "assistant",
                            content: Some(text),
                            tool_calls: None,
                        },
                        c.finish_reason,
                    ),
                    Reply::ToolCalls(calls) => (
                        AssistantMessage {
                            role: "assistant",
                            content: None,
                            tool_calls: Some(calls.iter().map(|c| c.message()).collect()),
                        },
                        FinishReason::ToolCalls,
                    ),
                };
                ChatChoice {
                    index,
                    message,
                    logprobs: logprobs.map(|_| chat_logprobs(&infos)),
                    finish_reason,
                }
            })
            .collect();
        let body = ChatCompletion {
            id,
            object: "chat.completion",
            created,
            model: &model,
            system_fingerprint: &fingerprint,
            choices,
            usage: generate::total_usage(&done),
        };
        return Ok(Json(body).into_response());
    }

    let mut states: Vec<ChoiceState> = (0..n)
        .map(|_| ChoiceState {
            sent_role: false,
            tools: with_tools.then(ToolStream::new),
            called: false,
            completion_tokens: 0,
        })
        .collect();
    let mut remaining = n;
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
    let chunk = move |index: usize,
                      delta: Delta<'_>,
                      logprobs: Option<ChatLogprobs>,
                      finish: Option<FinishReason>| {
        json_event(&ChatChunk {
            id: &id,
            object: "chat.completion.chunk",
            created,
            model: &model,
            system_fingerprint: &fingerprint,
            choices: vec![ChunkChoice {
                index,
                delta,
                logprobs,
                finish_reason: finish,
            }],
            usage: None,
        })
    };
    Ok(sse_response(rx, state.cancel.clone(), move |event| {
        let mut out: Vec<SseEvent> = Vec::new();
        let index = match &event {
            Some(Event::Token { choice, .. } | Event::Done { choice, .. }) => *choice,
            _ => 0,
        };
        let Some(state) = states.get_mut(index) else {
            return (out, false);
        };
        if matches!(event, Some(Event::Token { .. } | Event::Done { .. })) && !state.sent_role {
            state.sent_role = true;
            let delta = Delta {
                role: Some("assistant"),
                content: Some(""),
                ..Delta::default()
            };
            out.push(chunk(index, delta, None, None));
        }
        match event {
            Some(Event::Token { text, logprob, .. }) => {
                state.completion_tokens += 1;
                let lp = logprob.as_ref().map(|l| chat_logprobs(&[l]));
                text_chunks(state, index, &text, lp, false, &mut out, &chunk);
                (out, false)
            }
            Some(Event::Done {
                finish_reason,
                usage,
                text,
                ..
            }) => {
                text_chunks(state, index, &text, None, true, &mut out, &chunk);
                let finish = if state.called {
                    FinishReason::ToolCalls
                } else {
                    finish_reason
                };
                out.push(chunk(index, Delta::default(), None, Some(finish)));
                remaining -= 1;
                if remaining > 0 {
                    return (out, false);
                }
                if include_usage {
                    let completion: usize = states.iter().map(|s| s.completion_tokens).sum();
                    // The prompt was processed once for every choice.
                    out.push(usage_chunk(Usage::new(
                        usage.prompt_tokens,
                        usage.cached_tokens,
                        completion,
                    )));
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
    /// Choices to generate.
    pub n: usize,
}

impl CompletionRequest {
    /// Checks every field but `model` (which needs the server's names): a 400 naming the
    /// parameter for anything this server does not accept.
    pub fn settings(&self) -> Result<CompletionSettings, ApiError> {
        let n = choice_count(self.n)?;
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
            n,
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
        n,
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
        constraint: None,
        n,
        // OpenAI's endpoints always reuse cached prefixes (as OpenAI's own API does).
        cache_prompt: true,
    })?;

    let id = response_id("cmpl");
    let created = unix_now();
    let model = state.model_id.clone();
    let fingerprint = fingerprint(&engine);
    if !stream {
        let done = collect(rx, n).await?;
        let choices = done
            .iter()
            .enumerate()
            .map(|(index, c)| {
                let infos: Vec<&LogprobInfo> =
                    c.tokens.iter().filter_map(|t| t.logprob.as_ref()).collect();
                CompletionChoice {
                    text: &c.text,
                    index,
                    logprobs: logprobs.map(|_| completion_logprobs(&infos, 0)),
                    finish_reason: Some(c.finish_reason),
                }
            })
            .collect();
        let body = Completion {
            id: &id,
            object: "text_completion",
            created,
            model: &model,
            system_fingerprint: &fingerprint,
            choices,
            usage: Some(generate::total_usage(&done)),
        };
        return Ok(Json(body).into_response());
    }

    // Per choice: the text offset so far and the tokens generated.
    let mut offsets = vec![0usize; n];
    let mut generated = vec![0usize; n];
    let mut remaining = n;
    let chunk = move |index: usize,
                      text: &str,
                      lp: Option<CompletionLogprobs>,
                      finish: Option<FinishReason>,
                      usage: Option<Usage>| {
        let choices = if usage.is_some() {
            vec![]
        } else {
            vec![CompletionChoice {
                text,
                index,
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
            Some(Event::Token {
                choice,
                text,
                logprob,
                ..
            }) if choice < n => {
                let lp = logprob
                    .as_ref()
                    .map(|l| completion_logprobs(&[l], offsets[choice]));
                offsets[choice] += text.len();
                generated[choice] += 1;
                if text.is_empty() && lp.is_none() {
                    return (vec![], false);
                }
                (vec![chunk(choice, &text, lp, None, None)], false)
            }
            Some(Event::Done {
                choice,
                finish_reason,
                usage,
                text,
                ..
            }) if choice < n => {
                let mut out = vec![chunk(choice, &text, None, Some(finish_reason), None)];
                remaining -= 1;
                if remaining > 0 {
                    return (out, false);
                }
                if include_usage {
                    let completion: usize = generated.iter().sum();
                    let total = Usage::new(usage.prompt_tokens, usage.cached_tokens, completion);
                    out.push(chunk(0, "", None, None, Some(total)));
                }
                out.push(SseEvent::default().data("[DONE]"));
                (out, true)
            }
            Some(Event::Token { .. } | Event::Done { .. }) => (vec![], false),
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
        let e = parse_messages(&[], None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        let msg = |role: &str, content: Value| InMessage {
            role: role.into(),
            content: Some(content),
            tool_calls: None,
            tool_call_id: None,
        };
        let ok = parse_messages(
            &[
                msg("developer", json!("be brief")),
                msg(
                    "user",
                    json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]),
                ),
            ],
            None,
        )
        .unwrap();
        assert_eq!(ok[0].role, "system");
        assert_eq!(ok[1].content, "a\nb");
        let e = parse_messages(&[msg("wizard", json!("x"))], None).unwrap_err();
        assert!(e.message.contains("wizard"), "{}", e.message);
        let e = parse_messages(
            &[msg("user", json!([{"type": "image_url", "image_url": {}}]))],
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("only text"), "{}", e.message);
        let e = parse_messages(&[msg("user", json!(5))], None).unwrap_err();
        assert!(e.message.contains("messages[0].content"), "{}", e.message);
    }
}
