//! Hugging Face directories that contradict themselves: each is an error naming the file,
//! the field or tensor, and the value, never a panic. (Malformed safetensors files are
//! covered in crates/tuili-safetensors/tests/hostile.rs; whole tiny models per family in
//! crates/tuili-cli/tests/hf.rs.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use tuili_gguf::GgufFile;
use tuili_models::{hf, Model};

const DIM: usize = 8;
const FFN: usize = 16;
const VOCAB: usize = 12;

/// A safetensors file of F32 tensors, `(name, shape)`, data all 0.25.
fn safetensors(tensors: &[(String, Vec<usize>)], dtype: &str) -> Vec<u8> {
    let size = if dtype == "F32" { 4 } else { 2 };
    let mut header = serde_json::Map::new();
    let mut at = 0;
    for (name, shape) in tensors {
        let n = shape.iter().product::<usize>() * size;
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [at, at + n]}),
        );
        at += n;
    }
    let text = Value::Object(header).to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    let one: Vec<u8> = if dtype == "F32" {
        0.25f32.to_le_bytes().to_vec()
    } else {
        vec![0x80, 0x3e]
    };
    out.extend(one.iter().copied().cycle().take(at));
    out
}

fn llama_tensors() -> Vec<(String, Vec<usize>)> {
    let mut t = vec![
        ("model.embed_tokens.weight".to_string(), vec![VOCAB, DIM]),
        ("model.norm.weight".to_string(), vec![DIM]),
    ];
    let l = |s: &str| format!("model.layers.0.{s}");
    for (name, shape) in [
        ("input_layernorm.weight", vec![DIM]),
        ("self_attn.q_proj.weight", vec![DIM, DIM]),
        ("self_attn.k_proj.weight", vec![DIM, DIM]),
        ("self_attn.v_proj.weight", vec![DIM, DIM]),
        ("self_attn.o_proj.weight", vec![DIM, DIM]),
        ("post_attention_layernorm.weight", vec![DIM]),
        ("mlp.gate_proj.weight", vec![FFN, DIM]),
        ("mlp.up_proj.weight", vec![FFN, DIM]),
        ("mlp.down_proj.weight", vec![DIM, FFN]),
    ] {
        t.push((l(name), shape));
    }
    t
}

fn llama_config() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"], "hidden_size": DIM, "intermediate_size": FFN,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "vocab_size": VOCAB,
        "tie_word_embeddings": true, "torch_dtype": "float32"
    })
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(name: &str, config: &str, tensors: &[(String, Vec<usize>)], dtype: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("tuili-hf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("config.json"), config).unwrap();
    std::fs::write(d.join("model.safetensors"), safetensors(tensors, dtype)).unwrap();
    Dir(d)
}

fn load(d: &Path) -> Result<Model, String> {
    load_inner(d)
}

/// The error of loading `d`, which must fail.
fn load_err(d: &Path) -> String {
    match load_inner(d) {
        Ok(_) => panic!("{} loaded", d.display()),
        Err(e) => e,
    }
}

fn load_inner(d: &Path) -> Result<Model, String> {
    let w = hf::to_gguf(d).map_err(|e| e.to_string())?;
    let file = Arc::new(GgufFile::from_bytes(w.to_bytes()).unwrap());
    Model::load(&file).map_err(|e| e.to_string())
}

#[test]
fn a_consistent_directory_loads_and_runs() {
    let d = dir("ok", &llama_config().to_string(), &llama_tensors(), "F32");
    assert!(hf::is_hf_dir(&d.0));
    let m = load(&d.0).map_err(|e| e.to_string()).unwrap();
    assert_eq!((m.config().dim, m.config().vocab), (DIM, VOCAB));
    let mut cache = m.new_cache(8);
    assert_eq!(m.forward(&[1, 2], &mut cache, 0).unwrap().len(), 2 * VOCAB);
}

#[test]
fn a_dtype_that_the_config_contradicts() {
    let mut cfg = llama_config();
    cfg["torch_dtype"] = json!("float32");
    let d = dir("dtype", &cfg.to_string(), &llama_tensors(), "BF16");
    let e = load_err(&d.0);
    assert!(
        e.contains("is BF16, but config.json torch_dtype says F32"),
        "{e}"
    );
}

#[test]
fn shapes_that_contradict_the_config() {
    let mut t = llama_tensors();
    t[3].1 = vec![DIM - 4, DIM]; // q_proj with heads of 2, not 4
    let d = dir("shape", &llama_config().to_string(), &t, "F32");
    let e = load_err(&d.0);
    assert!(
        e.contains("attn_q.weight' has shape [8, 4], expected [8, 8]"),
        "{e}"
    );
    t[3].1 = vec![DIM - 2, DIM]; // heads of 3 rows cannot hold RoPE pairs
    let d = dir("shape1", &llama_config().to_string(), &t, "F32");
    let e = load_err(&d.0);
    assert!(
        e.contains(
            "tensor 'model.layers.0.self_attn.q_proj.weight' (blk.0.attn_q.weight) has 6 rows"
        ),
        "{e}"
    );

    let mut cfg = llama_config();
    cfg["hidden_size"] = json!(16);
    let d = dir("shape2", &cfg.to_string(), &llama_tensors(), "F32");
    let e = load_err(&d.0);
    assert!(e.contains("expected [16"), "{e}");
}

#[test]
fn config_errors_name_the_key() {
    let case = |name: &str, edit: &dyn Fn(&mut Value), want: &str| {
        let mut cfg = llama_config();
        edit(&mut cfg);
        let d = dir(name, &cfg.to_string(), &llama_tensors(), "F32");
        let e = load_err(&d.0);
        assert!(e.contains(want), "{name}: {e}");
    };
    case(
        "noarch",
        &|c| c["architectures"] = json!(["BertModel"]),
        "BertModel (config.json architectures; supported: LlamaForCausalLM",
    );
    case(
        "nodim",
        &|c| {
            c.as_object_mut().unwrap().remove("hidden_size");
        },
        "config.json: hidden_size is missing",
    );
    case(
        "zero",
        &|c| c["num_hidden_layers"] = json!(0),
        "num_hidden_layers is 0, not a count",
    );
    case(
        "huge",
        &|c| c["hidden_size"] = json!(1u64 << 40),
        "not a count in 1..=16777216",
    );
    case(
        "rope",
        &|c| c["rope_scaling"] = json!({"rope_type": "longrope"}),
        "rope_scaling type 'longrope'",
    );
    case(
        "eps",
        &|c| c["rms_norm_eps"] = json!("small"),
        "rms_norm_eps is \"small\", not a number",
    );
}

#[test]
fn a_tensor_without_a_counterpart_is_refused() {
    let mut t = llama_tensors();
    t.push(("model.layers.0.self_attn.rel_pos.weight".into(), vec![DIM]));
    let d = dir("extra", &llama_config().to_string(), &t, "F32");
    let e = load_err(&d.0);
    assert!(
        e.contains("'model.layers.0.self_attn.rel_pos.weight'"),
        "{e}"
    );
}

#[test]
fn a_deeply_nested_config_is_an_error() {
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let d = dir("deep", &deep, &llama_tensors(), "F32");
    let e = load_err(&d.0);
    assert!(
        e.contains("config.json: not valid JSON: recursion limit exceeded"),
        "{e}"
    );
}
