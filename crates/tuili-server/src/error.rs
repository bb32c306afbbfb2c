//! The one place where failures become HTTP statuses and OpenAI error bodies
//! `{"error": {"message", "type", "param", "code"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tuili_engine::SubmitError;

/// Everything that can go wrong serving a request (and starting the server).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The body is not JSON, or not a JSON object.
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// A field has the wrong type, is missing, or is out of range.
    #[error("{message}")]
    InvalidField {
        /// The field, as a JSON path (`messages[1].content`).
        param: String,
        /// What is wrong, with the limit and the value given.
        message: String,
    },
    /// A field asks for a feature tuili does not implement.
    #[error("{message}")]
    Unsupported {
        /// The field.
        param: String,
        /// What is not supported.
        message: String,
    },
    /// The request names a model this server does not serve.
    #[error("the model '{requested}' does not exist; this server serves '{served}'")]
    ModelNotFound {
        /// The name asked for.
        requested: String,
        /// The name served.
        served: String,
    },
    /// Prompt plus completion do not fit the context.
    #[error("the prompt has {prompt} tokens and max_tokens is {max_tokens}: {total} exceeds the context length of {ctx} tokens", total = prompt + max_tokens)]
    ContextLength {
        /// Prompt tokens.
        prompt: usize,
        /// Tokens asked for.
        max_tokens: usize,
        /// Context length.
        ctx: usize,
    },
    /// The prompt itself leaves no room for a single generated token.
    #[error("the prompt has {prompt} tokens, which leaves no room in the context length of {ctx} tokens")]
    PromptTooLong {
        /// Prompt tokens.
        prompt: usize,
        /// Context length.
        ctx: usize,
    },
    /// The body is larger than the configured limit.
    #[error("the request body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The queue is full.
    #[error("the server is busy: {waiting} requests are queued (limit {max_queue}); retry later")]
    QueueFull {
        /// Requests waiting now.
        waiting: usize,
        /// The configured limit.
        max_queue: usize,
    },
    /// Missing or wrong API key.
    #[error("missing or incorrect API key: send the header 'Authorization: Bearer <key>'")]
    Unauthorized,
    /// The model is still loading.
    #[error("the model is still loading; retry shortly")]
    NotReady,
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The engine has failed (a run of panics, or its thread ended) and serves no more.
    #[error("the engine has stopped serving: {0}")]
    EngineFailed(String),
    /// No such route.
    #[error("no route for {method} {path}")]
    NotFound {
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
    },
    /// A route exists but not for this method.
    #[error("method {method} is not allowed for {path}")]
    MethodNotAllowed {
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
    },
    /// The engine failed while generating; details go to the log, not the client.
    #[error("internal error while generating")]
    Engine(String),
    /// Socket or other I/O failure starting or running the server.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The model could not be loaded.
    #[error("loading the model: {0}")]
    Load(String),
}

impl ServerError {
    /// A range or value error on `param`.
    pub fn field(param: impl Into<String>, message: impl Into<String>) -> Self {
        ServerError::InvalidField {
            param: param.into(),
            message: message.into(),
        }
    }

