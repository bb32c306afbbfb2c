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

/// A safetensors file of `(name, shape)` tensors, all of `dtype`.
fn safetensors(tensors: &[(String, Vec<usize>)], dtype: &str) -> Vec<u8> {
    let typed: Vec<_> = tensors
        .iter()
        .map(|(n, s)| (n.clone(), s.clone(), dtype))
        .collect();
    typed_safetensors(&typed)
}

/// A safetensors file of `(name, shape, dtype)` tensors: floats all 0.25, bytes (U8) all
/// 0x77 (MXFP4 codes of 6.0, scales of 2^-8).
fn typed_safetensors(tensors: &[(String, Vec<usize>, &str)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, dtype) in tensors {
        let one: Vec<u8> = match *dtype {
            "F32" => 0.25f32.to_le_bytes().to_vec(),
            "U8" => vec![0x77],
            _ => vec![0x80, 0x3e],
        };
        let n = shape.iter().product::<usize>() * one.len();
        let at = data.len();
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [at, at + n]}),
        );
        data.extend(one.iter().copied().cycle().take(n));
    }
    let text = Value::Object(header).to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend(data);
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
    dir_of(name, config, safetensors(tensors, dtype))
}

fn dir_of(name: &str, config: &str, safetensors: Vec<u8>) -> Dir {
    let d = std::env::temp_dir().join(format!("tuili-hf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("config.json"), config).unwrap();
    std::fs::write(d.join("model.safetensors"), safetensors).unwrap();
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
    let file = Arc::new(convert(d)?);
    Model::load(&file).map_err(|e| e.to_string())
}

fn convert(d: &Path) -> Result<GgufFile, String> {
    let w = hf::to_gguf(d).map_err(|e| e.to_string())?;
    Ok(GgufFile::from_bytes(w.to_bytes()).unwrap())
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

// gpt-oss: 2 layers (sliding, full), hidden 32 (one MXFP4 block a row), 2 heads of 16 over
// 1 KV head, 2 experts of 32, top 1.
const OSS_EXPERTS: usize = 2;
const OSS_DIM: usize = 32;
const OSS_FFN: usize = 32;

fn gpt_oss_config() -> Value {
    json!({
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
        "hidden_size": OSS_DIM, "intermediate_size": OSS_FFN, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "vocab_size": VOCAB,
        "rope_theta": 150000.0, "num_local_experts": OSS_EXPERTS, "experts_per_token": 1,
        "sliding_window": 4, "layer_types": ["sliding_attention", "full_attention"], "swiglu_limit": 7.0,
        "attention_bias": true, "tie_word_embeddings": false, "torch_dtype": "float32",
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0,
                         "beta_slow": 1.0, "original_max_position_embeddings": 16,
                         "truncate": false},
        "quantization_config": {"quant_method": "mxfp4"}
    })
}

/// `(name, shape, dtype)` of each tensor of a checkpoint.
type Typed = Vec<(String, Vec<usize>, &'static str)>;

/// A two-layer gpt-oss checkpoint; `mxfp4`: experts as blocks and scales, else unquantized.
fn gpt_oss_tensors(mxfp4: bool) -> Typed {
    let (e, d, f) = (OSS_EXPERTS, OSS_DIM, OSS_FFN);
    let mut t: Vec<(String, Vec<usize>, &str)> = vec![
        ("model.embed_tokens.weight".into(), vec![VOCAB, d], "F32"),
        ("lm_head.weight".into(), vec![VOCAB, d], "F32"),
        ("model.norm.weight".into(), vec![d], "F32"),
    ];
    let mut experts = if mxfp4 {
        vec![
            ("gate_up_proj_blocks", vec![e, 2 * f, d / 32, 16], "U8"),
            ("gate_up_proj_scales", vec![e, 2 * f, d / 32], "U8"),
            ("down_proj_blocks", vec![e, d, f / 32, 16], "U8"),
            ("down_proj_scales", vec![e, d, f / 32], "U8"),
        ]
    } else {
        vec![
            ("gate_up_proj", vec![e, d, 2 * f], "F32"),
            ("down_proj", vec![e, f, d], "F32"),
        ]
    };
    experts.push(("gate_up_proj_bias", vec![e, 2 * f], "F32"));
    experts.push(("down_proj_bias", vec![e, d], "F32"));
    for i in 0..2 {
        let l = |s: &str| format!("model.layers.{i}.{s}");
        for (name, shape) in [
            ("input_layernorm.weight", vec![d]),
            ("self_attn.q_proj.weight", vec![d, d]),
            ("self_attn.q_proj.bias", vec![d]),
            ("self_attn.k_proj.weight", vec![16, d]),
            ("self_attn.k_proj.bias", vec![16]),
            ("self_attn.v_proj.weight", vec![16, d]),
            ("self_attn.v_proj.bias", vec![16]),
            ("self_attn.o_proj.weight", vec![d, d]),
            ("self_attn.o_proj.bias", vec![d]),
            ("self_attn.sinks", vec![2]),
            ("post_attention_layernorm.weight", vec![d]),
            ("mlp.router.weight", vec![e, d]),
            ("mlp.router.bias", vec![e]),
        ] {
            t.push((l(name), shape, "F32"));
        }
        for (name, shape, ty) in &experts {
            t.push((l(&format!("mlp.experts.{name}")), shape.clone(), *ty));
        }
    }
    t
}

fn gpt_oss_dir(name: &str, cfg: &Value, tensors: &[(String, Vec<usize>, &str)]) -> Dir {
    dir_of(name, &cfg.to_string(), typed_safetensors(tensors))
}

#[test]
fn gpt_oss_directories_load_with_mxfp4_or_unquantized_experts() {
    for (mxfp4, ty) in [(true, "MXFP4"), (false, "F32")] {
        let d = gpt_oss_dir("oss", &gpt_oss_config(), &gpt_oss_tensors(mxfp4));
        let file = convert(&d.0).unwrap();
        let gate = file.tensor("blk.0.ffn_gate_exps.weight").unwrap();
        assert_eq!(
            (gate.dims.as_slice(), gate.ty.to_string().as_str()),
            (&[32u64, 32, 2][..], ty)
        );
        let bias = file.tensor("blk.0.ffn_up_exps.bias").unwrap();
        assert_eq!(bias.dims, [32, 2]);
        assert_eq!(
            file.get("gpt-oss.expert_used_count")
                .and_then(|v| v.as_u64()),
            Some(1)
        );
        let m = load(&d.0).unwrap();
        let mut cache = m.new_cache(8);
        let logits = m.forward(&[1, 2, 3], &mut cache, 0).unwrap();
        assert!(logits.iter().all(|x| x.is_finite()), "{ty}: {logits:?}");
    }
}

#[test]
fn gpt_oss_experts_that_contradict_the_config() {
    let case = |name: &str, edit: &dyn Fn(&mut Typed), want: &str| {
        let mut t = gpt_oss_tensors(true);
        edit(&mut t);
        let d = gpt_oss_dir(name, &gpt_oss_config(), &t);
        let e = load_err(&d.0);
        assert!(e.contains(want), "{name}: {e}");
    };
    let set = |t: &mut Typed, suffix: &str, shape: Vec<usize>| {
        let i = t.iter().position(|x| x.0.ends_with(suffix)).unwrap();
        t[i].1 = shape;
    };
    case(
        "blocks",
        &|t| set(t, "gate_up_proj_blocks", vec![2, 64, 2, 16]),
        "tensor 'model.layers.0.mlp.experts.gate_up_proj_blocks' has shape [2, 64, 2, 16], \
         expected [2, 64, 1, 16] (num_local_experts, rows, row length / 32, 16",
    );
    case(
        "nibbles",
        &|t| set(t, "down_proj_blocks", vec![2, 32, 2, 8]),
        "down_proj_blocks' has shape [2, 32, 2, 8], expected [2, 32, 1, 16]",
    );
    case(
        "scales",
        &|t| set(t, "down_proj_scales", vec![2, 32]),
        "tensor 'model.layers.0.mlp.experts.down_proj_scales' has shape [2, 32], \
         expected [2, 32, 1]",
    );
    case(
        "noscales",
        &|t| t.retain(|x| !x.0.ends_with("gate_up_proj_scales")),
        "layer 0's mlp.experts.gate_up_proj has one of _blocks and _scales without the other",
    );
    case(
        "u8",
        &|t| t[3].2 = "U8",
        "tensor 'model.layers.0.input_layernorm.weight' is U8 [32], where a float tensor",
    );
    case(
        "floatblocks",
        &|t| {
            t.iter_mut().for_each(|x| {
                if x.0.ends_with("down_proj_scales") {
                    x.2 = "F32";
                }
            })
        },
        "down_proj_scales' is F32, but MXFP4 blocks and scales are U8",
    );
    case(
        "bias",
        &|t| set(t, "gate_up_proj_bias", vec![2, 32]),
        "gate_up_proj_bias' has shape [2, 32], expected [2, 64]",
    );
}

#[test]
fn gpt_oss_settings_tuili_does_not_implement_are_refused() {
    let case = |name: &str, edit: &dyn Fn(&mut Value), want: &str| {
        let mut cfg = gpt_oss_config();
        edit(&mut cfg);
        let d = gpt_oss_dir(name, &cfg, &gpt_oss_tensors(true));
        let e = load_err(&d.0);
        assert!(e.contains(want), "{name}: {e}");
    };
    case(
        "limit",
        &|c| c["swiglu_limit"] = json!(5.0),
        "swiglu_limit 5 (gpt-oss's SwiGLU clamps at 7)",
    );
    case(
        "quant",
        &|c| c["quantization_config"] = json!({"quant_method": "bitsandbytes"}),
        "quantization_config.quant_method bitsandbytes",
    );
    case(
        "pattern",
        &|c| c["layer_types"] = json!(["full_attention", "sliding_attention"]),
        "layer_types other than sliding and full layers in turn",
    );
    case(
        "topk",
        &|c| c["experts_per_token"] = json!(3),
        "num_experts_per_tok is 3, more than num_local_experts 2",
    );
    case(
        "window",
        &|c| {
            c.as_object_mut().unwrap().remove("sliding_window");
        },
        "config.json: sliding_window is missing",
    );
}
