//! Issue 18 end to end: structured outputs and tool calls from the `bitnet-server serve` binary
//! on a synthetic BitNet model (random weights, byte-level toy vocabulary), no test backend. The
//! model writes noise, so every valid reply here is valid only because the grammar constraint
//! made it so.
//!
//! - over plain HTTP: a `response_format` `json_schema` reply (streamed and not) and a
//!   llama.cpp `/completion` `json_schema` reply match their schema; a GBNF `grammar` reply is
//!   exactly one of its strings; `json_object` gives an object; a required tool call is
//!   well-formed; `n = 3` gives three choices on both completion endpoints (Must show 1's
//!   contract without Python);
//! - bad input — an invalid schema, unsupported keywords, a GBNF syntax error (with its line), a
//!   tool whose parameters are not an object schema, a `tool_choice` naming an unknown tool, `n`
//!   of 0 or above `--parallel` — is a 400 naming the problem, and the server keeps serving; a
//!   grammar that cannot finish within the token budget ends promptly saying `length`/`limit`
//!   (Must show 5);
//! - the real `openai` client (`.parse` on 50 prompts, tool-call round trips, streamed and not,
//!   `n`) and langchain-openai (`with_structured_output`, `bind_tools`):
//!   `xtask/py/structured_client_test.py` (Must show 1 and 2);
//! - random schemas from the supported subset and a few GBNF grammars, every output validated
//!   with PyPI `jsonschema`: `xtask/py/schema_property_test.py` (Must show 3).
//!
//! The Python tests need PyPI, so they are ignored in plain `cargo test` and run by
//! `cargo xtask ci`. They run on a model with the real LLaMA-3 vocabulary (128,256 tokens, the
//! published BitNet file's) when its dump is at hand (`$BITNET_LLAMA3_VOCAB`, which CI sets, or
//! `target/llama3.vocab.bin`), so masks are computed over real token boundaries (`", "`-style
//! tokens spanning grammar pieces); otherwise on the toy vocabulary, saying so.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bitnet_gguf::GgmlType;
use bitnet_synth::{self as synth, Shape};
use common::process::{ServerProcess, python_with, run_client_script};
use serde_json::{Value, json};

/// Small and fast, with room for a tool prompt (the toy vocabulary spends about a token per
/// byte) and the longest reply the client scripts allow.
const SHAPE: Shape = Shape {
    name: "structured-e2e",
    n_embd: 256,
    n_layer: 2,
    n_head: 4,
    n_head_kv: 2,
    n_ff: 512,
    n_ctx: 4096,
};

/// The sequence slots the server runs with (`n = 3` needs three).
const PARALLEL: &str = "4";

/// Written once per test process (tests run in parallel threads), renamed into place whole.
fn model_file() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| write_model("structured-e2e", &synth::toy_vocab(150)))
        .clone()
}

fn write_model(name: &str, vocab: &bitnet_tokenizer::vocab::GgufVocab) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("{name}.gguf"));
    let w = synth::build(&SHAPE, GgmlType::I2S, GgmlType::F16, vocab, 23);
    let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, w.to_bytes()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// The same shape with the LLaMA-3 vocabulary, when its dump is at hand (module docs).
fn llama3_model_file() -> Option<PathBuf> {
    static PATH: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let dump = std::env::var_os("BITNET_LLAMA3_VOCAB")
            .map(PathBuf::from)
            .unwrap_or_else(|| common::process::workspace().join("target/llama3.vocab.bin"));
        if !dump.exists() {
            eprintln!(
                "no LLaMA-3 vocabulary dump at {} (cargo xtask gen-model makes it): the client \
                 scripts run on the toy vocabulary",
                dump.display()
            );
            return None;
        }
        let vocab = bitnet_tokenizer::vocab::RankedVocab::read_dump(&dump)
            .unwrap()
            .to_gguf();
        Some(write_model("structured-e2e-llama3", &vocab))
    })
    .clone()
}

fn start() -> ServerProcess {
    ServerProcess::start(&model_file(), &["--parallel", PARALLEL])
}

/// A server for the client scripts: the LLaMA-3-vocabulary model when there is one.
fn start_for_clients() -> ServerProcess {
    let model = llama3_model_file().unwrap_or_else(model_file);
    ServerProcess::start(&model, &["--parallel", PARALLEL])
}

