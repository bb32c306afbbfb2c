//! The K-quants' tiles of the NEON interleaved products (`interleaved`), the twins of
//! `avx512::interleaved_k`: a tile is one 16-row group (four `int32x4_t` of rows per
//! token) times up to 4 tokens.
//!
//! Q4_K and Q5_K read their codes as Q4_1 and Q5_1 do, with float scales `d · float(sc)`
//! and `(-dmin) · float(m)` from the super-block's head (exact; `kernels::blocksum`).
//! Q6_K's, Q3_K's and Q2_K's blocks are two 16-element halves, each with its own
//! integer sum and float step (Q2_K: and minimum term); `vld4q` splits a chunk of
//! crumbs or bits into its four bytes of all 16 rows, and a shift and a mask bring an
//! element's bits into place.

use std::arch::aarch64::*;
use std::marker::PhantomData;

use super::super::interleave::{
    code_bytes, prefetch_codes, Packed, HEAD_D, HEAD_DMIN, HEAD_M, HEAD_SC, HEAD_SC16,
};
use super::super::{Out, QuantActs, QB};
use super::interleaved::{f16x4_at, mac, store, Codes, Sums, Tile};

/// Q4_K (`C` = Q4) and Q5_K (`C` = Q5): blocks with a scale and a minimum each.
pub(super) struct KMin<C>(PhantomData<C>);

/// 16 bytes (one per row) as f32, rows `4q..4q + 4` in `[q]`: unsigned, or signed when
/// `SIGNED`.
#[inline(always)]
unsafe fn bytes_f32<const SIGNED: bool>(v: &uint8x16_t) -> [float32x4_t; 4] {
    // SAFETY: NEON is part of every aarch64 CPU
    unsafe {
        let v = *v;
        if SIGNED {
            let v = vreinterpretq_s8_u8(v);
            let h = [vmovl_s8(vget_low_s8(v)), vmovl_high_s8(v)];
            std::array::from_fn(|q| {
                let w = h[q / 2];
                vcvtq_f32_s32(if q % 2 == 0 {
                    vmovl_s16(vget_low_s16(w))
                } else {
                    vmovl_high_s16(w)
                })
            })
        } else {
            let h = [vmovl_u8(vget_low_u8(v)), vmovl_high_u8(v)];
            std::array::from_fn(|q| {
                let w = h[q / 2];
                vcvtq_f32_u32(if q % 2 == 0 {
                    vmovl_u16(vget_low_u16(w))
                } else {
                    vmovl_high_u16(w)
                })
            })
        }
    }
}

