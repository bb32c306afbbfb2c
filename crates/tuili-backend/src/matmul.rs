//! Activations × (possibly quantized) weight matrices on the CPU.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use tuili_gguf::GgmlType;

use crate::kernels::{self, AlignedBuf, FFormat, Kernels, Out, Packed, Panel, QFormat, QuantActs};
use crate::ops::Glu;
use crate::pool::{self, SyncPtr};
use crate::quant::{dequant_fn, dot_fn};
use crate::BackendError;

/// Something that owns the bytes weights point into (an mmap'd model file, a `Vec`).
pub trait ByteSource: Send + Sync {
    /// All bytes of the source.
    fn bytes(&self) -> &[u8];

    /// A hint that `range` of the bytes will not be read for a while (a mapped file
    /// drops those pages from memory; they come back from the file if read again).
    fn release(&self, _range: Range<usize>) {}

    /// Whether the bytes are a mapped file (whose pages the OS brings in and out).
    fn mapped(&self) -> bool {
        false
    }
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
    fn release(&self, range: Range<usize>) {
        self.release(range)
    }
    fn mapped(&self) -> bool {
        self.is_mapped()
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
    /// The weight's own copy, made by `prepare` or on first use (shared by clones: a
    /// tied output and its embedding).
    owned: Arc<OnceLock<Owned>>,
}

/// A weight's own copy of its bytes: its rows repacked for the interleaved products,
/// or, for the other types of a mapped file, the file's bytes as they are. Either way
/// the file's pages are released once copied, so resident memory holds the weights
/// once. (Keeping some weights mapped is not enough: the OS maps a file's pages in
/// large folios, so reading one tensor brings back parts of its released neighbours.)
enum Owned {
    Packed(Packed),
    Plain(AlignedBuf<u8>),
    /// Bytes read from their source as they are (not a mapped file).
    Source,
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
            owned: Arc::default(),
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
    /// All bytes of the matrix: `[rows, row_bytes]` (the file's layout).
    pub fn bytes(&self) -> &[u8] {
        if let Some(Owned::Plain(b)) = self.owned.get() {
            return b;
        }
        let len = self.rows * self.row_bytes();
        &self.src.bytes()[self.offset..self.offset + len]
    }
    /// The bytes of row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.bytes()[r * rb..(r + 1) * rb]
    }

    /// The weight's own copy (see `Owned`), made on the first call.
    fn owned(&self) -> &Owned {
        self.owned.get_or_init(|| {
            let file = self.bytes();
            let owned = match QFormat::of(self.ty).filter(|&f| kernels::interleavable(f)) {
                // The file's pages go as the rows are packed, not at the end: a large
                // matrix (a tied embedding) is never resident twice.
                Some(fmt) => Owned::Packed(kernels::pack_releasing(
                    fmt,
                    file,
                    self.rows,
                    self.cols,
                    &|r| self.src.release(self.offset + r.start..self.offset + r.end),
                )),
                None if self.src.mapped() => {
                    let mut b = AlignedBuf::default();
                    b.resize(file.len(), 0);
                    b.copy_from_slice(file);
                    Owned::Plain(b)
                }
                None => return Owned::Source,
            };
            self.src.release(self.offset..self.offset + file.len());
            owned
        })
    }

    /// The rows repacked for the interleaved products, if this type has them.
    fn packed(&self) -> Option<&Packed> {
        match self.owned() {
            Owned::Packed(p) => Some(p),
            _ => None,
        }
    }

    /// Prepares the weight for the products of this CPU: its own copy (repacked where
    /// they take another layout), and the file's pages released, so that the first
    /// forward pass does neither.
    pub fn prepare(&self) {
        self.owned();
    }

    /// Dequantizes row `r` into `out` (`[cols]`), e.g. for an embedding lookup. A
    /// repacked weight gives its row back from the copy (the file's pages were released).
    pub fn dequant_row(&self, r: usize, out: &mut [f32]) {
        // The type was checked to have kernels in `new`.
        let Ok(f) = dequant_fn(self.ty) else { return };
        match self.owned.get() {
            Some(Owned::Packed(p)) => ROW.with(|row| {
                let mut row = row.borrow_mut();
                row.resize(self.row_bytes(), 0);
                p.file_row(r, &mut row);
                f(&row, out);
            }),
            _ => f(self.row(r), out),
        }
    }
}

