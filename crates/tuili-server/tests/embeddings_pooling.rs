//! `/v1/embeddings` pools as the model file says (`{arch}.pooling_type`), as llama.cpp
//! reads it: a copy of Qwen2.5-Coder whose file asks for last-token pooling is embedded as
//! llama.cpp embeds it with its own default (the file's), at cosine >= 0.999; a request's
//! `pooling` overrides the file (checked with `cls` against llama.cpp's cls); a file that
//! names none gets llama.cpp's default, `none`, which is a 400 as in llama.cpp's server.

mod common;

use std::path::Path;
use std::sync::Arc;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use tuili_engine::start_engine;
use tuili_gguf::{GgufFile, GgufWriter};
use tuili_models::embedding::PoolingType;
use tuili_models::Model;
use tuili_server::AppState;
use tuili_tokenizer::Tokenizer;

const TEXTS: [&str; 3] = [
    "The quick brown fox jumps over the lazy dog.",
    "Embeddings turn text into vectors.",
    "def add(a, b):\n    return a + b\n",
];

/// llama.cpp's embeddings of TEXTS from the file at argv[1], with pooling argv[3] (-1: the
/// file's own).
const REFERENCE: &str = r#"
import json, sys, llama_cpp
m = llama_cpp.Llama(sys.argv[1], embedding=True, pooling_type=int(sys.argv[3]), n_ctx=512,
                    verbose=False)
print(json.dumps([m.embed(t, normalize=True) for t in json.loads(sys.argv[2])]))
"#;

/// A copy of `file` with `key` set to `value`.
fn with_key(file: &GgufFile, key: &str, value: tuili_gguf::Value) -> GgufWriter {
    let mut out = GgufWriter::copy_of(file).unwrap();
    out.add(key, value).unwrap();
    out
}

fn serve(file: &Arc<GgufFile>) -> AppState {
    let model = Arc::new(Model::load(file).expect("load"));
    let tok = Arc::new(Tokenizer::from_gguf(file).expect("tokenizer"));
    let engine = start_engine(model, tok, engine_config()).expect("engine");
    AppState::with_engine(server_config(), engine, None).expect("state")
}

fn llama_cpp(python: &Path, path: &Path, pooling: i32) -> Vec<Vec<f64>> {
    let out = std::process::Command::new(python)
        .args(["-c", REFERENCE, path.to_str().unwrap()])
        .arg(serde_json::to_string(&TEXTS).unwrap())
        .arg(pooling.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn embed(s: &AppState, extra: Value) -> Vec<Vec<f64>> {
    let mut body = json!({"input": TEXTS});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        body[k] = v;
    }
    let r = post(s, "/v1/embeddings", &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| serde_json::from_value(d["embedding"].clone()).unwrap())
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

#[tokio::test]
async fn pooling_follows_the_file_as_llama_cpp_reads_it() {
    let Some(path) = tuili_testkit::model("qwen.gguf") else {
        return;
    };
    let original = GgufFile::open(&path).unwrap();
    assert_eq!(PoolingType::from_gguf(&original).unwrap(), None);
    // No pooling_type: mean (llama.cpp would take none and refuse); a request's own
    // pooling is used, and none is refused.
    let plain = serve(&Arc::new(original));
    let r = post(
        &plain,
        "/v1/embeddings",
        &json!({"input": "hi", "pooling": "none"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.error()["param"], "pooling");
    let mean = embed(&plain, json!({"pooling": "mean"})).await;
    assert_eq!(embed(&plain, json!({})).await, mean, "the default is mean");
    drop(plain);

    // The same weights, with a file that asks for last-token pooling.
    let original = GgufFile::open(&path).unwrap();
    let last = with_key(&original, "qwen2.pooling_type", tuili_gguf::Value::U32(3));
    drop(original);
    let dir = std::env::temp_dir().join(format!("tuili-pooling-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("qwen-last.gguf");
    last.write_file(&copy).unwrap();
    drop(last);
    let file = Arc::new(GgufFile::open(&copy).unwrap());
    assert_eq!(
        PoolingType::from_gguf(&file).unwrap(),
        Some(PoolingType::Last)
    );
    let s = serve(&file);
    let got = embed(&s, json!({})).await;
    let cls = embed(&s, json!({"pooling": "cls"})).await;
    // Last-token and mean pooling are different vectors.
    assert!(cosine(&got[0], &mean[0]) < 0.99);

    match tuili_testkit::llamacpp_python("llama_cpp") {
        Some(python) => {
            for (pooling, ours, theirs) in [
                ("the file's (last)", &got, llama_cpp(&python, &copy, -1)),
                ("cls", &cls, llama_cpp(&python, &copy, 2)),
            ] {
                for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                    let c = cosine(a, b);
                    eprintln!("{pooling} text {i}: cosine {c:.6}");
                    assert!(c >= 0.999, "{pooling} text {i}: cosine {c}");
                }
            }
        }
        None => tuili_testkit::skip("pooling against llama.cpp: llama-cpp-python not found"),
    }
    let _ = std::fs::remove_dir_all(&dir);

    // A pooling_type outside llama.cpp's values is a load error naming the key.
    let bytes = with_key(&file, "qwen2.pooling_type", tuili_gguf::Value::I32(7)).to_bytes();
    let e = PoolingType::from_gguf(&GgufFile::from_bytes(bytes).unwrap()).unwrap_err();
    assert!(e.to_string().contains("qwen2.pooling_type"), "{e}");
}
