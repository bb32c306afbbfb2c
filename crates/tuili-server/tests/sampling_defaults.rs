//! The model file's sampling recommendations (`general.sampling.*`) are the defaults of a
//! request: a request without `temperature` samples at the model's, one with it at its own.
//! The model here is the default one with `general.sampling.temp = 0` added (greedy), so
//! which temperature ran shows in whether different seeds give different texts.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use tuili_gguf::{GgufFile, GgufWriter, Value as Meta};
use tuili_models::Model;
use tuili_server::AppState;

/// `src` with `keys` added to its metadata, loaded.
fn with_keys(src: &GgufFile, keys: &[(&str, Meta)]) -> Smol {
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        w.add(k.clone(), v.clone()).expect("copy a key");
    }
    for (k, v) in keys {
        w.add(*k, v.clone()).expect("add a key");
    }
    for t in src.tensors() {
        w.add_tensor(t.name.clone(), &t.dims, t.ty, src.tensor_data(t).to_vec())
            .expect("copy a tensor");
    }
    let file = Arc::new(GgufFile::from_bytes(w.to_bytes()).expect("read back"));
    let model = Arc::new(Model::load(&file).expect("load"));
    Smol {
        model,
        tokenizer: smol("with_keys").expect("loaded").tokenizer.clone(),
        file,
    }
}

fn texts(v: &Value) -> Vec<String> {
    v["choices"]
        .as_array()
        .expect("choices")
        .iter()
        .map(|c| c["text"].as_str().expect("text").to_string())
        .collect()
}

async fn completions(s: &AppState, extra: Value) -> Vec<String> {
    let mut body = json!({"prompt": "My favourite animal is", "max_tokens": 10, "n": 4,
                          "seed": 7, "ignore_eos": true});
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    let r = post(s, "/v1/completions", &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    texts(&r.json())
}

#[tokio::test]
async fn a_request_without_temperature_samples_at_the_models() {
    let Some(smol) = smol("a_request_without_temperature_samples_at_the_models") else {
        return;
    };
    let greedy = with_keys(&smol.file, &[("general.sampling.temp", Meta::F32(0.0))]);
    assert_eq!(greedy.model.config().sampling.temperature, Some(0.0));
    let s = state(&greedy, engine_config(), server_config());

    // No temperature: the model's 0, so four seeds give one text, the greedy one.
    let left_out = completions(&s, json!({})).await;
    let explicit_greedy = completions(&s, json!({"temperature": 0})).await;
    assert!(left_out.iter().all(|t| *t == left_out[0]), "{left_out:?}");
    assert_eq!(left_out, explicit_greedy);

    // The request's own temperature wins: four seeds, not all the same text.
    let hot = completions(&s, json!({"temperature": 1.5})).await;
    assert!(hot.iter().any(|t| *t != hot[0]), "{hot:?}");

    // Without the key, a request without temperature gets OpenAI's 1: not greedy.
    let plain = state(smol, engine_config(), server_config());
    let openai = completions(&plain, json!({})).await;
    assert!(openai.iter().any(|t| *t != openai[0]), "{openai:?}");
}
