//! `config.json` of a Hugging Face model as tuili's architecture and the `{arch}.*` GGUF
//! keys that llama.cpp's converter (`convert_hf_to_gguf.py`) writes for it.

use serde_json::{Map, Value as Json};
use tuili_backend::ops::RopeMode;
use tuili_gguf::Value;

use crate::{Arch, ModelError};

/// `architectures[0]` of the models tuili runs, and their architecture.
const ARCHITECTURES: &[(&str, Arch)] = &[
    ("LlamaForCausalLM", Arch::Llama),
    ("MistralForCausalLM", Arch::Llama),
    ("Qwen2ForCausalLM", Arch::Qwen2),
    ("Qwen3ForCausalLM", Arch::Qwen3),
    ("Qwen3MoeForCausalLM", Arch::Qwen3Moe),
    ("Gemma2ForCausalLM", Arch::Gemma2),
    ("Gemma3ForCausalLM", Arch::Gemma3),
    ("Gemma3ForConditionalGeneration", Arch::Gemma3),
    ("SmolLM3ForCausalLM", Arch::Smollm3),
    ("GraniteForCausalLM", Arch::Granite),
    ("Olmo2ForCausalLM", Arch::Olmo2),
    ("Phi3ForCausalLM", Arch::Phi3),
    ("Mistral3ForConditionalGeneration", Arch::Mistral3),
    ("Ministral3ForCausalLM", Arch::Mistral3),
    ("Starcoder2ForCausalLM", Arch::Starcoder2),
    ("DeciLMForCausalLM", Arch::Deci),
    ("GptOssForCausalLM", Arch::GptOss),
];

/// What the tensor mapping needs from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct HfConfig {
    pub arch: Arch,
    pub n_head: usize,
    pub n_kv_head: usize,
    /// Per layer, its K/V heads when they differ per layer (deci's `block_configs`).
    pub layer_kv_heads: Option<Vec<usize>>,
    /// `hidden_size`.
    pub dim: usize,
    /// gpt-oss's fused experts: `(num_local_experts, intermediate_size)`, which fix the
    /// shapes of its expert tensors.
    pub experts: Option<(usize, usize)>,
    pub tied: bool,
    /// `torch_dtype` (`dtype` in newer files) as a safetensors dtype name.
    pub dtype: Option<&'static str>,
    /// The GGUF metadata: `general.*` and `{arch}.*`.
    pub keys: Vec<(String, Value)>,
    /// Llama 3's RoPE frequency factors, stored as `rope_freqs.weight` (as the converter does).
    pub rope_freqs: Option<Vec<f32>>,
}

impl HfConfig {
    /// HF stores Q and K with each head's rotary pairs split in halves; llama.cpp's
    /// normal (interleaved-pair) RoPE needs them permuted (`LlamaModel.permute`).
    pub fn permute_qk(&self) -> bool {
        crate::config::rope_mode(self.arch) == RopeMode::Normal
    }

    /// Layer `l`'s K/V heads.
    pub fn kv_heads_of(&self, l: usize) -> usize {
        match &self.layer_kv_heads {
            Some(per_layer) => per_layer.get(l).copied().unwrap_or(self.n_kv_head),
            None => self.n_kv_head,
        }
    }
}

fn bad(problem: String) -> ModelError {
    ModelError::BadConfig(format!("config.json: {problem}"))
}

/// A JSON object's fields, read with errors that name the key.
struct Fields<'a>(&'a Map<String, Json>);

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Json> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn count(&self, key: &str) -> Result<Option<u64>, ModelError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (1..=1 << 24).contains(&n) => Ok(Some(n)),
                _ => Err(bad(format!("{key} is {v}, not a count in 1..={}", 1 << 24))),
            },
        }
    }

    fn need_count(&self, key: &str) -> Result<u64, ModelError> {
        self.count(key)?
            .ok_or_else(|| bad(format!("{key} is missing")))
    }

    fn num(&self, key: &str) -> Result<Option<f32>, ModelError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x as f32)),
                _ => Err(bad(format!("{key} is {v}, not a number"))),
            },
        }
    }

    fn flag(&self, key: &str) -> Result<Option<bool>, ModelError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| bad(format!("{key} is {v}, not true or false"))),
        }
    }
}

