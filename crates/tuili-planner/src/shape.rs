//! The model side of a model we have no file of, from its published shape (the numbers
//! of its Hugging Face `config.json`) and a weight format as llama.cpp's quantizer lays
//! it out, so that figures measured elsewhere can be predicted.

use serde::Deserialize;
use tuili_gguf::GgmlType;
use tuili_models::ops::Glu;

use crate::cost::{LayerCost, MatCost, ModelCost, VectorOps, WeightFormat};
use crate::PlanError;

/// A dense decoder with grouped-query attention and a SwiGLU feed-forward block (the
/// Llama family's layout).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    /// The name figures refer to it by.
    pub name: String,
    /// Where the numbers come from (its `config.json`).
    pub source: String,
    /// `num_hidden_layers`.
    pub layers: usize,
    /// `hidden_size`.
    pub dim: usize,
    /// `intermediate_size`.
    pub ffn: usize,
    /// `num_attention_heads`.
    pub heads: usize,
    /// `num_key_value_heads`.
    pub kv_heads: usize,
    /// `vocab_size`.
    pub vocab: usize,
    /// `max_position_embeddings`.
    pub ctx: usize,
    /// `tie_word_embeddings`.
    pub tied: bool,
}

/// How a file's matrices are stored: one type everywhere, one of llama.cpp's mixes, or
/// a server engine's checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// `F16`: every matrix in f16.
    F16,
    /// `BF16`: every matrix in bf16 (a Hugging Face checkpoint as vLLM runs it).
    Bf16,
    /// `FP8`: the layers' matrices in 8-bit floats with 8-bit activations, embeddings
    /// and the output projection in bf16 (NVIDIA's ModelOpt and AMD's Quark FP8
    /// checkpoints, as TensorRT-LLM and vLLM run them).
    Fp8,
    /// `Q8_0`: every matrix in Q8_0.
    Q8_0,
    /// `Q4_0`: Q4_0, the output projection Q6_K.
    Q4_0,
    /// `Q4_K_M`: Q4_K; the output projection Q6_K; V and the feed-forward's down
    /// projection Q6_K in llama.cpp's `use_more_bits` layers (the first and last eighth
    /// and every third between), V in Q5_K in the other layers of an 80-layer model.
    Q4KM,
}

impl Mix {
    /// Reads `f16`, `bf16`, `fp8`, `q8_0`, `q4_0`, `q4_k_m`.
    pub fn parse(name: &str) -> Result<Mix, PlanError> {
        match name.to_ascii_lowercase().as_str() {
            "f16" => Ok(Mix::F16),
            "bf16" => Ok(Mix::Bf16),
            "fp8" => Ok(Mix::Fp8),
            "q8_0" => Ok(Mix::Q8_0),
            "q4_0" => Ok(Mix::Q4_0),
            "q4_k_m" => Ok(Mix::Q4KM),
            _ => Err(PlanError::BadOption(format!(
                "quantization '{name}' is not one of f16, bf16, fp8, q8_0, q4_0, q4_k_m"
            ))),
        }
    }
}

/// llama.cpp's `use_more_bits(i, n)`: the layers a `_M` mix gives more bits.
fn more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

impl Shape {
    /// The cost of this model stored as `mix`; norms are f32 vectors.
    pub fn cost(&self, mix: Mix) -> ModelCost {
        use GgmlType as T;
        let head_dim = self.dim / self.heads;
        let (q, kv) = (self.heads * head_dim, self.kv_heads * head_dim);
        let mat = |rows: usize, cols: usize, format: WeightFormat| MatCost {
            rows,
            cols,
            format,
            bytes: format.bytes(rows, cols),
        };
        let g = WeightFormat::Ggml;
        let base = match mix {
            Mix::F16 => g(T::F16),
            Mix::Bf16 => g(T::BF16),
            Mix::Fp8 => WeightFormat::Fp8,
            Mix::Q8_0 => g(T::Q8_0),
            Mix::Q4_0 => g(T::Q4_0),
            Mix::Q4KM => g(T::Q4_K),
        };
        let n = self.layers;
        let layers = (0..n)
            .map(|i| {
                let more = mix == Mix::Q4KM && more_bits(i, n);
                let v = match mix {
                    _ if more => g(T::Q6_K),
                    Mix::Q4KM if n == 80 => g(T::Q5_K),
                    _ => base,
                };
                let down = if more { g(T::Q6_K) } else { base };
                LayerCost {
                    dense: vec![
                        mat(q, self.dim, base),
                        mat(kv, self.dim, base),
                        mat(kv, self.dim, v),
                        mat(self.dim, q, base),
                        mat(self.ffn, self.dim, base),
                        mat(self.ffn, self.dim, base),
                        mat(self.dim, self.ffn, down),
                    ],
                    moe: None,
                    window: None,
                    kv_heads: self.kv_heads,
                    vector: VectorOps {
                        norm: 2 * self.dim,
                        glu: self.ffn,
                        act: Glu::Silu,
                        rope: q + kv,
                    },
                }
            })
            .collect();
        let (embed, output) = match mix {
            Mix::F16 | Mix::Bf16 | Mix::Q8_0 => (base, base),
            Mix::Fp8 => (g(T::BF16), g(T::BF16)),
            Mix::Q4_0 | Mix::Q4KM => (base, g(T::Q6_K)),
        };
        // Two norms per layer and the final one, f32.
        let norms = (2 * n + 1) * self.dim;
        ModelCost {
            arch: "llama".into(),
            n_head: self.heads,
            n_kv_head: self.kv_heads,
            head_dim,
            dim: self.dim,
            ctx_len: self.ctx,
            layers,
            embed: mat(self.vocab, self.dim, embed),
            output: mat(self.vocab, self.dim, output),
            tied: self.tied,
            vector_bytes: 4 * norms as u64,
            vector_params: norms as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_bits_is_llama_cpps_rule() {
        // 32 layers: 0-3, 28-31, and 6, 9, ..., 27.
        let picked: Vec<usize> = (0..32).filter(|&i| more_bits(i, 32)).collect();
        let want: Vec<usize> = (0..4).chain((6..28).step_by(3)).chain(28..32).collect();
        assert_eq!(picked, want);
    }
}
