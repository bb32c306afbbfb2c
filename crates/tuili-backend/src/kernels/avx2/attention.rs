//! Attention's float ops: dot products and scores of query heads against K rows, the
//! weighted sums of V rows, softmax, axpy.

use std::arch::x86_64::*;

use super::{hmax, hsum, A8};
use crate::kv::{KvType, Q8_0_BLOCK, Q8_0_BYTES};

// ---- stored rows --------------------------------------------------------------------

/// Values of one `KvType` decoded in registers, exactly as `KvType::decode` does. `base`
/// points at element 0 of a cache (an element offset `e` is `ty.bytes(e)` bytes in).
pub(in crate::kernels) trait KvRow {
    /// Whether the stored values are the f32 the kernels read (no decoding).
    const IN_PLACE: bool = false;
    /// Values `e..e + 8` (`e` a multiple of 8).
    unsafe fn load8(base: *const u8, e: usize) -> __m256;
    /// Values `e..e + 16` (`e` a multiple of 16), for the AVX-512 kernels (inlined only
    /// into functions that enable AVX-512).
    unsafe fn load16(base: *const u8, e: usize) -> __m512;
    /// Value `e`.
    unsafe fn at(base: *const u8, e: usize) -> f32;
}

/// f32 values.
pub(in crate::kernels) struct F32Row;
/// f16 values (F16C `vcvtph2ps`).
pub(in crate::kernels) struct F16Row;
/// bf16 values (a 16-bit shift).
pub(in crate::kernels) struct Bf16Row;
/// `q8_0` blocks (codes widened to i32, converted, times the block's f16 scale).
pub(in crate::kernels) struct Q80Row;

impl KvRow for F32Row {
    const IN_PLACE: bool = true;
    #[inline(always)]
    unsafe fn load8(base: *const u8, e: usize) -> __m256 {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe { _mm256_loadu_ps((base as *const f32).add(e)) }
    }
    #[inline(always)]
    unsafe fn load16(base: *const u8, e: usize) -> __m512 {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe { _mm512_loadu_ps((base as *const f32).add(e)) }
    }
    #[inline(always)]
    unsafe fn at(base: *const u8, e: usize) -> f32 {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe { (base as *const f32).add(e).read_unaligned() }
    }
}

impl KvRow for F16Row {
    #[inline(always)]
    unsafe fn load8(base: *const u8, e: usize) -> __m256 {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(base.add(2 * e) as *const __m128i)) }
    }
    #[inline(always)]
    unsafe fn load16(base: *const u8, e: usize) -> __m512 {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(base.add(2 * e) as *const __m256i)) }
    }
    #[inline(always)]
    unsafe fn at(base: *const u8, e: usize) -> f32 {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe { crate::quant::f16_to_f32((base.add(2 * e) as *const u16).read_unaligned()) }
    }
}

impl KvRow for Bf16Row {
    #[inline(always)]
    unsafe fn load8(base: *const u8, e: usize) -> __m256 {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let h = _mm_loadu_si128(base.add(2 * e) as *const __m128i);
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
    }
    #[inline(always)]
    unsafe fn load16(base: *const u8, e: usize) -> __m512 {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let h = _mm256_loadu_si256(base.add(2 * e) as *const __m256i);
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
    }
    #[inline(always)]
    unsafe fn at(base: *const u8, e: usize) -> f32 {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe { crate::quant::bf16_to_f32((base.add(2 * e) as *const u16).read_unaligned()) }
    }
}

/// The block of element `e` and `e`'s place in it: (scale as f32, pointer to code `e`).
#[inline(always)]
unsafe fn q8_0_at(base: *const u8, e: usize) -> (f32, *const u8) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let blk = base.add(e / Q8_0_BLOCK * Q8_0_BYTES);
        let bits = (blk as *const u16).read_unaligned();
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)));
        (d, blk.add(2 + e % Q8_0_BLOCK))
    }
}

