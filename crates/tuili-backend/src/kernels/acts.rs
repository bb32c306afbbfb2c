//! Activations quantized per 32-element block to int16 (`QuantActs`, see the module
//! docs of `kernels`), and the token-pair view the AVX-512 products read (`PackView`).

use super::bf16dot::Bf16Acts;
use super::{AlignedBuf, GROUP, QB};

/// Activations of `n` tokens quantized per 32-element block to int16, the input of the
/// integer matmul kernels. Buffers are reused from call to call.
#[derive(Debug, Default, Clone)]
pub struct QuantActs {
    pub(super) cols: usize,
    pub(super) n: usize,
    /// `[n, cols]`: `x ≈ d * q`, |q| <= 32767.
    pub(super) q: AlignedBuf<i16>,
    /// `[n, nbp]` (`nbp`: blocks rounded up to a whole group, padding 0): block scales;
    /// NaN for a block holding a non-finite value.
    pub(super) d: AlignedBuf<f32>,
    /// `[n, nbp]`: `d * Σ q` of each block.
    pub(super) s: AlignedBuf<f32>,
    /// `[n, 2 nbp]`: `d * Σ q` of each 16-element half-block.
    pub(super) s16: AlignedBuf<f32>,
    /// `[n, nbp]`: `Σ q` of each block (exact), for the interleaved products' offsets.
    pub(super) xsum: AlignedBuf<i32>,
    /// `[n, 2 nbp]`: `Σ q` of each 16-element half-block (exact), for Q6_K's and Q3_K's
    /// offsets.
    pub(super) xsum16: AlignedBuf<i32>,
    /// Whether the token-pair copies below match `q`, `d`, `s`, `s16` (set by the
    /// tables that read them; see `avx512`).
    pub(super) packed: bool,
    /// `[ceil(n / 2), cols / 32, 64]`: tokens `2p`, `2p + 1` block by block, as
    /// `[q_2p[0..16], q_2p+1[0..16], q_2p[16..32], q_2p+1[16..32]]` (a missing odd
    /// token is zeros).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) qp: AlignedBuf<i16>,
    /// `[ceil(n / 2), nbp, 16]`: `[d_2p[j] x8, d_2p+1[j] x8]`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) dp: AlignedBuf<f32>,
    /// `[ceil(n / 2), nbp / 8, 16]`: `[s_2p[8g..8g+8], s_2p+1[8g..8g+8]]`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) sp: AlignedBuf<f32>,
    /// `[ceil(n / 2), 2 nbp / 8, 16]`: the same of `s16`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) s16p: AlignedBuf<f32>,
    /// Whether the token-octet copies below match `q`, `d`, `s`, `xsum` (set by the
    /// tables that read them; see `avx2::interleaved`).
    pub(super) octets: bool,
    /// `[ceil(n / 8), cols / 2, 16]`: tokens `8u..8u + 8` element pair by element pair
    /// (a pair of int16 as one i32), twice over: `[x_8u[p], .., x_8u+7[p], x_8u[p], ..,
    /// x_8u+7[p]]` (a missing token is zeros), so that 8 lanes read from lane `a` on
    /// hold token `8u + (i + a) % 8` in lane `i`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) q8: AlignedBuf<i32>,
    /// `[ceil(n / 8), nbp, 16]`: the block scales `d` the same way.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) d8: AlignedBuf<f32>,
    /// `[ceil(n / 8), nbp, 16]`: the block sums `s` the same way.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) s8: AlignedBuf<f32>,
    /// `[ceil(n / 8), nbp, 16]`: the exact block sums `xsum` the same way.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) xsum8: AlignedBuf<i32>,
    /// `[ceil(n / 8), 2 nbp, 16]`: the half-block sums `s16` the same way.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) s16_8: AlignedBuf<f32>,
    /// `[ceil(n / 8), 2 nbp, 16]`: the exact half-block sums `xsum16` the same way.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) xsum16_8: AlignedBuf<i32>,
    /// The tokens prepared for BF16 weights' bf16-pair products (`Kernels::prepare_bf16`;
    /// `x` itself, not `q`).
    pub(super) bf16: Bf16Acts,
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
        // SAFETY: `t < n_tokens()` (this fn's contract) keeps every offset inside the
        // buffers `reset` sized
        unsafe {
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
    }

    /// Sizes the buffers for `n` tokens of `cols` (a multiple of 32).
    pub(super) fn reset(&mut self, cols: usize, n: usize) {
        self.cols = cols;
        self.n = n;
        let nbp = self.nbp();
        self.q.resize(n * cols, 0);
        self.d.resize(n * nbp, 0.0);
        self.s.resize(n * nbp, 0.0);
        self.s16.resize(n * 2 * nbp, 0.0);
        self.xsum.resize(n * nbp, 0);
        self.xsum16.resize(n * 2 * nbp, 0);
        self.packed = false;
        self.octets = false;
    }

    /// Sizes the token-pair buffers for the current tokens; returns `(qp, dp, sp, s16p)`.
    #[allow(clippy::type_complexity)]
    pub(super) fn size_packed(&mut self) -> (*mut i16, *mut f32, *mut f32, *mut f32) {
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

    /// Sizes the token-octet buffers for the current tokens; returns pointers to them.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) fn size_octets(&mut self) -> OctetBufs {
        let (n, cols, nbp) = (self.n, self.cols, self.nbp());
        let nu = n.div_ceil(8);
        self.q8.resize(nu * cols / 2 * 16, 0);
        self.d8.resize(nu * nbp * 16, 0.0);
        self.s8.resize(nu * nbp * 16, 0.0);
        self.xsum8.resize(nu * nbp * 16, 0);
        self.s16_8.resize(nu * 2 * nbp * 16, 0.0);
        self.xsum16_8.resize(nu * 2 * nbp * 16, 0);
        OctetBufs {
            q8: self.q8.as_mut_ptr(),
            d8: self.d8.as_mut_ptr(),
            s8: self.s8.as_mut_ptr(),
            xsum8: self.xsum8.as_mut_ptr(),
            s16_8: self.s16_8.as_mut_ptr(),
            xsum16_8: self.xsum16_8.as_mut_ptr(),
        }
    }
}

/// A `QuantActs` as an octet writer sees it: the per-token buffers to read (written
/// before the octet of their tokens is) and the token-octet buffers, sized for all
/// octets, to write, octet ranges by disjoint callers.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct OctetView {
    pub(crate) n: usize,
    pub(crate) cols: usize,
    pub(crate) nbp: usize,
    pub(crate) q: *const i16,
    pub(crate) d: *const f32,
    pub(crate) s: *const f32,
    pub(crate) s16: *const f32,
    pub(crate) xsum: *const i32,
    pub(crate) xsum16: *const i32,
    pub(crate) to: OctetBufs,
}

/// The token-octet buffers of a `QuantActs` (see `QuantActs::q8`), to write.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct OctetBufs {
    pub(crate) q8: *mut i32,
    pub(crate) d8: *mut f32,
    pub(crate) s8: *mut f32,
    pub(crate) xsum8: *mut i32,
    pub(crate) s16_8: *mut f32,
    pub(crate) xsum16_8: *mut i32,
}

// SAFETY: callers write disjoint octet ranges only (see `Kernels::quantize_acts`).
unsafe impl Sync for OctetView {}

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
