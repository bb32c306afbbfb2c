//! AVX-512 products of float weights (F32, F16, BF16) and f32 activations,
//! bit-identical to `scalar::float_gemm`.
//!
//! The AVX2 product keeps one 256-bit accumulator (the specification's 8 lanes) per
//! (row, token). Here one 512-bit register holds two of them, two rows of one token:
//!
//! ```text
//! acc[p][t] = [row 2p, token t | row 2p + 1, token t]        lanes 0..8 | 8..16
//! acc[p][t] = fma([w_2p[i..i+8] | w_2p+1[i..i+8]], [x_t[i..i+8] | x_t[i..i+8]], acc[p][t])
//! ```
//!
//! so each lane sees exactly the specification's fused multiply-adds in element order,
//! and each half is reduced as `reduce8`. Pairing rows rather than tokens keeps the
//! activations a plain broadcast load (no packing) and decodes each row pair's weights
//! once per step for a whole tile of tokens. A tile is `RP` row pairs times `T` tokens
//! (12 independent accumulators to hide the FMA latency); a ragged tail of columns runs
//! as one masked step (masked-off lanes are left untouched, as the specification does).

use std::arch::x86_64::*;

use super::super::interleave::{prefetch_line, PREFETCH_BYTES};
use super::super::{FFormat, Out};

/// Row pairs and tokens per tile with several tokens.
const RP: usize = 2;
const T: usize = 6;
/// Row pairs per tile with one token (decode): 4 accumulators, 8 rows.
const RP1: usize = 4;

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn float_gemm(
    f: FFormat,
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
        match f {
            FFormat::F32 => gemm_f::<0>(w, nr, cols, x, nt, out),
            FFormat::F16 => gemm_f::<1>(w, nr, cols, x, nt, out),
            FFormat::BF16 => gemm_f::<2>(w, nr, cols, x, nt, out),
        }
    }
}

/// `w`: `[nr, cols]` of format `F` (0: f32, 1: f16, 2: bf16), `x`: `[nt, cols]`;
/// tiles of `T` tokens, each over all rows.
#[inline(always)]
unsafe fn gemm_f<const F: u8>(w: &[u8], nr: usize, cols: usize, x: &[f32], nt: usize, out: Out) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let mut t = 0;
        while t < nt {
            let n = (nt - t).min(T);
            let o = Out {
                ptr: out.ptr.add(t * out.ldo),
                ldo: out.ldo,
            };
            let xt = x.as_ptr().add(t * cols);
            match n {
                1 => rows::<F, RP1, 1>(w, nr, cols, xt, o),
                2 => rows::<F, RP, 2>(w, nr, cols, xt, o),
                3 => rows::<F, RP, 3>(w, nr, cols, xt, o),
                4 => rows::<F, RP, 4>(w, nr, cols, xt, o),
                5 => rows::<F, RP, 5>(w, nr, cols, xt, o),
                _ => rows::<F, RP, T>(w, nr, cols, xt, o),
            }
            t += n;
        }
    }
}

/// All `nr` rows times `TT` tokens: tiles of `RPP` row pairs, then single pairs, then
/// a last odd row (paired with itself, its copy not stored).
#[inline(always)]
unsafe fn rows<const F: u8, const RPP: usize, const TT: usize>(
    w: &[u8],
    nr: usize,
    cols: usize,
    x: *const f32,
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let mut r = 0;
        while r + 2 * RPP <= nr {
            micro::<F, RPP, TT>(w, r, 2 * RPP, cols, x, out);
            r += 2 * RPP;
        }
        while r < nr {
            let v = (nr - r).min(2);
            micro::<F, 1, TT>(w, r, v, cols, x, out);
            r += v;
        }
    }
}

/// `[a[i..i+8] | b[i..i+8]]` as f32, rows `a` and `b` of format `F`.
#[inline(always)]
unsafe fn load_pair<const F: u8>(a: *const u8, b: *const u8, i: usize) -> __m512 {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        if F == 0 {
            let (a, b) = (a as *const f32, b as *const f32);
            _mm512_insertf32x8::<1>(
                _mm512_castps256_ps512(_mm256_loadu_ps(a.add(i))),
                _mm256_loadu_ps(b.add(i)),
            )
        } else {
            let h = _mm256_inserti128_si256::<1>(
                _mm256_castsi128_si256(_mm_loadu_si128(a.add(2 * i) as *const __m128i)),
                _mm_loadu_si128(b.add(2 * i) as *const __m128i),
            );
            half_pair::<F>(h)
        }
    }
}

