//! SIMD kernels behind `matmul` and the attention dot products, picked once per
//! process by CPU feature detection ([`select`]).
//!
//! # Integer activations, exact block sums
//!
//! A quantized matmul first quantizes each token's activations per 32-element block to
//! int16 with an f32 scale (`d = max|x| / 32767`, relative error ~1e-5: invisible in
//! perplexity, where llama.cpp's 8-bit activations cost ~0.5%). Every weight format is
//! decoded to small integer *codes* (Q4_0: `q - 8`; Q6_K: `(q - 32) * scale`; ...) so
//! that a weight block times an activation block is an exact integer (`vpmaddwd`), kept
//! as 8 partial sums ("lanes"). Then one float step per block:
//!
//! ```text
//! acc[k] = fma(ws[j] * d_x[j], float(isum_j[k]), acc[k])      k = 0..8
//! ```
//!
//! where `ws[j]` is the weight's float scale of block `j` and lane `k` of block `j` holds
//! the products of elements `{2k, 2k+1, 16+2k, 17+2k}`. Blocks come in groups of 8 (256
//! elements, one K-quant super-block); formats with a minimum (Q4_1, Q5_1, Q2_K, Q4_K,
//! Q5_K) end each group with `acc = fma(minv, s_x, acc)`, lane `j` pairing the weight's
//! (negated) block minimum with the block's activation sum. The output is
//! `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`.
//!
//! Because the integer part is exact and the float part runs in this fixed order for
//! every output, results do not depend on how many tokens are in the batch, on the tile
//! a kernel works on, nor on the instruction set: the AVX2, NEON and scalar kernels give
//! bit-identical outputs, and tests check exactly that.
//!
//! # Interleaved rows: one block sum per output
//!
//! Every table has interleaved products (`interleave::interleavable`): the weights of
//! Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 are repacked once, at load, in groups of 16 rows
//! (`interleave`), and follow the *block-sum specification* instead: each output has one
//! float accumulator and each block's integer sum stays whole,
//!
//! ```text
//! acc = fma(ws[j] * d_x[j], float(isum_j), acc)     isum_j = Σ_i c[32j+i] q_x[32j+i]
//! acc = fma(minv[j], s_x[j], acc)                   (Q4_1, Q5_1)
//! ```
//!
//! blocks in order; the output is `acc`. A 512-bit register then holds one lane per row:
//! `vpdpwssd` adds an element pair of 16 rows, and one float step serves 16 outputs per
//! block instead of the 8 lanes of one (AVX2: 8 rows per register, NEON: 4). Batch
//! invariance holds as before (the integer part is exact, the float part one fixed
//! sequence per output), and every table, [`scalar`] included, gives the same bits. The
//! other formats (K-quants) keep the lane specification until they are interleaved too.
//!
//! Float weights (F32, F16, BF16) keep f32 activations: `acc[i % 8] = fma(w[i], x[i],
//! acc[i % 8])` in element order, then the same reduction.
//!
//! # Shape of the code
//!
//! A matmul decodes a panel of weight rows to codes (`Panel`) and multiplies it by
//! tiles of tokens. [`scalar`] is the specification (plain Rust, written for clarity);
//! `avx2` and `neon` are its fast twins, and `avx512` replaces the AVX2 many-token
//! product where AVX-512 VNNI is present (two tokens per 512-bit register). The scalar
//! fallback calls `f32::mul_add`, which is a library call on x86-64 CPUs without FMA
//! (correct, slow; such CPUs predate 2013).

// Kernels index several parallel arrays (rows, tokens, lanes) with one counter.
#![allow(clippy::needless_range_loop)]