/// POST `body`, require 200, return the reply.
fn ok(s: &ServerProcess, path: &str, body: &Value) -> Value {
    let (status, reply) = s.json("POST", path, body);
    assert_eq!(status, 200, "{path} {body} -> {reply}");
    reply
}

/// A JSON Schema small enough to finish in a few dozen tokens.
fn answer_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "answer": {"type": "string", "maxLength": 10},
            "n": {"type": "integer", "minimum": 0, "maximum": 9},
            "ok": {"type": "boolean"}
        },
        "required": ["answer", "n", "ok"],
        "additionalProperties": false
    })
}

/// Panics unless `text` is JSON matching [`answer_schema`].
fn assert_answer(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {text}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["answer", "n", "ok"], "{text}");
    let answer = obj["answer"].as_str().unwrap_or_else(|| panic!("{text}"));
    assert!(answer.chars().count() <= 10, "maxLength: {text}");
    let n = obj["n"].as_i64().unwrap_or_else(|| panic!("{text}"));
    assert!((0..=9).contains(&n), "{text}");
    assert!(obj["ok"].is_boolean(), "{text}");
}

fn response_format(schema: Value) -> Value {
    json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": true}})
}

/// The `data:` payloads of an SSE body, `[DONE]` excluded.
fn sse_events(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{d}: {e}")))
        .collect()
}

#[test]
fn schema_and_grammar_replies_match_what_was_asked() {
    let s = start();
    let user = json!([{"role": "user", "content": "Answer as JSON."}]);
    for seed in 0..4 {
        let reply = ok(
            &s,
            "/v1/chat/completions",
            &json!({"messages": user, "response_format": response_format(answer_schema()),
                    "max_tokens": 200, "seed": seed}),
        );
        let choice = &reply["choices"][0];
        assert_eq!(choice["finish_reason"], "stop", "{reply}");
        assert_answer(choice["message"]["content"].as_str().unwrap());

        // Streamed: the deltas put together are a matching reply too.
        let body = json!({"messages": user, "response_format": response_format(answer_schema()),
                          "max_tokens": 200, "seed": seed, "stream": true});
        let (status, raw) = s
            .request("POST", "/v1/chat/completions", &body.to_string())
            .unwrap();
        assert_eq!(status, 200, "{raw}");
        let events = sse_events(&raw);
        let text: String = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_answer(&text);
        let finish = events
            .iter()
            .find_map(|e| e["choices"][0]["finish_reason"].as_str());
        assert_eq!(finish, Some("stop"), "{raw}");

        // llama.cpp's /completion with `json_schema`.
        let reply = ok(
            &s,
            "/completion",
            &json!({"prompt": "JSON: ", "json_schema": answer_schema(), "n_predict": 200,
                    "seed": seed}),
        );
        assert_eq!(reply["stop_type"], "eos", "{reply}");
        assert_answer(reply["content"].as_str().unwrap());

        // GBNF: exactly one of the two strings, ended by the grammar.
        let reply = ok(
            &s,
            "/completion",
            &json!({"prompt": "Is it? ", "grammar": "root ::= \"yes\" | \"no\"", "n_predict": 8,
                    "seed": seed}),
        );
        let content = reply["content"].as_str().unwrap();
        assert!(content == "yes" || content == "no", "{reply}");
        assert_eq!(reply["stop_type"], "eos", "{reply}");

        // json_object: an object (whole when the model ended it).
        let reply = ok(
            &s,
            "/v1/chat/completions",
            &json!({"messages": user, "response_format": {"type": "json_object"},
                    "max_tokens": 48, "seed": seed}),
        );
        let choice = &reply["choices"][0];
        let content = choice["message"]["content"].as_str().unwrap();
        assert!(content.starts_with('{'), "{reply}");
        if choice["finish_reason"] == "stop" {
            let v: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {reply}"));
            assert!(v.is_object(), "{reply}");
        } else {
            assert_eq!(choice["finish_reason"], "length", "{reply}");
        }
    }
}

