//! `phi3` (Phi-3, Phi-4): llama's layer with Q/K/V in one fused matrix and gate/up in
//! another (`ffn_up` of `2 · ffn` rows, the gate first), read as views of their rows. As
//! llama.cpp's `phi3.cpp`, which ignores `phi3.attention.sliding_window` (its converters do
//! not write the window and pattern the models were trained with; Phi-3-mini's is 2047
//! positions, on every layer): so does tuili, and the two agree at every length. LongRoPE
//! (Phi-3.5, Phi-4-mini: `rope_factors_long` and `rope_factors_short`, and an attention
//! factor) divides the frequencies by the long factors when the model is served with a
//! context beyond `rope.scaling.original_context_length`, else by the short ones, as
//! llama.cpp chooses them.

use super::Loader;
use crate::ops::{AttnSpec, Glu, RopeId};
use crate::spec::{Ffn, FfnSpec, LayerSpec, LongRope, ModelSpec, QkvSpec};
use crate::ModelError;

/// Metadata keys beyond the common ones whose math this loader implements.
pub(super) const HANDLED_KEYS: &[&str] = &["attention.sliding_window"];

pub(super) fn load(ld: &Loader) -> Result<ModelSpec, ModelError> {
    let cfg = ld.cfg;
    let (dim, q_dim, kv_dim, ffn, hd) = (
        cfg.dim,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.ffn_dim,
        cfg.head_dim,
    );
    let rope = ld.rope(cfg.rope_base, cfg.rope_mode, true)?;
    let long_rope = if ld.has("rope_factors_long.weight") {
        let original_ctx = match ld.num("rope.scaling.original_context_length") {
            Some(n) if n >= 1.0 => n as usize,
            _ => cfg.ctx_len,
        };
        Some(LongRope {
            original_ctx,
            short: vec![ld.with_factors(&rope, "rope_factors_short.weight")?],
            long: vec![ld.with_factors(&rope, "rope_factors_long.weight")?],
        })
    } else {
        None
    };
    let attn = AttnSpec::causal(1.0 / (hd as f32).sqrt());
    let embed = ld.matrix("token_embd.weight", cfg.vocab, dim)?;
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let n = |s: &str| format!("blk.{i}.{s}");
        let (wq, wk, wv) = if ld.has(&n("attn_qkv.weight")) {
            let v = ld.split_matrix(&n("attn_qkv.weight"), dim, &[q_dim, kv_dim, kv_dim])?;
            (v[0], v[1], v[2])
        } else {
            (
                ld.matrix(&n("attn_q.weight"), q_dim, dim)?,
                ld.matrix(&n("attn_k.weight"), kv_dim, dim)?,
                ld.matrix(&n("attn_v.weight"), kv_dim, dim)?,
            )
        };
        let gate_up = ld.split_matrix(&n("ffn_up.weight"), dim, &[ffn, ffn])?;
        layers.push(LayerSpec {
            widths: ld.layer_widths(i),
            attn_norm: Some(ld.rms(&n("attn_norm.weight"), dim)?),
            qkv: Some(QkvSpec {
                wq,
                wk,
                wv,
                bias: None,
                qk_norm: None,
            }),
            rope: Some(RopeId(0)),
            attn,
            wo: Some(ld.matrix(&n("attn_output.weight"), dim, q_dim)?),
            wo_bias: None,
            post_attn_norm: None,
            ffn_norm: Some(ld.rms(&n("ffn_norm.weight"), dim)?),
            ffn: Ffn::Dense(FfnSpec {
                gate: gate_up[0],
                up: gate_up[1],
                down: ld.matrix(&n("ffn_down.weight"), dim, ffn)?,
                act: Glu::Silu,
            }),
            post_ffn_norm: None,
            residual_scale: 1.0,
        });
    }
    Ok(ModelSpec {
        embed,
        embed_scale: 1.0,
        layers,
        // The short factors until `Model::use_context` says the context is longer.
        ropes: match &long_rope {
            Some(lr) => lr.short.clone(),
            None => vec![rope],
        },
        long_rope,
        out_norm: ld.rms("output_norm.weight", dim)?,
        output: ld.output(embed)?,
        logit_scale: 1.0,
        final_softcap: None,
        eps: cfg.eps,
    })
}
