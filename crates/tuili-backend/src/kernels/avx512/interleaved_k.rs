//! The K-quants' tiles of the interleaved products (`interleaved`; layout in
//! `kernels::interleave::kquants`): 16 rows per register, one lane per row.
//!
//! Q4_K and Q5_K read their codes as Q4_1 and Q5_1 do; each 32-element block's float
//! scales come from the super-block's head: `d · float(sc)` and `(-dmin) · float(m)`,
//! one exact multiply each (see `kernels::blocksum`), shared by the tile's tokens.
//! Q6_K's, Q3_K's and Q2_K's blocks are two 16-element halves, each with its own
//! integer sum (less the code offset times the half's activation sum) and float step
//! (Q2_K: and minimum term). A Q6_K code is a nibble and two high bits, `(v &
//! 0x000f000f) | (h & 0x00300030)`, where `h` is the half's word of high bits shifted
//! into place; a Q3_K code two low bits and a third, `(c & 0x00030003) | (t &
//! 0x00040004)`; a Q2_K code `c & 0x00030003`.

use std::arch::x86_64::*;
use std::marker::PhantomData;

use super::super::interleave::{
    code_bytes, prefetch_codes, Packed, HEAD_D, HEAD_DMIN, HEAD_M, HEAD_SC, HEAD_SC16,
};
use super::super::{Out, QuantActs};
use super::dot32;
use super::interleaved::{store, Codes, Tile};

/// Q4_K (`C` = Q4) and Q5_K (`C` = Q5): blocks with a scale and a minimum each.
pub(super) struct KMin<C>(PhantomData<C>);

/// Prefetches the code lines `PREFETCH_BYTES` ahead of block `b` of every group, into L2.
#[inline(always)]
unsafe fn prefetch<const G: usize>(codes: &[*const u8; G], b: usize, cb: usize) {
    for &c in codes {
        // SAFETY: prefetching an address (even past the buffer) reads nothing; the CPU
        // has the instruction set of this table
        unsafe { prefetch_codes(c, b, cb) };
    }
}

/// 16 bytes at `p` (one per row) as f32: unsigned, or signed when `SIGNED`.
#[inline(always)]
unsafe fn bytes_f32<const SIGNED: bool>(p: *const u8) -> __m512 {
    // SAFETY: the caller keeps `p..p + 16` within the group; the CPU has the instruction
    // set of this table
    unsafe {
        let v = _mm_loadu_si128(p as *const __m128i);
        _mm512_cvtepi32_ps(if SIGNED {
            _mm512_cvtepi8_epi32(v)
        } else {
            _mm512_cvtepu8_epi32(v)
        })
    }
}

/// 16 f16 at `p` (one per row) as f32.
#[inline(always)]
unsafe fn f16s(p: *const u8) -> __m512 {
    // SAFETY: the caller keeps `p..p + 32` within the group; the CPU has the
    // instruction set of this table
    unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
}

impl<C: Codes> Tile for KMin<C> {
    #[inline(always)]
    unsafe fn tile<const G: usize, const T: usize>(
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
            let base: [*const u8; G] =
                std::array::from_fn(|i| p.bytes.as_ptr().add((g + i) * p.group_bytes));
            let codes = base.map(|b| b.add(p.codes_at()));
            let cb = code_bytes(p.fmt);
            let xq: [*const i32; T] = std::array::from_fn(|i| a.q(t0 + i).as_ptr() as *const i32);
            let xd: [*const f32; T] = std::array::from_fn(|i| a.d.as_ptr().add((t0 + i) * nbp));
            let xs: [*const f32; T] = std::array::from_fn(|i| a.s.as_ptr().add((t0 + i) * nbp));
            let sign = _mm512_set1_ps(-0.0);
            let mut acc = [[_mm512_setzero_ps(); T]; G];
            for s in 0..p.cols / 256 {
                let head = base.map(|b| b.add(p.head_at(s)));
                let d = head.map(|h| f16s(h.add(HEAD_D)));
                let neg_dmin = head.map(|h| _mm512_xor_ps(f16s(h.add(HEAD_DMIN)), sign));
                for j in 0..8 {
                    let b = 8 * s + j;
                    prefetch(&codes, b, cb);
                    let mut sums = [[_mm512_setzero_si512(); T]; G];
                    C::pairs::<G, T>(&codes, b, &xq, &mut sums);
                    for i in 0..G {
                        let w =
                            _mm512_mul_ps(d[i], bytes_f32::<false>(head[i].add(HEAD_SC + 16 * j)));
                        for t in 0..T {
                            let pp = _mm512_mul_ps(w, _mm512_set1_ps(*xd[t].add(b)));
                            acc[i][t] =
                                _mm512_fmadd_ps(pp, _mm512_cvtepi32_ps(sums[i][t]), acc[i][t]);
                        }
                        let m = _mm512_mul_ps(
                            neg_dmin[i],
                            bytes_f32::<false>(head[i].add(HEAD_M + 16 * j)),
                        );
                        for t in 0..T {
                            acc[i][t] =
                                _mm512_fmadd_ps(m, _mm512_set1_ps(*xs[t].add(b)), acc[i][t]);
                        }
                    }
                }
            }
            store(&acc, valid, out);
        }
    }
}

