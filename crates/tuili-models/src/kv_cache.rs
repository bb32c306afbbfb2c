//! KV storage in fixed-size blocks ("paged"), and a one-sequence cache on top of it.
//!
//! The forward pass reads and writes K/V only through a block table, so a single
//! conversation and a batch of many sequences sharing one pool take the same path.

use tuili_backend::KvType;

use crate::{Config, ModelError, SeqChunk};

/// Block-table entry of a block released from a local layer's table (its positions
/// fell out of the window): no step reads or writes it.
pub const FREED_BLOCK: u32 = u32::MAX;

/// Blocks a sequence's table for local layers (sliding window `window`) must hold while
/// a step runs `chunk` new tokens: the positions the chunk's first token sees onward,
/// `[start + 1 - window, start + chunk)`, span at most this many blocks of `block_size`
/// wherever they start.
pub fn local_blocks_needed(window: usize, chunk: usize, block_size: usize) -> usize {
    let bs = block_size.max(1);
    (window.max(1) + chunk.max(1) - 2) / bs + 2
}

/// A pool of KV blocks for every layer, K and V each stored as its own [`KvType`].
///
/// Two regions when the pool is split ([`KvPool::new_split`]): global layers in
/// `n_blocks` blocks addressed by a chunk's `blocks`, local (sliding-window) layers in
/// `n_local_blocks` blocks of their own addressed by its `local_blocks`, so a local
/// layer's table can drop the blocks that fell out of its window. Unsplit, every layer
/// (local ones too) is in the first region behind `blocks`.
///
/// Rows are addressed by element offset ([`KvPool::offset`]), as if the pool held f32;
/// `KvType::bytes` turns an offset into bytes of the stored type.
pub struct KvPool {
    /// Per global layer `[n_blocks, block_size, kv_dim(layer)]`, then per local layer
    /// `[n_local_blocks, block_size, kv_dim(layer)]`, values of `k_type`, in 4-byte words
    /// so that f32 rows are aligned. A layer without K/V heads (deci) takes no room.
    k: Vec<u32>,
    /// The same for values, of `v_type`.
    v: Vec<u32>,
    k_type: KvType,
    v_type: KvType,
    n_layer: usize,
    n_blocks: usize,
    /// Blocks of the local region (0: unsplit).
    n_local_blocks: usize,
    /// Widest window of the local layers (split pools only).
    window: usize,
    /// Per layer: whether it lives in the local region, and the element offset of its
    /// first block.
    slot: Vec<(bool, usize)>,
    block_size: usize,
    /// Per layer: values of one position (`n_kv_head · head_dim`).
    kv_dim: Vec<usize>,
}

impl KvPool {
    /// A pool of `n_blocks` blocks of `block_size` positions each for every layer, keys
    /// stored as `k_type` and values as `v_type`.
    ///
    /// # Errors
    /// If a type cannot hold the model's heads (`q8_0` needs heads of whole blocks of 32).
    pub fn new(
        cfg: &Config,
        n_blocks: usize,
        block_size: usize,
        k_type: KvType,
        v_type: KvType,
    ) -> Result<KvPool, ModelError> {
        KvPool::new_split(cfg, n_blocks, 0, block_size, k_type, v_type)
    }

    /// A pool whose local layers (those with a window in `cfg.layer_windows`) keep their
    /// K/V in a region of `n_local_blocks` blocks of their own (0, or a model without
    /// local layers: one region, as [`KvPool::new`]).
    ///
    /// # Errors
    /// As [`KvPool::new`].
    pub fn new_split(
        cfg: &Config,
        n_blocks: usize,
        n_local_blocks: usize,
        block_size: usize,
        k_type: KvType,
        v_type: KvType,
    ) -> Result<KvPool, ModelError> {
        for t in [k_type, v_type] {
            t.check_head_dim(cfg.head_dim)
                .map_err(ModelError::BadConfig)?;
        }
        Ok(KvPool::build(
            cfg,
            n_blocks,
            n_local_blocks,
            block_size,
            k_type,
            v_type,
        ))
    }

    fn build(
        cfg: &Config,
        n_blocks: usize,
        n_local_blocks: usize,
        block_size: usize,
        k_type: KvType,
        v_type: KvType,
    ) -> KvPool {
        let block_size = block_size.max(1);
        let window = cfg.max_window().unwrap_or(0);
        let n_local_blocks = if window > 0 { n_local_blocks } else { 0 };
        let local: Vec<bool> = (0..cfg.n_layer)
            .map(|l| n_local_blocks > 0 && cfg.layer_windows.get(l).is_some_and(|w| w.is_some()))
            .collect();
        // Elements of one block of layer `l`.
        let row = |l: usize| block_size * cfg.layers[l].kv_dim();
        // Global layers first, then local ones, each layer's blocks together.
        let mut at = 0;
        let mut slot = vec![(false, 0); cfg.n_layer];
        for pass_local in [false, true] {
            for (l, &is_local) in local.iter().enumerate() {
                if is_local == pass_local {
                    slot[l] = (is_local, at);
                    at += row(l) * if is_local { n_local_blocks } else { n_blocks };
                }
            }
        }
        KvPool {
            k: vec![0; k_type.bytes(at).div_ceil(4)],
            v: vec![0; v_type.bytes(at).div_ceil(4)],
            k_type,
            v_type,
            n_layer: cfg.n_layer,
            n_blocks,
            n_local_blocks,
            window,
            slot,
            block_size,
            kv_dim: cfg.layers.iter().map(|s| s.kv_dim()).collect(),
        }
    }

    /// An f32 pool (the type every head size allows), one region.
    fn new_f32(cfg: &Config, n_blocks: usize, block_size: usize) -> KvPool {
        KvPool::build(cfg, n_blocks, 0, block_size, KvType::F32, KvType::F32)
    }

