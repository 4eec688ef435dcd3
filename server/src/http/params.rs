//! Request parameters shared by the OpenAI and llama.cpp endpoints: range checks for sampling
//! settings, `stop`, `max_tokens`, `seed`, and the polymorphic `prompt`.
//!
//! Defaults follow llama.cpp's server (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05), which
//! is what users of bitnet.cpp's server are used to, on every endpoint.
//!
//! This module does NOT tokenize or touch the engine.

use serde_json::Value;

use super::error::ApiError;
use crate::sampling::{SamplingError, SamplingParams};
use bitnet_rng::random_u64;

/// Sampling fields as they arrive (before range checks).
#[derive(Debug, Default, Clone)]
pub struct RawSampling {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub repeat_last_n: Option<i64>,
    pub seed: Option<i64>,
}

/// The [`RawSampling`] fields of a request struct, which every endpoint's request declares
/// under the same names (serde's `flatten` would do it too, but loses the field names in
/// type errors).
macro_rules! raw_sampling {
    ($req:expr) => {
        $crate::http::params::RawSampling {
            temperature: $req.temperature,
            top_p: $req.top_p,
            top_k: $req.top_k,
            min_p: $req.min_p,
            presence_penalty: $req.presence_penalty,
            frequency_penalty: $req.frequency_penalty,
            repeat_penalty: $req.repeat_penalty,
            repeat_last_n: $req.repeat_last_n,
            seed: $req.seed,
        }
    };
}
pub(crate) use raw_sampling;

/// The most stop strings per request, and their longest allowed length.
pub const MAX_STOPS: usize = 16;
pub const MAX_STOP_LEN: usize = 1024;

/// Turn a request's sampling fields into [`SamplingParams`]: missing fields take the defaults
/// ([`crate::sampling::DEFAULT`]), a missing or `-1` seed draws a random one, and the ranges are
/// checked by [`SamplingParams::validate`] (the same check the CLI runs), reported as a 400 that
/// names the parameter. Only the signed JSON integers the CLI's unsigned flags cannot express
/// (`top_k` < 0, `repeat_last_n` < -1) are refused here, with the same [`SamplingError`].
pub fn sampling(raw: &RawSampling) -> Result<SamplingParams, ApiError> {
    let d = SamplingParams::default();
    let top_k = match raw.top_k {
        None => d.top_k,
        Some(k) if k >= 0 => usize::try_from(k).unwrap_or(usize::MAX),
        Some(k) => {
            return Err(SamplingError {
                param: "top_k",
                got: k.to_string(),
                allowed: "0 or a positive integer",
                fix: "use 0 to turn top-k off",
            }
            .into());
        }
    };
    let repeat_last_n = match raw.repeat_last_n {
        None => d.repeat_last_n,
        Some(-1) => usize::MAX,
        Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
        Some(n) => {
            return Err(SamplingError {
                param: "repeat_last_n",
                got: n.to_string(),
                allowed: "-1, 0 or a positive integer",
                fix: "use -1 for the whole context, 0 to look at no tokens",
            }
            .into());
        }
    };
    let real = |v: Option<f64>, default: f32| v.map_or(default, |x| x as f32);
    let params = SamplingParams {
        temperature: real(raw.temperature, d.temperature),
        top_k,
        top_p: real(raw.top_p, d.top_p),
        min_p: real(raw.min_p, d.min_p),
        repeat_penalty: real(raw.repeat_penalty, d.repeat_penalty),
        repeat_last_n,
        presence_penalty: real(raw.presence_penalty, d.presence_penalty),
        frequency_penalty: real(raw.frequency_penalty, d.frequency_penalty),
        seed: match raw.seed {
            None | Some(-1) => random_u64(),
            Some(s) => s as u64,
        },
    };
    params.validate()?;
    Ok(params)
}

