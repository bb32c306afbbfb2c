//! Talking to one upstream: over HTTP/1.1 with a pooled keep-alive client, or in-process to
//! a `tuili serve` app (`url = "local"`) through its axum router, with no socket at all.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, Response};
use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;

use crate::config::{Endpoint, Upstream};

/// The shared HTTP client (one connection pool for every upstream).
pub type HttpClient = Client<HttpConnector, Body>;

/// A new pooled client; Nagle is off so that small SSE chunks are not held back.
pub fn http_client() -> HttpClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(c)
}

/// How an upstream is reached.
#[derive(Clone)]
pub enum Transport {
    /// Over the network.
    Http(HttpClient),
    /// In this process.
    Local(axum::Router),
}

/// Why a call did not produce a response head.
#[derive(Debug, Clone)]
pub enum CallError {
    /// Connect refused, reset, or a broken response head.
    Transport(String),
    /// No head within the upstream's `timeout_ms`.
    Timeout(u64),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Transport(e) => write!(f, "{e}"),
            CallError::Timeout(ms) => write!(f, "no response within {ms} ms"),
        }
    }
}

/// Sends `method path` (path after the API prefix for `api`, from the root otherwise) with
/// `body`; waits for the response head at most the upstream's timeout.
pub async fn call(
    up: &Upstream,
    transport: &Transport,
    method: Method,
    path: &str,
    api: bool,
    body: Bytes,
) -> Result<Response<Body>, CallError> {
    let uri = match &up.endpoint {
        Endpoint::Http { authority, prefix } => {
            format!(
                "http://{authority}{}{path}",
                if api { prefix.as_str() } else { "" }
            )
        }
        Endpoint::Local => format!("{}{path}", if api { "/v1" } else { "" }),
    };
    let mut req = Request::builder().method(method).uri(&uri);
    if !body.is_empty() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    if let Some(key) = &up.api_key {
        let v = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| CallError::Transport("the API key is not a valid header value".into()))?;
        req = req.header(header::AUTHORIZATION, v);
    }
    let req = req
        .body(Body::from(body))
        .map_err(|e| CallError::Transport(format!("building the request to {uri}: {e}")))?;
    let limit = Duration::from_millis(up.timeout_ms);
    let fut = async {
        match transport {
            Transport::Http(c) => c
                .request(req)
                .await
                .map(|r| r.map(Body::new))
                .map_err(|e| CallError::Transport(error_chain(&e))),
            Transport::Local(app) => app
                .clone()
                .oneshot(req)
                .await
                .map_err(|e| CallError::Transport(e.to_string())),
        }
    };
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(CallError::Timeout(up.timeout_ms)),
    }
}

/// An error with its causes ("client error (Connect): tcp connect error: Connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s += &format!(": {c}");
        cur = c.source();
    }
    s
}
