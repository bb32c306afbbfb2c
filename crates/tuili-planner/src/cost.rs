//! The model side of a plan, read from a loaded model's own spec (the one the forward
//! pass runs), so that nothing is re-derived from metadata: the bytes of every matrix
//! per element type, KV bytes per token, FLOPs per token, active parameters.

use std::collections::BTreeSet;

use tuili_gguf::{GgmlType, GgufFile};
use tuili_models::ops::{Buf, Glu, MatId};
use tuili_models::spec::{Ffn, FfnSpec, LayerSpec};
use tuili_models::{KvType, Model};

use crate::chip::Precision;
use crate::PlanError;

/// How a matrix's weights are stored, which sets its bytes and the precision its
/// products run at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// A GGUF element type.
    Ggml(GgmlType),
    /// 8-bit floats, one byte a weight (no GGUF type: a what-if for chips with FP8).
    Fp8,
    /// 4-bit integers in groups of 32 with an f16 scale, 4.5 bits a weight (a what-if
    /// for chips with INT4).
    Int4,
}

impl WeightFormat {
    /// Reads `q8_0`, `Q4_K`, `f16`, `bf16`, `fp8`, `int4`, ...
    pub fn parse(name: &str) -> Result<WeightFormat, PlanError> {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "fp8" => return Ok(WeightFormat::Fp8),
            "int4" => return Ok(WeightFormat::Int4),
            _ => {}
        }
        // The activation-only types are not weight formats.
        let weights = GgmlType::ALL
            .into_iter()
            .filter(|t| !matches!(t, GgmlType::Q8_1 | GgmlType::Q8_K));
        let names: Vec<String> = weights.clone().map(|t| t.name().to_lowercase()).collect();
        weights
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(&lower))
            .map(WeightFormat::Ggml)
            .ok_or_else(|| {
                PlanError::BadOption(format!(
                    "--quant '{name}' is not a weight format (one of {}, fp8, int4)",
                    names.join(", ")
                ))
            })
    }

    /// Bytes of `rows` rows of `cols` weights.
    pub fn bytes(self, rows: usize, cols: usize) -> u64 {
        let n = (rows * cols) as u64;
        match self {
            WeightFormat::Ggml(t) => {
                let bs = t.block_size() as u64;
                // A row that is not whole blocks cannot be stored in this type; count it
                // as if padded, which is what a converter would have to do.
                let blocks_per_row = (cols as u64).div_ceil(bs);
                blocks_per_row * rows as u64 * t.type_size() as u64
            }
            WeightFormat::Fp8 => n,
            WeightFormat::Int4 => n / 32 * 18 + (n % 32).div_ceil(2),
        }
    }

    /// The precision a product with these weights runs at. A product is as narrow as
    /// the wider of its operands: GGUF engines quantize the activations of a product
    /// with quantized weights to 8 bits (Q8_0, Q8_1, Q8_K), so 2- to 8-bit GGUF types
    /// run in 8-bit integer units, whatever their weights' width; only `int4` (4-bit
    /// weights and activations) uses 4-bit units where the chip has them (see
    /// [`crate::chip::Compute::ops_per_s`]).
    pub fn precision(self) -> Precision {
        match self {
            WeightFormat::Ggml(GgmlType::F32) => Precision::Fp32,
            WeightFormat::Ggml(GgmlType::F16 | GgmlType::BF16) => Precision::Bf16,
            WeightFormat::Ggml(_) => Precision::Int8,
            WeightFormat::Int4 => Precision::Int4,
            WeightFormat::Fp8 => Precision::Fp8,
        }
    }

    /// The name `--quant` takes.
    pub fn name(self) -> String {
        match self {
            WeightFormat::Ggml(t) => t.name().to_lowercase(),
            WeightFormat::Fp8 => "fp8".into(),
            WeightFormat::Int4 => "int4".into(),
        }
    }
}

/// One weight matrix: `[rows, cols]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MatCost {
    /// Output width.
    pub rows: usize,
    /// Input width.
    pub cols: usize,
    /// Storage.
    pub format: WeightFormat,
    /// Bytes of the whole matrix.
    pub bytes: u64,
}

impl MatCost {
    /// Multiply-adds per token: `rows * cols`.
    pub fn macs(&self) -> u64 {
        (self.rows * self.cols) as u64
    }
}

/// A mixture of experts: the router picks `top_k` of `n_expert` per token.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpertsCost {
    /// Experts in the layer.
    pub n_expert: usize,
    /// Experts per token.
    pub top_k: usize,
    /// The matrices of one expert (gate, up, down); every expert has the same.
    pub expert: Vec<MatCost>,
}

impl ExpertsCost {
    /// Bytes of one expert.
    pub fn expert_bytes(&self) -> u64 {
        self.expert.iter().map(|m| m.bytes).sum()
    }

