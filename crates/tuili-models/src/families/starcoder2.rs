//! `starcoder2` (StarCoder2 3B/7B/15B, IBM Granite Code 20B/34B): LayerNorms with biases,
//! biases on every projection, and an ungated GELU feed-forward block; NEOX RoPE. As
//! llama.cpp's `starcoder2.cpp`, which leaves out the sliding window the HF configs name
//! (its converter does not write one).

use super::Loader;
use crate::ops::{AttnSpec, RopeId};
use crate::spec::{Ffn, LayerSpec, ModelSpec, PlainFfnSpec, QkvSpec};
use crate::ModelError;

/// Metadata keys beyond the common ones whose math this loader implements.
pub(super) const HANDLED_KEYS: &[&str] = &["attention.layer_norm_epsilon"];

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
    let attn = AttnSpec::causal(1.0 / (hd as f32).sqrt());
    let embed = ld.matrix("token_embd.weight", cfg.vocab, dim)?;
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let n = |s: &str| format!("blk.{i}.{s}");
        // Q/K/V biases: llama.cpp reads them when present (the models have them).
        let bias = ld.qkv_biases(i, false)?;
        layers.push(LayerSpec {
            widths: ld.layer_widths(i),
            attn_norm: Some(ld.layer_norm(&n("attn_norm"), dim)?),
            qkv: Some(QkvSpec {
                wq: ld.matrix(&n("attn_q.weight"), q_dim, dim)?,
                wk: ld.matrix(&n("attn_k.weight"), kv_dim, dim)?,
                wv: ld.matrix(&n("attn_v.weight"), kv_dim, dim)?,
                bias,
                qk_norm: None,
            }),
            rope: Some(RopeId(0)),
            attn,
            wo: Some(ld.matrix(&n("attn_output.weight"), dim, q_dim)?),
            wo_bias: Some(ld.vector(&n("attn_output.bias"), dim)?),
            post_attn_norm: None,
            ffn_norm: Some(ld.layer_norm(&n("ffn_norm"), dim)?),
            ffn: Ffn::Plain(PlainFfnSpec {
                up: ld.matrix(&n("ffn_up.weight"), ffn, dim)?,
                up_bias: Some(ld.vector(&n("ffn_up.bias"), ffn)?),
                down: ld.matrix(&n("ffn_down.weight"), dim, ffn)?,
                down_bias: Some(ld.vector(&n("ffn_down.bias"), dim)?),
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
        long_rope: None,
        out_norm: ld.layer_norm("output_norm", dim)?,
        output: ld.output(embed)?,
        logit_scale: 1.0,
        final_softcap: None,
        eps: cfg.eps,
    })
}