impl KvRow for Q80Row {
    #[inline(always)]
    unsafe fn load8(base: *const u8, e: usize) -> __m256 {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let (d, q) = q8_0_at(base, e);
            let c = _mm256_cvtepi8_epi32(_mm_loadl_epi64(q as *const __m128i));
            _mm256_mul_ps(_mm256_cvtepi32_ps(c), _mm256_set1_ps(d))
        }
    }
    #[inline(always)]
    unsafe fn load16(base: *const u8, e: usize) -> __m512 {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let (d, q) = q8_0_at(base, e);
            let c = _mm512_cvtepi8_epi32(_mm_loadu_si128(q as *const __m128i));
            _mm512_mul_ps(_mm512_cvtepi32_ps(c), _mm512_set1_ps(d))
        }
    }
    #[inline(always)]
    unsafe fn at(base: *const u8, e: usize) -> f32 {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let (d, q) = q8_0_at(base, e);
            d * (*q as i8) as f32
        }
    }
}

/// Calls `$f::<$row, ..>($args)` with the `KvRow` of `$ty` as the first type argument.
macro_rules! with_kv_row {
    ($ty:expr, $f:ident::<_ $(, $t:ty)*>($($args:expr),*)) => {
        match $ty {
            KvType::F32 => $f::<F32Row $(, $t)*>($($args),*),
            KvType::F16 => $f::<F16Row $(, $t)*>($($args),*),
            KvType::BF16 => $f::<Bf16Row $(, $t)*>($($args),*),
            KvType::Q8_0 => $f::<Q80Row $(, $t)*>($($args),*),
        }
    };
}
pub(in crate::kernels) use with_kv_row;

// ---- attention ----------------------------------------------------------------------

/// As `mix_by_axpy` (bit-identical: the same fused multiply-add per element and
/// position, in position order), with 32 outputs at a time held in registers across
/// all positions instead of loaded and stored at each one.
#[target_feature(enable = "avx2,fma,f16c")]
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
pub(in crate::kernels) unsafe fn mix_rows<K: KvRow>(
    coef: &[f32],
    pb: *const u8,
    rows: &[usize],
    out: &mut [f32],
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let np = rows.len();
        let g = coef.len() / np.max(1);
        let hd = out.len() / g.max(1);
        for h in 0..g {
            let c = &coef[h * np..(h + 1) * np];
            let o = out.as_mut_ptr().add(h * hd);
            let mut e = 0;
            while e + 32 <= hd {
                let mut acc = [_mm256_setzero_ps(); 4];
                for (p, &r) in rows.iter().enumerate() {
                    let cv = _mm256_set1_ps(c[p]);
                    for k in 0..4 {
                        acc[k] = _mm256_fmadd_ps(cv, K::load8(pb, r + e + 8 * k), acc[k]);
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
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(c[p]), K::load8(pb, r + e), acc);
                }
                _mm256_storeu_ps(o.add(e), acc);
                e += 8;
            }
            for i in e..hd {
                let mut acc = 0f32;
                for (p, &r) in rows.iter().enumerate() {
                    acc = c[p].mul_add(K::at(pb, r + i), acc);
                }
                *o.add(i) = acc;
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe { dot_body(a, b) }
}

#[inline(always)]
unsafe fn dot_body(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe { hsum(dot_lanes::<F32Row>(a, b.as_ptr() as *const u8, 0)) }
}

/// `acc + a[i..i + 8] * row values r + i..r + i + 8`, fused.
#[inline(always)]
unsafe fn fma_row<K: KvRow>(
    a: *const f32,
    pb: *const u8,
    r: usize,
    i: usize,
    acc: __m256,
) -> __m256 {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe { _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), K::load8(pb, r + i), acc) }
}

