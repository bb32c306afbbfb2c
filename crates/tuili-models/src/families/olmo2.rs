//! `olmo2` (OLMo 2; OLMo 3 adds local sliding-window layers): no norm before attention or
//! the feed-forward block, a norm after each instead, and RMS norms of the full Q and K
//! projections (not per head). As llama.cpp's `olmo2.cpp`.

use tuili_backend::ops::RopeMode;

use super::Loader;
use crate::ops::{AttnSpec, Glu, RopeId};
use crate::spec::{Ffn, FfnSpec, LayerSpec, ModelSpec, QkvSpec};
use crate::ModelError;

/// Metadata keys beyond the common ones whose math this loader implements.
pub(super) const HANDLED_KEYS: &[&str] = super::SLIDING_WINDOW_KEYS;

/// Layers per period when a file with a window names no pattern: 3 local, then 1 global.
const DEFAULT_PATTERN: usize = 4;

pub(super) fn load(ld: &Loader) -> Result<ModelSpec, ModelError> {
    let cfg = ld.cfg;
    let (dim, q_dim, kv_dim, ffn, hd) = (
        cfg.dim,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.ffn_dim,
        cfg.head_dim,
    );
    let window = ld.sliding_window();
    let local = match window {
        Some(_) => ld.local_layers(DEFAULT_PATTERN)?,
        None => vec![false; cfg.n_layer],
    };
    // RoPE 0 for global layers (scaled as the file says), 1 for local ones (never scaled,
    // base `freq_base_swa`, else the global base).
    let ropes = vec![
        ld.rope(cfg.rope_base, RopeMode::Neox, true)?,
        ld.rope(ld.local_rope_base(cfg.rope_base)?, RopeMode::Neox, false)?,
    ];
    let embed = ld.matrix("token_embd.weight", cfg.vocab, dim)?;
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for (i, &is_local) in local.iter().enumerate() {
        let n = |s: &str| format!("blk.{i}.{s}");
        layers.push(LayerSpec {
            widths: ld.layer_widths(i),
            attn_norm: None,
            qkv: Some(QkvSpec {
                wq: ld.matrix(&n("attn_q.weight"), q_dim, dim)?,
                wk: ld.matrix(&n("attn_k.weight"), kv_dim, dim)?,
                wv: ld.matrix(&n("attn_v.weight"), kv_dim, dim)?,
                bias: None,
                // Over the whole projection: `[q_dim]` and `[kv_dim]`.
                qk_norm: Some([
                    ld.rms(&n("attn_q_norm.weight"), q_dim)?,
                    ld.rms(&n("attn_k_norm.weight"), kv_dim)?,
                ]),
            }),
            rope: Some(RopeId(is_local as u32)),
            attn: AttnSpec {
                window: if is_local { window } else { None },
                ..AttnSpec::causal(1.0 / (hd as f32).sqrt())
            },
            wo: Some(ld.matrix(&n("attn_output.weight"), dim, q_dim)?),
            wo_bias: None,
            post_attn_norm: Some(ld.rms(&n("post_attention_norm.weight"), dim)?),
            ffn_norm: None,
            ffn: Ffn::Dense(FfnSpec {
                gate: ld.matrix(&n("ffn_gate.weight"), ffn, dim)?,
                up: ld.matrix(&n("ffn_up.weight"), ffn, dim)?,
                down: ld.matrix(&n("ffn_down.weight"), dim, ffn)?,
                act: Glu::Silu,
            }),
            post_ffn_norm: Some(ld.rms(&n("post_ffw_norm.weight"), dim)?),
            residual_scale: 1.0,
        });
    }
    Ok(ModelSpec {
        embed,
        embed_scale: 1.0,
        layers,
        ropes,
        long_rope: None,
        out_norm: ld.rms("output_norm.weight", dim)?,
        output: ld.matrix("output.weight", cfg.vocab, dim)?,
        logit_scale: 1.0,
        final_softcap: None,
        eps: cfg.eps,
    })
}
