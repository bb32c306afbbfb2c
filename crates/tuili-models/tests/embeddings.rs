//! Embeddings from the final hidden states against llama.cpp's (`llama-cpp-python` with
//! `embedding=True`) on SmolLM2: mean and last-token pooling, normalized, on the same token
//! ids, cosine ≥ 0.999.

use std::sync::Arc;

use tuili_gguf::GgufFile;
use tuili_models::embedding::{pool, Pooling};
use tuili_models::Model;

const SCRIPT: &str = r#"
import json, sys, llama_cpp
texts = json.loads(sys.argv[2])
out = []
for pooling in (llama_cpp.LLAMA_POOLING_TYPE_MEAN, llama_cpp.LLAMA_POOLING_TYPE_LAST):
    m = llama_cpp.Llama(sys.argv[1], embedding=True, pooling_type=pooling, n_ctx=512, verbose=False)
    out.append([{"tokens": m.tokenize(t.encode(), add_bos=True, special=False),
                 "embedding": m.embed(t, normalize=True)} for t in texts])
print(json.dumps(out))
"#;

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x) * y).sum();
    let na: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn pooled_hidden_states_match_llama_cpp_embeddings() {
    let Some(path) = tuili_testkit::model("smol.gguf") else {
        return;
    };
    let Some(python) = tuili_testkit::llamacpp_python("llama_cpp") else {
        return;
    };
    let texts = [
        "The quick brown fox jumps over the lazy dog.",
        "Embeddings turn text into vectors.",
        "a",
        "def add(a, b):\n    return a + b\n",
    ];
    let out = std::process::Command::new(python)
        .args(["-c", SCRIPT, path.to_str().unwrap()])
        .arg(serde_json::to_string(&texts).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let model = Model::load(&Arc::new(GgufFile::open(&path).unwrap())).unwrap();
    let width = model.config().dim;
    for (k, pooling) in [Pooling::Mean, Pooling::Last].into_iter().enumerate() {
        for (i, r) in reference[k].as_array().unwrap().iter().enumerate() {
            let tokens: Vec<u32> = serde_json::from_value(r["tokens"].clone()).unwrap();
            let want: Vec<f64> = serde_json::from_value(r["embedding"].clone()).unwrap();
            let hidden = model.hidden_states(&tokens).unwrap();
            assert_eq!(hidden.len(), tokens.len() * width);
            let got = pool(&hidden, width, pooling);
            let c = cosine(&got, &want);
            eprintln!(
                "{pooling:?} text {i} ({} tokens): cosine {c:.6}",
                tokens.len()
            );
            assert!(c >= 0.999, "{pooling:?} text {i}: cosine {c}");
        }
    }
}
