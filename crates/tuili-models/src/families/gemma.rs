//! `gemma2` and `gemma3`: the embedding scaled by √dim, norms after attention and after
//! the feed-forward block as well as before, GeGLU, and local layers (a sliding window)
//! between global ones. As llama.cpp's `gemma2.cpp` and `gemma3.cpp`; the file's norm
//! weights already hold Gemma's `1 + w` (the converter adds the 1).
//!
//! - Gemma 2: every other layer local (window 4096 by default), one RoPE base for all,
//!   attention scores and final logits soft-capped (`cap · tanh(x / cap)`).
//! - Gemma 3: per-head QK-norm; 5 local layers per global one, local layers with their own
//!   RoPE base (10000); final logits soft-capped only when the file says so.

use tuili_backend::ops::RopeMode;

use super::Loader;
use crate::ops::{AttnSpec, Glu, RopeId};
use crate::spec::{Ffn, FfnSpec, LayerSpec, ModelSpec, QkvSpec};
use crate::{Arch, ModelError};

/// Metadata keys beyond the common ones whose math the Gemma 3 loader implements.
pub(super) const GEMMA3_HANDLED_KEYS: &[&str] = &[
    "attention.sliding_window",
    "attention.sliding_window_pattern",
    "rope.freq_base_swa",
    "final_logit_softcapping",
];

/// Gemma 2's: the sliding window and the two soft-caps.
pub(super) const GEMMA2_HANDLED_KEYS: &[&str] = &[
    "attention.sliding_window",
    "attention.sliding_window_pattern",
    "rope.freq_base_swa",
    "attn_logit_softcapping",
    "final_logit_softcapping",
];

/// What differs between the generations.
struct Generation {
    /// Layers per period when the file names no pattern (`period - 1` local, then 1
    /// global).
    pattern: usize,
    /// The window of local layers when the file names none.
    window: Option<usize>,
    /// Per-head QK-norm.
    qk_norm: bool,
    /// The RoPE base of local layers when the file names none (`None`: the global one).
    local_base: Option<f32>,
    /// The attention soft-cap when the file names none (`None`: the generation has no
    /// attention soft-cap, and llama.cpp ignores the key).
    attn_softcap: Option<f32>,
    /// The final logit soft-cap when the file names none.
    final_softcap: Option<f32>,
}

fn generation(arch: Arch) -> Generation {
    match arch {
        // llama.cpp's defaults (`gemma2.cpp`: pattern 2, window 4096, caps 50 and 30).
        Arch::Gemma2 => Generation {
            pattern: 2,
            window: Some(4096),
            qk_norm: false,
            local_base: None,
            attn_softcap: Some(50.0),
            final_softcap: Some(30.0),
        },
        _ => Generation {
            pattern: 6,
            window: None,
            qk_norm: true,
            local_base: Some(10_000.0),
            attn_softcap: None,
            final_softcap: None,
        },
    }
}

pub(super) fn load(ld: &Loader) -> Result<ModelSpec, ModelError> {
    let cfg = ld.cfg;
    let (dim, q_dim, kv_dim, ffn, hd) = (
        cfg.dim,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.ffn_dim,
        cfg.head_dim,
    );
    let g = generation(cfg.arch);
    let local = ld.local_layers(g.pattern)?;
    let window = ld.sliding_window().or(g.window);
    let local_base = ld.local_rope_base(g.local_base.unwrap_or(cfg.rope_base))?;
    let attn_softcap = match g.attn_softcap {
        Some(default) => ld.softcap("attn_logit_softcapping", Some(default))?,
        None => None,
    };
    let final_softcap = ld.softcap("final_logit_softcapping", g.final_softcap)?;
    // RoPE 0 for global layers (scaled as the file says), 1 for local ones (never scaled).
    let ropes = vec![
        ld.rope(cfg.rope_base, RopeMode::Neox, true)?,
        ld.rope(local_base, RopeMode::Neox, false)?,
    ];
    // The 27B models (Gemma 2: 46 layers, Gemma 3: 62) scale queries by 1/√(dim / heads),
    // the others by 1/√head_dim.
    let n_layer_27b = if cfg.arch == Arch::Gemma2 { 46 } else { 62 };
    let scale = if cfg.n_layer == n_layer_27b {
        1.0 / ((dim / cfg.n_head) as f32).sqrt()
    } else {
        1.0 / (hd as f32).sqrt()
    };
    let embed = ld.matrix("token_embd.weight", cfg.vocab, dim)?;
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for (i, &is_local) in local.iter().enumerate() {
        let n = |s: &str| format!("blk.{i}.{s}");
        layers.push(LayerSpec {
            widths: ld.layer_widths(i),
            attn_norm: Some(ld.rms(&n("attn_norm.weight"), dim)?),
            qkv: Some(QkvSpec {
                wq: ld.matrix(&n("attn_q.weight"), q_dim, dim)?,
                wk: ld.matrix(&n("attn_k.weight"), kv_dim, dim)?,
                wv: ld.matrix(&n("attn_v.weight"), kv_dim, dim)?,
                bias: None,
                qk_norm: match g.qk_norm {
                    true => Some([
                        ld.rms(&n("attn_q_norm.weight"), hd)?,
                        ld.rms(&n("attn_k_norm.weight"), hd)?,
                    ]),
                    false => None,
                },
            }),
            rope: Some(RopeId(is_local as u32)),
            attn: AttnSpec {
                window: if is_local { window } else { None },
                softcap: attn_softcap,
                ..AttnSpec::causal(scale)
            },
            wo: Some(ld.matrix(&n("attn_output.weight"), dim, q_dim)?),
            wo_bias: None,
            post_attn_norm: Some(ld.rms(&n("post_attention_norm.weight"), dim)?),
            ffn_norm: Some(ld.rms(&n("ffn_norm.weight"), dim)?),
            ffn: Ffn::Dense(FfnSpec {
                gate: ld.matrix(&n("ffn_gate.weight"), ffn, dim)?,
                up: ld.matrix(&n("ffn_up.weight"), ffn, dim)?,
                down: ld.matrix(&n("ffn_down.weight"), dim, ffn)?,
                act: Glu::GeluTanh,
            }),
            post_ffn_norm: Some(ld.rms(&n("post_ffw_norm.weight"), dim)?),
            residual_scale: 1.0,
        });
    }
    Ok(ModelSpec {
        embed,
        embed_scale: (dim as f32).sqrt(),
        layers,
        ropes,
        long_rope: None,
        out_norm: ld.rms("output_norm.weight", dim)?,
        output: ld.output(embed)?,
        logit_scale: 1.0,
        final_softcap,
        eps: cfg.eps,
    })
}
