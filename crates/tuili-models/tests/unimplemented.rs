//! A model file that asks for math the forward pass does not do is refused by name, never
//! run with plain math: RoPE scaling, a sliding window, soft-capping, experts, partial
//! RoPE, any tensor it does not read. Llama 3.x RoPE frequency factors (`rope_freqs`) are
//! applied. Files without such things still load.

use std::sync::Arc;

use tuili_gguf::{GgmlType, GgufFile, GgufWriter, Value};
use tuili_models::synthetic::{write_synthetic, SyntheticSpec};
use tuili_models::{Arch, Model, ModelError};

/// The tiny random model of `arch` with `extra_keys` set and `extra_tensors` (F32
/// vectors) added.
fn tiny_with(
    arch: Arch,
    extra_keys: &[(&str, Value)],
    extra_tensors: &[(&str, Vec<f32>)],
) -> Arc<GgufFile> {
    let spec = SyntheticSpec::tiny(arch, GgmlType::F32);
    let base = GgufFile::from_bytes(write_synthetic(&spec).unwrap()).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in base.metadata() {
        w.add(k.clone(), v.clone()).unwrap();
    }
    for (k, v) in extra_keys {
        w.add(*k, v.clone()).unwrap();
    }
    for t in base.tensors() {
        w.add_tensor(&t.name, &t.dims, t.ty, base.tensor_data(t).to_vec())
            .unwrap();
    }
    for (name, values) in extra_tensors {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.add_tensor(*name, &[values.len() as u64], GgmlType::F32, data)
            .unwrap();
    }
    Arc::new(GgufFile::from_bytes(w.to_bytes()).unwrap())
}

fn tiny_llama_with(keys: &[(&str, Value)], tensors: &[(&str, Vec<f32>)]) -> Arc<GgufFile> {
    tiny_with(Arch::Llama, keys, tensors)
}

/// `n` factors 1, 2, 3, ...
fn ramp(n: usize) -> Vec<f32> {
    (0..n).map(|i| 1.0 + i as f32).collect()
}

fn refusal(file: &Arc<GgufFile>) -> String {
    match Model::load(file) {
        Err(e @ ModelError::Unimplemented(_)) => e.to_string(),
        Err(e) => panic!("expected a refusal, got another error: {e}"),
        Ok(_) => panic!("the file loaded"),
    }
}

/// Logits of a fixed prompt.
fn logits(file: &Arc<GgufFile>) -> Vec<f32> {
    let model = Model::load(file).expect("load");
    let tokens: Vec<u32> = (0..24).map(|i| (i * 37 + 5) % 512).collect();
    let mut cache = model.new_cache(64);
    model.forward(&tokens, &mut cache, 0).expect("forward")
}

#[test]
fn the_plain_file_loads() {
    Model::load(&tiny_llama_with(&[], &[])).expect("load");
    // Keys that say what the math already is are fine.
    let same = [
        ("llama.rope.dimension_count", Value::U32(64)),
        ("llama.rope.scaling.type", Value::String("none".into())),
        ("llama.attention.sliding_window", Value::U32(256)),
        ("llama.expert_count", Value::U32(0)),
    ];
    Model::load(&tiny_llama_with(&same, &[])).expect("load");
    // Old files' per-layer RoPE frequencies change nothing.
    Model::load(&tiny_llama_with(&[], &[("blk.0.attn_rot_embd", ramp(32))])).expect("load");
}

