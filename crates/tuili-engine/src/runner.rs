//! What generation, perplexity and the serving engine run a model on: a model with its
//! own paged KV pool, on the CPU or on a GPU. Callers hand it ragged batches of sequence
//! chunks whose block tables index that pool (two tables per chunk when the pool keeps
//! sliding-window layers apart: `KvLayout.n_local_blocks`).

use std::ops::Deref;
use std::str::FromStr;

pub use tuili_cuda::KvLayout;
use tuili_cuda::{CudaError, CudaModel};
pub use tuili_models::KvType;
use tuili_models::{local_blocks_needed, Config, KvPool, Model, SeqChunk};

use crate::EngineError;

/// How the CPU's KV cache stores K and V unless asked otherwise: f16 halves the memory
/// of f32 and moves perplexity by less than 0.05 % on the test models (see
/// docs/BENCHMARKS.md, 2026-12-06).
pub const DEFAULT_KV_TYPE: KvType = KvType::F16;

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

    /// The final hidden states of `tokens` as a new sequence, `[tokens, width]` (see
    /// `Model::hidden_states`), for embeddings. Only the CPU runner has them so far.
    fn hidden_states(&mut self, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        let _ = tokens;
        Err(EngineError::Invalid(format!(
            "embeddings are not supported on {} yet",
            self.device()
        )))
    }

    /// Fills positions `0..n` of the sequence with block table `blocks` with some K/V,
    /// as fast as the runner can, for benchmarks of the steps after them (whose speed
    /// does not depend on the values). By default a prefill of token 0, 512 at a time.
    fn fill_kv(&mut self, blocks: &[u32], n: usize) -> Result<(), EngineError> {
        let tokens = [0u32; 512];
        let mut start = 0;
        while start < n {
            let len = (n - start).min(tokens.len());
            let chunk = SeqChunk {
                tokens: &tokens[..len],
                start,
                blocks,
                local_blocks: &[],
                logits_from: len - 1,
            };
            self.forward_batch(&[chunk])?;
            start += len;
        }
        Ok(())
    }
}

/// Where a model runs: a `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// GPU `N` (`cuda` is `cuda:0`).
    Cuda(usize),
    /// The first GPU the model fits on, else the CPU (the caller resolves it).
    Auto,
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Device, String> {
        let bad = || format!("device must be cpu, cuda, cuda:N (N = 0, 1, ...) or auto, got '{s}'");
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            "auto" => Ok(Device::Auto),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(bad)?;
                n.parse().map(Device::Cuda).map_err(|_| bad())
            }
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Auto => write!(f, "auto"),
        }
    }
}

impl Device {
    /// How this device's KV cache stores K and V unless asked otherwise: the CPU's
    /// default, f32 on CUDA (whose KV pool is f32 only).
    pub fn default_kv_type(self) -> KvType {
        match self {
            Device::Cuda(_) => KvType::F32,
            Device::Cpu | Device::Auto => DEFAULT_KV_TYPE,
        }
    }

    /// Checks a GPU choice before the model is loaded, so that a machine without one
    /// answers at once; `auto` stays `auto` (it needs the model's size).
    pub fn check_early(self) -> Result<(), CudaError> {
        if let Device::Cuda(n) = self {
            let devs = tuili_cuda::devices()?;
            if n >= devs.len() {
                return Err(CudaError::BadOrdinal {
                    ordinal: n,
                    count: devs.len(),
                });
            }
        }
        Ok(())
    }
}

/// Blocks of `block_size` positions that `n_ctx` positions need.
pub fn blocks_for(n_ctx: usize, block_size: usize) -> usize {
    n_ctx.div_ceil(block_size.max(1)).max(1)
}

