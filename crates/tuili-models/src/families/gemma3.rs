//! `gemma3`: the embedding scaled by √dim, per-head QK-norm, norms after attention and
//! after the feed-forward block as well as before, GeGLU, and local layers (a sliding
//! window, their own RoPE base) between global ones. As llama.cpp's `gemma3.cpp`; the
//! file's norm weights already hold Gemma's `1 + w` (the converter adds the 1).

use tuili_backend::ops::RopeMode;
use tuili_gguf::Value;

use super::Loader;
use crate::ops::{AttnSpec, Glu, RopeId};
use crate::spec::{FfnSpec, LayerSpec, ModelSpec, QkvSpec};
use crate::ModelError;

/// Metadata keys beyond the common ones whose math this loader implements.
pub(super) const HANDLED_KEYS: &[&str] = &[
    "attention.sliding_window",
    "attention.sliding_window_pattern",
    "rope.freq_base_swa",
];

/// Layers per period when the file names no pattern: 5 local, then 1 global.
const DEFAULT_PATTERN: usize = 6;

/// The RoPE base of local layers when the file names none (llama.cpp's default).
const DEFAULT_LOCAL_BASE: f32 = 10_000.0;

pub(super) fn load(ld: &Loader) -> Result<ModelSpec, ModelError> {
    let cfg = ld.cfg;
    let (dim, q_dim, kv_dim, ffn, hd) = (
        cfg.dim,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.ffn_dim,
        cfg.head_dim,
    );
    let local = local_layers(ld)?;
    let window = match ld
        .file
        .get("gemma3.attention.sliding_window")
        .and_then(|v| v.as_u64())
    {
        Some(0) | None => None,
        Some(w) => Some(w as usize),
    };
    let local_base = ld.num("rope.freq_base_swa").unwrap_or(DEFAULT_LOCAL_BASE);
    if !(local_base.is_finite() && local_base > 0.0) {
        return Err(ModelError::BadConfig(format!(
            "gemma3.rope.freq_base_swa is {local_base}; it must be positive"
        )));
    }
    // RoPE 0 for global layers (scaled as the file says), 1 for local ones (never scaled).
    let ropes = vec![
        ld.rope(cfg.rope_base, RopeMode::Neox, true)?,
        ld.rope(local_base, RopeMode::Neox, false)?,
    ];
    // The 27B model scales queries by 1/√(dim / heads), the others by 1/√head_dim.
    let scale = if cfg.n_layer == 62 {
        1.0 / ((dim / cfg.n_head) as f32).sqrt()
    } else {
        1.0 / (hd as f32).sqrt()
    };
    let embed = ld.matrix("token_embd.weight", cfg.vocab, dim)?;
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for (i, &is_local) in local.iter().enumerate() {
        let n = |s: &str| format!("blk.{i}.{s}");
        layers.push(LayerSpec {
            attn_norm: ld.vector(&n("attn_norm.weight"), dim)?,
            qkv: QkvSpec {
                wq: ld.matrix(&n("attn_q.weight"), q_dim, dim)?,
                wk: ld.matrix(&n("attn_k.weight"), kv_dim, dim)?,
                wv: ld.matrix(&n("attn_v.weight"), kv_dim, dim)?,
                bias: None,
                qk_norm: Some([
                    ld.vector(&n("attn_q_norm.weight"), hd)?,
                    ld.vector(&n("attn_k_norm.weight"), hd)?,
                ]),
            },
            rope: Some(RopeId(is_local as u32)),
            attn: AttnSpec {
                scale,
                window: if is_local { window } else { None },
            },
            wo: ld.matrix(&n("attn_output.weight"), dim, q_dim)?,
            post_attn_norm: Some(ld.vector(&n("post_attention_norm.weight"), dim)?),
            ffn_norm: ld.vector(&n("ffn_norm.weight"), dim)?,
            ffn: FfnSpec {
                gate: ld.matrix(&n("ffn_gate.weight"), ffn, dim)?,
                up: ld.matrix(&n("ffn_up.weight"), ffn, dim)?,
                down: ld.matrix(&n("ffn_down.weight"), dim, ffn)?,
                act: Glu::GeluTanh,
            },
            post_ffn_norm: Some(ld.vector(&n("post_ffw_norm.weight"), dim)?),
        });
    }
    Ok(ModelSpec {
        embed,
        embed_scale: (dim as f32).sqrt(),
        layers,
        ropes,
        out_norm: ld.vector("output_norm.weight", dim)?,
        output: ld.output(embed)?,
        eps: cfg.eps,
    })
}

/// Which layers are local (sliding window): `attention.sliding_window_pattern` as one
/// flag per layer, or as a period `p` (layer `i` is local unless `i % p == p - 1`;
/// 0 makes every layer local), 6 when absent.
fn local_layers(ld: &Loader) -> Result<Vec<bool>, ModelError> {
    let n_layer = ld.cfg.n_layer;
    let key = "gemma3.attention.sliding_window_pattern";
    match ld.file.get(key) {
        Some(Value::Array(flags)) => {
            if flags.len() != n_layer {
                return Err(ModelError::BadConfig(format!(
                    "{key} has {} flags for {n_layer} layers",
                    flags.len()
                )));
            }
            flags
                .iter()
                .map(|f| {
                    f.as_bool().ok_or_else(|| {
                        ModelError::BadConfig(format!("{key} holds a {}, not flags", f.type_name()))
                    })
                })
                .collect()
        }
        other => {
            let p = match other {
                None => DEFAULT_PATTERN,
                Some(v) => v.as_u64().ok_or_else(|| {
                    ModelError::BadConfig(format!("{key} is a {}, not a number", v.type_name()))
                })? as usize,
            };
            if p > n_layer {
                return Err(ModelError::BadConfig(format!(
                    "{key} = {p} is longer than the {n_layer} layers"
                )));
            }
            Ok((0..n_layer).map(|i| p == 0 || i % p < p - 1).collect())
        }
    }
}