/// Reads `config.json` (already parsed) into the architecture and its GGUF keys.
pub(crate) fn read(json: &Json, name: &str) -> Result<HfConfig, ModelError> {
    let top = json
        .as_object()
        .ok_or_else(|| bad("is not a JSON object".into()))?;
    let archs = top
        .get("architectures")
        .and_then(Json::as_array)
        .ok_or_else(|| bad("has no \"architectures\" list".into()))?;
    let hf_arch = archs.first().and_then(Json::as_str).unwrap_or("?");
    let arch = ARCHITECTURES
        .iter()
        .find(|(n, _)| *n == hf_arch)
        .map(|&(_, a)| a)
        .ok_or_else(|| {
            let known: Vec<&str> = ARCHITECTURES.iter().map(|(n, _)| *n).collect();
            ModelError::UnsupportedArch(format!(
                "{hf_arch} (config.json architectures; supported: {})",
                known.join(", ")
            ))
        })?;
    // Multimodal wrappers keep the language model's settings in `text_config`.
    let text = top.get("text_config").and_then(Json::as_object);
    let f = Fields(text.unwrap_or(top));
    let a = arch.name();
    let mut keys: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(a.into())),
        ("general.name".into(), Value::String(name.into())),
    ];
    let mut put = |k: &str, v: Value| keys.push((format!("{a}.{k}"), v));
    let u32v = |n: u64| Value::U32(n as u32);

    let n_layer = f.need_count("num_hidden_layers")?;
    let dim = f.need_count("hidden_size")?;
    let n_head = f.need_count("num_attention_heads")?;
    let n_kv_head = f.count("num_key_value_heads")?.unwrap_or(n_head);
    let head_dim = f.count("head_dim")?;
    let ctx = match arch {
        // Gemma 3's converter defaults the context when the config leaves it out.
        Arch::Gemma3 => f.count("max_position_embeddings")?.unwrap_or(131072),
        _ => f.need_count("max_position_embeddings")?,
    };
    put("context_length", u32v(ctx));
    put("embedding_length", u32v(dim));
    put("block_count", u32v(n_layer));
    let deci = match arch {
        Arch::Deci => Some(deci_blocks(&f, n_layer, dim, n_head)?),
        _ => None,
    };
    match &deci {
        Some(d) => {
            let arr = |v: &[u64]| Value::Array(v.iter().map(|&n| u32v(n)).collect());
            put("feed_forward_length", arr(&d.ffn));
            put("attention.head_count", arr(&d.heads));
            put("attention.head_count_kv", arr(&d.kv_heads));
            // The converter writes the head size of `hidden_size / num_attention_heads`.
            put("attention.key_length", u32v(dim / n_head));
            put("attention.value_length", u32v(dim / n_head));
        }
        None => {
            put(
                "feed_forward_length",
                u32v(f.need_count("intermediate_size")?),
            );
            put("attention.head_count", u32v(n_head));
            put("attention.head_count_kv", u32v(n_kv_head));
        }
    }
    let rope = rope_params(&f)?;
    let theta = Fields(&rope).num("rope_theta")?.or(f.num("rope_theta")?);
    if let Some(t) = theta {
        put("rope.freq_base", Value::F32(t));
    }
    if arch == Arch::Starcoder2 {
        // LayerNorms: their epsilon, under the key llama.cpp's converter finds it by.
        let eps = f
            .num("norm_epsilon")?
            .ok_or_else(|| bad("norm_epsilon is missing".into()))?;
        put("attention.layer_norm_epsilon", Value::F32(eps));
    } else {
        let eps = f
            .num("rms_norm_eps")?
            .ok_or_else(|| bad("rms_norm_eps is missing".into()))?;
        put("attention.layer_norm_rms_epsilon", Value::F32(eps));
    }
    if let Some(hd) = head_dim {
        put("attention.key_length", u32v(hd));
        put("attention.value_length", u32v(hd));
    }
    let hd = head_dim.unwrap_or(dim / n_head);
    if matches!(
        arch,
        Arch::Llama | Arch::Smollm3 | Arch::Granite | Arch::Phi3 | Arch::Deci
    ) {
        // Partial rotary embeddings (Phi-4-mini: 0.75), as llama.cpp's converter rounds them.
        let rot = match f.num("partial_rotary_factor")? {
            Some(p) if p != 1.0 => (p as f64 * dim as f64) as u64 / n_head,
            _ => hd,
        };
        put("rope.dimension_count", u32v(rot));
    }
    if let Some(v) = f.count("vocab_size")? {
        put("vocab_size", u32v(v));
    }
    let mut rope_freqs = None;
    rope_scaling(
        &rope,
        ctx,
        hd,
        theta.unwrap_or(10000.0),
        &mut put,
        &mut rope_freqs,
    )?;
    family_keys(arch, &f, n_layer, &mut put)?;
    if arch == Arch::Mistral3 {
        ministral3_keys(&f, &rope, &mut put)?;
    }

    let tied = Fields(top)
        .flag("tie_word_embeddings")?
        .or(f.flag("tie_word_embeddings")?)
        .unwrap_or(matches!(
            arch,
            Arch::Gemma2 | Arch::Gemma3 | Arch::Starcoder2
        ));
    let dtype = match f
        .get("torch_dtype")
        .or(f.get("dtype"))
        .or(top.get("torch_dtype"))
    {
        None => None,
        Some(v) => Some(match v.as_str() {
            Some("float32") => "F32",
            Some("float16") => "F16",
            Some("bfloat16") => "BF16",
            _ => {
                return Err(bad(format!(
                    "torch_dtype is {v}; supported: float32, float16, bfloat16"
                )))
            }
        }),
    };
    let experts = match arch {
        Arch::GptOss => Some((
            f.need_count("num_local_experts")? as usize,
            f.need_count("intermediate_size")? as usize,
        )),
        _ => None,
    };
    Ok(HfConfig {
        arch,
        n_head: n_head as usize,
        n_kv_head: n_kv_head as usize,
        layer_kv_heads: deci.map(|d| d.kv_heads.iter().map(|&n| n as usize).collect()),
        dim: dim as usize,
        experts,
        tied,
        dtype,
        keys,
        rope_freqs,
    })
}

