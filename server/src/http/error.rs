//! API errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, with the
//! HTTP status that fits (400 bad request, 401 bad key, 404 unknown model or route, 413 body too
//! large, 408 body too slow, 503 not ready or queue full — with `Retry-After` —, 500 internal).
//!
//! This module does NOT decide when a request is bad; handlers and extractors do.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::SubmitError;
use crate::sampling::SamplingError;

/// An error response.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds for a `Retry-After` header (503s).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    /// 400 with `invalid_request_error`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400 naming the offending parameter.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.to_string()),
            ..Self::bad_request(message)
        }
        .with_code("invalid_value")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            ..Self::bad_request(message)
        }
    }

    pub fn unknown_model(requested: &str, served: &str) -> Self {
        Self {
            param: Some("model".into()),
            ..Self::not_found(format!(
                "the model `{requested}` does not exist on this server; it serves `{served}` \
                 (see GET /v1/models)"
            ))
        }
        .with_code("model_not_found")
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            ..Self::bad_request(format!(
                "the request body is larger than the limit of {limit} bytes; send a smaller \
                 request or raise --max-body (BITNET_MAX_BODY)"
            ))
        }
        .with_code("request_too_large")
    }

    /// 408: the body did not arrive within `--body-timeout`.
    pub fn body_timeout(limit: std::time::Duration) -> Self {
        Self {
            status: StatusCode::REQUEST_TIMEOUT,
            ..Self::bad_request(format!(
                "the request body did not arrive in full within {} s of the request head; \
                 send it at once, or raise --body-timeout (BITNET_BODY_TIMEOUT)",
                limit.as_secs_f64()
            ))
        }
        .with_code("request_timeout")
    }

    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            kind: "authentication_error",
            ..Self::bad_request(
                "missing or wrong API key: send `Authorization: Bearer <key>` with the key the \
                 server was started with (--api-key / BITNET_API_KEY)",
            )
        }
        .with_code("invalid_api_key")
    }

    /// 503 while the model is not ready; `state` describes where it is.
    pub fn not_ready(state: &str) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "unavailable_error",
            retry_after: Some(5),
            ..Self::bad_request(format!("the model is not ready yet: {state}"))
        }
        .with_code("model_not_ready")
    }

    /// 503 once shutdown has begun: in-flight requests finish, new ones are refused.
    pub fn shutting_down() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "unavailable_error",
            ..Self::bad_request(
                "the server is shutting down: requests already running finish, new ones are \
                 refused; send this one to another replica or retry once the server is back",
            )
        }
        .with_code("shutting_down")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            ..Self::bad_request(message)
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }

    /// The JSON body (also used for SSE error events).
    pub fn body_json(&self) -> String {
        serde_json::to_string(&Body {
            error: Detail {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        })
        .unwrap_or_else(|_| {
            r#"{"error":{"message":"internal error","type":"server_error"}}"#.into()
        })
    }
}

/// A sampling parameter out of range: 400 `invalid_request_error` naming the parameter.
impl From<SamplingError> for ApiError {
    fn from(e: SamplingError) -> Self {
        ApiError::invalid_param(e.param, e.to_string())
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        let message = e.to_string();
        match e {
            SubmitError::EmptyPrompt => ApiError::invalid_param("prompt", message),
            SubmitError::ContextOverflow { .. } => {
                ApiError::invalid_param("max_tokens", message).with_code("context_length_exceeded")
            }
            SubmitError::TokenOutOfRange { .. } => ApiError::invalid_param("prompt", message),
            SubmitError::QueueFull { .. } => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                kind: "unavailable_error",
                retry_after: Some(1),
                ..ApiError::bad_request(message)
            }
            .with_code("queue_full"),
            SubmitError::ShuttingDown => ApiError::shutting_down(),
            SubmitError::TooManyChoices { .. } => ApiError::invalid_param("n", message),
            SubmitError::EmptyInput { .. } => ApiError::invalid_param("input", message),
            SubmitError::InputTooLong { .. } => {
                ApiError::invalid_param("input", message).with_code("context_length_exceeded")
            }
            SubmitError::NotGenerative => ApiError::bad_request(format!(
                "{message}: use POST /v1/embeddings (or /embedding), or start the server with a \
                 generation model"
            ))
            .with_code("model_not_generative"),
            SubmitError::NotEmbedding => ApiError::bad_request(format!(
                "{message}: start a server with an embedding model (e.g. BitNet's \
                 bitnet-embedding-0.6b) for /v1/embeddings"
            ))
            .with_code("model_not_embedding"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.body_json(),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape() {
        let e = ApiError::invalid_param("temperature", "temperature must be between 0 and 2");
        let v: serde_json::Value = serde_json::from_str(&e.body_json()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "temperature");
        assert_eq!(v["error"]["code"], "invalid_value");
        let e = ApiError::internal("boom");
        let v: serde_json::Value = serde_json::from_str(&e.body_json()).unwrap();
        assert!(v["error"]["param"].is_null());
    }

    #[test]
    fn queue_full_has_retry_after() {
        let r = ApiError::from(SubmitError::QueueFull { capacity: 3 }).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
