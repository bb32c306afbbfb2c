//! The interleaved products with the dot-product extension (`sdot`): the tiles of
//! `interleaved` and `interleaved_k`, whose (half-)block sums here take 4 elements of 4
//! rows per instruction.
//!
//! `sdot` multiplies int8 by int8 (lane `j` of an `int32x4_t` += the products of bytes
//! `4j..4j + 4` of two vectors), and the activations are int16 (|x| <= 32767). Each splits
//! exactly as `x = 256 hi + lo + 128` with `hi = x >> 8` and `lo = (x & 255) - 128`, both
//! int8, so a row's block sum is `256 Σ w hi + Σ w lo + 128 Σ w`, the last shared by the
//! tile's tokens. Every step is exact in i32: with codes |w| <= 128 (Q8_0; the unsigned
//! stored codes of the others at most 63, Q6_K's) a block's |Σ w hi|, |Σ w lo| and
//! |128 Σ w| are at most 32 · 128 · 128 = 2^19, the running sum at most 2^27 + 2^20
//! (`256 |Σ w hi|` < 2^24 for the nibble codes, < 2^25 for Q5's and for Q6_K's halves,
//! which start at `-OFFSET Σ x`, |.| < 2^24, as Q3_K's), so the sums, and the float steps
//! that follow, are the `smlal` tiles' bits.
//!
//! A *quad* is a 16-byte vector of 4 elements of each of 4 rows, row `4q + j` in 32-bit
//! lane `j`, which `sdot` by element multiplies with 4 activation bytes of a token:
//! - Q8_0's words are quads already (elements `4c, 4c + 2, 4c + 1, 4c + 3` of chunk `c`);
//! - a nibble chunk's low nibbles are the quad of elements `8c + {0, 4, 1, 5}`, its high
//!   ones that of `8c + {2, 6, 3, 7}` (Q4, Q5, Q6_K's low bits);
//! - a crumbs chunk's crumbs `2k..2k + 2` are the quad of elements `2k, 8 + 2k, 2k + 1,
//!   9 + 2k` of its half (Q2_K, Q3_K's low bits);
//! - Q5's fifth, Q3_K's third and Q6_K's high bits join them, picked by a table look-up
//!   of their bytes (`vqtbl1q`) and a shift per byte.
//!
//! The activations are split in the quads' element order (`ORDER`), once per block (or
//! half) and token.

use std::arch::aarch64::*;
use std::arch::asm;
use std::marker::PhantomData;
use std::ops::Range;

use super::super::interleave::Packed;
use super::super::{Out, QuantActs, QB};
use super::interleaved::{by_format, Codes, Family, Small, Sums, Q8};
use super::interleaved_k::{field, Half, HalfSums, Q2, Q3, Q6};

/// The interleaved products of the dot-product table: those of `interleaved` with the
/// (half-)block sums by `sdot`.
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
    type Q6 = Dot<Q6>;
    type Q3 = Dot<Q3>;
    type Q2 = Dot<Q2>;
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
            let blk = codes.add(Small::<FIFTH>::CB * b + 16 * q);
            let fifth = if FIFTH {
                vld1q_u8(blk.add(256))
            } else {
                vdupq_n_u8(0)
            };
            let mut w = [vdupq_n_s8(0); 8];
            for c in 0..4 {
                let mut nib = nibbles(vld1q_u8(blk.add(64 * c)));
                if FIFTH {
                    // Element 2p's fifth bit is bit p of the row's word, 2p + 1's bit
                    // 16 + p: for the quads 8c + {0, 4, 1, 5} and 8c + {2, 6, 3, 7},
                    // p = 4c + {0, 2} and 4c + {1, 3}.
                    let s = 4 * (c as u8 % 2);
                    for (h, n) in nib.iter_mut().enumerate() {
                        let from = [s + h as u8, s + 2 + h as u8];
                        *n = vorrq_u8(*n, pick(fifth, c / 2, from, 4, 1));
                    }
                }
                w[2 * c] = vreinterpretq_s8_u8(nib[0]);
                w[2 * c + 1] = vreinterpretq_s8_u8(nib[1]);
            }
            w
        }
    }
}

/// How a format's half-block of 16 rows (16 elements) is read as quads.
trait HalfQuads {
    /// The element order of the quads: quad `i` holds, in its 4 bytes per row, elements
    /// `16 half + ORDER[4i..4i + 4]`.
    const ORDER: [u8; 16];
    /// The 4 quads of rows `4q..4q + 4` of half `half` of block `b` of the codes at
    /// `codes`, unsigned.
    unsafe fn quads(codes: *const u8, b: usize, half: usize, q: usize) -> [int8x16_t; 4];
}

