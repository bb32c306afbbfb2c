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

pub(super) mod formats;
mod interleaved;

use formats::{with_format, Fmt, Q2K, Q3K, Q40, Q41, Q4K, Q50, Q51, Q5K, Q6K, Q80};

use super::scalar::{float_at, QMAX, TINY};
use super::{FFormat, Kernels, MinKind, Out, Panel, QFormat, QuantActs, GROUP, QB};

pub(super) static AVX2: Kernels = Kernels {
    name: "avx2",
    f32_reference: false,
    quantize: quantize_row,
    pack: None,
    decode,
    gemm,
    gemv: Some(gemv),
    direct: None,
    direct_max: 0,
    interleaved: interleaved::interleaved,
    float_gemm,
    dot,
    axpy,
    scores,
    mix,
    softmax,
};

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
    let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
}

/// Largest lane (exact whatever the order).
#[inline(always)]
unsafe fn hmax(v: __m256) -> f32 {
    let m4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1)))
}

/// Sum of the 8 i32 lanes (exact).
#[inline(always)]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s4 = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
    _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0b00_00_00_01)))
}

#[inline(always)]
unsafe fn store2(c: *mut i16, c0: __m256i, c1: __m256i) {
    _mm256_storeu_si256(c as *mut __m256i, c0);
    _mm256_storeu_si256(c.add(16) as *mut __m256i, c1);
}