/// The 16 rows' f16 at `p` as f32, rows `4q..4q + 4` in `[q]`.
#[inline(always)]
unsafe fn f16s(p: *const u8) -> [float32x4_t; 4] {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps `p..p + 32` within the
    // group
    unsafe { std::array::from_fn(|q| f16x4_at(p.add(8 * q))) }
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
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            let nbp = a.nbp();
            let base = p.bytes.as_ptr().add(g * p.group_bytes);
            let (codes, cb) = (base.add(p.codes_at()), code_bytes(p.fmt));
            let xq: [*const i16; T] = std::array::from_fn(|i| a.q(t0 + i).as_ptr());
            let xd: [*const f32; T] = std::array::from_fn(|i| a.d.as_ptr().add((t0 + i) * nbp));
            let xs: [*const f32; T] = std::array::from_fn(|i| a.s.as_ptr().add((t0 + i) * nbp));
            let mut acc = [[vdupq_n_f32(0.0); 4]; T];
            for s in 0..p.cols / 256 {
                let head = base.add(p.head_at(s));
                let d = f16s(head.add(HEAD_D));
                let neg_dmin = f16s(head.add(HEAD_DMIN)).map(|v| vnegq_f32(v));
                for j in 0..8 {
                    let b = 8 * s + j;
                    prefetch_codes(codes, b, cb);
                    let mut sums = [[vdupq_n_s32(0); 4]; T];
                    C::block::<T>(codes, b, &xq, &mut sums);
                    let sc = bytes_f32::<false>(&vld1q_u8(head.add(HEAD_SC + 16 * j)));
                    let m = bytes_f32::<false>(&vld1q_u8(head.add(HEAD_M + 16 * j)));
                    let w: [float32x4_t; 4] = std::array::from_fn(|q| vmulq_f32(d[q], sc[q]));
                    let mv: [float32x4_t; 4] =
                        std::array::from_fn(|q| vmulq_f32(neg_dmin[q], m[q]));
                    for t in 0..T {
                        let (dx, sx) = (*xd[t].add(b), *xs[t].add(b));
                        for q in 0..4 {
                            let pp = vmulq_n_f32(w[q], dx);
                            acc[t][q] = vfmaq_f32(acc[t][q], pp, vcvtq_f32_s32(sums[t][q]));
                            acc[t][q] = vfmaq_n_f32(acc[t][q], mv[q], sx);
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
    /// What the specification's codes are less than the stored ones.
    const OFFSET: i32;
    /// Whether the format has a minimum per half (Q2_K).
    const MIN: bool;
    /// Row `r`'s unsigned code of element `2 pp + odd` of half `half` of block `b`, for
    /// every row `r` (`u8` lane `r`).
    unsafe fn codes(codes: *const u8, b: usize, half: usize)
        -> impl Fn(usize, usize) -> uint8x16_t;
}

/// Q6_K: nibbles of the low 4 bits and crumbs of the high 2.
pub(super) struct Q6;
/// Q3_K: crumbs of the low 2 bits and a chunk of third bits.
pub(super) struct Q3;
/// Q2_K: crumbs.
pub(super) struct Q2;

/// The four bytes of every row's word of the chunk at `p`.
#[inline(always)]
unsafe fn bytes4(p: *const u8) -> [uint8x16_t; 4] {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps `p..p + 64` within the
    // group
    unsafe {
        let v = vld4q_u8(p);
        [v.0, v.1, v.2, v.3]
    }
}

/// `(v >> from) & mask << to` by one shift (left when `to > from`).
#[inline(always)]
pub(super) unsafe fn field(v: uint8x16_t, from: usize, to: usize, mask: u8) -> uint8x16_t {
    // SAFETY: NEON is part of every aarch64 CPU
    unsafe {
        let shifted = vshlq_u8(v, vdupq_n_s8(to as i8 - from as i8));
        vandq_u8(shifted, vdupq_n_u8(mask << to))
    }
}

impl Half for Q6 {
    const OFFSET: i32 = 32;
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn codes(
        codes: *const u8,
        b: usize,
        half: usize,
    ) -> impl Fn(usize, usize) -> uint8x16_t {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the block within
        // the group
        unsafe {
            let blk = codes.add(384 * b);
            let nib = [0, 1].map(|cc| bytes4(blk.add(64 * (2 * half + cc))));
            let hb = bytes4(blk.add(256 + 64 * half));
            // Pair p' = pp: its nibbles as Q4's (chunk 2 half + pp / 4, byte 2 odd +
            // (pp % 4) / 2), its high bits at bits 2p' (even) and 16 + 2p' (odd).
            move |pp: usize, odd: usize| {
                let by = nib[pp / 4][2 * odd + (pp % 4) / 2];
                let lo = field(by, 4 * (pp % 2), 0, 15);
                vorrq_u8(lo, field(hb[2 * odd + pp / 4], 2 * (pp % 4), 4, 3))
            }
        }
    }
}

impl Half for Q3 {
    const OFFSET: i32 = 4;
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn codes(
        codes: *const u8,
        b: usize,
        half: usize,
    ) -> impl Fn(usize, usize) -> uint8x16_t {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the block within
        // the group
        unsafe {
            let blk = codes.add(192 * b);
            let (cb, tb) = (bytes4(blk.add(64 * half)), bytes4(blk.add(128)));
            // Pair p = 8 half + pp: low bits at 2pp of the half's crumbs, third bit at p
            // (even) and 16 + p (odd) of the chunk of third bits.
            move |pp: usize, odd: usize| {
                let lo = field(cb[2 * odd + pp / 4], 2 * (pp % 4), 0, 3);
                vorrq_u8(lo, field(tb[2 * odd + half], pp, 2, 1))
            }
        }
    }
}

impl Half for Q2 {
    const OFFSET: i32 = 0;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn codes(
        codes: *const u8,
        b: usize,
        half: usize,
    ) -> impl Fn(usize, usize) -> uint8x16_t {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the block within
        // the group
        unsafe {
            let cb = bytes4(codes.add(128 * b + 64 * half));
            move |pp: usize, odd: usize| field(cb[2 * odd + pp / 4], 2 * (pp % 4), 0, 3)
        }
    }
}

/// How the integer sums of a format's half-blocks are taken: by `smlal` (`Mac`) or
/// `sdot` (`dot`).
pub(super) trait HalfSums {
    /// The format.
    type H: Half;
    /// Adds the products of half `half` of block `b` of the codes at `codes` with each
    /// token's (`xq[t]`: `[cols]`) into `s`.
    unsafe fn half<const T: usize>(
        codes: *const u8,
        b: usize,
        half: usize,
        xq: &[*const i16; T],
        s: &mut Sums<T>,
    );
}

/// The half-block sums of `H` by `smlal` (`mac`), an element of 16 rows at a time.
pub(super) struct Mac<H>(PhantomData<H>);

impl<H: Half> HalfSums for Mac<H> {
    type H = H;
    #[inline(always)]
    unsafe fn half<const T: usize>(
        codes: *const u8,
        b: usize,
        half: usize,
        xq: &[*const i16; T],
        s: &mut Sums<T>,
    ) {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            let code = H::codes(codes, b, half);
            for pp in 0..8 {
                for odd in 0..2 {
                    let q = code(pp, odd);
                    let w = [vmovl_u8(vget_low_u8(q)), vmovl_high_u8(q)];
                    let e = QB * b + 16 * half + 2 * pp + odd;
                    mac(w.map(|h| vreinterpretq_s16_u16(h)), xq, e, s);
                }
            }
        }
    }
}

/// The formats of 16-element sub-blocks: per half-block an integer sum (starting at
/// `-OFFSET Σ x` of the half, the rest by `S`) and a float step, and for Q2_K the half's
/// minimum term.
pub(super) struct K16<S>(PhantomData<S>);

impl<S: HalfSums> Tile for K16<S> {
    #[inline(always)]
    unsafe fn tile<const T: usize>(
        p: &Packed,
        g: usize,
        a: &QuantActs,
        t0: usize,
        valid: usize,
        out: Out,
    ) {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            let nbp = a.nbp();
            let base = p.bytes.as_ptr().add(g * p.group_bytes);
            let (codes, cb) = (base.add(p.codes_at()), code_bytes(p.fmt));
            let xq: [*const i16; T] = std::array::from_fn(|i| a.q(t0 + i).as_ptr());
            let xd: [*const f32; T] = std::array::from_fn(|i| a.d.as_ptr().add((t0 + i) * nbp));
            let xsum: [*const i32; T] =
                std::array::from_fn(|i| a.xsum16.as_ptr().add((t0 + i) * 2 * nbp));
            let xs16: [*const f32; T] =
                std::array::from_fn(|i| a.s16.as_ptr().add((t0 + i) * 2 * nbp));
            let mut acc = [[vdupq_n_f32(0.0); 4]; T];
            for s in 0..p.cols / 256 {
                let head = base.add(p.head_at(s));
                let d = f16s(head.add(HEAD_D));
                let neg_dmin = if S::H::MIN {
                    f16s(head.add(HEAD_DMIN)).map(|v| vnegq_f32(v))
                } else {
                    [vdupq_n_f32(0.0); 4]
                };
                for j in 0..8 {
                    let b = 8 * s + j;
                    prefetch_codes(codes, b, cb);
                    for half in 0..2 {
                        let k = 2 * j + half;
                        // Σ (q - o) x = Σ q x - o Σ x, exact: the sums start at -o Σ x.
                        let mut sums: Sums<T> = std::array::from_fn(|t| {
                            [vdupq_n_s32(-S::H::OFFSET * *xsum[t].add(2 * b + half)); 4]
                        });
                        S::half(codes, b, half, &xq, &mut sums);
                        let (sc, mv) = if S::H::MIN {
                            // Q2_K: scale and minimum nibbles of one byte per row.
                            let v = vld1q_u8(head.add(HEAD_SC + 16 * k));
                            let sc = bytes_f32::<false>(&vandq_u8(v, vdupq_n_u8(15)));
                            let m = bytes_f32::<false>(&vshrq_n_u8::<4>(v));
                            (sc, std::array::from_fn(|q| vmulq_f32(neg_dmin[q], m[q])))
                        } else {
                            let v = vld1q_u8(head.add(HEAD_SC16 + 16 * k));
                            (bytes_f32::<true>(&v), [vdupq_n_f32(0.0); 4])
                        };
                        let w: [float32x4_t; 4] = std::array::from_fn(|q| vmulq_f32(d[q], sc[q]));
                        for t in 0..T {
                            let dx = *xd[t].add(b);
                            for q in 0..4 {
                                let pp = vmulq_n_f32(w[q], dx);
                                acc[t][q] = vfmaq_f32(acc[t][q], pp, vcvtq_f32_s32(sums[t][q]));
                                if S::H::MIN {
                                    let sx = *xs16[t].add(2 * b + half);
                                    acc[t][q] = vfmaq_n_f32(acc[t][q], mv[q], sx);
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
