//! The decoder-only transformer shared by `llama` and `qwen2`: embed, then per layer
//! norm → attention → residual → norm → SwiGLU MLP → residual, then norm → logits.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

use tuili_backend::matmul::{matmul, matmul_many, matmul_swiglu, ByteSource, Weight};
use tuili_backend::ops::{add, rms_norm, rope_angles, rope_inv_freq, rope_rotate};
use tuili_backend::pool::{self, SyncPtr};
use tuili_gguf::{GgmlType, GgufFile};

use crate::attention::attention;
use crate::unimplemented;
use crate::{Arch, Config, KvCache, KvPool, ModelError};

/// Weights of one transformer block (read by other backends to upload them).
pub struct Layer {
    /// `[dim]`
    pub attn_norm: Vec<f32>,
    /// `[q_dim, dim]`
    pub wq: Weight,
    /// `[kv_dim, dim]`
    pub wk: Weight,
    /// `[kv_dim, dim]`
    pub wv: Weight,
    /// Q/K/V biases (`[q_dim]`, `[kv_dim]`, `[kv_dim]`), qwen2 only.
    pub qkv_bias: Option<(Vec<f32>, Vec<f32>, Vec<f32>)>,
    /// `[dim, q_dim]`
    pub wo: Weight,
    /// `[dim]`
    pub ffn_norm: Vec<f32>,
    /// `[ffn_dim, dim]`
    pub w_gate: Weight,
    /// `[ffn_dim, dim]`
    pub w_up: Weight,
    /// `[dim, ffn_dim]`
    pub w_down: Weight,
}

impl Layer {
    /// The weight matrices, in the order the forward pass uses them: Q, K, V, output
    /// projection, gate, up, down.
    pub fn matrices(&self) -> [&Weight; 7] {
        [
            &self.wq,
            &self.wk,
            &self.wv,
            &self.wo,
            &self.w_gate,
            &self.w_up,
            &self.w_down,
        ]
    }
}

/// A loaded model: configuration and weights (pointing into the mmap'd file).
pub struct Model {
    cfg: Config,
    /// `[vocab, dim]`
    tok_embd: Weight,
    layers: Vec<Layer>,
    /// `[dim]`
    out_norm: Vec<f32>,
    /// `[vocab, dim]`; the embedding itself when the output is tied.
    output: Weight,
    /// `[head_dim / 2]`
    inv_freq: Vec<f32>,
}

/// Reads weights out of a GGUF file, checking each tensor's shape, and notes which
/// tensors the forward pass reads.
struct Loader<'a> {
    file: &'a Arc<GgufFile>,
    used: RefCell<BTreeSet<String>>,
}

impl Loader<'_> {
    fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    /// A `[rows, cols]` matrix (GGUF dims `[cols, rows]`).
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Weight, ModelError> {
        self.used.borrow_mut().insert(name.to_string());
        let t = self
            .file
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        if t.dims != [cols as u64, rows as u64] {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                found: t.dims.clone(),
                expected: vec![cols as u64, rows as u64],
            });
        }
        // Absolute position of the tensor's bytes in the file.
        let offset =
            self.file.tensor_data(t).as_ptr() as usize - self.file.data().as_ptr() as usize;
        let src: Arc<dyn ByteSource> = self.file.clone();
        Ok(Weight::new(t.ty, rows, cols, src, offset)?)
    }

    /// A vector of `n` values, dequantized to f32.
    fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>, ModelError> {
        self.used.borrow_mut().insert(name.to_string());
        let t = self
            .file
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        if t.dims != [n as u64] {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                found: t.dims.clone(),
                expected: vec![n as u64],
            });
        }
        Ok(tuili_backend::quant::dequantize(
            t.ty,
            self.file.tensor_data(t),
            n,
        )?)
    }
}

