//! `/v1/completions/render` and `/v1/chat/completions/render`, as vLLM has them: the token
//! ids a request would run on, without running it. Routers that score replicas by prefix
//! (llm-d's token producer, KV-aware routers) tokenize through these, so their block
//! hashes are computed over exactly the engine's tokens. The request is checked as the
//! generating endpoint checks it, so a request that render accepts is one that would run.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::generate::{chat_prompt, completion_prompts};
use crate::{AppState, ServerError};

/// `POST /v1/chat/completions/render`: one object, vLLM's generate-request shape.
pub async fn chat_render(
    State(state): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ServerError> {
    let (_, prompt, _) = chat_prompt(&state, b).await?;
    check_len(&state, &prompt)?;
    Ok(Json(rendered(&state, prompt, 0)).into_response())
}

/// `POST /v1/completions/render`: a list, one object per prompt.
pub async fn completion_render(
    State(state): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ServerError> {
    let (_, prompts) = completion_prompts(&state, b).await?;
    let mut out = Vec::with_capacity(prompts.len());
    for (i, p) in prompts.into_iter().enumerate() {
        check_len(&state, &p)?;
        out.push(rendered(&state, p, i));
    }
    Ok(Json(Value::Array(out)).into_response())
}

/// A prompt must leave room for one generated token, as in the generating endpoints.
fn check_len(state: &AppState, prompt: &[u32]) -> Result<(), ServerError> {
    let ctx = state.ready()?.engine.n_ctx();
    if prompt.len() >= ctx {
        return Err(ServerError::PromptTooLong {
            prompt: prompt.len(),
            ctx,
        });
    }
    Ok(())
}

fn rendered(state: &AppState, token_ids: Vec<u32>, index: usize) -> Value {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    json!({
        "request_id": format!("render-{n}-{index}"),
        "model": state.config().model_name,
        "token_ids": token_ids,
        "features": null,
    })
}
