//! Products of BF16 weights under the bf16-pair specification (`kernels::bf16dot`), in
//! two ways that give the same bits:
//!
//! - **`vdpbf16ps`**: `vcvtne2ps2bf16` rounds a token's 32 activations into one register
//!   once per product, and each `vdpbf16ps` adds 16 element pairs of one row and one
//!   token into that output's 16 lanes, the specification's `acc` as it stands.
//! - **Two f32 fused multiply-adds per pair**, odd element then even (the bf16 values
//!   widened exactly: `dword & 0xffff0000`, `dword << 16`), where no result can be
//!   denormal, so that `vdpbf16ps`'s flushes never act ([`tame`]). On an Intel Emerald
//!   Rapids core `vdpbf16ps` issues once per two cycles and an FMA twice per cycle:
//!   the FMAs do twice the multiply-adds per cycle, and a batch of [`FMA_FROM`] tokens
//!   or more takes them. One token reads each weight once and is bound by memory:
//!   `vdpbf16ps` reads it with the fewest instructions.
//!
//! Tiles of `RR` rows times `TT` tokens keep `RR · TT` accumulators; per chunk of 32
//! elements the rows' weights are loaded once for the tile's tokens. A ragged last chunk
//! loads zeros past the row (masked), as the specification pads.

use std::arch::x86_64::*;

use super::super::bf16dot::{Bf16Acts, Bf16Kernels, CHUNK};
use super::super::Out;
use super::hsum;

/// From this many tokens on, the products take the fused multiply-adds (where [`tame`]).
const FMA_FROM: usize = 8;
/// Rows and tokens per tile of `vdpbf16ps` with several tokens (24 accumulators).
const R: usize = 4;
const T: usize = 6;
/// Rows per tile of `vdpbf16ps` with one token (decode).
const R1: usize = 8;
/// Rows and tokens per tile of fused multiply-adds (24 accumulators, 4 weight registers).
const RF: usize = 2;
const TF: usize = 12;

/// This table's bf16-pair products.
pub(in crate::kernels) const KERNELS: Bf16Kernels = Bf16Kernels { prepare, gemm };

/// `x` (`[n, cols]`) rounded to bf16 into `acts.xb`, and widened into `acts.xf` where a
/// batch of [`FMA_FROM`] tokens or more is tame (see [`wild`]).
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,f16c")]
unsafe fn prepare(x: &[f32], cols: usize, acts: &mut Bf16Acts) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and `x`
    // holds whole rows of `cols`; `reset` sizes `xb`, and `xf` is sized here
    unsafe {
        let n = x.len() / cols;
        acts.reset(cols, n);
        let tame = round_tokens(x, cols, n, acts.xb.as_mut_ptr());
        if n >= FMA_FROM && tame {
            let chunks = n * cols.div_ceil(CHUNK);
            acts.xf.resize(chunks * CHUNK, 0.0);
            widen(acts.xb.as_ptr(), chunks, acts.xf.as_mut_ptr());
            acts.widened = true;
        }
    }
}

/// `out[t * ldo + r] = w[r] · x[t]` for bf16 weights `w: [nr, cols]` and the tokens
/// `acts` holds (see `bf16dot::gemm`): fused multiply-adds where `prepare` widened them
/// and these rows are tame, else `vdpbf16ps`.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,f16c")]
unsafe fn gemm(w: &[u8], nr: usize, acts: &Bf16Acts, out: Out) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let (cols, nt, w) = (acts.cols, acts.n, w.as_ptr());
        if acts.widened && tame_rows(w, nr, cols) {
            tiles::<true>(w, nr, cols, acts.xf.as_ptr() as _, nt, out)
        } else {
            tiles::<false>(w, nr, cols, acts.xb.as_ptr() as _, nt, out)
        }
    }
}

/// The lanes of `v` (32 bf16) that could make a result denormal: nonzero and under
/// 2^-56 in magnitude, or not finite. Where every weight and activation is zero or at
/// least 2^-56, every product `w x` is a multiple of `2^(e_w + e_x - 14) >= 2^-126` (8
/// significant bits each), and so is every sum of them rounded to f32: a nonzero result
/// is never under 2^-126, and `vdpbf16ps`'s denormal flushes never act.
#[inline(always)]
unsafe fn wild(v: __m512i) -> u32 {
    // SAFETY: register operations only, on a CPU with AVX-512 BW (this table's).
    unsafe {
        let e = _mm512_and_si512(_mm512_srli_epi16::<7>(v), _mm512_set1_epi16(0xff));
        // Biased exponents 1..=70 (e - 1 < 70 unsigned; 0 wraps), or 255.
        _mm512_cmplt_epu16_mask(
            _mm512_sub_epi16(e, _mm512_set1_epi16(1)),
            _mm512_set1_epi16(70),
        ) | _mm512_cmpeq_epi16_mask(e, _mm512_set1_epi16(0xff))
    }
}

