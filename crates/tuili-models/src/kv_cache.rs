//! Contiguous f32 KV cache of one sequence.

use crate::{Config, ModelError};

/// Keys and values of every layer for positions `0..len`.
pub struct KvCache {
    /// `[n_layer, capacity, kv_dim]`
    k: Vec<f32>,
    /// `[n_layer, capacity, kv_dim]`
    v: Vec<f32>,
    kv_dim: usize,
    capacity: usize,
    len: usize,
}

impl KvCache {
    /// A cache for up to `capacity` positions.
    pub fn new(cfg: &Config, capacity: usize) -> KvCache {
        let n = cfg.n_layer * capacity * cfg.kv_dim();
        KvCache {
            k: vec![0.0; n],
            v: vec![0.0; n],
            kv_dim: cfg.kv_dim(),
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

    fn base(&self, layer: usize) -> usize {
        layer * self.capacity * self.kv_dim
    }

    /// Writes one position's K and V (`[kv_dim]` each) of `layer`.
    pub(crate) fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let at = self.base(layer) + pos * self.kv_dim;
        self.k[at..at + self.kv_dim].copy_from_slice(k);
        self.v[at..at + self.kv_dim].copy_from_slice(v);
    }

    /// K and V of `layer` for positions `0..n`: `[n, kv_dim]` each.
    pub(crate) fn layer(&self, layer: usize, n: usize) -> (&[f32], &[f32]) {
        let at = self.base(layer);
        let end = at + n * self.kv_dim;
        (&self.k[at..end], &self.v[at..end])
    }
}
