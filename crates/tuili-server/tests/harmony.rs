//! gpt-oss's harmony answers through the whole server: a model served with gpt-oss's chat
//! template has its channels split into `reasoning_content`, `tool_calls` and `content`,
//! whole and streamed. No gpt-oss model is small enough for the test set, so SmolLM2 runs
//! under gpt-oss's template and a regex grammar makes it write harmony messages (SmolLM2
//! spells the markers as text; gpt-oss's are control tokens, rendered into the text by the
//! engine for this template: see the engine's `control_tokens_show_only_when_rendered`).
//! `tool_choice` required or named needs no regex: the tool grammar writes the markers as
//! text for a vocabulary that lacks them.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use tuili_engine::start_engine;
use tuili_server::AppState;
use tuili_tokenizer::ChatTemplate;

fn gpt_oss_template() -> ChatTemplate {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tuili-tokenizer/tests/data/chat_gpt_oss.json"
    );
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture"))
        .expect("fixture JSON");
    ChatTemplate::new(
        fx["template"].as_str().expect("template"),
        "<|startoftext|>",
        "<|return|>",
    )
    .expect("the gpt-oss template compiles")
}

fn harmony_state(test: &str) -> Option<AppState> {
    let smol = smol(test)?;
    let engine =
        start_engine(smol.model.clone(), smol.tokenizer.clone(), engine_config()).expect("engine");
    Some(AppState::with_engine(server_config(), engine, Some(gpt_oss_template())).expect("state"))
}

/// A request whose answer is forced to be `answer` (harmony text, a regex escaped here).
fn forced(answer: &str, stream: bool) -> Value {
    let regex = regex_of(answer);
    json!({
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "structured_outputs": {"regex": regex},
        "max_tokens": 200, "temperature": 0, "stream": stream,
        "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
    })
}

const CALL: &str = "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Paris\"}";
const ANSWER: &str = "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final<|message|>It is sunny.";

#[tokio::test]
async fn channels_become_reasoning_calls_and_content() {
    let Some(s) = harmony_state("channels_become_reasoning_calls_and_content") else {
        return;
    };
    let r = post(&s, "/v1/chat/completions", &forced(CALL, false)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let choice = &r.json()["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{}", r.body);
    let m = &choice["message"];
    assert_eq!(m["reasoning_content"], "Need the weather.");
    assert!(m["content"].is_null(), "{m}");
    assert_eq!(m["tool_calls"][0]["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(
        m["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(args, json!({"city": "Paris"}));

    let r = post(&s, "/v1/chat/completions", &forced(ANSWER, false)).await;
    let m = &r.json()["choices"][0]["message"];
    assert_eq!(m["reasoning_content"], "Easy.", "{}", r.body);
    assert_eq!(m["content"], "It is sunny.");
    assert!(m["tool_calls"].is_null());
    assert_eq!(r.json()["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn streams_send_thought_then_the_call_in_fragments() {
    let Some(s) = harmony_state("streams_send_thought_then_the_call_in_fragments") else {
        return;
    };
    let out = streamed(
        &post(&s, "/v1/chat/completions", &forced(CALL, true)).await,
        "<|",
    );
    assert_eq!(out.reasoning, "Need the weather.");
    assert_eq!(out.content, "");
    assert_eq!(out.names, ["get_weather"]);
    assert_eq!(
        serde_json::from_str::<Value>(&out.args[0]).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(out.finish.as_deref(), Some("tool_calls"));
}

#[tokio::test]
async fn required_and_named_calls_come_from_the_grammar_and_fit_the_schema() {
    let Some(s) =
        harmony_state("required_and_named_calls_come_from_the_grammar_and_fit_the_schema")
    else {
        return;
    };
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object",
                "properties": {"city": {"type": "string", "maxLength": 20},
                               "unit": {"enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "unit"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "get_time",
            "description": "The local time in a city.",
            "parameters": {"type": "object",
                           "properties": {"city": {"type": "string", "maxLength": 20}},
                           "required": ["city"], "additionalProperties": false}}}
    ]);
    // SmolLM2 under this template writes preamble after preamble (gpt-oss goes on to its
    // call): a bias on ` to` makes it open a call's header (` to=functions.NAME...`, the
    // recipient-first form). Which tool, the header's rest and the arguments are the
    // grammar's and the model's.
    let to = s
        .ready()
        .unwrap()
        .engine
        .tokenizer()
        .encode(" to", false, false);
    assert_eq!(to.len(), 1);
    for (choice, name) in [
        (json!("required"), None),
        (
            json!({"type": "function", "function": {"name": "get_time"}}),
            Some("get_time"),
        ),
    ] {
        let body = json!({
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
            "tools": tools, "tool_choice": choice, "max_tokens": 200, "temperature": 0,
            "logit_bias": {to[0].to_string(): 100},
        });
        let r = post(&s, "/v1/chat/completions", &body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let c = &r.json()["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls", "{}", r.body);
        let calls = c["message"]["tool_calls"].as_array().expect("tool_calls");
        assert_eq!(calls.len(), 1, "{}", r.body);
        let f = &calls[0]["function"];
        let called = f["name"].as_str().unwrap();
        if let Some(n) = name {
            assert_eq!(called, n);
        }
        let args: Value = serde_json::from_str(f["arguments"].as_str().unwrap()).unwrap();
        let city = args["city"].as_str().expect("city");
        assert!(city.chars().count() <= 20, "{args}");
        let keys = match called {
            "get_weather" => {
                assert!(["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()));
                2
            }
            "get_time" => 1,
            other => panic!("unknown tool {other}"),
        };
        assert_eq!(args.as_object().unwrap().len(), keys, "{args}");
    }
}
