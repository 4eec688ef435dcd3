//! Structured outputs: the request fields that constrain what the model may write, turned into
//! one [`Grammar`] and compiled against the loaded model's vocabulary.
//!
//! - OpenAI: `response_format` `{"type": "text"}` (no constraint), `{"type": "json_object"}`
//!   (any JSON object), `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`.
//!   The schema is enforced whether or not `strict` is set (as llama.cpp and vLLM do);
//!   tool calls build their grammar in `tools.rs`.
//! - llama.cpp `/completion`: `json_schema` (a schema object) or `grammar` (GBNF text).
//!
//! Compiling runs on the blocking pool (`generate::cpu_work`); a schema or grammar the engine
//! cannot enforce is a 400 naming the field and, through `bitnet_constraint`'s message, the
//! keyword or the GBNF position. What the engine supports and why: `docs/structured-outputs.md`.
//!
//! This module does NOT mask logits (the engine does, through `engine::OutputConstraint`).

use serde_json::Value;

use super::error::ApiError;
use super::params::type_name;
use crate::engine::{Engine, OutputConstraint};
use bitnet_constraint::{Grammar, GrammarError, Vocabulary};

/// The largest schema or grammar text accepted, in bytes: the grammar engine's limit, checked
/// here too so the 400 names the request field.
pub const MAX_GRAMMAR_BYTES: usize = bitnet_constraint::MAX_GRAMMAR_BYTES;

/// OpenAI's `response_format`: `None` for absent or `text`.
pub fn response_format(v: Option<&Value>) -> Result<Option<Grammar>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let bad = |param: &str, msg: String| ApiError::invalid_param(param, msg);
    let Some(obj) = v.as_object() else {
        return Err(bad(
            "response_format",
            format!(
                "`response_format` must be an object such as {{\"type\": \"json_object\"}}, got {}",
                type_name(v)
            ),
        ));
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Grammar::JsonObject)),
        Some("json_schema") => {
            let spec = obj
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    bad(
                        "response_format.json_schema",
                        "`response_format.json_schema` must be an object: {\"name\": \"…\", \
                     \"schema\": {…}, \"strict\": true}"
                            .into(),
                    )
                })?;
            if let Some(name) = spec.get("name")
                && !name.as_str().is_some_and(valid_schema_name)
            {
                return Err(bad(
                    "response_format.json_schema.name",
                    "`response_format.json_schema.name` must be 1 to 64 letters, digits, `_` or \
                     `-`"
                    .into(),
                ));
            }
            if let Some(strict) = spec.get("strict")
                && !strict.is_boolean()
                && !strict.is_null()
            {
                return Err(bad(
                    "response_format.json_schema.strict",
                    format!(
                        "`response_format.json_schema.strict` must be a boolean, got {}",
                        type_name(strict)
                    ),
                ));
            }
            let schema = spec.get("schema").ok_or_else(|| {
                bad(
                    "response_format.json_schema.schema",
                    "`response_format.json_schema.schema` is missing: give the JSON Schema the \
                     reply must match, or use {\"type\": \"json_object\"} for any JSON object"
                        .into(),
                )
            })?;
            json_schema("response_format.json_schema.schema", schema).map(Some)
        }
        other => Err(bad(
            "response_format.type",
            format!(
                "`response_format.type` is {}; expected \"text\", \"json_object\" or \
                 \"json_schema\"",
                other.map_or_else(|| "missing".to_string(), |t| format!("{t:?}"))
            ),
        )),
    }
}

fn valid_schema_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A JSON Schema given as `param`: an object within [`MAX_GRAMMAR_BYTES`]. Its keywords are
/// checked when compiled.
pub fn json_schema(param: &str, schema: &Value) -> Result<Grammar, ApiError> {
    match schema {
        Value::Object(_) => {}
        other => {
            return Err(ApiError::invalid_param(
                param,
                format!(
                    "`{param}` must be a JSON Schema object such as {{\"type\": \"object\", \
                     \"properties\": {{…}}}}, got {}",
                    type_name(other)
                ),
            ));
        }
    }
    let size = serde_json::to_string(schema).map_or(usize::MAX, |s| s.len());
    check_size(param, size)?;
    Ok(Grammar::JsonSchema(schema.clone()))
}

