//! Structured output over the real default model, in-process: every grammar form
//! (OpenAI `response_format`, vLLM `structured_outputs`, llama.cpp `json_schema` and GBNF
//! `grammar`), streaming and not, `n` > 1, and `logit_bias`; grammars that do not compile
//! are 400s naming the field.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use tuili_server::AppState;

fn ready(test: &str) -> Option<AppState> {
    smol(test).map(|s| state(s, engine_config(), server_config()))
}

fn chat(prompt: &str, extra: Value) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": prompt}],
                          "max_tokens": 160, "temperature": 0});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        body[k] = v;
    }
    body
}

/// Each choice's text and finish reason, from a body or an SSE stream.
fn answers(r: &Reply) -> Vec<(String, String)> {
    if r.body.starts_with('{') {
        return r.json()["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let text = c["message"]["content"].as_str().or(c["text"].as_str());
                (
                    text.unwrap().to_string(),
                    c["finish_reason"].as_str().unwrap().to_string(),
                )
            })
            .collect();
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for e in r.events().iter().filter(|e| *e != "[DONE]") {
        let v: Value = serde_json::from_str(e).unwrap();
        for c in v["choices"].as_array().unwrap() {
            let i = c["index"].as_u64().unwrap() as usize;
            if out.len() <= i {
                out.resize(i + 1, Default::default());
            }
            if let Some(t) = c["delta"]["content"].as_str().or(c["text"].as_str()) {
                out[i].0.push_str(t);
            }
            if let Some(f) = c["finish_reason"].as_str() {
                out[i].1 = f.to_string();
            }
        }
    }
    out
}

#[tokio::test]
async fn json_schema_answers_parse_and_fit_streaming_and_not() {
    let Some(s) = ready("json_schema_answers_parse_and_fit_streaming_and_not") else {
        return;
    };
    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "population": {"type": "integer", "minimum": 0},
            "sizes": {"type": "array", "items": {"enum": ["small", "big"]}, "maxItems": 2}
        },
        "required": ["city", "population", "sizes"],
        "additionalProperties": false
    });
    let forms = [
        json!({"response_format": {"type": "json_schema",
               "json_schema": {"name": "city", "schema": schema, "strict": true}}}),
        json!({"structured_outputs": {"json": schema}}),
        json!({"json_schema": schema, "n": 2, "temperature": 0.8, "seed": 5}),
    ];
    for (k, form) in forms.into_iter().enumerate() {
        let mut body = chat("Describe Paris as JSON.", form);
        body["stream"] = json!(k == 1);
        body["logprobs"] = json!(true);
        let r = post(&s, "/v1/chat/completions", &body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        for (text, finish) in answers(&r) {
            assert_eq!(finish, "stop", "{text}");
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert!(v["city"].as_str().unwrap().chars().count() <= 20, "{text}");
            assert!(v["population"].as_u64().is_some(), "{text}");
            assert!(v["sizes"].as_array().unwrap().len() <= 2, "{text}");
        }
    }
}

/// Whether an answer is what its grammar allows.
type Check = fn(&str) -> bool;

#[tokio::test]
async fn choice_regex_lark_gbnf_and_json_object_constrain_the_text() {
    let Some(s) = ready("choice_regex_lark_gbnf_and_json_object_constrain_the_text") else {
        return;
    };
    let cases: [(Value, Check); 5] = [
        (
            json!({"structured_outputs": {"choice": ["red", "green"]}}),
            |t| t == "red" || t == "green",
        ),
        (
            json!({"structured_outputs": {"regex": "[0-9]{2}-[a-z]{3}"}}),
            |t| t.len() == 6 && t.as_bytes()[2] == b'-',
        ),
        (json!({"grammar": "start: \"yes\" | \"no\""}), |t| {
            t == "yes" || t == "no"
        }),
        (
            json!({"grammar": "root ::= answer \"!\"\nanswer ::= \"ok\" | \"fine\""}),
            |t| t == "ok!" || t == "fine!",
        ),
        (json!({"response_format": {"type": "json_object"}}), |t| {
            serde_json::from_str::<Value>(t).is_ok_and(|v| v.is_object())
        }),
    ];
    for (form, ok) in cases {
        for path in ["/v1/chat/completions", "/v1/completions"] {
            let mut body = chat("Pick one.", form.clone());
            if path == "/v1/completions" {
                if form.get("response_format").is_some() {
                    continue;
                }
                body = json!({"prompt": "Answer:", "max_tokens": 40, "temperature": 0});
                for (k, v) in form.as_object().unwrap() {
                    body[k] = v.clone();
                }
            }
            let r = post(&s, path, &body).await;
            assert_eq!(r.status, StatusCode::OK, "{form} {}", r.body);
            let (text, finish) = answers(&r).remove(0);
            assert!(ok(&text), "{form} on {path}: {text:?}");
            assert_eq!(finish, "stop", "{form}: {text}");
        }
    }
}

#[tokio::test]
async fn grammars_that_do_not_compile_are_400s_naming_the_field() {
    let Some(s) = ready("grammars_that_do_not_compile_are_400s_naming_the_field") else {
        return;
    };
    let cases = [
        (json!({"json_schema": {"type": "strin"}}), "json_schema"),
        (
            json!({"structured_outputs": {"regex": "(unclosed"}}),
            "structured_outputs.regex",
        ),
        (
            json!({"structured_outputs": {"grammar": "start: nowhere"}}),
            "structured_outputs.grammar",
        ),
        (json!({"grammar": "rule ::= \"x\""}), "grammar"),
        (json!({"logit_bias": {"999999": 1}}), "logit_bias.999999"),
    ];
    for (form, param) in cases {
        let r = post(&s, "/v1/chat/completions", &chat("hi", form.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{form}: {}", r.body);
        let e = r.error();
        assert_eq!(e["param"], param, "{e}");
        assert!(e["message"].as_str().unwrap().starts_with(param), "{e}");
    }
}

#[tokio::test]
async fn logit_bias_bans_and_forces_tokens() {
    let Some(s) = ready("logit_bias_bans_and_forces_tokens") else {
        return;
    };
    let body = json!({"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0,
                      "logprobs": 0});
    let plain = post(&s, "/v1/completions", &body).await.json();
    let first = plain["choices"][0]["text"].as_str().unwrap().to_string();
    let tok = &smol("logit_bias").unwrap().tokenizer;
    let id = tok.encode(&first, false, false)[0];
    let mut banned = body.clone();
    banned["logit_bias"] = json!({ id.to_string(): -100 });
    let r = post(&s, "/v1/completions", &banned).await.json();
    let text = r["choices"][0]["text"].as_str().unwrap();
    assert!(!text.starts_with(&first), "{first:?} still first: {text:?}");
    let x = tok.encode(" x", false, false)[0];
    let mut forced = body;
    forced["logit_bias"] = json!({ x.to_string(): 100 });
    let r = post(&s, "/v1/completions", &forced).await.json();
    assert_eq!(r["choices"][0]["text"], " x x x");
}
