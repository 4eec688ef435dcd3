//! Issue 17 end to end: the `bitnet-server serve` binary on synthetic BitNet embedding models
//! (the published qwen3 and gemma3 tensor plans, small), no test backend.
//!
//! - `/health` reports the vector width; `/v1/embeddings` and `/embedding` answer with unit
//!   vectors, batched inputs equal the same inputs alone, and concurrent requests (embedded
//!   together by the scheduler) get the vectors they would get alone (Must show 3's contract);
//! - bad input — an empty input, 2,049 inputs, a token id outside the vocabulary, an input over
//!   the context — is a clear 400 each, and the server keeps serving (Must show 5);
//! - an embedding model refuses the completion endpoints;
//! - the real `openai` client, LangChain's `OpenAIEmbeddings` and a small RAG round trip against
//!   an embedding server and a chat server (`xtask/py/embeddings_client_test.py`; PyPI, so
//!   ignored in plain `cargo test` and run by `cargo xtask ci`).

mod common;

use base64::Engine as _;
use bitnet_gguf::GgmlType;
use bitnet_synth::{self as synth, EmbedShape, Shape};
use common::process::{ServerProcess, http, python_with, workspace};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;

/// Writes `name` once per test process (tests run in parallel threads), renamed into place.
fn cached(name: &str, bytes: impl FnOnce() -> Vec<u8>) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn embed_model(shape: &'static EmbedShape) -> PathBuf {
    static QWEN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    static GEMMA: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let cell = match shape.family {
        synth::Family::Qwen3 => &QWEN,
        synth::Family::Gemma3 => &GEMMA,
    };
    cell.get_or_init(|| {
        cached(&format!("{}.gguf", shape.name), || {
            let vocab = synth::placeholder_vocab(shape.family, shape.n_vocab);
            synth::build_embedding(shape, GgmlType::I2S, &vocab, 17).to_bytes()
        })
    })
    .clone()
}

fn chat_model() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        cached("embeddings-e2e-chat.gguf", || {
            synth::build(
                &Shape::TINY,
                GgmlType::I2S,
                GgmlType::F16,
                &synth::toy_vocab(150),
                5,
            )
            .to_bytes()
        })
    })
    .clone()
}

fn vector(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / (norm(a) * norm(b))
}

fn embeddings(s: &ServerProcess, body: Value) -> Vec<Vec<f64>> {
    let (status, reply) = s.json("POST", "/v1/embeddings", &body);
    assert_eq!(status, 200, "{body} -> {reply}");
    assert_eq!(reply["object"], "list");
    reply["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i, "{reply}");
            assert_eq!(d["object"], "embedding");
            vector(&d["embedding"])
        })
        .collect()
}

