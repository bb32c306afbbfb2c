//! `gpt-oss` (OpenAI's open-weight MoE): Q/K/V and output biases, attention sinks (one
//! learned logit per head in every softmax), a sliding window on every other layer,
//! YaRN on all of them, and a mixture of experts with a biased router whose top-k logits
//! get a softmax of their own, biased experts and a clamped SwiGLU. The experts are
//! MXFP4 in the released files. As llama.cpp's `openai-moe.cpp`.

use tuili_backend::ops::RopeMode;

use super::Loader;
use crate::ops::{AttnSpec, Glu, RopeId};
use crate::spec::{Ffn, FfnSpec, Gating, LayerSpec, ModelSpec, MoeSpec, QkvSpec};
use crate::ModelError;

/// Metadata keys beyond the common ones whose math this loader implements.
pub(super) const HANDLED_KEYS: &[&str] = &[
    "attention.sliding_window",
    "attention.sliding_window_pattern",
    "rope.freq_base_swa",
    "expert_count",
    "expert_used_count",
    "expert_feed_forward_length",
];

/// Every other layer is local when the file names no pattern (llama.cpp's default).
const DEFAULT_PATTERN: usize = 2;

/// The most experts a layer may have (llama.cpp's limit).
const MAX_EXPERTS: usize = 512;

pub(super) fn load(ld: &Loader) -> Result<ModelSpec, ModelError> {
    let cfg = ld.cfg;
    let (dim, q_dim, kv_dim, hd) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
    let local = ld.local_layers(DEFAULT_PATTERN)?;
    let window = ld.sliding_window();
    // Local layers keep YaRN too; only their base may differ.
    let local_base = ld.local_rope_base(cfg.rope_base)?;
    let mut ropes = vec![ld.rope(cfg.rope_base, RopeMode::Neox, true)?];
    if local_base != cfg.rope_base {
        ropes.push(ld.rope(local_base, RopeMode::Neox, true)?);
    }
    let n_expert = ld.count("expert_count", MAX_EXPERTS)?;
    let top_k = ld.count("expert_used_count", n_expert)?;
    let ffn = ld.count("expert_feed_forward_length", 1 << 20)?;
    let embed = ld.matrix("token_embd.weight", cfg.vocab, dim)?;
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for (i, &is_local) in local.iter().enumerate() {
        let n = |s: &str| format!("blk.{i}.{s}");
        let gate = ld.experts(&n("ffn_gate_exps.weight"), ffn, dim, n_expert)?;
        let up = ld.experts(&n("ffn_up_exps.weight"), ffn, dim, n_expert)?;
        let down = ld.experts(&n("ffn_down_exps.weight"), dim, ffn, n_expert)?;
        let b_gate = ld.expert_vectors(&n("ffn_gate_exps.bias"), ffn, n_expert)?;
        let b_up = ld.expert_vectors(&n("ffn_up_exps.bias"), ffn, n_expert)?;
        let b_down = ld.expert_vectors(&n("ffn_down_exps.bias"), dim, n_expert)?;
        let moe = MoeSpec {
            router: ld.matrix(&n("ffn_gate_inp.weight"), n_expert, dim)?,
            experts: (0..n_expert)
                .map(|e| FfnSpec {
                    gate: gate[e],
                    up: up[e],
                    down: down[e],
                    act: Glu::SwigluOai,
                })
                .collect(),
            top_k,
            gating: Gating::SoftmaxWeight,
            norm_weights: false,
            weight_scale: 1.0,
            router_bias: Some(ld.vector(&n("ffn_gate_inp.bias"), n_expert)?),
            expert_bias: (0..n_expert)
                .map(|e| [b_gate[e], b_up[e], b_down[e]])
                .collect(),
        };
        layers.push(LayerSpec {
            widths: ld.layer_widths(i),
            attn_norm: Some(ld.rms(&n("attn_norm.weight"), dim)?),
            qkv: Some(QkvSpec {
                wq: ld.matrix(&n("attn_q.weight"), q_dim, dim)?,
                wk: ld.matrix(&n("attn_k.weight"), kv_dim, dim)?,
                wv: ld.matrix(&n("attn_v.weight"), kv_dim, dim)?,
                bias: ld.qkv_biases(i, true)?,
                qk_norm: None,
            }),
            rope: Some(RopeId((is_local && ropes.len() > 1) as u32)),
            attn: AttnSpec {
                window: if is_local { window } else { None },
                sinks: Some(ld.vector(&n("attn_sinks.weight"), cfg.n_head)?),
                ..AttnSpec::causal(1.0 / (hd as f32).sqrt())
            },
            wo: Some(ld.matrix(&n("attn_output.weight"), dim, q_dim)?),
            wo_bias: Some(ld.vector(&n("attn_output.bias"), dim)?),
            post_attn_norm: None,
            // gpt-oss names its feed-forward pre-norm `post_attention_norm`.
            ffn_norm: Some(ld.rms(&n("post_attention_norm.weight"), dim)?),
            ffn: Ffn::Moe(moe),
            post_ffn_norm: None,
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
        output: ld.output(embed)?,
        logit_scale: 1.0,
        final_softcap: None,
        eps: cfg.eps,
    })
}
