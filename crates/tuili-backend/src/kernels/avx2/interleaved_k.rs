//! The K-quants' tiles of the AVX2 interleaved products (`interleaved`), the twins of
//! `avx512::interleaved_k` with 8 rows per register: a tile is one 16-row group (two
//! registers per token) times up to 4 tokens.
//!
//! Q4_K and Q5_K read their codes as Q4_1 and Q5_1 do, with float scales `d · float(sc)`
//! and `(-dmin) · float(m)` from the super-block's head (exact; `kernels::blocksum`).
//! Q6_K's blocks are two 16-element halves, each with its own integer sum and float
//! step; a code is `(v & 0x000f000f) | (h & 0x00300030)`, `h` the half's high bits
//! shifted into place.

use std::arch::x86_64::*;
use std::marker::PhantomData;

use super::super::interleave::{
    code_bytes, Packed, HEAD_D, HEAD_DMIN, HEAD_M, HEAD_SC, HEAD_SC6, PREFETCH_BYTES,
};
use super::super::{Out, QuantActs};
use super::interleaved::{store, Codes, Tile, HROWS};

/// Q4_K (`C` = Q4) and Q5_K (`C` = Q5): blocks with a scale and a minimum each.
pub(super) struct KMin<C>(PhantomData<C>);
/// Q6_K.
pub(super) struct K6;

/// Prefetches the code lines `PREFETCH_BYTES` ahead of block `b`.
#[inline(always)]
unsafe fn prefetch(codes: *const u8, b: usize, cb: usize) {
    // SAFETY: prefetching an address (even past the buffer) reads nothing; the CPU has
    // the instruction set of this table
    unsafe {
        let ahead = codes.wrapping_add(cb * b + PREFETCH_BYTES);
        for line in 0..cb / 64 {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line) as *const i8);
        }
    }
}

/// 8 bytes at `p` (one per row) as f32: unsigned, or signed when `SIGNED`.
#[inline(always)]
unsafe fn bytes_f32<const SIGNED: bool>(p: *const u8) -> __m256 {
    // SAFETY: the caller keeps `p..p + 8` within the group; the CPU has the instruction
    // set of this table
    unsafe {
        let v = _mm_loadl_epi64(p as *const __m128i);
        _mm256_cvtepi32_ps(if SIGNED {
            _mm256_cvtepi8_epi32(v)
        } else {
            _mm256_cvtepu8_epi32(v)
        })
    }
}

/// 8 f16 at `p` (one per row) as f32.
#[inline(always)]
unsafe fn f16s(p: *const u8) -> __m256 {
    // SAFETY: the caller keeps `p..p + 16` within the group; the CPU has the
    // instruction set of this table
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
}

impl<C: Codes> Tile for KMin<C> {
    #[inline(always)]
    unsafe fn tile<const T: usize>(
        p: &Packed,
        g: usize,
        a: &QuantActs,
        t0: usize,
        valid: usize,
        out: Out,
    ) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the
        // instruction set of the table this fn belongs to (tables are built only after
        // detection), and the pointers and lengths it is given lie within the buffers
        // its safe caller checked
        unsafe {
            let nbp = a.nbp();
            let group = p.bytes.as_ptr().add(g * p.group_bytes);
            let (codes, cb) = (group.add(p.codes_at()), code_bytes(p.fmt));
            let xq: [*const i32; T] = std::array::from_fn(|i| a.q(t0 + i).as_ptr() as *const i32);
            let xd: [*const f32; T] = std::array::from_fn(|i| a.d.as_ptr().add((t0 + i) * nbp));
            let xs: [*const f32; T] = std::array::from_fn(|i| a.s.as_ptr().add((t0 + i) * nbp));
            let sign = _mm256_set1_ps(-0.0);
            let mut acc = [[_mm256_setzero_ps(); T]; 2];
            for s in 0..p.cols / 256 {
                let head = group.add(p.head_at(s));
                let d: [__m256; 2] = std::array::from_fn(|h| f16s(head.add(HEAD_D + 16 * h)));
                let neg_dmin: [__m256; 2] = std::array::from_fn(|h| {
                    _mm256_xor_ps(f16s(head.add(HEAD_DMIN + 16 * h)), sign)
                });
                for j in 0..8 {
                    let b = 8 * s + j;
                    prefetch(codes, b, cb);
                    let mut sums = [[_mm256_setzero_si256(); T]; 2];
                    C::pairs::<T>(codes, b, &xq, &mut sums);
                    for h in 0..2 {
                        let at = 16 * j + HROWS * h;
                        let w = _mm256_mul_ps(d[h], bytes_f32::<false>(head.add(HEAD_SC + at)));
                        for t in 0..T {
                            let pp = _mm256_mul_ps(w, _mm256_set1_ps(*xd[t].add(b)));
                            acc[h][t] =
                                _mm256_fmadd_ps(pp, _mm256_cvtepi32_ps(sums[h][t]), acc[h][t]);
                        }
                        let m =
                            _mm256_mul_ps(neg_dmin[h], bytes_f32::<false>(head.add(HEAD_M + at)));
                        for t in 0..T {
                            acc[h][t] =
                                _mm256_fmadd_ps(m, _mm256_set1_ps(*xs[t].add(b)), acc[h][t]);
                        }
                    }
                }
            }
            store(&acc, valid, out);
        }
    }
}

