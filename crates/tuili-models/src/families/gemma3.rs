//! `gemma3`: the embedding scaled by √dim, per-head QK-norm, norms after attention and
//! after the feed-forward block as well as before, GeGLU, and local layers (a sliding
//! window, their own RoPE base) between global ones. As llama.cpp's `gemma3.cpp`; the
//! file's norm weights already hold Gemma's `1 + w` (the converter adds the 1).

use tuili_backend::ops::RopeMode;

use super::Loader;
use crate::ops::{AttnSpec, Glu, RopeId};
use crate::spec::{Ffn, FfnSpec, LayerSpec, ModelSpec, QkvSpec};
use crate::ModelError;

/// Metadata keys beyond the common ones whose math this loader implements.
pub(super) const HANDLED_KEYS: &[&str] = super::SLIDING_WINDOW_KEYS;

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
    let local = ld.local_layers(DEFAULT_PATTERN)?;
    let window = ld.sliding_window();
    let local_base = ld.local_rope_base(DEFAULT_LOCAL_BASE)?;
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
            attn_norm: Some(ld.vector(&n("attn_norm.weight"), dim)?),
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
                temperature: None,
                sinks: None,
            },
            wo: ld.matrix(&n("attn_output.weight"), dim, q_dim)?,
            wo_bias: None,
            post_attn_norm: Some(ld.vector(&n("post_attention_norm.weight"), dim)?),
            ffn_norm: Some(ld.vector(&n("ffn_norm.weight"), dim)?),
            ffn: Ffn::Dense(FfnSpec {
                gate: ld.matrix(&n("ffn_gate.weight"), ffn, dim)?,
                up: ld.matrix(&n("ffn_up.weight"), ffn, dim)?,
                down: ld.matrix(&n("ffn_down.weight"), dim, ffn)?,
                act: Glu::GeluTanh,
            }),
            post_ffn_norm: Some(ld.vector(&n("post_ffw_norm.weight"), dim)?),
            residual_scale: 1.0,
        });
    }
    Ok(ModelSpec {
        embed,
        embed_scale: (dim as f32).sqrt(),
        layers,
        ropes,
        long_rope: None,
        out_norm: ld.vector("output_norm.weight", dim)?,
        output: ld.output(embed)?,
        logit_scale: 1.0,
        eps: cfg.eps,
    })
}
