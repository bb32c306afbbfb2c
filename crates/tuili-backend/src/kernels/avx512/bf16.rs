//! Products of BF16 weights under the bf16-pair specification (`kernels::bf16dot`), with
//! AVX-512 BF16: `vcvtne2ps2bf16` rounds a token's 32 activations into one register
//! once per product, and each `vdpbf16ps` adds 16 element pairs of one row and one
//! token into that output's 16 lanes, the specification's `acc` as it stands.
//!
//! Tiles of `R` rows times `T` tokens keep `R · T` accumulators; per chunk of 32
//! elements the `R` rows' weights are loaded once for the `T` tokens. A ragged last
//! chunk loads zeros past the row (masked), as the specification pads.

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::super::bf16dot::CHUNK;
use super::super::{AlignedBuf, Out};
use super::hsum;

/// Rows and tokens per tile with several tokens (24 accumulators).
const R: usize = 4;
const T: usize = 6;
/// Rows per tile with one token (decode).
const R1: usize = 8;

thread_local! {
    /// The tokens' activations rounded to bf16, `[nt, chunks, 32]`, zero-padded.
    static XB: RefCell<AlignedBuf<i16>> = RefCell::new(AlignedBuf::default());
}

/// `out[t * ldo + r] = w[r] · x[t]` for bf16 weights `w: [nr, cols]` and `x: [nt, cols]`
/// (see `bf16dot::gemm`).
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,f16c")]
pub(in crate::kernels) unsafe fn gemm(
    w: &[u8],
    nr: usize,
    cols: usize,
    x: &[f32],
    nt: usize,
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let nc = cols.div_ceil(CHUNK);
        XB.with(|xb| {
            let mut xb = xb.borrow_mut();
            xb.resize(nt * nc * CHUNK, 0);
            round_tokens(x, cols, nt, xb.as_mut_ptr());
            let (w, xb) = (w.as_ptr(), xb.as_ptr());
            let mut t = 0;
            while t < nt {
                let n = (nt - t).min(T);
                let o = Out {
                    ptr: out.ptr.add(t * out.ldo),
                    ldo: out.ldo,
                };
                let xt = xb.add(t * nc * CHUNK);
                match n {
                    1 => rows::<R1, 1>(w, nr, cols, xt, o),
                    2 => rows::<R, 2>(w, nr, cols, xt, o),
                    3 => rows::<R, 3>(w, nr, cols, xt, o),
                    4 => rows::<R, 4>(w, nr, cols, xt, o),
                    5 => rows::<R, 5>(w, nr, cols, xt, o),
                    _ => rows::<R, T>(w, nr, cols, xt, o),
                }
                t += n;
            }
        })
    }
}

/// `x` (`[nt, cols]`) rounded to bf16 into `xb` (`[nt, chunks, 32]`), each token's last
/// chunk padded with zeros.
#[inline(always)]
unsafe fn round_tokens(x: &[f32], cols: usize, nt: usize, xb: *mut i16) {
    // SAFETY: `xb` holds `nt` tokens of whole chunks; masked loads read only `x`'s own
    // values (the caller's contract)
    unsafe {
        let nc = cols.div_ceil(CHUNK);
        for t in 0..nt {
            let (src, dst) = (x.as_ptr().add(t * cols), xb.add(t * nc * CHUNK));
            for c in 0..nc {
                let e = CHUNK * c;
                let left = cols - e;
                let (lo, hi) = if left >= CHUNK {
                    (
                        _mm512_loadu_ps(src.add(e)),
                        _mm512_loadu_ps(src.add(e + 16)),
                    )
                } else {
                    let k = |from: usize| ((1u32 << left.saturating_sub(from).min(16)) - 1) as u16;
                    (
                        _mm512_maskz_loadu_ps(k(0), src.add(e)),
                        _mm512_maskz_loadu_ps(k(16), src.add(e + 16)),
                    )
                };
                let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_store_si512(dst.add(e) as *mut __m512i, v);
            }
        }
    }
}

/// All `nr` rows times `TT` tokens: tiles of `RR` rows, then single rows.
#[inline(always)]
unsafe fn rows<const RR: usize, const TT: usize>(
    w: *const u8,
    nr: usize,
    cols: usize,
    xb: *const i16,
    out: Out,
) {
    // SAFETY: as `gemm`, whose contract covers these rows and tokens.
    unsafe {
        let mut r = 0;
        while r + RR <= nr {
            micro::<RR, TT>(w, r, cols, xb, out);
            r += RR;
        }
        while r < nr {
            micro::<1, TT>(w, r, cols, xb, out);
            r += 1;
        }
    }
}

/// Rows `r0..r0 + RR` times tokens `0..TT` (`xb`: their rounded chunks), written at
/// `out[t * ldo + r]`.
#[inline(always)]
unsafe fn micro<const RR: usize, const TT: usize>(
    w: *const u8,
    r0: usize,
    cols: usize,
    xb: *const i16,
    out: Out,
) {
    // SAFETY: as `gemm`, whose contract covers these rows and tokens; masked loads read
    // only the rows' own bytes.
    unsafe {
        let nc = cols.div_ceil(CHUNK);
        let rows: [*const i16; RR] = std::array::from_fn(|i| w.add((r0 + i) * 2 * cols) as _);
        let mut acc = [[_mm512_setzero_ps(); TT]; RR];
        let full = cols / CHUNK;
        for c in 0..nc {
            let e = CHUNK * c;
            let wv: [__m512bh; RR] = std::array::from_fn(|i| {
                let v = if c < full {
                    _mm512_loadu_si512(rows[i].add(e) as *const _)
                } else {
                    _mm512_maskz_loadu_epi16((1u32 << (cols - e)) - 1, rows[i].add(e))
                };
                std::mem::transmute::<__m512i, __m512bh>(v)
            });
            for t in 0..TT {
                let xv: __m512bh =
                    std::mem::transmute(_mm512_load_si512(xb.add((t * nc + c) * CHUNK) as _));
                for i in 0..RR {
                    acc[i][t] = _mm512_dpbf16_ps(acc[i][t], wv[i], xv);
                }
            }
        }
        for i in 0..RR {
            for t in 0..TT {
                // h[i] = acc[i] + acc[i + 8], then the 8-lane reduction.
                let a = acc[i][t];
                let h = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps::<1>(a));
                *out.ptr.add(t * out.ldo + r0 + i) = hsum(h);
            }
        }
    }
}