/// `rope_parameters` (newer transformers) or `rope_scaling`, as an object (empty if none).
fn rope_params(f: &Fields) -> Result<Map<String, Json>, ModelError> {
    match f.get("rope_parameters").or(f.get("rope_scaling")) {
        None => Ok(Map::new()),
        Some(Json::Object(m)) => Ok(m.clone()),
        Some(v) => Err(bad(format!("rope_scaling is {v}, not an object"))),
    }
}

/// The RoPE scaling dict as llama.cpp's keys: linear and YaRN as keys, Llama 3's as the
/// frequency factors tensor; any other type is refused.
fn rope_scaling(
    rope: &Map<String, Json>,
    ctx: u64,
    head_dim: u64,
    base: f32,
    put: &mut impl FnMut(&str, Value),
    rope_freqs: &mut Option<Vec<f32>>,
) -> Result<(), ModelError> {
    let r = Fields(rope);
    let ty = r
        .get("rope_type")
        .or(r.get("type"))
        .and_then(Json::as_str)
        .unwrap_or("default");
    let factor = r.num("factor")?;
    let orig = r.count("original_max_position_embeddings")?;
    match ty {
        "default" => {}
        "linear" => {
            put("rope.scaling.type", Value::String("linear".into()));
            put("rope.scaling.factor", Value::F32(factor.unwrap_or(1.0)));
        }
        "yarn" => {
            put("rope.scaling.type", Value::String("yarn".into()));
            put("rope.scaling.factor", Value::F32(factor.unwrap_or(1.0)));
            put(
                "rope.scaling.original_context_length",
                Value::U32(orig.unwrap_or(ctx) as u32),
            );
            for (hf, key) in [
                ("beta_fast", "rope.scaling.yarn_beta_fast"),
                ("beta_slow", "rope.scaling.yarn_beta_slow"),
                ("attention_factor", "rope.scaling.attn_factor"),
                ("attn_factor", "rope.scaling.attn_factor"),
            ] {
                if let Some(v) = r.num(hf)? {
                    put(key, Value::F32(v));
                }
            }
        }
        "llama3" => {
            let factor = factor.unwrap_or(8.0);
            let low = r.num("low_freq_factor")?.unwrap_or(1.0);
            let high = r.num("high_freq_factor")?.unwrap_or(4.0);
            let old = orig.unwrap_or(8192) as f32;
            *rope_freqs = Some(llama3_factors(
                head_dim as usize,
                base,
                factor,
                low,
                high,
                old,
            ));
        }
        other => {
            return Err(ModelError::Unimplemented(format!(
                "config.json rope_scaling type '{other}'"
            )))
        }
    }
    Ok(())
}

