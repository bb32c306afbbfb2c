//! Products of weights in the interleaved layout (`kernels::interleave`), the NEON twin
//! of `avx512::interleaved`: a tile is one 16-row group times up to 4 tokens.
//!
//! A 64-byte chunk holds one 32-bit word per row, so `vld4q` splits it into its four
//! bytes of all 16 rows at once: each byte (or nibble) is one element of every row,
//! widened to two `int16x8_t` (rows 0..8, 8..16). `smlal` by the token's element
//! broadcast then adds that element's products of 4 rows into one `int32x4_t`, lane `i`
//! = row `4q + i`, so after the 32 elements of a block `s[t][q]` holds the exact integer
//! block sums of rows `4q..4q + 4` and one float step serves 4 outputs. The K-quants'
//! tiles are in `interleaved_k`.
//!
//! The tiles prefetch as the AVX2 ones do (`interleave::Prefetch` with one-group tiles;
//! the K-quants their codes alone), at the x86 distance.

use std::arch::aarch64::*;
use std::marker::PhantomData;
use std::ops::Range;

use super::super::interleave::{code_offset, Packed, Prefetch, IROWS};
use super::super::{Out, QFormat, QuantActs, QB};
use super::f16x4;
use super::interleaved_k::{HalfSums, KMin, Mac, K16, Q2, Q3, Q6};

/// Tokens per tile.
const TT: usize = 4;

/// Exact block sums of one tile: `[T][4]`, `s[t][q]` lane `i` = row `4q + i` times token `t`.
pub(super) type Sums<const T: usize> = [[int32x4_t; 4]; T];

/// `out[t * ldo + r - rows.start] = row r · token t` for rows `rows` (`rows.start` a
/// multiple of 16) and tokens `0..nt`.
pub(super) unsafe fn interleaved(
    p: &Packed,
    rows: Range<usize>,
    a: &QuantActs,
    nt: usize,
    out: Out,
    _half_tiles: bool,
) {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe { by_format::<Smlal>(p, rows, a, nt, out) }
}

/// One way of taking the block sums: of the formats that read nibble or byte chunks
/// (Q4_K and Q5_K read theirs as Q4_1 and Q5_1), and of the half-blocks of Q6_K, Q3_K
/// and Q2_K; `smlal` here, `sdot` in `dot`.
pub(super) trait Family {
    type Q4: Codes;
    type Q5: Codes;
    type Q8: Codes;
    type Q6: HalfSums;
    type Q3: HalfSums;
    type Q2: HalfSums;
}

/// The block sums by `smlal` (`mac`).
struct Smlal;

impl Family for Smlal {
    type Q4 = Q4;
    type Q5 = Q5;
    type Q8 = Q8;
    type Q6 = Mac<Q6>;
    type Q3 = Mac<Q3>;
    type Q2 = Mac<Q2>;
}

