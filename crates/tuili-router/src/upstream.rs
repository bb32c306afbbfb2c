//! Talking to one upstream: over HTTP/1.1 (plain or TLS) with a pooled keep-alive client,
//! or in-process to a `tuili serve` app (`url = "local"`) through its axum router, with no
//! socket at all.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, Response};
use bytes::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tower::ServiceExt;

use crate::config::{Endpoint, Upstream};

/// An HTTP client for http:// and https:// upstreams (one connection pool per client).
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// A new pooled client; Nagle is off so that small SSE chunks are not held back. TLS
/// (rustls, TLS 1.2 and 1.3) trusts the public roots of `webpki-roots` and `extra_roots`
/// (an upstream's `ca_file`).
pub fn http_client(extra_roots: &[CertificateDer<'static>]) -> Result<HttpClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra_roots {
        roots
            .add(cert.clone())
            .map_err(|e| format!("a certificate cannot be a trust root: {e}"))?;
    }
    // ring, which the workspace already builds (for `tuili pull`), rather than aws-lc-rs
    // and its CMake build; rustls deprecates the ring provider only for lacking
    // post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(Duration::from_secs(5)));
    c.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(c);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}

/// The certificates of a PEM file (at least one).
pub fn read_pem_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("'{path}': {e}"))?;
    if certs.is_empty() {
        return Err(format!("'{path}' holds no PEM certificate"));
    }
    Ok(certs)
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
        Endpoint::Http {
            authority,
            prefix,
            tls,
        } => {
            format!(
                "{}://{authority}{}{path}",
                if *tls { "https" } else { "http" },
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