#[test]
fn llama3_rope_frequency_factors_are_applied() {
    let plain = logits(&tiny_llama_with(&[], &[]));
    // Factors of 1 change nothing, bit for bit.
    let ones = logits(&tiny_llama_with(
        &[],
        &[("rope_freqs.weight", vec![1.0; 32])],
    ));
    assert!(plain
        .iter()
        .zip(&ones)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    // Factors above 1 slow the lower frequencies down: other logits.
    let scaled = logits(&tiny_llama_with(&[], &[("rope_freqs.weight", ramp(32))]));
    let moved = plain.iter().zip(&scaled).filter(|(a, b)| a != b).count();
    assert!(moved > plain.len() / 2, "only {moved} logits moved");
    // A factor that is not a positive number is an error naming it.
    let mut bad = vec![1.0; 32];
    bad[5] = 0.0;
    match Model::load(&tiny_llama_with(&[], &[("rope_freqs.weight", bad)])) {
        Err(ModelError::BadConfig(msg)) => {
            assert!(msg.contains("rope_freqs.weight[5] is 0"), "{msg}")
        }
        other => panic!("expected a bad-config error, got {:?}", other.err()),
    }
    // llama.cpp applies them to `llama` only: elsewhere the file is refused.
    let msg = refusal(&tiny_with(
        Arch::Qwen2,
        &[],
        &[("rope_freqs.weight", ramp(32))],
    ));
    assert!(msg.contains("rope_freqs.weight"), "{msg}");
}

/// Linear RoPE scaling (llama.cpp's default type) divides every frequency by the factor:
/// the bits of frequency factors all equal to it.
#[test]
fn linear_rope_scaling_is_applied() {
    let plain = logits(&tiny_llama_with(&[], &[]));
    let by_key = logits(&tiny_llama_with(
        &[("llama.rope.scaling.factor", Value::F32(8.0))],
        &[],
    ));
    let typed = logits(&tiny_llama_with(
        &[
            ("llama.rope.scaling.type", Value::String("linear".into())),
            ("llama.rope.scaling.factor", Value::F32(8.0)),
        ],
        &[],
    ));
    let by_factors = logits(&tiny_llama_with(
        &[],
        &[("rope_freqs.weight", vec![8.0; 32])],
    ));
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&by_key), bits(&by_factors));
    assert_eq!(bits(&typed), bits(&by_factors));
    assert_ne!(bits(&plain), bits(&by_key));
}

#[test]
fn unused_tensors_are_refused_by_name() {
    for (name, what) in [
        ("blk.1.attn_q_norm.weight", "QK-norm"),
        ("blk.0.post_attention_norm.weight", "post-norms"),
        ("blk.0.ffn_gate_inp.weight", "experts"),
        ("blk.0.something_new", "does not use"),
    ] {
        let msg = refusal(&tiny_llama_with(&[], &[(name, ramp(64))]));
        assert!(msg.contains(name) && msg.contains(what), "{msg}");
    }
}

#[test]
fn partial_rotary_dims_are_applied_and_checked() {
    // RoPE over 32 of the 64 dimensions of each head: positions still matter, but the
    // logits differ from RoPE over the whole head.
    let full = logits(&tiny_llama_with(&[], &[]));
    let partial = logits(&tiny_llama_with(
        &[("llama.rope.dimension_count", Value::U32(32))],
        &[],
    ));
    assert!(full.iter().zip(&partial).any(|(a, b)| (a - b).abs() > 1e-3));
    for bad in [0, 33, 66] {
        let file = tiny_llama_with(&[("llama.rope.dimension_count", Value::U32(bad))], &[]);
        match Model::load(&file) {
            Err(e @ ModelError::BadConfig(_)) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("llama.rope.dimension_count") && msg.contains("2..=64"),
                    "{msg}"
                );
            }
            Err(e) => panic!("{bad}: another error: {e}"),
            Ok(_) => panic!("{bad}: the file loaded"),
        }
    }
}

#[test]
fn metadata_that_changes_the_math_is_refused_by_key() {
    let cases: [(&str, Value, &str); 10] = [
        (
            "llama.attention.temperature_scale",
            Value::F32(0.1),
            "attention temperature",
        ),
        (
            "llama.rope.scaling.type",
            Value::String("longrope".into()),
            "RoPE scaling 'longrope'",
        ),
        (
            "llama.attention.sliding_window",
            Value::U32(64),
            "sliding window of 64",
        ),
        (
            "llama.final_logit_softcapping",
            Value::F32(30.0),
            "soft-capping",
        ),
        ("llama.expert_count", Value::U32(8), "mixture of 8 experts"),
        (
            "llama.attention.layer_norm_epsilon",
            Value::F32(1e-5),
            "LayerNorm",
        ),
        (
            "llama.embedding_scale",
            Value::F32(12.0),
            "multiplier of 12",
        ),
        (
            "llama.attention.key_length_swa",
            Value::U32(128),
            "heads of 128",
        ),
        (
            "llama.attention.value_length_swa",
            Value::U32(32),
            "heads of 32",
        ),
        (
            "llama.rope.dimension_count_swa",
            Value::U32(32),
            "rotating 32",
        ),
    ];
    for (key, value, what) in cases {
        let msg = refusal(&tiny_llama_with(&[(key, value)], &[]));
        assert!(msg.contains(key) && msg.contains(what), "{key}: {msg}");
    }
}
