//! The OpenAI API over the real default model, in-process: chat and completions, streaming
//! and not, stop strings, logprobs, `n`, usage, tokenize/detokenize, models and metrics.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use tuili_server::AppState;

fn ready(test: &str) -> Option<AppState> {
    smol(test).map(|s| state(s, engine_config(), server_config()))
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// Concatenated `delta.content` (chat) or `text` (completions) of choice `index`.
fn streamed_text(events: &[String], index: usize) -> String {
    let mut out = String::new();
    for e in events.iter().filter(|e| *e != "[DONE]") {
        let v: Value = serde_json::from_str(e).expect("chunk JSON");
        for c in v["choices"].as_array().expect("choices") {
            if c["index"] == index {
                if let Some(t) = c["delta"]["content"].as_str().or(c["text"].as_str()) {
                    out.push_str(t);
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn chat_non_streaming_has_openai_fields() {
    let Some(s) = ready("chat_non_streaming_has_openai_fields") else {
        return;
    };
    let body = json!({"model": MODEL, "messages": user("What is the capital of France?"),
                      "max_tokens": 12, "temperature": 0});
    let r = post(&s, "/v1/chat/completions", &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], MODEL);
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    let c = &v["choices"][0];
    assert_eq!(c["index"], 0);
    assert_eq!(c["message"]["role"], "assistant");
    assert!(!c["message"]["content"].as_str().unwrap().is_empty());
    assert!(c["logprobs"].is_null());
    let u = &v["usage"];
    let (p, g) = (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
    );
    assert!(p > 5, "{u}");
    assert!((1..=12).contains(&g), "{u}");
    assert_eq!(u["total_tokens"].as_u64().unwrap(), p + g);
    match c["finish_reason"].as_str().unwrap() {
        "length" => assert_eq!(g, 12),
        "stop" => assert!(g < 12),
        other => panic!("finish_reason {other}"),
    }
}

#[tokio::test]
async fn chat_streaming_equals_non_streaming() {
    let Some(s) = ready("chat_streaming_equals_non_streaming") else {
        return;
    };
    let mut body =
        json!({"messages": user("Name three colors."), "max_tokens": 20, "temperature": 0});
    let whole = post(&s, "/v1/chat/completions", &body).await.json();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(&s, "/v1/chat/completions", &body).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = r.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        streamed_text(&events, 0),
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let id = &chunks[0]["id"];
    for c in &chunks {
        assert_eq!(&c["id"], id);
        assert_eq!(c["object"], "chat.completion.chunk");
    }
    // All but the last carry `usage: null`; the last has usage and no choices.
    let (last, rest) = chunks.split_last().unwrap();
    assert!(rest.iter().all(|c| c.get("usage") == Some(&Value::Null)));
    assert_eq!(last["choices"], json!([]));
    // Same counts (the second request may find its prompt in the prefix cache).
    for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(last["usage"][k], whole["usage"][k], "{k}");
    }
    assert!(
        last["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    let finish: Vec<&Value> = rest
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, vec![&whole["choices"][0]["finish_reason"]]);
}

#[tokio::test]
async fn completions_text_tokens_and_stream_agree() {
    let Some(s) = ready("completions_text_tokens_and_stream_agree") else {
        return;
    };
    let sm = smol("tokens").unwrap();
    let prompt = "The quick brown fox";
    let mut body = json!({"prompt": prompt, "max_tokens": 16, "temperature": 0});
    let a = post(&s, "/v1/completions", &body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = a.json();
    assert_eq!(a["object"], "text_completion");
    assert!(a["id"].as_str().unwrap().starts_with("cmpl-"));
    let text = a["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(!text.is_empty());
    // The same prompt as token ids (with the BOS the text prompt gets).
    body["prompt"] = json!(sm.tokenizer.encode(prompt, true, false));
    let b = post(&s, "/v1/completions", &body).await.json();
    assert_eq!(b["choices"][0]["text"], text.as_str());
    assert_eq!(b["usage"], a["usage"]);
    body["stream"] = json!(true);
    let r = post(&s, "/v1/completions", &body).await;
    let events = r.events();
    assert_eq!(streamed_text(&events, 0), text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    // Without include_usage, chunks have no usage key at all.
    assert!(!r.body.contains("\"usage\""));
}

#[tokio::test]
async fn stop_strings_end_the_text_and_are_never_split() {
    let Some(s) = ready("stop_strings_end_the_text_and_are_never_split") else {
        return;
    };
    let body = json!({"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0, "ignore_eos": true});
    let full = post(&s, "/v1/completions", &body).await.json()["choices"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    // A stop string taken from the middle of the greedy text, spanning several characters.
    let chars: Vec<(usize, char)> = full.char_indices().collect();
    assert!(chars.len() > 20, "{full:?}");
    let start = chars[chars.len() / 2].0;
    let end = chars[chars.len() / 2 + 4].0;
    let stop = full[start..end].to_string();
    let expected = &full[..full.find(&stop).unwrap()];
    for stream in [false, true] {
        let mut b = body.clone();
        b["stop"] = json!(["never-appears-xyz", stop]);
        b["stream"] = json!(stream);
        let r = post(&s, "/v1/completions", &b).await;
        let (text, finish) = if stream {
            let ev = r.events();
            let fin = ev.iter().rev().filter(|e| *e != "[DONE]").find_map(|e| {
                let v: Value = serde_json::from_str(e).unwrap();
                v["choices"][0]["finish_reason"]
                    .as_str()
                    .map(str::to_string)
            });
            (streamed_text(&ev, 0), fin.unwrap())
        } else {
            let v = r.json();
            let c = &v["choices"][0];
            (
                c["text"].as_str().unwrap().to_string(),
                c["finish_reason"].as_str().unwrap().to_string(),
            )
        };
        assert_eq!(text, expected, "stream={stream} stop={stop:?}");
        assert_eq!(finish, "stop");
    }
}

#[tokio::test]
async fn chat_logprobs_match_greedy_choice() {
    let Some(s) = ready("chat_logprobs_match_greedy_choice") else {
        return;
    };
    let body = json!({"messages": user("Say hello."), "max_tokens": 8, "temperature": 0,
                      "logprobs": true, "top_logprobs": 3});
    let v = post(&s, "/v1/chat/completions", &body).await.json();
    let c = &v["choices"][0];
    let content = c["logprobs"]["content"]
        .as_array()
        .expect("logprobs.content");
    assert_eq!(
        content.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    let mut bytes = Vec::new();
    for e in content {
        let lp = e["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0);
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // Greedy: the chosen token is the most likely one.
        assert_eq!(top[0]["token"], e["token"]);
        assert!((top[0]["logprob"].as_f64().unwrap() - lp).abs() < 1e-5);
        assert!(top
            .windows(2)
            .all(|w| w[0]["logprob"].as_f64() >= w[1]["logprob"].as_f64()));
        bytes.extend(
            e["bytes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8),
        );
    }
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        c["message"]["content"].as_str().unwrap()
    );
}

#[tokio::test]
async fn completion_logprobs_use_the_legacy_layout() {
    let Some(s) = ready("completion_logprobs_use_the_legacy_layout") else {
        return;
    };
    let body = json!({"prompt": "1, 2, 3,", "max_tokens": 6, "temperature": 0, "logprobs": 2, "ignore_eos": true});
    let v = post(&s, "/v1/completions", &body).await.json();
    let lp = &v["choices"][0]["logprobs"];
    let tokens = lp["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 6);
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), 6);
    let top = lp["top_logprobs"].as_array().unwrap();
    assert!(top
        .iter()
        .all(|t| (1..=2).contains(&t.as_object().unwrap().len())));
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap())
        .collect();
    assert_eq!(offsets[0], 0);
    let joined: String = tokens.iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(joined, v["choices"][0]["text"].as_str().unwrap());
    for (i, t) in tokens.iter().enumerate().skip(1) {
        let prev = tokens[i - 1].as_str().unwrap().chars().count() as u64;
        assert_eq!(offsets[i], offsets[i - 1] + prev, "{t}");
    }
}

#[tokio::test]
async fn n_choices_use_consecutive_seeds() {
    let Some(s) = ready("n_choices_use_consecutive_seeds") else {
        return;
    };
    let body = json!({"prompt": "My favourite animal is", "max_tokens": 10, "n": 3,
                      "temperature": 1.0, "seed": 7, "ignore_eos": true});
    let a = post(&s, "/v1/completions", &body).await.json();
    let texts = |v: &Value| -> Vec<String> {
        v["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap().to_string())
            .collect()
    };
    let ta = texts(&a);
    assert_eq!(ta.len(), 3);
    for (i, c) in a["choices"].as_array().unwrap().iter().enumerate() {
        assert_eq!(c["index"], i);
    }
    // Same seed, same answers; choice 1 is what seed 8 gives alone.
    assert_eq!(texts(&post(&s, "/v1/completions", &body).await.json()), ta);
    let mut one = body.clone();
    one["n"] = json!(1);
    one["seed"] = json!(8);
    assert_eq!(
        texts(&post(&s, "/v1/completions", &one).await.json()),
        vec![ta[1].clone()]
    );
    assert!(
        ta[0] != ta[1] || ta[1] != ta[2],
        "three samples at temperature 1 all equal: {ta:?}"
    );
    // The prompt is counted once.
    let single = post(&s, "/v1/completions", &one).await.json();
    assert_eq!(
        a["usage"]["prompt_tokens"],
        single["usage"]["prompt_tokens"]
    );
    assert_eq!(a["usage"]["completion_tokens"], 30);
}

#[tokio::test]
async fn streamed_n_choices_each_finish() {
    let Some(s) = ready("streamed_n_choices_each_finish") else {
        return;
    };
    let body = json!({"messages": user("Count to five."), "max_tokens": 8, "n": 2, "stream": true,
                      "temperature": 0});
    let events = post(&s, "/v1/chat/completions", &body).await.events();
    let (a, b) = (streamed_text(&events, 0), streamed_text(&events, 1));
    assert!(!a.is_empty());
    assert_eq!(a, b, "greedy choices differ");
    let finishes = events
        .iter()
        .filter(|e| e.contains("\"finish_reason\":\""))
        .count();
    assert_eq!(finishes, 2);
}

#[tokio::test]
async fn context_overflow_names_both_numbers() {
    let Some(s) = ready("context_overflow_names_both_numbers") else {
        return;
    };
    let body = json!({"prompt": "hello", "max_tokens": 5000});
    let r = post(&s, "/v1/completions", &body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let e = r.error();
    assert_eq!(e["code"], "context_length_exceeded");
    let m = e["message"].as_str().unwrap();
    assert!(
        m.contains("max_tokens is 5000") && m.contains("1024"),
        "{m}"
    );
    let long = "word ".repeat(1500);
    let r = post(
        &s,
        "/v1/chat/completions",
        &json!({"messages": user(&long)}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("context length of 1024"));
    // Token ids outside the vocabulary.
    let r = post(&s, "/v1/completions", &json!({"prompt": [1, 2, 99999999]})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error()["param"], "prompt[2]");
}

#[tokio::test]
async fn tokenize_detokenize_models_health_metrics() {
    let Some(s) = ready("tokenize_detokenize_models_health_metrics") else {
        return;
    };
    let sm = smol("tok").unwrap();
    let r = post(&s, "/tokenize", &json!({"content": "Hello world"})).await;
    let ids: Vec<u32> = serde_json::from_value(r.json()["tokens"].clone()).unwrap();
    assert_eq!(ids, sm.tokenizer.encode("Hello world", false, true));
    let r = post(
        &s,
        "/tokenize",
        &json!({"prompt": "Hello world", "add_special": true}),
    )
    .await;
    let with_bos: Vec<u32> = serde_json::from_value(r.json()["tokens"].clone()).unwrap();
    assert_eq!(with_bos, sm.tokenizer.encode("Hello world", true, true));
    let r = post(&s, "/detokenize", &json!({"tokens": ids})).await;
    assert_eq!(r.json()["content"], "Hello world");
    let r = post(&s, "/detokenize", &json!({"tokens": [1, -5]})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error()["param"], "tokens[1]");
    let r = post(&s, "/tokenize", &json!({"text": "x"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    assert_eq!(
        call(&s, "GET", "/health", None, &[]).await.status,
        StatusCode::OK
    );
    let m = call(&s, "GET", "/v1/models", None, &[]).await.json();
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], MODEL);
    assert_eq!(
        call(&s, "GET", "/v1/models/smol", None, &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&s, "GET", "/v1/models/other", None, &[]).await.status,
        StatusCode::NOT_FOUND
    );

    post(
        &s,
        "/v1/completions",
        &json!({"prompt": "Hi", "max_tokens": 3, "ignore_eos": true}),
    )
    .await;
    let text = call(&s, "GET", "/metrics", None, &[]).await.body;
    for name in [
        "tuili_queue_depth 0",
        "tuili_running_sequences 0",
        "tuili_kv_blocks_used",
        "tuili_kv_blocks_free",
        "tuili_kv_local_blocks_used 0",
        "tuili_prefix_cache_hit_rate",
        "tuili_prompt_tokens_total",
        "tuili_generated_tokens_total",
        "tuili_time_to_first_token_seconds_bucket{le=\"+Inf\"}",
        "tuili_inter_token_latency_seconds_count",
        "tuili_requests_total{status=\"200\"}",
        "tuili_requests_total{status=\"404\"} 1",
        "tuili_requests_total{status=\"400\"} 2",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
    let generated: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tuili_generated_tokens_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(generated >= 3);
}

#[tokio::test]
async fn several_prompts_give_prompt_major_choices() {
    let Some(s) = ready("several_prompts_give_prompt_major_choices") else {
        return;
    };
    let body = json!({"prompt": ["Hello", "The sky is"], "n": 2, "max_tokens": 5,
                      "temperature": 0, "ignore_eos": true});
    let v = post(&s, "/v1/completions", &body).await.json();
    let texts: Vec<&str> = v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 4);
    let alone =
        |p: &str| json!({"prompt": p, "max_tokens": 5, "temperature": 0, "ignore_eos": true});
    let a = post(&s, "/v1/completions", &alone("Hello")).await.json();
    let b = post(&s, "/v1/completions", &alone("The sky is"))
        .await
        .json();
    // Choice index = prompt index × n + sample index.
    assert_eq!(texts[0], a["choices"][0]["text"]);
    assert_eq!(texts[1], a["choices"][0]["text"]);
    assert_eq!(texts[2], b["choices"][0]["text"]);
    assert_eq!(texts[3], b["choices"][0]["text"]);
    let prompts = a["usage"]["prompt_tokens"].as_u64().unwrap()
        + b["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(v["usage"]["prompt_tokens"].as_u64().unwrap(), prompts);
    assert_eq!(v["usage"]["completion_tokens"], 20);
}
