//! The K-quants' tiles of the AVX2 interleaved products (`interleaved`), the twins of
//! `avx512::interleaved_k` with 8 rows per register: a tile is one 16-row group (two
//! registers per token) times up to 4 tokens.
//!
//! Q4_K and Q5_K read their codes as Q4_1 and Q5_1 do, with float scales `d · float(sc)`
//! and `(-dmin) · float(m)` from the super-block's head (exact; `kernels::blocksum`).
//! Q6_K's, Q3_K's and Q2_K's blocks are two 16-element halves, each with its own
//! integer sum and float step (Q2_K: and minimum term); codes are decoded as there.

use std::arch::x86_64::*;
use std::marker::PhantomData;

use super::super::interleave::{
    code_bytes, prefetch_codes, Packed, HEAD_D, HEAD_DMIN, HEAD_M, HEAD_SC, HEAD_SC16,
};
use super::super::{Out, QuantActs};
use super::interleaved::{
    halves, store, store_octet, Broadcast, Codes, Octet, PairSink, Rotated, Tile, HROWS,
};

/// Q4_K (`C` = Q4) and Q5_K (`C` = Q5): blocks with a scale and a minimum each.
pub(super) struct KMin<C>(PhantomData<C>);

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
    unsafe fn tile<const T: usize, const NH: usize>(
        p: &Packed,
        g: usize,
        first: usize,
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
            let mut acc = [[_mm256_setzero_ps(); T]; NH];
            for s in 0..p.cols / 256 {
                let head = group.add(p.head_at(s));
                let d: [__m256; NH] =
                    std::array::from_fn(|h| f16s(head.add(HEAD_D + 16 * (first + h))));
                let neg_dmin: [__m256; NH] = std::array::from_fn(|h| {
                    _mm256_xor_ps(f16s(head.add(HEAD_DMIN + 16 * (first + h))), sign)
                });
                for j in 0..8 {
                    let b = 8 * s + j;
                    prefetch_codes(codes, b, cb);
                    let mut sums = [[_mm256_setzero_si256(); T]; NH];
                    C::pairs(
                        codes,
                        b,
                        first,
                        &mut Broadcast {
                            xq: &xq,
                            s: &mut sums,
                        },
                    );
                    for h in 0..NH {
                        let at = 16 * j + HROWS * (first + h);
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
            store(&acc, first, valid, out);
        }
    }

    const OCTETS: bool = true;

    #[inline(always)]
    unsafe fn octet_tile(
        p: &Packed,
        g: usize,
        first: usize,
        a: &QuantActs,
        u: usize,
        valid: usize,
        out: Out,
    ) {
        // SAFETY: as for `Tile::octet_tile`, whose contract is this one's
        unsafe {
            let group = p.bytes.as_ptr().add(g * p.group_bytes);
            let (codes, cb) = (group.add(p.codes_at()), code_bytes(p.fmt));
            let Octet { q8, d8, s8, .. } = Octet::of(a, u);
            let sign = _mm256_set1_ps(-0.0);
            let mut acc = [_mm256_setzero_ps(); 8];
            for s in 0..p.cols / 256 {
                let head = group.add(p.head_at(s));
                let d = f16s(head.add(HEAD_D + 16 * first));
                let neg_dmin = _mm256_xor_ps(f16s(head.add(HEAD_DMIN + 16 * first)), sign);
                for j in 0..8 {
                    let b = 8 * s + j;
                    prefetch_codes(codes, b, cb);
                    let mut sums = [_mm256_setzero_si256(); 8];
                    C::pairs(codes, b, first, &mut Rotated { q8, s: &mut sums });
                    // Lane i of `w[c]`, `m[c]`: row i ^ 4c's scale and minimum.
                    let at = 16 * j + HROWS * first;
                    let w = halves(_mm256_mul_ps(d, bytes_f32::<false>(head.add(HEAD_SC + at))));
                    let m = halves(_mm256_mul_ps(
                        neg_dmin,
                        bytes_f32::<false>(head.add(HEAD_M + at)),
                    ));
                    for rot in 0..4 {
                        let xd = _mm256_loadu_ps(d8.add(16 * b + rot));
                        let xs = _mm256_loadu_ps(s8.add(16 * b + rot));
                        for c in 0..2 {
                            let k = 4 * c + rot;
                            let pp = _mm256_mul_ps(w[c], xd);
                            acc[k] = _mm256_fmadd_ps(pp, _mm256_cvtepi32_ps(sums[k]), acc[k]);
                            acc[k] = _mm256_fmadd_ps(m[c], xs, acc[k]);
                        }
                    }
                }
            }
            store_octet(&acc, first, valid, out);
        }
    }
}

/// How a format of 16-element sub-blocks (Q6_K, Q3_K, Q2_K) reads a half-block's codes
/// (see `avx512::interleaved_k`).
pub(super) trait Half {
    /// Code bytes per block.
    const CB: usize;
    /// What the specification's codes are less than the stored ones.
    const OFFSET: i32;
    /// Whether the format has a minimum per half (Q2_K).
    const MIN: bool;
    /// Hands `sink` the codes of half `half` of block `b` (pairs `8 half..8 half + 8`)
    /// for register halves `first..first + NH` (rows `8 (first + h)..8 (first + h) + 8`).
    unsafe fn half<const NH: usize, S: PairSink<NH>>(
        codes: *const u8,
        b: usize,
        half: usize,
        first: usize,
        sink: &mut S,
    );
}

/// Q6_K: nibbles of the low 4 bits and crumbs of the high 2.
pub(super) struct Q6;
/// Q3_K: crumbs of the low 2 bits and a chunk of third bits.
pub(super) struct Q3;
/// Q2_K: crumbs.
pub(super) struct Q2;

/// Hands `sink` the codes `ck(pp)` of pairs `8 half + pp` (`pp < 8`) of block `b`.
#[inline(always)]
unsafe fn add_pairs<const NH: usize, S: PairSink<NH>>(
    b: usize,
    half: usize,
    sink: &mut S,
    mut ck: impl FnMut(usize) -> [__m256i; NH],
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
    // set of the table this fn belongs to, and the pointers lie within the buffers its
    // safe caller checked
    unsafe {
        for pp in 0..8 {
            sink.add(&ck(pp), 16 * b + 8 * half + pp);
        }
    }
}

/// Register halves `first..first + NH` of the 64 bytes at `p + at` (32 each).
#[inline(always)]
unsafe fn load_halves<const NH: usize>(p: *const u8, at: usize, first: usize) -> [__m256i; NH] {
    // SAFETY: the caller keeps `p + at..p + at + 64` within the group, 32-byte aligned
    unsafe {
        std::array::from_fn(|h| _mm256_load_si256(p.add(at + 32 * (first + h)) as *const __m256i))
    }
}

impl Half for Q6 {
    const CB: usize = 384;
    const OFFSET: i32 = 32;
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn half<const NH: usize, S: PairSink<NH>>(
        codes: *const u8,
        b: usize,
        half: usize,
        first: usize,
        sink: &mut S,
    ) {
        // SAFETY: as for `Half::half`
        unsafe {
            let (m4, m30) = (
                _mm256_set1_epi32(0x000f_000f),
                _mm256_set1_epi32(0x0030_0030),
            );
            let blk = codes.add(384 * b);
            let hw = load_halves::<NH>(blk, 256 + 64 * half, first);
            let (mut hs, mut v) = (hw, hw);
            add_pairs(b, half, sink, |pp| {
                // Pair p' = pp of the half: nibbles of chunk 2 half + pp / 4, high bits
                // from bits 2p' to 4.
                v = match pp % 4 {
                    0 => load_halves(blk, 64 * (2 * half + pp / 4), first),
                    _ => v.map(|v| _mm256_srli_epi32::<4>(v)),
                };
                hs = match pp {
                    0 => hw.map(|v| _mm256_slli_epi32::<4>(v)),
                    1 => hw.map(|v| _mm256_slli_epi32::<2>(v)),
                    2 => hw,
                    _ => hs.map(|v| _mm256_srli_epi32::<2>(v)),
                };
                std::array::from_fn(|h| {
                    _mm256_or_si256(_mm256_and_si256(v[h], m4), _mm256_and_si256(hs[h], m30))
                })
            })
        }
    }
}

impl Half for Q3 {
    const CB: usize = 192;
    const OFFSET: i32 = 4;
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn half<const NH: usize, S: PairSink<NH>>(
        codes: *const u8,
        b: usize,
        half: usize,
        first: usize,
        sink: &mut S,
    ) {
        // SAFETY: as for `Half::half`
        unsafe {
            let (m3, m4) = (
                _mm256_set1_epi32(0x0003_0003),
                _mm256_set1_epi32(0x0004_0004),
            );
            let blk = codes.add(192 * b);
            let (cw, tw) = (
                load_halves::<NH>(blk, 64 * half, first),
                load_halves::<NH>(blk, 128, first),
            );
            let (mut cs, mut ts) = (cw, tw);
            add_pairs(b, half, sink, |pp| {
                // Pair p = 8 half + pp: low bits from 2pp, third bits from p, to 0 and 2.
                if pp > 0 {
                    cs = cs.map(|v| _mm256_srli_epi32::<2>(v));
                }
                ts = match (half, pp) {
                    (0, 0) => tw.map(|v| _mm256_slli_epi32::<2>(v)),
                    (0, 1) => tw.map(|v| _mm256_slli_epi32::<1>(v)),
                    (0, 2) => tw,
                    (_, 0) => tw.map(|v| _mm256_srli_epi32::<6>(v)),
                    _ => ts.map(|v| _mm256_srli_epi32::<1>(v)),
                };
                std::array::from_fn(|h| {
                    _mm256_or_si256(_mm256_and_si256(cs[h], m3), _mm256_and_si256(ts[h], m4))
                })
            })
        }
    }
}

impl Half for Q2 {
    const CB: usize = 128;
    const OFFSET: i32 = 0;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn half<const NH: usize, S: PairSink<NH>>(
        codes: *const u8,
        b: usize,
        half: usize,
        first: usize,
        sink: &mut S,
    ) {
        // SAFETY: as for `Half::half`
        unsafe {
            let m3 = _mm256_set1_epi32(0x0003_0003);
            let mut cs = load_halves::<NH>(codes, 128 * b + 64 * half, first);
            add_pairs(b, half, sink, |pp| {
                if pp > 0 {
                    cs = cs.map(|v| _mm256_srli_epi32::<2>(v));
                }
                cs.map(|v| _mm256_and_si256(v, m3))
            })
        }
    }
}

/// The formats of 16-element sub-blocks: per half-block an integer sum (starting at
/// `-OFFSET Σ x` of the half) and a float step, and for Q2_K the half's minimum term.
pub(super) struct K16<H>(PhantomData<H>);

impl<H: Half> Tile for K16<H> {
    #[inline(always)]
    unsafe fn tile<const T: usize, const NH: usize>(
        p: &Packed,
        g: usize,
        first: usize,
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
            let xs16: [*const f32; T] =
                std::array::from_fn(|i| a.s16.as_ptr().add((t0 + i) * 2 * nbp));
            let (sign, m15) = (_mm256_set1_ps(-0.0), _mm256_set1_epi32(15));
            let mut acc = [[_mm256_setzero_ps(); T]; NH];
            for s in 0..p.cols / 256 {
                let head = group.add(p.head_at(s));
                let d: [__m256; NH] =
                    std::array::from_fn(|h| f16s(head.add(HEAD_D + 16 * (first + h))));
                let neg_dmin: [__m256; NH] = std::array::from_fn(|h| {
                    if H::MIN {
                        _mm256_xor_ps(f16s(head.add(HEAD_DMIN + 16 * (first + h))), sign)
                    } else {
                        _mm256_setzero_ps()
                    }
                });
                for j in 0..8 {
                    let b = 8 * s + j;
                    prefetch_codes(codes, b, H::CB);
                    for half in 0..2 {
                        let k = 2 * j + half;
                        // Σ (q - o) x = Σ q x - o Σ x, exact: the sums start at -o Σ x.
                        let o: [__m256i; T] = std::array::from_fn(|t| {
                            _mm256_set1_epi32(-H::OFFSET * *xsum[t].add(2 * b + half))
                        });
                        let mut sums = [o; NH];
                        H::half(
                            codes,
                            b,
                            half,
                            first,
                            &mut Broadcast {
                                xq: &xq,
                                s: &mut sums,
                            },
                        );
                        for h in 0..NH {
                            let (sc, m) = if H::MIN {
                                // Q2_K: scale and minimum nibbles of one byte per row.
                                let v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
                                    head.add(HEAD_SC + 16 * k + HROWS * (first + h))
                                        as *const __m128i,
                                ));
                                let sc = _mm256_cvtepi32_ps(_mm256_and_si256(v, m15));
                                let m = _mm256_cvtepi32_ps(_mm256_srli_epi32::<4>(v));
                                (sc, _mm256_mul_ps(neg_dmin[h], m))
                            } else {
                                let at = HEAD_SC16 + 16 * k + HROWS * (first + h);
                                (bytes_f32::<true>(head.add(at)), _mm256_setzero_ps())
                            };
                            let w = _mm256_mul_ps(d[h], sc);
                            for t in 0..T {
                                let pp = _mm256_mul_ps(w, _mm256_set1_ps(*xd[t].add(b)));
                                acc[h][t] =
                                    _mm256_fmadd_ps(pp, _mm256_cvtepi32_ps(sums[h][t]), acc[h][t]);
                                if H::MIN {
                                    let sx = _mm256_set1_ps(*xs16[t].add(2 * b + half));
                                    acc[h][t] = _mm256_fmadd_ps(m, sx, acc[h][t]);
                                }
                            }
                        }
                    }
                }
            }
            store(&acc, first, valid, out);
        }
    }

    const OCTETS: bool = true;

    #[inline(always)]
    unsafe fn octet_tile(
        p: &Packed,
        g: usize,
        first: usize,
        a: &QuantActs,
        u: usize,
        valid: usize,
        out: Out,
    ) {
        // SAFETY: as for `Tile::octet_tile`, whose contract is this one's
        unsafe {
            let group = p.bytes.as_ptr().add(g * p.group_bytes);
            let codes = group.add(p.codes_at());
            let Octet {
                q8,
                d8,
                s16,
                xsum16: x16,
                ..
            } = Octet::of(a, u);
            let (sign, m15) = (_mm256_set1_ps(-0.0), _mm256_set1_epi32(15));
            let neg_o = _mm256_set1_epi32(-H::OFFSET);
            let mut acc = [_mm256_setzero_ps(); 8];
            for s in 0..p.cols / 256 {
                let head = group.add(p.head_at(s));
                let d = f16s(head.add(HEAD_D + 16 * first));
                let neg_dmin = if H::MIN {
                    _mm256_xor_ps(f16s(head.add(HEAD_DMIN + 16 * first)), sign)
                } else {
                    _mm256_setzero_ps()
                };
                for j in 0..8 {
                    let b = 8 * s + j;
                    prefetch_codes(codes, b, H::CB);
                    for half in 0..2 {
                        let (k, hb) = (2 * j + half, 2 * b + half);
                        // Σ (q - o) x = Σ q x - o Σ x, exact: the sums start at -o Σ x.
                        let mut sums = [_mm256_setzero_si256(); 8];
                        for rot in 0..4 {
                            let x = _mm256_loadu_si256(x16.add(16 * hb + rot) as *const __m256i);
                            let o = _mm256_mullo_epi32(x, neg_o);
                            (sums[rot], sums[4 + rot]) = (o, o);
                        }
                        H::half(codes, b, half, first, &mut Rotated { q8, s: &mut sums });
                        let (sc, m) = if H::MIN {
                            // Q2_K: scale and minimum nibbles of one byte per row.
                            let v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
                                head.add(HEAD_SC + 16 * k + HROWS * first) as *const __m128i,
                            ));
                            let sc = _mm256_cvtepi32_ps(_mm256_and_si256(v, m15));
                            let m = _mm256_cvtepi32_ps(_mm256_srli_epi32::<4>(v));
                            (sc, _mm256_mul_ps(neg_dmin, m))
                        } else {
                            let at = HEAD_SC16 + 16 * k + HROWS * first;
                            (bytes_f32::<true>(head.add(at)), _mm256_setzero_ps())
                        };
                        // Lane i of `w[c]`, `m[c]`: row i ^ 4c's.
                        let (w, m) = (halves(_mm256_mul_ps(d, sc)), halves(m));
                        for rot in 0..4 {
                            let xd = _mm256_loadu_ps(d8.add(16 * b + rot));
                            for c in 0..2 {
                                let kk = 4 * c + rot;
                                let pp = _mm256_mul_ps(w[c], xd);
                                acc[kk] =
                                    _mm256_fmadd_ps(pp, _mm256_cvtepi32_ps(sums[kk]), acc[kk]);
                                if H::MIN {
                                    let sx = _mm256_loadu_ps(s16.add(16 * hb + rot));
                                    acc[kk] = _mm256_fmadd_ps(m[c], sx, acc[kk]);
                                }
                            }
                        }
                    }
                }
            }
            store_octet(&acc, first, valid, out);
        }
    }
}