#[test]
fn a_required_tool_call_is_well_formed_and_n_gives_several_choices() {
    let s = start();
    let weather = json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"type": "string", "enum": ["c", "f"]}
            },
            "required": ["city", "unit"],
            "additionalProperties": false
        }
    }});
    for tool_choice in [
        json!("required"),
        json!({"type": "function", "function": {"name": "get_weather"}}),
    ] {
        let reply = ok(
            &s,
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "Weather in Paris?"}],
                    "tools": [weather], "tool_choice": tool_choice, "parallel_tool_calls": false,
                    "max_tokens": 400, "seed": 3}),
        );
        let choice = &reply["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{reply}");
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1, "{reply}");
        let call = &calls[0];
        assert_eq!(call["type"], "function", "{reply}");
        assert!(
            call["id"].as_str().is_some_and(|id| !id.is_empty()),
            "{reply}"
        );
        assert_eq!(call["function"]["name"], "get_weather", "{reply}");
        let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{e}: {reply}"));
        let args = args.as_object().unwrap();
        assert_eq!(args.len(), 2, "{reply}");
        assert!(
            args["city"]
                .as_str()
                .is_some_and(|c| c.chars().count() <= 20),
            "{reply}"
        );
        assert!(args["unit"] == "c" || args["unit"] == "f", "{reply}");
    }

    // n = 3 on both completion endpoints.
    let reply = ok(
        &s,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}], "n": 3, "max_tokens": 6}),
    );
    let indexes: Vec<u64> = reply["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 2], "{reply}");
    let reply = ok(
        &s,
        "/v1/completions",
        &json!({"prompt": "once", "n": 3, "max_tokens": 6}),
    );
    let mut indexes: Vec<u64> = reply["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    indexes.sort_unstable();
    assert_eq!(indexes, [0, 1, 2], "{reply}");
}

#[test]
fn bad_structured_input_is_a_clear_400_and_the_server_keeps_serving() {
    let s = start();
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let chat = |extra: Value| {
        let mut body = json!({"messages": msgs, "max_tokens": 4});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let tool = |parameters: Value| json!([{"type": "function", "function": {"name": "f", "parameters": parameters}}]);
    // `response_format` or a path inside it.
    let schema_param = "response_format*";
    // (what, path, body, the `param` of the error if checked (with a trailing `*`: a prefix of
    // it), words the message must have)
    type Case = (
        &'static str,
        &'static str,
        Value,
        Option<&'static str>,
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "an invalid schema",
            "/v1/chat/completions",
            chat(json!({"response_format": response_format(json!({"type": "bogus"}))})),
            Some(schema_param),
            vec!["bogus"],
        ),
        (
            "an unsupported keyword",
            "/v1/chat/completions",
            chat(json!({"response_format": response_format(json!(
                {"type": "array", "items": {"type": "integer"}, "uniqueItems": true}))})),
            Some(schema_param),
            vec!["uniqueItems"],
        ),
        (
            "an unknown string format",
            "/v1/chat/completions",
            chat(json!({"response_format": response_format(json!(
                {"type": "string", "format": "no-such-format"}))})),
            Some(schema_param),
            vec!["no-such-format"],
        ),
        (
            "a response_format type that does not exist",
            "/v1/chat/completions",
            chat(json!({"response_format": {"type": "yaml"}})),
            Some(schema_param),
            vec!["yaml"],
        ),
        (
            "an invalid schema on /completion",
            "/completion",
            json!({"prompt": "a", "json_schema": {"type": "bogus"}, "n_predict": 4}),
            Some("json_schema"),
            vec!["bogus"],
        ),
        (
            "a GBNF syntax error, with its line",
            "/completion",
            json!({"prompt": "a", "grammar": "root ::= item\nitem ::= \"a\" @", "n_predict": 4}),
            Some("grammar"),
            vec!["GBNF", "2:"],
        ),
        (
            "a GBNF rule used but never defined",
            "/completion",
            json!({"prompt": "a", "grammar": "root ::= missing", "n_predict": 4}),
            Some("grammar"),
            vec!["missing"],
        ),
        (
            "a tool whose parameters are a string schema",
            "/v1/chat/completions",
            chat(json!({"tools": tool(json!({"type": "string"}))})),
            Some("tools[0].function.parameters"),
            vec!["parameters", "object"],
        ),
        (
            "a tool whose parameters are not a schema at all",
            "/v1/chat/completions",
            chat(json!({"tools": tool(json!("city"))})),
            Some("tools[0].function.parameters"),
            vec!["parameters"],
        ),
        (
            "a tool_choice naming an unknown tool",
            "/v1/chat/completions",
            chat(
                json!({"tools": tool(json!({"type": "object", "properties": {}})),
                        "tool_choice": {"type": "function", "function": {"name": "no_such_tool"}}}),
            ),
            Some("tool_choice*"),
            vec!["no_such_tool"],
        ),
        (
            "n larger than --parallel",
            "/v1/chat/completions",
            chat(json!({"n": 5})),
            Some("n"),
            vec!["--parallel"],
        ),
        (
            "n = 0",
            "/v1/chat/completions",
            chat(json!({"n": 0})),
            Some("n"),
            vec!["n"],
        ),
    ];
    for (what, path, body, param, needles) in cases {
        let (status, reply) = s.json("POST", path, &body);
        assert_eq!(status, 400, "{what}: {reply}");
        let error = &reply["error"];
        let message = error["message"].as_str().unwrap_or_default();
        assert!(error["type"].is_string(), "{what}: {reply}");
        for needle in needles {
            assert!(
                message.contains(needle),
                "{what}: {message:?} does not name {needle:?}"
            );
        }
        if let Some(param) = param {
            let got = error["param"].as_str().unwrap_or_default();
            let matches = match param.strip_suffix('*') {
                Some(prefix) => got.starts_with(prefix),
                None => got == param,
            };
            assert!(
                matches,
                "{what}: param {got:?}, expected {param:?}: {reply}"
            );
        }
    }
    // None of it hurt the server: plain and constrained requests still work.
    ok(
        &s,
        "/v1/chat/completions",
        &json!({"messages": msgs, "max_tokens": 2}),
    );
    let reply = ok(
        &s,
        "/completion",
        &json!({"prompt": "a", "grammar": "root ::= \"yes\" | \"no\"", "n_predict": 8}),
    );
    assert!(
        reply["content"] == "yes" || reply["content"] == "no",
        "{reply}"
    );
}

#[test]
fn a_grammar_that_cannot_finish_in_time_stops_at_the_limit_promptly() {
    let s = start();
    // One or more `a`s: the grammar never has to end, the budget ends it.
    let started = Instant::now();
    let reply = ok(
        &s,
        "/completion",
        &json!({"prompt": "a", "grammar": "root ::= \"a\"+", "n_predict": 5}),
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(reply["stop_type"], "limit", "{reply}");
    assert_eq!(reply["tokens_predicted"], 5, "{reply}");
    let content = reply["content"].as_str().unwrap();
    assert!(
        !content.is_empty() && content.chars().all(|c| c == 'a'),
        "{reply}"
    );

    // A schema that needs at least 50 array items cannot be met in 8 tokens.
    let schema = json!({
        "type": "object",
        "properties": {"xs": {"type": "array", "items": {"type": "integer", "minimum": 0,
                                                        "maximum": 9}, "minItems": 50}},
        "required": ["xs"],
        "additionalProperties": false
    });
    let started = Instant::now();
    let reply = ok(
        &s,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "fifty digits"}],
                "response_format": response_format(schema), "max_tokens": 8}),
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let choice = &reply["choices"][0];
    assert_eq!(choice["finish_reason"], "length", "{reply}");
    assert_eq!(reply["usage"]["completion_tokens"], 8, "{reply}");
    let content = choice["message"]["content"].as_str().unwrap();
    assert!(
        content.starts_with("{\"xs\": [") || "{\"xs\": [".starts_with(content),
        "the constraint's compact layout: {reply}"
    );
}

#[test]
#[ignore = "needs openai, langchain-openai and jsonschema from PyPI: run by cargo xtask ci"]
fn the_openai_client_and_langchain_get_parsed_objects_and_tool_calls() {
    let Some(python) = python_with(&["openai", "langchain_openai", "jsonschema", "pydantic"])
    else {
        return;
    };
    let s = start_for_clients();
    run_client_script(
        &python,
        "structured_client_test.py",
        &[&s.base(), "--timeout", "300"],
    );
}

#[test]
#[ignore = "needs jsonschema from PyPI: run by cargo xtask ci"]
fn random_schemas_and_grammars_give_valid_outputs() {
    let Some(python) = python_with(&["jsonschema"]) else {
        return;
    };
    let s = start_for_clients();
    run_client_script(
        &python,
        "schema_property_test.py",
        &[&s.base(), "--count", "100", "--timeout", "300"],
    );
}
