//! What generation, perplexity and the serving engine run a model on: a model with its
//! own paged KV pool, on the CPU or on a GPU. Callers hand it ragged batches of sequence
//! chunks whose block tables index that pool.

use std::ops::Deref;

use tuili_cuda::CudaModel;
pub use tuili_cuda::KvLayout;
use tuili_models::{Config, KvPool, Model, SeqChunk};

use crate::EngineError;

/// A model and its KV pool on one device.
pub trait Runner {
    /// The model's configuration.
    fn config(&self) -> &Config;

    /// Runs a ragged batch (see `Model::forward_batch`): the logits each chunk asked
    /// for, chunk after chunk, `[Σ (tokens.len() - logits_from), vocab]`.
    fn forward_batch(&mut self, chunks: &[SeqChunk]) -> Result<Vec<f32>, EngineError>;

    /// Blocks in the KV pool and positions per block.
    fn kv_layout(&self) -> KvLayout;

    /// Where it runs, for people: `cpu`, `cuda:0 (NVIDIA H200)`.
    fn device(&self) -> String;
}

/// Blocks of `block_size` positions that `n_ctx` positions need.
pub fn blocks_for(n_ctx: usize, block_size: usize) -> usize {
    n_ctx.div_ceil(block_size.max(1)).max(1)
}

/// A model on the CPU with a KV pool in host memory. `M` is `&Model` or `Arc<Model>`.
pub struct CpuRunner<M> {
    model: M,
    pool: KvPool,
}

impl<M: Deref<Target = Model>> CpuRunner<M> {
    /// A runner with a pool of `kv.n_blocks` blocks of `kv.block_size` positions.
    pub fn new(model: M, kv: KvLayout) -> CpuRunner<M> {
        model.prepare_for_cpu();
        let pool = KvPool::new(model.config(), kv.n_blocks, kv.block_size);
        CpuRunner { model, pool }
    }
}

impl<M: Deref<Target = Model>> Runner for CpuRunner<M> {
    fn config(&self) -> &Config {
        self.model.config()
    }

    fn forward_batch(&mut self, chunks: &[SeqChunk]) -> Result<Vec<f32>, EngineError> {
        Ok(self.model.forward_batch(chunks, &mut self.pool)?)
    }

    fn kv_layout(&self) -> KvLayout {
        KvLayout {
            n_blocks: self.pool.n_blocks(),
            block_size: self.pool.block_size(),
        }
    }

    fn device(&self) -> String {
        "cpu".into()
    }
}

impl Runner for CudaModel {
    fn config(&self) -> &Config {
        CudaModel::config(self)
    }

    fn forward_batch(&mut self, chunks: &[SeqChunk]) -> Result<Vec<f32>, EngineError> {
        Ok(CudaModel::forward_batch(self, chunks)?)
    }

    fn kv_layout(&self) -> KvLayout {
        CudaModel::kv_layout(self)
    }

    fn device(&self) -> String {
        let d = CudaModel::device(self);
        format!("cuda:{} ({})", d.ordinal, d.name)
    }
}
