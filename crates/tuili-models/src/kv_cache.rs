//! KV storage in fixed-size blocks ("paged"), and a one-sequence cache on top of it.
//!
//! The forward pass reads and writes K/V only through a block table, so a single
//! conversation and a batch of many sequences sharing one pool take the same path.

use crate::{Config, ModelError};

/// A pool of KV blocks for every layer, in f32.
pub struct KvPool {
    /// `[n_layer, n_blocks, block_size, kv_dim]`
    k: Vec<f32>,
    /// `[n_layer, n_blocks, block_size, kv_dim]`
    v: Vec<f32>,
    n_blocks: usize,
    block_size: usize,
    kv_dim: usize,
}

impl KvPool {
    /// A pool of `n_blocks` blocks of `block_size` positions each.
    pub fn new(cfg: &Config, n_blocks: usize, block_size: usize) -> KvPool {
        let n = cfg.n_layer * n_blocks * block_size * cfg.kv_dim();
        KvPool {
            k: vec![0.0; n],
            v: vec![0.0; n],
            n_blocks,
            block_size: block_size.max(1),
            kv_dim: cfg.kv_dim(),
        }
    }

    /// Bytes one block takes (K and V, all layers) for `cfg`.
    pub fn block_bytes(cfg: &Config, block_size: usize) -> usize {
        2 * cfg.n_layer * block_size * cfg.kv_dim() * std::mem::size_of::<f32>()
    }

    /// Blocks in the pool.
    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    /// Positions per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// All keys: `[n_layer, n_blocks, block_size, kv_dim]`.
    pub(crate) fn keys(&self) -> &[f32] {
        &self.k
    }

    /// All values: `[n_layer, n_blocks, block_size, kv_dim]`.
    pub(crate) fn values(&self) -> &[f32] {
        &self.v
    }

    /// Offset in [`KvPool::keys`] / [`KvPool::values`] of position `pos` of a sequence
    /// with block table `blocks` in `layer`.
    #[inline]
    pub(crate) fn offset(&self, layer: usize, blocks: &[u32], pos: usize) -> usize {
        let block = blocks[pos / self.block_size] as usize;
        ((layer * self.n_blocks + block) * self.block_size + pos % self.block_size) * self.kv_dim
    }

    /// Checks that `blocks` covers `n_pos` positions with valid block ids.
    pub(crate) fn check_table(&self, blocks: &[u32], n_pos: usize) -> Result<(), ModelError> {
        let need = n_pos.div_ceil(self.block_size);
        if blocks.len() < need {
            return Err(ModelError::BlockTable(format!(
                "{n_pos} positions need {need} blocks of {}, the table has {}",
                self.block_size,
                blocks.len()
            )));
        }
        if let Some(&b) = blocks[..need]
            .iter()
            .find(|&&b| b as usize >= self.n_blocks)
        {
            return Err(ModelError::BlockTable(format!(
                "block {b} is outside the pool of {} blocks",
                self.n_blocks
            )));
        }
        Ok(())
    }

    /// Writes K and V (`[kv_dim]` each) of position `pos`.
    pub(crate) fn write(&mut self, layer: usize, blocks: &[u32], pos: usize, k: &[f32], v: &[f32]) {
        let at = self.offset(layer, blocks, pos);
        self.k[at..at + self.kv_dim].copy_from_slice(k);
        self.v[at..at + self.kv_dim].copy_from_slice(v);
    }
}

/// The KV cache of one sequence: a pool of its own whose blocks are used in order.
pub struct KvCache {
    pool: KvPool,
    /// `0..n_blocks`: the sequence owns the whole pool.
    blocks: Vec<u32>,
    capacity: usize,
    len: usize,
}

/// Positions per block of a pool that one sequence uses alone ([`KvCache`], perplexity,
/// the benchmark's sequences): any value works; this keeps block tables short.
pub const SEQ_BLOCK: usize = 64;

impl KvCache {
    /// A cache for up to `capacity` positions.
    pub fn new(cfg: &Config, capacity: usize) -> KvCache {
        let n_blocks = capacity.div_ceil(SEQ_BLOCK);
        KvCache {
            pool: KvPool::new(cfg, n_blocks, SEQ_BLOCK),
            blocks: (0..n_blocks as u32).collect(),
            capacity,
            len: 0,
        }
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions this cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every position (the memory is kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Drops positions from `len` on, e.g. to rewind a chat to a shared prefix.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Checks that `n` more positions fit.
    pub(crate) fn reserve(&self, n: usize) -> Result<(), ModelError> {
        if self.len + n > self.capacity {
            return Err(ModelError::ContextFull {
                have: self.len,
                adding: n,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// The pool and the block table, for the forward pass.
    pub(crate) fn parts(&mut self) -> (&mut KvPool, &[u32]) {
        (&mut self.pool, &self.blocks)
    }
}