/// Defines `scores_by_dot` (attention scores of the query heads that share one K/V head) from
/// the module's dot body (`#[inline(always)]`, so it inlines), and `mix_by_axpy` from
/// its axpy body, with the attributes given (its target features): results are those
/// of its `dot`/`axpy`, bit for bit.
macro_rules! grouped_attention_ops {
    ($dot:ident, $axpy:ident $(, #[$attr:meta])*) => {
        /// `out[h, p] = dot(q[h], row p)`, row `p` = `base[rows[p]..][..hd]`;
        /// `q`: `[g, hd]`, `out`: `[g, rows.len()]`.
        $(#[$attr])*
        #[allow(dead_code)]
        pub(super) unsafe fn scores_by_dot(q: &[f32], base: &[f32], rows: &[usize], out: &mut [f32]) {
            let np = rows.len();
            let hd = q.len() / (out.len() / np.max(1)).max(1);
            for (p, &r) in rows.iter().enumerate() {
                let k = &base[r..r + hd];
                for (h, qh) in q.chunks_exact(hd).enumerate() {
                    out[h * np + p] = $dot(qh, k);
                }
            }
        }

        /// `out[h] = Σ_p coef[h, p] · row p`, as one axpy per position in order from
        /// zeros; `coef`: `[g, rows.len()]`, `out`: `[g, hd]`.
        $(#[$attr])*
        #[allow(dead_code)]
        pub(super) unsafe fn mix_by_axpy(coef: &[f32], base: &[f32], rows: &[usize], out: &mut [f32]) {
            let np = rows.len();
            let hd = out.len() / (coef.len() / np.max(1)).max(1);
            out.fill(0.0);
            for (p, &r) in rows.iter().enumerate() {
                let v = &base[r..r + hd];
                for (h, oh) in out.chunks_exact_mut(hd).enumerate() {
                    $axpy(coef[h * np + p], v, oh);
                }
            }
        }
    };
}

mod interleave;
mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

use tuili_gguf::GgmlType;

use crate::pool::SyncPtr;

pub(crate) use interleave::{interleavable, pack, Packed, IROWS};

/// From this many tokens on (batched decode, prefill), activations are quantized by all
/// the threads, each taking whole token pairs (quantized, then packed).
const PARALLEL_QUANTIZE_MIN: usize = 2;

/// Elements per activation block (one f32 scale each).
pub const QB: usize = 32;
/// Activation blocks per group: 256 elements, one K-quant super-block.
pub const GROUP: usize = 8;

/// How a format's group ends: which minimum terms it adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MinKind {
    /// No minimum (Q4_0, Q5_0, Q8_0, Q3_K, Q6_K).
    None,
    /// One per 32-element block, paired with `s` (Q4_1, Q5_1, Q4_K, Q5_K).
    Per32,
    /// One per 16-element half-block, paired with `s16` (Q2_K).
    Per16,
}

impl MinKind {
    /// Minimum values stored per group.
    pub(crate) fn per_group(self) -> usize {
        match self {
            MinKind::None => 0,
            MinKind::Per32 => GROUP,
            MinKind::Per16 => 2 * GROUP,
        }
    }
}

/// A weight format with integer kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QFormat {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

impl QFormat {
    /// The integer format of `ty`, if it has one.
    pub(crate) fn of(ty: GgmlType) -> Option<QFormat> {
        Some(match ty {
            GgmlType::Q4_0 => QFormat::Q4_0,
            GgmlType::Q4_1 => QFormat::Q4_1,
            GgmlType::Q5_0 => QFormat::Q5_0,
            GgmlType::Q5_1 => QFormat::Q5_1,
            GgmlType::Q8_0 => QFormat::Q8_0,
            GgmlType::Q2_K => QFormat::Q2K,
            GgmlType::Q3_K => QFormat::Q3K,
            GgmlType::Q4_K => QFormat::Q4K,
            GgmlType::Q5_K => QFormat::Q5K,
            GgmlType::Q6_K => QFormat::Q6K,
            _ => return None,
        })
    }

    pub(crate) fn ty(self) -> GgmlType {
        match self {
            QFormat::Q4_0 => GgmlType::Q4_0,
            QFormat::Q4_1 => GgmlType::Q4_1,
            QFormat::Q5_0 => GgmlType::Q5_0,
            QFormat::Q5_1 => GgmlType::Q5_1,
            QFormat::Q8_0 => GgmlType::Q8_0,
            QFormat::Q2K => GgmlType::Q2_K,
            QFormat::Q3K => GgmlType::Q3_K,
            QFormat::Q4K => GgmlType::Q4_K,
            QFormat::Q5K => GgmlType::Q5_K,
            QFormat::Q6K => GgmlType::Q6_K,
        }
    }

    pub(crate) fn min_kind(self) -> MinKind {
        match self {
            QFormat::Q4_1 | QFormat::Q5_1 | QFormat::Q4K | QFormat::Q5K => MinKind::Per32,
            QFormat::Q2K => MinKind::Per16,
            _ => MinKind::None,
        }
    }

    /// Bytes of one 256-element group (8 legacy blocks or one super-block).
    pub(crate) fn group_bytes(self) -> usize {
        let ty = self.ty();
        256 / ty.block_size() * ty.type_size()
    }
}

/// A float weight format (f32 activations, no quantization).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FFormat {
    F32,
    F16,
    BF16,
}

impl FFormat {
    pub(crate) fn of(ty: GgmlType) -> Option<FFormat> {
        match ty {
            GgmlType::F32 => Some(FFormat::F32),
            GgmlType::F16 => Some(FFormat::F16),
            GgmlType::BF16 => Some(FFormat::BF16),
            _ => None,
        }
    }
}

/// 64 bytes, aligned to a cache line: the storage unit of [`AlignedBuf`].
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A growable buffer of `i16` or `f32` that starts on a cache line, so that the
/// 32-byte SIMD loads of whole blocks never straddle two lines.
#[derive(Clone)]
pub(crate) struct AlignedBuf<T> {
    lines: Vec<Line>,
    len: usize,
    _t: PhantomData<T>,
}

/// The element types `AlignedBuf` holds: plain numbers, valid for every bit pattern.
pub(crate) trait Plain: Copy {}
impl Plain for u8 {}
impl Plain for i16 {}
impl Plain for i32 {}
impl Plain for f32 {}

impl<T: Plain> Default for AlignedBuf<T> {
    fn default() -> Self {
        AlignedBuf {
            lines: Vec::new(),
            len: 0,
            _t: PhantomData,
        }
    }
}

impl<T: Plain> AlignedBuf<T> {
    /// Sets the length to `len`; new elements are `v`.
    pub(crate) fn resize(&mut self, len: usize, v: T) {
        let old = self.len;
        let bytes = len * std::mem::size_of::<T>();
        if bytes > self.lines.len() * 64 {
            self.lines.resize(bytes.div_ceil(64), Line([0; 64]));
        }
        self.len = len;
        if len > old {
            self[old..].fill(v);
        }
    }
}

impl<T: Plain> Deref for AlignedBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the lines hold at least `len` values of `T` (sized in `resize`), are
        // aligned to 64 >= align_of::<T>(), and every bit pattern is a valid `T`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const T, self.len) }
    }
}