    /// Multiply-adds of one expert per token.
    pub fn expert_macs(&self) -> u64 {
        self.expert.iter().map(MatCost::macs).sum()
    }
}

/// Values one token passes through the vector ops of a layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VectorOps {
    /// Values normalised (block norms, post-norms, QK-norms).
    pub norm: usize,
    /// Values through the feed-forward gate (`top_k` experts' widths for a mixture).
    pub glu: usize,
    /// The gate's activation.
    pub act: Glu,
    /// Values rotated by RoPE (queries and keys; 0 for a layer without positions).
    pub rope: usize,
}

/// One transformer block.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerCost {
    /// Matrices every token goes through: Q, K, V, O, then the dense feed-forward block
    /// or the router.
    pub dense: Vec<MatCost>,
    /// The experts, for a mixture-of-experts layer.
    pub moe: Option<ExpertsCost>,
    /// The sliding window of a local layer (`None`: global).
    pub window: Option<usize>,
    /// Its K/V heads: 0 for a layer that does not attend over the cache (deci's
    /// attention-free and linear-attention layers).
    pub kv_heads: usize,
    /// The vector ops between the products.
    pub vector: VectorOps,
}

/// What the planner needs of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCost {
    /// `general.architecture`.
    pub arch: String,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_kv_head: usize,
    /// Size of a head.
    pub head_dim: usize,
    /// Hidden size.
    pub dim: usize,
    /// Trained context.
    pub ctx_len: usize,
    /// The blocks.
    pub layers: Vec<LayerCost>,
    /// Token embedding `[vocab, dim]` (one row is read per token).
    pub embed: MatCost,
    /// Output projection `[vocab, dim]`; the embedding itself when `tied`.
    pub output: MatCost,
    /// Whether the output is the embedding.
    pub tied: bool,
    /// Bytes of the tensors that are not matrices (norms, biases), as stored.
    pub vector_bytes: u64,
    /// Elements of those tensors.
    pub vector_params: u64,
}

/// How the KV cache stores keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvFormat {
    /// Keys.
    pub k: KvType,
    /// Values.
    pub v: KvType,
}

impl ModelCost {
    /// Reads the cost of `model`, whose file is `file` (for the stored sizes of the
    /// vectors, which the model keeps dequantized).
    pub fn of(model: &Model, file: &GgufFile) -> ModelCost {
        let cfg = model.config();
        let spec = model.spec();
        let w = model.weights();
        let mat = |id| {
            let m = w.mat(id);
            MatCost {
                rows: m.rows(),
                cols: m.cols(),
                format: WeightFormat::Ggml(m.ty()),
                bytes: m.bytes().len() as u64,
            }
        };
        let ffn_mats = |f: &FfnSpec| vec![mat(f.gate), mat(f.up), mat(f.down)];
        let layers = spec
            .layers
            .iter()
            .map(|l| {
                let mut dense: Vec<MatCost> = l
                    .qkv
                    .iter()
                    .flat_map(|q| [q.wq, q.wk, q.wv])
                    .map(mat)
                    .collect();
                dense.extend(l.wo.map(mat));
                let moe = match &l.ffn {
                    Ffn::Dense(f) => {
                        dense.extend(ffn_mats(f));
                        None
                    }
                    Ffn::Plain(f) => {
                        dense.extend([mat(f.up), mat(f.down)]);
                        None
                    }
                    Ffn::Moe(m) => {
                        dense.push(mat(m.router));
                        Some(ExpertsCost {
                            n_expert: m.experts.len(),
                            top_k: m.top_k,
                            expert: m.experts.first().map(ffn_mats).unwrap_or_default(),
                        })
                    }
                };
                LayerCost {
                    dense,
                    moe,
                    window: l.attn.window,
                    kv_heads: if l.qkv.is_some() {
                        l.widths.n_kv_head
                    } else {
                        0
                    },
                    vector: vector_ops(
                        l,
                        cfg.dim,
                        l.widths.of(Buf::Q) + l.widths.of(Buf::K),
                        |id| w.mat(id).rows(),
                    ),
                }
            })
            .collect();
        // Everything in the file that the model does not hold as a matrix. Experts are
        // views named `tensor[e]` into one stacked tensor.
        let mat_names: BTreeSet<&str> = w
            .mat_names
            .iter()
            .map(|n| n.split_once('[').map_or(n.as_str(), |(base, _)| base))
            .collect();
        let vectors = file
            .tensors()
            .iter()
            .filter(|t| !mat_names.contains(t.name.as_str()));
        let (vector_bytes, vector_params) =
            vectors.fold((0, 0), |(b, p), t| (b + t.n_bytes, p + t.n_elements()));
        ModelCost {
            arch: cfg.arch.name().to_string(),
            n_head: cfg.n_head,
            n_kv_head: cfg.n_kv_head,
            head_dim: cfg.head_dim,
            dim: cfg.dim,
            ctx_len: cfg.ctx_len,
            layers,
            embed: mat(spec.embed),
            output: mat(spec.output),
            tied: spec.output == spec.embed,
            vector_bytes,
            vector_params,
        }
    }

