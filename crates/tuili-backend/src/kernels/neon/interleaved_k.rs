//! The K-quants' tiles of the NEON interleaved products (`interleaved`), the twins of
//! `avx512::interleaved_k`: a tile is one 16-row group (four `int32x4_t` of rows per
//! token) times up to 4 tokens.
//!
//! Q4_K and Q5_K read their codes as Q4_1 and Q5_1 do, with float scales `d · float(sc)`
//! and `(-dmin) · float(m)` from the super-block's head (exact; `kernels::blocksum`).
//! Q6_K's blocks are two 16-element halves, each with its own integer sum and float
//! step; `vld4q` splits a chunk of high bits into its four bytes of all 16 rows, and a
//! shift brings an element's two bits above its nibble.

use std::arch::aarch64::*;
use std::marker::PhantomData;

use super::super::interleave::{Packed, HEAD_D, HEAD_DMIN, HEAD_M, HEAD_SC, HEAD_SC6};
use super::super::{Out, QuantActs, QB};
use super::interleaved::{f16x4_at, mac, store, Codes, Sums, Tile};

/// Q4_K (`C` = Q4) and Q5_K (`C` = Q5): blocks with a scale and a minimum each.
pub(super) struct KMin<C>(PhantomData<C>);
/// Q6_K.
pub(super) struct K6;

/// 16 bytes at `p` (one per row) as f32, rows `4q..4q + 4` in `[q]`: unsigned, or
/// signed when `SIGNED`.
#[inline(always)]
unsafe fn bytes_f32<const SIGNED: bool>(p: *const u8) -> [float32x4_t; 4] {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps `p..p + 16` within the
    // group
    unsafe {
        let v = vld1q_u8(p);
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
            let codes = base.add(p.codes_at());
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
                    let mut sums = [[vdupq_n_s32(0); 4]; T];
                    C::block::<T>(codes, b, &xq, &mut sums);
                    let sc = bytes_f32::<false>(head.add(HEAD_SC + 16 * j));
                    let m = bytes_f32::<false>(head.add(HEAD_M + 16 * j));
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

/// Adds half `half` of block `b` (elements `16 half..16 half + 16`) of Q6_K codes into
/// `s`.
#[inline(always)]
unsafe fn q6_half<const T: usize>(
    codes: *const u8,
    b: usize,
    half: usize,
    xq: &[*const i16; T],
    s: &mut Sums<T>,
) {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
    // lengths it gives within the buffers its safe caller checked
    unsafe {
        let blk = codes.add(384 * b);
        let (m4, m30) = (vdupq_n_u8(0x0f), vdupq_n_u8(0x30));
        let hv = vld4q_u8(blk.add(256 + 64 * half));
        let hb = [hv.0, hv.1, hv.2, hv.3];
        for cc in 0..2 {
            let c = 2 * half + cc;
            let v = vld4q_u8(blk.add(64 * c));
            let bytes = [v.0, v.1, v.2, v.3];
            for jj in 0..4 {
                // Pair p' = 4 cc + jj of the half: its nibbles as Q4's, its high bits at
                // bits 2p' (even element) and 16 + 2p' (odd) of the word.
                let pp = 4 * cc + jj;
                for odd in 0..2 {
                    let by = bytes[2 * odd + jj / 2];
                    let nib = if jj % 2 == 0 {
                        vandq_u8(by, m4)
                    } else {
                        vshrq_n_u8::<4>(by)
                    };
                    let shift = vdupq_n_s8(4 - 2 * (pp % 4) as i8);
                    let hi = vandq_u8(vshlq_u8(hb[2 * odd + pp / 4], shift), m30);
                    let q = vorrq_u8(nib, hi);
                    let e = QB * b + 8 * c + 2 * jj + odd;
                    let w = [vmovl_u8(vget_low_u8(q)), vmovl_high_u8(q)];
                    mac(w.map(|h| vreinterpretq_s16_u16(h)), xq, e, s);
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
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            let nbp = a.nbp();
            let base = p.bytes.as_ptr().add(g * p.group_bytes);
            let codes = base.add(p.codes_at());
            let xq: [*const i16; T] = std::array::from_fn(|i| a.q(t0 + i).as_ptr());
            let xd: [*const f32; T] = std::array::from_fn(|i| a.d.as_ptr().add((t0 + i) * nbp));
            let xsum: [*const i32; T] =
                std::array::from_fn(|i| a.xsum16.as_ptr().add((t0 + i) * 2 * nbp));
            let mut acc = [[vdupq_n_f32(0.0); 4]; T];
            for s in 0..p.cols / 256 {
                let head = base.add(p.head_at(s));
                let d = f16s(head.add(HEAD_D));
                for j in 0..8 {
                    let b = 8 * s + j;
                    for half in 0..2 {
                        // Σ (q - 32) x = Σ q x - 32 Σ x, exact: the sums start at -32 Σ x.
                        let mut sums: Sums<T> = std::array::from_fn(|t| {
                            [vdupq_n_s32(-32 * *xsum[t].add(2 * b + half)); 4]
                        });
                        q6_half::<T>(codes, b, half, &xq, &mut sums);
                        let sc = bytes_f32::<true>(head.add(HEAD_SC6 + 16 * (2 * j + half)));
                        let w: [float32x4_t; 4] = std::array::from_fn(|q| vmulq_f32(d[q], sc[q]));
                        for t in 0..T {
                            let dx = *xd[t].add(b);
                            for q in 0..4 {
                                let pp = vmulq_n_f32(w[q], dx);
                                acc[t][q] = vfmaq_f32(acc[t][q], pp, vcvtq_f32_s32(sums[t][q]));
                            }
                        }
                    }
                }
            }
            store(&acc, valid, out);
        }
    }
}