// ---- activations --------------------------------------------------------------------

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_row(x: &[f32], q: &mut [i16], d: &mut [f32], s: &mut [f32], s16: &mut [f32]) {
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

// ---- weight decoding ----------------------------------------------------------------

// ---- weight decoding ----------------------------------------------------------------

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode(fmt: QFormat, w: &[u8], row_bytes: usize, p: &mut Panel) {
    match fmt {
        QFormat::Q4_0 => decode_rows::<Q40>(w, row_bytes, p),
        QFormat::Q4_1 => decode_rows::<Q41>(w, row_bytes, p),
        QFormat::Q5_0 => decode_rows::<Q50>(w, row_bytes, p),
        QFormat::Q5_1 => decode_rows::<Q51>(w, row_bytes, p),
        QFormat::Q8_0 => decode_rows::<Q80>(w, row_bytes, p),
        QFormat::Q2K => decode_rows::<Q2K>(w, row_bytes, p),
        QFormat::Q3K => decode_rows::<Q3K>(w, row_bytes, p),
        QFormat::Q4K => decode_rows::<Q4K>(w, row_bytes, p),
        QFormat::Q5K => decode_rows::<Q5K>(w, row_bytes, p),
        QFormat::Q6K => decode_rows::<Q6K>(w, row_bytes, p),
    }
}

#[inline(always)]
unsafe fn decode_rows<F: Fmt>(w: &[u8], row_bytes: usize, p: &mut Panel) {
    let (cols, ng) = (p.cols, p.ng);
    let nb = cols / QB;
    let npg = F::FMT.min_kind().per_group();
    let gbytes = F::FMT.group_bytes();
    for r in 0..p.nr {
        let row = w.as_ptr().add(r * row_bytes);
        for g in 0..ng {
            let nbj = (nb - GROUP * g).min(GROUP);
            let b = row.add(g * gbytes);
            let sc = F::scales(b, nbj);
            _mm256_storeu_ps(p.ws.as_mut_ptr().add((r * ng + g) * GROUP), sc.ws);
            let mv = p.minv.as_mut_ptr().add((r * ng + g) * npg);
            for (h, m) in sc.m.iter().enumerate().take(npg / GROUP) {
                _mm256_storeu_ps(mv.add(GROUP * h), *m);
            }
            let codes = p.codes.as_mut_ptr().add(r * cols + 256 * g);
            for j in 0..nbj {
                let (c0, c1) = F::codes(b, j);
                store2(codes.add(QB * j), c0, c1);
            }
        }
    }
}

// ---- one token ----------------------------------------------------------------------

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn gemv(
    fmt: QFormat,
    w: &[u8],
    row_bytes: usize,
    a: &QuantActs,
    t: usize,
    out: Out,
) {
    with_format!(fmt, gemv_f(w, row_bytes, a, t, out))
}

#[inline(always)]
unsafe fn gemv_f<F: Fmt, const M: u8>(
    w: &[u8],
    row_bytes: usize,
    a: &QuantActs,
    t: usize,
    out: Out,
) {
    let nr = w.len() / row_bytes;
    let mut r = 0;
    while r + R1 <= nr {
        fused::<F, R1, M>(w, row_bytes, r, a, t, out);
        r += R1;
    }
    while r < nr {
        fused::<F, 1, M>(w, row_bytes, r, a, t, out);
        r += 1;
    }
}

/// How many row tiles ahead the one-token kernel prefetches.
const PREFETCH_TILES: usize = 2;

/// `R` rows from `r0` times token `t`, decoding codes in registers: the same operations
/// as decoding a panel and running `micro::<R, 1, M>` on it.
#[inline(always)]
unsafe fn fused<F: Fmt, const R: usize, const M: u8>(
    w: &[u8],
    row_bytes: usize,
    r0: usize,
    a: &QuantActs,
    t: usize,
    out: Out,
) {
    let cols = a.cols;
    let nb = cols / QB;
    let ng = nb.div_ceil(GROUP);
    let npg = 8 * M as usize;
    let gbytes = F::FMT.group_bytes();
    let rows: [*const u8; R] = std::array::from_fn(|r| w.as_ptr().add((r0 + r) * row_bytes));
    let (xq, xd, xs) = a.token_ptrs(t, M);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut pp = [A8([0.0; 8]); R];
    let mut mins = [[_mm256_setzero_ps(); 2]; R];
    for g in 0..ng {
        let nbj = (nb - GROUP * g).min(GROUP);
        let d8 = _mm256_loadu_ps(xd.add(GROUP * g));
        // Rows are short (hundreds of bytes), too short for the hardware prefetcher to
        // run ahead: fetch the same group of the next tile's rows now.
        let glen = gbytes.min(row_bytes - g * gbytes);
        for r in 0..R {
            let next = rows[r].wrapping_add(g * gbytes + PREFETCH_TILES * R * row_bytes);
            let mut off = 0;
            while off < glen {
                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(off) as *const i8);
                off += 64;
            }
        }
        for r in 0..R {
            let sc = F::scales(rows[r].add(g * gbytes), nbj);
            _mm256_store_ps(pp[r].0.as_mut_ptr(), _mm256_mul_ps(sc.ws, d8));
            mins[r] = sc.m;
        }
        for j in 0..nbj {
            let e = (GROUP * g + j) * QB;
            let x0 = _mm256_loadu_si256(xq.add(e) as *const __m256i);
            let x1 = _mm256_loadu_si256(xq.add(e + 16) as *const __m256i);
            for r in 0..R {
                let (c0, c1) = F::codes(rows[r].add(g * gbytes), j);
                let isum = _mm256_add_epi32(_mm256_madd_epi16(c0, x0), _mm256_madd_epi16(c1, x1));
                acc[r] = _mm256_fmadd_ps(
                    _mm256_broadcast_ss(&pp[r].0[j]),
                    _mm256_cvtepi32_ps(isum),
                    acc[r],
                );
            }
        }
        for h in 0..M as usize {
            let s8 = _mm256_loadu_ps(xs.add(npg * g + GROUP * h));
            for r in 0..R {
                acc[r] = _mm256_fmadd_ps(mins[r][h], s8, acc[r]);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        *out.ptr.add(r0 + r) = hsum(*acc_r);
    }
}

// ---- products -----------------------------------------------------------------------

/// A 32-byte aligned group of 8 floats.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct A8([f32; 8]);

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn gemm(p: &Panel, a: &QuantActs, t0: usize, nt: usize, out: Out) {
    match p.min_kind() {
        MinKind::None => gemm_m::<0>(p, a, t0, nt, out),
        MinKind::Per32 => gemm_m::<1>(p, a, t0, nt, out),
        MinKind::Per16 => gemm_m::<2>(p, a, t0, nt, out),
    }
}

/// Rows per tile with one token, and rows x tokens per tile with several.
const R1: usize = 4;
const RN: usize = 2;
const TN: usize = 4;

#[inline(always)]
unsafe fn gemm_m<const M: u8>(p: &Panel, a: &QuantActs, t0: usize, nt: usize, out: Out) {
    let mut t = 0;
    while t < nt {
        let left = nt - t;
        let o = Out {
            ptr: out.ptr.add(t * out.ldo),
            ldo: out.ldo,
        };
        let tt = t0 + t;
        let mut r = 0;
        if left == 1 {
            while r + R1 <= p.nr {
                micro::<R1, 1, M>(p, r, a, tt, o);
                r += R1;
            }
            while r < p.nr {
                micro::<1, 1, M>(p, r, a, tt, o);
                r += 1;
            }
            t += 1;
            continue;
        }
        let n = left.min(TN);
        while r < p.nr {
            let two = r + RN <= p.nr;
            match (two, n) {
                (true, 4) => micro::<RN, 4, M>(p, r, a, tt, o),
                (true, 3) => micro::<RN, 3, M>(p, r, a, tt, o),
                (true, _) => micro::<RN, 2, M>(p, r, a, tt, o),
                (false, 4) => micro::<1, 4, M>(p, r, a, tt, o),
                (false, 3) => micro::<1, 3, M>(p, r, a, tt, o),
                (false, _) => micro::<1, 2, M>(p, r, a, tt, o),
            }
            r += if two { RN } else { 1 };
        }
        t += n;
    }
}

/// `R` rows from `r0` times `T` tokens from `t0`, written at `out[t * ldo + r0 + r]`.
#[inline(always)]
unsafe fn micro<const R: usize, const T: usize, const M: u8>(
    p: &Panel,
    r0: usize,
    a: &QuantActs,
    t0: usize,
    out: Out,
) {
    let (cols, ng) = (p.cols, p.ng);
    let nb = cols / QB;
    let npg = 8 * M as usize;
    let codes: [*const i16; R] = std::array::from_fn(|r| p.codes.as_ptr().add((r0 + r) * cols));
    let ws: [*const f32; R] = std::array::from_fn(|r| p.ws.as_ptr().add((r0 + r) * ng * GROUP));
    let mv: [*const f32; R] = std::array::from_fn(|r| p.minv.as_ptr().add((r0 + r) * ng * npg));
    let tok: [_; T] = std::array::from_fn(|t| a.token_ptrs(t0 + t, M));
    let xq: [*const i16; T] = std::array::from_fn(|t| tok[t].0);
    let xd: [*const f32; T] = std::array::from_fn(|t| tok[t].1);
    let xs: [*const f32; T] = std::array::from_fn(|t| tok[t].2);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let mut pp = [[A8([0.0; 8]); T]; R];
    for g in 0..ng {
        let nbj = (nb - GROUP * g).min(GROUP);
        for r in 0..R {
            let w8 = _mm256_loadu_ps(ws[r].add(GROUP * g));
            for t in 0..T {
                let d8 = _mm256_loadu_ps(xd[t].add(GROUP * g));
                _mm256_store_ps(pp[r][t].0.as_mut_ptr(), _mm256_mul_ps(w8, d8));
            }
        }
        for j in 0..nbj {
            let e = (GROUP * g + j) * QB;
            // The rows' codes stay in registers while each token's block is loaded once.
            let mut c = [[_mm256_setzero_si256(); 2]; R];
            for r in 0..R {
                c[r][0] = _mm256_load_si256(codes[r].add(e) as *const __m256i);
                c[r][1] = _mm256_load_si256(codes[r].add(e + 16) as *const __m256i);
            }
            for t in 0..T {
                let x0 = _mm256_load_si256(xq[t].add(e) as *const __m256i);
                let x1 = _mm256_load_si256(xq[t].add(e + 16) as *const __m256i);
                for r in 0..R {
                    let isum = _mm256_add_epi32(
                        _mm256_madd_epi16(c[r][0], x0),
                        _mm256_madd_epi16(c[r][1], x1),
                    );
                    acc[r][t] = _mm256_fmadd_ps(
                        _mm256_broadcast_ss(&pp[r][t].0[j]),
                        _mm256_cvtepi32_ps(isum),
                        acc[r][t],
                    );
                }
            }
        }
        for h in 0..M as usize {
            for r in 0..R {
                let m8 = _mm256_loadu_ps(mv[r].add(npg * g + GROUP * h));
                for t in 0..T {
                    let s8 = _mm256_loadu_ps(xs[t].add(npg * g + GROUP * h));
                    acc[r][t] = _mm256_fmadd_ps(m8, s8, acc[r][t]);
                }
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            *out.ptr.add(t * out.ldo + r0 + r) = hsum(acc[r][t]);
        }
    }
}

// ---- float weights ------------------------------------------------------------------

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn float_gemm(f: FFormat, w: &[u8], nr: usize, cols: usize, x: &[f32], nt: usize, out: Out) {
    match f {
        FFormat::F32 => float_gemm_f::<0>(w, nr, cols, x, nt, out),
        FFormat::F16 => float_gemm_f::<1>(w, nr, cols, x, nt, out),
        FFormat::BF16 => float_gemm_f::<2>(w, nr, cols, x, nt, out),
    }
}

/// 8 weights of format `F` (0: f32, 1: f16, 2: bf16) from element `i` of `row`.
#[inline(always)]
unsafe fn load8<const F: u8>(row: *const u8, i: usize) -> __m256 {
    match F {
        0 => _mm256_loadu_ps((row as *const f32).add(i)),
        1 => _mm256_cvtph_ps(_mm_loadu_si128(row.add(2 * i) as *const __m128i)),
        _ => _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128(row.add(2 * i) as *const __m128i)),
            16,
        )),
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

#[inline(always)]
unsafe fn micro_f<const F: u8, const R: usize, const T: usize>(
    w: &[u8],
    r0: usize,
    cols: usize,
    x: &[f32],
    out: Out,
) {
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

// ---- attention ----------------------------------------------------------------------

grouped_attention_ops!(dot_body, axpy_body, #[target_feature(enable = "avx2,fma,f16c")]);

/// As `mix_by_axpy` (bit-identical: the same fused multiply-add per element and
/// position, in position order), with 32 outputs at a time held in registers across
/// all positions instead of loaded and stored at each one.
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::kernels) unsafe fn mix(coef: &[f32], base: &[f32], rows: &[usize], out: &mut [f32]) {
    let np = rows.len();
    let g = coef.len() / np.max(1);
    let hd = out.len() / g.max(1);
    let pb = base.as_ptr();
    for h in 0..g {
        let c = &coef[h * np..(h + 1) * np];
        let o = out.as_mut_ptr().add(h * hd);
        let mut e = 0;
        while e + 32 <= hd {
            let mut acc = [_mm256_setzero_ps(); 4];
            for (p, &r) in rows.iter().enumerate() {
                let cv = _mm256_set1_ps(c[p]);
                for k in 0..4 {
                    acc[k] = _mm256_fmadd_ps(cv, _mm256_loadu_ps(pb.add(r + e + 8 * k)), acc[k]);
                }
            }
            for k in 0..4 {
                _mm256_storeu_ps(o.add(e + 8 * k), acc[k]);
            }
            e += 32;
        }
        while e + 8 <= hd {
            let mut acc = _mm256_setzero_ps();
            for (p, &r) in rows.iter().enumerate() {
                acc = _mm256_fmadd_ps(_mm256_set1_ps(c[p]), _mm256_loadu_ps(pb.add(r + e)), acc);
            }
            _mm256_storeu_ps(o.add(e), acc);
            e += 8;
        }
        for i in e..hd {
            let mut acc = 0f32;
            for (p, &r) in rows.iter().enumerate() {
                acc = c[p].mul_add(base[r + i], acc);
            }
            *o.add(i) = acc;
        }
    }
}

/// `acc + a[i..i + 8] * b[i..i + 8]`, fused.
#[inline(always)]
unsafe fn fma_at(a: *const f32, b: *const f32, i: usize, acc: __m256) -> __m256 {
    _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)), acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_body(a, b)
}

#[inline(always)]
unsafe fn dot_body(a: &[f32], b: &[f32]) -> f32 {
    hsum(dot_lanes(a, b))
}

/// The 8 lanes of `dot` before its final reduction: `(a0 + a1) + (a2 + a3)`.
#[inline(always)]
pub(in crate::kernels) unsafe fn dot_lanes(a: &[f32], b: &[f32]) -> __m256 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // Four named accumulators, indexed only by constants, so that they stay in
    // registers (an array indexed by `c % 4` lives on the stack).
    let (mut a0, mut a1, mut a2, mut a3) = (
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
    );
    let nc = n / 8;
    let mut c = 0;
    while c + 4 <= nc {
        a0 = fma_at(pa, pb, 8 * c, a0);
        a1 = fma_at(pa, pb, 8 * c + 8, a1);
        a2 = fma_at(pa, pb, 8 * c + 16, a2);
        a3 = fma_at(pa, pb, 8 * c + 24, a3);
        c += 4;
    }
    let rest = nc - c;
    if rest >= 1 {
        a0 = fma_at(pa, pb, 8 * c, a0);
    }
    if rest >= 2 {
        a1 = fma_at(pa, pb, 8 * c + 8, a1);
    }
    if rest >= 3 {
        a2 = fma_at(pa, pb, 8 * c + 16, a2);
    }
    if 8 * nc < n {
        // The last partial chunk goes to accumulator `nc % 4`, lane by lane.
        let acc = match nc % 4 {
            0 => &mut a0,
            1 => &mut a1,
            2 => &mut a2,
            _ => &mut a3,
        };
        let mut lanes = A8([0.0; 8]);
        _mm256_store_ps(lanes.0.as_mut_ptr(), *acc);
        for i in 8 * nc..n {
            lanes.0[i % 8] = a[i].mul_add(b[i], lanes.0[i % 8]);
        }
        *acc = _mm256_load_ps(lanes.0.as_ptr());
    }
    _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))
}