impl<T: Plain> DerefMut for AlignedBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut T, self.len) }
    }
}

impl<T: Plain + std::fmt::Debug> std::fmt::Debug for AlignedBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Plain + PartialEq> PartialEq for AlignedBuf<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

/// Activations of `n` tokens quantized per 32-element block to int16, the input of the
/// integer matmul kernels. Buffers are reused from call to call.
#[derive(Debug, Default, Clone)]
pub struct QuantActs {
    cols: usize,
    n: usize,
    /// `[n, cols]`: `x ≈ d * q`, |q| <= 32767.
    q: AlignedBuf<i16>,
    /// `[n, nbp]` (`nbp`: blocks rounded up to a whole group, padding 0): block scales;
    /// NaN for a block holding a non-finite value.
    d: AlignedBuf<f32>,
    /// `[n, nbp]`: `d * Σ q` of each block.
    s: AlignedBuf<f32>,
    /// `[n, 2 nbp]`: `d * Σ q` of each 16-element half-block.
    s16: AlignedBuf<f32>,
    /// `[n, nbp]`: `Σ q` of each block (exact), for the interleaved products' offsets.
    xsum: AlignedBuf<i32>,
    /// Whether the token-pair copies below match `q`, `d`, `s`, `s16` (set by the
    /// tables that read them; see `avx512`).
    packed: bool,
    /// `[ceil(n / 2), cols / 32, 64]`: tokens `2p`, `2p + 1` block by block, as
    /// `[q_2p[0..16], q_2p+1[0..16], q_2p[16..32], q_2p+1[16..32]]` (a missing odd
    /// token is zeros).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    qp: AlignedBuf<i16>,
    /// `[ceil(n / 2), nbp, 16]`: `[d_2p[j] x8, d_2p+1[j] x8]`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    dp: AlignedBuf<f32>,
    /// `[ceil(n / 2), nbp / 8, 16]`: `[s_2p[8g..8g+8], s_2p+1[8g..8g+8]]`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    sp: AlignedBuf<f32>,
    /// `[ceil(n / 2), 2 nbp / 8, 16]`: the same of `s16`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    s16p: AlignedBuf<f32>,
}

