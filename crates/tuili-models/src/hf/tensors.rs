//! HF tensor names and layouts as the GGUF tensors tuili's loaders (and llama.cpp) read,
//! with the changes llama.cpp's converter makes: Q/K rows permuted for interleaved RoPE,
//! Gemma's `+1` on norm weights, vectors stored as F32, experts stacked.

use std::collections::BTreeMap;

use tuili_gguf::GgmlType;
use tuili_safetensors::{Checkpoint, Dtype, TensorInfo};

use super::config::HfConfig;
use crate::{Arch, ModelError};

/// A tensor ready for the GGUF writer: dims in GGUF order (row length first).
pub(crate) struct GgufTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub data: Vec<u8>,
}

/// Where an HF tensor goes.
enum Target {
    Tensor(String),
    /// Expert `e` of the stacked tensor named.
    Expert(String, usize),
    /// Part of layer `n`'s fused gpt-oss experts (`mlp.experts.gate_up_proj_blocks`, ...).
    FusedExperts(usize),
    /// Not part of the language model (vision tower, cached RoPE tables).
    Skip,
}

/// Prefixes in front of the language model's tensor names, longest first.
const PREFIXES: &[&str] = &["model.language_model.", "language_model.model.", "model."];
/// Prefixes of tensors that belong to other parts of a multimodal checkpoint.
const OTHER_PARTS: &[&str] = &[
    "vision_tower.",
    "multi_modal_projector.",
    "model.vision_tower.",
    "model.multi_modal_projector.",
];

fn target(arch: Arch, hf: &str) -> Option<Target> {
    if OTHER_PARTS.iter().any(|p| hf.starts_with(p)) || hf.ends_with("rotary_emb.inv_freq") {
        return Some(Target::Skip);
    }
    if matches!(hf, "lm_head.weight" | "language_model.lm_head.weight") {
        return Some(Target::Tensor("output.weight".into()));
    }
    let rest = PREFIXES.iter().find_map(|p| hf.strip_prefix(p))?;
    match rest {
        "embed_tokens.weight" => return Some(Target::Tensor("token_embd.weight".into())),
        "norm.weight" => return Some(Target::Tensor("output_norm.weight".into())),
        "norm.bias" => return Some(Target::Tensor("output_norm.bias".into())),
        _ => {}
    }
    let (layer, inner) = rest.strip_prefix("layers.")?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    if let Some(e) = inner.strip_prefix("mlp.experts.") {
        if arch == Arch::GptOss {
            return Some(Target::FusedExperts(layer));
        }
        let (e, proj) = e.split_once('.')?;
        let which = match proj {
            "gate_proj.weight" => "gate",
            "up_proj.weight" => "up",
            "down_proj.weight" => "down",
            _ => return None,
        };
        let name = format!("blk.{layer}.ffn_{which}_exps.weight");
        return Some(Target::Expert(name, e.parse().ok()?));
    }
    if inner == "self_attn.sinks" {
        return Some(Target::Tensor(format!("blk.{layer}.attn_sinks.weight")));
    }
    // gpt-oss names its feed-forward pre-norm `post_attention_norm`, as llama.cpp does.
    let post_norms = matches!(
        arch,
        Arch::Gemma2 | Arch::Gemma3 | Arch::Olmo2 | Arch::GptOss
    );
    let (stem, suffix) = inner.rsplit_once('.')?;
    let gguf = match stem {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" if post_norms => "post_attention_norm",
        "post_attention_layernorm" => "ffn_norm",
        "pre_feedforward_layernorm" => "ffn_norm",
        "post_feedforward_layernorm" => "post_ffw_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        // deci's linear attention: the output projection alone.
        "self_attn.linear_attn" => "attn_output",
        "self_attn.qkv_proj" => "attn_qkv",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.gate_up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        // StarCoder2's ungated block.
        "mlp.c_fc" => "ffn_up",
        "mlp.c_proj" => "ffn_down",
        "mlp.gate" | "mlp.router" => "ffn_gate_inp",
        _ => return None,
    };
    Some(Target::Tensor(format!("blk.{layer}.{gguf}.{suffix}")))
}

