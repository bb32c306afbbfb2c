//! What a model's forward pass does, as data: a family's loader fills a [`ModelSpec`] and
//! the one forward pass (`forward.rs`) runs it on any device.

use tuili_backend::matmul::Weight;

use crate::ops::{AttnSpec, Glu, MatId, Norm, RopeId, RopeSpec, VecId, Widths};

/// The weights of a model, named by id (what [`MatId`] and [`VecId`] index).
#[derive(Default)]
pub struct Weights {
    /// Matrices: `[rows, cols]` each.
    pub mats: Vec<Weight>,
    /// Names of the matrices, as in the file.
    pub mat_names: Vec<String>,
    /// Vectors (norm weights, biases), dequantized to f32.
    pub vecs: Vec<Vec<f32>>,
}

impl Weights {
    /// Adds a matrix.
    pub fn add_mat(&mut self, name: &str, w: Weight) -> MatId {
        self.mats.push(w);
        self.mat_names.push(name.to_string());
        MatId(self.mats.len() as u32 - 1)
    }

    /// Adds a vector.
    pub fn add_vec(&mut self, v: Vec<f32>) -> VecId {
        self.vecs.push(v);
        VecId(self.vecs.len() as u32 - 1)
    }

    /// Matrix `id`.
    pub fn mat(&self, id: MatId) -> &Weight {
        &self.mats[id.0 as usize]
    }

    /// Vector `id`.
    pub fn vec(&self, id: VecId) -> &[f32] {
        &self.vecs[id.0 as usize]
    }
}

/// How Q, K and V are projected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QkvSpec {
    /// `[q_dim, dim]`, `[kv_dim, dim]`, `[kv_dim, dim]`.
    pub wq: MatId,
    /// Keys.
    pub wk: MatId,
    /// Values.
    pub wv: MatId,
    /// Biases `[q_dim]`, `[kv_dim]`, `[kv_dim]` (qwen2).
    pub bias: Option<[VecId; 3]>,
    /// Norms of Q and K after projection: `[head_dim]` per head (qwen3, gemma3), or over
    /// the whole projection (olmo2).
    pub qk_norm: Option<[Norm; 2]>,
}

/// The feed-forward block: `down(act(x · gate) · (x · up))`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FfnSpec {
    /// `[ffn_dim, dim]`
    pub gate: MatId,
    /// `[ffn_dim, dim]`
    pub up: MatId,
    /// `[dim, ffn_dim]`
    pub down: MatId,
    /// The activation of the gate.
    pub act: Glu,
}

/// An ungated feed-forward block: `down(gelu(x · up + up_bias)) + down_bias` (StarCoder2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlainFfnSpec {
    /// `[ffn_dim, dim]`
    pub up: MatId,
    /// `[ffn_dim]`
    pub up_bias: Option<VecId>,
    /// `[dim, ffn_dim]`
    pub down: MatId,
    /// `[dim]`
    pub down_bias: Option<VecId>,
}

/// A mixture of experts: a router picks `top_k` experts per token, whose outputs are
/// summed with the router's weights.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeSpec {
    /// Router: `[n_expert, dim]`.
    pub router: MatId,
    /// Each expert's gated feed-forward block (views into the file's stacked tensors).
    pub experts: Vec<FfnSpec>,
    /// Experts per token.
    pub top_k: usize,
    /// How the router's logits become weights.
    pub gating: Gating,
    /// Whether the chosen experts' weights are divided by their sum.
    pub norm_weights: bool,
    /// Multiplies the weights after that (1 for none).
    pub weight_scale: f32,
    /// Added to the router's logits before routing (gpt-oss): `[n_expert]`.
    pub router_bias: Option<VecId>,
    /// Per expert, biases of its gate, up and down projections (gpt-oss):
    /// `[ffn]`, `[ffn]`, `[dim]`; empty for none.
    pub expert_bias: Vec<[VecId; 3]>,
}

/// The function from router logits to expert weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gating {
    /// Softmax over all experts (Qwen3-MoE, Mixtral).
    Softmax,
    /// A sigmoid per expert.
    Sigmoid,
    /// The top-k by raw logit, then a softmax over those k alone (gpt-oss).
    SoftmaxWeight,
}

