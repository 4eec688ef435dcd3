//! The JSON body extractor: every way a body can be wrong becomes an [`ApiError`] in OpenAI's
//! shape instead of axum's plain-text rejections.
//!
//! - larger than `--max-body` → 413;
//! - not in full within `--body-timeout` of the request head (a body that trickles in) → 408;
//! - not UTF-8 → 400 naming the byte offset;
//! - not JSON, or the wrong shape → 400 naming the field path (`messages[0].content`) and what
//!   was expected.
//!
//! This module does NOT check value ranges (see `params`).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;

/// A JSON body parsed into `T`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let read = Bytes::from_request(req, state);
        let bytes = tokio::time::timeout(state.body_timeout, read)
            .await
            .map_err(|_| ApiError::body_timeout(state.body_timeout))?
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::payload_too_large(state.max_body)
                } else {
                    ApiError::bad_request(format!("could not read the request body: {rejection}"))
                }
            })?;
        parse(&bytes).map(ApiJson)
    }
}

/// Parse a body with the error messages described in the module docs.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the request body is empty: send a JSON object with Content-Type: application/json",
        ));
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(ApiError::bad_request(format!(
            "the request body is not valid UTF-8 (invalid byte at offset {}); JSON must be \
             UTF-8 encoded",
            e.valid_up_to()
        )));
    }
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object ({...}) with Content-Type: application/json",
        )
        .with_code("invalid_json"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let syntax = matches!(
            inner.classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        );
        if syntax {
            ApiError::bad_request(format!("the request body is not valid JSON: {inner}"))
                .with_code("invalid_json")
        } else if path.is_empty() || path == "." {
            ApiError::bad_request(format!("the request body has the wrong shape: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid value for `{path}`: {inner}")).with_param(&path)
        }
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request(format!(
            "the request body has trailing data after the JSON: {e}"
        ))
        .with_code("invalid_json")
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Req {
        messages: Vec<Msg>,
        max_tokens: Option<i64>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Msg {
        role: String,
    }

    #[test]
    fn error_messages_name_the_problem() {
        let e = parse::<Req>(b"not json").unwrap_err();
        assert!(e.message.contains("JSON object"), "{}", e.message);
        let e = parse::<Req>(b"{not json").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        let e = parse::<Req>(br#"{"messages":[{"role":5}]}"#).unwrap_err();
        assert!(e.message.contains("messages[0].role"), "{}", e.message);
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e = parse::<Req>(br#"{"messages":[],"max_tokens":"ten"}"#).unwrap_err();
        assert!(e.message.contains("max_tokens"), "{}", e.message);
        let e = parse::<Req>(b"{\"messages\":[{\"role\":\"\xff\"}]}").unwrap_err();
        assert!(e.message.contains("not valid UTF-8"), "{}", e.message);
        let e = parse::<Req>(b"").unwrap_err();
        assert!(e.message.contains("empty"), "{}", e.message);
        let e = parse::<Req>(br#"{"messages":[]} x"#).unwrap_err();
        assert!(e.message.contains("trailing"), "{}", e.message);
        let e = parse::<Req>(br#"[1]"#).unwrap_err();
        assert!(e.message.contains("JSON object"), "{}", e.message);
        let e = parse::<Req>(br#"{"max_tokens": 1}"#).unwrap_err();
        assert!(
            e.message.contains("missing field `messages`"),
            "{}",
            e.message
        );
    }
}
