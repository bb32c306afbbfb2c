//! The interleaved products with the dot-product extension (`sdot`): the tiles of
//! `interleaved`, whose block sums here take 4 elements of 4 rows per instruction.
//!
//! `sdot` multiplies int8 by int8 (lane `j` of an `int32x4_t` += the products of bytes
//! `4j..4j + 4` of two vectors), and the activations are int16 (|x| <= 32767). Each splits
//! exactly as `x = 256 hi + lo + 128` with `hi = x >> 8` and `lo = (x & 255) - 128`, both
//! int8, so a row's block sum is `256 Σ w hi + Σ w lo + 128 Σ w`, the last shared by the
//! tile's tokens. Every step is exact in i32: with codes |w| <= 128 (Q8_0; Q4 <= 15,
//! Q5 <= 31) a block's |Σ w hi|, |Σ w lo| and |128 Σ w| are at most 32 · 128 · 128 = 2^19,
//! the running sum at most 2^27 + 2^20, so the sums, and the float steps that follow, are
//! the `smlal` tiles' bits.
//!
//! A *quad* is a 16-byte vector of 4 elements of each of 4 rows, row `4q + j` in 32-bit
//! lane `j`, which `sdot` by element multiplies with 4 activation bytes of a token:
//! - Q8_0's words are quads already (elements `4c, 4c + 2, 4c + 1, 4c + 3` of chunk `c`);
//! - a Q4 chunk's low nibbles are the quad of elements `8c + {0, 4, 1, 5}`, its high ones
//!   that of `8c + {2, 6, 3, 7}`; Q5 adds the fifth bits, picked by a table look-up
//!   (`vqtbl1q`) of their bytes and a shift per byte.
//!
//! The activations are split in that element order (`Quads::ORDER`), once per block and
//! token. The K-quants of 16-element halves (Q6_K, Q3_K, Q2_K) keep the `smlal` tiles.

use std::arch::aarch64::*;
use std::arch::asm;
use std::marker::PhantomData;
use std::ops::Range;

use super::super::interleave::Packed;
use super::super::{Out, QuantActs, QB};
use super::interleaved::{by_format, Codes, Family, Small, Sums, Q8};

/// The interleaved products of the dot-product table: those of `interleaved` with the
/// block sums of `Q4`, `Q5` and `Q8` chunks by `sdot`.
///
/// # Safety
/// As for `interleaved::interleaved`, and the CPU has the dot-product extension.
#[target_feature(enable = "dotprod")]
pub(super) unsafe fn interleaved(
    p: &Packed,
    rows: Range<usize>,
    a: &QuantActs,
    nt: usize,
    out: Out,
    _half_tiles: bool,
) {
    // SAFETY: this fn's contract
    unsafe { by_format::<Sdot>(p, rows, a, nt, out) }
}

/// The block sums by `sdot`.
struct Sdot;

impl Family for Sdot {
    type Q4 = Dot<Small<false>>;
    type Q5 = Dot<Small<true>>;
    type Q8 = Dot<Q8>;
}

/// How a format's block of 16 rows is read as quads.
trait Quads {
    /// The element order of the quads: quads `4k..4k + 4` hold, in their 4 bytes per row,
    /// elements `16k + ORDER[4i..4i + 4]` (quad `4k + i`).
    const ORDER: [u8; 16];
    /// The 8 quads of rows `4q..4q + 4` of block `b` of the codes at `codes`.
    unsafe fn quads(codes: *const u8, b: usize, q: usize) -> [int8x16_t; 8];
}

impl Quads for Q8 {
    const ORDER: [u8; 16] = [0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15];
    #[inline(always)]
    unsafe fn quads(codes: *const u8, b: usize, q: usize) -> [int8x16_t; 8] {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the block within
        // the group
        unsafe { std::array::from_fn(|c| vld1q_s8(codes.add(512 * b + 64 * c + 16 * q) as _)) }
    }
}

impl<const FIFTH: bool> Quads for Small<FIFTH> {
    const ORDER: [u8; 16] = [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15];
    #[inline(always)]
    unsafe fn quads(codes: *const u8, b: usize, q: usize) -> [int8x16_t; 8] {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the block within
        // the group
        unsafe {
            let blk = codes.add(if FIFTH { 320 } else { 256 } * b + 16 * q);
            let fifth = if FIFTH {
                vld1q_u8(blk.add(256))
            } else {
                vdupq_n_u8(0)
            };
            let mut w = [vdupq_n_s8(0); 8];
            for c in 0..4 {
                let v = vld1q_u8(blk.add(64 * c));
                let mut nib = [vandq_u8(v, vdupq_n_u8(15)), vshrq_n_u8::<4>(v)];
                if FIFTH {
                    // Element 2p's fifth bit is bit p of the row's word, 2p + 1's bit
                    // 16 + p: for the quads 8c + {0, 4, 1, 5} and 8c + {2, 6, 3, 7},
                    // p = 4c + {0, 2, 0, 2} and 4c + {1, 3, 1, 3}.
                    let (lo, s) = (c as u8 / 2, 4 * (c as u8 % 2));
                    let bytes = [lo, lo, 2 + lo, 2 + lo];
                    for (h, n) in nib.iter_mut().enumerate() {
                        let from = [0, 2, 0, 2].map(|k| s + k + h as u8);
                        *n = vorrq_u8(*n, pick(fifth, bytes, from, 4));
                    }
                }
                w[2 * c] = vreinterpretq_s8_u8(nib[0]);
                w[2 * c + 1] = vreinterpretq_s8_u8(nib[1]);
            }
            w
        }
    }
}

