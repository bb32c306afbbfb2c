//! Small models with random weights, written as GGUF files: for tests of every tensor
//! type and for benchmarks (speed does not depend on the weight values).

use tuili_backend::quant::quantize;
use tuili_gguf::{GgmlType, GgufWriter, Value};

use crate::{Arch, ModelError, SplitMix64};

/// The matrix types a random model can be written with: every type the forward pass
/// runs (the norms and biases are always F32).
pub const WEIGHT_TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Shape and weight type of a random model.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    /// Any architecture: `qwen2` gets Q/K/V biases and an untied output, `qwen3` QK-norms,
    /// `gemma3` QK-norms, post-norms and a sliding window of [`SYNTHETIC_WINDOW`] on every
    /// other layer, `gemma2` the same without QK-norms and with soft-capped scores and
    /// logits, `granite` its multipliers, `olmo2` post-norms only and full-width
    /// QK-norms, `qwen3moe` 8 experts (2 per token), `phi3` fused Q/K/V and gate/up,
    /// `mistral3` YaRN and an attention temperature that changes every 4 positions,
    /// `gpt-oss` biases, attention sinks, a window on every other layer and 8 biased
    /// experts with its clamped SwiGLU, `starcoder2` LayerNorms with biases, biases on every
    /// projection and an ungated GELU block, `deci` layers of four shapes (see
    /// [`deci_layer`]).
    pub arch: Arch,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Hidden size.
    pub dim: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_kv_head: usize,
    /// Feed-forward hidden size.
    pub ffn_dim: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Trained context length written to the metadata.
    pub ctx_len: usize,
    /// Type of the matrices (norms stay F32).
    pub weight_type: GgmlType,
    /// Seed of the weights.
    pub seed: u64,
}

impl SyntheticSpec {
    /// A tiny model for unit tests (4 layers for `deci`, one of each shape of
    /// [`deci_layer`], else 2).
    pub fn tiny(arch: Arch, weight_type: GgmlType) -> SyntheticSpec {
        SyntheticSpec {
            arch,
            n_layer: if arch == Arch::Deci { 4 } else { 2 },
            dim: 256,
            n_head: 4,
            n_kv_head: 2,
            ffn_dim: 512,
            vocab: 512,
            ctx_len: 256,
            weight_type,
            seed: 1,
        }
    }

    /// The shape of SmolLM2-135M (30 layers, dim 576, 9/3 heads, FFN 1536, 49,152 tokens).
    pub fn smollm2_135m(weight_type: GgmlType) -> SyntheticSpec {
        SyntheticSpec {
            arch: Arch::Llama,
            n_layer: 30,
            dim: 576,
            n_head: 9,
            n_kv_head: 3,
            ffn_dim: 1536,
            vocab: 49152,
            ctx_len: 8192,
            weight_type,
            seed: 1,
        }
    }
}

/// Experts per layer of a synthetic `qwen3moe` model, of which 2 are used per token.
pub const SYNTHETIC_EXPERTS: usize = 8;

/// The feed-forward width of each synthetic expert.
pub const SYNTHETIC_EXPERT_FFN: usize = 256;

/// The sliding window of a synthetic `gemma3` model's local layers: short, so that tests'
/// prompts run past it.
pub const SYNTHETIC_WINDOW: usize = 5;

/// Layer `i`'s (query heads, K/V heads, feed-forward width) in a synthetic `deci` model,
/// in turns: grouped attention, none, linear attention (no K/V heads), multi-head
/// attention with a narrower feed-forward block. Other families: `spec`'s own.
pub fn deci_layer(spec: &SyntheticSpec, i: usize) -> (usize, usize, usize) {
    let (h, kv, f) = (spec.n_head, spec.n_kv_head, spec.ffn_dim);
    match (spec.arch, i % 4) {
        (Arch::Deci, 1) => (0, 0, f / 2),
        (Arch::Deci, 2) => (h, 0, f),
        (Arch::Deci, 3) => (h, h, f / 2),
        _ => (h, kv, f),
    }
}

/// Uniform values in [-scale, scale) from a SplitMix64 stream.
struct Values(SplitMix64);

impl Values {
    fn new(seed: u64) -> Values {
        Values(SplitMix64::new(seed))
    }

    fn take(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let z = self.0.next_u64();
                ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }
}