/// [`interleaved`] with the block sums of `F`.
#[inline(always)]
pub(super) unsafe fn by_format<F: Family>(
    p: &Packed,
    rows: Range<usize>,
    a: &QuantActs,
    nt: usize,
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract (`interleaved`'s, and the CPU
    // runs `F`'s instructions)
    unsafe {
        match p.fmt {
            QFormat::Q4_0 => tiles::<Legacy<F::Q4, 0>>(p, rows, a, nt, out),
            QFormat::Q4_1 => tiles::<Legacy<F::Q4, 1>>(p, rows, a, nt, out),
            QFormat::Q5_0 => tiles::<Legacy<F::Q5, 0>>(p, rows, a, nt, out),
            QFormat::Q5_1 => tiles::<Legacy<F::Q5, 1>>(p, rows, a, nt, out),
            QFormat::Q8_0 => tiles::<Legacy<F::Q8, 0>>(p, rows, a, nt, out),
            QFormat::Q4K => tiles::<KMin<F::Q4>>(p, rows, a, nt, out),
            QFormat::Q5K => tiles::<KMin<F::Q5>>(p, rows, a, nt, out),
            QFormat::Q6K => tiles::<K16<F::Q6>>(p, rows, a, nt, out),
            QFormat::Q3K => tiles::<K16<F::Q3>>(p, rows, a, nt, out),
            QFormat::Q2K => tiles::<K16<F::Q2>>(p, rows, a, nt, out),
            // `interleave::interleavable` leaves it out: never packed.
            QFormat::Mxfp4 => unreachable!("MXFP4 weights are not interleaved"),
        }
    }
}

/// How a format's code bytes become elements: `block` adds the products of block `b`
/// of the group whose codes start at `base` with each token's block `b` (`xq[t]`:
/// `[cols]`) into `s`.
pub(super) trait Codes {
    unsafe fn block<const T: usize>(
        base: *const u8,
        b: usize,
        xq: &[*const i16; T],
        s: &mut Sums<T>,
    );
}

/// Q4_0, Q4_1 (`FIFTH` false) and Q5_0, Q5_1: a chunk `c` holds elements `8c..8c + 8`;
/// bytes 0 and 1 of a word the even ones (low nibble first), bytes 2 and 3 the odd ones.
/// Q5's fifth chunk holds pair `p`'s fifth bits at bit `p` (even) and `16 + p` (odd).
pub(super) struct Small<const FIFTH: bool>;
pub(super) type Q4 = Small<false>;
pub(super) type Q5 = Small<true>;
/// Q8_0: a chunk `c` holds elements `4c, 4c + 2, 4c + 1, 4c + 3`, one per byte.
pub(super) struct Q8;

impl<const FIFTH: bool> Small<FIFTH> {
    /// Code bytes of a block of 16 rows: four nibble chunks, and Q5's fifth-bit chunk.
    pub(super) const CB: usize = if FIFTH { 320 } else { 256 };
}

impl<const FIFTH: bool> Codes for Small<FIFTH> {
    #[inline(always)]
    unsafe fn block<const T: usize>(
        base: *const u8,
        b: usize,
        xq: &[*const i16; T],
        s: &mut Sums<T>,
    ) {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            let cb = Self::CB;
            let (m4, bit4) = (vdupq_n_u8(0x0f), vdupq_n_u8(0x10));
            let hv = if FIFTH {
                let v = vld4q_u8(base.add(cb * b + 256));
                [v.0, v.1, v.2, v.3]
            } else {
                [vdupq_n_u8(0); 4]
            };
            for c in 0..4 {
                let v = vld4q_u8(base.add(cb * b + 64 * c));
                let bytes = [v.0, v.1, v.2, v.3];
                for j in 0..4 {
                    let p = 4 * c + j;
                    for odd in 0..2 {
                        let by = bytes[2 * odd + j / 2];
                        let mut q = if j % 2 == 0 {
                            vandq_u8(by, m4)
                        } else {
                            vshrq_n_u8::<4>(by)
                        };
                        if FIFTH {
                            let set = vtstq_u8(hv[2 * odd + p / 8], vdupq_n_u8(1 << (p % 8)));
                            q = vorrq_u8(q, vandq_u8(set, bit4));
                        }
                        let e = QB * b + 8 * c + 2 * j + odd;
                        let w = [vmovl_u8(vget_low_u8(q)), vmovl_high_u8(q)];
                        mac(w.map(|h| vreinterpretq_s16_u16(h)), xq, e, s);
                    }
                }
            }
        }
    }
}

impl Codes for Q8 {
    #[inline(always)]
    unsafe fn block<const T: usize>(
        base: *const u8,
        b: usize,
        xq: &[*const i16; T],
        s: &mut Sums<T>,
    ) {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            for c in 0..8 {
                let v = vld4q_s8(base.add(512 * b + 64 * c) as *const i8);
                for (k, by) in [v.0, v.2, v.1, v.3].into_iter().enumerate() {
                    let w = [vmovl_s8(vget_low_s8(by)), vmovl_high_s8(by)];
                    mac(w, xq, QB * b + 4 * c + k, s);
                }
            }
        }
    }
}

/// Adds element `e` of the 16 rows (`w`: rows 0..8, 8..16) times element `e` of each
/// token into `s`.
#[inline(always)]
pub(super) unsafe fn mac<const T: usize>(
    w: [int16x8_t; 2],
    xq: &[*const i16; T],
    e: usize,
    s: &mut Sums<T>,
) {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
        for t in 0..T {
            let x = vld1q_dup_s16(xq[t].add(e));
            let xl = vget_low_s16(x);
            s[t][0] = vmlal_s16(s[t][0], vget_low_s16(w[0]), xl);
            s[t][1] = vmlal_high_s16(s[t][1], w[0], x);
            s[t][2] = vmlal_s16(s[t][2], vget_low_s16(w[1]), xl);
            s[t][3] = vmlal_high_s16(s[t][3], w[1], x);
        }
    }
}

/// One tile of a format: group `g` times tokens `t0..t0 + T`, writing the first
/// `valid` rows.
pub(super) trait Tile {
    unsafe fn tile<const T: usize>(
        p: &Packed,
        g: usize,
        a: &QuantActs,
        t0: usize,
        valid: usize,
        out: Out,
    );
}

/// The tiles of the legacy formats: codes read by `C`; `M == 1`: the format has
/// minimums (Q4_1, Q5_1).
struct Legacy<C, const M: u8>(PhantomData<C>);

impl<C: Codes, const M: u8> Tile for Legacy<C, M> {
    #[inline(always)]
    unsafe fn tile<const T: usize>(
        p: &Packed,
        g: usize,
        a: &QuantActs,
        t0: usize,
        valid: usize,
        out: Out,
    ) {
        // SAFETY: as for `tile`, whose contract is this one's
        unsafe { tile::<C, M, T>(p, g, a, t0, valid, out) }
    }
}

