//! Hyper-parameters of a model, read from GGUF metadata.

use tuili_backend::ops::RopeMode;
use tuili_backend::KvType;
use tuili_gguf::GgufFile;

use crate::{ModelError, SamplingDefaults};

/// The architectures tuili runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `llama` (SmolLM2, Llama 2/3, ...): no biases, normal RoPE, output often tied.
    Llama,
    /// `qwen2` (Qwen2, Qwen2.5): Q/K/V biases, NEOX RoPE.
    Qwen2,
    /// `qwen3` (Qwen3 dense): per-head QK-norm, NEOX RoPE.
    Qwen3,
    /// `gemma2` (Gemma 2): scaled embedding, post-norms, GeGLU, a sliding window on every
    /// other layer, and soft-capped attention scores and logits.
    Gemma2,
    /// `gemma3` (Gemma 3 text): scaled embedding, QK-norm, post-norms, GeGLU, local
    /// sliding-window layers between global ones.
    Gemma3,
    /// `qwen3moe` (Qwen3 MoE): qwen3 with a mixture of experts for feed-forward.
    Qwen3Moe,
    /// `smollm3`: llama with no RoPE on every 4th layer.
    Smollm3,
    /// `granite` (IBM Granite 3): llama with multipliers.
    Granite,
    /// `olmo2`: norms after attention and feed-forward only, full-width QK-norm.
    Olmo2,
    /// `phi3` (Phi-3, Phi-4): fused Q/K/V and gate/up projections.
    Phi3,
    /// `mistral3` (Ministral 3, Mistral Small 3.x text): llama with YaRN and an attention
    /// temperature.
    Mistral3,
    /// `gpt-oss`: biases, attention sinks, alternating sliding windows, and a mixture of
    /// MXFP4 experts with a clamped SwiGLU.
    GptOss,
    /// `starcoder2` (StarCoder2, Granite Code 20B/34B): LayerNorms, biases, an ungated
    /// GELU feed-forward block.
    Starcoder2,
    /// `deci` (Llama-3.1/3.3-Nemotron 49B/51B): llama whose layers differ in shape: their
    /// own K/V head count and feed-forward width, attention-free layers and layers whose
    /// attention is one linear map.
    Deci,
}

impl Arch {
    /// Every architecture tuili runs.
    pub const ALL: [Arch; 14] = [
        Arch::Llama,
        Arch::Qwen2,
        Arch::Qwen3,
        Arch::Qwen3Moe,
        Arch::Gemma2,
        Arch::Gemma3,
        Arch::Smollm3,
        Arch::Granite,
        Arch::Olmo2,
        Arch::Phi3,
        Arch::Mistral3,
        Arch::GptOss,
        Arch::Starcoder2,
        Arch::Deci,
    ];

    /// The `general.architecture` name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Qwen3Moe => "qwen3moe",
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3",
            Arch::Smollm3 => "smollm3",
            Arch::Granite => "granite",
            Arch::Olmo2 => "olmo2",
            Arch::Phi3 => "phi3",
            Arch::Mistral3 => "mistral3",
            Arch::GptOss => "gpt-oss",
            Arch::Starcoder2 => "starcoder2",
            Arch::Deci => "deci",
        }
    }

    /// The architecture named `name` in `general.architecture`.
    pub fn from_name(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The supported names, comma-separated (for errors).
    pub fn supported() -> String {
        Arch::ALL.map(Arch::name).join(", ")
    }
}

/// How `arch` pairs dimensions for RoPE (llama.cpp's choice per architecture).
pub(crate) fn rope_mode(arch: Arch) -> RopeMode {
    match arch {
        Arch::Llama | Arch::Smollm3 | Arch::Granite | Arch::Mistral3 | Arch::Deci => {
            RopeMode::Normal
        }
        Arch::Qwen2
        | Arch::Qwen3
        | Arch::Qwen3Moe
        | Arch::Gemma2
        | Arch::Gemma3
        | Arch::Olmo2
        | Arch::Phi3
        | Arch::GptOss
        | Arch::Starcoder2 => RopeMode::Neox,
    }
}

