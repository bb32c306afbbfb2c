//! The op-level interface between the forward pass and a device.
//!
//! A family's forward pass (`forward.rs`, driven by a [`crate::spec::ModelSpec`]) is a
//! sequence of these ops and knows no device; a backend implements them and knows no
//! family. Activations live in the backend, in buffers named by [`Buf`]; weights are named
//! by the ids the model's [`crate::spec::Weights`] gives them, which a backend maps to its
//! own copies (the CPU reads the file's bytes, a GPU uploads them once).
//!
//! Every buffer has one row per token of the step, except [`Buf::Out`], which has one row
//! per token whose logits were asked for.

use tuili_backend::ops::RopeMode;
pub use tuili_backend::ops::{Glu, NormKind};

/// A weight matrix of the model: `[rows, cols]`, possibly quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MatId(pub u32);

/// An f32 vector of the model (a norm weight, a bias).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VecId(pub u32);

/// A norm: its kind, weight and optional bias (LayerNorm's), each `[width]`; the width of
/// the weight is the width of the rows it normalises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Norm {
    /// RMSNorm or LayerNorm.
    pub kind: NormKind,
    /// Multiplies the normalised row.
    pub w: VecId,
    /// Added after that.
    pub b: Option<VecId>,
}

impl From<VecId> for Norm {
    /// An RMSNorm of weight `w`, without a bias.
    fn from(w: VecId) -> Norm {
        Norm {
            kind: NormKind::Rms,
            w,
            b: None,
        }
    }
}

/// One of the model's RoPE variants (base, frequency factors, mode): an index into
/// [`crate::spec::ModelSpec::ropes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RopeId(pub u32);

/// The activation buffers of one step. Widths: `X`, `Xn`: `dim`; `Q`, `Att`: `q_dim`;
/// `K`, `V`: `kv_dim`; `Gate`, `Up`: `ffn_dim`; `Out`: `dim` (logit rows only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Buf {
    /// The residual stream.
    X,
    /// Normalised input of a block, then the block's output.
    Xn,
    /// Queries.
    Q,
    /// Keys.
    K,
    /// Values.
    V,
    /// Attention output.
    Att,
    /// Feed-forward gate, then the gated activation.
    Gate,
    /// Feed-forward up projection.
    Up,
    /// Final normalised rows whose logits are wanted.
    Out,
}

/// How one layer attends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnSpec {
    /// Multiplies `q · k` before the softmax.
    pub scale: f32,
    /// A token at position `p` sees positions `p + 1 - window ..= p`; `None`: all of
    /// `0..=p`.
    pub window: Option<usize>,
    /// Llama 4's attention temperature `(scale, floor)`: a token at position `p` multiplies
    /// its scores by `1 + scale · ln(⌊p / floor⌋ + 1)` (mistral3).
    pub temperature: Option<(f32, f32)>,
    /// Attention sinks (gpt-oss): one learned logit per query head, `[n_head]`, that
    /// joins each softmax's denominator and attends to nothing.
    pub sinks: Option<VecId>,
    /// Logit soft-capping (Gemma 2): the scaled scores become `cap · tanh(s / cap)`
    /// before the softmax.
    pub softcap: Option<f32>,
}

impl AttnSpec {
    /// Plain causal attention scaled by `scale`: no window, temperature, sinks or soft-cap
    /// (the options a family sets on top of it).
    pub fn causal(scale: f32) -> AttnSpec {
        AttnSpec {
            scale,
            window: None,
            temperature: None,
            sinks: None,
            softcap: None,
        }
    }

    /// The factor of a token's scores at position `pos`: `scale`, times the temperature.
    pub fn scale_at(&self, pos: usize) -> f32 {
        match self.temperature {
            None => self.scale,
            // In f64, as llama.cpp computes it.
            Some((s, floor)) => {
                let t = 1.0 + s as f64 * ((pos as f64 / floor as f64).floor() + 1.0).ln();
                self.scale * t as f32
            }
        }
    }
}

/// How RoPE rotates: a table of inverse frequencies and the pairing of dimensions.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeSpec {
    /// `[head_dim / 2]`, frequency factors already applied.
    pub inv_freq: Vec<f32>,
    /// Which dimensions pair.
    pub mode: RopeMode,
    /// Multiplies cos and sin (YaRN's attention factor; 1 otherwise).
    pub mscale: f32,
}

/// The ops a device runs over one step. A backend makes the step from a
/// [`crate::batch::Batch`] and the [`Widths`], sizing the buffers; each op takes named
/// buffers (see [`Buf`]). Errors are the device's (a GPU launch can fail; the CPU's never
/// do).
pub trait Ops {
    /// The device's error.
    type Error;

    /// `dst[t] = table[token t] · scale`.
    fn embed(&mut self, table: MatId, scale: f32, dst: Buf) -> Result<(), Self::Error>;