fn check_size(param: &str, size: usize) -> Result<(), ApiError> {
    if size <= MAX_GRAMMAR_BYTES {
        return Ok(());
    }
    Err(ApiError::invalid_param(
        param,
        format!("`{param}` is {size} bytes; at most {MAX_GRAMMAR_BYTES} are accepted: simplify it"),
    ))
}

/// llama.cpp's `/completion` fields: `json_schema` (an object) or `grammar` (GBNF), not both.
pub fn llama_grammar(
    json_schema_field: Option<&Value>,
    grammar: Option<&str>,
) -> Result<Option<Grammar>, ApiError> {
    let schema = json_schema_field.filter(|v| !v.is_null());
    let grammar = grammar.filter(|g| !g.trim().is_empty());
    match (schema, grammar) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ApiError::invalid_param(
            "grammar",
            "`grammar` and `json_schema` were both given; send one of them",
        )),
        (Some(schema), None) => json_schema("json_schema", schema).map(Some),
        (None, Some(text)) => {
            check_size("grammar", text.len())?;
            Ok(Some(Grammar::Gbnf(text.to_string())))
        }
    }
}

/// Compile `grammar` for the engine's vocabulary (built on first use). `param` names the
/// request field in a 400.
pub fn compile(
    engine: &Engine,
    param: &str,
    grammar: &Grammar,
) -> Result<Box<dyn OutputConstraint>, ApiError> {
    compile_or(engine, grammar, |_, e| {
        ApiError::invalid_param(param, format!("`{param}` cannot be enforced: {e}"))
            .with_code("invalid_grammar")
    })
}

/// [`compile`], with the 400 for a grammar that does not compile made by `on_error` (tools name
/// the function whose parameters are at fault).
pub fn compile_or(
    engine: &Engine,
    grammar: &Grammar,
    on_error: impl FnOnce(&Vocabulary, GrammarError) -> ApiError,
) -> Result<Box<dyn OutputConstraint>, ApiError> {
    let vocabulary = engine
        .grammar_vocabulary()
        .map_err(|e| ApiError::internal(format!("structured outputs are unavailable: {e}")))?;
    match vocabulary.compile(grammar) {
        Ok(constraint) => Ok(Box::new(constraint)),
        Err(e) => Err(on_error(&vocabulary, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn response_formats() {
        assert!(response_format(None).unwrap().is_none());
        assert!(
            response_format(Some(&json!({"type": "text"})))
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            response_format(Some(&json!({"type": "json_object"}))).unwrap(),
            Some(Grammar::JsonObject)
        ));
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        match response_format(Some(&json!({"type": "json_schema",
            "json_schema": {"name": "x", "schema": schema, "strict": true}})))
        .unwrap()
        {
            Some(Grammar::JsonSchema(s)) => assert_eq!(s, schema),
            other => panic!("{other:?}"),
        }
        for (body, param) in [
            (json!("json"), "response_format"),
            (json!({"type": "yaml"}), "response_format.type"),
            (
                json!({"type": "json_schema"}),
                "response_format.json_schema",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"name": "x"}}),
                "response_format.json_schema.schema",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}),
                "response_format.json_schema.name",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"name": "x", "schema": 5}}),
                "response_format.json_schema.schema",
            ),
        ] {
            let e = response_format(Some(&body)).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
    }

    #[test]
    fn llama_fields() {
        assert!(llama_grammar(None, None).unwrap().is_none());
        assert!(llama_grammar(None, Some("  ")).unwrap().is_none());
        assert!(matches!(
            llama_grammar(None, Some("root ::= \"a\"")).unwrap(),
            Some(Grammar::Gbnf(_))
        ));
        let e = llama_grammar(Some(&json!({})), Some("root ::= \"a\"")).unwrap_err();
        assert!(e.message.contains("both"), "{}", e.message);
        let big = "x".repeat(MAX_GRAMMAR_BYTES + 1);
        let e = llama_grammar(None, Some(&big)).unwrap_err();
        assert!(e.message.contains("at most"), "{}", e.message);
    }
}
