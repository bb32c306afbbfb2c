//! The proxy end to end over fake upstreams served in-process (`url = "local"` with a test
//! axum app): failover, hedging, escalation, stream breaks, privacy refusals. Each fake
//! counts the requests it received, so "sent nothing" and "answered once" are checked at
//! the upstream, not from the router's word.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use tuili_router::{app, config, RouterState};

#[derive(Clone, Copy)]
enum Fake {
    Fails,
    Answers {
        mean_logprob: f64,
    },
    Slow(u64),
    BreaksStream,
    /// Answers only with `Authorization: Bearer sk-test`.
    NeedsKey,
    /// A verifier: its first token is "Yes" with probability `yes`, " no" otherwise.
    Judge {
        yes: f64,
    },
}

fn fake(kind: Fake, hits: Arc<AtomicUsize>) -> Router {
    let handler = move |headers: axum::http::HeaderMap, body: Bytes| {
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let key = headers.get("authorization").and_then(|v| v.to_str().ok());
            let req: Value = serde_json::from_slice(&body).unwrap();
            let stream = req["stream"].as_bool().unwrap_or(false);
            let lp = |m: f64| json!({"content": [{"token": "a", "logprob": m}, {"token": "b", "logprob": m}]});
            match kind {
                Fake::Fails => (StatusCode::SERVICE_UNAVAILABLE, "overloaded").into_response(),
                Fake::Slow(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    answer(&req, lp(-0.1))
                }
                Fake::Answers { mean_logprob } if !stream => answer(&req, lp(mean_logprob)),
                Fake::Answers { mean_logprob } => {
                    let ev = |c: &str| {
                        format!(
                            "data: {}\n\n",
                            json!({"choices": [{"index": 0, "delta": {"content": c}, "logprobs": lp(mean_logprob)}]})
                        )
                    };
                    sse(format!("{}{}data: [DONE]\n\n", ev("Hel"), ev("lo")))
                }
                Fake::NeedsKey if key == Some("Bearer sk-test") => answer(&req, lp(-0.1)),
                Fake::NeedsKey => (StatusCode::UNAUTHORIZED, "no key").into_response(),
                Fake::Judge { yes } => {
                    let top = json!([
                        {"token": "Yes", "logprob": yes.ln()},
                        {"token": " no", "logprob": (1.0 - yes).ln()},
                    ]);
                    let lp = json!({"content": [{"token": "Yes", "logprob": yes.ln(), "top_logprobs": top}]});
                    answer(&req, lp)
                }
                Fake::BreaksStream => sse(format!(
                    "data: {}\n\n",
                    json!({"choices": [{"index": 0, "delta": {"content": "Hi"}}]})
                )),
            }
        }
    };
    Router::new()
        .route("/v1/chat/completions", post(handler))
        .route("/health", get(|| async { "ok" }))
}