/// `[a lo + a hi | b lo + b hi]`: `hsum`'s first step for two vectors.
#[inline(always)]
unsafe fn pair_s4(a: __m256, b: __m256) -> __m256 {
    _mm256_add_ps(
        _mm256_permute2f128_ps::<0x20>(a, b),
        _mm256_permute2f128_ps::<0x31>(a, b),
    )
}

/// `hsum`'s second step for the four vectors in `x = [a | b]`, `y = [c | d]` (each the
/// output of `pair_s4`): `[a0 + a2, a1 + a3, c0 + c2, c1 + c3 | b.., d..]`.
#[inline(always)]
unsafe fn quad_s2(x: __m256, y: __m256) -> __m256 {
    _mm256_add_ps(
        _mm256_shuffle_ps::<0b01_00_01_00>(x, y),
        _mm256_shuffle_ps::<0b11_10_11_10>(x, y),
    )
}

/// The 8 lanes of one `dot` before its final reduction, by some instruction set, with
/// the first operand (a query head, the same for many rows) prepared once.
pub(in crate::kernels) trait DotLanes {
    /// The query as the instruction set keeps it between rows (e.g. in registers).
    type Query;
    unsafe fn prepare(a: &[f32]) -> Self::Query;
    /// `dot_lanes(a, b)`, `q` = `prepare(a)`.
    unsafe fn lanes(q: &Self::Query, a: &[f32], b: &[f32]) -> __m256;
}