    /// Bytes one block takes (K and V, all layers) for `cfg`, keys stored as `k_type`
    /// and values as `v_type`.
    pub fn block_bytes(cfg: &Config, block_size: usize, k_type: KvType, v_type: KvType) -> usize {
        let n = block_size * cfg.kv_values_per_position();
        k_type.bytes(n) + v_type.bytes(n)
    }

    /// Bytes one block of each region of a split pool takes: (global layers, local
    /// layers).
    pub fn region_block_bytes(
        cfg: &Config,
        block_size: usize,
        k_type: KvType,
        v_type: KvType,
    ) -> (usize, usize) {
        let bytes = |local: bool| {
            let per_position: usize = (cfg.layers.iter().zip(&cfg.layer_windows))
                .filter(|(_, w)| w.is_some() == local)
                .map(|(s, _)| s.kv_dim())
                .sum();
            let n = block_size * per_position;
            k_type.bytes(n) + v_type.bytes(n)
        };
        (bytes(false), bytes(true))
    }

    /// Blocks of the local region (0: unsplit).
    pub fn n_local_blocks(&self) -> usize {
        self.n_local_blocks
    }

    /// The local region's window when split (what a local table must cover), else `None`.
    pub fn local_window(&self) -> Option<usize> {
        (self.n_local_blocks > 0).then_some(self.window)
    }

    /// Bytes of K and V storage.
    pub fn bytes(&self) -> usize {
        (self.k.len() + self.v.len()) * 4
    }

    /// How keys are stored.
    pub fn k_type(&self) -> KvType {
        self.k_type
    }

    /// How values are stored.
    pub fn v_type(&self) -> KvType {
        self.v_type
    }

    /// Blocks in the pool.
    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    /// Positions per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// All keys (both regions) as values of `k_type`.
    pub(crate) fn keys(&self) -> &[u8] {
        words_as_bytes(&self.k)
    }

    /// All values (both regions) as values of `v_type`.
    pub(crate) fn values(&self) -> &[u8] {
        words_as_bytes(&self.v)
    }

    /// The block table `layer` reads of `chunk`: its `local_blocks` for a local layer of
    /// a split pool, else its `blocks`.
    #[inline]
    pub(crate) fn table<'c>(&self, layer: usize, chunk: &SeqChunk<'c>) -> &'c [u32] {
        if self.slot[layer].0 {
            chunk.local_blocks
        } else {
            chunk.blocks
        }
    }

    /// Element offset in [`KvPool::keys`] / [`KvPool::values`] of position `pos` of a
    /// sequence in `layer`, whose table for that layer ([`KvPool::table`]) is `blocks`.
    #[inline]
    pub(crate) fn offset(&self, layer: usize, blocks: &[u32], pos: usize) -> usize {
        let block = blocks[pos / self.block_size] as usize;
        self.slot[layer].1 + (block * self.block_size + pos % self.block_size) * self.kv_dim[layer]
    }

    /// Checks that `blocks` covers `n_pos` positions with valid block ids.
    pub(crate) fn check_table(&self, blocks: &[u32], n_pos: usize) -> Result<(), ModelError> {
        crate::batch::check_table(blocks, 0, n_pos, self.n_blocks, self.block_size)
    }

    /// Fills positions `0..n` of every layer of the sequence with block table `blocks`
    /// with pseudo-random K/V in `[-1, 1)`, converted to their types (for benchmarks of
    /// later steps, whose speed does not depend on the values).
    ///
    /// # Errors
    /// If `blocks` does not cover `n` positions of this pool, or the pool is split.
    pub fn fill_random(&mut self, blocks: &[u32], n: usize) -> Result<(), ModelError> {
        self.check_table(blocks, n)?;
        if self.n_local_blocks > 0 {
            return Err(ModelError::BlockTable(
                "fill_random takes one block table: a split pool needs two".into(),
            ));
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for layer in 0..self.n_layer {
            let mut rows = vec![0f32; 2 * self.kv_dim[layer]];
            for pos in 0..n {
                for v in rows.iter_mut() {
                    // A linear congruential step; the top 24 bits give the value.
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    *v = (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
                }
                let (k, v) = rows.split_at(self.kv_dim[layer]);
                self.write(layer, blocks, pos, k, v);
            }
        }
        Ok(())
    }

    /// Writes K and V (`[kv_dim]` each) of position `pos`, converted to their types.
    pub(crate) fn write(&mut self, layer: usize, blocks: &[u32], pos: usize, k: &[f32], v: &[f32]) {
        let at = self.offset(layer, blocks, pos);
        let (kt, vt) = (self.k_type, self.v_type);
        let n = self.kv_dim[layer];
        kt.encode(
            k,
            &mut words_as_bytes_mut(&mut self.k)[kt.bytes(at)..kt.bytes(at + n)],
        );
        vt.encode(
            v,
            &mut words_as_bytes_mut(&mut self.v)[vt.bytes(at)..vt.bytes(at + n)],
        );
    }
}

fn words_as_bytes(w: &[u32]) -> &[u8] {
    // SAFETY: u32 has no padding, u8 alignment 1; the same memory under the same borrow.
    unsafe { std::slice::from_raw_parts(w.as_ptr() as *const u8, std::mem::size_of_val(w)) }
}

fn words_as_bytes_mut(w: &mut [u32]) -> &mut [u8] {
    // SAFETY: as in `words_as_bytes`, and every byte pattern is a valid u32.
    unsafe { std::slice::from_raw_parts_mut(w.as_mut_ptr() as *mut u8, std::mem::size_of_val(w)) }
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
            pool: KvPool::new_f32(cfg, n_blocks, SEQ_BLOCK),
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