fn answer(req: &Value, logprobs: Value) -> Response {
    axum::Json(json!({
        "id": "x", "object": "chat.completion", "model": req["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("from {}", req["model"])}, "logprobs": logprobs, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    }))
    .into_response()
}

fn sse(text: String) -> Response {
    ([("content-type", "text/event-stream")], text).into_response()
}

struct Setup {
    app: Router,
    hits: HashMap<&'static str, Arc<AtomicUsize>>,
    state: RouterState,
}

/// Upstreams `(name, tier, model, privacy, fake)`, all local, and extra config lines.
fn setup(ups: &[(&'static str, &str, &str, &str, Fake)], extra: &str) -> Setup {
    let mut text = String::from(extra);
    let mut locals = HashMap::new();
    let mut hits = HashMap::new();
    for (name, tier, model, privacy, kind) in ups {
        text += &format!(
            "\n[[upstream]]\nname = \"{name}\"\ntier = \"{tier}\"\nurl = \"local\"\nlocal_args = [\"-m\", \"x\"]\nmodels = [\"{model}\"]\nprivacy = {privacy}\nprice_in = 1.0\nprice_out = 2.0\n"
        );
        if matches!(kind, Fake::NeedsKey) {
            text += "api_key_env = \"UPSTREAM_KEY\"\n";
        }
        let h = Arc::new(AtomicUsize::new(0));
        locals.insert(name.to_string(), fake(*kind, h.clone()));
        hits.insert(*name, h);
    }
    let cfg = config::parse(&text, &|v| {
        (v == "UPSTREAM_KEY").then(|| "sk-test".to_string())
    })
    .unwrap();
    let state = RouterState::new(cfg, locals, None).unwrap();
    Setup {
        app: app(state.clone()),
        hits,
        state,
    }
}

async fn send(
    app: &Router,
    body: Value,
    headers: &[(&str, &str)],
) -> (StatusCode, HashMap<String, String>, String) {
    let mut req = Request::post("/v1/chat/completions").header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let h = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    (status, h, text)
}

fn chat(model: &str, text: &str, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}], "stream": stream})
}

fn n(s: &Setup, name: &str) -> usize {
    s.hits[name].load(Ordering::SeqCst)
}

const PUB: &str = "[\"public\"]";
const ALL: &str = "[\"private\", \"public\"]";

#[tokio::test]
async fn a_failing_upstream_moves_the_request_once() {
    let s = setup(
        &[
            ("dev", "device", "m", PUB, Fake::Fails),
            (
                "edge",
                "edge",
                "m",
                PUB,
                Fake::Answers { mean_logprob: -0.1 },
            ),
        ],
        "[policy]\ndefault = \"local-first\"",
    );
    let (st, h, body) = send(&s.app, chat("m", "hi", false), &[]).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(h["x-tuili-upstream"], "edge");
    assert_eq!((n(&s, "dev"), n(&s, "edge")), (1, 1));
    let m = s.state.render_metrics();
    assert!(m.contains("tuili_router_failovers_total 1"), "{m}");
    assert!(
        m.contains(
            "tuili_router_errors_total{upstream=\"dev\",tier=\"device\",kind=\"status_5xx\"} 1"
        ),
        "{m}"
    );
    // Three failures open the device's breaker: it is then skipped without a call.
    for _ in 0..3 {
        send(&s.app, chat("m", "hi", false), &[]).await;
    }
    let before = n(&s, "dev");
    send(&s.app, chat("m", "hi", false), &[]).await;
    assert_eq!(n(&s, "dev"), before, "an open breaker sends nothing");
}

#[tokio::test]
async fn everything_failing_is_one_clear_error() {
    let s = setup(
        &[
            ("a", "edge", "m", PUB, Fake::Fails),
            ("b", "edge", "m", PUB, Fake::Fails),
        ],
        "",
    );
    let (st, _, body) = send(&s.app, chat("m", "hi", false), &[]).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "no_upstream_available");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("a failed (status_5xx"),
        "{body}"
    );
}

