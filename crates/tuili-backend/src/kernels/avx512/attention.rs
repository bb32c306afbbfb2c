//! Attention's grouped scores and weighted sums with 512-bit registers, bit-identical
//! to the specification (`scores_by_dot`, `mix_by_axpy`).
//!
//! A `dot`'s four 8-lane accumulators take chunks `c ≡ 0, 1, 2, 3 (mod 4)` of 8
//! elements. Two 512-bit accumulators hold them as `[a0 | a1]` (chunks 4k, 4k + 1:
//! 16 contiguous elements) and `[a2 | a3]`, so each fused multiply-add does two of the
//! specification's in its order; the halves are then added as `(a0 + a1) + (a2 + a3)`.

use std::arch::x86_64::*;

use super::super::avx2::{
    dot_lanes, mix_rows as mix_avx2, scores_with, with_kv_row, Bf16Row, DotLanes, F16Row, F32Row,
    KvRow, Q80Row,
};
use crate::kv::KvType;

/// `dot_lanes` two chunks per register; query heads of 64, 128 or 256 elements stay in
/// registers across rows (16 of the 32), other lengths that are multiples of 32 are
/// loaded per row, and the rest take the 256-bit path.
struct Zmm;

/// Whether a query head of `n` elements is kept in registers.
#[inline(always)]
fn in_registers(n: usize) -> bool {
    n == 64 || n == 128 || n == 256
}

impl DotLanes for Zmm {
    type Query = [__m512; 16];

    #[inline(always)]
    unsafe fn prepare(a: &[f32]) -> [__m512; 16] {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let mut q = [_mm512_setzero_ps(); 16];
            if in_registers(a.len()) {
                for (k, qk) in q.iter_mut().enumerate().take(a.len() / 16) {
                    *qk = _mm512_loadu_ps(a.as_ptr().add(16 * k));
                }
            }
            q
        }
    }

    #[inline(always)]
    unsafe fn lanes<K: KvRow>(q: &[__m512; 16], a: &[f32], pb: *const u8, r: usize) -> __m256 {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let n = a.len();
            if !n.is_multiple_of(32) {
                return dot_lanes::<K>(a, pb, r);
            }
            // x: [a0 | a1] (elements 32k..32k + 16), y: [a2 | a3] (32k + 16..32k + 32).
            let (x, y) = if n == 64 {
                held::<K, 4>(q, pb, r)
            } else if n == 128 {
                held::<K, 8>(q, pb, r)
            } else if n == 256 {
                held::<K, 16>(q, pb, r)
            } else {
                let pa = a.as_ptr();
                let (mut x, mut y) = (_mm512_setzero_ps(), _mm512_setzero_ps());
                let mut i = 0;
                while i < n {
                    x = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), K::load16(pb, r + i), x);
                    y = _mm512_fmadd_ps(
                        _mm512_loadu_ps(pa.add(i + 16)),
                        K::load16(pb, r + i + 16),
                        y,
                    );
                    i += 32;
                }
                (x, y)
            };
            let a01 = _mm256_add_ps(_mm512_castps512_ps256(x), _mm512_extractf32x8_ps::<1>(x));
            let a23 = _mm256_add_ps(_mm512_castps512_ps256(y), _mm512_extractf32x8_ps::<1>(y));
            _mm256_add_ps(a01, a23)
        }
    }
}

/// The two accumulators of a dot with a query of `N` registers held in `q`: chunk
/// pairs in order, `x` the even registers, `y` the odd ones (`N` a constant, so the
/// loop unrolls and `q` stays in registers).
#[inline(always)]
unsafe fn held<K: KvRow, const N: usize>(
    q: &[__m512; 16],
    pb: *const u8,
    r: usize,
) -> (__m512, __m512) {
    // SAFETY: as `Zmm::lanes`, whose contract this is: row `r` holds `16 N` values.
    unsafe {
        let zero = _mm512_setzero_ps();
        let mut x = _mm512_fmadd_ps(q[0], K::load16(pb, r), zero);
        let mut y = _mm512_fmadd_ps(q[1], K::load16(pb, r + 16), zero);
        for k in (2..N).step_by(2) {
            x = _mm512_fmadd_ps(q[k], K::load16(pb, r + 16 * k), x);
            y = _mm512_fmadd_ps(q[k + 1], K::load16(pb, r + 16 * k + 16), y);
        }
        (x, y)
    }
}

/// `out[h, p] = dot(q[h], row p)` (see `Kernels::scores`).
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(in crate::kernels) unsafe fn scores(
    ty: KvType,
    q: &[f32],
    base: &[u8],
    rows: &[usize],
    out: &mut [f32],
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe { with_kv_row!(ty, scores_with::<_, Zmm>(q, base.as_ptr(), rows, out)) }
}

/// `out[h] = Σ_p coef[h, p] · row p` (see `Kernels::mix`): per element one fused
/// multiply-add per position in position order from zero, as `mix_by_axpy`, with 64
/// outputs of up to four heads at a time in registers, each row loaded once for them.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(in crate::kernels) unsafe fn mix(
    ty: KvType,
    coef: &[f32],
    base: &[u8],
    rows: &[usize],
    out: &mut [f32],
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe { with_kv_row!(ty, mix_rows::<_>(coef, base.as_ptr(), rows, out)) }
}

/// `mix` over rows of `K`.
#[inline(always)]
unsafe fn mix_rows<K: KvRow>(coef: &[f32], pb: *const u8, rows: &[usize], out: &mut [f32]) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let np = rows.len();
        let g = coef.len() / np.max(1);
        let hd = out.len() / g.max(1);
        if !hd.is_multiple_of(64) || np == 0 {
            return mix_avx2::<K>(coef, pb, rows, out);
        }
        let mut h = 0;
        while h < g {
            let (c, o) = (&coef[h * np..], out[h * hd..].as_mut_ptr());
            let take = (g - h).min(4);
            match take {
                4 => mix_heads::<K, 4>(c, pb, rows, hd, o),
                3 => mix_heads::<K, 3>(c, pb, rows, hd, o),
                2 => mix_heads::<K, 2>(c, pb, rows, hd, o),
                _ => mix_heads::<K, 1>(c, pb, rows, hd, o),
            }
            h += take;
        }
    }
}

/// `H` heads' outputs (`o`: `[H, hd]`) from their coefficients (`c`: `[H, np]`), 64
/// elements at a time.
#[inline(always)]
unsafe fn mix_heads<K: KvRow, const H: usize>(
    c: &[f32],
    pb: *const u8,
    rows: &[usize],
    hd: usize,
    o: *mut f32,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let np = rows.len();
        let mut e = 0;
        while e < hd {
            let mut acc = [[_mm512_setzero_ps(); 4]; H];
            for (p, &r) in rows.iter().enumerate() {
                let v = [
                    K::load16(pb, r + e),
                    K::load16(pb, r + e + 16),
                    K::load16(pb, r + e + 32),
                    K::load16(pb, r + e + 48),
                ];
                for h in 0..H {
                    let cv = _mm512_set1_ps(*c.get_unchecked(h * np + p));
                    for k in 0..4 {
                        acc[h][k] = _mm512_fmadd_ps(cv, v[k], acc[h][k]);
                    }
                }
            }
            for h in 0..H {
                for k in 0..4 {
                    _mm512_storeu_ps(o.add(h * hd + e + 16 * k), acc[h][k]);
                }
            }
            e += 64;
        }
    }
}