/// As `load_pair` for the first `popcnt(k)` elements from `i` (the rest 0, not read).
#[inline(always)]
unsafe fn load_pair_masked<const F: u8>(a: *const u8, b: *const u8, i: usize, k: u8) -> __m512 {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        if F == 0 {
            let (a, b) = (a as *const f32, b as *const f32);
            _mm512_insertf32x8::<1>(
                _mm512_castps256_ps512(_mm256_maskz_loadu_ps(k, a.add(i))),
                _mm256_maskz_loadu_ps(k, b.add(i)),
            )
        } else {
            let h = _mm256_inserti128_si256::<1>(
                _mm256_castsi128_si256(_mm_maskz_loadu_epi16(k, a.add(2 * i) as *const i16)),
                _mm_maskz_loadu_epi16(k, b.add(2 * i) as *const i16),
            );
            half_pair::<F>(h)
        }
    }
}

/// 16 halves (f16 if `F == 1`, else bf16) to f32; exact, as `float_at`.
#[inline(always)]
unsafe fn half_pair<const F: u8>(h: __m256i) -> __m512 {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        if F == 1 {
            _mm512_cvtph_ps(h)
        } else {
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
    }
}

/// Rows `r0 .. r0 + valid` (`valid <= 2 RPP`) times tokens `0..TT` of `x`, written at
/// `out[t * ldo + r]`. Pair `p` holds rows `r0 + 2p` and `r0 + 2p + 1`; a missing
/// second row repeats the first.
#[inline(always)]
unsafe fn micro<const F: u8, const RPP: usize, const TT: usize>(
    w: &[u8],
    r0: usize,
    valid: usize,
    cols: usize,
    x: *const f32,
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let rb = cols * if F == 0 { 4 } else { 2 };
        let last = r0 + valid - 1;
        let rows: [[*const u8; 2]; RPP] = std::array::from_fn(|p| {
            let a = r0 + 2 * p;
            [
                w.as_ptr().add(a * rb),
                w.as_ptr().add((a + 1).min(last) * rb),
            ]
        });
        let xs: [*const f32; TT] = std::array::from_fn(|t| x.add(t * cols));
        let mut acc = [[_mm512_setzero_ps(); TT]; RPP];
        let mut wv = [_mm512_setzero_ps(); RPP];
        let n8 = cols / 8 * 8;
        let mut i = 0;
        // Elements per cache line of the rows.
        let per_line = 64 / if F == 0 { 4 } else { 2 };
        while i < n8 {
            if TT == 1 && i % per_line == 0 {
                // One token streams its rows: each row's line a fixed distance ahead.
                for row in rows.iter().flatten() {
                    prefetch_line(row.wrapping_add(i * (64 / per_line) + PREFETCH_BYTES));
                }
            }
            for p in 0..RPP {
                wv[p] = load_pair::<F>(rows[p][0], rows[p][1], i);
            }
            for t in 0..TT {
                let xv = _mm512_broadcast_f32x8(_mm256_loadu_ps(xs[t].add(i)));
                for p in 0..RPP {
                    acc[p][t] = _mm512_fmadd_ps(wv[p], xv, acc[p][t]);
                }
            }
            i += 8;
        }
        if n8 < cols {
            // Elements n8.. go to lanes 0..cols - n8 of each half; the other lanes keep
            // their value (a masked FMA, not an FMA with zeros, which could turn -0 to +0).
            let k8 = ((1u32 << (cols - n8)) - 1) as u8;
            let k16 = k8 as u16 | (k8 as u16) << 8;
            for p in 0..RPP {
                wv[p] = load_pair_masked::<F>(rows[p][0], rows[p][1], n8, k8);
            }
            for t in 0..TT {
                let xv = _mm512_broadcast_f32x8(_mm256_maskz_loadu_ps(k8, xs[t].add(n8)));
                for p in 0..RPP {
                    acc[p][t] = _mm512_mask3_fmadd_ps(wv[p], xv, acc[p][t], k16);
                }
            }
        }
        for p in 0..RPP {
            let r = r0 + 2 * p;
            for t in 0..TT {
                let s = reduce_halves(acc[p][t]);
                let o = out.ptr.add(t * out.ldo + r);
                *o = _mm512_cvtss_f32(s);
                if r < last {
                    *o.add(1) = _mm_cvtss_f32(_mm512_extractf32x4_ps::<2>(s));
                }
            }
        }
    }
}

/// `reduce8` of each 8-lane half of `v`, in lanes 0 and 8: `((a0+a4)+(a2+a6)) +
/// ((a1+a5)+(a3+a7))`, with the operands in `avx2::hsum`'s order.
#[inline(always)]
unsafe fn reduce_halves(v: __m512) -> __m512 {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        // 128-bit quarters swapped within each half: lane k + [4, 4, 4, 4, -4, ...].
        let s4 = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b10_11_00_01>(v, v));
        let s2 = _mm512_add_ps(s4, _mm512_permute_ps::<0b01_00_11_10>(s4));
        _mm512_add_ps(s2, _mm512_permute_ps::<0b00_00_00_01>(s2))
    }
}