/// `dot_lanes` with 256-bit registers.
struct Ymm;

impl DotLanes for Ymm {
    type Query = ();
    #[inline(always)]
    unsafe fn prepare(_: &[f32]) {}
    #[inline(always)]
    unsafe fn lanes(_: &(), a: &[f32], b: &[f32]) -> __m256 {
        dot_lanes(a, b)
    }
}

/// As `scores_by_dot`, 8 positions at a time: their 8-lane sums are reduced together by
/// a transposition that adds the same pairs as `hsum` does for each ((v0+v4)+(v2+v6)) +
/// ((v1+v5)+(v3+v7)), so every score has the bits of one `dot`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scores(q: &[f32], base: &[f32], rows: &[usize], out: &mut [f32]) {
    scores_with::<Ymm>(q, base, rows, out)
}

/// `scores` with the lanes of each dot from `L`.
#[inline(always)]
pub(in crate::kernels) unsafe fn scores_with<L: DotLanes>(
    q: &[f32],
    base: &[f32],
    rows: &[usize],
    out: &mut [f32],
) {
    let np = rows.len();
    let hd = q.len() / (out.len() / np.max(1)).max(1);
    let p8 = np / 8 * 8;
    // Lanes come out as positions [0, 2, 4, 6, 1, 3, 5, 7].
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (h, qh) in q.chunks_exact(hd).enumerate() {
        let o = out.as_mut_ptr().add(h * np);
        let qp = L::prepare(qh);
        let mut p = 0;
        while p < p8 {
            let mut v = [_mm256_setzero_ps(); 8];
            for (i, vi) in v.iter_mut().enumerate() {
                let r = rows[p + i];
                *vi = L::lanes(&qp, qh, &base[r..r + hd]);
            }
            let (u01, u23) = (pair_s4(v[0], v[1]), pair_s4(v[2], v[3]));
            let (u45, u67) = (pair_s4(v[4], v[5]), pair_s4(v[6], v[7]));
            let r = _mm256_hadd_ps(quad_s2(u01, u23), quad_s2(u45, u67));
            _mm256_storeu_ps(o.add(p), _mm256_permutevar8x32_ps(r, order));
            p += 8;
        }
        for p in p8..np {
            let r = rows[p];
            *o.add(p) = hsum(L::lanes(&qp, qh, &base[r..r + hd]));
        }
    }
}

