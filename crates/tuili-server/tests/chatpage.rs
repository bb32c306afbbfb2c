//! The chat page at `/`: served with its content types and a strict CSP, public while the
//! API behind it keeps its key, and without changing the answers of the other routes.

mod common;

use axum::http::StatusCode;
use common::*;
use tuili_server::AppState;

fn keyed() -> AppState {
    let mut c = server_config();
    c.api_key = Some("sk-page".to_string());
    AppState::new(c)
}

#[tokio::test]
async fn page_and_assets_have_their_types_and_a_strict_csp() {
    let s = keyed();
    for (path, kind, needle) in [
        ("/", "text/html; charset=utf-8", "<title>tuili chat</title>"),
        (
            "/assets/chat.js",
            "text/javascript; charset=utf-8",
            "function renderMarkdown",
        ),
        ("/assets/chat.css", "text/css; charset=utf-8", ".msg"),
    ] {
        let r = call(&s, "GET", path, None, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.header("content-type"), Some(kind), "{path}");
        let csp = r.header("content-security-policy").unwrap_or("");
        assert!(csp.starts_with("default-src 'self';"), "{path}: {csp}");
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert!(r.body.contains(needle), "{path}");
    }
}

#[tokio::test]
async fn other_routes_answer_as_before() {
    let s = keyed();
    // The API still wants its key; the page does not.
    let r = call(&s, "GET", "/v1/models", None, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = call(
        &s,
        "GET",
        "/v1/models",
        None,
        &[("authorization", "Bearer sk-page")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-security-policy").is_none());
    // Still loading: /health says so.
    let r = call(&s, "GET", "/health", None, &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    // Unknown paths, near the page's too, keep the JSON 404; a POST to / is a 405.
    for path in ["/nothing", "/assets/other.js", "/index.html"] {
        let r = call(&s, "GET", path, None, &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.error()["code"], "not_found");
        assert_eq!(
            r.error()["message"],
            format!("no route for GET {path}").as_str()
        );
    }
    let r = call(&s, "POST", "/", Some("{}"), &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.error()["code"], "method_not_allowed");
}