/// The crumbs chunks' order: quad `k` holds elements `2k, 8 + 2k, 2k + 1, 9 + 2k` of the
/// half (the word's bytes: even elements 0..8, even 8..16, odd 0..8, odd 8..16).
const CRUMB_ORDER: [u8; 16] = [0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15];

/// The 2 quads of a nibble chunk's words `v` (4 rows): its low nibbles (elements
/// `8c + {0, 4, 1, 5}` of chunk `c`) and its high ones (`8c + {2, 6, 3, 7}`).
#[inline(always)]
unsafe fn nibbles(v: uint8x16_t) -> [uint8x16_t; 2] {
    // SAFETY: NEON is part of every aarch64 CPU
    unsafe { [vandq_u8(v, vdupq_n_u8(15)), vshrq_n_u8::<4>(v)] }
}

/// The 4 quads of a crumbs chunk's words `v` (4 rows): quad `k` its crumbs `2k..2k + 2`.
#[inline(always)]
unsafe fn crumbs(v: uint8x16_t) -> [uint8x16_t; 4] {
    // SAFETY: NEON is part of every aarch64 CPU
    unsafe { std::array::from_fn(|k| field(v, 2 * k, 0, 3)) }
}

impl HalfQuads for Q2 {
    const ORDER: [u8; 16] = CRUMB_ORDER;
    #[inline(always)]
    unsafe fn quads(codes: *const u8, b: usize, half: usize, q: usize) -> [int8x16_t; 4] {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the block within
        // the group
        unsafe {
            let v = vld1q_u8(codes.add(128 * b + 64 * half + 16 * q));
            crumbs(v).map(|c| vreinterpretq_s8_u8(c))
        }
    }
}

impl HalfQuads for Q3 {
    const ORDER: [u8; 16] = CRUMB_ORDER;
    #[inline(always)]
    unsafe fn quads(codes: *const u8, b: usize, half: usize, q: usize) -> [int8x16_t; 4] {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the block within
        // the group
        unsafe {
            let blk = codes.add(192 * b + 16 * q);
            let third = vld1q_u8(blk.add(128));
            // Element 2p's third bit is bit p of the word, 2p + 1's bit 16 + p: for quad
            // k (elements 2k, 8 + 2k, 2k + 1, 9 + 2k of the half) bits k and 4 + k of
            // byte `half` and of byte 2 + `half`.
            let lo = crumbs(vld1q_u8(blk.add(64 * half)));
            std::array::from_fn(|k| {
                let from = [k as u8, 4 + k as u8];
                vreinterpretq_s8_u8(vorrq_u8(lo[k], pick(third, half, from, 2, 1)))
            })
        }
    }
}

impl HalfQuads for Q6 {
    const ORDER: [u8; 16] = <Small<false> as Quads>::ORDER;
    #[inline(always)]
    unsafe fn quads(codes: *const u8, b: usize, half: usize, q: usize) -> [int8x16_t; 4] {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the block within
        // the group
        unsafe {
            let blk = codes.add(384 * b + 16 * q);
            let high = vld1q_u8(blk.add(256 + 64 * half));
            // The low 4 bits as Q4's, from chunks 2 half + cc: quads 2cc + h, elements
            // 8cc + {0, 4, 1, 5} (h = 0) and 8cc + {2, 6, 3, 7}; element 2pp + odd's high
            // 2 bits are bits 2 (pp % 4) of byte 2 odd + pp / 4.
            let nib = [0, 1].map(|cc| nibbles(vld1q_u8(blk.add(64 * (2 * half + cc)))));
            std::array::from_fn(|i| {
                let (cc, h) = (i / 2, i % 2);
                let from = [2 * h as u8, 4 + 2 * h as u8];
                vreinterpretq_s8_u8(vorrq_u8(nib[cc][h], pick(high, cc, from, 4, 3)))
            })
        }
    }
}

/// The high bits of a chunk whose words hold even elements' bits in their low half
/// and odd ones' in the high half: of each row's word in `v` (a row per 32-bit lane), the
/// bits `mask << from[0]` and `mask << from[1]` of byte `byte` and then of byte
/// `2 + byte`, at `mask << to` of the 4 bytes of the row's lane, the other bits clear.
#[inline(always)]
unsafe fn pick(v: uint8x16_t, byte: usize, from: [u8; 2], to: u8, mask: u8) -> uint8x16_t {
    // SAFETY: NEON is part of every aarch64 CPU
    unsafe {
        let idx: [u8; 16] = std::array::from_fn(|i| ((i & !3) + byte + (i & 2)) as u8);
        let shift: [i8; 16] = std::array::from_fn(|i| to as i8 - from[i % 2] as i8);
        let picked = vqtbl1q_u8(v, vld1q_u8(idx.as_ptr()));
        vandq_u8(
            vshlq_u8(picked, vld1q_s8(shift.as_ptr())),
            vdupq_n_u8(mask << to),
        )
    }
}