/// Whether every weight of rows `0..nr` is tame (see [`wild`]).
#[inline(always)]
unsafe fn tame_rows(w: *const u8, nr: usize, cols: usize) -> bool {
    // SAFETY: the rows hold `nr * cols` bf16 values (the caller's contract); the last
    // chunk of a row is loaded masked.
    unsafe {
        let mut any = 0u32;
        for r in 0..nr {
            let row = w.add(r * 2 * cols) as *const i16;
            for e in (0..cols).step_by(CHUNK) {
                any |= wild(load_chunk(row, e, cols));
            }
        }
        any == 0
    }
}

/// Elements `e..e + 32` of a row of `cols` bf16 values, zeros past its end.
#[inline(always)]
unsafe fn load_chunk(row: *const i16, e: usize, cols: usize) -> __m512i {
    // SAFETY: the row holds `cols` values (the caller's contract); a partial chunk is
    // loaded masked.
    unsafe {
        if e + CHUNK <= cols {
            _mm512_loadu_si512(row.add(e) as *const _)
        } else {
            _mm512_maskz_loadu_epi16((1u32 << (cols - e)) - 1, row.add(e))
        }
    }
}

/// `x` (`[nt, cols]`) rounded to bf16 into `xb` (`[nt, chunks, 32]`), each token's last
/// chunk padded with zeros; whether every rounded value is tame (see [`wild`]).
#[inline(always)]
unsafe fn round_tokens(x: &[f32], cols: usize, nt: usize, xb: *mut i16) -> bool {
    // SAFETY: `xb` holds `nt` tokens of whole chunks; masked loads read only `x`'s own
    // values (the caller's contract)
    unsafe {
        let nc = cols.div_ceil(CHUNK);
        let mut any = 0u32;
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
                any |= wild(v);
                _mm512_store_si512(dst.add(e) as *mut __m512i, v);
            }
        }
        any == 0
    }
}

/// The odd and the even elements of a chunk of 32 bf16 (as 16 dwords), widened to f32.
#[inline(always)]
unsafe fn odd_even(d: __m512i) -> (__m512, __m512) {
    // SAFETY: register operations only, on a CPU with AVX-512 F (this table's).
    unsafe {
        let hi = _mm512_set1_epi32(0xffff_0000u32 as i32);
        (
            _mm512_castsi512_ps(_mm512_and_si512(d, hi)),
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(d)),
        )
    }
}

/// `n` chunks of `xb` widened into `xf` (`[n, 2, 16]`: odd elements, then even).
#[inline(always)]
unsafe fn widen(xb: *const i16, n: usize, xf: *mut f32) {
    // SAFETY: both buffers hold `n` whole chunks (the caller's contract).
    unsafe {
        for c in 0..n {
            let (odd, even) = odd_even(_mm512_load_si512(xb.add(c * CHUNK) as _));
            _mm512_store_ps(xf.add(c * CHUNK), odd);
            _mm512_store_ps(xf.add(c * CHUNK + 16), even);
        }
    }
}

