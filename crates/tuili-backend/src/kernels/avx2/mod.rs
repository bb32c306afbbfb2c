//! AVX2 + FMA (+ F16C) twins of `scalar`, bit-identical to it.
//!
//! Every entry point carries `#[target_feature]`; the helpers are `#[inline(always)]`
//! so they compile inside it. (Never call intrinsics from a closure here: a closure
//! does not inherit the target features, and one that is not inlined turns every
//! intrinsic into a function call, 20 times slower.) The table is built only after
//! detection, which is what makes calling these `unsafe fn`s sound.
//!
//! Choices measured on Zen 3: bytes are widened to i16 in-lane (`vbroadcasti128` +
//! `vpshufb`) rather than with `vpmovzxbw`, which crosses 128-bit lanes and costs three
//! times the throughput; Q5_0/Q5_1 build their codes in i16 lanes, Q5_K/Q6_K in bytes;
//! block scales are gathered with scalar inserts (`vpgatherdd` was slower).

use std::arch::x86_64::*;

mod attention;
mod float;
pub(super) mod formats;
mod interleaved;
mod interleaved_k;
mod products;

use attention::{axpy, dot, mix, scores, softmax};
pub(super) use attention::{
    dot_lanes, mix_rows, scores_with, with_kv_row, Bf16Row, DotLanes, F16Row, F32Row, KvRow, Q80Row,
};
use float::float_gemm;
use products::decode;
pub(super) use products::{gemm, gemv};

use super::scalar::{QMAX, TINY};
use super::{Kernels, QB};

pub(super) static AVX2: Kernels = Kernels {
    name: "avx2",
    f32_reference: false,
    quantize: quantize_row,
    pack: None,
    octets: Some(interleaved::pack_octets),
    decode,
    gemm,
    gemv: Some(gemv),
    direct: None,
    direct_max: 0,
    interleaved: interleaved::interleaved,
    tunes_tiles: true,
    float_gemm,
    bf16: None,
    dot,
    axpy,
    scores,
    mix,
    softmax,
    glu,
    narrower: None,
};

/// `ops::Glu::apply_plain` compiled for AVX2: its loops vectorize 8 lanes wide, with the
/// same operations (Rust never fuses a multiply and an add on its own), hence the bits.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn glu(act: crate::ops::Glu, gate: &mut [f32], up: &[f32]) {
    act.apply_plain(gate, up)
}

/// The AVX2 table, if this CPU has AVX2, FMA and F16C.
pub(super) fn kernels() -> Option<&'static Kernels> {
    let ok = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    ok.then_some(&AVX2)
}

// ---- small helpers ------------------------------------------------------------------

/// `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`, as `kernels::reduce8`.
#[inline(always)]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
    }
}

/// Largest lane (exact whatever the order).
#[inline(always)]
unsafe fn hmax(v: __m256) -> f32 {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let m4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1)))
    }
}

/// Sum of the 8 i32 lanes (exact).
#[inline(always)]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let s4 = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
        _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0b00_00_00_01)))
    }
}

#[inline(always)]
unsafe fn store2(c: *mut i16, c0: __m256i, c1: __m256i) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        _mm256_storeu_si256(c as *mut __m256i, c0);
        _mm256_storeu_si256(c.add(16) as *mut __m256i, c1);
    }
}

/// A 32-byte aligned group of 8 floats.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct A8([f32; 8]);

// ---- activations --------------------------------------------------------------------

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_row(x: &[f32], q: &mut [i16], d: &mut [f32], s: &mut [f32], s16: &mut [f32]) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let nb = x.len() / QB;
        d[nb..].fill(0.0);
        s[nb..].fill(0.0);
        s16[2 * nb..].fill(0.0);
        let sign = _mm256_set1_ps(-0.0);
        let fmax = _mm256_set1_ps(f32::MAX);
        for b in 0..nb {
            let p = x.as_ptr().add(QB * b);
            let v = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            let a = [
                _mm256_andnot_ps(sign, v[0]),
                _mm256_andnot_ps(sign, v[1]),
                _mm256_andnot_ps(sign, v[2]),
                _mm256_andnot_ps(sign, v[3]),
            ];
            // NaN compares false, infinity is above f32::MAX.
            let fin = _mm256_and_ps(
                _mm256_and_ps(
                    _mm256_cmp_ps(a[0], fmax, _CMP_LE_OQ),
                    _mm256_cmp_ps(a[1], fmax, _CMP_LE_OQ),
                ),
                _mm256_and_ps(
                    _mm256_cmp_ps(a[2], fmax, _CMP_LE_OQ),
                    _mm256_cmp_ps(a[3], fmax, _CMP_LE_OQ),
                ),
            );
            let qb = q.as_mut_ptr().add(QB * b);
            let zero = _mm256_setzero_si256();
            if _mm256_movemask_ps(fin) != 0xff {
                store2(qb, zero, zero);
                (d[b], s[b], s16[2 * b], s16[2 * b + 1]) = (f32::NAN, f32::NAN, f32::NAN, f32::NAN);
                continue;
            }
            let amax = hmax(_mm256_max_ps(
                _mm256_max_ps(a[0], a[1]),
                _mm256_max_ps(a[2], a[3]),
            ));
            if amax < TINY {
                store2(qb, zero, zero);
                (d[b], s[b], s16[2 * b], s16[2 * b + 1]) = (0.0, 0.0, 0.0, 0.0);
                continue;
            }
            let id = _mm256_set1_ps(QMAX / amax);
            // Round to nearest even (the default MXCSR mode), as `round_ties_even`.
            let i = [
                _mm256_cvtps_epi32(_mm256_mul_ps(v[0], id)),
                _mm256_cvtps_epi32(_mm256_mul_ps(v[1], id)),
                _mm256_cvtps_epi32(_mm256_mul_ps(v[2], id)),
                _mm256_cvtps_epi32(_mm256_mul_ps(v[3], id)),
            ];
            // packs interleaves 128-bit halves; the permute puts elements back in order.
            let lo = _mm256_permute4x64_epi64(_mm256_packs_epi32(i[0], i[1]), 0b11_01_10_00);
            let hi = _mm256_permute4x64_epi64(_mm256_packs_epi32(i[2], i[3]), 0b11_01_10_00);
            store2(qb, lo, hi);
            let sa = hsum_i32(_mm256_add_epi32(i[0], i[1]));
            let sb = hsum_i32(_mm256_add_epi32(i[2], i[3]));
            let db = amax / QMAX;
            d[b] = db;
            s[b] = db * (sa + sb) as f32;
            s16[2 * b] = db * sa as f32;
            s16[2 * b + 1] = db * sb as f32;
        }
    }
}