/// Bit `from[i]` of byte `bytes[i]` of each row's word in `v` (a row per 32-bit lane),
/// at bit `to` of byte `i` of the row's lane, the other bits clear.
#[inline(always)]
unsafe fn pick(v: uint8x16_t, bytes: [u8; 4], from: [u8; 4], to: u8) -> uint8x16_t {
    // SAFETY: NEON is part of every aarch64 CPU
    unsafe {
        let idx: [u8; 16] = std::array::from_fn(|i| (i & !3) as u8 + bytes[i % 4]);
        let shift: [i8; 16] = std::array::from_fn(|i| to as i8 - from[i % 4] as i8);
        let picked = vqtbl1q_u8(v, vld1q_u8(idx.as_ptr()));
        vandq_u8(
            vshlq_u8(picked, vld1q_s8(shift.as_ptr())),
            vdupq_n_u8(1 << to),
        )
    }
}

/// The block sums of quads of `Q`.
struct Dot<Q>(PhantomData<Q>);

impl<Q: Quads> Codes for Dot<Q> {
    #[inline(always)]
    unsafe fn block<const T: usize>(
        base: *const u8,
        b: usize,
        xq: &[*const i16; T],
        s: &mut Sums<T>,
    ) {
        // SAFETY: the CPU has the dot-product extension (this table's); the caller keeps
        // the pointers and lengths it gives within the buffers its safe caller checked
        unsafe {
            let order = vld1q_u8(Q::ORDER.as_ptr());
            let x: [[[int8x16_t; 2]; 2]; T] =
                std::array::from_fn(|t| split(xq[t].add(QB * b), order));
            let ones = [vdupq_n_s8(1); 2];
            for q in 0..4 {
                let w = Q::quads(base, b, q);
                let sum_w128 = vshlq_n_s32::<7>(dot8(vdupq_n_s32(0), &w, ones));
                for t in 0..T {
                    let [hi, lo] = x[t];
                    let hi256 = vshlq_n_s32::<8>(dot8(vdupq_n_s32(0), &w, hi));
                    let sum = dot8(vaddq_s32(hi256, sum_w128), &w, lo);
                    s[t][q] = vaddq_s32(s[t][q], sum);
                }
            }
        }
    }
}

/// A token's block of 32 int16 at `xp` as `x = 256 hi + lo + 128`: `[hi, lo]`, each
/// `[elements 0..16, 16..32]` as int8 in the order `order` (byte `i` of each 16 is
/// their element `order[i]`).
#[inline(always)]
unsafe fn split(xp: *const i16, order: uint8x16_t) -> [[int8x16_t; 2]; 2] {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps `xp..xp + 32` within
    // the activations
    unsafe {
        let v: [int16x8_t; 4] = std::array::from_fn(|i| vld1q_s16(xp.add(8 * i)));
        let flip = vdupq_n_s8(-128);
        let hi = |i: usize| vshrn_high_n_s16::<8>(vshrn_n_s16::<8>(v[2 * i]), v[2 * i + 1]);
        let lo = |i: usize| veorq_s8(vmovn_high_s16(vmovn_s16(v[2 * i]), v[2 * i + 1]), flip);
        [
            std::array::from_fn(|i| vqtbl1q_s8(hi(i), order)),
            std::array::from_fn(|i| vqtbl1q_s8(lo(i), order)),
        ]
    }
}

/// `acc` + the products of the 8 quads `w` with 32 activation bytes `x`: quad `c` with
/// bytes `4(c % 4)..` of `x[c / 4]`.
#[inline(always)]
unsafe fn dot8(acc: int32x4_t, w: &[int8x16_t; 8], x: [int8x16_t; 2]) -> int32x4_t {
    // SAFETY: the CPU has the dot-product extension (the caller's contract)
    unsafe {
        let mut acc = acc;
        for h in 0..2 {
            acc = sdot::<0>(acc, w[4 * h], x[h]);
            acc = sdot::<1>(acc, w[4 * h + 1], x[h]);
            acc = sdot::<2>(acc, w[4 * h + 2], x[h]);
            acc = sdot::<3>(acc, w[4 * h + 3], x[h]);
        }
        acc
    }
}

/// `acc` lane `j` + the products of bytes `4j..4j + 4` of `w` with bytes `4I..4I + 4`
/// of `x` (`sdot` by element; `vdotq_laneq_s32` is not stable Rust).
#[inline(always)]
unsafe fn sdot<const I: i32>(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: the CPU has the dot-product extension (the caller's contract); registers
    // only
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {x:v}.4b[{i}]",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            x = in(vreg) x,
            i = const I,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}