    /// The same model with every matrix stored as `format` (vectors unchanged).
    pub fn requantized(&self, format: WeightFormat) -> ModelCost {
        let re = |m: &MatCost| MatCost {
            format,
            bytes: format.bytes(m.rows, m.cols),
            ..m.clone()
        };
        let mut out = self.clone();
        for l in &mut out.layers {
            l.dense = l.dense.iter().map(re).collect();
            if let Some(e) = &mut l.moe {
                e.expert = e.expert.iter().map(re).collect();
            }
        }
        out.embed = re(&self.embed);
        out.output = re(&self.output);
        out
    }

    /// Layers in the model.
    pub fn n_layer(&self) -> usize {
        self.layers.len()
    }

    /// Every matrix of the model once, with how many copies of it there are (experts).
    fn all_mats(&self) -> impl Iterator<Item = (&MatCost, u64)> {
        let layer = self.layers.iter().flat_map(|l| {
            let dense = l.dense.iter().map(|m| (m, 1u64));
            let experts = l
                .moe
                .iter()
                .flat_map(|e| e.expert.iter().map(move |m| (m, e.n_expert as u64)));
            dense.chain(experts)
        });
        let output = (!self.tied).then_some((&self.output, 1));
        std::iter::once((&self.embed, 1)).chain(output).chain(layer)
    }

    /// Bytes of all weights, as stored (all experts).
    pub fn weight_bytes(&self) -> u64 {
        self.all_mats().map(|(m, n)| m.bytes * n).sum::<u64>() + self.vector_bytes
    }

    /// Bytes per storage format (vectors under `vectors`), largest first.
    pub fn bytes_by_format(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = Vec::new();
        let mut add = |name: String, b: u64| match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v += b,
            None => out.push((name, b)),
        };
        for (m, n) in self.all_mats() {
            add(m.format.name(), m.bytes * n);
        }
        add("vectors".into(), self.vector_bytes);
        out.sort_by_key(|e| std::cmp::Reverse(e.1));
        out
    }

    /// Parameters (all experts).
    pub fn params(&self) -> u64 {
        self.all_mats().map(|(m, n)| m.macs() * n).sum::<u64>() + self.vector_params
    }

    /// Parameters one token goes through: `top_k` experts of each mixture, and the
    /// embedding table counted once (as a lookup) only when it is not also the output.
    pub fn active_params(&self) -> u64 {
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                let dense: u64 = l.dense.iter().map(MatCost::macs).sum();
                let experts = l
                    .moe
                    .as_ref()
                    .map_or(0, |e| e.top_k as u64 * e.expert_macs());
                dense + experts
            })
            .sum();
        layers + self.output.macs() + self.vector_params
    }

    /// Bytes one position of layer `l` adds to the KV cache.
    pub fn kv_bytes_per_layer_position(&self, l: &LayerCost, kv: KvFormat) -> u64 {
        let width = l.kv_heads * self.head_dim;
        (kv.k.bytes(width) + kv.v.bytes(width)) as u64
    }

    /// Bytes each token adds to a sequence's KV cache once local layers hold their
    /// whole window: the global layers only.
    pub fn kv_bytes_per_token(&self, kv: KvFormat) -> u64 {
        (self.layers.iter())
            .filter(|l| l.window.is_none())
            .map(|l| self.kv_bytes_per_layer_position(l, kv))
            .sum()
    }

    /// Bytes of one sequence's KV cache at `ctx` positions: local layers keep only
    /// their window.
    pub fn kv_bytes(&self, ctx: usize, kv: KvFormat) -> u64 {
        self.layers
            .iter()
            .map(|l| {
                let positions = l.window.map_or(ctx, |w| w.min(ctx)) as u64;
                positions * self.kv_bytes_per_layer_position(l, kv)
            })
            .sum()
    }

    /// Positions a token at position `pos` attends to in a layer of window `window`.
    pub fn attended(pos: usize, window: Option<usize>) -> u64 {
        let seen = pos + 1;
        window.map_or(seen, |w| w.min(seen)) as u64
    }

    /// FLOPs of attention (scores and the weighted sum: 4 per head dimension per
    /// attended position) for `n` tokens at positions `start..start + n`, summed over
    /// the layers.
    pub fn attention_flops(&self, start: usize, n: usize) -> f64 {
        let per_pos = 4.0 * (self.n_head * self.head_dim) as f64;
        self.layers
            .iter()
            .map(|l| attended_sum(start, n, l.window) as f64 * per_pos)
            .sum()
    }

    /// FLOPs of one decoded token at position `pos` (2 per active multiply-add, the
    /// output projection once, plus attention).
    pub fn decode_flops(&self, pos: usize) -> f64 {
        2.0 * self.matrix_macs_per_token() as f64 + self.attention_flops(pos, 1)
    }

    /// FLOPs of a prefill of `n` tokens from an empty cache, per token: every token
    /// goes through the layers, only the last through the output projection.
    pub fn prefill_flops_per_token(&self, n: usize) -> f64 {
        let n = n.max(1);
        let layers = 2.0 * (self.matrix_macs_per_token() - self.output.macs()) as f64 * n as f64;
        let output = 2.0 * self.output.macs() as f64;
        (layers + output + self.attention_flops(0, n)) / n as f64
    }

    /// Multiply-adds of the matrices one token goes through, output included.
    fn matrix_macs_per_token(&self) -> u64 {
        self.active_params() - self.vector_params
    }
}

