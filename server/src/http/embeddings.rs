//! Embedding endpoints: OpenAI's `POST /v1/embeddings` and llama.cpp's `POST /embedding` /
//! `POST /embeddings`, served when the loaded model is an embedding model.
//!
//! Both take one or many inputs — a string, an array of strings, an array of token ids, or an
//! array of such arrays — tokenize the texts off the async workers (with the BOS/EOS tokens the
//! model's metadata asks for: a last-token-pooled model summarises into its appended end token),
//! and queue them on the engine, which embeds the inputs of concurrent requests together.
//!
//! - OpenAI: `encoding_format` `float` (default) or `base64` (the little-endian f32 bytes, as
//!   OpenAI sends them), `dimensions` (the first *d* values renormalised to unit length — the
//!   Matryoshka convention; 400 above the model's width), `usage`. Vectors are unit length.
//! - llama.cpp: `content` (or `input`), `embd_normalize` (−1 none, 0 max-abs scaled to int16
//!   range, 1 taxicab, 2 Euclidean — the default — and p > 2 the p-norm); the answer is
//!   `[{"index", "embedding": [[…]]}]`, one pooled row per input.
//! - Both: `truncate: true` cuts an input longer than the context to fit (keeping a final
//!   end-of-text token the tokenizer appended); without it such an input is a 400 naming it.
//!   At most [`MAX_INPUTS`] inputs and [`super::generate::MAX_REQUEST_TOKENS`] tokens per
//!   request; empty inputs and ids outside the vocabulary are 400s.
//!
//! A server running a generation model answers these endpoints with a 400 saying so, and an
//! embedding model's server refuses the completion endpoints the same way (`engine::SubmitError`).
//!
//! This module does NOT pool or run the model (see `engine`, `bitnet_model::Model::embed`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use super::generate::{check_model, check_token_count, cpu_work, embedding_engine};
use super::json::ApiJson;
use super::params::type_name;
use crate::engine::{Engine, SubmitError, TokenCodec};

/// The most inputs one request may carry (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// One input before tokenization.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Text(String),
    Tokens(Vec<u32>),
}

/// Parse `input` (or llama.cpp's `content`): a string, an array of strings, an array of token
/// ids (one input), or an array of arrays of token ids. `param` names the field in errors.
pub fn parse_inputs(param: &str, v: Option<&Value>) -> Result<Vec<Input>, ApiError> {
    let bad = |msg: String| ApiError::invalid_param(param, msg);
    let ids = |items: &[Value], at: &str| -> Result<Vec<u32>, ApiError> {
        items
            .iter()
            .enumerate()
            .map(|(i, x)| {
                x.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        bad(format!(
                            "`{at}[{i}]` = {x} is not a token id (a non-negative integer); an \
                             array holds either strings or token ids"
                        ))
                    })
            })
            .collect()
    };
    let inputs = match v {
        None | Some(Value::Null) => return Err(bad(format!("`{param}` is required"))),
        Some(Value::String(s)) => vec![Input::Text(s.clone())],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(bad(format!(
                "`{param}` is an empty array: give at least one input"
            )));
        }
        Some(Value::Array(items)) if items.len() > MAX_INPUTS => {
            return Err(bad(format!(
                "`{param}` holds {} inputs; one request may carry at most {MAX_INPUTS}: split \
                 it into several requests",
                items.len()
            ))
            .with_code("too_many_inputs"));
        }
        Some(Value::Array(items)) if items[0].is_number() => {
            vec![Input::Tokens(ids(items, param)?)]
        }
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(match item {
                    Value::String(s) => Input::Text(s.clone()),
                    Value::Array(inner) => Input::Tokens(ids(inner, &format!("{param}[{i}]"))?),
                    other => {
                        return Err(bad(format!(
                            "`{param}[{i}]` must be a string or an array of token ids, got {}",
                            type_name(other)
                        )));
                    }
                });
            }
            out
        }
        Some(other) => {
            return Err(bad(format!(
                "`{param}` must be a string, an array of strings, or token ids; got {}",
                type_name(other)
            )));
        }
    };
    for (i, input) in inputs.iter().enumerate() {
        let empty = match input {
            Input::Text(s) => s.is_empty(),
            Input::Tokens(t) => t.is_empty(),
        };
        if empty {
            return Err(bad(format!(
                "`{param}[{i}]` is empty; every input needs some text or at least one token"
            )));
        }
    }
    Ok(inputs)
}