impl QuantActs {
    /// An empty set (buffers grow on first use).
    pub fn new() -> QuantActs {
        QuantActs::default()
    }
    /// Elements per token.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Tokens.
    pub fn n_tokens(&self) -> usize {
        self.n
    }
    /// Blocks per token, padded to whole groups.
    pub(crate) fn nbp(&self) -> usize {
        (self.cols / QB).div_ceil(GROUP) * GROUP
    }
    /// Quantized values of token `t`: `[cols]`.
    pub fn q(&self, t: usize) -> &[i16] {
        &self.q[t * self.cols..(t + 1) * self.cols]
    }
    /// Block scales of token `t`: `[cols / 32]`.
    pub fn d(&self, t: usize) -> &[f32] {
        let nbp = self.nbp();
        &self.d[t * nbp..t * nbp + self.cols / QB]
    }
    /// Block sums `d * Σ q` of token `t`: `[cols / 32]`.
    pub fn s(&self, t: usize) -> &[f32] {
        let nbp = self.nbp();
        &self.s[t * nbp..t * nbp + self.cols / QB]
    }

    /// Token `t`'s values, block scales, and the sums its format's minimum terms pair
    /// with (`s16` for `MinKind::Per16`, i.e. `m == 2`, else `s`), as the raw pointers the
    /// SIMD kernels read: `(q [cols], d [nbp], s [nbp] or s16 [2 nbp])`.
    ///
    /// # Safety
    /// `t < n_tokens()`.
    #[inline(always)]
    pub(crate) unsafe fn token_ptrs(
        &self,
        t: usize,
        m: u8,
    ) -> (*const i16, *const f32, *const f32) {
        let nbp = self.nbp();
        let xs = if m == 2 {
            self.s16.as_ptr().add(t * 2 * nbp)
        } else {
            self.s.as_ptr().add(t * nbp)
        };
        (
            self.q.as_ptr().add(t * self.cols),
            self.d.as_ptr().add(t * nbp),
            xs,
        )
    }

    /// Sizes the buffers for `n` tokens of `cols` (a multiple of 32).
    fn reset(&mut self, cols: usize, n: usize) {
        self.cols = cols;
        self.n = n;
        let nbp = self.nbp();
        self.q.resize(n * cols, 0);
        self.d.resize(n * nbp, 0.0);
        self.s.resize(n * nbp, 0.0);
        self.s16.resize(n * 2 * nbp, 0.0);
        self.xsum.resize(n * nbp, 0);
        self.packed = false;
    }

    /// Sizes the token-pair buffers for the current tokens; returns `(qp, dp, sp, s16p)`.
    #[allow(clippy::type_complexity)]
    fn size_packed(&mut self) -> (*mut i16, *mut f32, *mut f32, *mut f32) {
        let (n, cols, nbp) = (self.n, self.cols, self.nbp());
        let np = n.div_ceil(2);
        let ngs = nbp / GROUP;
        self.qp.resize(np * (cols / QB) * 64, 0);
        self.dp.resize(np * nbp * 16, 0.0);
        self.sp.resize(np * ngs * 16, 0.0);
        self.s16p.resize(np * 2 * ngs * 16, 0.0);
        (
            self.qp.as_mut_ptr(),
            self.dp.as_mut_ptr(),
            self.sp.as_mut_ptr(),
            self.s16p.as_mut_ptr(),
        )
    }
}

/// A `QuantActs` as `pack` sees it: the per-token buffers to read and the token-pair
/// buffers (sized for all pairs) to write, pair ranges by disjoint callers.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct PackView {
    pub(crate) n: usize,
    pub(crate) cols: usize,
    pub(crate) nbp: usize,
    pub(crate) q: *const i16,
    pub(crate) d: *const f32,
    pub(crate) s: *const f32,
    pub(crate) s16: *const f32,
    pub(crate) qp: *mut i16,
    pub(crate) dp: *mut f32,
    pub(crate) sp: *mut f32,
    pub(crate) s16p: *mut f32,
}

// SAFETY: callers write disjoint pair ranges only (see `Kernels::quantize_acts`).
unsafe impl Sync for PackView {}

/// Weight rows decoded to integer codes and float scales (see the module docs).
#[derive(Debug, Default, Clone)]
pub(crate) struct Panel {
    pub(crate) nr: usize,
    pub(crate) cols: usize,
    /// Groups per row (the last one may be partial for the 32-element formats).
    pub(crate) ng: usize,
    pub(crate) min: Option<MinKind>,
    /// `[nr, cols]`: integer codes, element order.
    pub(crate) codes: AlignedBuf<i16>,
    /// `[nr, ng * 8]`: float scale of each block (padding 0).
    pub(crate) ws: AlignedBuf<f32>,
    /// `[nr, ng * min.per_group()]`: minimum terms (padding 0).
    pub(crate) minv: AlignedBuf<f32>,
}

