//! Mistral v11+ tool calls (`[TOOL_CALLS]NAME[ARGS]{...}`) through the whole server: a model
//! served with Ministral 3's chat template has its calls split into `tool_calls` and the text
//! before them into `content`, whole and streamed. No such model is small enough for the test
//! set, so SmolLM2 runs under Ministral 3's template and a regex grammar makes it write
//! the calls (SmolLM2 spells the markers as text; Ministral's are control tokens, rendered
//! into the text by the engine for this format). `tool_choice` required needs no regex: the
//! tool grammar writes the markers as text for a vocabulary that lacks them.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use tuili_engine::start_engine;
use tuili_server::AppState;
use tuili_tokenizer::ChatTemplate;

fn mistral_state(test: &str) -> Option<AppState> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/mistral_v11_templates.json"
    );
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture"))
        .expect("fixture JSON");
    let template = ChatTemplate::new(fx["ministral3"].as_str().expect("template"), "<s>", "</s>")
        .expect("the Ministral 3 template compiles");
    let smol = smol(test)?;
    let engine =
        start_engine(smol.model.clone(), smol.tokenizer.clone(), engine_config()).expect("engine");
    Some(AppState::with_engine(server_config(), engine, Some(template)).expect("state"))
}

fn weather() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"], "additionalProperties": false}}}])
}

const ANSWER: &str = "Let me check [both].[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Rome\"}";

fn forced(stream: bool) -> Value {
    json!({
        "messages": [{"role": "user", "content": "Weather in Paris and Rome?"}],
        "tools": weather(),
        "structured_outputs": {"regex": regex_of(ANSWER)},
        "max_tokens": 200, "temperature": 0, "stream": stream,
    })
}

#[tokio::test]
async fn calls_after_text_become_tool_calls_whole_and_streamed() {
    let Some(s) = mistral_state("calls_after_text_become_tool_calls_whole_and_streamed") else {
        return;
    };
    let r = post(&s, "/v1/chat/completions", &forced(false)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let choice = &r.json()["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{}", r.body);
    let m = &choice["message"];
    assert_eq!(m["content"], "Let me check [both].");
    let calls = m["tool_calls"].as_array().expect("tool_calls");
    let cities: Vec<Value> = calls
        .iter()
        .map(|c| {
            assert_eq!(c["function"]["name"], "get_weather");
            let args: Value =
                serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap();
            args["city"].clone()
        })
        .collect();
    assert_eq!(cities, [json!("Paris"), json!("Rome")]);

    let out = streamed(
        &post(&s, "/v1/chat/completions", &forced(true)).await,
        "[TOOL_CALLS]",
    );
    assert_eq!(out.content, "Let me check [both].");
    assert_eq!(out.names, ["get_weather", "get_weather"]);
    let args: Vec<Value> = out
        .args
        .iter()
        .map(|a| serde_json::from_str(a).unwrap())
        .collect();
    assert_eq!(args, [json!({"city": "Paris"}), json!({"city": "Rome"})]);
    assert_eq!(out.finish.as_deref(), Some("tool_calls"));
}

#[tokio::test]
async fn required_makes_one_call_that_fits_the_schema() {
    let Some(s) = mistral_state("required_makes_one_call_that_fits_the_schema") else {
        return;
    };
    let body = json!({
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": weather(), "tool_choice": "required", "parallel_tool_calls": false,
        "max_tokens": 200, "temperature": 0,
    });
    let r = post(&s, "/v1/chat/completions", &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let c = &r.json()["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls", "{}", r.body);
    let calls = c["message"]["tool_calls"].as_array().expect("tool_calls");
    assert_eq!(calls.len(), 1, "{}", r.body);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    let city = args["city"].as_str().expect("city");
    assert!(city.chars().count() <= 20, "{args}");
    assert_eq!(args.as_object().unwrap().len(), 1, "{args}");
}