/// Tokenize the inputs for embedding and apply the context limit: inputs longer than `n_ctx`
/// are cut when `truncate` is set (keeping a final end-of-generation token, which a
/// last-token-pooled model reads its summary from), else refused with a 400 naming the input.
/// 400 past [`super::generate::MAX_REQUEST_TOKENS`] in all.
pub fn tokenize_inputs(
    tok: &dyn TokenCodec,
    param: &str,
    inputs: Vec<Input>,
    n_ctx: usize,
    truncate: bool,
) -> Result<Vec<Vec<u32>>, ApiError> {
    let mut total = 0usize;
    let mut out = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let mut ids = match input {
            Input::Tokens(ids) => ids,
            Input::Text(text) => tok.encode_for_embedding(&text).map_err(|e| {
                ApiError::invalid_param(
                    param,
                    format!("`{param}[{i}]` could not be tokenized: {e}"),
                )
            })?,
        };
        if ids.is_empty() {
            return Err(ApiError::invalid_param(
                param,
                format!("`{param}[{i}]` is empty after tokenization"),
            ));
        }
        if ids.len() > n_ctx {
            if !truncate {
                // Refused here, before the per-request token count, so the error names the
                // context, the specific problem with this input.
                let err = SubmitError::InputTooLong {
                    index: i,
                    tokens: ids.len(),
                    n_ctx,
                };
                return Err(ApiError::from(err).with_param(param));
            }
            let last = *ids.last().expect("non-empty");
            ids.truncate(n_ctx);
            if tok.is_eog(last) {
                *ids.last_mut().expect("n_ctx >= 1") = last;
            }
        }
        total += ids.len();
        check_token_count(param, total)?;
        out.push(ids);
    }
    Ok(out)
}

/// Tokenize the inputs and embed them on `engine` (an embedding model's, from
/// [`embedding_engine`]): one vector per input, and the token count. Engine refusals become
/// 400s naming `param`.
async fn embed(
    state: &AppState,
    engine: Arc<Engine>,
    param: &'static str,
    inputs: Vec<Input>,
    truncate: bool,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let tok = engine.tokenizer.clone();
    let n_ctx = engine.handle.n_ctx();
    let ids = cpu_work(state, move || {
        tokenize_inputs(&*tok, param, inputs, n_ctx, truncate)
    })
    .await?;
    let tokens = ids.iter().map(Vec::len).sum();
    let rx = engine.handle.submit_embedding(ids).map_err(|e| {
        let input_error = matches!(
            e,
            SubmitError::EmptyInput { .. }
                | SubmitError::InputTooLong { .. }
                | SubmitError::TokenOutOfRange { .. }
        );
        let err = ApiError::from(e);
        if input_error {
            err.with_param(param)
        } else {
            err
        }
    })?;
    let vectors = rx
        .await
        .map_err(|_| ApiError::internal("the engine stopped before answering"))?
        .map_err(ApiError::internal)?;
    Ok((vectors, tokens))
}

/// `POST /v1/embeddings` body.
#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    pub model: Option<String>,
    pub input: Option<Value>,
    pub encoding_format: Option<String>,
    pub dimensions: Option<i64>,
    /// Accepted and ignored, as in OpenAI's API (an end-user id for abuse monitoring).
    pub user: Option<String>,
    /// Extension: cut inputs longer than the context instead of refusing them.
    pub truncate: Option<bool>,
}

#[derive(Serialize)]
struct EmbeddingData {
    object: &'static str,
    index: usize,
    embedding: Value,
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: usize,
    total_tokens: usize,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingData>,
    model: &'a str,
    usage: EmbeddingUsage,
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EmbeddingRequest>,
) -> Result<Response, ApiError> {
    check_model(&state, req.model.as_deref())?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "encoding_format",
                format!("`encoding_format` must be \"float\" or \"base64\", got {other:?}"),
            ));
        }
    };
    let inputs = parse_inputs("input", req.input.as_ref())?;
    let engine = embedding_engine(&state)?;
    let width = engine.handle.embedding_dim().unwrap_or_default();
    let dimensions = match req.dimensions {
        None => None,
        Some(d) if d >= 1 && d as u64 <= width as u64 => Some(d as usize),
        Some(d) => {
            return Err(ApiError::invalid_param(
                "dimensions",
                format!(
                    "`dimensions` = {d}: this model's embeddings have {width} values; ask for \
                     1 to {width} (the first values, renormalised) or leave it out"
                ),
            ));
        }
    };
    let truncate = req.truncate.unwrap_or(false);
    let (vectors, tokens) = embed(&state, engine, "input", inputs, truncate).await?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, mut v)| {
            if let Some(d) = dimensions {
                v.truncate(d);
            }
            normalize(&mut v, 2.0);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                floats(&v)
            };
            EmbeddingData {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    Ok(Json(EmbeddingList {
        object: "list",
        data,
        model: &state.model_id,
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    })
    .into_response())
}

/// `POST /embedding` and `/embeddings` (llama.cpp) body.
#[derive(Debug, Deserialize)]
pub struct LlamaEmbeddingRequest {
    pub content: Option<Value>,
    pub input: Option<Value>,
    pub embd_normalize: Option<i64>,
    pub truncate: Option<bool>,
}