/// Dimensions and constants of a decoder-only transformer.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Architecture.
    pub arch: Arch,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Hidden size (`embedding_length`).
    pub dim: usize,
    /// Query heads (the most of any layer: see `layers`).
    pub n_head: usize,
    /// Key/value heads (GQA when fewer than `n_head`; the most of any layer).
    pub n_kv_head: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Hidden size of the feed-forward block (the widest of any layer).
    pub ffn_dim: usize,
    /// Each layer's head counts and feed-forward width, `[n_layer]`: the same for every
    /// layer but in `deci`, whose files give them as per-layer arrays.
    pub layers: Vec<LayerShape>,
    /// Tokens in the vocabulary (rows of `token_embd`).
    pub vocab: usize,
    /// Context length the model was trained for.
    pub ctx_len: usize,
    /// RoPE base frequency.
    pub rope_base: f32,
    /// How RoPE pairs dimensions.
    pub rope_mode: RopeMode,
    /// The norms' epsilon (RMSNorm's, or LayerNorm's in the families that have it).
    pub eps: f32,
    /// Per layer, its sliding window (`None`: a global layer), `[n_layer]`; filled by
    /// `Model::load` from the layers' specs (the KV pool keeps local layers apart).
    pub layer_windows: Vec<Option<usize>>,
    /// The sampling settings the file recommends (`general.sampling.*`): the defaults of
    /// whatever a request or the command line leaves out.
    pub sampling: SamplingDefaults,
    /// The pooling the file asks embeddings for (`{arch}.pooling_type`); `None` when
    /// unspecified.
    pub pooling: Option<crate::embedding::PoolingType>,
}

/// The shape of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerShape {
    /// Query heads (0: no attention; deci).
    pub n_head: usize,
    /// Key/value heads (0 with query heads: the attention is one linear map; deci).
    pub n_kv_head: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Hidden size of the feed-forward block.
    pub ffn_dim: usize,
}

impl LayerShape {
    /// Width of the Q projection.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of the K (and V) projection; 0 for a layer without a KV cache.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }
}

/// Largest value accepted for any dimension read from a file; guards against
/// hostile metadata sizing huge allocations.
const MAX_DIM: u64 = 1 << 20;