/// `stop`: absent, a string, or an array of strings.
pub fn stop_list(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    other => {
                        return Err(ApiError::invalid_param(
                            "stop",
                            format!("`stop[{i}]` must be a string, got {}", type_name(other)),
                        ));
                    }
                }
            }
            out
        }
        Some(other) => {
            return Err(ApiError::invalid_param(
                "stop",
                format!(
                    "`stop` must be a string or an array of strings, got {}",
                    type_name(other)
                ),
            ));
        }
    };
    if list.len() > MAX_STOPS {
        return Err(ApiError::invalid_param(
            "stop",
            format!(
                "`stop` has {} entries; at most {MAX_STOPS} are allowed",
                list.len()
            ),
        ));
    }
    for (i, s) in list.iter().enumerate() {
        if s.is_empty() {
            return Err(ApiError::invalid_param(
                "stop",
                format!("`stop[{i}]` is an empty string"),
            ));
        }
        if s.len() > MAX_STOP_LEN {
            return Err(ApiError::invalid_param(
                "stop",
                format!("`stop[{i}]` is longer than {MAX_STOP_LEN} bytes"),
            ));
        }
    }
    Ok(list)
}

/// A token budget as requested. `None` = until the context is full.
pub fn max_tokens(name: &str, v: Option<i64>, allow_zero: bool) -> Result<Option<usize>, ApiError> {
    match v {
        None => Ok(None),
        Some(n) if n > 0 || (allow_zero && n == 0) => {
            Ok(Some(usize::try_from(n).unwrap_or(usize::MAX)))
        }
        Some(n) => Err(ApiError::invalid_param(
            name,
            format!(
                "`{name}` must be a positive integer, got {n}{}",
                if allow_zero {
                    " (use -1 for \"until the context is full\")"
                } else {
                    ""
                }
            ),
        )),
    }
}

/// The budget to submit: the request's, or whatever room the context leaves (at least one
/// token, so a prompt that fills the context is reported as too long). Too-large values are
/// passed through so the engine reports them with the numbers.
pub fn effective_max_tokens(requested: Option<usize>, prompt_len: usize, n_ctx: usize) -> usize {
    requested.unwrap_or_else(|| n_ctx.saturating_sub(prompt_len).max(1))
}

/// `n` (number of choices): only 1 is supported.
pub fn check_n(name: &str, n: Option<i64>) -> Result<(), ApiError> {
    match n {
        None | Some(1) => Ok(()),
        Some(n) => Err(ApiError::invalid_param(
            name,
            format!(
                "`{name}` = {n} is not supported: this server returns exactly one choice (n = 1)"
            ),
        )),
    }
}

/// A prompt: text, or token ids.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
    /// llama.cpp's mixed form: strings and token ids in one array.
    Mixed(Vec<PromptPiece>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum PromptPiece {
    Text(String),
    Token(u32),
}

/// Parse `prompt`: a string, an array of token ids, a one-element array of either, or (llama.cpp)
/// an array mixing strings and ids. Batches of several prompts are refused (one choice only).
pub fn prompt(v: Option<&Value>) -> Result<Prompt, ApiError> {
    let bad = |msg: String| ApiError::invalid_param("prompt", msg);
    match v {
        None | Some(Value::Null) => Err(bad("`prompt` is required".into())),
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(items)) if items.is_empty() => Err(bad("`prompt` is empty".into())),
        Some(Value::Array(items)) => {
            if items.len() == 1 && matches!(items[0], Value::String(_) | Value::Array(_)) {
                return match &items[0] {
                    Value::String(s) => Ok(Prompt::Text(s.clone())),
                    inner => prompt(Some(inner)),
                };
            }
            if items.iter().all(|i| i.is_array()) || items.iter().all(|i| i.is_string()) {
                return Err(bad(format!(
                    "`prompt` holds {} prompts; this server completes one prompt per request",
                    items.len()
                )));
            }
            let mut pieces = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => pieces.push(PromptPiece::Text(s.clone())),
                    Value::Number(n) => match n.as_u64().and_then(|x| u32::try_from(x).ok()) {
                        Some(id) => pieces.push(PromptPiece::Token(id)),
                        None => {
                            return Err(bad(format!(
                                "`prompt[{i}]` = {n} is not a valid token id (a non-negative integer)"
                            )));
                        }
                    },
                    other => {
                        return Err(bad(format!(
                            "`prompt[{i}]` must be a string or a token id, got {}",
                            type_name(other)
                        )));
                    }
                }
            }
            if pieces.iter().all(|p| matches!(p, PromptPiece::Token(_))) {
                Ok(Prompt::Tokens(
                    pieces
                        .into_iter()
                        .map(|p| match p {
                            PromptPiece::Token(t) => t,
                            PromptPiece::Text(_) => unreachable!(),
                        })
                        .collect(),
                ))
            } else {
                Ok(Prompt::Mixed(pieces))
            }
        }
        Some(other) => Err(bad(format!(
            "`prompt` must be a string or an array of token ids, got {}",
            type_name(other)
        ))),
    }
}

