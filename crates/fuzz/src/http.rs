//! Target `http_request`: request bodies of the generation, tokenize, detokenize and embedding
//! endpoints,
//! through the functions the handlers use — `http::json::parse` (the body extractor), each
//! request's `settings()` (every range and shape check), then the prompt work a handler does
//! before it reaches the engine (`tokenize_prompt`, `chat_prompt`, `tokenize_body`,
//! `detokenize_content`, `embeddings::parse_inputs` + `tokenize_inputs`) with the real tokenizer and BitNet's chat format
//! ([`crate::vocab`]).
//!
//! Input: the first byte picks the endpoint (modulo 6: chat, completions, `/completion`,
//! `/tokenize`, `/detokenize`, `/v1/embeddings`), the rest is the body.
//!
//! Promises checked: no panic; a refused body is a 4xx error with a message, never a 5xx; an
//! accepted one yields in-vocabulary prompt ids and a JSON response body.

use crate::vocab::{bitnet_chat, data};
use bitnet_server::engine::TokenCodec;
use bitnet_server::engine::bitnet::BitnetTokenizer;
use bitnet_server::http::error::ApiError;
use bitnet_server::http::generate::tokenize_prompt;
use bitnet_server::http::json::parse;
use bitnet_server::http::{embeddings, llama, openai};
use bitnet_tokenizer::Tokenizer;
use std::sync::OnceLock;

/// The endpoints in selector order.
pub const ENDPOINTS: [&str; 6] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/completion",
    "/tokenize",
    "/detokenize",
    "/v1/embeddings",
];

/// The context the embedding inputs are checked against (truncation cuts to it).
const EMBED_CTX: usize = 512;

fn codec() -> &'static BitnetTokenizer {
    static CODEC: OnceLock<BitnetTokenizer> = OnceLock::new();
    CODEC.get_or_init(|| {
        let tok = Tokenizer::new(data()).expect("the harness vocabulary is valid");
        BitnetTokenizer::new(tok, bitnet_chat())
    })
}

pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let tok: &dyn TokenCodec = codec();
    let result = match selector % ENDPOINTS.len() as u8 {
        0 => parse::<openai::ChatRequest>(body)
            .and_then(|r| r.settings())
            .and_then(|s| openai::chat_prompt(tok, &s.messages))
            .map(|ids| check_ids(tok, &ids)),
        1 => parse::<openai::CompletionRequest>(body)
            .and_then(|r| r.settings())
            .and_then(|s| tokenize_prompt(tok, &s.prompt))
            .map(|ids| check_ids(tok, &ids)),
        2 => parse::<llama::CompletionRequest>(body)
            .and_then(|r| r.settings())
            .and_then(|s| tokenize_prompt(tok, &s.prompt))
            .map(|ids| check_ids(tok, &ids)),
        3 => parse::<llama::TokenizeRequest>(body)
            .and_then(|r| llama::tokenize_body(tok, r))
            .map(|body| {
                serde_json::from_slice::<serde_json::Value>(&body)
                    .expect("the /tokenize body is JSON");
            }),
        4 => parse::<llama::DetokenizeRequest>(body)
            .and_then(|r| llama::detokenize_content(tok, &r))
            .map(drop),
        _ => parse::<embeddings::EmbeddingRequest>(body).and_then(|r| {
            let truncate = r.truncate.unwrap_or(false);
            let inputs = embeddings::parse_inputs("input", r.input.as_ref())?;
            let n = inputs.len();
            let ids = embeddings::tokenize_inputs(tok, "input", inputs, EMBED_CTX, truncate)?;
            assert_eq!(ids.len(), n, "one id list per input");
            for input in &ids {
                assert!(
                    !input.is_empty(),
                    "an accepted input has at least one token"
                );
                assert!(
                    !truncate || input.len() <= EMBED_CTX,
                    "truncation fits the context"
                );
            }
            Ok(())
        }),
    };
    if let Err(e) = result {
        check_refusal(&e);
    }
}

/// Prompt ids as the engine would get them. Token-array prompts are passed through as given
/// (the engine refuses ids outside the vocabulary at submit); text always encodes in range.
fn check_ids(tok: &dyn TokenCodec, ids: &[u32]) {
    assert!(!ids.is_empty(), "an accepted prompt has at least one token");
    let _ = tok.decode(ids);
}

fn check_refusal(e: &ApiError) {
    assert!(
        e.status.is_client_error(),
        "a request body got {} ({}), not a 4xx",
        e.status,
        e.message
    );
    let body: serde_json::Value =
        serde_json::from_str(&e.body_json()).expect("the error body is JSON");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "an error without a message: {body}");
}
