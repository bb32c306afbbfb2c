//! The forward pass on small random models of every weight type: a batched prompt and
//! the same tokens fed one at a time must give the same logits (the GEMM path, the
//! dot-product path and the KV cache agree), and bad input gives clear errors.

use std::sync::Arc;

use tuili_gguf::{GgmlType, GgufFile};
use tuili_models::synthetic::{write_synthetic, SyntheticSpec};
use tuili_models::{Arch, Model, ModelError};

fn load(spec: &SyntheticSpec) -> Model {
    let bytes = write_synthetic(spec).expect("write model");
    let file = Arc::new(GgufFile::from_bytes(bytes).expect("read model"));
    Model::load(&file).expect("load model")
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn batched_prefill_equals_token_by_token_for_every_type() {
    let tokens: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % 512).collect();
    for arch in [Arch::Llama, Arch::Qwen2] {
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
        ] {
            let model = load(&SyntheticSpec::tiny(arch, ty));
            let vocab = model.config().vocab;
            let mut cache = model.new_cache(64);
            let batched = model.forward(&tokens, &mut cache, 0).unwrap();
            assert_eq!(batched.len(), tokens.len() * vocab);
            assert!(batched.iter().all(|v| v.is_finite()));

            let mut cache = model.new_cache(64);
            for (i, &t) in tokens.iter().enumerate() {
                let one = model.forward(&[t], &mut cache, 0).unwrap();
                let want = &batched[i * vocab..(i + 1) * vocab];
                let d = max_rel_diff(want, &one);
                assert!(d < 1e-4, "{arch:?} {ty}: token {i} differs by {d}");
            }
            // Logits are not degenerate: different positions differ.
            assert!(max_rel_diff(&batched[..vocab], &batched[vocab..2 * vocab]) > 1e-3);
        }
    }
}

#[test]
fn context_overflow_and_bad_tokens_are_errors() {
    let model = load(&SyntheticSpec::tiny(Arch::Llama, GgmlType::Q8_0));
    let mut cache = model.new_cache(8);
    let err = model.forward(&[1; 9], &mut cache, 0).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::ContextFull {
                capacity: 8,
                adding: 9,
                ..
            }
        ),
        "{err}"
    );
    let err = model.forward(&[1, 512], &mut cache, 0).unwrap_err();
    assert!(
        err.to_string().contains("512") && err.to_string().contains("vocabulary"),
        "{err}"
    );
    assert_eq!(cache.len(), 0, "a failed call must not advance the cache");
}

#[test]
fn wrong_tensor_shape_names_the_tensor() {
    let mut spec = SyntheticSpec::tiny(Arch::Llama, GgmlType::Q8_0);
    spec.n_kv_head = 4; // K/V written with 4 heads...
    let bytes = write_synthetic(&spec).unwrap();
    let file = GgufFile::from_bytes(bytes).unwrap();
    // ...but a file claiming 2 KV heads must be refused by shape, not read out of bounds.
    let mut w = tuili_gguf::GgufWriter::new();
    for (k, v) in file.metadata() {
        let v = if k == "llama.attention.head_count_kv" {
            tuili_gguf::Value::U32(2)
        } else {
            v.clone()
        };
        w.add(k.clone(), v).unwrap();
    }
    for t in file.tensors() {
        w.add_tensor(t.name.clone(), &t.dims, t.ty, file.tensor_data(t).to_vec())
            .unwrap();
    }
    let file = Arc::new(GgufFile::from_bytes(w.to_bytes()).unwrap());
    let err = Model::load(&file).err().expect("must fail");
    assert!(err.to_string().contains("blk.0.attn_k.weight"), "{err}");
}