/// The GGUF type of a float tensor; bytes (U8) are only MXFP4 experts' blocks and scales.
pub(super) fn ggml_type(t: &TensorInfo) -> Result<GgmlType, ModelError> {
    match t.dtype {
        Dtype::F32 => Ok(GgmlType::F32),
        Dtype::F16 => Ok(GgmlType::F16),
        Dtype::BF16 => Ok(GgmlType::BF16),
        Dtype::U8 => Err(ModelError::BadConfig(format!(
            "tensor '{}' is U8 {:?}, where a float tensor (F32, F16, BF16) is required \
             (U8 is read only as gpt-oss's MXFP4 expert blocks and scales)",
            t.name, t.shape
        ))),
    }
}

/// `LlamaModel.permute` of llama.cpp's converter: within each of `n_head` heads, row
/// `2i + j` of the result is row `j * half + i` of HF's layout (`half` = head_dim / 2).
fn permute_rows(
    data: &[u8],
    rows: usize,
    n_head: usize,
    name: &str,
) -> Result<Vec<u8>, ModelError> {
    if n_head == 0 || !rows.is_multiple_of(2 * n_head) {
        return Err(ModelError::BadConfig(format!(
            "{name} has {rows} rows, not a whole number of heads of even size for {n_head} heads"
        )));
    }
    let row = data.len() / rows;
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = Vec::with_capacity(data.len());
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let src = h * hd + j * half + i;
                out.extend_from_slice(&data[src * row..(src + 1) * row]);
            }
        }
    }
    Ok(out)
}