/// `ops::softmax_scaled`, 8 lanes wide with the same operations (no fused multiply-adds):
/// lane `i % 8` holds the partial sum of element `i`, as in the specification.
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::kernels) unsafe fn softmax(x: &mut [f32], scale: f32) {
    let n = x.len();
    let n8 = n / 8 * 8;
    let p = x.as_mut_ptr();
    if scale != 1.0 {
        let s = _mm256_set1_ps(scale);
        let mut i = 0;
        while i < n8 {
            _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), s));
            i += 8;
        }
        for v in &mut x[n8..] {
            *v *= scale;
        }
    }
    // max_ps(v, m) returns m where v is NaN: `f32::max`'s rule.
    let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut i = 0;
    while i < n8 {
        m = _mm256_max_ps(_mm256_loadu_ps(p.add(i)), m);
        i += 8;
    }
    let max = x[n8..].iter().copied().fold(hmax(m), f32::max);
    let mv = _mm256_set1_ps(max);
    let mut part = _mm256_setzero_ps();
    let mut i = 0;
    while i < n8 {
        let e = exp_nonpositive8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), mv));
        _mm256_storeu_ps(p.add(i), e);
        part = _mm256_add_ps(part, e);
        i += 8;
    }
    let mut lanes = A8([0.0; 8]);
    _mm256_store_ps(lanes.0.as_mut_ptr(), part);
    for (v, s) in x[n8..].iter_mut().zip(lanes.0.iter_mut()) {
        *v = crate::ops::exp_nonpositive(*v - max);
        *s += *v;
    }
    let inv = 1.0 / hsum(_mm256_load_ps(lanes.0.as_ptr()));
    let invv = _mm256_set1_ps(inv);
    let mut i = 0;
    while i < n8 {
        _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), invv));
        i += 8;
    }
    for v in &mut x[n8..] {
        *v *= inv;
    }
}

