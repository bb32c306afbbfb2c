//! The llama-shaped families: `llama` (SmolLM2, Llama 2/3), `qwen2` (Q/K/V biases),
//! `qwen3` (per-head QK-norm), `qwen3moe` (and a mixture of experts for feed-forward),
//! `deci` (layers of their own shapes, some without attention or with a linear one),
//! `mistral3` (YaRN, attention temperature), `smollm3` (no RoPE on every 4th layer) and `granite`
//! (multipliers of the embedding, the residual branches, the attention scores and the
//! logits): embed, then per layer norm → attention → residual → norm → SwiGLU → residual,
//! then norm → logits.

use super::Loader;
use crate::ops::{AttnSpec, Glu, RopeId};
use crate::spec::{Ffn, FfnSpec, Gating, LayerSpec, ModelSpec, MoeSpec, QkvSpec};
use crate::{Arch, ModelError};

/// Metadata keys beyond the common ones whose math this loader implements, per family.
pub(super) fn handled_keys(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::Granite => &[
            "embedding_scale",
            "residual_scale",
            "logit_scale",
            "attention.scale",
        ],
        Arch::Mistral3 => &["attention.scale", "attention.temperature_scale"],
        Arch::Qwen3Moe => &[
            "expert_count",
            "expert_used_count",
            "expert_feed_forward_length",
        ],
        _ => &[],
    }
}

/// The most experts a layer may have (llama.cpp's limit).
const MAX_EXPERTS: usize = 512;

/// SmolLM3 leaves RoPE out of every 4th layer (llama.cpp's `n_no_rope_layer_step`).
const SMOLLM3_NOPE_STEP: usize = 4;