/// How a format of 16-element sub-blocks (Q6_K, Q3_K, Q2_K) reads a half-block's codes.
pub(super) trait Half {
    /// Code bytes per block.
    const CB: usize;
    /// What the specification's codes are less than the stored ones.
    const OFFSET: i32;
    /// Whether the format has a minimum per half (Q2_K: its scales are then the low
    /// nibbles of the head's bytes, the minimums the high ones).
    const MIN: bool;
    /// Adds half `h` of block `b` (pairs `8h..8h + 8`) into `s[g][t]`.
    unsafe fn half<const G: usize, const T: usize>(
        codes: &[*const u8; G],
        b: usize,
        h: usize,
        xq: &[*const i32; T],
        s: &mut [[__m512i; T]; G],
    );
}

/// Q6_K: nibbles of the low 4 bits and crumbs of the high 2.
pub(super) struct Q6;
/// Q3_K: crumbs of the low 2 bits and a chunk of third bits.
pub(super) struct Q3;
/// Q2_K: crumbs.
pub(super) struct Q2;

/// Adds the products of codes `ck(pp)` of pairs `8h + pp` (`pp < 8`) of block `b`.
#[inline(always)]
unsafe fn add_pairs<const G: usize, const T: usize>(
    b: usize,
    h: usize,
    xq: &[*const i32; T],
    s: &mut [[__m512i; T]; G],
    mut ck: impl FnMut(usize) -> [__m512i; G],
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
    // set of the table this fn belongs to, and the pointers lie within the buffers its
    // safe caller checked
    unsafe {
        for pp in 0..8 {
            let c = ck(pp);
            for t in 0..T {
                let x = _mm512_set1_epi32(*xq[t].add(16 * b + 8 * h + pp));
                for g in 0..G {
                    s[g][t] = dot32(s[g][t], c[g], x);
                }
            }
        }
    }
}

