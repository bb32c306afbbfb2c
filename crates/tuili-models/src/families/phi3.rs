//! `phi3` (Phi-3, Phi-4): llama's layer with Q/K/V in one fused matrix and gate/up in
//! another (`ffn_up` of `2 · ffn` rows, the gate first), read as views of their rows. As
//! llama.cpp's `phi3.cpp`, which ignores `phi3.attention.sliding_window` (its converters do
//! not write the window and pattern the models were trained with; Phi-3-mini's is 2047
//! positions, on every layer): so does tuili, and the two agree at every length. LongRoPE
//! (`rope_factors_long/short`) is not implemented yet: such files are refused by tensor
//! name.

use super::Loader;
use crate::ops::{AttnSpec, Glu, RopeId};
use crate::spec::{Ffn, FfnSpec, LayerSpec, ModelSpec, QkvSpec};
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
    let attn = AttnSpec {
        scale: 1.0 / (hd as f32).sqrt(),
        window: None,
        temperature: None,
        sinks: None,
    };
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
            attn_norm: Some(ld.vector(&n("attn_norm.weight"), dim)?),
            qkv: QkvSpec {
                wq,
                wk,
                wv,
                bias: None,
                qk_norm: None,
            },
            rope: Some(RopeId(0)),
            attn,
            wo: ld.matrix(&n("attn_output.weight"), dim, q_dim)?,
            wo_bias: None,
            post_attn_norm: None,
            ffn_norm: Some(ld.vector(&n("ffn_norm.weight"), dim)?),
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
        ropes: vec![rope],
        out_norm: ld.vector("output_norm.weight", dim)?,
        output: ld.output(embed)?,
        logit_scale: 1.0,
        eps: cfg.eps,
    })
}