impl Panel {
    /// Sizes the buffers for `nr` rows of `cols` in format `fmt`.
    pub(crate) fn reset(&mut self, fmt: QFormat, nr: usize, cols: usize) {
        self.nr = nr;
        self.cols = cols;
        self.ng = (cols / QB).div_ceil(GROUP);
        let mk = fmt.min_kind();
        self.min = Some(mk);
        self.codes.resize(nr * cols, 0);
        self.ws.resize(nr * self.ng * GROUP, 0.0);
        self.minv.resize(nr * self.ng * mk.per_group(), 0.0);
    }
    pub(crate) fn min_kind(&self) -> MinKind {
        self.min.unwrap_or(MinKind::None)
    }
}

/// Where a kernel writes: `out[t * ldo + r]` for token `t` and row `r` of its tile.
#[derive(Clone, Copy)]
pub(crate) struct Out {
    pub(crate) ptr: *mut f32,
    pub(crate) ldo: usize,
}

// Function types of one instruction set. Every one is `unsafe`: it may use
// instructions the CPU must have (guaranteed by the table being built only after
// detection) and trusts the shapes its safe caller checked.
type QuantizeFn =
    unsafe fn(x: &[f32], q: &mut [i16], d: &mut [f32], s: &mut [f32], s16: &mut [f32]);
type PackFn = unsafe fn(v: &PackView, pairs: std::ops::Range<usize>);
type DecodeFn = unsafe fn(fmt: QFormat, w: &[u8], row_bytes: usize, panel: &mut Panel);
type GemmFn = unsafe fn(p: &Panel, acts: &QuantActs, t0: usize, nt: usize, out: Out);
type GemvFn =
    unsafe fn(fmt: QFormat, w: &[u8], row_bytes: usize, acts: &QuantActs, t: usize, out: Out);
type DirectFn = unsafe fn(
    fmt: QFormat,
    w: &[u8],
    row_bytes: usize,
    acts: &QuantActs,
    t0: usize,
    nt: usize,
    out: Out,
);
type InterleavedFn =
    unsafe fn(p: &Packed, rows: std::ops::Range<usize>, acts: &QuantActs, nt: usize, out: Out);
type FloatGemmFn =
    unsafe fn(f: FFormat, w: &[u8], nr: usize, cols: usize, x: &[f32], nt: usize, out: Out);
type DotFn = unsafe fn(a: &[f32], b: &[f32]) -> f32;
type AxpyFn = unsafe fn(a: f32, x: &[f32], y: &mut [f32]);
type RowsFn = unsafe fn(a: &[f32], base: &[f32], rows: &[usize], out: &mut [f32]);
type SoftmaxFn = unsafe fn(x: &mut [f32], scale: f32);

/// The kernels of one instruction set.
pub struct Kernels {
    name: &'static str,
    /// Set by `TUILI_KERNELS=f32`: matmul takes the f32-activation reference path.
    pub(crate) f32_reference: bool,
    quantize: QuantizeFn,
    /// Builds the extra activation layout this table's `gemm` reads, if any.
    pack: Option<PackFn>,
    decode: DecodeFn,
    gemm: GemmFn,
    /// One token straight from the weight bytes (codes in registers), where the
    /// instruction set has it; the same operations as `decode` + `gemm`.
    gemv: Option<GemvFn>,
    /// A few tokens straight from the weight bytes (`direct_max` at most), where the
    /// instruction set has it; the same operations as `decode` + `gemm`.
    direct: Option<DirectFn>,
    direct_max: usize,
    /// Products of weights repacked with rows interleaved (`interleave`): the
    /// block-sum specification for the formats that `interleave::interleavable` names.
    interleaved: InterleavedFn,
    float_gemm: FloatGemmFn,
    dot: DotFn,
    axpy: AxpyFn,
    scores: RowsFn,
    mix: RowsFn,
    softmax: SoftmaxFn,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kernels({})", self.name())
    }
}

