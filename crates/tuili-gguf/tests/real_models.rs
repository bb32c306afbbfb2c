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
