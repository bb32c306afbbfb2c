//! Opens the real development models when `TUILI_TEST_MODELS_DIR` is set (CI sets it);
//! numbers were checked against the Python `gguf` package's reader.

use std::path::PathBuf;

use tuili_gguf::{GgmlType, GgufFile};

fn model(file: &str) -> Option<PathBuf> {
    tuili_testkit::model(file)
}

/// Every tensor lies inside the file and is tiled without overlap.
fn check_tensors(f: &GgufFile) {
    let mut total = 0u64;
    for t in f.tensors() {
        let data = f.tensor_data(t);
        assert_eq!(data.len() as u64, t.n_bytes, "{}", t.name);
        assert_eq!(
            Some(t.n_bytes),
            t.ty.bytes_for(t.n_elements()),
            "{}",
            t.name
        );
        total += t.n_bytes;
    }
    assert!(f.data_offset() + total <= f.data().len() as u64);
}

#[test]
fn smol_llama() {
    let Some(path) = model("smol.gguf") else {
        return;
    };
    let f = GgufFile::open(&path).expect("smol.gguf opens");
    assert_eq!(f.version(), 3);
    assert_eq!(f.tensors().len(), 272);
    assert_eq!(f.metadata().len(), 33);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.data_offset(), 1_785_664);
    assert_eq!(f.get_str("general.architecture").expect("arch"), "llama");
    assert_eq!(f.get_u64("llama.block_count").expect("blocks"), 30);
    assert_eq!(f.get_u64("llama.embedding_length").expect("embd"), 576);
    let t = f.tensor("token_embd.weight").expect("token_embd.weight");
    assert_eq!(t.dims, vec![576, 49152]);
    assert_eq!(t.ty, GgmlType::Q8_0);
    assert_eq!((t.row_len(), t.rows()), (576, 49152));
    assert_eq!(t.offset, 0);
    let tokens = f.get_str_array("tokenizer.ggml.tokens").expect("tokens");
    assert_eq!(tokens.len(), 49152);
    assert_eq!(
        f.get_i32_array("tokenizer.ggml.token_type")
            .expect("types")
            .len(),
        49152
    );
    assert!(
        f.get_f32("llama.attention.layer_norm_rms_epsilon")
            .expect("eps")
            > 0.0
    );
    assert!(f.get_bool("tokenizer.ggml.add_bos_token").is_ok());
    let counts = |ty| f.tensors().iter().filter(|t| t.ty == ty).count();
    assert_eq!(
        (
            counts(GgmlType::Q4_1),
            counts(GgmlType::F32),
            counts(GgmlType::Q8_0)
        ),
        (210, 61, 1)
    );
    check_tensors(&f);
}

#[test]
fn qwen_mixed_quants() {
    let Some(path) = model("qwen.gguf") else {
        return;
    };
    let f = GgufFile::open(&path).expect("qwen.gguf opens");
    assert_eq!(f.tensors().len(), 291);
    assert_eq!(f.get_str("general.architecture").expect("arch"), "qwen2");
    let t = f.tensor("token_embd.weight").expect("token_embd.weight");
    assert_eq!(
        (t.dims.as_slice(), t.ty),
        (&[896, 151936][..], GgmlType::Q5_0)
    );
    let counts = |ty| f.tensors().iter().filter(|t| t.ty == ty).count();
    assert_eq!(counts(GgmlType::Q5_0), 133);
    assert_eq!(counts(GgmlType::Q6_K), 12);
    assert_eq!(counts(GgmlType::Q4_K), 12);
    assert_eq!(counts(GgmlType::Q8_0), 13);
    check_tensors(&f);
}

/// Gemma-3-270M: the keys the `gemma3` forward pass reads, and the ones it must default
/// because this file lacks them (checked with the Python `gguf` package's reader).
#[test]
fn gemma3_keys_and_tensors() {
    let Some(path) = model("gemma.gguf") else {
        return;
    };
    let f = GgufFile::open(&path).expect("gemma.gguf opens");
    assert_eq!(f.tensors().len(), 236);
    assert_eq!(f.metadata().len(), 33);
    assert_eq!(f.get_str("general.architecture").expect("arch"), "gemma3");
    for (key, want) in [
        ("gemma3.block_count", 18),
        ("gemma3.embedding_length", 640),
        ("gemma3.feed_forward_length", 2048),
        ("gemma3.attention.head_count", 4),
        ("gemma3.attention.head_count_kv", 1),
        ("gemma3.attention.key_length", 256),
        ("gemma3.attention.value_length", 256),
        ("gemma3.attention.sliding_window", 512),
        ("gemma3.context_length", 32768),
    ] {
        assert_eq!(f.get_u64(key).expect(key), want, "{key}");
    }
    assert_eq!(f.get_f32("gemma3.rope.freq_base").expect("base"), 1e6);
    assert_eq!(
        f.get_f32("gemma3.attention.layer_norm_rms_epsilon")
            .expect("eps"),
        1e-6
    );
    // Absent: llama.cpp then uses 10000 for the local layers' RoPE base, the period-6
    // sliding pattern, no RoPE scaling and no final softcap; and the file has no chat template.
    for key in [
        "gemma3.rope.freq_base_swa",
        "gemma3.attention.sliding_window_pattern",
        "gemma3.rope.scaling.factor",
        "gemma3.final_logit_softcapping",
        "tokenizer.chat_template",
    ] {
        assert!(f.get(key).is_none(), "{key}");
    }
    let t = f.tensor("token_embd.weight").expect("token_embd.weight");
    assert_eq!(
        (t.dims.as_slice(), t.ty),
        (&[640, 262144][..], GgmlType::Q8_0)
    );
    assert!(f.tensor("output.weight").is_none(), "the output is tied");
    let q = f.tensor("blk.0.attn_q.weight").expect("attn_q");
    assert_eq!(q.dims, vec![640, 1024]);
    for name in [
        "blk.0.attn_q_norm.weight",
        "blk.0.attn_k_norm.weight",
        "blk.0.post_attention_norm.weight",
        "blk.0.post_ffw_norm.weight",
    ] {
        assert_eq!(f.tensor(name).expect(name).ty, GgmlType::F32, "{name}");
    }
    let counts = |ty| f.tensors().iter().filter(|t| t.ty == ty).count();
    assert_eq!(
        [
            GgmlType::F32,
            GgmlType::Q5_0,
            GgmlType::Q4_K,
            GgmlType::Q8_0,
            GgmlType::Q6_K
        ]
        .map(counts),
        [109, 81, 27, 10, 9]
    );
    check_tensors(&f);
}