impl Config {
    /// Reads the configuration from `general.architecture` and `{arch}.*` keys.
    pub fn from_gguf(file: &GgufFile) -> Result<Config, ModelError> {
        let arch_name = file.get_str("general.architecture")?;
        let arch = Arch::from_name(arch_name)
            .ok_or_else(|| ModelError::UnsupportedArch(arch_name.to_string()))?;
        let a = arch.name();
        let dim_key = |k: &str| -> Result<usize, ModelError> {
            let key = format!("{a}.{k}");
            let v = file.get_u64(&key)?;
            if v == 0 || v > MAX_DIM {
                return Err(ModelError::BadConfig(format!(
                    "{key} = {v} is outside 1..={MAX_DIM}"
                )));
            }
            Ok(v as usize)
        };
        let n_layer = dim_key("block_count")?;
        let dim = dim_key("embedding_length")?;
        // Head counts and feed-forward widths: one number, or one per layer (deci, where 0
        // marks a layer without attention or K/V heads).
        let per_layer = |k: &str, default: Option<&[usize]>| -> Result<Vec<usize>, ModelError> {
            let key = format!("{a}.{k}");
            match (file.get(&key), default) {
                (None, Some(d)) => Ok(d.to_vec()),
                (Some(tuili_gguf::Value::Array(items)), _) => {
                    if items.len() != n_layer {
                        return Err(ModelError::BadConfig(format!(
                            "{key} has {} values for {n_layer} layers",
                            items.len()
                        )));
                    }
                    let least = u64::from(arch != Arch::Deci);
                    items
                        .iter()
                        .map(|v| match v.as_u64() {
                            Some(n) if (least..=MAX_DIM).contains(&n) => Ok(n as usize),
                            _ => Err(ModelError::BadConfig(format!(
                                "{key} holds {}, outside {least}..={MAX_DIM}",
                                v.describe()
                            ))),
                        })
                        .collect()
                }
                _ => Ok(vec![dim_key(k)?; n_layer]),
            }
        };
        let heads = per_layer("attention.head_count", None)?;
        let kv_heads = per_layer("attention.head_count_kv", Some(&heads))?;
        let ffn_dims = per_layer("feed_forward_length", None)?;
        let most = |v: &[usize]| v.iter().copied().max().unwrap_or(0);
        let (n_head, n_kv_head, ffn_dim) = (most(&heads), most(&kv_heads), most(&ffn_dims));
        if n_head == 0 {
            return Err(ModelError::BadConfig(format!(
                "{a}.attention.head_count is 0 in every layer"
            )));
        }
        let ctx_len = dim_key("context_length")?;
        let head_dim = match file.get(&format!("{a}.attention.key_length")) {
            Some(_) => dim_key("attention.key_length")?,
            None if dim.is_multiple_of(n_head) => dim / n_head,
            None => {
                return Err(ModelError::BadConfig(format!(
                    "{a}.attention.head_count {n_head} does not divide {a}.embedding_length \
                     {dim}, and no {a}.attention.key_length gives the head size"
                )))
            }
        };
        let layers = (0..n_layer)
            .map(|l| LayerShape {
                n_head: heads[l],
                n_kv_head: kv_heads[l],
                head_dim,
                ffn_dim: ffn_dims[l],
            })
            .collect();
        let rope_base = match file.get(&format!("{a}.rope.freq_base")) {
            Some(_) => file.get_f32(&format!("{a}.rope.freq_base"))?,
            None => 10000.0,
        };
        // RMSNorm's epsilon, else LayerNorm's (starcoder2).
        let rms_eps = format!("{a}.attention.layer_norm_rms_epsilon");
        let ln_eps = format!("{a}.attention.layer_norm_epsilon");
        let eps = match (file.get(&rms_eps), file.get(&ln_eps)) {
            (None, Some(_)) => file.get_f32(&ln_eps)?,
            _ => file.get_f32(&rms_eps)?,
        };
        let vocab = file
            .tensor("token_embd.weight")
            .ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))?
            .rows() as usize;
        let cfg = Config {
            arch,
            n_layer,
            dim,
            n_head,
            n_kv_head,
            head_dim,
            ffn_dim,
            layers,
            vocab,
            ctx_len,
            rope_base,
            rope_mode: rope_mode(arch),
            eps,
            layer_windows: vec![None; n_layer],
            sampling: SamplingDefaults::from_gguf(file)?,
            pooling: crate::embedding::PoolingType::from_gguf(file)?,
        };
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ModelError> {
        let a = self.arch.name();
        for (l, s) in self.layers.iter().enumerate() {
            let grouped = s.n_kv_head == 0 || s.n_head.is_multiple_of(s.n_kv_head);
            if !grouped || (s.n_kv_head > 0 && s.n_head == 0) {
                return Err(ModelError::BadConfig(format!(
                    "layer {l}: {a}.attention.head_count {} is not a multiple of \
                     {a}.attention.head_count_kv {}",
                    s.n_head, s.n_kv_head
                )));
            }
        }
        if !self.head_dim.is_multiple_of(2) || self.head_dim > 512 {
            return Err(ModelError::BadConfig(format!(
                "head dimension {} must be even and at most 512",
                self.head_dim
            )));
        }
        // Written so that NaN fails too.
        let in_range = self.eps > 0.0 && self.eps < 1.0 && self.rope_base > 0.0;
        if !in_range {
            return Err(ModelError::BadConfig(format!(
                "rms epsilon {} or rope base {} out of range",
                self.eps, self.rope_base
            )));
        }
        Ok(())
    }

    /// Width of the K (and V) projection: `n_kv_head * head_dim` (the widest layer's).
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    /// Whether every layer has the same shape (`n_head`, `n_kv_head`, `ffn_dim`).
    pub fn uniform_layers(&self) -> bool {
        let first = self.layers.first();
        self.layers.iter().all(|s| Some(s) == first)
    }

    /// K/V values per position summed over the layers: `Σ n_kv_head · head_dim`.
    pub fn kv_values_per_position(&self) -> usize {
        self.layers.iter().map(LayerShape::kv_dim).sum()
    }

    /// Width of the Q projection: `n_head * head_dim`.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Bytes of KV cache for `n_ctx` positions in every layer, keys stored as `k_type`
    /// and values as `v_type` (one region: local layers hold every position too).
    pub fn kv_cache_bytes(&self, n_ctx: usize, k_type: KvType, v_type: KvType) -> usize {
        let n = n_ctx * self.kv_values_per_position();
        k_type.bytes(n) + v_type.bytes(n)
    }

    /// Layers with a sliding window (local layers).
    pub fn n_local_layers(&self) -> usize {
        self.layer_windows.iter().filter(|w| w.is_some()).count()
    }

    /// The widest sliding window of the local layers; `None` when every layer is global.
    pub fn max_window(&self) -> Option<usize> {
        self.layer_windows.iter().flatten().copied().max()
    }

    /// Bytes of a sequence's KV cache at `n_ctx` positions when local layers keep only
    /// their window (see [`crate::local_blocks_needed`]: `chunk` new tokens per step, in
    /// blocks of `block_size`), keys as `k_type`, values as `v_type`.
    pub fn kv_cache_bytes_windowed(
        &self,
        n_ctx: usize,
        chunk: usize,
        block_size: usize,
        k_type: KvType,
        v_type: KvType,
    ) -> usize {
        // K/V values per position of the global and of the local layers.
        let (mut global, mut local) = (0, 0);
        for (s, w) in self.layers.iter().zip(&self.layer_windows) {
            match w {
                Some(_) => local += s.kv_dim(),
                None => global += s.kv_dim(),
            }
        }
        let positions = |per_position: usize, n: usize| {
            let n = per_position * n;
            k_type.bytes(n) + v_type.bytes(n)
        };
        let n_ctx_blocks = n_ctx.div_ceil(block_size) * block_size;
        let local_pos = match self.max_window() {
            Some(w) => {
                (crate::local_blocks_needed(w, chunk, block_size) * block_size).min(n_ctx_blocks)
            }
            None => 0,
        };
        positions(global, n_ctx_blocks) + positions(local, local_pos)
    }
}