fn error_of(s: &ServerProcess, path: &str, body: &Value) -> (Value, String) {
    let (status, reply) = s.json("POST", path, body);
    assert_eq!(status, 400, "{path} {body} -> {reply}");
    let message = reply["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (reply["error"].clone(), message)
}

#[test]
fn both_families_serve_unit_vectors_and_batches_equal_single_inputs() {
    for shape in [&EmbedShape::QWEN3_TINY, &EmbedShape::GEMMA3_TINY] {
        let s = ServerProcess::start(&embed_model(shape), &[]);
        let (status, health) = s.json("GET", "/health", &Value::Null);
        assert_eq!(status, 200);
        assert_eq!(health["embedding_dim"], shape.n_embd, "{health}");

        let texts = ["the cat sat", "a b c d e f", "x", "Ünïcödé ✓ 42"];
        let batch = embeddings(&s, json!({ "input": texts }));
        assert_eq!(batch.len(), texts.len());
        for (text, v) in texts.iter().zip(&batch) {
            assert_eq!(v.len(), shape.n_embd);
            assert!(
                (norm(v) - 1.0).abs() < 1e-4,
                "{}: norm {}",
                shape.name,
                norm(v)
            );
            let alone = &embeddings(&s, json!({ "input": text }))[0];
            let c = cosine(v, alone);
            assert!(
                c > 0.99999,
                "{}: {text:?} batched vs alone: cosine {c}",
                shape.name
            );
        }
        // Different texts give different vectors.
        assert!(cosine(&batch[0], &batch[1]) < 0.999, "{}", shape.name);

        // llama.cpp's endpoint: one pooled row per input; embd_normalize -1 gives the raw
        // vector, whose direction is the same.
        let (status, reply) = s.json(
            "POST",
            "/embedding",
            &json!({"content": texts[0], "embd_normalize": -1}),
        );
        assert_eq!(status, 200, "{reply}");
        let raw = vector(&reply[0]["embedding"][0]);
        assert!(cosine(&raw, &batch[0]) > 0.99999);
        assert!(
            (norm(&raw) - 1.0).abs() > 1e-3,
            "embd_normalize -1 must not normalise"
        );

        // Base64 is the f32 little-endian bytes of the same vector; `dimensions` renormalises
        // the leading values.
        let (_, reply) = s.json(
            "POST",
            "/v1/embeddings",
            &json!({"input": texts[0], "encoding_format": "base64", "dimensions": 64}),
        );
        let b64 = reply["data"][0]["embedding"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let v: Vec<f64> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect();
        assert_eq!(v.len(), 64);
        assert!((norm(&v) - 1.0).abs() < 1e-4);
        assert!(cosine(&v, &batch[0][..64]) > 0.99999);
        assert!(reply["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    }
}

#[test]
fn concurrent_requests_get_the_vectors_they_get_alone() {
    let s = ServerProcess::start(&embed_model(&EmbedShape::QWEN3_TINY), &["--parallel", "8"]);
    let texts: Vec<String> = (0..16)
        .map(|i| format!("document number {i} {}", "x".repeat(i)))
        .collect();
    let alone: Vec<Vec<f64>> = texts
        .iter()
        .map(|t| embeddings(&s, json!({ "input": t })).remove(0))
        .collect();
    let port = s.port;
    let together: Vec<Vec<f64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = texts
            .iter()
            .map(|t| {
                let body = json!({ "input": t }).to_string();
                scope.spawn(move || {
                    let (status, text) = http(port, "POST", "/v1/embeddings", &body).unwrap();
                    assert_eq!(status, 200, "{text}");
                    let reply: Value = serde_json::from_str(&text).unwrap();
                    vector(&reply["data"][0]["embedding"])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        let c = cosine(a, b);
        assert!(c > 0.99999, "text {i}: concurrent vs alone cosine {c}");
    }
}

#[test]
fn bad_input_is_a_clear_400_and_the_server_keeps_serving() {
    let shape = &EmbedShape::QWEN3_TINY;
    let s = ServerProcess::start(&embed_model(shape), &[]);
    let n_ctx = shape.n_ctx;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/v1/embeddings",
            json!({"input": ""}),
            "`input[0]` is empty",
        ),
        ("/v1/embeddings", json!({"input": []}), "empty array"),
        (
            "/v1/embeddings",
            json!({"input": vec!["a"; 2049]}),
            "2049 inputs",
        ),
        (
            "/v1/embeddings",
            json!({"input": [[1, 2, shape.n_vocab]]}),
            "out of range",
        ),
        (
            "/v1/embeddings",
            json!({"input": [vec![5u32; n_ctx + 1]]}),
            "context",
        ),
        (
            "/v1/embeddings",
            json!({"input": "word ".repeat(4 * n_ctx)}),
            "context",
        ),
        (
            "/v1/embeddings",
            json!({"input": "a", "dimensions": 0}),
            "dimensions",
        ),
        (
            "/v1/embeddings",
            json!({"input": "a", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (
            "/embedding",
            json!({"content": ""}),
            "`content[0]` is empty",
        ),
        (
            "/embedding",
            json!({"content": "a", "embd_normalize": -2}),
            "embd_normalize",
        ),
    ];
    for (path, body, needle) in &cases {
        let (_, message) = error_of(&s, path, body);
        assert!(message.contains(needle), "{path} {body}: {message}");
    }
    // The context error names the input and its length.
    let (err, message) = error_of(
        &s,
        "/v1/embeddings",
        &json!({"input": ["ok", vec![7u32; 600]]}),
    );
    assert_eq!(err["code"], "context_length_exceeded");
    assert!(message.contains("input 1 is 600 tokens"), "{message}");
    // With truncate the same input is cut to the context and embedded.
    let v = embeddings(&s, json!({"input": [vec![7u32; 600]], "truncate": true}));
    assert_eq!(v[0].len(), shape.n_embd);
    // An embedding model refuses generation.
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}]}),
        ),
        ("/v1/completions", json!({"prompt": "hi"})),
        ("/completion", json!({"prompt": "hi"})),
    ] {
        let (err, message) = error_of(&s, path, &body);
        assert_eq!(err["code"], "model_not_generative", "{path}");
        assert!(message.contains("/v1/embeddings"), "{message}");
    }
    // Still serving.
    assert_eq!(embeddings(&s, json!({"input": "still here"})).len(), 1);
}

#[test]
#[ignore = "needs openai and langchain-openai from PyPI: run by cargo xtask ci"]
fn the_openai_client_langchain_and_a_rag_round_trip_work() {
    let Some(python) = python_with(&["openai", "langchain_openai"]) else {
        return;
    };
    let embed = ServerProcess::start(&embed_model(&EmbedShape::QWEN3_TINY), &[]);
    let chat = ServerProcess::start(&chat_model(), &[]);
    let out = Command::new(python)
        .arg(workspace().join("xtask/py/embeddings_client_test.py"))
        .arg(embed.base())
        .arg(chat.base())
        .args(["--timeout", "60"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains("0 failure(s)"),
        "{stdout}"
    );
}
