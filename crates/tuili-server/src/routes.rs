//! The router, its middleware (auth, response counting) and the small routes.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::api::{DetokenizeRequest, ModelCard, TokenizeRequest};
use crate::generate::{chat_completions, completions};
use crate::render::{chat_render, completion_render};
use crate::validate::{token_ids, typed};
use crate::{metrics, AppState, ServerError};

/// The whole HTTP API over `state`.
pub fn app(state: AppState) -> Router {
    let limit = state.config().max_body_bytes;
    let protected = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions/render", post(chat_render))
        .route("/v1/completions/render", post(completion_render))
        .route("/v1/messages", post(crate::anthropic::messages))
        .route("/v1/responses", post(crate::responses::responses))
        .route("/v1/embeddings", post(crate::embeddings::embeddings))
        .route("/api/chat", post(crate::ollama::chat))
        .route("/api/generate", post(crate::ollama::generate))
        .route("/api/tags", get(crate::ollama::tags))
        .route("/api/show", post(crate::ollama::show))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/api/version", get(crate::ollama::version))
        .merge(crate::chatpage::routes())
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// A request body, or the OpenAI-shaped error for one that could not be read (413 when over
/// the limit).
pub fn body(b: Result<Bytes, BytesRejection>, state: &AppState) -> Result<Bytes, ServerError> {
    b.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ServerError::BodyTooLarge {
                limit: state.config().max_body_bytes,
            }
        } else {
            ServerError::InvalidJson(format!("cannot read the body: {}", r.body_text()))
        }
    })
}

/// Counts responses by status for `/metrics` and writes one access-log line each.
async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let t0 = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    state.count_response(status);
    // Streams are timed to their first byte; their end is the client's business.
    tracing::info!(
        "{method} {path} {status} {:.1}ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    resp
}

/// API-key check on the API routes, in constant time: `Authorization: Bearer KEY`, or
/// Anthropic's `x-api-key: KEY`.
async fn require_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    if let Some(key) = &state.config().api_key {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let given = header(header::AUTHORIZATION)
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| header(HeaderName::from_static("x-api-key")))
            .map(str::trim)
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), key.as_bytes()) {
            let path = req.uri().path();
            if path.starts_with("/v1/messages") {
                return crate::anthropic::AnthropicError(ServerError::Unauthorized).into_response();
            }
            if path.starts_with("/api/") {
                return crate::ollama::OllamaError(ServerError::Unauthorized).into_response();
            }
            return ServerError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

/// Equality whose time depends only on the lengths, never on where the bytes differ.
pub fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, &e) in expected.iter().enumerate() {
        // Compare against the expected key's length whatever was given.
        let g = given.get(i).copied().unwrap_or(!e);
        diff |= g ^ e;
    }
    std::hint::black_box(diff) == 0
}

async fn health(State(state): State<AppState>) -> Response {
    match state.ready() {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let engine = state.engine().map(|e| e.metrics());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(
            &state.responses(),
            engine.as_ref(),
            &state.config().model_name,
        ),
    )
        .into_response()
}

fn card(state: &AppState) -> ModelCard {
    ModelCard {
        id: state.config().model_name.clone(),
        object: "model",
        created: state.started(),
        owned_by: "tuili",
    }
}

async fn models(State(state): State<AppState>) -> Response {
    Json(json!({"object": "list", "data": [card(&state)]})).into_response()
}

async fn model(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.check_model(Some(&id)) {
        Ok(()) => Json(card(&state)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn tokenize(
    State(state): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ServerError> {
    let b = body(b, &state)?;
    let value: Value =
        serde_json::from_slice(&b).map_err(|e| ServerError::InvalidJson(e.to_string()))?;
    let req: TokenizeRequest = typed(&value)?;
    state.check_model(req.model.as_deref())?;
    let text = match (req.content, req.prompt) {
        (Some(t), None) | (None, Some(t)) => t,
        (Some(_), Some(_)) => {
            return Err(ServerError::field(
                "content",
                "give either content or prompt, not both",
            ))
        }
        (None, None) => return Err(ServerError::field("content", "'content' is required")),
    };
    let ready = state.ready()?;
    let tok = ready.engine.tokenizer().clone();
    let add_special = req.add_special.unwrap_or(false);
    // llama.cpp's /tokenize parses special tokens in the text.
    let ids = tok.encode(&text, add_special, true);
    let tokens: Vec<Value> = if req.with_pieces.unwrap_or(false) {
        ids.iter()
            .map(|&id| {
                let bytes = tok.token_bytes(id);
                match std::str::from_utf8(bytes) {
                    Ok(s) => json!({"id": id, "piece": s}),
                    Err(_) => json!({"id": id, "piece": bytes}),
                }
            })
            .collect()
    } else {
        ids.iter().map(|&id| json!(id)).collect()
    };
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

async fn detokenize(
    State(state): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ServerError> {
    let b = body(b, &state)?;
    let value: Value =
        serde_json::from_slice(&b).map_err(|e| ServerError::InvalidJson(e.to_string()))?;
    let req: DetokenizeRequest = typed(&value)?;
    state.check_model(req.model.as_deref())?;
    let ready = state.ready()?;
    let tok = ready.engine.tokenizer();
    let raw: Vec<Value> = req.tokens.iter().map(|&t| json!(t)).collect();
    let ids = token_ids("tokens", &raw, tok.vocab_size())?;
    Ok(Json(json!({ "content": tok.decode(&ids, false) })).into_response())
}

async fn not_found(method: Method, uri: Uri) -> ServerError {
    ServerError::NotFound {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ServerError {
    ServerError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn key_comparison() {
        assert!(constant_time_eq(b"sk-abc", b"sk-abc"));
        assert!(!constant_time_eq(b"sk-abd", b"sk-abc"));
        assert!(!constant_time_eq(b"sk-ab", b"sk-abc"));
        assert!(!constant_time_eq(b"sk-abcd", b"sk-abc"));
        assert!(!constant_time_eq(b"", b"sk-abc"));
    }
}
