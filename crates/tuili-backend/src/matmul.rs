//! Activations × (possibly quantized) weight matrices on the CPU.

use std::sync::Arc;

use tuili_gguf::GgmlType;

use crate::ops::dot;
use crate::pool::{self, SyncPtr};
use crate::quant::{dequant_fn, dot_fn};
use crate::BackendError;

/// Something that owns the bytes weights point into (an mmap'd model file, a `Vec`).
pub trait ByteSource: Send + Sync {
    /// All bytes of the source.
    fn bytes(&self) -> &[u8];
}

impl ByteSource for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl ByteSource for tuili_gguf::GgufFile {
    fn bytes(&self) -> &[u8] {
        self.data()
    }
}

/// A weight matrix of `rows` rows of `cols` elements of type `ty`, stored row-major
/// in `src.bytes()[offset..offset + rows * row_bytes]`.
#[derive(Clone)]
pub struct Weight {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    src: Arc<dyn ByteSource>,
    offset: usize,
}

impl std::fmt::Debug for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Weight({} x {} {})", self.rows, self.cols, self.ty)
    }
}

impl Weight {
    /// A weight over `src`, checking that the bytes are there and the type has kernels.
    pub fn new(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        src: Arc<dyn ByteSource>,
        offset: usize,
    ) -> Result<Weight, BackendError> {
        dot_fn(ty)?;
        dequant_fn(ty)?;
        if !cols.is_multiple_of(ty.block_size()) {
            return Err(BackendError::PartialBlock {
                ty,
                what: "the row length",
                n: cols,
                block_size: ty.block_size(),
            });
        }
        let row_bytes = cols / ty.block_size() * ty.type_size();
        let available = src.bytes().len();
        let needed = rows.saturating_mul(row_bytes);
        if needed == usize::MAX || offset.saturating_add(needed) > available {
            return Err(BackendError::WeightOutOfBounds {
                rows,
                cols,
                ty,
                offset,
                needed,
                available,
            });
        }
        Ok(Weight {
            ty,
            rows,
            cols,
            src,
            offset,
        })
    }

    /// A weight owning its bytes.
    pub fn from_vec(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: Vec<u8>,
    ) -> Result<Weight, BackendError> {
        Weight::new(ty, rows, cols, Arc::new(bytes), 0)
    }

    /// Element type.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }
    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() * self.ty.type_size()
    }
    /// All bytes of the matrix: `[rows, row_bytes]`.
    pub fn bytes(&self) -> &[u8] {
        let len = self.rows * self.row_bytes();
        &self.src.bytes()[self.offset..self.offset + len]
    }
    /// The bytes of row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.bytes()[r * rb..(r + 1) * rb]
    }

    /// Dequantizes row `r` into `out` (`[cols]`), e.g. for an embedding lookup.
    pub fn dequant_row(&self, r: usize, out: &mut [f32]) {
        // The type was checked to have kernels in `new`.
        if let Ok(f) = dequant_fn(self.ty) {
            f(self.row(r), out);
        }
    }
}

/// Weight rows dequantized together: each token's activations are then reused from
/// L1 for all of them.
const TILE_ROWS: usize = 16;

thread_local! {
    /// Per-thread tile of dequantized rows, kept between calls (no allocation per token).
    static TILE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `out[t, r] = Σ_c w[r, c] · x[t, c]`.
///
/// `x`: `[n_tokens, w.cols]`; `out`: `[n_tokens, w.rows]`. Threads split the rows of the
/// weight, so each weight byte is read once per call whatever `n_tokens` is.
///
/// Every output is `ops::dot(dequantized row, x[t])`, computed the same way whatever
/// `n_tokens` is: results do not depend on how tokens are batched (batch invariance:
/// a prompt run alone, in chunks, or beside other sequences gives the same numbers).
pub fn matmul(w: &Weight, x: &[f32], n_tokens: usize, out: &mut [f32]) {
    let (rows, cols) = (w.rows, w.cols);
    assert_eq!(x.len(), n_tokens * cols, "matmul: activations shape");
    assert_eq!(out.len(), n_tokens * rows, "matmul: output shape");
    let Ok(deq) = dequant_fn(w.ty) else { return };
    let rb = w.row_bytes();
    let bytes = w.bytes();
    let out_ptr = SyncPtr::new(out);
    pool::global().for_ranges(rows, TILE_ROWS, &|range| {
        TILE.with(|tile| {
            let mut tile = tile.borrow_mut();
            if tile.len() < TILE_ROWS * cols {
                tile.resize(TILE_ROWS * cols, 0.0);
            }
            let mut r0 = range.start;
            while r0 < range.end {
                let n = TILE_ROWS.min(range.end - r0);
                // tile: [n, cols] f32
                for i in 0..n {
                    let r = r0 + i;
                    deq(
                        &bytes[r * rb..(r + 1) * rb],
                        &mut tile[i * cols..(i + 1) * cols],
                    );
                }
                for t in 0..n_tokens {
                    let xt = &x[t * cols..(t + 1) * cols];
                    // SAFETY: rows r0..r0+n belong to this thread alone, and
                    // t * rows + r0 + n <= out.len().
                    let o = unsafe { out_ptr.slice(t * rows + r0..t * rows + r0 + n) };
                    for (i, o) in o.iter_mut().enumerate() {
                        *o = dot(&tile[i * cols..(i + 1) * cols], xt);
                    }
                }
                r0 += n;
            }
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize, quantize};
    use rand::{Rng, SeedableRng};

    /// Against an f64 product of the dequantized weights.
    #[test]
    fn matmul_matches_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (rows, cols) = (70, 256);
        for ty in [
            GgmlType::F32,
            GgmlType::Q8_0,
            GgmlType::Q4_1,
            GgmlType::Q4_K,
        ] {
            let wf: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let bytes = quantize(ty, &wf).unwrap();
            let deq = dequantize(ty, &bytes, rows * cols).unwrap();
            let w = Weight::from_vec(ty, rows, cols, bytes).unwrap();
            for n_tokens in [1, 3, 9] {
                let x: Vec<f32> = (0..n_tokens * cols)
                    .map(|_| rng.gen_range(-1.0..1.0))
                    .collect();
                let mut out = vec![0f32; n_tokens * rows];
                matmul(&w, &x, n_tokens, &mut out);
                for t in 0..n_tokens {
                    for r in 0..rows {
                        let want: f64 = (0..cols)
                            .map(|c| deq[r * cols + c] as f64 * x[t * cols + c] as f64)
                            .sum();
                        let got = out[t * rows + r] as f64;
                        assert!(
                            (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                            "{ty} t={t} r={r}: {got} vs {want}"
                        );
                    }
                    // Batch invariance: bit-identical to the token run alone.
                    let mut alone = vec![0f32; rows];
                    matmul(&w, &x[t * cols..(t + 1) * cols], 1, &mut alone);
                    assert_eq!(alone, out[t * rows..(t + 1) * rows], "{ty} t={t}");
                }
            }
        }
    }
}