/// Converts every tensor of `ckpt` for `cfg`'s family.
pub(crate) fn convert(ckpt: &Checkpoint, cfg: &HfConfig) -> Result<Vec<GgufTensor>, ModelError> {
    let mut out = Vec::new();
    let mut experts: BTreeMap<String, BTreeMap<usize, GgufTensor>> = BTreeMap::new();
    let mut fused: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for hf in ckpt.names() {
        let t = ckpt.tensor(hf).expect("listed name");
        let data = ckpt.data(hf).expect("listed name");
        if let Some(want) = cfg.dtype {
            // Packed bytes (MXFP4) are outside torch_dtype; `ggml_type` refuses them elsewhere.
            if t.dtype.name() != want && t.dtype != Dtype::U8 {
                return Err(ModelError::BadConfig(format!(
                    "tensor '{hf}' is {}, but config.json torch_dtype says {want}",
                    t.dtype.name()
                )));
            }
        }
        let name = match target(cfg.arch, hf) {
            None => {
                return Err(ModelError::Unimplemented(format!(
                    "checkpoint tensor '{hf}', which has no counterpart in tuili's {} loader",
                    cfg.arch.name()
                )))
            }
            Some(Target::Skip) => continue,
            Some(Target::Tensor(n)) if n == "output.weight" && cfg.tied => continue,
            Some(Target::Tensor(n)) => n,
            Some(Target::FusedExperts(layer)) => {
                fused.entry(layer).or_default().push(hf);
                continue;
            }
            Some(Target::Expert(n, e)) => {
                let g = tensor(cfg, &n, t, data)?;
                if experts.entry(n.clone()).or_default().insert(e, g).is_some() {
                    return Err(ModelError::BadConfig(format!(
                        "expert {e} of {n} appears twice"
                    )));
                }
                continue;
            }
        };
        out.push(tensor(cfg, &name, t, data)?);
    }
    for (name, parts) in experts {
        out.push(stack(name, parts)?);
    }
    for (layer, names) in fused {
        out.extend(super::gpt_oss::experts(ckpt, cfg, layer, &names)?);
    }
    if let Some(f) = &cfg.rope_freqs {
        out.push(GgufTensor {
            name: "rope_freqs.weight".into(),
            dims: vec![f.len() as u64],
            ty: GgmlType::F32,
            data: f.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
    }
    Ok(out)
}

/// One tensor under its GGUF name, its data changed as llama.cpp's converter does.
pub(super) fn tensor(
    cfg: &HfConfig,
    name: &str,
    t: &TensorInfo,
    data: &[u8],
) -> Result<GgufTensor, ModelError> {
    let dims: Vec<u64> = t.shape.iter().rev().copied().collect();
    let mut ty = ggml_type(t)?;
    let mut data = data.to_vec();
    // Vectors (norms), biases of any rank and routers are F32 in the converter's files;
    // Gemma's norms store `w + 1`.
    if dims.len() == 1 || !name.ends_with(".weight") || name.contains(".ffn_gate_inp.") {
        let n = dims.iter().product::<u64>() as usize;
        let mut v = tuili_backend::quant::dequantize(ty, &data, n)?;
        if matches!(cfg.arch, Arch::Gemma2 | Arch::Gemma3) && name.ends_with("norm.weight") {
            v.iter_mut().for_each(|x| *x += 1.0);
        }
        ty = GgmlType::F32;
        data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    }
    if cfg.permute_qk() {
        let rows = *t.shape.first().unwrap_or(&0) as usize;
        let heads = if name.ends_with(".attn_q.weight") || name.ends_with(".attn_q.bias") {
            Some(cfg.n_head)
        } else if name.ends_with(".attn_k.weight") || name.ends_with(".attn_k.bias") {
            Some(layer_of(name).map_or(cfg.n_kv_head, |l| cfg.kv_heads_of(l)))
        } else {
            None
        };
        if let Some(h) = heads {
            let what = format!("tensor '{}' ({name})", t.name);
            data = permute_rows(&data, rows, h, &what)?;
        }
    }
    Ok(GgufTensor {
        name: name.to_string(),
        dims,
        ty,
        data,
    })
}

/// The layer of a `blk.{layer}.*` tensor name.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split_once('.')?.0.parse().ok()
}

/// Experts `0..n` of one projection as one `[cols, rows, n]` tensor.
fn stack(name: String, parts: BTreeMap<usize, GgufTensor>) -> Result<GgufTensor, ModelError> {
    let n = parts.len();
    let first = parts.values().next().expect("at least one expert");
    let (dims, ty) = (first.dims.clone(), first.ty);
    let mut data = Vec::with_capacity(first.data.len() * n);
    for (i, (e, p)) in parts.iter().enumerate() {
        if *e != i {
            return Err(ModelError::BadConfig(format!(
                "{name}: expert {i} is missing (experts go up to {})",
                parts.keys().last().unwrap_or(&0)
            )));
        }
        if p.dims != dims || p.ty != ty {
            return Err(ModelError::BadConfig(format!(
                "{name}: expert {e} is {:?} {}, expert 0 {dims:?} {ty}",
                p.dims, p.ty
            )));
        }
        data.extend_from_slice(&p.data);
    }
    let mut dims = dims;
    dims.push(n as u64);
    Ok(GgufTensor {
        name,
        dims,
        ty,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_interleaves_each_heads_halves() {
        // 2 heads of 4 rows, one byte per row: HF [a0 a1 b0 b1] → GGUF [a0 b0 a1 b1].
        let rows: Vec<u8> = (0..8).collect();
        assert_eq!(
            permute_rows(&rows, 8, 2, "q").unwrap(),
            [0, 2, 1, 3, 4, 6, 5, 7]
        );
        assert!(permute_rows(&rows, 8, 3, "q").is_err());
    }

    #[test]
    fn names_map_per_family() {
        let n = |a, s| match target(a, s) {
            Some(Target::Tensor(n)) => n,
            _ => panic!("{s}"),
        };
        let post = "model.layers.3.post_attention_layernorm.weight";
        assert_eq!(n(Arch::Llama, post), "blk.3.ffn_norm.weight");
        assert_eq!(n(Arch::Gemma3, post), "blk.3.post_attention_norm.weight");
        assert_eq!(
            n(Arch::Qwen2, "model.layers.0.self_attn.q_proj.bias"),
            "blk.0.attn_q.bias"
        );
        assert!(matches!(
            target(Arch::Qwen3Moe, "model.layers.1.mlp.experts.7.up_proj.weight"),
            Some(Target::Expert(n, 7)) if n == "blk.1.ffn_up_exps.weight"
        ));
        assert!(target(Arch::Llama, "model.layers.0.self_attn.rotary_emb.foo").is_none());
    }
}
