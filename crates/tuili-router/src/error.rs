//! The crate's errors: [`RouterError`] for config and startup, [`ApiError`] for what a client
//! sees (an HTTP status and an OpenAI-shaped body), made in one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Config and startup failures.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A key with a bad value.
    #[error("config key {key}: {why}")]
    Config {
        /// The key, e.g. `upstream[1].price_in`.
        key: String,
        /// What is wrong and what is allowed.
        why: String,
    },
    /// The file is not TOML of the expected shape (the message names line and key).
    #[error("config: {0}")]
    Toml(String),
    /// Reading the file, binding the port.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI's `type`.
    pub kind: &'static str,
    /// A machine-readable code.
    pub code: &'static str,
    /// What happened, naming the value and the limit.
    pub message: String,
}

impl ApiError {
    /// 400: the request is malformed.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "invalid_request",
            message: message.into(),
        }
    }

    /// 404: no upstream serves the model.
    pub fn model_not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: "model_not_found",
            message: message.into(),
        }
    }

    /// 403: a private request with no allowed upstream available; nothing was sent.
    pub fn privacy(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            kind: "invalid_request_error",
            code: "privacy_no_allowed_upstream",
            message: message.into(),
        }
    }

    /// 503: every candidate failed or none is available.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            code: "no_upstream_available",
            message: message.into(),
        }
    }

    /// 504: the request's deadline passed.
    pub fn deadline(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::GATEWAY_TIMEOUT,
            kind: "server_error",
            code: "deadline_exceeded",
            message: message.into(),
        }
    }

    /// 401: the router's key is missing or wrong.
    pub fn unauthorized() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "invalid_request_error",
            code: "invalid_api_key",
            message: "missing or wrong API key (send Authorization: Bearer KEY)".into(),
        }
    }

    /// `{"error": {...}}`, also sent as an SSE event when a stream breaks.
    pub fn to_json(&self) -> String {
        json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": self.code}}).to_string()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.to_json(),
        )
            .into_response()
    }
}