/// `ops::exp_nonpositive` of 8 lanes, operation for operation.
#[inline(always)]
unsafe fn exp_nonpositive8(x: __m256) -> __m256 {
    use crate::ops::exp_consts::*;
    let set = _mm256_set1_ps;
    let round = set(ROUND);
    let below = _mm256_cmp_ps::<_CMP_LT_OQ>(x, set(FLOOR));
    let xc = _mm256_blendv_ps(x, set(FLOOR), below);
    let k = _mm256_add_ps(_mm256_mul_ps(xc, set(LOG2E)), round);
    let n = _mm256_sub_ps(k, round);
    let r = _mm256_sub_ps(
        _mm256_sub_ps(xc, _mm256_mul_ps(n, set(LN2_HI))),
        _mm256_mul_ps(n, set(LN2_LO)),
    );
    let mut q = set(POLY[0]);
    for &c in &POLY[1..] {
        q = _mm256_add_ps(_mm256_mul_ps(q, r), set(c));
    }
    let e = _mm256_add_ps(
        _mm256_add_ps(_mm256_mul_ps(q, _mm256_mul_ps(r, r)), r),
        set(1.0),
    );
    let ni = _mm256_sub_epi32(_mm256_castps_si256(k), _mm256_castps_si256(round));
    let two_n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        ni,
        _mm256_set1_epi32(127),
    )));
    let y = _mm256_add_ps(
        _mm256_mul_ps(e, two_n),
        _mm256_mul_ps(x, _mm256_setzero_ps()),
    );
    _mm256_andnot_ps(below, y)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    axpy_body(a, x, y)
}

#[inline(always)]
unsafe fn axpy_body(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len();
    let av = _mm256_set1_ps(a);
    let n8 = n / 8 * 8;
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let mut i = 0;
    while i < n8 {
        let v = _mm256_fmadd_ps(av, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
        _mm256_storeu_ps(py.add(i), v);
        i += 8;
    }
    for i in n8..n {
        y[i] = a.mul_add(x[i], y[i]);
    }
}
