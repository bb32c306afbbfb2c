//! A panic never hangs the server or leaves a client without an answer: a panic in a step
//! fails that request with a 500 (or an in-band error event when streaming) and the next
//! request is answered correctly; a dead engine turns `/health` to 503 with the reason and
//! ends streams in progress with an error event, never a bare `[DONE]`; a panicking model
//! loader is reported and the server exits with an error.
//!
//! Faults are armed through the backend's process-wide test hooks, so the tests take a
//! lock and run one at a time.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use tuili_backend::fault::{self, Site};
use tuili_server::{run_blocking, AppState, ServeOptions, ServerConfig, ServerError};

/// Fault hooks are process-wide: one test at a time arms them.
static FAULTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn completion(stream: bool) -> Value {
    json!({"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0, "stream": stream})
}

/// The concatenated `text` of a completion stream's chunks.
fn streamed_text(events: &[String]) -> String {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| v["choices"][0]["text"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_step_is_a_500_and_the_next_request_is_answered() {
    let _one = FAULTS.lock().await;
    // Two threads, so that regions have a worker to panic on.
    tuili_backend::pool::set_threads(2);
    let Some(smol) = smol("a_panic_in_a_step_is_a_500_and_the_next_request_is_answered") else {
        return;
    };
    let s = state(smol, engine_config(), server_config());
    let want = post(&s, "/v1/completions", &completion(false)).await.json()["choices"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(want.starts_with(", the city of Nova"), "{want}");
    for site in [Site::KernelRegion, Site::Worker, Site::EngineStep] {
        fault::arm(site, 1);
        let r = post(&s, "/v1/completions", &completion(false)).await;
        assert_eq!(
            r.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{site:?}: {}",
            r.body
        );
        assert_eq!(r.error()["type"], "server_error");
        // The next request is answered as before, streamed or not.
        let r = post(&s, "/v1/completions", &completion(false)).await;
        assert_eq!(r.status, StatusCode::OK, "{site:?}: {}", r.body);
        assert_eq!(r.json()["choices"][0]["text"], want.as_str());

        fault::arm(site, 1);
        let r = post(&s, "/v1/completions", &completion(true)).await;
        assert_eq!(r.status, StatusCode::OK);
        let events = r.events();
        let err: Value = serde_json::from_str(&events[events.len() - 2]).expect("error event");
        assert_eq!(err["error"]["type"], "server_error", "{site:?}: {events:?}");
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let r = post(&s, "/v1/completions", &completion(true)).await;
        assert_eq!(streamed_text(&r.events()), want, "{site:?}");
    }
    assert_eq!(
        call(&s, "GET", "/health", None, &[]).await.status,
        StatusCode::OK
    );
    let metrics = call(&s, "GET", "/metrics", None, &[]).await.body;
    assert!(
        metrics.contains("tuili_engine_step_panics_total 6"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_engine_ends_streams_with_an_error_and_health_says_why() {
    let _one = FAULTS.lock().await;
    let Some(smol) = smol("a_dead_engine_ends_streams_with_an_error_and_health_says_why") else {
        return;
    };
    let s = state(smol, engine_config(), server_config());
    // The engine thread dies while the request is in progress: its stream closes
    // without an end.
    fault::arm(Site::EngineLoop, 1);
    let r = post(&s, "/v1/completions", &completion(true)).await;
    let events = r.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let err: Value = serde_json::from_str(&events[events.len() - 2]).expect("error event");
    assert_eq!(err["error"]["type"], "server_error", "{events:?}");
    // Health turns 503 and names the cause; new requests get the same 503.
    let t0 = std::time::Instant::now();
    let r = loop {
        let r = call(&s, "GET", "/health", None, &[]).await;
        if r.status != StatusCode::OK || t0.elapsed() > Duration::from_secs(5) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let e = r.error();
    assert_eq!(e["code"], "engine_failed");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("injected fault at EngineLoop"),
        "{e}"
    );
    let r = post(&s, "/v1/completions", &completion(false)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.error()["code"], "engine_failed");
}

#[test]
fn a_panicking_loader_is_reported_and_the_server_exits_with_an_error() {
    let state = AppState::new(ServerConfig::new(MODEL));
    let opts = ServeOptions {
        port: 0,
        ..Default::default()
    };
    let st = state.clone();
    let t0 = std::time::Instant::now();
    let r = run_blocking(opts, state, || panic!("no such tensor"));
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t0.elapsed()
    );
    match r {
        Err(ServerError::Load(msg)) => {
            assert!(msg.contains("loader panicked: no such tensor"), "{msg}")
        }
        other => panic!("expected a load error, got {other:?}"),
    }
    // What `/health` answers from then on.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(call(&st, "GET", "/health", None, &[]));
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let msg = r.error()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("loader panicked: no such tensor"), "{msg}");
}