/// The 8 lanes of `dot(a, row)` before its final reduction, `(a0 + a1) + (a2 + a3)`; the
/// row is `a.len()` values of `K` from element `r` of `pb`.
#[inline(always)]
pub(in crate::kernels) unsafe fn dot_lanes<K: KvRow>(a: &[f32], pb: *const u8, r: usize) -> __m256 {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let n = a.len();
        let pa = a.as_ptr();
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
            a0 = fma_row::<K>(pa, pb, r, 8 * c, a0);
            a1 = fma_row::<K>(pa, pb, r, 8 * c + 8, a1);
            a2 = fma_row::<K>(pa, pb, r, 8 * c + 16, a2);
            a3 = fma_row::<K>(pa, pb, r, 8 * c + 24, a3);
            c += 4;
        }
        let rest = nc - c;
        if rest >= 1 {
            a0 = fma_row::<K>(pa, pb, r, 8 * c, a0);
        }
        if rest >= 2 {
            a1 = fma_row::<K>(pa, pb, r, 8 * c + 8, a1);
        }
        if rest >= 3 {
            a2 = fma_row::<K>(pa, pb, r, 8 * c + 16, a2);
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
                lanes.0[i % 8] = a[i].mul_add(K::at(pb, r + i), lanes.0[i % 8]);
            }
            *acc = _mm256_load_ps(lanes.0.as_ptr());
        }
        _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))
    }
}

/// `[a lo + a hi | b lo + b hi]`: `hsum`'s first step for two vectors.
#[inline(always)]
unsafe fn pair_s4(a: __m256, b: __m256) -> __m256 {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(a, b),
            _mm256_permute2f128_ps::<0x31>(a, b),
        )
    }
}

/// `hsum`'s second step for the four vectors in `x = [a | b]`, `y = [c | d]` (each the
/// output of `pair_s4`): `[a0 + a2, a1 + a3, c0 + c2, c1 + c3 | b.., d..]`.
#[inline(always)]
unsafe fn quad_s2(x: __m256, y: __m256) -> __m256 {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        _mm256_add_ps(
            _mm256_shuffle_ps::<0b01_00_01_00>(x, y),
            _mm256_shuffle_ps::<0b11_10_11_10>(x, y),
        )
    }
}

/// The 8 lanes of one `dot` before its final reduction, by some instruction set, with
/// the first operand (a query head, the same for many rows) prepared once.
pub(in crate::kernels) trait DotLanes {
    /// The query as the instruction set keeps it between rows (e.g. in registers).
    type Query;
    unsafe fn prepare(a: &[f32]) -> Self::Query;
    /// `dot_lanes::<K>(a, pb, r)`, `q` = `prepare(a)`.
    unsafe fn lanes<K: KvRow>(q: &Self::Query, a: &[f32], pb: *const u8, r: usize) -> __m256;
}

/// `dot_lanes` with 256-bit registers.
struct Ymm;

impl DotLanes for Ymm {
    type Query = ();
    #[inline(always)]
    unsafe fn prepare(_: &[f32]) {}
    #[inline(always)]
    unsafe fn lanes<K: KvRow>(_: &(), a: &[f32], pb: *const u8, r: usize) -> __m256 {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe { dot_lanes::<K>(a, pb, r) }
    }
}

/// As `scores_by_dot`, 8 positions at a time: their 8-lane sums are reduced together by
/// a transposition that adds the same pairs as `hsum` does for each ((v0+v4)+(v2+v6)) +
/// ((v1+v5)+(v3+v7)), so every score has the bits of one `dot`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn scores(ty: KvType, q: &[f32], base: &[u8], rows: &[usize], out: &mut [f32]) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe { with_kv_row!(ty, scores_with::<_, Ymm>(q, base.as_ptr(), rows, out)) }
}

/// `scores` over rows of `K`, with the lanes of each dot from `L`.
#[inline(always)]
pub(in crate::kernels) unsafe fn scores_with<K: KvRow, L: DotLanes>(
    q: &[f32],
    pb: *const u8,
    rows: &[usize],
    out: &mut [f32],
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let np = rows.len();
        let hd = q.len() / (out.len() / np.max(1)).max(1);
        if !K::IN_PLACE && q.len() > hd {
            return scores_tiled::<K, L>(q, hd, pb, rows, out);
        }
        let p8 = np / 8 * 8;
        for (h, qh) in q.chunks_exact(hd).enumerate() {
            let o = out.as_mut_ptr().add(h * np);
            let qp = L::prepare(qh);
            let mut p = 0;
            while p < p8 {
                let mut v = [_mm256_setzero_ps(); 8];
                for (i, vi) in v.iter_mut().enumerate() {
                    *vi = L::lanes::<K>(&qp, qh, pb, rows[p + i]);
                }
                store_reduced8(&v, o.add(p));
                p += 8;
            }
            for p in p8..np {
                *o.add(p) = hsum(L::lanes::<K>(&qp, qh, pb, rows[p]));
            }
        }
    }
}

