//! An https upstream: the router speaks TLS to it, trusting its self-signed certificate
//! through `ca_file`, and without that file refuses the certificate (checked, not skipped)
//! before any request reaches the upstream.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tower::ServiceExt;
use tuili_router::{app, config, RouterState};

/// A TLS server on 127.0.0.1 with a self-signed certificate for `localhost`, answering
/// every POST with a chat completion and every GET with "ok". Returns its port, the
/// certificate as PEM, and its count of POSTs.
async fn tls_upstream() -> (u16, String, Arc<AtomicUsize>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let posts = Arc::new(AtomicUsize::new(0));
    let counted = posts.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, posts) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to serve.
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let posts = posts.clone();
                    async move {
                        let body = if req.method() == "POST" {
                            posts.fetch_add(1, Ordering::SeqCst);
                            json!({
                                "id": "x", "object": "chat.completion", "model": "m",
                                "choices": [{"index": 0, "message": {"role": "assistant", "content": "over tls"}, "finish_reason": "stop"}],
                                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
                            })
                            .to_string()
                        } else {
                            "ok".to_string()
                        };
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, pem, posts)
}

/// The router over one https upstream, with or without its certificate as `ca_file`.
fn router(port: u16, ca_file: Option<&std::path::Path>) -> axum::Router {
    let mut text = format!(
        "[[upstream]]\nname = \"cloud\"\ntier = \"cloud\"\nurl = \"https://localhost:{port}/v1\"\nmodels = [\"m\"]\nmetrics = false\n"
    );
    if let Some(p) = ca_file {
        text += &format!("ca_file = \"{}\"\n", p.display());
    }
    let cfg = config::parse(&text, &|_| None).unwrap();
    app(RouterState::new(cfg, Default::default(), None).unwrap())
}

async fn chat(app: &axum::Router) -> (StatusCode, String) {
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn an_https_upstream_is_reached_with_its_ca_file_and_refused_without() {
    let (port, pem, posts) = tls_upstream().await;
    let dir = std::env::temp_dir().join(format!("tuili-router-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pem).unwrap();

    let (status, body) = chat(&router(port, Some(&ca))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "over tls");
    assert_eq!(posts.load(Ordering::SeqCst), 1);

    // Only the public roots: the self-signed certificate is refused, and the request
    // never reaches the upstream.
    let (status, body) = chat(&router(port, None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.to_lowercase().contains("certificate"), "{body}");
    assert_eq!(posts.load(Ordering::SeqCst), 1);

    // A ca_file is checked at load, by key.
    std::fs::write(&ca, "not a certificate").unwrap();
    let text = format!(
        "[[upstream]]\nname = \"cloud\"\ntier = \"cloud\"\nurl = \"https://localhost:{port}/v1\"\nmodels = [\"m\"]\nca_file = \"{}\"\n",
        ca.display()
    );
    let err = config::parse(&text, &|_| None).unwrap_err().to_string();
    assert!(
        err.contains("upstream[0].ca_file") && err.contains("no PEM certificate"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
