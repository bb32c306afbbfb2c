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
    /// Whether decoding is one instruction per 8 values (cheaper done again per pair of
    /// heads than stored and reloaded; see `scores_tiles`).
    const CHEAP: bool = false;
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
    const CHEAP: bool = true;
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
    const CHEAP: bool = true;
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

/// `mix` over rows of `K`: the heads, up to four at a time, share each row as it is
/// loaded (decoded once for all of them), their outputs held in registers across all
/// positions (`mix_heads`).
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
        let mut h = 0;
        while h < g {
            let (c, o) = (&coef[h * np..], out[h * hd..].as_mut_ptr());
            // Accumulators per tile (heads × vectors of 8): 8 to 12 of the 16 registers,
            // enough independent chains to keep both FMA units busy.
            let take = (g - h).min(4);
            match take {
                4 => mix_heads::<K, 4, 2>(c, pb, rows, hd, o),
                3 => mix_heads::<K, 3, 3>(c, pb, rows, hd, o),
                2 => mix_heads::<K, 2, 4>(c, pb, rows, hd, o),
                _ => mix_heads::<K, 1, 8>(c, pb, rows, hd, o),
            }
            h += take;
        }
    }
}

/// `H` heads' outputs (`o`: `[H, hd]`) from their coefficients (`c`: `[H, np]`, rows of
/// `np`): tiles of `8 B` elements, then of 8, then one element at a time. Per element one
/// fused multiply-add per position in position order from zero, as `mix_by_axpy`.
#[inline(always)]
unsafe fn mix_heads<K: KvRow, const H: usize, const B: usize>(
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
        while e + 8 * B <= hd {
            mix_tile::<K, H, B>(c, pb, rows, hd, o, e);
            e += 8 * B;
        }
        while e + 8 <= hd {
            mix_tile::<K, H, 1>(c, pb, rows, hd, o, e);
            e += 8;
        }
        for h in 0..H {
            for i in e..hd {
                let mut acc = 0f32;
                for (p, &r) in rows.iter().enumerate() {
                    acc = c.get_unchecked(h * np + p).mul_add(K::at(pb, r + i), acc);
                }
                *o.add(h * hd + i) = acc;
            }
        }
    }
}