impl Kernels {
    /// `"avx512"`, `"avx2"`, `"neon"` or `"scalar"` (`"...+f32-reference"` when forced so).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Dot product of two f32 rows (attention scores), in a fixed order:
    /// element `i` goes to accumulator `(i / 8) % 4`, lane `i % 8`.
    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot: lengths differ");
        // SAFETY: the table exists only where its instructions run; lengths checked.
        unsafe { (self.dot)(a, b) }
    }

    /// `y[i] = fma(a, x[i], y[i])`.
    pub fn axpy(&self, a: f32, x: &[f32], y: &mut [f32]) {
        assert_eq!(x.len(), y.len(), "axpy: lengths differ");
        // SAFETY: as in `dot`.
        unsafe { (self.axpy)(a, x, y) }
    }

    /// Attention scores of `g` query heads against `rows.len()` keys:
    /// `out[h, p] = dot(q[h], base[rows[p]..][..hd])`, bit-identical to
    /// [`Kernels::dot`]. `q`: `[g, hd]`, `out`: `[g, rows.len()]`.
    ///
    /// # Panics
    /// If the shapes disagree or a row lies outside `base`.
    pub fn scores(&self, q: &[f32], hd: usize, base: &[f32], rows: &[usize], out: &mut [f32]) {
        check_rows("scores", q.len(), hd, base, rows, out.len());
        // SAFETY: as in `dot`; shapes checked.
        unsafe { (self.scores)(q, base, rows, out) }
    }

    /// Weighted sums of `rows.len()` value rows for `g` heads: `out[h] = Σ_p coef[h, p]
    /// · base[rows[p]..][..hd]`, bit-identical to zeros followed by one
    /// [`Kernels::axpy`] per position in order. `coef`: `[g, rows.len()]`, `out`: `[g, hd]`.
    ///
    /// # Panics
    /// As [`Kernels::scores`].
    pub fn mix(&self, coef: &[f32], base: &[f32], rows: &[usize], out: &mut [f32]) {
        let hd = if coef.is_empty() {
            0
        } else {
            out.len() * rows.len() / coef.len()
        };
        check_rows("mix", out.len(), hd, base, rows, coef.len());
        // SAFETY: as in `dot`; shapes checked.
        unsafe { (self.mix)(coef, base, rows, out) }
    }

    /// `ops::softmax_scaled` (the same bits), compiled for this instruction set.
    pub fn softmax(&self, x: &mut [f32], scale: f32) {
        // SAFETY: as in `dot`.
        unsafe { (self.softmax)(x, scale) }
    }

    /// Quantizes `x` (`[n, cols]`) into `acts`, reusing its buffers.
    ///
    /// # Panics
    /// If `cols` is not a positive multiple of 32 or `x` not whole rows (shapes come
    /// from the weight, checked when it was built, not from input data).
    pub fn quantize_acts(&self, x: &[f32], cols: usize, acts: &mut QuantActs) {
        assert!(
            cols > 0 && cols.is_multiple_of(QB) && x.len().is_multiple_of(cols),
            "quantize_acts: rows of {cols} (a multiple of {QB}) expected, got {} values",
            x.len()
        );
        let n = x.len() / cols;
        acts.reset(cols, n);
        let np = n.div_ceil(2);
        let nbp = acts.nbp();
        // One token takes the one-token product, which reads no pair layout.
        let pair_bufs = self.pack.filter(|_| n >= 2).map(|_| acts.size_packed());
        let (q, d) = (SyncPtr::new(&mut acts.q), SyncPtr::new(&mut acts.d));
        let (s, s16) = (SyncPtr::new(&mut acts.s), SyncPtr::new(&mut acts.s16));
        let xsum = SyncPtr::new(&mut acts.xsum);
        let view = pair_bufs.map(|(qp, dp, sp, s16p)| PackView {
            n,
            cols,
            nbp,
            q: q.0.cast_const(),
            d: d.0.cast_const(),
            s: s.0.cast_const(),
            s16: s16.0.cast_const(),
            qp,
            dp,
            sp,
            s16p,
        });
        // Token pairs `pairs`: quantized, then copied into the pair layout if the table
        // has one.
        let job = |pairs: std::ops::Range<usize>| {
            for t in 2 * pairs.start..(2 * pairs.end).min(n) {
                // SAFETY: the table exists only where its instructions run; `reset` sized
                // every buffer for `cols`, and token t's rows belong to this caller alone.
                unsafe {
                    (self.quantize)(
                        &x[t * cols..(t + 1) * cols],
                        q.slice(t * cols..(t + 1) * cols),
                        d.slice(t * nbp..(t + 1) * nbp),
                        s.slice(t * nbp..(t + 1) * nbp),
                        s16.slice(t * 2 * nbp..(t + 1) * 2 * nbp),
                    );
                    // The exact block sums of the interleaved products' offsets.
                    let qt = q.slice(t * cols..(t + 1) * cols);
                    for (o, qb) in xsum
                        .slice(t * nbp..(t + 1) * nbp)
                        .iter_mut()
                        .zip(qt.chunks_exact(QB))
                    {
                        *o = qb.iter().map(|&v| v as i32).sum();
                    }
                };
            }
            if let (Some(pack), Some(v)) = (self.pack, &view) {
                // SAFETY: `size_packed` sized the pair buffers; these pairs' tokens were
                // just quantized, and their slots are written by this caller alone.
                unsafe { pack(v, pairs) };
            }
        };
        if n >= PARALLEL_QUANTIZE_MIN {
            // Token pairs split among the threads.
            crate::pool::global().for_ranges(np, 1, &job);
        } else {
            job(0..np);
        }
        acts.packed = view.is_some();
    }

    /// Decodes `panel.nr` rows of `fmt` (`w`: `[nr, row_bytes]`) into `panel`, which
    /// `reset` sized.
    pub(crate) fn decode(&self, fmt: QFormat, w: &[u8], row_bytes: usize, panel: &mut Panel) {
        assert_eq!(w.len(), panel.nr * row_bytes, "decode: weight bytes");
        assert_eq!(
            row_bytes * fmt.ty().block_size(),
            panel.cols * fmt.ty().type_size()
        );
        // SAFETY: shapes checked above; the table exists only where it runs.
        unsafe { (self.decode)(fmt, w, row_bytes, panel) }
    }

    /// `out[t * ldo + r] = row r of panel · token t0 + t`, for all rows and `nt` tokens.
    ///
    /// # Safety
    /// `out` must be valid for those writes and not written by anyone else meanwhile.
    pub(crate) unsafe fn gemm(&self, p: &Panel, acts: &QuantActs, t0: usize, nt: usize, out: Out) {
        assert!(t0 + nt <= acts.n && acts.cols == p.cols, "gemm: shapes");
        (self.gemm)(p, acts, t0, nt, out)
    }

    /// Whether [`Kernels::gemv`] runs (else decode a panel and use `gemm`).
    pub(crate) fn has_gemv(&self) -> bool {
        self.gemv.is_some()
    }

    /// `out[r] = row r of w · token t`, for the rows of `w` (`[nr, row_bytes]`).
    ///
    /// # Safety
    /// As for [`Kernels::gemm`]; `has_gemv` must be true (else it does nothing).
    pub(crate) unsafe fn gemv(
        &self,
        fmt: QFormat,
        w: &[u8],
        row_bytes: usize,
        acts: &QuantActs,
        t: usize,
        out: Out,
    ) {
        assert!(
            t < acts.n && row_bytes * fmt.ty().block_size() == acts.cols * fmt.ty().type_size()
        );
        assert!(w.len().is_multiple_of(row_bytes), "gemv: weight bytes");
        if let Some(f) = self.gemv {
            f(fmt, w, row_bytes, acts, t, out)
        }
    }

    /// Most tokens [`Kernels::direct`] takes (0: it does not run).
    pub(crate) fn direct_max(&self) -> usize {
        if self.direct.is_some() {
            self.direct_max
        } else {
            0
        }
    }

    /// `out[t * ldo + r] = row r of w · token t0 + t` for the rows of `w`
    /// (`[nr, row_bytes]`) and `nt <= direct_max()` tokens, decoding in registers.
    ///
    /// # Safety
    /// As for [`Kernels::gemm`]; `direct_max` must be at least `nt` (else it does
    /// nothing).
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn direct(
        &self,
        fmt: QFormat,
        w: &[u8],
        row_bytes: usize,
        acts: &QuantActs,
        t0: usize,
        nt: usize,
        out: Out,
    ) {
        assert!(
            t0 + nt <= acts.n
                && row_bytes * fmt.ty().block_size() == acts.cols * fmt.ty().type_size()
        );
        assert!(w.len().is_multiple_of(row_bytes), "direct: weight bytes");
        if let Some(f) = self.direct.filter(|_| nt <= self.direct_max) {
            f(fmt, w, row_bytes, acts, t0, nt, out)
        }
    }

    /// `out[t * ldo + r - rows.start] = row r of p · token t` for rows `rows` (starting
    /// at a multiple of 16) and tokens `0..nt`.
    ///
    /// # Safety
    /// As for [`Kernels::gemm`].
    pub(crate) unsafe fn interleaved(
        &self,
        p: &Packed,
        rows: std::ops::Range<usize>,
        acts: &QuantActs,
        nt: usize,
        out: Out,
    ) {
        assert!(
            nt <= acts.n
                && acts.cols == p.cols
                && rows.start.is_multiple_of(IROWS)
                && rows.start <= rows.end
                && rows.end <= p.rows,
            "interleaved: shapes"
        );
        (self.interleaved)(p, rows, acts, nt, out)
    }

    /// `out[t * ldo + r] = w[r] · x[t]` for float weights `w: [nr, cols]`, `x: [nt, cols]`.
    ///
    /// # Safety
    /// As for [`Kernels::gemm`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn float_gemm(
        &self,
        f: FFormat,
        w: &[u8],
        nr: usize,
        cols: usize,
        x: &[f32],
        nt: usize,
        out: Out,
    ) {
        let esize = if f == FFormat::F32 { 4 } else { 2 };
        assert!(
            w.len() == nr * cols * esize && x.len() == nt * cols,
            "float_gemm: shapes"
        );
        (self.float_gemm)(f, w, nr, cols, x, nt, out)
    }
}