#[tokio::test]
async fn a_slow_upstream_is_hedged_and_only_one_answer_returns() {
    let s = setup(
        &[
            ("slow", "device", "m", PUB, Fake::Slow(2_000)),
            (
                "fast",
                "edge",
                "m",
                PUB,
                Fake::Answers { mean_logprob: -0.1 },
            ),
        ],
        "[policy]\ndefault = \"local-first\"\n[hedge]\nafter_ms = 50",
    );
    // A whole request, then a stream (hedged while no first byte has come).
    for (i, stream) in [false, true].into_iter().enumerate() {
        let t0 = Instant::now();
        let (st, h, body) = send(&s.app, chat("m", "hi", stream), &[]).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(h["x-tuili-upstream"], "fast");
        assert!(
            t0.elapsed() < Duration::from_millis(1_000),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!((n(&s, "slow"), n(&s, "fast")), (i + 1, i + 1));
        assert_eq!(body.contains("data: [DONE]"), stream, "{body}");
        assert!(s
            .state
            .render_metrics()
            .contains(&format!("tuili_router_hedges_total {}", i + 1)));
    }
}

#[tokio::test]
async fn unsure_answers_escalate_and_sure_ones_do_not() {
    let route = "[escalation]\nmin_mean_logprob = -1.0\n[[route]]\nname = \"auto\"\nmodels = [\"small\", \"large\"]\nescalation = true\npolicy = \"cost\"";
    let unsure = setup(
        &[
            (
                "dev",
                "device",
                "small",
                PUB,
                Fake::Answers { mean_logprob: -2.0 },
            ),
            (
                "cloud",
                "cloud",
                "large",
                PUB,
                Fake::Answers { mean_logprob: -0.1 },
            ),
        ],
        route,
    );
    let (st, h, body) = send(&unsure.app, chat("auto", "hi", false), &[]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (
            h["x-tuili-upstream"].as_str(),
            h["x-tuili-escalated"].as_str()
        ),
        ("cloud", "1")
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["choices"][0]["logprobs"],
        Value::Null,
        "logprobs the client did not ask for are removed"
    );
    assert_eq!(v["choices"][0]["message"]["content"], "from \"large\"");
    // Streaming: the window is judged before the first byte leaves.
    let (st, h, body) = send(&unsure.app, chat("auto", "hi", true), &[]).await;
    assert_eq!(
        (st, h["x-tuili-upstream"].as_str()),
        (StatusCode::OK, "cloud")
    );
    assert!(
        body.ends_with("data: [DONE]\n\n") && body.contains("\"logprobs\""),
        "{body}"
    );
    assert!(unsure
        .state
        .render_metrics()
        .contains("tuili_router_escalations_total 2"));
    let sure = setup(
        &[
            (
                "dev",
                "device",
                "small",
                PUB,
                Fake::Answers { mean_logprob: -0.2 },
            ),
            (
                "cloud",
                "cloud",
                "large",
                PUB,
                Fake::Answers { mean_logprob: -0.1 },
            ),
        ],
        route,
    );
    let (_, h, body) = send(&sure.app, chat("auto", "hi", true), &[]).await;
    assert_eq!(
        (
            h["x-tuili-upstream"].as_str(),
            h["x-tuili-escalated"].as_str()
        ),
        ("dev", "0")
    );
    assert!(
        body.contains("\"logprobs\":null") && body.ends_with("data: [DONE]\n\n"),
        "{body}"
    );
    assert_eq!(n(&sure, "cloud"), 0);
    // A larger model that fails leaves the unsure answer standing, answered once.
    let down = setup(
        &[
            (
                "dev",
                "device",
                "small",
                PUB,
                Fake::Answers { mean_logprob: -2.0 },
            ),
            ("cloud", "cloud", "large", PUB, Fake::Fails),
        ],
        route,
    );
    let (st, h, body) = send(&down.app, chat("auto", "hi", false), &[]).await;
    assert_eq!(
        (st, h["x-tuili-upstream"].as_str()),
        (StatusCode::OK, "dev"),
        "{body}"
    );
    assert_eq!((n(&down, "dev"), n(&down, "cloud")), (1, 1));
}

#[tokio::test]
async fn a_doubting_verifier_escalates_a_confident_answer() {
    let cfg = "[escalation]\nmin_mean_logprob = -1.0\nverifier = \"judge\"\nverifier_min = 0.5\n[[route]]\nname = \"auto\"\nmodels = [\"small\", \"large\"]\nescalation = true\npolicy = \"cost\"";
    let with = |yes: f64| {
        setup(
            &[
                (
                    "dev",
                    "device",
                    "small",
                    ALL,
                    Fake::Answers { mean_logprob: -0.1 },
                ),
                (
                    "cloud",
                    "cloud",
                    "large",
                    ALL,
                    Fake::Answers { mean_logprob: -0.1 },
                ),
                ("judge", "edge", "judge", PUB, Fake::Judge { yes }),
            ],
            cfg,
        )
    };
    let doubts = with(0.2);
    let (st, h, _) = send(&doubts.app, chat("auto", "hi", false), &[]).await;
    assert_eq!(
        (
            st,
            h["x-tuili-upstream"].as_str(),
            h["x-tuili-escalated"].as_str()
        ),
        (StatusCode::OK, "cloud", "1")
    );
    assert_eq!(n(&doubts, "judge"), 1);
    let m = doubts.state.render_metrics();
    assert!(
        m.contains("tuili_router_verifications_total 1")
            && m.contains("tuili_router_escalations_total 1"),
        "{m}"
    );
    let trusts = with(0.9);
    let (_, h, _) = send(&trusts.app, chat("auto", "hi", false), &[]).await;
    assert_eq!(
        (
            h["x-tuili-upstream"].as_str(),
            h["x-tuili-escalated"].as_str()
        ),
        ("dev", "0")
    );
    assert_eq!((n(&trusts, "judge"), n(&trusts, "cloud")), (1, 0));
    // A private prompt is never shown to a verifier its class may not reach.
    let (st, h, _) = send(
        &trusts.app,
        chat("auto", "hi", false),
        &[("x-tuili-privacy", "private")],
    )
    .await;
    assert_eq!(
        (st, h["x-tuili-upstream"].as_str()),
        (StatusCode::OK, "dev")
    );
    assert_eq!(
        (n(&trusts, "judge"), n(&trusts, "cloud")),
        (1, 0),
        "the verifier got nothing more, and the answer stands"
    );
}

#[tokio::test]
async fn a_stream_broken_after_its_first_byte_ends_with_an_error_event() {
    let s = setup(&[("dev", "device", "m", PUB, Fake::BreaksStream)], "");
    let (st, _, body) = send(&s.app, chat("m", "hi", true), &[]).await;
    assert_eq!(st, StatusCode::OK);
    let last = body.trim_end().rsplit("\n\n").next().unwrap();
    assert!(
        last.starts_with("data: {\"error\"") && last.contains("upstream_stream_broken"),
        "{body}"
    );
    assert!(!body.contains("[DONE]"));
    assert!(s
        .state
        .render_metrics()
        .contains("tuili_router_stream_breaks_total 1"));
}

#[tokio::test]
async fn a_private_request_with_its_tier_down_is_refused_and_nothing_is_sent() {
    let s = setup(
        &[
            (
                "dev",
                "device",
                "m",
                ALL,
                Fake::Answers { mean_logprob: -0.1 },
            ),
            (
                "cloud",
                "cloud",
                "m",
                PUB,
                Fake::Answers { mean_logprob: -0.1 },
            ),
        ],
        "",
    );
    let (_, h, _) = send(&s.app, chat("m", "my card 4111 1111 1111 1111", false), &[]).await;
    assert_eq!(h["x-tuili-upstream"], "dev");
    s.state.table().slots[0].live().up = false;
    let (st, _, body) = send(&s.app, chat("m", "my card 4111 1111 1111 1111", false), &[]).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("privacy_no_allowed_upstream") && body.contains("detected card"),
        "{body}"
    );
    let (st, _, _) = send(
        &s.app,
        chat("m", "hello", false),
        &[("x-tuili-privacy", "private")],
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(n(&s, "cloud"), 0, "the cloud never saw a private request");
    let (st, h, _) = send(&s.app, chat("m", "hello", false), &[]).await;
    assert_eq!(
        (st, h["x-tuili-upstream"].as_str()),
        (StatusCode::OK, "cloud")
    );
    assert!(s
        .state
        .render_metrics()
        .contains("tuili_router_privacy_refusals_total{class=\"private\"} 2"));
}

#[tokio::test]
async fn a_deadline_ends_a_slow_request_with_504() {
    let s = setup(&[("slow", "edge", "m", PUB, Fake::Slow(2_000))], "");
    let t0 = Instant::now();
    let (st, _, body) = send(
        &s.app,
        chat("m", "hi", false),
        &[("x-tuili-deadline-ms", "100")],
    )
    .await;
    assert_eq!(st, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(
        body.contains("deadline_exceeded") && body.contains("100 ms"),
        "{body}"
    );
    assert!(t0.elapsed() < Duration::from_millis(1_000));
    assert!(s
        .state
        .render_metrics()
        .contains("tuili_router_deadline_exceeded_total 1"));
    let (st, _, body) = send(
        &s.app,
        chat("m", "hi", false),
        &[("x-tuili-deadline-ms", "soon")],
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("x-tuili-deadline-ms must be a positive number of milliseconds, got 'soon'"),
        "{body}"
    );
}

#[tokio::test]
async fn the_upstream_key_comes_from_its_environment_variable() {
    let s = setup(&[("cloud", "cloud", "m", PUB, Fake::NeedsKey)], "");
    let (st, h, body) = send(&s.app, chat("m", "hi", false), &[]).await;
    assert_eq!(
        (st, h["x-tuili-upstream"].as_str()),
        (StatusCode::OK, "cloud"),
        "{body}"
    );
}