/// The vector ops of layer `l`: `dim`-wide norms, QK-norms and RoPE over the `qk`
/// values of Q and K, the gate over the feed-forward width (`rows` of its gate matrix).
fn vector_ops(l: &LayerSpec, dim: usize, qk: usize, rows: impl Fn(MatId) -> usize) -> VectorOps {
    let block_norms = [l.attn_norm, l.post_attn_norm, l.ffn_norm, l.post_ffn_norm];
    let norm = dim * block_norms.iter().flatten().count()
        + l.qkv.and_then(|q| q.qk_norm).map_or(0, |_| qk);
    let (glu, act) = match &l.ffn {
        Ffn::Dense(f) => (rows(f.gate), f.act),
        // An ungated block: GELU over the up projection's rows (the cost of a GeGLU's).
        Ffn::Plain(f) => (rows(f.up), Glu::GeluTanh),
        Ffn::Moe(m) => match m.experts.first() {
            Some(f) => (m.top_k * rows(f.gate), f.act),
            None => (0, Glu::Silu),
        },
    };
    VectorOps {
        norm,
        glu,
        act,
        rope: l.rope.map_or(0, |_| qk),
    }
}

/// `Σ attended(p)` for `p` in `start..start + n`, in closed form.
pub fn attended_sum(start: usize, n: usize, window: Option<usize>) -> u64 {
    // Positions p + 1 for p in start..start+n: an arithmetic series, capped at w.
    let series = |a: u64, b: u64| -> u64 {
        // Σ_{x=a}^{b} x for a ≤ b (inclusive), 0 otherwise.
        if a > b {
            0
        } else {
            (a + b) * (b - a + 1) / 2
        }
    };
    let (a, b) = (start as u64 + 1, (start + n) as u64);
    if n == 0 {
        return 0;
    }
    match window {
        None => series(a, b),
        Some(w) => {
            let w = w as u64;
            if b <= w {
                series(a, b)
            } else if a > w {
                w * (b - a + 1)
            } else {
                series(a, w) + w * (b - w)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attended_sum_matches_a_loop() {
        for window in [None, Some(1), Some(5), Some(64)] {
            for start in [0, 3, 7, 100] {
                for n in [0, 1, 2, 9, 70] {
                    let direct: u64 = (start..start + n)
                        .map(|p| ModelCost::attended(p, window))
                        .sum();
                    assert_eq!(
                        attended_sum(start, n, window),
                        direct,
                        "{window:?} {start} {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn formats_parse_and_count_bytes() {
        let q4 = WeightFormat::parse("Q4_K").expect("a type");
        assert_eq!(q4, WeightFormat::Ggml(GgmlType::Q4_K));
        // 144 bytes per 256 weights.
        assert_eq!(q4.bytes(2, 512), 2 * 2 * 144);
        assert_eq!(WeightFormat::parse("q8_0").unwrap().bytes(1, 64), 68);
        assert_eq!(WeightFormat::Fp8.bytes(3, 10), 30);
        assert_eq!(WeightFormat::Int4.bytes(1, 64), 36);
        let e = WeightFormat::parse("q9").unwrap_err().to_string();
        assert!(e.contains("q9") && e.contains("q4_k"), "{e}");
        assert!(WeightFormat::parse("q8_k").is_err(), "activation-only");
        assert_eq!(q4.precision(), Precision::Int8);
        assert_eq!(WeightFormat::Int4.precision(), Precision::Int4);
        assert_eq!(
            WeightFormat::parse("bf16").unwrap().precision(),
            Precision::Bf16
        );
    }
}