    /// The widths of the next layer's buffers (every width at most those the step was
    /// made with): head counts and the feed-forward width may change from layer to
    /// layer. Rows stay packed at the current widths.
    fn layer(&mut self, widths: &Widths) -> Result<(), Self::Error>;

    /// `outs[i] = x · wᵢᵀ` for every pair, reading `x` once (Q/K/V from one input).
    fn matmul(&mut self, x: Buf, outs: &[(MatId, Buf)]) -> Result<(), Self::Error>;

    /// `gate = act(x · w_gateᵀ) · (x · w_upᵀ)`, with `up` as scratch.
    fn matmul_glu(
        &mut self,
        x: Buf,
        w_gate: MatId,
        w_up: MatId,
        act: Glu,
        gate: Buf,
        up: Buf,
    ) -> Result<(), Self::Error>;

    /// `out[t] = Σ weight · expert(x[t])` over the experts the router picks for token
    /// `t` (see [`crate::moe::route`]); `out` may be `x`. A backend gathers each expert's
    /// tokens so that a batch reads each expert's weights once.
    fn moe(&mut self, x: Buf, moe: &crate::spec::MoeSpec, out: Buf) -> Result<(), Self::Error>;

    /// Adds `bias` to every row of `x`.
    fn add_bias(&mut self, x: Buf, bias: VecId) -> Result<(), Self::Error>;

    /// Per row: `x += delta` (when given), then `dst = norm(x) · w + b` (see [`Norm`]).
    /// The norm is over the width of `w`, so a weight of `head_dim` values normalises every
    /// head of a row on its own (per-head QK-norm). `dst` may be `x` or `delta`. When `dst`
    /// is [`Buf::Out`], only the rows that want logits are added and normalised.
    fn norm(
        &mut self,
        x: Buf,
        delta: Option<Buf>,
        n: &Norm,
        eps: f32,
        dst: Buf,
    ) -> Result<(), Self::Error>;

    /// `x = gelu(x)` element-wise (GELU's tanh form: an ungated feed-forward block).
    fn gelu(&mut self, x: Buf) -> Result<(), Self::Error>;

    /// `x += delta` (a residual add without a norm after it).
    fn add(&mut self, x: Buf, delta: Buf) -> Result<(), Self::Error>;

    /// `x *= s`.
    fn scale(&mut self, x: Buf, s: f32) -> Result<(), Self::Error>;

    /// Rotates the heads of `q` and `k` in place by each token's position.
    fn rope(&mut self, rope: RopeId, q: Buf, k: Buf) -> Result<(), Self::Error>;

    /// Stores each token's `k` and `v` rows at its position in layer `layer` of the KV
    /// pool.
    fn kv_write(&mut self, layer: usize, k: Buf, v: Buf) -> Result<(), Self::Error>;

    /// `dst` = each token's query heads attending over its own sequence's K/V of layer
    /// `layer`, causally (and within `spec.window`), GQA by the head counts of the
    /// [`Widths`].
    fn attention(
        &mut self,
        layer: usize,
        q: Buf,
        spec: &AttnSpec,
        dst: Buf,
    ) -> Result<(), Self::Error>;

    /// The logits of the rows of `x` (`Buf::Out`): `x · outputᵀ`, `[rows, vocab]`, on the
    /// host.
    fn logits(&mut self, x: Buf, output: MatId) -> Result<Vec<f32>, Self::Error>;
}

/// The widths of the step's buffers and the attention head shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Widths {
    /// `X`, `Xn`, `Out`.
    pub dim: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_kv_head: usize,
    /// Values per head.
    pub head_dim: usize,
    /// `Gate`, `Up`.
    pub ffn_dim: usize,
}

impl Widths {
    /// The widths of a layer of shape `s` in a model `dim` wide.
    pub fn of_layer(dim: usize, s: &crate::LayerShape) -> Widths {
        Widths {
            dim,
            n_head: s.n_head,
            n_kv_head: s.n_kv_head,
            head_dim: s.head_dim,
            ffn_dim: s.ffn_dim,
        }
    }

    /// Whether every buffer of `self` fits in the buffers of `max`.
    pub fn fits_in(&self, max: &Widths) -> bool {
        let bufs = [Buf::X, Buf::Q, Buf::K, Buf::Gate];
        bufs.iter().all(|&b| self.of(b) <= max.of(b)) && self.head_dim <= max.head_dim
    }

    /// The width of buffer `b`.
    pub fn of(&self, b: Buf) -> usize {
        match b {
            Buf::X | Buf::Xn | Buf::Out => self.dim,
            Buf::Q | Buf::Att => self.n_head * self.head_dim,
            Buf::K | Buf::V => self.n_kv_head * self.head_dim,
            Buf::Gate | Buf::Up => self.ffn_dim,
        }
    }
}