/// Llama 3.1's per-pair frequency divisors, computed as llama.cpp's converter does.
fn llama3_factors(hd: usize, base: f32, factor: f32, low: f32, high: f32, old: f32) -> Vec<f32> {
    let (low_wavelen, high_wavelen) = (old / low, old / high);
    (0..hd / 2)
        .map(|i| {
            let freq = 1.0 / base.powf((2 * i) as f32 / hd as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// The keys particular to one family; settings tuili does not implement are refused here,
/// with the config.json name, rather than dropped.
fn family_keys(
    arch: Arch,
    f: &Fields,
    n_layer: u64,
    put: &mut impl FnMut(&str, Value),
) -> Result<(), ModelError> {
    match arch {
        Arch::Qwen3Moe => {
            put(
                "expert_count",
                Value::U32(f.need_count("num_experts")? as u32),
            );
            put(
                "expert_used_count",
                Value::U32(f.need_count("num_experts_per_tok")? as u32),
            );
            put(
                "expert_feed_forward_length",
                Value::U32(f.need_count("moe_intermediate_size")? as u32),
            );
            if f.flag("norm_topk_prob")? == Some(false) {
                return Err(ModelError::Unimplemented(
                    "config.json norm_topk_prob = false (unnormalised expert weights)".into(),
                ));
            }
            let dense = f.get("mlp_only_layers").and_then(Json::as_array);
            if f.count("decoder_sparse_step")?.unwrap_or(1) != 1
                || dense.is_some_and(|d| !d.is_empty())
            {
                return Err(ModelError::Unimplemented(
                    "config.json decoder_sparse_step/mlp_only_layers (dense layers among MoE ones)"
                        .into(),
                ));
            }
        }
        Arch::Gemma3 => {
            if let Some(w) = f.count("sliding_window")? {
                put("attention.sliding_window", Value::U32(w as u32));
            }
            put(
                "rope.freq_base_swa",
                Value::F32(f.num("rope_local_base_freq")?.unwrap_or(10000.0)),
            );
            if let Some(c) = f.num("final_logit_softcapping")? {
                put("final_logit_softcapping", Value::F32(c));
            }
            gemma3_pattern(f, n_layer, put)?;
            let hd = f.count("head_dim")?.unwrap_or(256);
            if let Some(q) = f.count("query_pre_attn_scalar")? {
                if q != hd {
                    return Err(ModelError::Unimplemented(format!(
                        "config.json query_pre_attn_scalar {q} other than head_dim {hd}"
                    )));
                }
            }
        }
        Arch::Gemma2 => {
            // The converter writes all three; transformers' defaults when a config omits one.
            put(
                "attention.sliding_window",
                Value::U32(f.count("sliding_window")?.unwrap_or(4096) as u32),
            );
            for (k, default) in [
                ("attn_logit_softcapping", 50.0),
                ("final_logit_softcapping", 30.0),
            ] {
                put(k, Value::F32(f.num(k)?.unwrap_or(default)));
            }
            // llama.cpp's 1/sqrt of the head size (of dim / heads for the 27B model).
            let hd = f.count("head_dim")?.unwrap_or(256);
            let dim = f.need_count("hidden_size")?;
            let n_head = f.need_count("num_attention_heads")?;
            let want = if n_layer == 46 { dim / n_head } else { hd };
            if let Some(q) = f.count("query_pre_attn_scalar")? {
                if q != want {
                    return Err(ModelError::Unimplemented(format!(
                        "config.json query_pre_attn_scalar {q} other than {want}"
                    )));
                }
            }
            check_alternating(f, n_layer)?;
        }
        Arch::GptOss => gpt_oss_keys(f, n_layer, put)?,
        Arch::Starcoder2 => {
            if f.flag("use_bias")? == Some(false) {
                return Err(ModelError::Unimplemented(
                    "config.json use_bias = false (starcoder2 without biases)".into(),
                ));
            }
            if let Some(a) = f.get("hidden_act").and_then(Json::as_str) {
                if a != "gelu_pytorch_tanh" {
                    return Err(ModelError::Unimplemented(format!(
                        "config.json hidden_act {a} (starcoder2's is gelu_pytorch_tanh)"
                    )));
                }
            }
        }
        Arch::Granite => {
            for (hf, key) in [
                ("embedding_multiplier", "embedding_scale"),
                ("residual_multiplier", "residual_scale"),
                ("attention_multiplier", "attention.scale"),
                ("logits_scaling", "logit_scale"),
            ] {
                if let Some(v) = f.num(hf)? {
                    put(key, Value::F32(v));
                }
            }
        }
        Arch::Phi3 => {
            if let Some(o) = f.count("original_max_position_embeddings")? {
                put("rope.scaling.original_context_length", Value::U32(o as u32));
            }
            if let Some(w) = f.count("sliding_window")? {
                put("attention.sliding_window", Value::U32(w as u32));
            }
        }
        Arch::Smollm3 => {
            // tuili (like llama.cpp) leaves RoPE out of every 4th layer; check the config agrees.
            if let Some(flags) = f.get("no_rope_layers").and_then(Json::as_array) {
                let want = (0..n_layer).map(|i| u64::from((i + 1) % 4 != 0));
                if flags.len() as u64 != n_layer
                    || !flags.iter().map(Json::as_u64).eq(want.map(Some))
                {
                    return Err(ModelError::Unimplemented(
                        "config.json no_rope_layers other than every 4th layer".into(),
                    ));
                }
            }
        }
        _ => {}
    }
    if arch != Arch::Gemma2 && f.num("attn_logit_softcapping")?.is_some_and(|c| c != 0.0) {
        return Err(ModelError::Unimplemented(
            "config.json attn_logit_softcapping".into(),
        ));
    }
    Ok(())
}

/// deci's per-layer shapes, from `block_configs` as llama.cpp's converter reads them.
struct DeciBlocks {
    heads: Vec<u64>,
    kv_heads: Vec<u64>,
    ffn: Vec<u64>,
}

/// `block_configs` (Llama-3.1/3.3-Nemotron): per layer `attention.n_heads_in_group` (K/V heads
/// = heads / it; `null`: no attention, or with `replace_with_linear` one linear map) and
/// `ffn.ffn_mult` (width `2·mult·hidden/3` rounded up to a multiple of 256).
fn deci_blocks(f: &Fields, n_layer: u64, dim: u64, n_head: u64) -> Result<DeciBlocks, ModelError> {
    let blocks = f
        .get("block_configs")
        .and_then(Json::as_array)
        .ok_or_else(|| bad("block_configs is missing (DeciLM-7B's form is not read)".into()))?;
    if blocks.len() as u64 != n_layer {
        return Err(bad(format!(
            "block_configs has {} blocks for {n_layer} layers",
            blocks.len()
        )));
    }
    let mut d = DeciBlocks {
        heads: Vec::new(),
        kv_heads: Vec::new(),
        ffn: Vec::new(),
    };
    for (i, b) in blocks.iter().enumerate() {
        let part = |k: &str| {
            b.get(k)
                .and_then(Json::as_object)
                .map(Fields)
                .ok_or_else(|| bad(format!("block_configs[{i}].{k} is missing")))
        };
        let (att, ffn) = (part("attention")?, part("ffn")?);
        let (h, kv) = match att.count("n_heads_in_group")? {
            Some(g) if n_head.is_multiple_of(g) => (n_head, n_head / g),
            Some(g) => {
                return Err(bad(format!(
                    "block_configs[{i}].attention.n_heads_in_group {g} does not divide \
                     num_attention_heads {n_head}"
                )))
            }
            None if att.flag("replace_with_linear")? == Some(true) => (n_head, 0),
            None => (0, 0),
        };
        if ffn.flag("replace_with_linear")? == Some(true) {
            return Err(ModelError::Unimplemented(format!(
                "config.json block_configs[{i}].ffn.replace_with_linear (a linear feed-forward block)"
            )));
        }
        let width = match ffn.num("ffn_mult")? {
            Some(m) if m > 0.0 => {
                let n = (2.0 * m as f64 * dim as f64 / 3.0) as u64;
                n.div_ceil(256) * 256
            }
            // A layer without a feed-forward block: refused when the model loads.
            _ => 0,
        };
        d.heads.push(h);
        d.kv_heads.push(kv);
        d.ffn.push(width);
    }
    Ok(d)
}

/// `layer_types`, when given, must be llama.cpp's fixed pattern for Gemma 2 and gpt-oss:
/// even layers sliding, odd ones full.
fn check_alternating(f: &Fields, n_layer: u64) -> Result<(), ModelError> {
    if let Some(types) = f.get("layer_types").and_then(Json::as_array) {
        let alternating = types.len() as u64 == n_layer
            && types.iter().enumerate().all(|(i, t)| {
                t.as_str()
                    == Some(if i % 2 == 0 {
                        "sliding_attention"
                    } else {
                        "full_attention"
                    })
            });
        if !alternating {
            return Err(ModelError::Unimplemented(
                "config.json layer_types other than sliding and full layers in turn".into(),
            ));
        }
    }
    Ok(())
}

/// gpt-oss (`GptOssModel` of llama.cpp's converter): the expert counts, the window, and
/// the settings that llama.cpp fixes (the SwiGLU clamp, the layer pattern, MXFP4 as the
/// only quantization), checked rather than dropped. YaRN's `truncate` is not written: like
/// llama.cpp, tuili rounds YaRN's correction range to whole dimensions either way.
fn gpt_oss_keys(
    f: &Fields,
    n_layer: u64,
    put: &mut impl FnMut(&str, Value),
) -> Result<(), ModelError> {
    let n_expert = f.need_count("num_local_experts")?;
    let used = match f.count("num_experts_per_tok")? {
        Some(k) => k,
        None => f.need_count("experts_per_token")?,
    };
    if used > n_expert {
        return Err(bad(format!(
            "num_experts_per_tok is {used}, more than num_local_experts {n_expert}"
        )));
    }
    put("expert_count", Value::U32(n_expert as u32));
    put("expert_used_count", Value::U32(used as u32));
    put(
        "attention.sliding_window",
        Value::U32(f.need_count("sliding_window")? as u32),
    );
    put(
        "expert_feed_forward_length",
        Value::U32(f.need_count("intermediate_size")? as u32),
    );
    check_alternating(f, n_layer)?;
    let limit = tuili_backend::ops::SWIGLU_OAI_LIMIT;
    if let Some(l) = f.num("swiglu_limit")?.filter(|&l| l != limit) {
        return Err(ModelError::Unimplemented(format!(
            "config.json swiglu_limit {l} (gpt-oss's SwiGLU clamps at {limit})"
        )));
    }
    if f.flag("attention_bias")? == Some(false) {
        return Err(ModelError::Unimplemented(
            "config.json attention_bias = false (gpt-oss without attention biases)".into(),
        ));
    }
    if let Some(q) = f.get("quantization_config") {
        let method = q.get("quant_method").and_then(Json::as_str);
        if method != Some("mxfp4") {
            return Err(ModelError::Unimplemented(format!(
                "config.json quantization_config.quant_method {} (gpt-oss's experts are read \
                 as mxfp4 or unquantized)",
                method.unwrap_or("(missing)")
            )));
        }
    }
    Ok(())
}

/// Ministral 3's YaRN (`ministral3` text model): the log multiplier `mscale_all_dim` and the
/// Llama-4 attention temperature `llama_4_scaling_beta`, as llama.cpp's converter writes them.
/// (Mistral Small 3.x's text model, `mistral`, has neither.)
fn ministral3_keys(
    f: &Fields,
    rope: &Map<String, Json>,
    put: &mut impl FnMut(&str, Value),
) -> Result<(), ModelError> {
    if f.get("model_type").and_then(Json::as_str) != Some("ministral3") {
        return Ok(());
    }
    let r = Fields(rope);
    if r.get("rope_type").and_then(Json::as_str) != Some("yarn") {
        return Err(bad("a ministral3 model without YaRN rope_parameters".into()));
    }
    for (hf, key) in [
        ("mscale_all_dim", "rope.scaling.yarn_log_multiplier"),
        ("llama_4_scaling_beta", "attention.temperature_scale"),
    ] {
        let v = r
            .num(hf)?
            .ok_or_else(|| bad(format!("rope_parameters.{hf} is missing")))?;
        put(key, Value::F32(v));
    }
    if r.num("mscale")?.is_some_and(|m| m != 1.0) {
        return Err(ModelError::Unimplemented(
            "config.json rope_parameters.mscale other than 1".into(),
        ));
    }
    Ok(())
}

/// Gemma 3's local/global layer pattern: `layer_types` (newer files) or
/// `sliding_window_pattern`; written only when it is not llama.cpp's built-in period of 6.
fn gemma3_pattern(
    f: &Fields,
    n_layer: u64,
    put: &mut impl FnMut(&str, Value),
) -> Result<(), ModelError> {
    let flags: Vec<bool> = if let Some(types) = f.get("layer_types").and_then(Json::as_array) {
        if types.len() as u64 != n_layer {
            return Err(bad(format!(
                "layer_types has {} entries for {n_layer} layers",
                types.len()
            )));
        }
        types
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(bad(format!("layer_types holds {t}"))),
            })
            .collect::<Result<_, _>>()?
    } else {
        let p = f.count("sliding_window_pattern")?.unwrap_or(6);
        (0..n_layer).map(|i| i % p < p - 1).collect()
    };
    let default: Vec<bool> = (0..n_layer).map(|i| i % 6 < 5).collect();
    if flags != default {
        put(
            "attention.sliding_window_pattern",
            Value::Array(flags.into_iter().map(Value::Bool).collect()),
        );
    }
    Ok(())
}