/// `scores_with` for several query heads over rows that must be decoded: each tile of 8
/// rows is decoded once into f32 (`decode_row`) and every head is scored against it, so
/// a GQA group decodes each row once instead of once per head. The same values, the same
/// dots: the same bits.
#[inline(always)]
unsafe fn scores_tiled<K: KvRow, L: DotLanes>(
    q: &[f32],
    hd: usize,
    pb: *const u8,
    rows: &[usize],
    out: &mut [f32],
) {
    // SAFETY: as `scores_with` (this fn's caller), whose contract covers these rows;
    // the tile holds 8 rows of `hd` values.
    unsafe {
        let np = rows.len();
        // tile: [8, hd] decoded rows.
        let mut tile = vec![0f32; 8 * hd];
        let tb = tile.as_ptr() as *const u8;
        let mut p = 0;
        while p < np {
            let n = (np - p).min(8);
            for i in 0..n {
                decode_row::<K>(pb, rows[p + i], hd, tile.as_mut_ptr().add(i * hd));
            }
            for (h, qh) in q.chunks_exact(hd).enumerate() {
                let o = out.as_mut_ptr().add(h * np + p);
                let qp = L::prepare(qh);
                if n == 8 {
                    let mut v = [_mm256_setzero_ps(); 8];
                    for (i, vi) in v.iter_mut().enumerate() {
                        *vi = L::lanes::<F32Row>(&qp, qh, tb, i * hd);
                    }
                    store_reduced8(&v, o);
                } else {
                    for i in 0..n {
                        *o.add(i) = hsum(L::lanes::<F32Row>(&qp, qh, tb, i * hd));
                    }
                }
            }
            p += n;
        }
    }
}

/// Values `r..r + hd` of `K` from `pb`, decoded into `dst` (`[hd]`).
#[inline(always)]
unsafe fn decode_row<K: KvRow>(pb: *const u8, r: usize, hd: usize, dst: *mut f32) {
    // SAFETY: the caller gives a row within the stored values and `hd` writable floats.
    unsafe {
        let mut i = 0;
        while i + 8 <= hd {
            _mm256_storeu_ps(dst.add(i), K::load8(pb, r + i));
            i += 8;
        }
        while i < hd {
            *dst.add(i) = K::at(pb, r + i);
            i += 1;
        }
    }
}

/// Stores the dots of 8 positions, `hsum` of each of `v` (the same pairs added in the
/// same order, by a transposition), at `o[0..8]`.
#[inline(always)]
unsafe fn store_reduced8(v: &[__m256; 8], o: *mut f32) {
    // SAFETY: the caller gives 8 writable floats at `o`; the table's instructions run.
    unsafe {
        // Lanes come out as positions [0, 2, 4, 6, 1, 3, 5, 7].
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let (u01, u23) = (pair_s4(v[0], v[1]), pair_s4(v[2], v[3]));
        let (u45, u67) = (pair_s4(v[4], v[5]), pair_s4(v[6], v[7]));
        let r = _mm256_hadd_ps(quad_s2(u01, u23), quad_s2(u45, u67));
        _mm256_storeu_ps(o, _mm256_permutevar8x32_ps(r, order));
    }
}

/// `ops::softmax_scaled`, 8 lanes wide with the same operations (no fused multiply-adds):
/// lane `i % 8` holds the partial sum of element `i`, as in the specification.
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::kernels) unsafe fn softmax(x: &mut [f32], scale: f32) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
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
}

/// `ops::exp_nonpositive` of 8 lanes, operation for operation.
#[inline(always)]
unsafe fn exp_nonpositive8(x: __m256) -> __m256 {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
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
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe { axpy_body(a, x, y) }
}

#[inline(always)]
unsafe fn axpy_body(a: f32, x: &[f32], y: &mut [f32]) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
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
}