impl Half for Q6 {
    const CB: usize = 384;
    const OFFSET: i32 = 32;
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn half<const G: usize, const T: usize>(
        codes: &[*const u8; G],
        b: usize,
        h: usize,
        xq: &[*const i32; T],
        s: &mut [[__m512i; T]; G],
    ) {
        // SAFETY: as for `Half::half`
        unsafe {
            let (m4, m30) = (
                _mm512_set1_epi32(0x000f_000f),
                _mm512_set1_epi32(0x0030_0030),
            );
            let blk = codes.map(|c| c.add(384 * b));
            let load = |at: usize| -> [__m512i; G] {
                std::array::from_fn(|g| _mm512_load_si512(blk[g].add(at) as *const __m512i))
            };
            let hw = load(256 + 64 * h);
            let (mut hs, mut v) = (hw, hw);
            add_pairs(b, h, xq, s, |pp| {
                // Pair p' = pp of the half: its nibbles as Q4's (chunk 2h + pp / 4), its
                // high bits at bits 2p' (and 16 + 2p'), brought to bits 4 and 20.
                v = match pp % 4 {
                    0 => load(64 * (2 * h + pp / 4)),
                    _ => v.map(|v| _mm512_srli_epi32::<4>(v)),
                };
                hs = match pp {
                    0 => hw.map(|v| _mm512_slli_epi32::<4>(v)),
                    1 => hw.map(|v| _mm512_slli_epi32::<2>(v)),
                    2 => hw,
                    _ => hs.map(|v| _mm512_srli_epi32::<2>(v)),
                };
                std::array::from_fn(|g| {
                    _mm512_or_si512(_mm512_and_si512(v[g], m4), _mm512_and_si512(hs[g], m30))
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
    unsafe fn half<const G: usize, const T: usize>(
        codes: &[*const u8; G],
        b: usize,
        h: usize,
        xq: &[*const i32; T],
        s: &mut [[__m512i; T]; G],
    ) {
        // SAFETY: as for `Half::half`
        unsafe {
            let (m3, m4) = (
                _mm512_set1_epi32(0x0003_0003),
                _mm512_set1_epi32(0x0004_0004),
            );
            let blk = codes.map(|c| c.add(192 * b));
            let load = |at: usize| -> [__m512i; G] {
                std::array::from_fn(|g| _mm512_load_si512(blk[g].add(at) as *const __m512i))
            };
            let (cw, tw) = (load(64 * h), load(128));
            let (mut cs, mut ts) = (cw, tw);
            add_pairs(b, h, xq, s, |pp| {
                // Pair p = 8h + pp: its low bits at 2pp (crumbs of chunk h), its third bits
                // at p and 16 + p (chunk 2), brought to bits 2 and 18.
                if pp > 0 {
                    cs = cs.map(|v| _mm512_srli_epi32::<2>(v));
                }
                ts = match (h, pp) {
                    (0, 0) => tw.map(|v| _mm512_slli_epi32::<2>(v)),
                    (0, 1) => tw.map(|v| _mm512_slli_epi32::<1>(v)),
                    (0, 2) => tw,
                    (_, 0) => tw.map(|v| _mm512_srli_epi32::<6>(v)),
                    _ => ts.map(|v| _mm512_srli_epi32::<1>(v)),
                };
                std::array::from_fn(|g| {
                    _mm512_or_si512(_mm512_and_si512(cs[g], m3), _mm512_and_si512(ts[g], m4))
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
    unsafe fn half<const G: usize, const T: usize>(
        codes: &[*const u8; G],
        b: usize,
        h: usize,
        xq: &[*const i32; T],
        s: &mut [[__m512i; T]; G],
    ) {
        // SAFETY: as for `Half::half`
        unsafe {
            let m3 = _mm512_set1_epi32(0x0003_0003);
            let mut cs: [__m512i; G] = std::array::from_fn(|g| {
                _mm512_load_si512(codes[g].add(128 * b + 64 * h) as *const __m512i)
            });
            add_pairs(b, h, xq, s, |pp| {
                if pp > 0 {
                    cs = cs.map(|v| _mm512_srli_epi32::<2>(v));
                }
                cs.map(|v| _mm512_and_si512(v, m3))
            })
        }
    }
}

/// The formats of 16-element sub-blocks: per half-block an integer sum (starting at
/// `-OFFSET Σ x` of the half) and a float step, and for Q2_K the half's minimum term.
pub(super) struct K16<H>(PhantomData<H>);

impl<H: Half> Tile for K16<H> {
    #[inline(always)]
    unsafe fn tile<const G: usize, const T: usize>(
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
            let base: [*const u8; G] =
                std::array::from_fn(|i| p.bytes.as_ptr().add((g + i) * p.group_bytes));
            let codes = base.map(|b| b.add(p.codes_at()));
            let xq: [*const i32; T] = std::array::from_fn(|i| a.q(t0 + i).as_ptr() as *const i32);
            let xd: [*const f32; T] = std::array::from_fn(|i| a.d.as_ptr().add((t0 + i) * nbp));
            let xsum: [*const i32; T] =
                std::array::from_fn(|i| a.xsum16.as_ptr().add((t0 + i) * 2 * nbp));
            let xs16: [*const f32; T] =
                std::array::from_fn(|i| a.s16.as_ptr().add((t0 + i) * 2 * nbp));
            let (sign, m15) = (_mm512_set1_ps(-0.0), _mm512_set1_epi32(15));
            let mut acc = [[_mm512_setzero_ps(); T]; G];
            for s in 0..p.cols / 256 {
                let head = base.map(|b| b.add(p.head_at(s)));
                let d = head.map(|h| f16s(h.add(HEAD_D)));
                let neg_dmin = head.map(|h| {
                    if H::MIN {
                        _mm512_xor_ps(f16s(h.add(HEAD_DMIN)), sign)
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                for j in 0..8 {
                    let b = 8 * s + j;
                    prefetch(&codes, b, H::CB);
                    for h in 0..2 {
                        let k = 2 * j + h;
                        // Σ (q - o) x = Σ q x - o Σ x, exact: the sums start at -o Σ x.
                        let o: [__m512i; T] = std::array::from_fn(|t| {
                            _mm512_set1_epi32(-H::OFFSET * *xsum[t].add(2 * b + h))
                        });
                        let mut sums = [o; G];
                        H::half::<G, T>(&codes, b, h, &xq, &mut sums);
                        for i in 0..G {
                            let (sc, m) = if H::MIN {
                                // Q2_K: scale and minimum nibbles of one byte per row.
                                let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(
                                    head[i].add(HEAD_SC + 16 * k) as *const __m128i,
                                ));
                                let sc = _mm512_cvtepi32_ps(_mm512_and_si512(v, m15));
                                let m = _mm512_cvtepi32_ps(_mm512_srli_epi32::<4>(v));
                                (sc, _mm512_mul_ps(neg_dmin[i], m))
                            } else {
                                let sc = bytes_f32::<true>(head[i].add(HEAD_SC16 + 16 * k));
                                (sc, _mm512_setzero_ps())
                            };
                            let w = _mm512_mul_ps(d[i], sc);
                            for t in 0..T {
                                let pp = _mm512_mul_ps(w, _mm512_set1_ps(*xd[t].add(b)));
                                acc[i][t] =
                                    _mm512_fmadd_ps(pp, _mm512_cvtepi32_ps(sums[i][t]), acc[i][t]);
                                if H::MIN {
                                    let sx = _mm512_set1_ps(*xs16[t].add(2 * b + h));
                                    acc[i][t] = _mm512_fmadd_ps(m, sx, acc[i][t]);
                                }
                            }
                        }
                    }
                }
            }
            store(&acc, valid, out);
        }
    }
}
