//! The HTTP API end to end over 127.0.0.1, with the deterministic test backend (see
//! `common/mod.rs`): response shapes, SSE framing, stop strings, logprobs, llama.cpp endpoints,
//! every bad-request class, readiness, API keys and metrics.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Gate, Setup, TestServer, client, sse_data};
use serde_json::{Value, json};

async fn post(url: &str, body: Value) -> (u16, Value) {
    let r = client().post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

async fn post_raw(url: &str, body: Vec<u8>) -> (u16, Value) {
    let r = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

async fn stream_text(url: &str, body: Value) -> (u16, String, String) {
    let r = client().post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ctype, r.text().await.unwrap())
}

/// Assert the OpenAI error shape and return the message.
fn error_message(body: &Value) -> String {
    let e = &body["error"];
    assert!(e["message"].is_string(), "no error.message in {body}");
    assert!(e["type"].is_string(), "no error.type in {body}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "param/code missing in {body}"
    );
    e["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn chat_completion_shape_and_usage() {
    let s = TestServer::ready(Setup::default()).await;
    let (status, body) = post(
        &s.url("/v1/chat/completions"),
        json!({"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 5}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], "test-model");
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    // The template ends with "assistant:"; the test model continues a, b, c, ...
    assert_eq!(choice["message"]["content"], "abcde");
    assert_eq!(choice["finish_reason"], "length");
    // Prompt: <s> + "user: hi\n" + "assistant:" = 1 + 9 + 10 tokens.
    assert_eq!(body["usage"]["prompt_tokens"], 20);
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(body["usage"]["total_tokens"], 25);
    assert!(body["choices"][0]["logprobs"].is_null());
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn completions_stop_at_eos_and_at_stop_strings() {
    let s = TestServer::ready(Setup::default()).await;
    // "x" → "y", "z", then end of sequence.
    let (status, body) = post(
        &s.url("/v1/completions"),
        json!({"prompt": "x", "temperature": 0, "max_tokens": 50}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "yz");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 2, "BOS + x");
    assert_eq!(
        body["usage"]["completion_tokens"], 3,
        "y, z and the end-of-sequence token"
    );

    let (_, body) = post(
        &s.url("/v1/completions"),
        json!({"prompt": "a", "temperature": 0, "max_tokens": 20, "stop": ["ef", "zz"]}),
    )
    .await;
    assert_eq!(body["choices"][0]["text"], "bcd");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    // Token-array prompts are used as given (no BOS added).
    let (_, body) = post(
        &s.url("/v1/completions"),
        json!({"prompt": [104], "temperature": 0, "max_tokens": 2}),
    )
    .await;
    assert_eq!(body["choices"][0]["text"], "ij");
    assert_eq!(body["usage"]["prompt_tokens"], 1);

    // Legacy completions default to 16 tokens.
    let (_, body) = post(
        &s.url("/v1/completions"),
        json!({"prompt": "?", "temperature": 0}),
    )
    .await;
    assert_eq!(body["choices"][0]["text"], "abcdefghijklmnop");
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn chat_stream_is_well_formed_sse_with_usage_and_done() {
    let s = TestServer::ready(Setup::default()).await;
    let (status, ctype, body) = stream_text(
        &s.url("/v1/chat/completions"),
        json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 4,
               "stream": true, "stream_options": {"include_usage": true}, "stop": "cd"}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/event-stream"), "{ctype}");
    let events = sse_data(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    let id = chunks[0]["id"].clone();
    assert!(
        chunks.iter().all(|c| c["id"] == id),
        "one id for the whole stream"
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"]
                .get(0)
                .and_then(|ch| ch["delta"]["content"].as_str())
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        text, "ab",
        "stop string \"cd\" cut the text and never leaked"
    );
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn completions_stream_without_usage() {
    let s = TestServer::ready(Setup::default()).await;
    let (_, _, body) = stream_text(
        &s.url("/v1/completions"),
        json!({"prompt": "a", "max_tokens": 3, "temperature": 0, "stream": true}),
    )
    .await;
    let events = sse_data(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "bcd");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn logprobs_follow_the_logits() {
    let s = TestServer::ready(Setup::default()).await;
    let (status, body) = post(
        &s.url("/v1/chat/completions"),
        json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 2, "logprobs": true, "top_logprobs": 2}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let content = body["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(content.len(), 2);
    // Logits: chosen 8, runner-up 4, 256 others 0 → log-softmax by hand.
    let z = (8f64).exp() + (4f64).exp() + 256.0;
    let (lp_top, lp_second) = (8.0 - z.ln(), 4.0 - z.ln());
    assert_eq!(content[0]["token"], "a");
    assert_eq!(content[0]["bytes"], json!([97]));
    assert!((content[0]["logprob"].as_f64().unwrap() - lp_top).abs() < 1e-4);
    let top = content[0]["top_logprobs"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    assert_eq!(
        (top[0]["token"].as_str(), top[1]["token"].as_str()),
        (Some("a"), Some("b"))
    );
    assert!((top[1]["logprob"].as_f64().unwrap() - lp_second).abs() < 1e-4);

    let (_, body) = post(
        &s.url("/v1/completions"),
        json!({"prompt": "a", "temperature": 0, "max_tokens": 2, "logprobs": 1}),
    )
    .await;
    let lp = &body["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"], json!(["b", "c"]));
    assert_eq!(lp["text_offset"], json!([0, 1]));
    assert!(lp["top_logprobs"][0]["b"].is_number());
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn seeds_make_sampling_reproducible() {
    let s = TestServer::ready(Setup::default()).await;
    let req = json!({"prompt": "a", "temperature": 2.0, "max_tokens": 12, "seed": 1234, "top_k": 0, "min_p": 0, "top_p": 1});
    let (_, a) = post(&s.url("/v1/completions"), req.clone()).await;
    let (_, b) = post(&s.url("/v1/completions"), req).await;
    assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn llama_cpp_endpoints() {
    let s = TestServer::ready(Setup::default()).await;
    let (status, body) = post(
        &s.url("/completion"),
        json!({"prompt": "a", "n_predict": 3, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"], "bcd");
    assert_eq!(body["stop"], true);
    assert_eq!(body["stop_type"], "limit");
    assert_eq!(body["tokens_predicted"], 3);
    assert_eq!(body["tokens_evaluated"], 2);
    assert_eq!(body["tokens"], json!([98, 99, 100]));
    assert_eq!(body["generation_settings"]["n_predict"], 3);
    assert!(body["timings"]["predicted_n"].is_number());

    let (_, body) = post(
        &s.url("/completion"),
        json!({"prompt": "a", "n_predict": 30, "temperature": 0, "stop": ["f"]}),
    )
    .await;
    assert_eq!(
        (
            body["content"].as_str(),
            body["stop_type"].as_str(),
            body["stopping_word"].as_str()
        ),
        (Some("bcde"), Some("word"), Some("f"))
    );
    let (_, body) = post(
        &s.url("/completion"),
        json!({"prompt": "x", "n_predict": -1, "temperature": 0}),
    )
    .await;
    assert_eq!(
        (body["content"].as_str(), body["stop_type"].as_str()),
        (Some("yz"), Some("eos"))
    );

    // Streaming: one object per token, a final object with stop=true, no [DONE].
    let (_, _, raw) = stream_text(
        &s.url("/completion"),
        json!({"prompt": "a", "n_predict": 2, "temperature": 0, "stream": true, "n_probs": 1}),
    )
    .await;
    let events: Vec<Value> = sse_data(&raw)
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(events.len(), 3, "{raw}");
    assert_eq!(
        (events[0]["content"].as_str(), events[0]["stop"].as_bool()),
        (Some("b"), Some(false))
    );
    assert_eq!(events[0]["completion_probabilities"][0]["token"], "b");
    assert_eq!(events[2]["stop"], true);
    assert_eq!(events[2]["tokens_predicted"], 2);

    // Mixed prompt: text and token ids.
    let (_, body) = post(
        &s.url("/completion"),
        json!({"prompt": ["a", 120], "n_predict": 1, "temperature": 0}),
    )
    .await;
    assert_eq!(body["content"], "y");

    let (_, body) = post(&s.url("/tokenize"), json!({"content": "hé</s>"})).await;
    assert_eq!(body["tokens"], json!([104, 195, 169, 257]));
    let (_, body) = post(
        &s.url("/tokenize"),
        json!({"content": "hé", "add_special": true, "with_pieces": true}),
    )
    .await;
    assert_eq!(body["tokens"][0], json!({"id": 256, "piece": "<s>"}));
    assert_eq!(
        body["tokens"][2],
        json!({"id": 195, "piece": [195]}),
        "a lone UTF-8 byte is given as bytes"
    );
    let (_, body) = post(&s.url("/detokenize"), json!({"tokens": [104, 195, 169]})).await;
    assert_eq!(body["content"], "hé");
    let (status, body) = post(&s.url("/detokenize"), json!({"tokens": [99999]})).await;
    assert_eq!(status, 400);
    assert!(error_message(&body).contains("99999"));
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_clear_4xx_errors() {
    let s = TestServer::ready(Setup {
        n_ctx: 64,
        ..Setup::default()
    })
    .await;
    let chat = s.url("/v1/chat/completions");
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let cases: Vec<(&str, u16, Vec<u8>, &str)> = vec![
        ("invalid JSON", 400, b"{\"messages\": [".to_vec(), "not valid JSON"),
        ("not an object", 400, b"\"hello\"".to_vec(), "JSON object"),
        ("wrong type", 400, serde_json::to_vec(&json!({"messages": msgs, "max_tokens": "ten"})).unwrap(), "max_tokens"),
        ("wrong nested type", 400, serde_json::to_vec(&json!({"messages": [{"role": 1, "content": "x"}]})).unwrap(), "messages[0].role"),
        ("missing messages", 400, serde_json::to_vec(&json!({"model": "test-model"})).unwrap(), "missing field `messages`"),
        ("empty messages", 400, serde_json::to_vec(&json!({"messages": []})).unwrap(), "`messages` is empty"),
        ("unknown model", 404, serde_json::to_vec(&json!({"model": "gpt-9", "messages": msgs})).unwrap(), "gpt-9"),
        ("negative max_tokens", 400, serde_json::to_vec(&json!({"messages": msgs, "max_tokens": -5})).unwrap(), "positive integer"),
        ("huge max_tokens", 400, serde_json::to_vec(&json!({"messages": msgs, "max_tokens": 1_000_000_000})).unwrap(), "exceeds the model's context of 64"),
        ("prompt over context", 400, serde_json::to_vec(&json!({"messages": [{"role": "user", "content": "x".repeat(200)}]})).unwrap(), "context of 64"),
        ("n of 0", 400, serde_json::to_vec(&json!({"messages": msgs, "n": 0})).unwrap(), "between 1 and 128"),
        ("n over the slots", 400, serde_json::to_vec(&json!({"messages": msgs, "n": 100})).unwrap(), "--parallel"),
        ("temperature out of range", 400, serde_json::to_vec(&json!({"messages": msgs, "temperature": 7})).unwrap(), "temperature"),
        ("top_logprobs without logprobs", 400, serde_json::to_vec(&json!({"messages": msgs, "top_logprobs": 2})).unwrap(), "logprobs: true"),
        ("bad role", 400, serde_json::to_vec(&json!({"messages": [{"role": "robot", "content": "x"}]})).unwrap(), "robot"),
        ("image content", 400, serde_json::to_vec(&json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})).unwrap(), "only text"),
        ("tools", 400, serde_json::to_vec(&json!({"messages": msgs, "tools": [{"type": "function"}]})).unwrap(), "tool"),
        ("stop of wrong type", 400, serde_json::to_vec(&json!({"messages": msgs, "stop": [1]})).unwrap(), "stop[0]"),
        ("empty body", 400, Vec::new(), "empty"),
    ];
    for (name, want, body, needle) in cases {
        let (status, json) = post_raw(&chat, body).await;
        assert_eq!(status, want, "{name}: {json}");
        let msg = error_message(&json);
        assert!(
            msg.contains(needle),
            "{name}: {msg:?} does not mention {needle:?}"
        );
    }

    // Invalid UTF-8 inside a JSON string.
    let mut bad = b"{\"messages\": [{\"role\": \"user\", \"content\": \"".to_vec();
    bad.extend_from_slice(&[0xff, 0xfe]);
    bad.extend_from_slice(b"\"}]}");
    let (status, json) = post_raw(&chat, bad).await;
    assert_eq!(status, 400);
    assert!(error_message(&json).contains("UTF-8"));

    // Ten megabytes against the 2 MiB cap.
    let big = format!(
        "{{\"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}",
        "a".repeat(10 << 20)
    );
    let (status, json) = post_raw(&chat, big.into_bytes()).await;
    assert_eq!(status, 413);
    assert!(error_message(&json).contains("--max-body"));

    // The same classes on the other generation endpoints.
    let (status, json) = post(
        &s.url("/v1/completions"),
        json!({"prompt": "a", "max_tokens": 0}),
    )
    .await;
    assert_eq!(status, 400, "{json}");
    let (status, json) = post(&s.url("/v1/completions"), json!({"prompt": ["a", "b"]})).await;
    assert_eq!(status, 400);
    assert!(error_message(&json).contains("one prompt"));
    let (status, json) = post(
        &s.url("/v1/completions"),
        json!({"prompt": "a", "model": "nope"}),
    )
    .await;
    assert_eq!(status, 404, "{json}");
    assert_eq!(json["error"]["code"], "model_not_found");
    let (status, json) = post(
        &s.url("/completion"),
        json!({"prompt": "a", "n_predict": -7}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error_message(&json).contains("n_predict"));
    let (status, json) = post(
        &s.url("/completion"),
        json!({"prompt": "x".repeat(100), "n_predict": 1}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error_message(&json).contains("context"));
    let (status, json) = post(&s.url("/completion"), json!({"prompt": [300]})).await;
    assert_eq!(status, 400);
    assert!(error_message(&json).contains("out of range"));
    let (status, json) = post(&s.url("/detokenize"), json!({"tokens": [-1]})).await;
    assert_eq!(status, 400);
    assert!(error_message(&json).contains("tokens[0]"));

    // Unknown routes and methods.
    let r = client().get(s.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(error_message(&r.json().await.unwrap()).contains("/v2/nothing"));
    let r = client()
        .get(s.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    // None of it hurt the server.
    let (status, _) = post(&chat, json!({"messages": msgs, "max_tokens": 1})).await;
    assert_eq!(status, 200);
    s.shutdown().await.unwrap();
}

/// Issue 18: `--alias` names are accepted and listed after the id; the file name is accepted
/// but not listed; responses always name the model id; any other name is a 404.
#[tokio::test]
async fn aliases_are_accepted_and_listed_and_responses_name_the_model_id() {
    let s = TestServer::ready(Setup {
        aliases: vec!["gpt-4o-mini".into(), "bitnet".into()],
        ..Setup::default()
    })
    .await;
    let r = client().get(s.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let models: Value = r.json().await.unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["test-model", "gpt-4o-mini", "bitnet"], "{models}");
    for entry in models["data"].as_array().unwrap() {
        assert_eq!(entry["object"], "model", "{entry}");
        assert_eq!(entry["owned_by"], "bitnet-server", "{entry}");
    }
    let msgs = json!([{"role": "user", "content": "hi"}]);
    for name in ["test-model", "gpt-4o-mini", "bitnet", "test-model.gguf"] {
        let (status, body) = post(
            &s.url("/v1/chat/completions"),
            json!({"model": name, "messages": msgs, "max_tokens": 2}),
        )
        .await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["model"], "test-model", "{name}");
        let (status, body) = post(
            &s.url("/v1/completions"),
            json!({"model": name, "prompt": "a", "max_tokens": 2}),
        )
        .await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["model"], "test-model", "{name}");
        let (status, body) = post(
            &s.url("/completion"),
            json!({"model": name, "prompt": "a", "n_predict": 2}),
        )
        .await;
        assert_eq!(status, 200, "{name}: {body}");
    }
    let (status, body) = post(
        &s.url("/v1/chat/completions"),
        json!({"model": "gpt-9", "messages": msgs}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "model_not_found");
    assert!(error_message(&body).contains("gpt-9"), "{body}");
    s.shutdown().await.unwrap();
}

/// Issue 18: `--accept-any-model` sends every name to the one model; responses name its id and
/// `/v1/models` still lists only what the server serves.
#[tokio::test]
async fn accept_any_model_takes_any_name_and_answers_with_the_model_id() {
    let s = TestServer::ready(Setup {
        accept_any_model: true,
        ..Setup::default()
    })
    .await;
    let msgs = json!([{"role": "user", "content": "hi"}]);
    for name in ["gpt-4o", "", "anything/at-all:latest"] {
        let (status, body) = post(
            &s.url("/v1/chat/completions"),
            json!({"model": name, "messages": msgs, "max_tokens": 2}),
        )
        .await;
        assert_eq!(status, 200, "{name:?}: {body}");
        assert_eq!(body["model"], "test-model", "{name:?}");
        let (status, body) = post(
            &s.url("/v1/completions"),
            json!({"model": name, "prompt": "a", "max_tokens": 2}),
        )
        .await;
        assert_eq!(status, 200, "{name:?}: {body}");
        assert_eq!(body["model"], "test-model", "{name:?}");
        let (status, body) = post(
            &s.url("/completion"),
            json!({"model": name, "prompt": "a", "n_predict": 2}),
        )
        .await;
        assert_eq!(status, 200, "{name:?}: {body}");
    }
    let r = client().get(s.url("/v1/models")).send().await.unwrap();
    let models: Value = r.json().await.unwrap();
    assert_eq!(models["data"].as_array().unwrap().len(), 1, "{models}");
    assert_eq!(models["data"][0]["id"], "test-model");
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn not_ready_gives_503_with_the_state_then_ready_gives_200() {
    let gate = Arc::new(Gate::default());
    let s = TestServer::start(Setup {
        gate: Some(gate.clone()),
        ..Setup::default()
    })
    .await;
    s.wait_for_state("loading", Duration::from_secs(5)).await;
    let r = client().get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let h: Value = r.json().await.unwrap();
    assert_eq!(
        (h["state"].as_str(), h["status"].as_str()),
        (Some("loading"), Some("loading"))
    );

    let r = client()
        .post(s.url("/v1/chat/completions"))
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert!(error_message(&body).contains("loading the model"), "{body}");
    // The model list answers before the model is ready.
    let r = client().get(s.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let models: Value = r.json().await.unwrap();
    assert_eq!(models["data"][0]["id"], "test-model");

    gate.open();
    s.wait_for_state("ready", Duration::from_secs(5)).await;
    let r = client().get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h: Value = r.json().await.unwrap();
    assert_eq!(
        (h["status"].as_str(), h["kernel"].as_str()),
        (Some("ok"), Some("test-kernel"))
    );
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn api_key_is_required_except_for_probes() {
    let s = TestServer::ready(Setup {
        api_key: Some("sk-test".into()),
        ..Setup::default()
    })
    .await;
    let body = json!({"prompt": "a", "max_tokens": 1});
    let r = client()
        .post(s.url("/v1/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .post(s.url("/v1/completions"))
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .post(s.url("/v1/completions"))
        .bearer_auth("sk-test")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        client()
            .get(s.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client()
            .get(s.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    s.shutdown().await.unwrap();
}

/// Issue 16, defect 9: keys are compared trimmed on both sides (a configured key pasted with
/// a newline works), and a wrong key is refused whether or not its length matches.
#[tokio::test]
async fn api_keys_are_trimmed_and_wrong_keys_refused_at_any_length() {
    let s = TestServer::ready(Setup {
        api_key: Some("  sk-test-key\n".into()),
        ..Setup::default()
    })
    .await;
    let body = json!({"prompt": "a", "max_tokens": 1});
    let mut seen = Vec::new();
    for (presented, want) in [
        ("sk-test-key", 200),
        ("   sk-test-key", 200),
        ("sk-test-kez", 401),
        ("sk-test-ke", 401),
        ("sk-test-key-longer", 401),
        ("x", 401),
    ] {
        let r = client()
            .post(s.url("/v1/completions"))
            .header("authorization", format!("Bearer {presented}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        seen.push(format!("{presented:?} -> {}", r.status().as_u16()));
        assert_eq!(r.status().as_u16(), want, "{presented:?}: {seen:?}");
    }
    eprintln!("bearer token -> status: {seen:?}");
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_count_requests_and_tokens() {
    let s = TestServer::ready(Setup::default()).await;
    post(
        &s.url("/v1/completions"),
        json!({"prompt": "a", "max_tokens": 3, "temperature": 0}),
    )
    .await;
    post(
        &s.url("/v1/completions"),
        json!({"prompt": "a", "max_tokens": -1}),
    )
    .await;
    let text = client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("bitnet_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("bitnet_requests_total{endpoint=\"/v1/completions\",status=\"400\"} 1"),
        "{text}"
    );
    assert!(text.contains("bitnet_generated_tokens_total 3"), "{text}");
    assert!(text.contains("bitnet_prompt_tokens_total 2"), "{text}");
    assert!(
        text.contains("bitnet_model_state{state=\"ready\"} 1"),
        "{text}"
    );
    assert!(text.contains("kernel=\"test-kernel\""), "{text}");
    s.shutdown().await.unwrap();
}

/// One validation for sampling parameters: an HTTP body and the CLI's flags get the same error
/// (the message of `SamplingParams::validate`); HTTP returns it as a 400 naming the parameter.
#[tokio::test]
async fn sampling_errors_are_the_same_over_http_and_the_cli() {
    use bitnet_server::sampling::SamplingParams;
    let s = TestServer::ready(Setup::default()).await;
    let cases = [
        ("temperature", "--temp", "5", json!(5)),
        ("top_p", "--top-p", "-1", json!(-1)),
    ];
    for (param, flag, value, json_value) in cases {
        let mut params = SamplingParams::default();
        match param {
            "temperature" => params.temperature = 5.0,
            _ => params.top_p = -1.0,
        }
        let expected = params.validate().unwrap_err().to_string();
        assert!(expected.contains(param), "{expected}");

        for (url, body) in [
            (
                s.url("/v1/chat/completions"),
                json!({"messages": [{"role": "user", "content": "hi"}], param: json_value}),
            ),
            (
                s.url("/v1/completions"),
                json!({"prompt": "a", param: json_value}),
            ),
            (
                s.url("/completion"),
                json!({"prompt": "a", param: json_value}),
            ),
        ] {
            let (status, json) = post(&url, body).await;
            assert_eq!(status, 400, "{url}: {json}");
            assert_eq!(json["error"]["param"], param, "{url}: {json}");
            assert_eq!(error_message(&json), expected, "{url}");
        }

        // The CLI checks the flags before it reads the model, so no model file is needed.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bitnet-server"))
            .args([
                "generate",
                "-m",
                "/nonexistent.gguf",
                "-p",
                "x",
                flag,
                value,
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(&expected), "{stderr:?} lacks {expected:?}");
    }
    // OpenAI's edges are accepted on both sides: temperature 2 and top_p 0.
    let (status, json) = post(
        &s.url("/v1/completions"),
        json!({"prompt": "a", "temperature": 2, "top_p": 0, "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    s.shutdown().await.unwrap();
}

/// Control tokens produce no text: `</s>` generated under `ignore_eos` is left out of the
/// content (the token itself is still counted and listed).
#[tokio::test]
async fn generated_control_tokens_are_not_shown() {
    let s = TestServer::ready(Setup::default()).await;
    // After "y": z, </s> (EOS, a control token), a, b.
    let (status, body) = post(
        &s.url("/completion"),
        json!({"prompt": "y", "n_predict": 4, "temperature": 0, "ignore_eos": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tokens"], json!([122, common::EOS, 97, 98]));
    assert_eq!(body["content"], "zab");
    let (_, _, raw) = stream_text(
        &s.url("/v1/completions"),
        json!({"prompt": "y", "max_tokens": 4, "temperature": 0, "ignore_eos": true, "stream": true}),
    )
    .await;
    let events = sse_data(&raw);
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_str(e).unwrap();
            v["choices"][0]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, "zab");
    s.shutdown().await.unwrap();
}

/// Issue 16, defect 3: after a scheduler panic every request failed with 503 while `/health`
/// stayed 200 "ready", so no orchestrator restarted the zombie. Now `/health` answers 503
/// `failed` with the reason from the moment the engine dies, and `serve::run` returns
/// `ServeError::EngineFailed` (the binary exits with status 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_panic_turns_health_unhealthy_and_ends_the_server() {
    let mut s = TestServer::ready(Setup {
        panic_on: Some(u32::from(b'!')),
        ..Setup::default()
    })
    .await;
    let (status, body) = post(&s.url("/completion"), json!({"prompt": "boom!"})).await;
    eprintln!("the request that hit the panic: {status} {body}");
    assert_eq!(status, 500, "{body}");
    // Until the server has closed its listener, /health must say unhealthy.
    let health = match client().get(s.url("/health")).send().await {
        Ok(r) => {
            let code = r.status().as_u16();
            (code, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, format!("connection failed: {e}")),
    };
    eprintln!("/health after the panic: {} {}", health.0, health.1);
    assert_ne!(health.0, 200, "{}", health.1);
    if health.0 != 0 {
        assert_eq!(health.0, 503, "{}", health.1);
        assert!(health.1.contains("\"state\":\"failed\""), "{}", health.1);
        assert!(health.1.contains("test backend: token 33"), "{}", health.1);
    }
    let task = s.task.take().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the server ended on its own after the engine died")
        .unwrap();
    eprintln!("serve::run returned: {result:?}");
    let report = s.state.health.report();
    assert_eq!(report.state, "failed", "{report:?}");
    let message = result.expect_err("run must fail").to_string();
    assert!(
        message.contains("inference engine") && message.contains("test backend"),
        "{message}"
    );
}

/// Issue 16, defect 4: a failed acquisition or load is not permanent. `/health` answers 503
/// `failed` with the reason (and when the next attempt is), and the server retries with
/// backoff: here the model file appears after the first failure and the server becomes ready
/// without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_model_is_503_with_the_reason_and_retried_until_ready() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("late.gguf");
    let s = TestServer::start(Setup {
        source: Some(bitnet_server::download::ModelSource::Local {
            path: model.clone(),
            sha256: None,
        }),
        retry_first: Duration::from_millis(300),
        ..Setup::default()
    })
    .await;
    s.wait_for_state("failed", Duration::from_secs(10)).await;
    let r = client().get(s.url("/health")).send().await.unwrap();
    let failed_status = r.status().as_u16();
    let failed: Value = r.json().await.unwrap();
    eprintln!("/health while the file is missing: {failed_status} {failed}");
    assert_eq!(failed_status, 503);
    assert_eq!(failed["status"], "error");
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("late.gguf"), "{failed}");

    std::fs::write(&model, b"the test loader ignores the contents").unwrap();
    s.wait_for_state("ready", Duration::from_secs(20)).await;
    let ready_status = client()
        .get(s.url("/health"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    eprintln!("/health once the file exists: {ready_status}");
    assert_eq!(ready_status, 200);
    assert!(reason.contains("retrying in"), "{failed}");
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_generation_model_refuses_the_embedding_endpoints_with_a_clear_400() {
    let s = TestServer::ready(Setup::default()).await;
    for (path, body) in [
        ("/v1/embeddings", json!({"input": "hello"})),
        ("/embedding", json!({"content": "hello"})),
        ("/embeddings", json!({"input": ["a", "b"]})),
    ] {
        let (status, reply) = post(&s.url(path), body).await;
        assert_eq!(status, 400, "{path}: {reply}");
        assert_eq!(
            reply["error"]["code"], "model_not_embedding",
            "{path}: {reply}"
        );
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("generation model") && message.contains("embedding model"),
            "{path}: {message}"
        );
    }
    // Bad input is reported before the model kind matters: the request itself is wrong.
    let (status, reply) = post(&s.url("/v1/embeddings"), json!({"input": []})).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["param"], "input");
    s.shutdown().await.unwrap();
}

/// The prompt cache over HTTP: OpenAI usage reports `prompt_tokens_details.cached_tokens`
/// (streamed usage too), `/completion` reports llama.cpp's `timings.cache_n` / `prompt_n` and
/// honours `cache_prompt: false`, and `/metrics` counts cached prompt tokens.
#[tokio::test]
async fn cached_prompt_tokens_are_reported_in_usage_timings_and_metrics() {
    let s = TestServer::ready(Setup {
        prompt_cache: Some(1 << 20),
        ..Setup::default()
    })
    .await;
    let chat = |messages: Value, stream: bool| {
        json!({"messages": messages, "temperature": 0, "max_tokens": 3, "stream": stream,
               "stream_options": {"include_usage": true}})
    };
    let first = json!([{"role": "user", "content": "hi"}]);
    let (status, body) = post(&s.url("/v1/chat/completions"), chat(first, false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let turn1 = body["usage"]["prompt_tokens"].as_u64().unwrap();
    let reply = body["choices"][0]["message"]["content"].as_str().unwrap();

    // The next turn starts with the whole first prompt ("…assistant:"); the cached sequence
    // continues with the generated reply, the new prompt with " " + the reply as the template
    // writes it: exactly the first prompt is reused.
    let second = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "more"}
    ]);
    let (_, _, raw) = stream_text(&s.url("/v1/chat/completions"), chat(second, true)).await;
    let events = sse_data(&raw);
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(
        usage["usage"]["prompt_tokens_details"]["cached_tokens"], turn1,
        "{raw}"
    );

    // /v1/completions, the same prompt twice: the first shares only the BOS token with the
    // chats; the second takes all but its last token from the cache.
    let completion = json!({"prompt": "the same prompt", "max_tokens": 2, "temperature": 0});
    let (_, body) = post(&s.url("/v1/completions"), completion.clone()).await;
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
    let (_, body) = post(&s.url("/v1/completions"), completion).await;
    let prompt = body["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        body["usage"]["prompt_tokens_details"]["cached_tokens"],
        prompt - 1
    );

    // /completion: cache_n and prompt_n (computed) as llama.cpp reports them.
    let llama = |cache_prompt: Option<bool>| {
        let mut body = json!({"prompt": "the same prompt", "n_predict": 2, "temperature": 0});
        if let Some(c) = cache_prompt {
            body["cache_prompt"] = json!(c);
        }
        body
    };
    let (_, body) = post(&s.url("/completion"), llama(None)).await;
    assert_eq!(body["tokens_evaluated"], prompt);
    assert_eq!(body["timings"]["cache_n"], prompt - 1);
    assert_eq!(body["timings"]["prompt_n"], 1);
    let (_, body) = post(&s.url("/completion"), llama(Some(false))).await;
    assert_eq!(body["timings"]["cache_n"], 0);
    assert_eq!(body["timings"]["prompt_n"], prompt);
    let (_, body) = post(
        &s.url("/completion"),
        json!({"prompt": "x", "cache_prompt": "yes"}),
    )
    .await;
    assert!(body["error"]["message"].is_string(), "{body}");

    let metrics = client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
            .parse()
            .unwrap()
    };
    let cached = turn1 + 1 + 2 * (prompt - 1);
    assert_eq!(value("bitnet_prompt_tokens_cached_total"), cached);
    assert!(value("bitnet_prompt_cache_entries") > 0, "{metrics}");
    assert!(value("bitnet_prompt_cache_bytes") > 0, "{metrics}");
    s.shutdown().await.unwrap();
}