static SCALAR: Kernels = Kernels {
    name: "scalar",
    f32_reference: false,
    quantize: scalar::quantize_row,
    pack: None,
    decode: scalar::decode,
    gemm: scalar::gemm,
    gemv: None,
    direct: None,
    direct_max: 0,
    interleaved: scalar::interleaved,
    float_gemm: scalar::float_gemm,
    dot: scalar::dot,
    axpy: scalar::axpy,
    scores: scalar::scores_by_dot,
    mix: scalar::mix_by_axpy,
    softmax: scalar::softmax,
};

/// The plain-Rust kernels: the specification the SIMD ones match bit for bit.
pub fn scalar() -> &'static Kernels {
    &SCALAR
}

/// The fastest kernels this CPU runs, detected once.
///
/// `TUILI_KERNELS=scalar|avx2|avx512|neon` forces a table (when the CPU can run it), and
/// `TUILI_KERNELS=f32` keeps f32 activations in matmul (the slow accuracy reference).
pub fn select() -> &'static Kernels {
    static SELECTED: OnceLock<&'static Kernels> = OnceLock::new();
    SELECTED.get_or_init(|| {
        let best = available().last().copied().unwrap_or(&SCALAR);
        match std::env::var("TUILI_KERNELS").ok().as_deref() {
            None | Some("") => best,
            Some("f32") => {
                static REF: OnceLock<Kernels> = OnceLock::new();
                REF.get_or_init(|| Kernels {
                    name: "f32-reference",
                    f32_reference: true,
                    ..*best
                })
            }
            Some(want) => match available().into_iter().find(|k| k.name == want) {
                Some(k) => k,
                None => {
                    eprintln!(
                        "TUILI_KERNELS={want}: not available on this CPU (choose from {}, f32); using {}",
                        available().iter().map(|k| k.name).collect::<Vec<_>>().join(", "),
                        best.name
                    );
                    best
                }
            },
        }
    })
}