/// The local region (blocks) for sequences of `n_ctx` positions run `chunk` tokens a
/// step in blocks of `block_size`, `n_seqs` of them side by side: 0 (no region) when the
/// model has no local layers or their windows would not hold fewer blocks than `n_ctx`.
pub fn local_blocks_for(
    cfg: &Config,
    n_ctx: usize,
    chunk: usize,
    block_size: usize,
    n_seqs: usize,
) -> usize {
    // `TUILI_KV_WINDOWED=0` keeps every position of every layer (A/B measurements).
    if std::env::var("TUILI_KV_WINDOWED").is_ok_and(|v| v == "0") {
        return 0;
    }
    match cfg.max_window() {
        Some(w) => {
            let per_seq = local_blocks_needed(w, chunk, block_size);
            if per_seq < blocks_for(n_ctx, block_size) {
                per_seq * n_seqs
            } else {
                0
            }
        }
        None => 0,
    }
}

/// The KV layout of one sequence of `n_ctx` positions run at most `chunk` tokens a step
/// (perplexity): local layers in a ring of blocks when that is smaller (see
/// [`seq_tables`]).
pub fn seq_layout(
    cfg: &Config,
    n_ctx: usize,
    chunk: usize,
    block_size: usize,
    k_type: KvType,
    v_type: KvType,
) -> KvLayout {
    KvLayout {
        n_blocks: blocks_for(n_ctx, block_size),
        block_size,
        n_local_blocks: local_blocks_for(cfg, n_ctx, chunk, block_size, 1),
        k_type,
        v_type,
    }
}

/// Block tables for one sequence that owns the pool of `kv`: every block in order, and
/// for local layers the local region as a ring (entry `i` is block `i % n_local_blocks`;
/// empty without one). A step of at most `chunk` tokens, with `kv` from [`seq_layout`]
/// for that `chunk`, never writes a ring block that one of its tokens still sees: the
/// ring has `local_blocks_needed(window, chunk, block_size)` blocks, as many as the
/// step's window and tokens span.
pub fn seq_tables(kv: &KvLayout) -> (Vec<u32>, Vec<u32>) {
    let global: Vec<u32> = (0..kv.n_blocks as u32).collect();
    let local = match kv.n_local_blocks {
        0 => Vec::new(),
        n => (0..kv.n_blocks).map(|i| (i % n) as u32).collect(),
    };
    (global, local)
}

/// A model on the CPU with a KV pool in host memory. `M` is `&Model` or `Arc<Model>`.
pub struct CpuRunner<M> {
    model: M,
    pool: KvPool,
}

impl<M: Deref<Target = Model>> CpuRunner<M> {
    /// A runner with a pool of `kv.n_blocks` blocks of `kv.block_size` positions, K and V
    /// stored as `kv.k_type` and `kv.v_type`.
    ///
    /// # Errors
    /// If a KV type cannot hold the model's heads (`q8_0` needs whole blocks of 32).
    pub fn new(model: M, kv: KvLayout) -> Result<CpuRunner<M>, EngineError> {
        let pool = KvPool::new_split(
            model.config(),
            kv.n_blocks,
            kv.n_local_blocks,
            kv.block_size,
            kv.k_type,
            kv.v_type,
        )?;
        model.prepare_for_cpu();
        Ok(CpuRunner { model, pool })
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
            n_local_blocks: self.pool.n_local_blocks(),
            k_type: self.pool.k_type(),
            v_type: self.pool.v_type(),
        }
    }

    fn device(&self) -> String {
        "cpu".into()
    }

    fn hidden_states(&mut self, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        Ok(self.model.hidden_states(tokens)?)
    }

    /// Writes pseudo-random K/V rows straight into the pool (no forward pass).
    fn fill_kv(&mut self, blocks: &[u32], n: usize) -> Result<(), EngineError> {
        Ok(self.pool.fill_random(blocks, n)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_values_parse_and_bad_ones_name_the_forms() {
        assert_eq!("cpu".parse::<Device>(), Ok(Device::Cpu));
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(0)));
        assert_eq!("cuda:3".parse::<Device>(), Ok(Device::Cuda(3)));
        assert_eq!("auto".parse::<Device>(), Ok(Device::Auto));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", ""] {
            let e = bad.parse::<Device>().expect_err(bad);
            assert!(e.contains("cpu, cuda, cuda:N"), "{e}");
        }
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
    }
}