/// JSON type names for error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ranges_are_checked() {
        let ok = sampling(&RawSampling {
            temperature: Some(0.0),
            seed: Some(7),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((ok.temperature, ok.seed), (0.0, 7));
        for raw in [
            RawSampling {
                temperature: Some(-0.1),
                ..Default::default()
            },
            RawSampling {
                temperature: Some(f64::NAN),
                ..Default::default()
            },
            RawSampling {
                top_p: Some(1.5),
                ..Default::default()
            },
            RawSampling {
                top_k: Some(-2),
                ..Default::default()
            },
            RawSampling {
                presence_penalty: Some(3.0),
                ..Default::default()
            },
            RawSampling {
                repeat_penalty: Some(0.0),
                ..Default::default()
            },
            RawSampling {
                repeat_last_n: Some(-5),
                ..Default::default()
            },
        ] {
            let e = sampling(&raw).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(e.param.is_some());
        }
        assert_eq!(
            sampling(&RawSampling {
                repeat_last_n: Some(-1),
                ..Default::default()
            })
            .unwrap()
            .repeat_last_n,
            usize::MAX
        );
    }

    #[test]
    fn stop_forms() {
        assert_eq!(stop_list(Some(&json!("x"))).unwrap(), vec!["x"]);
        assert_eq!(stop_list(Some(&json!(["a", "b"]))).unwrap(), vec!["a", "b"]);
        assert!(
            stop_list(Some(&json!([1])))
                .unwrap_err()
                .message
                .contains("stop[0]")
        );
        assert!(stop_list(Some(&json!(5))).is_err());
        assert!(stop_list(Some(&json!([""]))).is_err());
        assert!(stop_list(Some(&json!(vec!["a"; 17]))).is_err());
    }

    #[test]
    fn max_tokens_rules() {
        assert_eq!(max_tokens("max_tokens", Some(5), false).unwrap(), Some(5));
        assert!(max_tokens("max_tokens", Some(0), false).is_err());
        assert_eq!(max_tokens("n_predict", Some(0), true).unwrap(), Some(0));
        let e = max_tokens("max_tokens", Some(-3), false).unwrap_err();
        assert!(e.message.contains("positive"), "{}", e.message);
        assert_eq!(effective_max_tokens(None, 10, 100), 90);
        assert_eq!(effective_max_tokens(Some(1000), 10, 100), 1000);
        assert_eq!(effective_max_tokens(None, 100, 100), 1);
    }

    #[test]
    fn prompt_forms() {
        assert_eq!(
            prompt(Some(&json!("hi"))).unwrap(),
            Prompt::Text("hi".into())
        );
        assert_eq!(
            prompt(Some(&json!(["hi"]))).unwrap(),
            Prompt::Text("hi".into())
        );
        assert_eq!(
            prompt(Some(&json!([1, 2]))).unwrap(),
            Prompt::Tokens(vec![1, 2])
        );
        assert_eq!(
            prompt(Some(&json!([[1, 2]]))).unwrap(),
            Prompt::Tokens(vec![1, 2])
        );
        assert_eq!(
            prompt(Some(&json!(["a", 3]))).unwrap(),
            Prompt::Mixed(vec![PromptPiece::Text("a".into()), PromptPiece::Token(3)])
        );
        assert!(
            prompt(Some(&json!(["a", "b"])))
                .unwrap_err()
                .message
                .contains("one prompt")
        );
        assert!(prompt(Some(&json!([-1]))).is_err());
        assert!(prompt(Some(&json!({}))).is_err());
        assert!(prompt(None).is_err());
        assert!(prompt(Some(&json!([]))).is_err());
    }

    #[test]
    fn n_must_be_one() {
        assert!(check_n("n", None).is_ok());
        assert!(check_n("n", Some(1)).is_ok());
        assert!(check_n("n", Some(2)).unwrap_err().message.contains("n = 1"));
    }
}