/// Weight rows decoded per panel: their codes (`[rows, cols]` i16, 36 KiB for 576
/// columns) stay in L1/L2 while every tile of tokens passes over them.
const PANEL_ROWS: usize = 32;

/// Rows per chunk are rounded to this (a multiple of the row tiles of the AVX-512
/// products: 4 rows for one token, 3 for a few, and the 16-row groups of the
/// interleaved products) ...
fn row_align(k: &Kernels, n_tokens: usize) -> usize {
    if n_tokens > k.direct_max() {
        PANEL_ROWS
    } else {
        48
    }
}

/// ... or, when the product decodes panels, to whole panels (a multiple of 16).
const _: () = assert!(PANEL_ROWS.is_multiple_of(kernels::IROWS));

/// Rows of `w` in a region's row space: each weight starts at a multiple of the
/// region's alignment, so that every chunk starts on a row tile of every weight.
fn span(w: &Weight, align: usize) -> usize {
    w.rows.next_multiple_of(align)
}

/// Reference path: weight rows dequantized together.
const TILE_ROWS: usize = 16;

thread_local! {
    /// The caller's quantized activations, kept between calls (no allocation per token).
    static ACTS: RefCell<QuantActs> = RefCell::new(QuantActs::new());
    /// Each thread's decoded weight panel.
    static PANEL: RefCell<Panel> = RefCell::new(Panel::default());
    /// A row of a repacked weight in the file's layout (`Weight::dequant_row`).
    static ROW: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Per-thread tile of dequantized rows for the f32 reference path.
    static TILE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out[t, r] = Σ_c w[r, c] · x[t, c]`, with the fastest kernels of this CPU.
///
/// `x`: `[n_tokens, w.cols]`; `out`: `[n_tokens, w.rows]`. Threads split the rows of the
/// weight, so each weight byte is read once per call whatever `n_tokens` is.
///
/// Quantized weights take int16 activations (per 32-element block, relative error
/// ~1e-5) and exact integer block sums; float weights take f32 activations. Either way
/// each output is computed by one fixed sequence of floating-point operations,
/// whatever `n_tokens` is and wherever the token sits in the batch (batch invariance:
/// a prompt run alone, in chunks, or beside other sequences gives the same bits), and
/// on every instruction set (see [`crate::kernels`]).
pub fn matmul(w: &Weight, x: &[f32], n_tokens: usize, out: &mut [f32]) {
    matmul_with(kernels::select(), w, x, n_tokens, out)
}

/// [`matmul`] with the given kernel table (tests compare tables with it).
pub fn matmul_with(k: &Kernels, w: &Weight, x: &[f32], n_tokens: usize, out: &mut [f32]) {
    matmul_many_with(k, &mut [(w, out)], x, n_tokens)
}

/// Several weights of the same input width times the same activations (Q/K/V, or gate
/// and up), as one parallel region: the activations are quantized once and threads
/// split the rows of all the weights together, with one barrier for the lot. Each
/// output is exactly what [`matmul`] gives for its weight.
///
/// # Panics
/// If the weights' widths differ, more than [`MAX_PARTS`] are given, or a shape is off.
pub fn matmul_many(parts: &mut [(&Weight, &mut [f32])], x: &[f32], n_tokens: usize) {
    matmul_many_with(kernels::select(), parts, x, n_tokens)
}

/// Most weights one [`matmul_many`] call takes.
pub const MAX_PARTS: usize = 4;

fn matmul_many_with(k: &Kernels, parts: &mut [(&Weight, &mut [f32])], x: &[f32], n_tokens: usize) {
    assert!(
        parts.len() <= MAX_PARTS,
        "matmul_many: at most {MAX_PARTS} weights"
    );
    let Some(cols) = parts.first().map(|p| p.0.cols) else {
        return;
    };
    for (w, out) in parts.iter() {
        assert_eq!(w.cols, cols, "matmul_many: input widths differ");
        assert_eq!(x.len(), n_tokens * cols, "matmul: activations shape");
        assert_eq!(out.len(), n_tokens * w.rows, "matmul: output shape");
    }
    if n_tokens == 0 {
        return;
    }
    if k.f32_reference {
        for (w, out) in parts.iter_mut() {
            matmul_reference(w, x, n_tokens, out);
        }
        return;
    }
    let weights: [Option<&Weight>; MAX_PARTS] = std::array::from_fn(|i| parts.get(i).map(|p| p.0));
    let mut outs: [Option<SyncPtr<f32>>; MAX_PARTS] = std::array::from_fn(|_| None);
    for (o, (_, out)) in outs.iter_mut().zip(parts.iter_mut()) {
        *o = Some(SyncPtr::new(out));
    }
    let align = row_align(k, n_tokens);
    let total: usize = parts.iter().map(|p| span(p.0, align)).sum();
    for w in weights.iter().flatten() {
        w.owned();
    }
    let bytes: usize = weights.iter().flatten().map(|w| w.bytes().len()).sum();
    with_acts(k, &weights, x, cols, &|acts| {
        pool::global().for_chunks_per_thread(chunks_per_thread(n_tokens, bytes), &|c, n| {
            crate::fault::hit(crate::fault::Site::KernelRegion);
            let range = if n_tokens == 1 {
                split_by_bytes(&weights, bytes, c, n, align)
            } else {
                pool::split(total, align, c, n)
            };
            let mut base = 0;
            for (w, out) in weights.iter().zip(&outs) {
                let (Some(w), Some(out)) = (w, out) else {
                    break;
                };
                let r = range.start.max(base)..range.end.min(base + w.rows);
                if r.start < r.end {
                    // SAFETY: these rows of this weight belong to this chunk alone.
                    unsafe { rows_job(k, w, acts, x, n_tokens, r.start - base..r.end - base, out) };
                }
                base += span(w, align);
            }
        })
    })
}

/// The `t`-th of `n` parts of the rows of `weights` (one after the other, each
/// `span`; `total` bytes in all), cut where the bytes before the cut are nearest `t / n`
/// of all (rounded to `align` rows): one token's product streams the bytes, and the weights of one region
/// can be of different types (e.g. Q5_0 queries with Q8_0 values).
fn split_by_bytes(
    weights: &[Option<&Weight>],
    total: usize,
    t: usize,
    n: usize,
    align: usize,
) -> Range<usize> {
    // The row at which the bytes before it reach `target`.
    let cut = |target: usize| {
        let (mut rows, mut bytes) = (0, 0);
        for w in weights.iter().flatten() {
            let len = w.bytes().len();
            if bytes + len >= target {
                let r = (target - bytes).div_ceil(w.row_bytes());
                return rows + r.next_multiple_of(align);
            }
            rows += span(w, align);
            bytes += len;
        }
        rows
    };
    let all: usize = weights.iter().flatten().map(|w| span(w, align)).sum();
    cut(total * t / n).min(all)..cut(total * (t + 1) / n).min(all)
}

/// The gated feed-forward input as one parallel region: `gate = act(x · w_gate) ·
/// (x · w_up)`, with `up = x · w_up` as scratch. Each thread takes the same rows of
/// both weights and applies `act` to those columns of every token, so the
/// element-wise step runs in parallel without a barrier of its own. Exactly
/// `matmul_many` followed by `act.apply`.
///
/// `x`: `[n_tokens, cols]`; `gate`, `up`: `[n_tokens, rows]`.
///
/// # Panics
/// If the two weights' shapes differ or a buffer's shape is off.
pub fn matmul_glu(
    w_gate: &Weight,
    w_up: &Weight,
    act: Glu,
    x: &[f32],
    n_tokens: usize,
    gate: &mut [f32],
    up: &mut [f32],
) {
    let k = kernels::select();
    let (rows, cols) = (w_gate.rows, w_gate.cols);
    assert!(
        w_up.rows == rows && w_up.cols == cols,
        "matmul_glu: gate and up shapes differ"
    );
    assert_eq!(x.len(), n_tokens * cols, "matmul: activations shape");
    assert!(
        gate.len() == n_tokens * rows && up.len() == n_tokens * rows,
        "matmul: output shape"
    );
    if n_tokens == 0 {
        return;
    }
    if k.f32_reference {
        matmul_reference(w_gate, x, n_tokens, gate);
        matmul_reference(w_up, x, n_tokens, up);
        return k.glu(act, gate, up);
    }
    let (g, u) = (SyncPtr::new(gate), SyncPtr::new(up));
    w_gate.owned();
    w_up.owned();
    with_acts(k, &[Some(w_gate), Some(w_up)], x, cols, &|acts| {
        let bytes = w_gate.bytes().len() + w_up.bytes().len();
        let per_thread = chunks_per_thread(n_tokens, bytes);
        pool::global().for_ranges_per_thread(rows, row_align(k, n_tokens), per_thread, &|r| {
            // SAFETY: rows `r` of both outputs belong to this chunk alone, and their
            // columns `r` of every token are written only here, after the products.
            unsafe {
                rows_job(k, w_gate, acts, x, n_tokens, r.clone(), &g);
                rows_job(k, w_up, acts, x, n_tokens, r.clone(), &u);
                for t in 0..n_tokens {
                    let cols_t = t * rows + r.start..t * rows + r.end;
                    k.glu(act, g.slice(cols_t.clone()), u.slice(cols_t));
                }
            }
        })
    })
}

/// Weight bytes per chunk of a one-token product (see [`chunks_per_thread`]).
const DECODE_CHUNK_BYTES: usize = 128 << 10;

/// Chunks per thread of a product of `bytes` of weights for `n_tokens` tokens. One
/// token's product streams its weights, and every chunk restarts the stream (a kernel
/// call, its first tile's prefetch, a counter the threads share), so its chunks hold
/// about [`DECODE_CHUNK_BYTES`] each instead of the pool's 16 per thread. Measured on
/// the AMD Zen 4 VM (SmolLM2 tg128 with 2 threads, paired against 16 per thread):
/// 16 KiB 1.04x, 32 KiB 1.04x, 64 KiB 1.13x, 128 KiB 1.15x, 256 KiB 1.13x, one chunk
/// per thread 1.09x; batches of 2 to 8 tokens did not move, and keep the default.
fn chunks_per_thread(n_tokens: usize, bytes: usize) -> usize {
    if n_tokens > 1 {
        return pool::CHUNKS_PER_THREAD;
    }
    let n = pool::global().n_threads();
    (bytes / (n * DECODE_CHUNK_BYTES)).clamp(1, pool::CHUNKS_PER_THREAD)
}

/// Runs `f` with `x` (`[n, cols]`) quantized for the kernels when any of `weights` is
/// quantized, and prepared for the bf16-pair products when any is BF16 and the table
/// has them (the caller's thread-local buffers, no allocation per call).
fn with_acts(
    k: &Kernels,
    weights: &[Option<&Weight>],
    x: &[f32],
    cols: usize,
    f: &dyn Fn(&QuantActs),
) {
    ACTS.with(|acts| {
        let mut acts = acts.borrow_mut();
        let mut weights = weights.iter().flatten();
        if weights.clone().any(|w| QFormat::of(w.ty).is_some()) {
            k.quantize_acts(x, cols, &mut acts);
        }
        if k.bf16_pairs() && weights.any(|w| w.ty == GgmlType::BF16) {
            k.prepare_bf16(x, cols, &mut acts);
        }
        f(&acts)
    })
}

/// Rows `range` of `w` for every token, written into `out` (`[n_tokens, w.rows]`).
///
/// # Safety
/// Those rows of `out` must be written by no one else meanwhile; `acts` must hold `x`
/// quantized when `w` is quantized.
unsafe fn rows_job(
    k: &Kernels,
    w: &Weight,
    acts: &QuantActs,
    x: &[f32],
    n_tokens: usize,
    range: Range<usize>,
    out: &SyncPtr<f32>,
) {
    // SAFETY: the caller upholds this fn's contract: `out` covers these rows and tokens,
    // which no other thread writes, and the table runs on this CPU
    unsafe {
        let (rows, cols, rb) = (w.rows, w.cols, w.row_bytes());
        let bytes = &w.bytes()[range.start * rb..range.end * rb];
        let o = Out {
            ptr: out.ptr().add(range.start),
            ldo: rows,
        };
        if let Some(p) = w.packed() {
            return k.interleaved(p, range, acts, n_tokens, o);
        }
        if let Some(fmt) = QFormat::of(w.ty) {
            if n_tokens == 1 && k.has_gemv() {
                return k.gemv(fmt, bytes, rb, acts, 0, o);
            }
            if n_tokens <= k.direct_max() {
                return k.direct(fmt, bytes, rb, acts, 0, n_tokens, o);
            }
            PANEL.with(|panel| {
                let mut panel = panel.borrow_mut();
                let mut r0 = 0;
                while r0 < range.len() {
                    let nr = PANEL_ROWS.min(range.len() - r0);
                    panel.reset(fmt, nr, cols);
                    k.decode(fmt, &bytes[r0 * rb..(r0 + nr) * rb], rb, &mut panel);
                    let o = Out {
                        ptr: o.ptr.add(r0),
                        ldo: rows,
                    };
                    k.gemm(&panel, acts, 0, n_tokens, o);
                    r0 += nr;
                }
            })
        } else if let Some(f) = FFormat::of(w.ty) {
            if f == FFormat::BF16 && k.bf16_gemm(bytes, range.len(), cols, acts, o) {
                return;
            }
            let mut r0 = 0;
            while r0 < range.len() {
                let nr = PANEL_ROWS.min(range.len() - r0);
                let o = Out {
                    ptr: o.ptr.add(r0),
                    ldo: rows,
                };
                k.float_gemm(f, &bytes[r0 * rb..(r0 + nr) * rb], nr, cols, x, n_tokens, o);
                r0 += nr;
            }
        }
        // `Weight::new` admits only types with kernels; every one of them is above.
    }
}

/// The accuracy reference: f32 activations times dequantized f32 rows, one fixed-order
/// dot product per output (what `TUILI_KERNELS=f32` runs). Slow; batch invariant too.
pub fn matmul_reference(w: &Weight, x: &[f32], n_tokens: usize, out: &mut [f32]) {
    let (rows, cols) = (w.rows, w.cols);
    assert_eq!(x.len(), n_tokens * cols, "matmul: activations shape");
    assert_eq!(out.len(), n_tokens * rows, "matmul: output shape");
    let Ok(deq) = dequant_fn(w.ty) else { return };
    let k = kernels::select();
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
                    // SAFETY: rows r0..r0+n belong to this chunk alone, and
                    // t * rows + r0 + n <= out.len().
                    let o = unsafe { out_ptr.slice(t * rows + r0..t * rows + r0 + n) };
                    for (i, o) in o.iter_mut().enumerate() {
                        *o = k.dot(&tile[i * cols..(i + 1) * cols], xt);
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
    use crate::kernels::tests::bits;
    use crate::quant::{dequantize, quantize};
    use rand::{Rng, SeedableRng};

    /// Against an f64 product of the dequantized weights, within the bound that int16
    /// activations allow (each x is off by at most half its block's step), and batch
    /// invariance: every token of a batch bit-identical to the token run alone.
    #[test]
    fn matmul_matches_reference_and_is_batch_invariant() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for ty in GgmlType::ALL {
            if dequant_fn(ty).is_err() {
                continue;
            }
            let rows = 37;
            let cols = if ty.block_size() == 256 { 512 } else { 96 };
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
                    let xt = &x[t * cols..(t + 1) * cols];
                    for r in 0..rows {
                        let wr = &deq[r * cols..(r + 1) * cols];
                        let want: f64 = wr.iter().zip(xt).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let abs: f64 = wr
                            .iter()
                            .zip(xt)
                            .map(|(&a, &b)| (a as f64 * b as f64).abs())
                            .sum();
                        let quant: f64 = if ty.is_quantized() {
                            wr.chunks(32)
                                .zip(xt.chunks(32))
                                .map(|(wb, xb)| {
                                    let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                                    let half_step = amax as f64 / 32767.0 / 2.0;
                                    wb.iter().map(|v| v.abs() as f64).sum::<f64>() * half_step
                                })
                                .sum()
                        } else if ty == GgmlType::BF16 && kernels::select().bf16_pairs() {
                            // Activations rounded to bf16 (8 significant bits).
                            abs / 256.0
                        } else {
                            0.0
                        };
                        let got = out[t * rows + r] as f64;
                        assert!(
                            (got - want).abs() <= quant * 1.001 + 1e-6 * abs,
                            "{ty} t={t} r={r}: {got} vs {want} (bound {quant})"
                        );
                    }
                    let mut alone = vec![0f32; rows];
                    matmul(&w, xt, 1, &mut alone);
                    assert_eq!(alone, out[t * rows..(t + 1) * rows], "{ty} t={t}");
                }
            }
        }
    }

    /// A weight's rows dequantize to the same values before and after it is repacked
    /// (an embedding that is also the output is looked up from the copy).
    #[test]
    fn dequant_row_is_unchanged_by_repacking() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(10);
        let rows = 21;
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
            GgmlType::Q3_K,
            GgmlType::Q2_K,
        ] {
            let cols = if ty.block_size() == 256 { 512 } else { 96 };
            let wf: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let w = Weight::from_vec(ty, rows, cols, quantize(ty, &wf).unwrap()).unwrap();
            let rows_of = |w: &Weight| -> Vec<Vec<f32>> {
                (0..rows)
                    .map(|r| {
                        let mut o = vec![0f32; cols];
                        w.dequant_row(r, &mut o);
                        o
                    })
                    .collect()
            };
            let before = rows_of(&w);
            let tied = w.clone();
            w.prepare();
            assert_eq!(
                matches!(tied.owned.get(), Some(Owned::Packed(_))),
                kernels::interleavable(QFormat::of(ty).unwrap())
            );
            assert_eq!(rows_of(&tied), before, "{ty}");
        }
    }

    /// Weights of different types and heights in one region give exactly the outputs
    /// of separate calls, for one token, a few and many.
    #[test]
    fn matmul_many_equals_separate_calls() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let cols = 256;
        let shapes = [
            (GgmlType::Q4_K, 36),
            (GgmlType::Q8_0, 20),
            (GgmlType::Q4_1, 12),
            (GgmlType::F16, 20),
        ];
        let ws: Vec<Weight> = shapes
            .iter()
            .map(|&(ty, rows)| {
                let wf: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
                Weight::from_vec(ty, rows, cols, quantize(ty, &wf).unwrap()).unwrap()
            })
            .collect();
        for n in [1, 5, 40] {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let want: Vec<Vec<f32>> = ws
                .iter()
                .map(|w| {
                    let mut o = vec![0f32; n * w.rows()];
                    matmul(w, &x, n, &mut o);
                    o
                })
                .collect();
            let mut got: Vec<Vec<f32>> = ws.iter().map(|w| vec![0f32; n * w.rows()]).collect();
            let [a, b, c, d] = &mut got[..] else {
                unreachable!()
            };
            matmul_many(
                &mut [(&ws[0], a), (&ws[1], b), (&ws[2], c), (&ws[3], d)],
                &x,
                n,
            );
            assert_eq!(got, want, "n={n}");
        }
    }

    /// The fused gated region gives the bits of the two products and the activation, for
    /// one token, a few, and many (whose activations all threads quantize), with both
    /// activations.
    #[test]
    fn matmul_glu_equals_products_then_activation() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let (rows, cols) = (44, 256);
        for ty in [GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::F16] {
            let [wg, wu] = [0, 1].map(|_| {
                let wf: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
                Weight::from_vec(ty, rows, cols, quantize(ty, &wf).unwrap()).unwrap()
            });
            for (n, act) in [(1, Glu::Silu), (5, Glu::GeluTanh), (40, Glu::Silu)] {
                let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-2.0..2.0)).collect();
                let (mut want, mut up) = (vec![0f32; n * rows], vec![0f32; n * rows]);
                matmul(&wg, &x, n, &mut want);
                matmul(&wu, &x, n, &mut up);
                act.apply(&mut want, &up);
                let (mut got, mut scratch) = (vec![0f32; n * rows], vec![0f32; n * rows]);
                matmul_glu(&wg, &wu, act, &x, n, &mut got, &mut scratch);
                assert_eq!(bits(&got), bits(&want), "{ty} n={n} {act:?}");
            }
        }
    }
}