impl Model {
    /// Loads a `llama` or `qwen2` model from an opened GGUF file.
    pub fn load(file: &Arc<GgufFile>) -> Result<Model, ModelError> {
        let cfg = Config::from_gguf(file)?;
        unimplemented::refuse_unimplemented_metadata(file, &cfg)?;
        let ld = Loader {
            file,
            used: RefCell::new(BTreeSet::new()),
        };
        let (dim, q_dim, kv_dim, ffn) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.ffn_dim);
        let tok_embd = ld.matrix("token_embd.weight", cfg.vocab, dim)?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            let qkv_bias = if cfg.arch == Arch::Qwen2 || ld.has(&n("attn_q.bias")) {
                Some((
                    ld.vector(&n("attn_q.bias"), q_dim)?,
                    ld.vector(&n("attn_k.bias"), kv_dim)?,
                    ld.vector(&n("attn_v.bias"), kv_dim)?,
                ))
            } else {
                None
            };
            layers.push(Layer {
                attn_norm: ld.vector(&n("attn_norm.weight"), dim)?,
                wq: ld.matrix(&n("attn_q.weight"), q_dim, dim)?,
                wk: ld.matrix(&n("attn_k.weight"), kv_dim, dim)?,
                wv: ld.matrix(&n("attn_v.weight"), kv_dim, dim)?,
                qkv_bias,
                wo: ld.matrix(&n("attn_output.weight"), dim, q_dim)?,
                ffn_norm: ld.vector(&n("ffn_norm.weight"), dim)?,
                w_gate: ld.matrix(&n("ffn_gate.weight"), ffn, dim)?,
                w_up: ld.matrix(&n("ffn_up.weight"), ffn, dim)?,
                w_down: ld.matrix(&n("ffn_down.weight"), dim, ffn)?,
            });
        }
        let out_norm = ld.vector("output_norm.weight", dim)?;
        let output = if ld.has("output.weight") {
            ld.matrix("output.weight", cfg.vocab, dim)?
        } else {
            tok_embd.clone()
        };
        let mut inv_freq = rope_inv_freq(cfg.head_dim, cfg.rope_base);
        if cfg.arch == Arch::Llama && ld.has("rope_freqs.weight") {
            // Llama 3.x RoPE scaling: each pair's frequency is divided by its factor
            // (`[head_dim / 2]`), as llama.cpp's `rope_ext` does with `freq_factors`.
            let factors = ld.vector("rope_freqs.weight", cfg.head_dim / 2)?;
            if let Some((i, f)) = factors
                .iter()
                .enumerate()
                .find(|(_, f)| !(f.is_finite() && **f > 0.0))
            {
                return Err(ModelError::BadConfig(format!(
                    "rope_freqs.weight[{i}] is {f}; RoPE frequency factors must be positive"
                )));
            }
            for (f, k) in inv_freq.iter_mut().zip(&factors) {
                *f /= k;
            }
        }
        unimplemented::refuse_unused_tensors(file, &ld.used.borrow())?;
        Ok(Model {
            cfg,
            tok_embd,
            layers,
            out_norm,
            output,
            inv_freq,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Token embedding: `[vocab, dim]`.
    pub fn tok_embd(&self) -> &Weight {
        &self.tok_embd
    }

    /// The transformer blocks, first to last.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Final norm weight: `[dim]`.
    pub fn out_norm(&self) -> &[f32] {
        &self.out_norm
    }

    /// Output projection: `[vocab, dim]` (the embedding itself when tied).
    pub fn output(&self) -> &Weight {
        &self.output
    }

    /// RoPE inverse frequencies: `[head_dim / 2]`.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// Prepares every weight for this CPU's products (see `Weight::prepare`): the
    /// first forward pass then runs at full speed. Runs on the CPU side only (a GPU
    /// backend reads the file's layout).
    pub fn prepare_for_cpu(&self) {
        // The output first: the largest weight, repacked while little else is resident
        // (each weight's file pages are released once its copy is made). The embedding
        // only as the output when tied: lookups read the file's rows.
        self.output.prepare();
        for l in &self.layers {
            for w in l.matrices() {
                w.prepare();
            }
        }
    }

    /// Counts of weights per element type, and total parameters.
    pub fn weight_types(&self) -> Vec<(GgmlType, usize)> {
        let mut counts: Vec<(GgmlType, usize)> = Vec::new();
        let mut bump = |w: &Weight| match counts.iter_mut().find(|(t, _)| *t == w.ty()) {
            Some((_, n)) => *n += 1,
            None => counts.push((w.ty(), 1)),
        };
        bump(&self.tok_embd);
        for l in &self.layers {
            for w in l.matrices() {
                bump(w);
            }
        }
        if !std::ptr::eq(self.output.bytes().as_ptr(), self.tok_embd.bytes().as_ptr()) {
            bump(&self.output);
        }
        counts
    }

    /// A KV cache for `n_ctx` positions (at most the trained context).
    pub fn new_cache(&self, n_ctx: usize) -> KvCache {
        KvCache::new(&self.cfg, n_ctx.min(self.cfg.ctx_len))
    }

    /// Runs `tokens` (positions `cache.len()..`) through the model, appending their
    /// K/V to `cache`, and returns logits of the tokens from index `logits_from` on:
    /// `[tokens.len() - logits_from, vocab]`.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits_from: usize,
    ) -> Result<Vec<f32>, ModelError> {
        cache.reserve(tokens.len())?;
        let start = cache.len();
        let (pool, blocks) = cache.parts();
        let chunk = SeqChunk {
            tokens,
            start,
            blocks,
            logits_from,
        };
        let logits = self.forward_batch(&[chunk], pool)?;
        cache.advance(tokens.len());
        Ok(logits)
    }

    /// Runs a ragged batch: each chunk's tokens continue its own sequence, whose K/V
    /// live in `pool` behind its block table. Every weight is read once for the whole
    /// batch. Returns the logits each chunk asked for, chunk after chunk:
    /// `[Σ (tokens.len() - logits_from), vocab]`.
    pub fn forward_batch(
        &self,
        chunks: &[SeqChunk],
        pool: &mut KvPool,
    ) -> Result<Vec<f32>, ModelError> {
        SCRATCH.with(|s| self.forward_with(chunks, pool, &mut s.borrow_mut()))
    }

    /// [`Model::forward_batch`] with this thread's reused buffers (no allocation per step
    /// but the returned logits).
    fn forward_with(
        &self,
        chunks: &[SeqChunk],
        pool: &mut KvPool,
        s: &mut Scratch,
    ) -> Result<Vec<f32>, ModelError> {
        let cfg = &self.cfg;
        let Scratch {
            where_,
            tokens,
            logit_rows,
            x,
            xn,
            q,
            k,
            v,
            att,
            gate,
            up,
            angles,
            xo,
        } = s;
        // Per token: (chunk index, absolute position).
        where_.clear();
        tokens.clear();
        logit_rows.clear();
        for (ci, c) in chunks.iter().enumerate() {
            pool.check_table(c.blocks, c.start + c.tokens.len())?;
            if let Some(&id) = c.tokens.iter().find(|&&t| t as usize >= cfg.vocab) {
                return Err(ModelError::TokenOutOfRange {
                    id,
                    vocab: cfg.vocab,
                });
            }
            for (i, &t) in c.tokens.iter().enumerate() {
                if i >= c.logits_from {
                    logit_rows.push(tokens.len());
                }
                where_.push((ci, c.start + i));
                tokens.push(t);
            }
        }
        let n = tokens.len();
        let (dim, q_dim, kv_dim) = (cfg.dim, cfg.q_dim(), cfg.kv_dim());

        // x: [n, dim] — the residual stream.
        let x = sized(x, n * dim);
        for (row, &t) in x.chunks_exact_mut(dim).zip(tokens.iter()) {
            self.tok_embd.dequant_row(t as usize, row);
        }
        // Scratch: xn [n, dim], q [n, q_dim], k/v [n, kv_dim], att [n, q_dim],
        // gate/up [n, ffn_dim].
        let xn = sized(xn, n * dim);
        let q = sized(q, n * q_dim);
        let k = sized(k, n * kv_dim);
        let v = sized(v, n * kv_dim);
        let att = sized(att, n * q_dim);
        let gate = sized(gate, n * cfg.ffn_dim);
        let up = sized(up, n * cfg.ffn_dim);
        // RoPE (cos, sin) of each token's position: [n, head_dim / 2], shared by the layers.
        let half = cfg.head_dim / 2;
        angles.clear();
        angles.resize(n * half, (0.0, 0.0));
        for (cs, &(_, pos)) in angles.chunks_exact_mut(half).zip(where_.iter()) {
            rope_angles(&self.inv_freq, pos, cs);
        }

        for (li, l) in self.layers.iter().enumerate() {
            // x += the last layer's feed-forward output (in xn); xn = norm(x).
            residual_norm(x, xn, &l.attn_norm, cfg.eps, li > 0);
            matmul_many(
                &mut [(&l.wq, &mut *q), (&l.wk, &mut *k), (&l.wv, &mut *v)],
                xn,
                n,
            );
            if let Some((bq, bk, bv)) = &l.qkv_bias {
                add_rows(q, bq);
                add_rows(k, bk);
                add_rows(v, bv);
            }
            for (t, &(ci, pos)) in where_.iter().enumerate() {
                let qt = &mut q[t * q_dim..(t + 1) * q_dim];
                let kt = &mut k[t * kv_dim..(t + 1) * kv_dim];
                let cs = &angles[t * half..(t + 1) * half];
                rope_rotate(qt, cfg.head_dim, cs, cfg.rope_mode);
                rope_rotate(kt, cfg.head_dim, cs, cfg.rope_mode);
                pool.write(
                    li,
                    chunks[ci].blocks,
                    pos,
                    kt,
                    &v[t * kv_dim..(t + 1) * kv_dim],
                );
            }
            attention(cfg, li, q, chunks, where_, pool, att);
            matmul(&l.wo, att, n, xn);
            residual_norm(x, xn, &l.ffn_norm, cfg.eps, true);
            matmul_swiglu(&l.w_gate, &l.w_up, xn, n, gate, up);
            matmul(&l.w_down, gate, n, xn);
        }

        // The last residual add, the final norm and the logits only for the rows asked
        // for.
        let m = logit_rows.len();
        let xo = sized(xo, m * dim);
        for (o, &r) in xo.chunks_exact_mut(dim).zip(logit_rows.iter()) {
            let xr = &mut x[r * dim..(r + 1) * dim];
            add(xr, &xn[r * dim..(r + 1) * dim]);
            rms_norm(xr, &self.out_norm, cfg.eps, o);
        }
        let mut logits = vec![0f32; m * cfg.vocab];
        if m > 0 {
            matmul(&self.output, xo, m, &mut logits);
        }
        Ok(logits)
    }
}

