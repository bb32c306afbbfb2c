//! Every bad request gets the right status and an OpenAI error body naming the field, the
//! limit and the value. Chat requests are checked before the engine is needed, so most of
//! these run on a server whose model is still loading.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use tuili_server::{AppState, ServerConfig};

fn loading() -> AppState {
    AppState::new(server_config())
}

fn chat(extra: Value) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        body[k] = v;
    }
    body
}

async fn bad(state: &AppState, body: &str, status: StatusCode) -> Value {
    let r = call(state, "POST", "/v1/chat/completions", Some(body), &[]).await;
    assert_eq!(r.status, status, "{body} -> {}", r.body);
    r.error()
}

#[tokio::test]
async fn malformed_json_is_400_with_position() {
    let e = bad(&loading(), "{\"messages\": [", StatusCode::BAD_REQUEST).await;
    assert_eq!(e["code"], "invalid_json");
    assert!(e["message"].as_str().unwrap().contains("line 1"), "{e}");
    let e = bad(&loading(), "[1, 2]", StatusCode::BAD_REQUEST).await;
    assert!(e["message"].as_str().unwrap().contains("got a list"), "{e}");
}

#[tokio::test]
async fn wrong_types_name_the_field() {
    let s = loading();
    let e = bad(
        &s,
        &chat(json!({"temperature": "hot"})).to_string(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(e["param"], "temperature");
    assert!(
        e["message"].as_str().unwrap().contains("string \"hot\""),
        "{e}"
    );
    let e = bad(
        &s,
        &chat(json!({"stream_options": {"include_usage": 3}, "stream": true})).to_string(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(e["param"], "stream_options.include_usage");
    let e = bad(&s, r#"{"model": "x"}"#, StatusCode::BAD_REQUEST).await;
    assert_eq!(e["param"], "messages");
    assert_eq!(e["message"], "'messages' is required");
    let e = bad(
        &s,
        &chat(json!({"stop": [1]})).to_string(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(e["param"], "stop[0]");
}

#[tokio::test]
async fn out_of_range_values_name_limit_and_value() {
    let s = loading();
    let cases = [
        (
            json!({"temperature": 5}),
            "temperature",
            "temperature must be between 0 and 2, got 5",
        ),
        (
            json!({"top_p": 1.5}),
            "top_p",
            "top_p must be between 0 and 1, got 1.5",
        ),
        (
            json!({"presence_penalty": -3}),
            "presence_penalty",
            "presence_penalty must be between -2 and 2, got -3",
        ),
        (
            json!({"frequency_penalty": 2.5}),
            "frequency_penalty",
            "frequency_penalty must be between -2 and 2, got 2.5",
        ),
        (
            json!({"max_tokens": 0}),
            "max_tokens",
            "max_tokens must be at least 1, got 0",
        ),
        (
            json!({"max_completion_tokens": -4}),
            "max_completion_tokens",
            "max_completion_tokens must be at least 1, got -4",
        ),
        (json!({"n": 0}), "n", "n must be between 1 and 16, got 0"),
        (json!({"n": 17}), "n", "n must be between 1 and 16, got 17"),
        (
            json!({"logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
            "top_logprobs must be between 0 and 20, got 21",
        ),
        (
            json!({"top_logprobs": 2}),
            "top_logprobs",
            "top_logprobs needs logprobs set to true",
        ),
        (
            json!({"top_k": -2}),
            "top_k",
            "top_k must be at least 0 (or -1 for off), got -2",
        ),
        (
            json!({"min_p": 2}),
            "min_p",
            "min_p must be between 0 and 1, got 2",
        ),
        (
            json!({"repetition_penalty": 0}),
            "repetition_penalty",
            "repetition_penalty must be greater than 0 and at most 10, got 0",
        ),
        (
            json!({"stop": ["a", "b", "c", "d", "e"]}),
            "stop",
            "stop may hold at most 4 strings, got 5",
        ),
        (
            json!({"stop": ""}),
            "stop[0]",
            "stop strings must not be empty",
        ),
        (
            json!({"stream_options": {"include_usage": true}}),
            "stream_options",
            "stream_options is only allowed when stream is true",
        ),
    ];
    for (extra, param, message) in cases {
        let e = bad(
            &s,
            &chat(extra.clone()).to_string(),
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(e["param"], param, "{extra}");
        assert_eq!(e["message"], message, "{extra}");
        assert_eq!(e["type"], "invalid_request_error");
    }
}

#[tokio::test]
async fn messages_are_checked_one_by_one() {
    let s = loading();
    let e = bad(&s, r#"{"messages": []}"#, StatusCode::BAD_REQUEST).await;
    assert_eq!(e["param"], "messages");
    assert_eq!(e["message"], "messages must hold at least 1 message, got 0");
    let body = json!({"messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}]}
    ]});
    let e = bad(&s, &body.to_string(), StatusCode::BAD_REQUEST).await;
    assert_eq!(e["param"], "messages[0].content[1].type");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("'image_url' is not supported"),
        "{e}"
    );
    let body =
        json!({"messages": [{"role": "user", "content": "a"}, {"role": "wizard", "content": "b"}]});
    let e = bad(&s, &body.to_string(), StatusCode::BAD_REQUEST).await;
    assert_eq!(e["param"], "messages[1].role");
    assert!(
        e["message"].as_str().unwrap().contains("got 'wizard'"),
        "{e}"
    );
    let body = json!({"messages": [{"role": "tool", "content": "42"}]});
    let e = bad(&s, &body.to_string(), StatusCode::BAD_REQUEST).await;
    assert_eq!(e["param"], "messages[0].tool_call_id");
    let body = json!({"messages": [{"role": "user"}]});
    let e = bad(&s, &body.to_string(), StatusCode::BAD_REQUEST).await;
    assert_eq!(e["param"], "messages[0].content");
}

#[tokio::test]
async fn unsupported_features_are_refused_by_name() {
    let s = loading();
    let cases = [
        json!({"functions": [{"name": "f"}]}),
        json!({"function_call": "auto"}),
        json!({"audio": {"voice": "alloy", "format": "wav"}}),
        json!({"modalities": ["text", "audio"]}),
        json!({"frobnicate": 1}),
    ];
    for extra in cases {
        let key = extra.as_object().unwrap().keys().next().unwrap().clone();
        let e = bad(
            &s,
            &chat(extra.clone()).to_string(),
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(e["param"], key.as_str(), "{extra}");
        assert_eq!(e["code"], "unsupported_parameter", "{extra}");
        assert!(e["message"].as_str().unwrap().starts_with(&key), "{e}");
    }
    // Their neutral values are accepted (the server then answers 503: still loading).
    for extra in [
        json!({"tools": [], "tool_choice": "none"}),
        json!({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"}),
        json!({"response_format": {"type": "text"}, "logit_bias": {}, "user": "u1"}),
        json!({"response_format": {"type": "json_object"}, "logit_bias": {"5": -100}}),
    ] {
        let r = call(
            &s,
            "POST",
            "/v1/chat/completions",
            Some(&chat(extra).to_string()),
            &[],
        )
        .await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    }
}

#[tokio::test]
async fn unknown_model_is_404_and_known_names_pass() {
    let s = loading();
    let e = bad(
        &s,
        &chat(json!({"model": "gpt-4o"})).to_string(),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(e["code"], "model_not_found");
    assert_eq!(e["param"], "model");
    assert!(e["message"].as_str().unwrap().contains("'gpt-4o'"), "{e}");
    // Served name, alias and no model at all get past the check (to 503: loading).
    for extra in [json!({"model": MODEL}), json!({"model": "smol"}), json!({})] {
        let r = call(
            &s,
            "POST",
            "/v1/chat/completions",
            Some(&chat(extra).to_string()),
            &[],
        )
        .await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
        assert_eq!(r.error()["code"], "model_loading");
    }
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let mut cfg = server_config();
    cfg.max_body_bytes = 1000;
    let s = AppState::new(cfg);
    let big = chat(json!({"user": "x".repeat(2000)})).to_string();
    let r = call(&s, "POST", "/v1/chat/completions", Some(&big), &[]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("1000 bytes"));
    // Under the limit it is read.
    let small = chat(json!({})).to_string();
    let r = call(&s, "POST", "/v1/chat/completions", Some(&small), &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn unknown_route_and_method_are_openai_shaped() {
    let s = loading();
    let r = call(&s, "GET", "/v1/nothing", None, &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error()["code"], "not_found");
    let r = call(&s, "GET", "/v1/chat/completions", None, &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.error()["code"], "method_not_allowed");
}

#[tokio::test]
async fn health_is_503_until_loaded_and_metrics_say_so() {
    let s = loading();
    let r = call(&s, "GET", "/health", None, &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("retry-after"), Some("1"));
    let r = call(&s, "GET", "/metrics", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("tuili_model_loaded 0"), "{}", r.body);
    // The two 503s above were counted.
    assert!(
        r.body.contains("tuili_requests_total{status=\"503\"} 1"),
        "{}",
        r.body
    );
    let r = call(&s, "GET", "/v1/models", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["data"][0]["id"], MODEL);
}

#[tokio::test]
async fn api_key_is_required_except_on_health() {
    let mut cfg: ServerConfig = server_config();
    cfg.api_key = Some("sk-test-123".to_string());
    let s = AppState::new(cfg);
    for (path, method) in [
        ("/v1/models", "GET"),
        ("/v1/chat/completions", "POST"),
        ("/v1/completions", "POST"),
        ("/tokenize", "POST"),
        ("/detokenize", "POST"),
    ] {
        let body = (method == "POST").then_some("{}");
        let r = call(&s, method, path, body, &[]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(r.error()["code"], "invalid_api_key");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let r = call(
            &s,
            method,
            path,
            body,
            &[("authorization", "Bearer sk-test-12")],
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        let r = call(
            &s,
            method,
            path,
            body,
            &[("authorization", "Basic sk-test-123")],
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let r = call(
        &s,
        "GET",
        "/v1/models",
        None,
        &[("authorization", "Bearer sk-test-123")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(&s, "GET", "/health", None, &[]).await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "health needs no key"
    );
}