pub(super) fn load(ld: &Loader) -> Result<ModelSpec, ModelError> {
    let cfg = ld.cfg;
    let (dim, hd) = (cfg.dim, cfg.head_dim);
    let mut rope = ld.rope(cfg.rope_base, cfg.rope_mode, true)?;
    if matches!(cfg.arch, Arch::Llama | Arch::Mistral3 | Arch::Deci) && ld.has("rope_freqs.weight")
    {
        // Llama 3.x RoPE scaling.
        rope = ld.with_factors(&rope, "rope_freqs.weight")?;
    }
    let embed = ld.matrix("token_embd.weight", cfg.vocab, dim)?;
    // Multipliers of the families that read them (absent or 0: none), as llama.cpp's
    // `granite.cpp` and `mistral3.cpp` do.
    let read = |key: &str, archs: &[Arch]| {
        Some(ld.num(key).unwrap_or(0.0))
            .filter(|&v| archs.contains(&cfg.arch) && v != 0.0)
            .map(|v| positive(cfg.arch, key, v))
            .transpose()
    };
    let granite = |key: &str| read(key, &[Arch::Granite]);
    // Llama 4's attention temperature: a floor of the original context (mistral3).
    let temperature = read("attention.temperature_scale", &[Arch::Mistral3])?.map(|s| {
        let floor = ld
            .num("rope.scaling.original_context_length")
            .unwrap_or(cfg.ctx_len as f32);
        (s, floor)
    });
    let attn = AttnSpec {
        temperature,
        ..AttnSpec::causal(
            read("attention.scale", &[Arch::Granite, Arch::Mistral3])?
                .unwrap_or(1.0 / (hd as f32).sqrt()),
        )
    };
    let residual_scale = granite("residual_scale")?.unwrap_or(1.0);
    let embed_scale = granite("embedding_scale")?.unwrap_or(1.0);
    let logit_scale = match granite("logit_scale")? {
        Some(s) => 1.0 / s,
        None if cfg.arch == Arch::Granite => {
            return Err(ModelError::BadConfig(
                "granite.logit_scale is missing; granite files carry it".into(),
            ))
        }
        None => 1.0,
    };
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let n = |s: &str| format!("blk.{i}.{s}");
        let shape = cfg.layers[i];
        let (q_dim, kv_dim, ffn) = (shape.q_dim(), shape.kv_dim(), shape.ffn_dim);
        if ffn == 0 {
            // llama.cpp's deci graph drops such a layer's attention output too.
            return Err(ModelError::Unimplemented(format!(
                "layer {i} without a feed-forward block ({}.feed_forward_length 0)",
                cfg.arch.name()
            )));
        }
        if shape.n_head > 0 && kv_dim == 0 && q_dim != dim {
            return Err(ModelError::BadConfig(format!(
                "layer {i}: linear attention maps the {dim}-wide input on its own, but its \
                 {} heads of {hd} are {q_dim} wide",
                shape.n_head
            )));
        }
        let bias = ld.qkv_biases(i, cfg.arch == Arch::Qwen2)?;
        let qk_norm = if matches!(cfg.arch, Arch::Qwen3 | Arch::Qwen3Moe) {
            Some([
                ld.rms(&n("attn_q_norm.weight"), hd)?,
                ld.rms(&n("attn_k_norm.weight"), hd)?,
            ])
        } else {
            None
        };
        // deci: a layer without query heads has no attention block; one without K/V heads
        // maps its normalised input by `attn_output` alone ([dim, dim]).
        let attends = shape.n_head > 0;
        let qkv = if kv_dim > 0 {
            Some(QkvSpec {
                wq: ld.matrix(&n("attn_q.weight"), q_dim, dim)?,
                wk: ld.matrix(&n("attn_k.weight"), kv_dim, dim)?,
                wv: ld.matrix(&n("attn_v.weight"), kv_dim, dim)?,
                bias,
                qk_norm,
            })
        } else {
            None
        };
        let no_rope = cfg.arch == Arch::Smollm3 && (i + 1) % SMOLLM3_NOPE_STEP == 0;
        layers.push(LayerSpec {
            widths: ld.layer_widths(i),
            attn_norm: attends
                .then(|| ld.rms(&n("attn_norm.weight"), dim))
                .transpose()?,
            rope: (qkv.is_some() && !no_rope).then_some(RopeId(0)),
            qkv,
            attn,
            wo: attends
                .then(|| ld.matrix(&n("attn_output.weight"), dim, q_dim))
                .transpose()?,
            wo_bias: None,
            post_attn_norm: None,
            ffn_norm: Some(ld.rms(&n("ffn_norm.weight"), dim)?),
            ffn: if cfg.arch == Arch::Qwen3Moe {
                Ffn::Moe(moe(ld, i)?)
            } else {
                Ffn::Dense(FfnSpec {
                    gate: ld.matrix(&n("ffn_gate.weight"), ffn, dim)?,
                    up: ld.matrix(&n("ffn_up.weight"), ffn, dim)?,
                    down: ld.matrix(&n("ffn_down.weight"), dim, ffn)?,
                    act: Glu::Silu,
                })
            },
            post_ffn_norm: None,
            residual_scale,
        });
    }
    Ok(ModelSpec {
        embed,
        embed_scale,
        layers,
        ropes: vec![rope],
        long_rope: None,
        out_norm: ld.rms("output_norm.weight", dim)?,
        output: ld.output(embed)?,
        logit_scale,
        final_softcap: None,
        eps: cfg.eps,
    })
}

/// `v` if it is a positive number, else an error naming `{arch}.{key}`.
fn positive(arch: Arch, key: &str, v: f32) -> Result<f32, ModelError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(ModelError::BadConfig(format!(
            "{}.{key} is {v}; it must be a positive number",
            arch.name()
        )))
    }
}

/// Layer `i`'s mixture of experts (qwen3moe): softmax router, top-k, weights normalised.
fn moe(ld: &Loader, i: usize) -> Result<MoeSpec, ModelError> {
    let dim = ld.cfg.dim;
    let n_expert = ld.count("expert_count", MAX_EXPERTS)?;
    let top_k = ld.count("expert_used_count", n_expert)?;
    let ffn = ld.count("expert_feed_forward_length", 1 << 20)?;
    let n = |s: &str| format!("blk.{i}.{s}");
    let gate = ld.experts(&n("ffn_gate_exps.weight"), ffn, dim, n_expert)?;
    let up = ld.experts(&n("ffn_up_exps.weight"), ffn, dim, n_expert)?;
    let down = ld.experts(&n("ffn_down_exps.weight"), dim, ffn, n_expert)?;
    let experts = (0..n_expert)
        .map(|e| FfnSpec {
            gate: gate[e],
            up: up[e],
            down: down[e],
            act: Glu::Silu,
        })
        .collect();
    Ok(MoeSpec {
        router: ld.matrix(&n("ffn_gate_inp.weight"), n_expert, dim)?,
        experts,
        top_k,
        gating: Gating::Softmax,
        norm_weights: true,
        weight_scale: 1.0,
        router_bias: None,
        expert_bias: Vec::new(),
    })
}
