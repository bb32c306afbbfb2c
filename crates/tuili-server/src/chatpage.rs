//! The chat page at `/`: one HTML, one script and one stylesheet, compiled into the binary
//! so that the page works offline and always matches the server that serves it. The page
//! itself talks to `/v1/models` and `/v1/chat/completions` like any other client.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;

const HTML: &str = include_str!("../assets/chat.html");
const SCRIPT: &str = include_str!("../assets/chat.js");
const STYLE: &str = include_str!("../assets/chat.css");

/// Everything the page loads comes from this server, and nothing inline runs: a reply
/// that smuggled markup into the rendered answer can neither run script nor send data out.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The page's routes; public, as the page asks for the API key itself when one is needed.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/assets/chat.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/assets/chat.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // A new binary may bring a new page: revalidate rather than keep a stale one.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page refers to its assets by the paths served, and to nothing off this server.
    #[test]
    fn page_links_only_its_own_assets() {
        assert!(HTML.contains("src=\"/assets/chat.js\""));
        assert!(HTML.contains("href=\"/assets/chat.css\""));
        for text in [HTML, SCRIPT, STYLE] {
            assert!(!text.contains("http://") && !text.contains("https://"));
            // Inline handlers and styles would be refused by the CSP.
            assert!(!text.contains(" onclick=") && !text.contains(" style=\""));
        }
        assert!(
            !HTML.contains("<script>"),
            "inline script is refused by the CSP"
        );
    }
}