    /// A feature that is not implemented, requested through `param`.
    pub fn unsupported(param: impl Into<String>, message: impl Into<String>) -> Self {
        ServerError::Unsupported {
            param: param.into(),
            message: message.into(),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        use ServerError::*;
        match self {
            InvalidJson(_) | InvalidField { .. } | Unsupported { .. } => StatusCode::BAD_REQUEST,
            ContextLength { .. } | PromptTooLong { .. } => StatusCode::BAD_REQUEST,
            ModelNotFound { .. } | NotFound { .. } => StatusCode::NOT_FOUND,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            Unauthorized => StatusCode::UNAUTHORIZED,
            NotReady | ShuttingDown | EngineFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
            Engine(_) | Io { .. } | Load(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OpenAI error object (the value of the `error` key).
    pub fn body(&self) -> ErrorBody {
        use ServerError::*;
        let (kind, param, code): (&str, Option<&str>, Option<&str>) = match self {
            InvalidJson(_) => ("invalid_request_error", None, Some("invalid_json")),
            InvalidField { param, .. } => ("invalid_request_error", Some(param), None),
            Unsupported { param, .. } => (
                "invalid_request_error",
                Some(param),
                Some("unsupported_parameter"),
            ),
            ModelNotFound { .. } => (
                "invalid_request_error",
                Some("model"),
                Some("model_not_found"),
            ),
            ContextLength { .. } | PromptTooLong { .. } => (
                "invalid_request_error",
                Some("messages"),
                Some("context_length_exceeded"),
            ),
            BodyTooLarge { .. } => ("invalid_request_error", None, Some("body_too_large")),
            QueueFull { .. } => ("rate_limit_error", None, Some("rate_limit_exceeded")),
            Unauthorized => ("invalid_request_error", None, Some("invalid_api_key")),
            NotReady => ("server_error", None, Some("model_loading")),
            ShuttingDown => ("server_error", None, Some("shutting_down")),
            EngineFailed(_) => ("server_error", None, Some("engine_failed")),
            NotFound { .. } => ("invalid_request_error", None, Some("not_found")),
            MethodNotAllowed { .. } => ("invalid_request_error", None, Some("method_not_allowed")),
            Engine(_) | Io { .. } | Load(_) => ("server_error", None, None),
        };
        ErrorBody {
            message: self.to_string(),
            kind: kind.to_string(),
            param: param.map(str::to_string),
            code: code.map(str::to_string),
        }
    }

    /// `{"error": {...}}` as a JSON string (also used inside SSE streams).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&ErrorEnvelope { error: self.body() })
            .unwrap_or_else(|_| r#"{"error":{"message":"internal error"}}"#.to_string())
    }
}

impl From<SubmitError> for ServerError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::QueueFull { waiting, max_queue } => {
                ServerError::QueueFull { waiting, max_queue }
            }
            SubmitError::TooLong {
                prompt,
                max_tokens,
                ctx,
                ..
            } => ServerError::ContextLength {
                prompt,
                max_tokens,
                ctx,
            },
            SubmitError::EmptyPrompt => ServerError::field("prompt", "the prompt is empty"),
            SubmitError::ShuttingDown => ServerError::ShuttingDown,
            SubmitError::Failed(why) => ServerError::EngineFailed(why),
        }
    }
}

/// The OpenAI error object.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ErrorBody {
    /// Human-readable message naming the field, the limit and the value.
    pub message: String,
    /// `invalid_request_error`, `rate_limit_error`, `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The offending field, when there is one.
    pub param: Option<String>,
    /// A machine-readable code, when there is one.
    pub code: Option<String>,
}

#[derive(Serialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        if let ServerError::Engine(detail) = &self {
            tracing::error!("engine error: {detail}");
        }
        let status = self.status();
        let mut resp = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.to_json(),
        )
            .into_response();
        let headers = resp.headers_mut();
        match self {
            ServerError::QueueFull { .. } | ServerError::NotReady | ServerError::ShuttingDown => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ServerError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_full_is_429_with_retry_after() {
        let resp = ServerError::QueueFull {
            waiting: 3,
            max_queue: 3,
        }
        .into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn context_length_names_both_numbers() {
        let e = ServerError::from(SubmitError::TooLong {
            prompt: 100,
            max_tokens: 2000,
            total: 2100,
            ctx: 2048,
        });
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let msg = e.body().message;
        assert!(
            msg.contains("100") && msg.contains("2000") && msg.contains("2048"),
            "{msg}"
        );
        assert_eq!(e.body().code.as_deref(), Some("context_length_exceeded"));
    }

    #[test]
    fn body_is_openai_shaped() {
        let e = ServerError::field("temperature", "temperature must be between 0 and 2, got 5");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["error"]["param"], "temperature");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(
            v["error"]["message"],
            "temperature must be between 0 and 2, got 5"
        );
        assert!(v["error"]["code"].is_null());
    }
}
