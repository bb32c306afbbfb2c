//! gpt-oss's harmony answers through the whole server: a model served with gpt-oss's chat
//! template has its channels split into `reasoning_content`, `tool_calls` and `content`,
//! whole and streamed. No gpt-oss model is small enough for the test set, so SmolLM2 runs
//! under gpt-oss's template and a regex grammar makes it write harmony messages (SmolLM2
//! spells the markers as text; gpt-oss's are control tokens, rendered into the text by the
//! engine for this template: see the engine's `control_tokens_show_only_when_rendered`).

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
    let regex: String = answer
        .chars()
        .map(|c| match c {
            '|' | '.' | '{' | '}' | '\\' | '(' | ')' | '[' | ']' | '*' | '+' | '?' | '^' | '$' => {
                format!("\\{c}")
            }
            c => c.to_string(),
        })
        .collect();
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
    let r = post(&s, "/v1/chat/completions", &forced(CALL, true)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (mut reasoning, mut content, mut args) = (String::new(), String::new(), String::new());
    let (mut names, mut finish) = (Vec::new(), None);
    for data in r.events() {
        assert!(!data.contains("<|"), "a marker leaked: {data}");
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(&data).unwrap();
        let Some(c) = v["choices"].get(0) else {
            continue;
        };
        let d = &c["delta"];
        reasoning += d["reasoning_content"].as_str().unwrap_or("");
        content += d["content"].as_str().unwrap_or("");
        for t in d["tool_calls"].as_array().into_iter().flatten() {
            assert_eq!(t["index"], 0);
            if let Some(n) = t["function"]["name"].as_str() {
                assert!(t["id"].as_str().unwrap().starts_with("call_"));
                names.push(n.to_string());
            }
            args += t["function"]["arguments"].as_str().unwrap_or("");
        }
        if let Some(f) = c["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    assert_eq!(reasoning, "Need the weather.");
    assert_eq!(content, "");
    assert_eq!(names, ["get_weather"]);
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(finish.as_deref(), Some("tool_calls"));
}

#[tokio::test]
async fn forced_tool_choice_is_refused_for_harmony_until_it_has_a_grammar() {
    let Some(s) = harmony_state("forced_tool_choice_is_refused_for_harmony_until_it_has_a_grammar")
    else {
        return;
    };
    let mut body = forced(CALL, false);
    body["tool_choice"] = json!("required");
    let r = post(&s, "/v1/chat/completions", &body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let e = r.error();
    assert_eq!(e["param"], "tool_choice");
    assert!(e["message"].as_str().unwrap().contains("harmony"), "{e}");
}