/// Writes a random model of `spec` as GGUF bytes.
pub fn write_synthetic(spec: &SyntheticSpec) -> Result<Vec<u8>, ModelError> {
    let a = spec.arch.name();
    let head_dim = spec.dim / spec.n_head;
    let (q_dim, kv_dim) = (spec.n_head * head_dim, spec.n_kv_head * head_dim);
    let mut w = GgufWriter::new();
    let u32v = |v: usize| Value::U32(v as u32);
    w.add("general.architecture", Value::String(a.into()))?;
    w.add(
        "general.name",
        Value::String(format!("synthetic-{a}-{}", spec.weight_type)),
    )?;
    w.add(format!("{a}.block_count"), u32v(spec.n_layer))?;
    w.add(format!("{a}.embedding_length"), u32v(spec.dim))?;
    if spec.arch == Arch::Deci {
        // One value per layer.
        let shapes: Vec<_> = (0..spec.n_layer).map(|i| deci_layer(spec, i)).collect();
        let per_layer = |f: fn(&(usize, usize, usize)) -> usize| {
            Value::Array(shapes.iter().map(|s| u32v(f(s))).collect())
        };
        w.add(format!("{a}.attention.head_count"), per_layer(|s| s.0))?;
        w.add(format!("{a}.attention.head_count_kv"), per_layer(|s| s.1))?;
        w.add(format!("{a}.feed_forward_length"), per_layer(|s| s.2))?;
    } else {
        w.add(format!("{a}.attention.head_count"), u32v(spec.n_head))?;
        w.add(format!("{a}.attention.head_count_kv"), u32v(spec.n_kv_head))?;
        w.add(format!("{a}.feed_forward_length"), u32v(spec.ffn_dim))?;
    }
    w.add(format!("{a}.context_length"), u32v(spec.ctx_len))?;
    w.add(format!("{a}.rope.freq_base"), Value::F32(10000.0))?;
    let eps_key = match spec.arch {
        Arch::Starcoder2 => "attention.layer_norm_epsilon",
        _ => "attention.layer_norm_rms_epsilon",
    };
    w.add(format!("{a}.{eps_key}"), Value::F32(1e-5))?;
    if matches!(spec.arch, Arch::Qwen3Moe | Arch::GptOss) {
        w.add(format!("{a}.expert_count"), u32v(SYNTHETIC_EXPERTS))?;
        w.add(format!("{a}.expert_used_count"), u32v(2))?;
        w.add(
            format!("{a}.expert_feed_forward_length"),
            u32v(SYNTHETIC_EXPERT_FFN),
        )?;
    }
    if spec.arch == Arch::Mistral3 {
        // YaRN over a 4-position original context, and a temperature every 4 positions.
        w.add(
            format!("{a}.rope.scaling.type"),
            Value::String("yarn".into()),
        )?;
        w.add(format!("{a}.rope.scaling.factor"), Value::F32(4.0))?;
        w.add(format!("{a}.rope.scaling.original_context_length"), u32v(4))?;
        w.add(format!("{a}.attention.temperature_scale"), Value::F32(0.1))?;
    }
    if spec.arch == Arch::Granite {
        // Multipliers of IBM's Granite 3 2B, roughly.
        for (k, v) in [
            ("embedding_scale", 12.0),
            ("residual_scale", 0.22),
            ("attention.scale", 0.015625),
            ("logit_scale", 8.0),
        ] {
            w.add(format!("{a}.{k}"), Value::F32(v))?;
        }
    }
    if spec.arch == Arch::Gemma2 {
        // Caps near the scores' and logits' own size, so that they change them.
        w.add(format!("{a}.attn_logit_softcapping"), Value::F32(2.0))?;
        w.add(format!("{a}.final_logit_softcapping"), Value::F32(5.0))?;
    }
    if matches!(spec.arch, Arch::Gemma2 | Arch::Gemma3 | Arch::GptOss) {
        w.add(
            format!("{a}.attention.sliding_window"),
            u32v(SYNTHETIC_WINDOW),
        )?;
        // Layer i is local unless i % 2 == 1.
        w.add(format!("{a}.attention.sliding_window_pattern"), u32v(2))?;
    }

    let mut vals = Values::new(spec.seed);
    let ty = spec.weight_type;
    // `stack` matrices of [rows, cols] (GGUF dims [cols, rows] or [cols, rows, stack]).
    let mut stacked =
        |w: &mut GgufWriter, name: String, rows: usize, cols: usize, stack: usize, ty: GgmlType| {
            // Scaled like trained weights so activations stay in a sane range.
            let data = vals.take(stack * rows * cols, 1.0 / (cols as f32).sqrt());
            let bytes = quantize(ty, &data)?;
            let dims: &[u64] = if stack == 1 {
                &[cols as u64, rows as u64]
            } else {
                &[cols as u64, rows as u64, stack as u64]
            };
            w.add_tensor(name, dims, ty, bytes)?;
            Ok::<(), ModelError>(())
        };

    let ones = |n: usize| -> Vec<u8> { (0..n).flat_map(|_| 1f32.to_le_bytes()).collect() };
    // Small values, different per tensor: biases and attention sinks.
    let mut bias_seed = spec.seed ^ 0x5eed;
    let mut small = |n: usize, scale: f32| -> Vec<u8> {
        bias_seed = bias_seed.wrapping_add(7919);
        Values::new(bias_seed)
            .take(n, scale)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    };
    // Norm weights around 1, different per tensor (so that a norm applied to the wrong
    // tensor shows).
    let mut norm_seed = spec.seed;
    let mut norm = |n: usize| -> Vec<u8> {
        norm_seed = norm_seed.wrapping_add(0x9e37_79b9);
        Values::new(norm_seed)
            .take(n, 0.5)
            .iter()
            .flat_map(|v| (1.0 + v).to_le_bytes())
            .collect()
    };
    stacked(
        &mut w,
        "token_embd.weight".into(),
        spec.vocab,
        spec.dim,
        1,
        GgmlType::Q8_0,
    )?;
    for i in 0..spec.n_layer {
        let n = |s: &str| format!("blk.{i}.{s}");
        let pre_norms = spec.arch != Arch::Olmo2;
        if spec.arch == Arch::Deci {
            let (heads, kv_heads, ffn) = deci_layer(spec, i);
            let d = spec.dim;
            if heads > 0 {
                w.add_tensor(n("attn_norm.weight"), &[d as u64], GgmlType::F32, norm(d))?;
                stacked(&mut w, n("attn_output.weight"), d, heads * head_dim, 1, ty)?;
            }
            if kv_heads > 0 {
                stacked(&mut w, n("attn_q.weight"), heads * head_dim, d, 1, ty)?;
                stacked(&mut w, n("attn_k.weight"), kv_heads * head_dim, d, 1, ty)?;
                stacked(&mut w, n("attn_v.weight"), kv_heads * head_dim, d, 1, ty)?;
            }
            w.add_tensor(n("ffn_norm.weight"), &[d as u64], GgmlType::F32, norm(d))?;
            stacked(&mut w, n("ffn_gate.weight"), ffn, d, 1, ty)?;
            stacked(&mut w, n("ffn_up.weight"), ffn, d, 1, ty)?;
            stacked(&mut w, n("ffn_down.weight"), d, ffn, 1, ty)?;
            continue;
        }
        if pre_norms {
            w.add_tensor(
                n("attn_norm.weight"),
                &[spec.dim as u64],
                GgmlType::F32,
                ones(spec.dim),
            )?;
        }

        if spec.arch == Arch::Phi3 {
            let rows = q_dim + 2 * kv_dim;
            stacked(&mut w, n("attn_qkv.weight"), rows, spec.dim, 1, ty)?;
        } else {
            stacked(&mut w, n("attn_q.weight"), q_dim, spec.dim, 1, ty)?;
            stacked(&mut w, n("attn_k.weight"), kv_dim, spec.dim, 1, ty)?;
            stacked(&mut w, n("attn_v.weight"), kv_dim, spec.dim, 1, ty)?;
        }
        if spec.arch == Arch::Starcoder2 {
            // LayerNorms' biases, and those of every projection but Q/K/V's (below).
            let (d, f) = (spec.dim, spec.ffn_dim);
            for (t, len) in [
                ("attn_norm.bias", d),
                ("attn_output.bias", d),
                ("ffn_norm.bias", d),
                ("ffn_up.bias", f),
                ("ffn_down.bias", d),
            ] {
                w.add_tensor(n(t), &[len as u64], GgmlType::F32, small(len, 0.1))?;
            }
        }
        if matches!(spec.arch, Arch::Qwen2 | Arch::GptOss | Arch::Starcoder2) {
            for (b, len) in [
                ("attn_q.bias", q_dim),
                ("attn_k.bias", kv_dim),
                ("attn_v.bias", kv_dim),
            ] {
                w.add_tensor(n(b), &[len as u64], GgmlType::F32, small(len, 0.1))?;
            }
        }
        if matches!(spec.arch, Arch::Qwen3 | Arch::Qwen3Moe | Arch::Gemma3) {
            for t in ["attn_q_norm.weight", "attn_k_norm.weight"] {
                w.add_tensor(n(t), &[head_dim as u64], GgmlType::F32, norm(head_dim))?;
            }
        }
        if spec.arch == Arch::Olmo2 {
            // Over the whole projections.
            for (t, len) in [
                ("attn_q_norm.weight", q_dim),
                ("attn_k_norm.weight", kv_dim),
            ] {
                w.add_tensor(n(t), &[len as u64], GgmlType::F32, norm(len))?;
            }
        }
        stacked(&mut w, n("attn_output.weight"), spec.dim, q_dim, 1, ty)?;
        if spec.arch == Arch::GptOss {
            let (d, h) = (spec.dim as u64, spec.n_head as u64);
            w.add_tensor(
                n("attn_output.bias"),
                &[d],
                GgmlType::F32,
                small(spec.dim, 0.1),
            )?;
            w.add_tensor(
                n("attn_sinks.weight"),
                &[h],
                GgmlType::F32,
                small(spec.n_head, 2.0),
            )?;
        }
        if matches!(spec.arch, Arch::Gemma2 | Arch::Gemma3 | Arch::Olmo2) {
            for t in ["post_attention_norm.weight", "post_ffw_norm.weight"] {
                w.add_tensor(n(t), &[spec.dim as u64], GgmlType::F32, norm(spec.dim))?;
            }
        }
        if pre_norms {
            // gpt-oss names its feed-forward pre-norm `post_attention_norm`.
            let name = match spec.arch {
                Arch::GptOss => "post_attention_norm.weight",
                _ => "ffn_norm.weight",
            };
            w.add_tensor(n(name), &[spec.dim as u64], GgmlType::F32, ones(spec.dim))?;
        }
        if matches!(spec.arch, Arch::Qwen3Moe | Arch::GptOss) {
            let (e, f, d) = (SYNTHETIC_EXPERTS, SYNTHETIC_EXPERT_FFN, spec.dim);
            stacked(&mut w, n("ffn_gate_inp.weight"), e, d, 1, GgmlType::F32)?;
            stacked(&mut w, n("ffn_gate_exps.weight"), f, d, e, ty)?;
            stacked(&mut w, n("ffn_up_exps.weight"), f, d, e, ty)?;
            stacked(&mut w, n("ffn_down_exps.weight"), d, f, e, ty)?;
            if spec.arch == Arch::GptOss {
                let e64 = e as u64;
                w.add_tensor(n("ffn_gate_inp.bias"), &[e64], GgmlType::F32, small(e, 0.5))?;
                for (t, width) in [
                    ("ffn_gate_exps.bias", f),
                    ("ffn_up_exps.bias", f),
                    ("ffn_down_exps.bias", d),
                ] {
                    let dims = [width as u64, e64];
                    w.add_tensor(n(t), &dims, GgmlType::F32, small(width * e, 0.1))?;
                }
            }
        } else if spec.arch == Arch::Phi3 {
            let (f, d) = (spec.ffn_dim, spec.dim);
            stacked(&mut w, n("ffn_up.weight"), 2 * f, d, 1, ty)?;
            stacked(&mut w, n("ffn_down.weight"), d, f, 1, ty)?;
        } else if spec.arch == Arch::Starcoder2 {
            stacked(&mut w, n("ffn_up.weight"), spec.ffn_dim, spec.dim, 1, ty)?;
            stacked(&mut w, n("ffn_down.weight"), spec.dim, spec.ffn_dim, 1, ty)?;
        } else {
            stacked(&mut w, n("ffn_gate.weight"), spec.ffn_dim, spec.dim, 1, ty)?;
            stacked(&mut w, n("ffn_up.weight"), spec.ffn_dim, spec.dim, 1, ty)?;
            stacked(&mut w, n("ffn_down.weight"), spec.dim, spec.ffn_dim, 1, ty)?;
        }
    }
    w.add_tensor(
        "output_norm.weight",
        &[spec.dim as u64],
        GgmlType::F32,
        ones(spec.dim),
    )?;
    if spec.arch == Arch::Starcoder2 {
        let d = spec.dim;
        w.add_tensor(
            "output_norm.bias",
            &[d as u64],
            GgmlType::F32,
            small(d, 0.1),
        )?;
    }
    if matches!(spec.arch, Arch::Qwen2 | Arch::Olmo2) {
        stacked(&mut w, "output.weight".into(), spec.vocab, spec.dim, 1, ty)?;
    }
    Ok(w.to_bytes())
}