/// The block (half-block) sums of quads of `Q`.
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
            let x = std::array::from_fn(|t| split::<2>(xq[t].add(QB * b), order));
            add_sums(|q| Q::quads(base, b, q), &x, s);
        }
    }
}

impl<H: Half + HalfQuads> HalfSums for Dot<H> {
    type H = H;
    #[inline(always)]
    unsafe fn half<const T: usize>(
        codes: *const u8,
        b: usize,
        half: usize,
        xq: &[*const i16; T],
        s: &mut Sums<T>,
    ) {
        // SAFETY: the CPU has the dot-product extension (this table's); the caller keeps
        // the pointers and lengths it gives within the buffers its safe caller checked
        unsafe {
            let order = vld1q_u8(H::ORDER.as_ptr());
            let x = std::array::from_fn(|t| split::<1>(xq[t].add(QB * b + 16 * half), order));
            add_sums(|q| H::quads(codes, b, half, q), &x, s);
        }
    }
}

/// Adds to `s[t][q]` the products of the `4 M` quads of rows `4q..4q + 4`
/// (`quads(q)`) with token `t`'s split activations `x[t]` (`[hi, lo]`, in the quads'
/// order): `256 Σ w hi + Σ w lo + 128 Σ w`, the last shared by the tokens.
#[inline(always)]
unsafe fn add_sums<const N: usize, const M: usize, const T: usize>(
    quads: impl Fn(usize) -> [int8x16_t; N],
    x: &[[[int8x16_t; M]; 2]; T],
    s: &mut Sums<T>,
) {
    // SAFETY: the CPU has the dot-product extension (the caller's contract)
    unsafe {
        let ones = [vdupq_n_s8(1); M];
        for q in 0..4 {
            let w = quads(q);
            let sum_w128 = vshlq_n_s32::<7>(dots(vdupq_n_s32(0), &w, &ones));
            for t in 0..T {
                let [hi, lo] = &x[t];
                let hi256 = vshlq_n_s32::<8>(dots(vdupq_n_s32(0), &w, hi));
                let sum = dots(vaddq_s32(hi256, sum_w128), &w, lo);
                s[t][q] = vaddq_s32(s[t][q], sum);
            }
        }
    }
}

/// A token's `16 M` int16 at `xp` as `x = 256 hi + lo + 128`: `[hi, lo]`, each `M`
/// vectors of 16 int8 in the order `order` (byte `i` of vector `k` is element
/// `16k + order[i]`).
#[inline(always)]
unsafe fn split<const M: usize>(xp: *const i16, order: uint8x16_t) -> [[int8x16_t; M]; 2] {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps `xp..xp + 16 M` within
    // the activations
    unsafe {
        let v = |i: usize| vld1q_s16(xp.add(8 * i));
        let flip = vdupq_n_s8(-128);
        let hi = |k: usize| vshrn_high_n_s16::<8>(vshrn_n_s16::<8>(v(2 * k)), v(2 * k + 1));
        let lo = |k: usize| veorq_s8(vmovn_high_s16(vmovn_s16(v(2 * k)), v(2 * k + 1)), flip);
        [
            std::array::from_fn(|k| vqtbl1q_s8(hi(k), order)),
            std::array::from_fn(|k| vqtbl1q_s8(lo(k), order)),
        ]
    }
}

/// `acc` + the products of the `4 M` quads `w` with `16 M` activation bytes `x`: quad
/// `c` with bytes `4(c % 4)..` of `x[c / 4]`.
#[inline(always)]
unsafe fn dots<const N: usize, const M: usize>(
    acc: int32x4_t,
    w: &[int8x16_t; N],
    x: &[int8x16_t; M],
) -> int32x4_t {
    debug_assert_eq!(N, 4 * M);
    // SAFETY: the CPU has the dot-product extension (the caller's contract)
    unsafe {
        let mut acc = acc;
        for (k, &x) in x.iter().enumerate() {
            acc = sdot::<0>(acc, w[4 * k], x);
            acc = sdot::<1>(acc, w[4 * k + 1], x);
            acc = sdot::<2>(acc, w[4 * k + 2], x);
            acc = sdot::<3>(acc, w[4 * k + 3], x);
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