/// Every row times every token, in tiles of tokens over all rows: by `vdpbf16ps` from
/// `x`'s bf16 chunks, or (`FMA`) by fused multiply-adds from its widened ones.
#[inline(always)]
unsafe fn tiles<const FMA: bool>(
    w: *const u8,
    nr: usize,
    cols: usize,
    x: *const u8,
    nt: usize,
    out: Out,
) {
    // SAFETY: as `gemm`, whose contract covers these rows and tokens.
    unsafe {
        // Bytes of one token's activations.
        let tb = cols.div_ceil(CHUNK) * CHUNK * if FMA { 4 } else { 2 };
        let mut t = 0;
        while t < nt {
            let n = (nt - t).min(if FMA { TF } else { T });
            let o = Out {
                ptr: out.ptr.add(t * out.ldo),
                ldo: out.ldo,
            };
            let xt = x.add(t * tb);
            if FMA {
                match n {
                    1 => rows::<RF, 1, true>(w, nr, cols, xt, o),
                    2 => rows::<RF, 2, true>(w, nr, cols, xt, o),
                    3 => rows::<RF, 3, true>(w, nr, cols, xt, o),
                    4 => rows::<RF, 4, true>(w, nr, cols, xt, o),
                    5 => rows::<RF, 5, true>(w, nr, cols, xt, o),
                    6 => rows::<RF, 6, true>(w, nr, cols, xt, o),
                    7 => rows::<RF, 7, true>(w, nr, cols, xt, o),
                    8 => rows::<RF, 8, true>(w, nr, cols, xt, o),
                    9 => rows::<RF, 9, true>(w, nr, cols, xt, o),
                    10 => rows::<RF, 10, true>(w, nr, cols, xt, o),
                    11 => rows::<RF, 11, true>(w, nr, cols, xt, o),
                    _ => rows::<RF, TF, true>(w, nr, cols, xt, o),
                }
            } else {
                match n {
                    1 => rows::<R1, 1, false>(w, nr, cols, xt, o),
                    2 => rows::<R, 2, false>(w, nr, cols, xt, o),
                    3 => rows::<R, 3, false>(w, nr, cols, xt, o),
                    4 => rows::<R, 4, false>(w, nr, cols, xt, o),
                    5 => rows::<R, 5, false>(w, nr, cols, xt, o),
                    _ => rows::<R, T, false>(w, nr, cols, xt, o),
                }
            }
            t += n;
        }
    }
}

/// All `nr` rows times `TT` tokens: tiles of `RR` rows, then single rows.
#[inline(always)]
unsafe fn rows<const RR: usize, const TT: usize, const FMA: bool>(
    w: *const u8,
    nr: usize,
    cols: usize,
    x: *const u8,
    out: Out,
) {
    // SAFETY: as `gemm`, whose contract covers these rows and tokens.
    unsafe {
        let mut r = 0;
        while r + RR <= nr {
            micro::<RR, TT, FMA>(w, r, cols, x, out);
            r += RR;
        }
        while r < nr {
            micro::<1, TT, FMA>(w, r, cols, x, out);
            r += 1;
        }
    }
}

/// Rows `r0..r0 + RR` times tokens `0..TT` (`x`: their bf16 chunks, or with `FMA` their
/// widened ones), written at `out[t * ldo + r]`.
#[inline(always)]
unsafe fn micro<const RR: usize, const TT: usize, const FMA: bool>(
    w: *const u8,
    r0: usize,
    cols: usize,
    x: *const u8,
    out: Out,
) {
    // SAFETY: as `gemm`, whose contract covers these rows and tokens; masked loads read
    // only the rows' own bytes.
    unsafe {
        let nc = cols.div_ceil(CHUNK);
        let rows: [*const i16; RR] = std::array::from_fn(|i| w.add((r0 + i) * 2 * cols) as _);
        let mut acc = [[_mm512_setzero_ps(); TT]; RR];
        for c in 0..nc {
            let wv: [__m512i; RR] = std::array::from_fn(|i| load_chunk(rows[i], CHUNK * c, cols));
            if FMA {
                let xf = x as *const f32;
                let wf = wv.map(|d| odd_even(d));
                for t in 0..TT {
                    let xc = xf.add((t * nc + c) * CHUNK);
                    let (xo, xe) = (_mm512_load_ps(xc), _mm512_load_ps(xc.add(16)));
                    for i in 0..RR {
                        // The specification's pair step: the odd element, then the even.
                        acc[i][t] = _mm512_fmadd_ps(wf[i].0, xo, acc[i][t]);
                        acc[i][t] = _mm512_fmadd_ps(wf[i].1, xe, acc[i][t]);
                    }
                }
            } else {
                let xb = x as *const i16;
                let wb = wv.map(|d| std::mem::transmute::<__m512i, __m512bh>(d));
                for t in 0..TT {
                    let xv: __m512bh =
                        std::mem::transmute(_mm512_load_si512(xb.add((t * nc + c) * CHUNK) as _));
                    for i in 0..RR {
                        acc[i][t] = _mm512_dpbf16_ps(acc[i][t], wb[i], xv);
                    }
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
