//! Products of float weights (F32, F16, BF16) by f32 activations.

use std::arch::x86_64::*;

use super::products::{R1, RN, TN};
use super::{hsum, A8};
use crate::kernels::scalar::float_at;
use crate::kernels::{FFormat, Out};

// ---- float weights ------------------------------------------------------------------

#[target_feature(enable = "avx2,fma,f16c")]
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
            FFormat::F32 => float_gemm_f::<0>(w, nr, cols, x, nt, out),
            FFormat::F16 => float_gemm_f::<1>(w, nr, cols, x, nt, out),
            FFormat::BF16 => float_gemm_f::<2>(w, nr, cols, x, nt, out),
        }
    }
}

/// 8 weights of format `F` (0: f32, 1: f16, 2: bf16) from element `i` of `row`.
#[inline(always)]
unsafe fn load8<const F: u8>(row: *const u8, i: usize) -> __m256 {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        match F {
            0 => _mm256_loadu_ps((row as *const f32).add(i)),
            1 => _mm256_cvtph_ps(_mm_loadu_si128(row.add(2 * i) as *const __m128i)),
            _ => _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_cvtepu16_epi32(_mm_loadu_si128(row.add(2 * i) as *const __m128i)),
                16,
            )),
        }
    }
}

#[inline(always)]
unsafe fn float_gemm_f<const F: u8>(
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
        let mut t = 0;
        while t < nt {
            let n = (nt - t).min(TN);
            let o = Out {
                ptr: out.ptr.add(t * out.ldo),
                ldo: out.ldo,
            };
            let xt = &x[t * cols..];
            let mut r = 0;
            while r < nr {
                let two = r + RN <= nr && n > 1;
                let four = r + R1 <= nr && n == 1;
                match (four, two, n) {
                    (true, _, _) => micro_f::<F, R1, 1>(w, r, cols, xt, o),
                    (_, true, 4) => micro_f::<F, RN, 4>(w, r, cols, xt, o),
                    (_, true, 3) => micro_f::<F, RN, 3>(w, r, cols, xt, o),
                    (_, true, _) => micro_f::<F, RN, 2>(w, r, cols, xt, o),
                    (_, _, 4) => micro_f::<F, 1, 4>(w, r, cols, xt, o),
                    (_, _, 3) => micro_f::<F, 1, 3>(w, r, cols, xt, o),
                    (_, _, 2) => micro_f::<F, 1, 2>(w, r, cols, xt, o),
                    _ => micro_f::<F, 1, 1>(w, r, cols, xt, o),
                }
                r += if four {
                    R1
                } else if two {
                    RN
                } else {
                    1
                };
            }
            t += n;
        }
    }
}

#[inline(always)]
unsafe fn micro_f<const F: u8, const R: usize, const T: usize>(
    w: &[u8],
    r0: usize,
    cols: usize,
    x: &[f32],
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let esize = if F == 0 { 4 } else { 2 };
        let rows: [*const u8; R] = std::array::from_fn(|r| w.as_ptr().add((r0 + r) * cols * esize));
        let xs: [*const f32; T] = std::array::from_fn(|t| x.as_ptr().add(t * cols));
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let n8 = cols / 8 * 8;
        let mut i = 0;
        while i < n8 {
            for r in 0..R {
                let wv = load8::<F>(rows[r], i);
                for t in 0..T {
                    acc[r][t] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xs[t].add(i)), acc[r][t]);
                }
            }
            i += 8;
        }
        let f = [FFormat::F32, FFormat::F16, FFormat::BF16][F as usize];
        for r in 0..R {
            for t in 0..T {
                let v = if n8 < cols {
                    // The tail goes lane by lane, as in the scalar twin.
                    let mut lanes = A8([0.0; 8]);
                    _mm256_store_ps(lanes.0.as_mut_ptr(), acc[r][t]);
                    let row = std::slice::from_raw_parts(rows[r], cols * esize);
                    for i in n8..cols {
                        let l = &mut lanes.0[i % 8];
                        *l = float_at(f, row, i).mul_add(*xs[t].add(i), *l);
                    }
                    hsum(_mm256_load_ps(lanes.0.as_ptr()))
                } else {
                    hsum(acc[r][t])
                };
                *out.ptr.add(t * out.ldo + r0 + r) = v;
            }
        }
    }
}