/// Adds half `half` of block `b` (pairs `8 half..8 half + 8`) of Q6_K codes into
/// `s[h][t]` (register half `h`: rows `8h..8h + 8`).
#[inline(always)]
unsafe fn q6_half<const T: usize>(
    codes: *const u8,
    b: usize,
    half: usize,
    xq: &[*const i32; T],
    s: &mut [[__m256i; T]; 2],
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
    // set of the table this fn belongs to, and the pointers lie within the buffers its
    // safe caller checked
    unsafe {
        let (m4, m30) = (
            _mm256_set1_epi32(0x000f_000f),
            _mm256_set1_epi32(0x0030_0030),
        );
        let blk = codes.add(384 * b);
        let hw: [__m256i; 2] = std::array::from_fn(|h| {
            _mm256_load_si256(blk.add(256 + 64 * half + 32 * h) as *const __m256i)
        });
        let mut hs = hw;
        for cc in 0..2 {
            let mut v: [__m256i; 2] = std::array::from_fn(|h| {
                _mm256_load_si256(blk.add(64 * (2 * half + cc) + 32 * h) as *const __m256i)
            });
            for jj in 0..4 {
                // Pair p' = 4 cc + jj of the half: high bits from bits 2p' to 4.
                let pp = 4 * cc + jj;
                hs = match pp {
                    0 => hw.map(|v| _mm256_slli_epi32::<4>(v)),
                    1 => hw.map(|v| _mm256_slli_epi32::<2>(v)),
                    2 => hw,
                    _ => hs.map(|v| _mm256_srli_epi32::<2>(v)),
                };
                let ck: [__m256i; 2] = std::array::from_fn(|h| {
                    _mm256_or_si256(_mm256_and_si256(v[h], m4), _mm256_and_si256(hs[h], m30))
                });
                for t in 0..T {
                    let x = _mm256_set1_epi32(*xq[t].add(16 * b + 8 * half + pp));
                    for h in 0..2 {
                        s[h][t] = _mm256_add_epi32(s[h][t], _mm256_madd_epi16(ck[h], x));
                    }
                }
                if jj < 3 {
                    v = v.map(|v| _mm256_srli_epi32::<4>(v));
                }
            }
        }
    }
}

impl Tile for K6 {
    #[inline(always)]
    unsafe fn tile<const T: usize>(
        p: &Packed,
        g: usize,
        a: &QuantActs,
        t0: usize,
        valid: usize,
        out: Out,
    ) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the
        // instruction set of the table this fn belongs to (tables are built only after
        // detection), and the pointers and lengths it is given lie within the buffers
        // its safe caller checked
        unsafe {
            let nbp = a.nbp();
            let group = p.bytes.as_ptr().add(g * p.group_bytes);
            let codes = group.add(p.codes_at());
            let xq: [*const i32; T] = std::array::from_fn(|i| a.q(t0 + i).as_ptr() as *const i32);
            let xd: [*const f32; T] = std::array::from_fn(|i| a.d.as_ptr().add((t0 + i) * nbp));
            let xsum: [*const i32; T] =
                std::array::from_fn(|i| a.xsum16.as_ptr().add((t0 + i) * 2 * nbp));
            let mut acc = [[_mm256_setzero_ps(); T]; 2];
            for s in 0..p.cols / 256 {
                let head = group.add(p.head_at(s));
                let d: [__m256; 2] = std::array::from_fn(|h| f16s(head.add(HEAD_D + 16 * h)));
                for j in 0..8 {
                    let b = 8 * s + j;
                    prefetch(codes, b, 384);
                    for half in 0..2 {
                        // Σ (q - 32) x = Σ q x - 32 Σ x, exact: the sums start at -32 Σ x.
                        let o: [__m256i; T] = std::array::from_fn(|t| {
                            _mm256_set1_epi32(-32 * *xsum[t].add(2 * b + half))
                        });
                        let mut sums = [o; 2];
                        q6_half::<T>(codes, b, half, &xq, &mut sums);
                        for h in 0..2 {
                            let at = HEAD_SC6 + 16 * (2 * j + half) + HROWS * h;
                            let w = _mm256_mul_ps(d[h], bytes_f32::<true>(head.add(at)));
                            for t in 0..T {
                                let pp = _mm256_mul_ps(w, _mm256_set1_ps(*xd[t].add(b)));
                                acc[h][t] =
                                    _mm256_fmadd_ps(pp, _mm256_cvtepi32_ps(sums[h][t]), acc[h][t]);
                            }
                        }
                    }
                }
            }
            store(&acc, valid, out);
        }
    }
}