/// `POST /embedding` and `POST /embeddings` (llama.cpp's non-OpenAI form).
pub async fn llama_embedding(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LlamaEmbeddingRequest>,
) -> Result<Response, ApiError> {
    let (param, value) = match (&req.content, &req.input) {
        (Some(c), _) => ("content", Some(c)),
        (None, i) => ("input", i.as_ref()),
    };
    let inputs = parse_inputs(param, value)?;
    let mode = req.embd_normalize.unwrap_or(2);
    if mode < -1 {
        return Err(ApiError::invalid_param(
            "embd_normalize",
            format!(
                "`embd_normalize` = {mode}: use -1 (none), 0 (max absolute), 1 (taxicab), 2 \
                 (Euclidean, the default) or p > 2 (p-norm)"
            ),
        ));
    }
    let engine = embedding_engine(&state)?;
    let truncate = req.truncate.unwrap_or(false);
    let (vectors, _) = embed(&state, engine, param, inputs, truncate).await?;
    let out: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, mut v)| {
            normalize(&mut v, mode as f64);
            serde_json::json!({ "index": index, "embedding": [floats(&v)] })
        })
        .collect();
    Ok(Json(out).into_response())
}

/// A vector as a JSON array of numbers (f32 values written as the shortest f32 text).
fn floats(v: &[f32]) -> Value {
    Value::Array(
        v.iter()
            .map(|&x| {
                // Through the f32's own shortest decimal, so 0.1f32 is written 0.1, not
                // 0.10000000149011612.
                let shortest: f64 = format!("{x}").parse().unwrap_or(0.0);
                serde_json::Number::from_f64(shortest).map_or(Value::Null, Value::Number)
            })
            .collect(),
    )
}

/// Rescale `v` in place by llama.cpp's `embd_normalize` mode: −1 none, 0 max absolute value →
/// 32760 (int16 range), 1 taxicab, 2 Euclidean, p > 2 the p-norm. A zero vector stays zero.
pub fn normalize(v: &mut [f32], mode: f64) {
    let norm = if mode < 0.0 {
        return;
    } else if mode == 0.0 {
        v.iter().fold(0f64, |m, &x| m.max((x as f64).abs())) / 32760.0
    } else if mode == 1.0 {
        v.iter().map(|&x| (x as f64).abs()).sum()
    } else if mode == 2.0 {
        v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
    } else {
        v.iter()
            .map(|&x| (x as f64).abs().powf(mode))
            .sum::<f64>()
            .powf(1.0 / mode)
    };
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x = (*x as f64 / norm) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_input_shape_parses_and_bad_ones_name_the_position() {
        let p = |v: Value| parse_inputs("input", Some(&v));
        assert_eq!(p(json!("hi")).unwrap(), vec![Input::Text("hi".into())]);
        assert_eq!(
            p(json!(["a", "b"])).unwrap(),
            vec![Input::Text("a".into()), Input::Text("b".into())]
        );
        assert_eq!(p(json!([1, 2])).unwrap(), vec![Input::Tokens(vec![1, 2])]);
        assert_eq!(
            p(json!([[1], [2, 3]])).unwrap(),
            vec![Input::Tokens(vec![1]), Input::Tokens(vec![2, 3])]
        );
        for (bad, needle) in [
            (json!(""), "`input[0]` is empty"),
            (json!([]), "empty array"),
            (json!(["a", ""]), "`input[1]` is empty"),
            (json!([[]]), "`input[0]` is empty"),
            (json!([1, -2]), "`input[1]` = -2"),
            (json!(["a", 3]), "`input[1]` must be a string"),
            (json!({"a": 1}), "got an object"),
        ] {
            let err = p(bad.clone()).unwrap_err();
            assert!(err.message.contains(needle), "{bad}: {}", err.message);
            assert_eq!(err.param.as_deref(), Some("input"));
        }
        let many = Value::Array(vec![json!("x"); MAX_INPUTS + 1]);
        let err = p(many).unwrap_err();
        assert_eq!(err.code, Some("too_many_inputs"));
        assert!(err.message.contains("2049 inputs"), "{}", err.message);
        assert!(p(Value::Array(vec![json!("x"); MAX_INPUTS])).is_ok());
    }

    #[test]
    fn normalize_modes_match_their_formulas() {
        let v = [3.0f32, -4.0];
        let run = |mode: f64| {
            let mut w = v;
            normalize(&mut w, mode);
            w
        };
        assert_eq!(run(-1.0), v);
        assert_eq!(run(2.0), [0.6, -0.8]);
        assert_eq!(run(1.0), [3.0 / 7.0, -4.0 / 7.0]);
        assert_eq!(run(0.0), [24570.0, -32760.0]);
        let p3 = (27.0f64 + 64.0).powf(1.0 / 3.0);
        assert_eq!(run(3.0), [(3.0 / p3) as f32, (-4.0 / p3) as f32]);
        let mut zero = [0.0f32; 4];
        normalize(&mut zero, 2.0);
        assert_eq!(zero, [0.0; 4]);
    }

    #[test]
    fn floats_are_written_as_their_shortest_f32_text() {
        assert_eq!(floats(&[0.1, -2.5]).to_string(), "[0.1,-2.5]");
    }
}