/// Elements `e..e + 8 B` of `H` heads' outputs, in `H × B` registers.
#[inline(always)]
unsafe fn mix_tile<K: KvRow, const H: usize, const B: usize>(
    c: &[f32],
    pb: *const u8,
    rows: &[usize],
    hd: usize,
    o: *mut f32,
    e: usize,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let np = rows.len();
        let mut acc = [[_mm256_setzero_ps(); B]; H];
        for (p, &r) in rows.iter().enumerate() {
            let mut cv = [_mm256_setzero_ps(); H];
            for (h, ch) in cv.iter_mut().enumerate() {
                *ch = _mm256_set1_ps(*c.get_unchecked(h * np + p));
            }
            for k in 0..B {
                let v = K::load8(pb, r + e + 8 * k);
                for h in 0..H {
                    acc[h][k] = _mm256_fmadd_ps(cv[h], v, acc[h][k]);
                }
            }
        }
        for (h, acc_h) in acc.iter().enumerate() {
            for (k, a) in acc_h.iter().enumerate() {
                _mm256_storeu_ps(o.add(h * hd + e + 8 * k), *a);
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
    unsafe {
        let hd = q.len() / (out.len() / rows.len().max(1)).max(1);
        if hd.is_multiple_of(32) && !rows.is_empty() {
            let pb = base.as_ptr();
            // Chains of 2 chunks or fewer run two classes at a time (see `dot_tile`).
            // Two call sites, so that each is compiled for its constant `long`.
            if hd < 128 {
                with_kv_row!(ty, scores_tiles::<_>(q, hd, pb, rows, out, false))
            } else {
                with_kv_row!(ty, scores_tiles::<_>(q, hd, pb, rows, out, true))
            }
        } else {
            with_kv_row!(ty, scores_with::<_, Ymm>(q, base.as_ptr(), rows, out))
        }
    }
}

/// `scores` for heads of a multiple of 32 elements, several dots at a time, each row
/// chunk loaded once for the heads of a tile and each query chunk once for its rows.
///
/// Bit-identical to `dot_lanes` per dot: its accumulator `j` takes chunks `c ≡ j (mod 4)`
/// in order, and the four meet as `(a0 + a1) + (a2 + a3)`. The chains are independent,
/// so they need not run side by side: `long` heads (128 elements or more) run one class
/// at a time over two heads by four rows (8 chains, 14 registers; `dot_class`), shorter
/// ones two classes at a time over one head by four rows (`dot_pair`). Rows whose
/// decoding costs more than one instruction per 8 values, and short heads' rows, are
/// decoded 8 at a time into f32 once for all heads (`decode_row`).
#[inline(always)]
unsafe fn scores_tiles<K: KvRow>(
    q: &[f32],
    hd: usize,
    pb: *const u8,
    rows: &[usize],
    out: &mut [f32],
    long: bool,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked;
    // the tile holds 8 rows of `hd` values.
    unsafe {
        let (np, g) = (rows.len(), q.len() / hd);
        let decode = !K::IN_PLACE && g > 1 && !(long && K::CHEAP);
        // tile: [8, hd] decoded rows, when decoding.
        let mut tile = if decode {
            vec![0f32; 8 * hd]
        } else {
            Vec::new()
        };
        let mut p = 0;
        while p < np {
            let n = (np - p).min(8);
            // The group's rows: element offsets in the tile, or in `pb`.
            let mut at = [0usize; 8];
            if decode {
                for (i, a) in at.iter_mut().enumerate().take(n) {
                    decode_row::<K>(pb, rows[p + i], hd, tile.as_mut_ptr().add(i * hd));
                    *a = i * hd;
                }
                let tb = tile.as_ptr() as *const u8;
                scores_group::<F32Row>(q, hd, np, tb, &at[..n], out.as_mut_ptr().add(p), long);
            } else {
                at[..n].copy_from_slice(&rows[p..p + n]);
                scores_group::<K>(q, hd, np, pb, &at[..n], out.as_mut_ptr().add(p), long);
            }
            p += n;
        }
    }
}

/// The scores of every head against up to 8 rows (`at`: element offsets in `pb`), written
/// at `o[h * np + i]`.
#[inline(always)]
unsafe fn scores_group<K: KvRow>(
    q: &[f32],
    hd: usize,
    np: usize,
    pb: *const u8,
    at: &[usize],
    o: *mut f32,
    long: bool,
) {
    // SAFETY: as `scores_tiles`, this fn's caller.
    unsafe {
        let (n, g) = (at.len(), q.len() / hd);
        // lanes[k][i]: dot of head h + k with row i before its reduction.
        let mut lanes = [[_mm256_setzero_ps(); 8]; 2];
        let mut h = 0;
        while h < g {
            let qa = q.as_ptr().add(h * hd);
            // Two heads by four rows where the chains are long enough to run a class at
            // a time; otherwise one head by four rows.
            let two = g - h >= 2 && long;
            if !long {
                let mut i = 0;
                while i + 4 <= n {
                    let ri = [at[i], at[i + 1], at[i + 2], at[i + 3]];
                    let [v] = dot_tile::<K, 1, 4>([qa], pb, ri, hd, long);
                    lanes[0][i..i + 4].copy_from_slice(&v);
                    i += 4;
                }
                for (i, l) in lanes[0].iter_mut().enumerate().take(n).skip(i) {
                    let [[v]] = dot_tile::<K, 1, 1>([qa], pb, [at[i]], hd, long);
                    *l = v;
                }
            } else if two && n >= 4 {
                let qb = qa.add(hd);
                let mut i = 0;
                while i + 4 <= n {
                    let ri = [at[i], at[i + 1], at[i + 2], at[i + 3]];
                    let [a, b] = dot_tile::<K, 2, 4>([qa, qb], pb, ri, hd, long);
                    lanes[0][i..i + 4].copy_from_slice(&a);
                    lanes[1][i..i + 4].copy_from_slice(&b);
                    i += 4;
                }
                for (k, lanes_k) in lanes.iter_mut().enumerate() {
                    for (i, l) in lanes_k.iter_mut().enumerate().take(n).skip(i) {
                        let [[v]] = dot_tile::<K, 1, 1>([qa.add(k * hd)], pb, [at[i]], hd, long);
                        *l = v;
                    }
                }
            } else {
                for k in 0..1 + two as usize {
                    let qh = qa.add(k * hd);
                    if n == 8 {
                        let r8 = at.try_into().unwrap_or([0; 8]);
                        let [v] = dot_tile::<K, 1, 8>([qh], pb, r8, hd, long);
                        lanes[k] = v;
                    } else {
                        for (i, l) in lanes[k].iter_mut().enumerate().take(n) {
                            let [[v]] = dot_tile::<K, 1, 1>([qh], pb, [at[i]], hd, long);
                            *l = v;
                        }
                    }
                }
            }
            for (k, lanes_k) in lanes.iter().enumerate().take(1 + two as usize) {
                let oh = o.add((h + k) * np);
                if n == 8 {
                    store_reduced8(lanes_k, oh);
                } else {
                    for (i, v) in lanes_k.iter().enumerate().take(n) {
                        *oh.add(i) = hsum(*v);
                    }
                }
            }
            h += 1 + two as usize;
        }
    }
}

/// The lanes of `H × P` dots of `hd` elements (a multiple of 32), heads `q` by rows at
/// element offsets `r` of `pb`, each bit-identical to `dot_lanes` (see `scores_tiles`):
/// one accumulator class at a time over the whole tile (`dot_class`), the classes then
/// added as `(a0 + a1) + (a2 + a3)`; heads under 128 elements, whose chains are too short
/// to pay for a pass per class, two classes at a time (`dot_pair`).
#[inline(always)]
unsafe fn dot_tile<K: KvRow, const H: usize, const P: usize>(
    q: [*const f32; H],
    pb: *const u8,
    r: [usize; P],
    hd: usize,
    long: bool,
) -> [[__m256; P]; H] {
    // SAFETY: as `scores_tiles`: every row and head has `hd` elements.
    unsafe {
        if !long {
            let (s01, s23) = (
                dot_pair::<K, H, P>(q, pb, r, hd, 0),
                dot_pair::<K, H, P>(q, pb, r, hd, 2),
            );
            let mut out = [[_mm256_setzero_ps(); P]; H];
            for h in 0..H {
                for p in 0..P {
                    out[h][p] = _mm256_add_ps(s01[h][p], s23[h][p]);
                }
            }
            return out;
        }
        let mut class = [[[_mm256_setzero_ps(); P]; H]; 4];
        for (j, cj) in class.iter_mut().enumerate() {
            *cj = dot_class::<K, H, P>(q, pb, r, hd, j);
        }
        let mut out = [[_mm256_setzero_ps(); P]; H];
        for h in 0..H {
            for p in 0..P {
                let s01 = _mm256_add_ps(class[0][h][p], class[1][h][p]);
                let s23 = _mm256_add_ps(class[2][h][p], class[3][h][p]);
                out[h][p] = _mm256_add_ps(s01, s23);
            }
        }
        out
    }
}

/// Accumulators `j..j + S` of each dot of `dot_tile`, side by side: the chain of
/// accumulator `j + s` over chunks `4k + j + s`, in order; `S × H × P` independent chains,
/// each row chunk loaded once for the `H` heads and each query chunk once for the `P` rows.
#[inline(always)]
unsafe fn dot_classes<K: KvRow, const H: usize, const P: usize, const S: usize>(
    q: [*const f32; H],
    pb: *const u8,
    r: [usize; P],
    hd: usize,
    j: usize,
) -> [[[__m256; P]; H]; S] {
    // SAFETY: as `dot_tile`, this fn's caller.
    unsafe {
        let mut a = [[[_mm256_setzero_ps(); P]; H]; S];
        let mut c = j;
        while c < hd / 8 {
            for (s, a_s) in a.iter_mut().enumerate() {
                let e = 8 * (c + s);
                let mut kv = [_mm256_setzero_ps(); P];
                for (x, &rx) in kv.iter_mut().zip(&r) {
                    *x = K::load8(pb, rx + e);
                }
                for (a_h, &qh) in a_s.iter_mut().zip(&q) {
                    let qv = _mm256_loadu_ps(qh.add(e));
                    for (acc, &x) in a_h.iter_mut().zip(&kv) {
                        *acc = _mm256_fmadd_ps(qv, x, *acc);
                    }
                }
            }
            c += 4;
        }
        a
    }
}

/// Accumulator `j` of each dot of `dot_tile` (`dot_classes`, one class).
#[inline(always)]
unsafe fn dot_class<K: KvRow, const H: usize, const P: usize>(
    q: [*const f32; H],
    pb: *const u8,
    r: [usize; P],
    hd: usize,
    j: usize,
) -> [[__m256; P]; H] {
    // SAFETY: as `dot_tile`, this fn's caller.
    unsafe { dot_classes::<K, H, P, 1>(q, pb, r, hd, j)[0] }
}

/// `a_j + a_{j+1}` of each dot of `dot_tile`: its accumulators `j` and `j + 1` side by
/// side (`dot_classes`), then their sum.
#[inline(always)]
unsafe fn dot_pair<K: KvRow, const H: usize, const P: usize>(
    q: [*const f32; H],
    pb: *const u8,
    r: [usize; P],
    hd: usize,
    j: usize,
) -> [[__m256; P]; H] {
    // SAFETY: as `dot_tile`, this fn's caller.
    unsafe {
        let a = dot_classes::<K, H, P, 2>(q, pb, r, hd, j);
        let mut sum = [[_mm256_setzero_ps(); P]; H];
        for h in 0..H {
            for p in 0..P {
                sum[h][p] = _mm256_add_ps(a[0][h][p], a[1][h][p]);
            }
        }
        sum
    }
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