/// Buffers of one forward pass, kept per thread between calls.
#[derive(Default)]
struct Scratch {
    where_: Vec<(usize, usize)>,
    tokens: Vec<u32>,
    logit_rows: Vec<usize>,
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    angles: Vec<(f32, f32)>,
    xo: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The first `n` values of `v`, grown if needed (its capacity is kept from call to
/// call). Not cleared: every buffer of the forward pass is written in full before it is
/// read.
fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// One sequence's part of a batch: `tokens` at positions `start..`, its K/V behind
/// `blocks`, logits wanted for `tokens[logits_from..]` (`tokens.len()` for none).
pub struct SeqChunk<'a> {
    /// New tokens of the sequence.
    pub tokens: &'a [u32],
    /// Positions already in the cache before these tokens.
    pub start: usize,
    /// Block table covering at least `start + tokens.len()` positions.
    pub blocks: &'a [u32],
    /// First token whose logits are returned.
    pub logits_from: usize,
}

/// Per token (row of `dim = w.len()`): `x += xn` if `add_first` (a residual), then
/// `xn = rms_norm(x)`; `x`, `xn`: `[n, dim]`. Tokens are split among the threads when
/// there are several.
fn residual_norm(x: &mut [f32], xn: &mut [f32], w: &[f32], eps: f32, add_first: bool) {
    let dim = w.len();
    let n = x.len() / dim;
    let row = |xr: &mut [f32], nr: &mut [f32]| {
        if add_first {
            add(xr, nr);
        }
        rms_norm(xr, w, eps, nr);
    };
    if n < 2 {
        for (xr, nr) in x.chunks_exact_mut(dim).zip(xn.chunks_exact_mut(dim)) {
            row(xr, nr);
        }
        return;
    }
    let (px, pn) = (SyncPtr::new(x), SyncPtr::new(xn));
    pool::global().for_ranges(n, 1, &|tokens| {
        for t in tokens {
            // SAFETY: token t's rows belong to this chunk alone.
            unsafe {
                row(
                    px.slice(t * dim..(t + 1) * dim),
                    pn.slice(t * dim..(t + 1) * dim),
                )
            };
        }
    });
}

/// Adds `bias` (`[d]`) to every row of `x` (`[n, d]`).
fn add_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add(row, bias);
    }
}