/// The feed-forward block of a layer.
#[derive(Debug, Clone, PartialEq)]
pub enum Ffn {
    /// One gated block for every token.
    Dense(FfnSpec),
    /// One ungated block (GELU) for every token.
    Plain(PlainFfnSpec),
    /// A mixture of experts.
    Moe(MoeSpec),
}

/// One transformer block.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    /// The widths of this layer's buffers (head counts and feed-forward width may differ
    /// per layer: deci).
    pub widths: Widths,
    /// Norm before attention: `[dim]` (`None`: attention reads the residual stream, as in
    /// olmo2).
    pub attn_norm: Option<Norm>,
    /// Q/K/V projections; `None` for a layer without self-attention (deci): then `wo`,
    /// when present, maps the normalised input on its own ("linear attention"), and
    /// without it the layer is its feed-forward block alone.
    pub qkv: Option<QkvSpec>,
    /// RoPE of this layer; `None` for a layer without positions (NoPE).
    pub rope: Option<RopeId>,
    /// Scale and window of the attention.
    pub attn: AttnSpec,
    /// Output projection: `[dim, q_dim]` (`[dim, dim]` for linear attention).
    pub wo: Option<MatId>,
    /// Its bias: `[dim]` (gpt-oss).
    pub wo_bias: Option<VecId>,
    /// Norm of the attention output before the residual add (gemma3): `[dim]`.
    pub post_attn_norm: Option<Norm>,
    /// Norm before the feed-forward block: `[dim]` (`None`: it reads the residual stream).
    pub ffn_norm: Option<Norm>,
    /// The feed-forward block.
    pub ffn: Ffn,
    /// Norm of the feed-forward output before the residual add (gemma3): `[dim]`.
    pub post_ffn_norm: Option<Norm>,
    /// Multiplies each block's output before the residual add (granite).
    pub residual_scale: f32,
}

/// RoPE variants chosen by the context a model is served with, as llama.cpp chooses phi3's
/// LongRoPE frequency factors: `long` when the context exceeds `original_ctx`, else
/// `short` (each indexed like [`ModelSpec::ropes`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LongRope {
    /// The context the model was trained with before its extension.
    pub original_ctx: usize,
    /// For contexts up to `original_ctx`.
    pub short: Vec<RopeSpec>,
    /// For longer contexts.
    pub long: Vec<RopeSpec>,
}

/// A whole model's forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Token embedding: `[vocab, dim]`.
    pub embed: MatId,
    /// Multiplies the embedding rows (gemma3: `√dim`).
    pub embed_scale: f32,
    /// The blocks, first to last.
    pub layers: Vec<LayerSpec>,
    /// The RoPE variants the layers use.
    pub ropes: Vec<RopeSpec>,
    /// Other RoPE variants for contexts longer than the model's original one (phi3's
    /// LongRoPE): see [`LongRope`].
    pub long_rope: Option<LongRope>,
    /// Final norm: `[dim]`.
    pub out_norm: Norm,
    /// Output projection: `[vocab, dim]` (the embedding itself when tied).
    pub output: MatId,
    /// Multiplies the logits (granite: `1 / logit_scale`).
    pub logit_scale: f32,
    /// Final logit soft-capping (Gemma 2): logits become `cap · tanh(l / cap)`.
    pub final_softcap: Option<f32>,
    /// RMS norm epsilon.
    pub eps: f32,
}

impl LayerSpec {
    /// The layer's matrices, in the order the forward pass reads them.
    pub fn matrices(&self) -> Vec<MatId> {
        let mut ids: Vec<MatId> = self.qkv.iter().flat_map(|q| [q.wq, q.wk, q.wv]).collect();
        ids.extend(self.wo);
        match &self.ffn {
            Ffn::Dense(f) => ids.extend([f.gate, f.up, f.down]),
            Ffn::Plain(f) => ids.extend([f.up, f.down]),
            Ffn::Moe(m) => {
                ids.push(m.router);
                ids.extend(m.experts.iter().flat_map(|f| [f.gate, f.up, f.down]));
            }
        }
        ids
    }
}
