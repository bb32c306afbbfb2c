//! `llama` (SmolLM2, Llama 2/3), `qwen2` (Q/K/V biases) and `qwen3` (per-head QK-norm):
//! embed, then per layer norm → attention → residual → norm → SwiGLU → residual, then
//! norm → logits.

use tuili_backend::ops::RopeMode;

use super::Loader;
use crate::ops::{AttnSpec, Glu, RopeId};
use crate::spec::{FfnSpec, LayerSpec, ModelSpec, QkvSpec};
use crate::{Arch, ModelError};

/// Metadata keys beyond the common ones whose math this loader implements.
pub(super) const HANDLED_KEYS: &[&str] = &[];

pub(super) fn load(ld: &Loader) -> Result<ModelSpec, ModelError> {
    let cfg = ld.cfg;
    let (dim, q_dim, kv_dim, ffn, hd) = (
        cfg.dim,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.ffn_dim,
        cfg.head_dim,
    );
    let mode = match cfg.arch {
        Arch::Llama => RopeMode::Normal,
        _ => RopeMode::Neox,
    };
    let mut rope = ld.rope(cfg.rope_base, mode, true)?;
    if cfg.arch == Arch::Llama && ld.has("rope_freqs.weight") {
        // Llama 3.x RoPE scaling: each pair's frequency is divided by its factor
        // (`[head_dim / 2]`), as llama.cpp's `rope_ext` does with `freq_factors`.
        let factors = ld.vector_values("rope_freqs.weight", hd / 2)?;
        if let Some((i, f)) = factors
            .iter()
            .enumerate()
            .find(|(_, f)| !(f.is_finite() && **f > 0.0))
        {
            return Err(ModelError::BadConfig(format!(
                "rope_freqs.weight[{i}] is {f}; RoPE frequency factors must be positive"
            )));
        }
        for (f, k) in rope.inv_freq.iter_mut().zip(&factors) {
            *f /= k;
        }
    }
    let embed = ld.matrix("token_embd.weight", cfg.vocab, dim)?;
    let attn = AttnSpec {
        scale: 1.0 / (hd as f32).sqrt(),
        window: None,
    };
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let n = |s: &str| format!("blk.{i}.{s}");
        let bias = if cfg.arch == Arch::Qwen2 || ld.has(&n("attn_q.bias")) {
            Some([
                ld.vector(&n("attn_q.bias"), q_dim)?,
                ld.vector(&n("attn_k.bias"), kv_dim)?,
                ld.vector(&n("attn_v.bias"), kv_dim)?,
            ])
        } else {
            None
        };
        let qk_norm = if cfg.arch == Arch::Qwen3 {
            Some([
                ld.vector(&n("attn_q_norm.weight"), hd)?,
                ld.vector(&n("attn_k_norm.weight"), hd)?,
            ])
        } else {
            None
        };
        layers.push(LayerSpec {
            attn_norm: ld.vector(&n("attn_norm.weight"), dim)?,
            qkv: QkvSpec {
                wq: ld.matrix(&n("attn_q.weight"), q_dim, dim)?,
                wk: ld.matrix(&n("attn_k.weight"), kv_dim, dim)?,
                wv: ld.matrix(&n("attn_v.weight"), kv_dim, dim)?,
                bias,
                qk_norm,
            },
            rope: Some(RopeId(0)),
            attn,
            wo: ld.matrix(&n("attn_output.weight"), dim, q_dim)?,
            post_attn_norm: None,
            ffn_norm: ld.vector(&n("ffn_norm.weight"), dim)?,
            ffn: FfnSpec {
                gate: ld.matrix(&n("ffn_gate.weight"), ffn, dim)?,
                up: ld.matrix(&n("ffn_up.weight"), ffn, dim)?,
                down: ld.matrix(&n("ffn_down.weight"), dim, ffn)?,
                act: Glu::Silu,
            },
            post_ffn_norm: None,
        });
    }
    Ok(ModelSpec {
        embed,
        embed_scale: 1.0,
        layers,
        ropes: vec![rope],
        out_norm: ld.vector("output_norm.weight", dim)?,
        output: ld.output(embed)?,
        eps: cfg.eps,
    })
}
