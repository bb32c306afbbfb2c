//! `tuili route`: one OpenAI-compatible endpoint in front of device, edge and cloud
//! upstreams, sending each request where its policy says it is served best.
//!
//! The path of a request:
//! - [`plan`]: the model (a model, an alias or a route of models), the privacy class
//!   (header or detectors, [`detect`]), the upstreams allowed and available (probe,
//!   [`breaker`]), ordered by the policy ([`policy`], [`predict`], [`affinity`]);
//! - [`proxy`]: attempts in that order within the retry budget, a hedge when one is slow,
//!   escalation to a larger model when an answer's mean logprob is low; one answer, or one
//!   clear error; one decision log line;
//! - [`state`]: the config and upstream handles, swapped whole on reload while requests in
//!   flight keep theirs.
//!
//! Upstreams are reached over HTTP/1.1 ([`upstream`]) or, for `url = "local"`, in-process
//! through the axum app of `tuili serve`, which the CLI builds and hands over.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod affinity;
pub mod breaker;
pub mod config;
pub mod detect;
mod error;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod predict;
pub mod probe;
pub mod proxy;
pub mod sse;
pub mod state;
pub mod upstream;

use std::future::Future;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use error::{ApiError, RouterError};
pub use state::RouterState;

use crate::plan::Api;

/// Largest request body the router reads.
const MAX_BODY: usize = 16 << 20;

/// The router's HTTP API over `state`.
pub fn app(state: RouterState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/responses", post(responses))
        .route("/v1/messages", post(messages))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/admin/reload", post(reload))
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                kind: "invalid_request_error",
                code: "not_found",
                message: "no such route".into(),
            }
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn chat(State(st): State<RouterState>, headers: HeaderMap, body: Bytes) -> Response {
    proxy::handle(st, headers, body, Api::Chat).await
}

async fn completions(State(st): State<RouterState>, headers: HeaderMap, body: Bytes) -> Response {
    proxy::handle(st, headers, body, Api::Completions).await
}

async fn embeddings(State(st): State<RouterState>, headers: HeaderMap, body: Bytes) -> Response {
    proxy::handle(st, headers, body, Api::Embeddings).await
}

async fn responses(State(st): State<RouterState>, headers: HeaderMap, body: Bytes) -> Response {
    proxy::handle(st, headers, body, Api::Responses).await
}

async fn messages(State(st): State<RouterState>, headers: HeaderMap, body: Bytes) -> Response {
    proxy::handle(st, headers, body, Api::Messages).await
}

/// The union of the upstreams' models, the aliases and the routes.
async fn models(State(st): State<RouterState>, headers: HeaderMap) -> Response {
    let table = st.table();
    if !proxy::authorized(&table, &headers) {
        return ApiError::unauthorized().into_response();
    }
    let data: Vec<_> = table
        .config
        .model_names()
        .into_iter()
        .map(|(id, target)| {
            let upstreams: Vec<&str> = table
                .slots
                .iter()
                .filter(|s| match table.config.route(&id) {
                    Some(r) => r.models.iter().any(|m| s.cfg.models.contains(m)),
                    None => s.cfg.models.iter().any(|m| m == table.config.resolve(&id)),
                })
                .map(|s| s.cfg.name.as_str())
                .collect();
            json!({"id": id, "object": "model", "created": 0, "owned_by": "tuili-route", "root": target, "upstreams": upstreams})
        })
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// 200 while at least one upstream is up.
async fn health(State(st): State<RouterState>) -> Response {
    let table = st.table();
    let up: Vec<String> = table
        .slots
        .iter()
        .filter(|s| s.live().up)
        .map(|s| s.cfg.name.clone())
        .collect();
    let status = if up.is_empty() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(json!({"status": if up.is_empty() { "no upstream up" } else { "ok" }, "up": up})),
    )
        .into_response()
}

async fn metrics(State(st): State<RouterState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.render_metrics(),
    )
        .into_response()
}

async fn reload(State(st): State<RouterState>, headers: HeaderMap) -> Response {
    if !proxy::authorized(&st.table(), &headers) {
        return ApiError::unauthorized().into_response();
    }
    match st.reload() {
        Ok(()) => Json(json!({"status": "reloaded"})).into_response(),
        Err(e) => {
            ApiError::invalid(format!("reload refused, the old config stays: {e}")).into_response()
        }
    }
}

/// Serves on `listener` until `shutdown` completes: probes upstreams, reloads on SIGHUP.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: RouterState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RouterError> {
    probe::probe_all(&state).await;
    let probes = tokio::spawn(probe::probe_loop(state.clone()));
    #[cfg(unix)]
    let hup = {
        let st = state.clone();
        tokio::spawn(async move {
            let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while s.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the config");
                let _ = st.reload();
            }
        })
    };
    use axum::serve::ListenerExt;
    // Small SSE writes must not wait for the client's delayed ACK (Nagle).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let r = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await;
    probes.abort();
    #[cfg(unix)]
    hup.abort();
    r.map_err(|source| RouterError::Io {
        context: "serving HTTP".into(),
        source,
    })
}
