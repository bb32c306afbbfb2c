//! Tool calls over the real Qwen2.5-Coder model, in-process: `required`, a named
//! function and `parallel_tool_calls` (enforced by grammar, so the calls parse and fit the
//! tool's schema), streaming as OpenAI streams them, and the round trip with the tool's
//! result rendered through the model's own template.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use tuili_server::AppState;

/// A server over qwen.gguf, or `None` after a visible skip line.
fn qwen(test: &str) -> Option<AppState> {
    common::qwen(test).map(|q| state(q, engine_config(), server_config()))
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object",
                "properties": {"city": {"type": "string"},
                               "unit": {"enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "unit"]}}},
        {"type": "function", "function": {"name": "get_time",
            "description": "Current local time in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}}
    ])
}

fn ask(extra: Value) -> Value {
    let mut body = json!({
        "messages": [{"role": "user", "content": "What is the weather in Paris and in Rome?"}],
        "tools": tools(), "max_tokens": 120, "temperature": 0
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        body[k] = v;
    }
    body
}

/// Checks a call's name and that its arguments fit the tool's schema.
fn check_call(name: &str, args: &str) {
    let a: Value = serde_json::from_str(args).unwrap_or_else(|e| panic!("{e}: {args}"));
    assert!(a["city"].is_string(), "{args}");
    match name {
        "get_weather" => assert!(["celsius", "fahrenheit"].contains(&a["unit"].as_str().unwrap())),
        "get_time" => {}
        other => panic!("unknown tool {other}"),
    }
}

#[tokio::test]
async fn required_and_named_calls_parse_and_fit_their_schemas() {
    let Some(s) = qwen("required_and_named_calls_parse_and_fit_their_schemas") else {
        return;
    };
    for (choice, parallel) in [
        (json!("required"), false),
        (
            json!({"type": "function", "function": {"name": "get_time"}}),
            false,
        ),
        (json!("required"), true),
    ] {
        let body = ask(json!({"tool_choice": choice, "parallel_tool_calls": parallel}));
        let r = post(&s, "/v1/chat/completions", &body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let v = r.json();
        let c = &v["choices"][0];
        let calls = c["message"]["tool_calls"].as_array().expect("tool_calls");
        if parallel {
            // A small model may go on calling until max_tokens; every whole call counts.
            assert!(
                calls.len() >= 2 + (c["finish_reason"] == "length") as usize,
                "{v}"
            );
            assert!(["tool_calls", "length"].contains(&c["finish_reason"].as_str().unwrap()));
        } else {
            assert_eq!(c["finish_reason"], "tool_calls", "{v}");
            assert_eq!(calls.len(), 1, "{v}");
            assert!(c["message"]["content"].is_null(), "{v}");
        }
        if choice["function"]["name"] == "get_time" {
            assert_eq!(calls[0]["function"]["name"], "get_time");
        }
        // A call that max_tokens cut short has cut arguments, as OpenAI's.
        let cut = c["finish_reason"] == "length";
        for call in &calls[..calls.len() - cut as usize] {
            assert!(call["id"].as_str().unwrap().starts_with("call_"));
            assert_eq!(call["type"], "function");
            let f = &call["function"];
            check_call(
                f["name"].as_str().unwrap(),
                f["arguments"].as_str().unwrap(),
            );
        }
    }
}

#[tokio::test]
async fn streamed_calls_come_as_name_then_arguments_then_tool_calls() {
    let Some(s) = qwen("streamed_calls_come_as_name_then_arguments_then_tool_calls") else {
        return;
    };
    let body =
        ask(json!({"tool_choice": "required", "stream": true, "parallel_tool_calls": false}));
    let r = post(&s, "/v1/chat/completions", &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = None;
    for e in r.events().iter().filter(|e| *e != "[DONE]") {
        let v: Value = serde_json::from_str(e).unwrap();
        let c = &v["choices"][0];
        if let Some(f) = c["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
        for tc in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let i = tc["index"].as_u64().unwrap() as usize;
            if i == calls.len() {
                // A call opens with its id, type and name.
                assert!(tc["id"].as_str().unwrap().starts_with("call_"), "{tc}");
                assert_eq!(tc["type"], "function");
                let name = tc["function"]["name"].as_str().unwrap().to_string();
                calls.push((tc["id"].as_str().unwrap().into(), name, String::new()));
            } else {
                assert!(tc.get("id").is_none() && tc["function"].get("name").is_none());
            }
            if let Some(a) = tc["function"]["arguments"].as_str() {
                calls[i].2.push_str(a);
            }
        }
    }
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert!(!calls.is_empty());
    for (_, name, args) in &calls {
        check_call(name, args);
    }
}

#[tokio::test]
async fn a_tool_result_goes_back_through_the_template_and_gets_an_answer() {
    let Some(s) = qwen("a_tool_result_goes_back_through_the_template_and_gets_an_answer") else {
        return;
    };
    let body = json!({
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 21, \"sky\": \"sunny\"}"}
        ],
        "tools": tools(), "max_tokens": 60, "temperature": 0
    });
    let r = post(&s, "/v1/chat/completions", &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v = r.json();
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "stop", "{v}");
    let text = c["message"]["content"].as_str().unwrap();
    assert!(text.contains("21"), "{text}");
    // The rendered prompt held the call and the result: far more than the question alone.
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 200, "{v}");
}

#[tokio::test]
async fn tool_requests_that_cannot_work_are_400s() {
    let Some(s) = qwen("tool_requests_that_cannot_work_are_400s") else {
        return;
    };
    let cases = [
        (
            ask(json!({"tool_choice": "required", "json_schema": {"type": "object"}})),
            "json_schema",
        ),
        (
            ask(json!({"tool_choice": {"type": "function", "function": {"name": "nope"}}})),
            "tool_choice.function.name",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].tool_call_id",
        ),
    ];
    for (body, param) in cases {
        let r = post(&s, "/v1/chat/completions", &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        assert_eq!(r.error()["param"], param, "{}", r.body);
    }
}
