//! A loaded model: configuration, the forward pass as data, and the weights it reads
//! (pointing into the mmap'd file).

use std::sync::Arc;

use tuili_backend::matmul::Weight;
use tuili_gguf::{GgmlType, GgufFile};

use crate::batch::Batch;
use crate::cpu::{with_scratch, CpuStep};
use crate::ops::{MatId, Widths};
use crate::spec::{ModelSpec, Weights};
use crate::{families, Config, KvCache, KvPool, ModelError, SeqChunk};

/// A loaded model of any supported family.
pub struct Model {
    cfg: Config,
    spec: ModelSpec,
    weights: Weights,
}

impl Model {
    /// Loads a model from an opened GGUF file.
    pub fn load(file: &Arc<GgufFile>) -> Result<Model, ModelError> {
        let mut cfg = Config::from_gguf(file)?;
        let (spec, weights) = families::load(file, &cfg)?;
        cfg.layer_windows = spec.layers.iter().map(|l| l.attn.window).collect();
        Ok(Model { cfg, spec, weights })
    }

    /// Sets up the forward pass for a context of `n_ctx` positions: phi3's LongRoPE takes
    /// its long frequency factors beyond the original context, its short ones within it
    /// (llama.cpp's rule, by the context size rather than a sequence's length). Call it
    /// before the model serves; other models do not change.
    pub fn use_context(&mut self, n_ctx: usize) {
        if let Some(lr) = &self.spec.long_rope {
            self.spec.ropes = if n_ctx > lr.original_ctx {
                lr.long.clone()
            } else {
                lr.short.clone()
            };
        }
    }

    /// The model's configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The forward pass, as data.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The weights the spec names.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The widths of the forward pass's buffers.
    pub fn widths(&self) -> Widths {
        let c = &self.cfg;
        Widths {
            dim: c.dim,
            n_head: c.n_head,
            n_kv_head: c.n_kv_head,
            head_dim: c.head_dim,
            ffn_dim: c.ffn_dim,
        }
    }

    /// Prepares every weight for this CPU's products (see `Weight::prepare`): the
    /// first forward pass then runs at full speed. Runs on the CPU side only (a GPU
    /// backend reads the file's layout).
    pub fn prepare_for_cpu(&self) {
        // The output first: the largest weight, repacked while little else is resident
        // (each weight's file pages are released once its copy is made). The embedding
        // only as the output when tied: lookups read the file's rows.
        self.weights.mat(self.spec.output).prepare();
        for l in &self.spec.layers {
            for w in l.matrices() {
                self.weights.mat(w).prepare();
            }
        }
    }

    /// The ids of the matrices the forward pass reads, each once: the embedding, the
    /// output when not tied, then every layer's.
    pub fn matrix_ids(&self) -> Vec<MatId> {
        let mut ids = vec![self.spec.embed];
        if self.spec.output != self.spec.embed {
            ids.push(self.spec.output);
        }
        ids.extend(self.spec.layers.iter().flat_map(|l| l.matrices()));
        ids
    }

    /// The matrices of [`Model::matrix_ids`].
    pub fn matrices(&self) -> Vec<&Weight> {
        let ids = self.matrix_ids();
        ids.into_iter().map(|id| self.weights.mat(id)).collect()
    }

    /// Counts of weights per element type.
    pub fn weight_types(&self) -> Vec<(GgmlType, usize)> {
        let mut counts: Vec<(GgmlType, usize)> = Vec::new();
        for w in self.matrices() {
            match counts.iter_mut().find(|(t, _)| *t == w.ty()) {
                Some((_, n)) => *n += 1,
                None => counts.push((w.ty(), 1)),
            }
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
            local_blocks: &[],
            logits_from,
        };
        let logits = self.forward_batch(&[chunk], pool)?;
        cache.advance(tokens.len());
        Ok(logits)
    }

    /// The final hidden state of `tokens` as a new sequence (after the output norm, before
    /// the output projection: what llama.cpp's `--embeddings` pools for a causal model),
    /// `[tokens.len(), embedding width]`, on a cache of its own.
    pub fn hidden_states(&self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        let mut cache = self.new_cache(tokens.len());
        cache.reserve(tokens.len())?;
        let (pool, blocks) = cache.parts();
        let chunk = SeqChunk {
            tokens,
            start: 0,
            blocks,
            local_blocks: &[],
            logits_from: 0,
        };
        self.on_cpu(&[chunk], pool, |spec, batch, step| {
            let any = crate::forward::final_hidden(spec, batch, step)?;
            Ok(if any { step.out_rows() } else { Vec::new() })
        })
    }

    /// Runs a ragged batch on the CPU: each chunk's tokens continue its own sequence,
    /// whose K/V live in `pool` behind its block table. Every weight is read once for the
    /// whole batch. Returns the logits each chunk asked for, chunk after chunk:
    /// `[Σ (tokens.len() - logits_from), vocab]`.
    pub fn forward_batch(
        &self,
        chunks: &[SeqChunk],
        pool: &mut KvPool,
    ) -> Result<Vec<f32>, ModelError> {
        self.on_cpu(chunks, pool, |spec, batch, step| {
            crate::forward::forward(spec, batch, step)
        })
    }

    /// Runs `f` on a CPU step made for `chunks`.
    fn on_cpu(
        &self,
        chunks: &[SeqChunk],
        pool: &mut KvPool,
        f: impl FnOnce(&ModelSpec, &Batch, &mut CpuStep) -> Result<Vec<f32>, ModelError>,
    ) -> Result<Vec<f32>, ModelError> {
        let local = pool.local_window().map(|w| (pool.n_local_blocks(), w));
        let batch = Batch::new(
            chunks,
            self.cfg.vocab,
            pool.n_blocks(),
            pool.block_size(),
            local,
        )?;
        with_scratch(|s| {
            let mut step = CpuStep::new(
                &self.weights,
                &self.spec.ropes,
                self.widths(),
                pool,
                &batch,
                s,
            );
            f(&self.spec, &batch, &mut step)
        })
    }
}