/// Runs the tiles: each group of `rows` over the tokens in tiles of up to `TT`.
#[inline(always)]
unsafe fn tiles<K: Tile>(p: &Packed, rows: Range<usize>, a: &QuantActs, nt: usize, out: Out) {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
        debug_assert!(rows.start.is_multiple_of(IROWS) && rows.end <= p.rows);
        let g0 = rows.start / IROWS;
        Prefetch::new(p, 1).ramp(p.bytes.as_ptr().add(g0 * p.group_bytes));
        for g in g0..rows.end.div_ceil(IROWS) {
            let valid = (rows.end - g * IROWS).min(IROWS);
            let mut t = 0;
            while t < nt {
                let n = (nt - t).min(TT);
                let o = Out {
                    ptr: out.ptr.add(t * out.ldo + (g - g0) * IROWS),
                    ldo: out.ldo,
                };
                match n {
                    1 => K::tile::<1>(p, g, a, t, valid, o),
                    2 => K::tile::<2>(p, g, a, t, valid, o),
                    3 => K::tile::<3>(p, g, a, t, valid, o),
                    _ => K::tile::<4>(p, g, a, t, valid, o),
                }
                t += n;
            }
        }
    }
}

/// 4 f16 values from `p` as f32.
#[inline(always)]
pub(super) unsafe fn f16x4_at(p: *const u8) -> float32x4_t {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe { f16x4(vmovl_u16(vld1_u16(p as *const u16))) }
}

/// Group `g` times tokens `t0..t0 + T`; writes the first `valid` rows.
#[inline(always)]
unsafe fn tile<C: Codes, const M: u8, const T: usize>(
    p: &Packed,
    g: usize,
    a: &QuantActs,
    t0: usize,
    valid: usize,
    out: Out,
) {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
        let nbp = a.nbp();
        let base = p.bytes.as_ptr().add(g * p.group_bytes);
        let xq: [*const i16; T] = std::array::from_fn(|i| a.q(t0 + i).as_ptr());
        let xd: [*const f32; T] = std::array::from_fn(|i| a.d.as_ptr().add((t0 + i) * nbp));
        let xs: [*const f32; T] = std::array::from_fn(|i| a.s.as_ptr().add((t0 + i) * nbp));
        let xsum: [*const i32; T] = std::array::from_fn(|i| a.xsum.as_ptr().add((t0 + i) * nbp));
        let offset = code_offset(p.fmt);
        let prefetch = Prefetch::new(p, 1);
        let mut acc = [[vdupq_n_f32(0.0); 4]; T];
        for b in 0..p.nb() {
            prefetch.block(base, b);
            let mut s = [[vdupq_n_s32(0); 4]; T];
            C::block::<T>(base.add(p.codes_at()), b, &xq, &mut s);
            // Row 4q + i's scale is f16 number 16 b + 4q + i.
            let at = |off: usize, q: usize| base.add(off + 2 * (IROWS * b + 4 * q));
            let ws: [float32x4_t; 4] = std::array::from_fn(|q| f16x4_at(at(p.scales_at(), q)));
            let mv: [float32x4_t; 4] = if M == 1 {
                std::array::from_fn(|q| f16x4_at(at(p.mins_at(), q)))
            } else {
                [vdupq_n_f32(0.0); 4]
            };
            for t in 0..T {
                if offset != 0 {
                    // Σ (q - o) x = Σ q x - o Σ x, exact.
                    let o = vdupq_n_s32(offset * *xsum[t].add(b));
                    for sq in s[t].iter_mut() {
                        *sq = vsubq_s32(*sq, o);
                    }
                }
                let d = *xd[t].add(b);
                for q in 0..4 {
                    let pp = vmulq_n_f32(ws[q], d);
                    acc[t][q] = vfmaq_f32(acc[t][q], pp, vcvtq_f32_s32(s[t][q]));
                    if M == 1 {
                        acc[t][q] = vfmaq_n_f32(acc[t][q], mv[q], *xs[t].add(b));
                    }
                }
            }
        }
        store(&acc, valid, out);
    }
}

/// Writes the first `valid` rows of a tile's outputs (`acc[t][q]`: rows `4q..4q + 4`
/// times token `t`).
#[inline(always)]
pub(super) unsafe fn store<const T: usize>(acc: &[[float32x4_t; 4]; T], valid: usize, out: Out) {
    // SAFETY: NEON is part of every aarch64 CPU; `out` is valid for the writes of these
    // rows and tokens (the caller's contract)
    unsafe {
        for t in 0..T {
            for q in 0..4 {
                let dst = out.ptr.add(t * out.ldo + 4 * q);
                if 4 * q + 4 <= valid {
                    vst1q_f32(dst, acc[t][q]);
                } else if 4 * q < valid {
                    // The last group's padding rows are not ours to write.
                    let mut lanes = [0f32; 4];
                    vst1q_f32(lanes.as_mut_ptr(), acc[t][q]);
                    std::ptr::copy_nonoverlapping(lanes.as_ptr(), dst, valid - 4 * q);
                }
            }
        }
    }
}