/// Every kernel table this CPU can run, scalar first, fastest last.
pub fn available() -> Vec<&'static Kernels> {
    #[allow(unused_mut)]
    let mut v = vec![&SCALAR];
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = avx2::kernels() {
        v.push(k);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = avx512::kernels() {
        v.push(k);
    }
    #[cfg(target_arch = "aarch64")]
    v.push(neon::kernels());
    v
}

/// Checks the shapes of `scores` / `mix`: `heads` (`[g, hd]`) and `per_pos`
/// (`[g, rows.len()]`) agree, and every row `base[r..r + hd]` exists.
fn check_rows(what: &str, heads: usize, hd: usize, base: &[f32], rows: &[usize], per_pos: usize) {
    let g = heads.checked_div(hd).unwrap_or(0);
    assert!(
        hd > 0 && heads == g * hd && per_pos == g * rows.len(),
        "{what}: shapes ({heads} head values of {hd}, {per_pos} for {} rows)",
        rows.len()
    );
    assert!(
        rows.iter()
            .all(|&r| r.checked_add(hd).is_some_and(|e| e <= base.len())),
        "{what}: a row lies outside the {} values",
        base.len()
    );
}

/// The final reduction of the 8 lanes, shared by every instruction set:
/// `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`.
#[inline(always)]
pub(crate) fn reduce8(a: &[f32; 8]) -> f32 {
    let s4 = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (s4[0] + s4[2]) + (s4[1] + s4[3])
}

#[cfg(test)]
pub(crate) mod tests;
