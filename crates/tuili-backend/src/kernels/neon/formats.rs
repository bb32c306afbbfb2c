//! Each weight format as NEON steps: the float scales of a 256-element group (as the
//! scalar decoder computes them) and the integer codes of one 32-element block, as
//! four `int16x8_t` (elements 0..8, 8..16, 16..24, 24..32).

use std::arch::aarch64::*;

use super::super::scalar::{scale_min_k4, scale_q3_k};
use super::super::{QFormat, GROUP};
use super::Codes;
use crate::quant::f16_to_f32;
use crate::quant::mxfp4::{e8m0_half, KVALUES};

/// A group's scales, as the scalar decoder computes them.
pub(super) struct Scales {
    pub(super) ws: [f32; 8],
    pub(super) m: [[f32; 8]; 2],
}

pub(super) trait Fmt {
    const FMT: QFormat;
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales;
    unsafe fn codes(b: *const u8, j: usize) -> Codes;
}

#[inline(always)]
unsafe fn f16(p: *const u8) -> f32 {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe { f16_to_f32((p as *const u16).read_unaligned()) }
}

/// Legacy blocks: `d` at byte 0 of each block, and `m` at byte 2 where `MIN`.
#[inline(always)]
unsafe fn legacy_scales<const MIN: bool>(b: *const u8, ts: usize, nbj: usize) -> Scales {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
        let mut sc = Scales {
            ws: [0.0; 8],
            m: [[0.0; 8]; 2],
        };
        for j in 0..nbj {
            sc.ws[j] = f16(b.add(ts * j));
            if MIN {
                sc.m[0][j] = f16(b.add(ts * j + 2));
            }
        }
        sc
    }
}

/// u8 values `v` (elements in order) widened to codes, plus `offset`.
#[inline(always)]
unsafe fn widen(lo: uint8x16_t, hi: uint8x16_t, offset: i16) -> Codes {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
        let o = vdupq_n_s16(offset);
        let w = |v: uint16x8_t| vaddq_s16(vreinterpretq_s16_u16(v), o);
        [
            w(vmovl_u8(vget_low_u8(lo))),
            w(vmovl_high_u8(lo)),
            w(vmovl_u8(vget_low_u8(hi))),
            w(vmovl_high_u8(hi)),
        ]
    }
}

/// Bits 0..16 (`lo`) and 16..32 (`hi`) of `qh` as bytes 0x10 or 0.
#[inline(always)]
unsafe fn qh_bits(qh: u32) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
        let sel: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
        let sel = vld1q_u8(sel.as_ptr());
        let bytes = qh.to_le_bytes();
        let spread = |a: u8, b: u8| vcombine_u8(vdup_n_u8(a), vdup_n_u8(b));
        let sixteen = vdupq_n_u8(16);
        (
            vandq_u8(vtstq_u8(spread(bytes[0], bytes[1]), sel), sixteen),
            vandq_u8(vtstq_u8(spread(bytes[2], bytes[3]), sel), sixteen),
        )
    }
}

/// Nibbles of 16 bytes: elements 0..16 (low) and 16..32 (high).
#[inline(always)]
unsafe fn nibbles(qs: *const u8) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
        let v = vld1q_u8(qs);
        (vandq_u8(v, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(v))
    }
}

pub(super) struct Mx4;
impl Fmt for Mx4 {
    const FMT: QFormat = QFormat::Mxfp4;
    #[inline(always)]
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            let mut sc = Scales {
                ws: [0.0; 8],
                m: [[0.0; 8]; 2],
            };
            for j in 0..nbj {
                sc.ws[j] = e8m0_half(*b.add(17 * j));
            }
            sc
        }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            let (lo, hi) = nibbles(b.add(17 * j + 1));
            let table = vld1q_s8(KVALUES.as_ptr());
            let (lo, hi) = (vqtbl1q_s8(table, lo), vqtbl1q_s8(table, hi));
            [
                vmovl_s8(vget_low_s8(lo)),
                vmovl_high_s8(lo),
                vmovl_s8(vget_low_s8(hi)),
                vmovl_high_s8(hi),
            ]
        }
    }
}

pub(super) struct Q40;
impl Fmt for Q40 {
    const FMT: QFormat = QFormat::Q4_0;
    #[inline(always)]
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe { legacy_scales::<false>(b, 18, nbj) }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            let (lo, hi) = nibbles(b.add(18 * j + 2));
            widen(lo, hi, -8)
        }
    }
}

pub(super) struct Q41;
impl Fmt for Q41 {
    const FMT: QFormat = QFormat::Q4_1;
    #[inline(always)]
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe { legacy_scales::<true>(b, 20, nbj) }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            let (lo, hi) = nibbles(b.add(20 * j + 4));
            widen(lo, hi, 0)
        }
    }
}

pub(super) struct Q50;
impl Fmt for Q50 {
    const FMT: QFormat = QFormat::Q5_0;
    #[inline(always)]
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe { legacy_scales::<false>(b, 22, nbj) }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            let blk = b.add(22 * j);
            let (h0, h1) = qh_bits((blk.add(2) as *const u32).read_unaligned());
            let (lo, hi) = nibbles(blk.add(6));
            widen(vorrq_u8(lo, h0), vorrq_u8(hi, h1), -16)
        }
    }
}

pub(super) struct Q51;
impl Fmt for Q51 {
    const FMT: QFormat = QFormat::Q5_1;
    #[inline(always)]
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe { legacy_scales::<true>(b, 24, nbj) }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            let blk = b.add(24 * j);
            let (h0, h1) = qh_bits((blk.add(4) as *const u32).read_unaligned());
            let (lo, hi) = nibbles(blk.add(8));
            widen(vorrq_u8(lo, h0), vorrq_u8(hi, h1), 0)
        }
    }
}

pub(super) struct Q80;
impl Fmt for Q80 {
    const FMT: QFormat = QFormat::Q8_0;
    #[inline(always)]
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe { legacy_scales::<false>(b, 34, nbj) }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            let q = b.add(34 * j + 2) as *const i8;
            let (lo, hi) = (vld1q_s8(q), vld1q_s8(q.add(16)));
            [
                vmovl_s8(vget_low_s8(lo)),
                vmovl_high_s8(lo),
                vmovl_s8(vget_low_s8(hi)),
                vmovl_high_s8(hi),
            ]
        }
    }
}

#[inline(always)]
unsafe fn k4_scales(b: *const u8) -> Scales {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
        let (d, dmin) = (f16(b), f16(b.add(2)));
        let sc = std::slice::from_raw_parts(b.add(4), 12);
        let mut out = Scales {
            ws: [0.0; 8],
            m: [[0.0; 8]; 2],
        };
        for j in 0..GROUP {
            let (s, m) = scale_min_k4(j, sc);
            out.ws[j] = d * s as f32;
            out.m[0][j] = -(dmin * m as f32);
        }
        out
    }
}

/// The 32 nibbles of sub-block `j` of a Q4_K/Q5_K block whose quants start at `q`.
#[inline(always)]
unsafe fn k4_nibbles(q: *const u8, j: usize) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
        let q = q.add(32 * (j / 2));
        let (v0, v1) = (vld1q_u8(q), vld1q_u8(q.add(16)));
        if j.is_multiple_of(2) {
            let m = vdupq_n_u8(0x0f);
            (vandq_u8(v0, m), vandq_u8(v1, m))
        } else {
            (vshrq_n_u8::<4>(v0), vshrq_n_u8::<4>(v1))
        }
    }
}

/// `(v >> n) & mask` on bytes, `n` at run time.
#[inline(always)]
unsafe fn shr_and(v: uint8x16_t, n: usize, mask: u8) -> uint8x16_t {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe { vandq_u8(vshlq_u8(v, vdupq_n_s8(-(n as i8))), vdupq_n_u8(mask)) }
}

pub(super) struct Q4K;
impl Fmt for Q4K {
    const FMT: QFormat = QFormat::Q4K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, _: usize) -> Scales {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe { k4_scales(b) }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            let (lo, hi) = k4_nibbles(b.add(16), j);
            widen(lo, hi, 0)
        }
    }
}

pub(super) struct Q5K;
impl Fmt for Q5K {
    const FMT: QFormat = QFormat::Q5K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, _: usize) -> Scales {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe { k4_scales(b) }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            let (lo, hi) = k4_nibbles(b.add(48), j);
            let h = |p: *const u8| vshlq_n_u8::<4>(shr_and(vld1q_u8(p), j, 1));
            widen(vorrq_u8(lo, h(b.add(16))), vorrq_u8(hi, h(b.add(32))), 0)
        }
    }
}

/// 16 signed codes (i8 range) widened and multiplied by per-16 scales.
#[inline(always)]
unsafe fn scaled(lo: uint8x16_t, hi: uint8x16_t, offset: i16, s0: i16, s1: i16) -> Codes {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
        let c = widen(lo, hi, offset);
        [
            vmulq_n_s16(c[0], s0),
            vmulq_n_s16(c[1], s0),
            vmulq_n_s16(c[2], s1),
            vmulq_n_s16(c[3], s1),
        ]
    }
}

pub(super) struct Q6K;
impl Fmt for Q6K {
    const FMT: QFormat = QFormat::Q6K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, _: usize) -> Scales {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            Scales {
                ws: [f16(b.add(208)); 8],
                m: [[0.0; 8]; 2],
            }
        }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            let (h, p) = (j / 4, j % 4);
            let ql = b.add(64 * h + 32 * (p & 1));
            let qh = b.add(128 + 32 * h);
            let half = |k: usize| {
                let v = vld1q_u8(ql.add(16 * k));
                let nib = if p < 2 {
                    vandq_u8(v, vdupq_n_u8(0x0f))
                } else {
                    vshrq_n_u8::<4>(v)
                };
                vorrq_u8(
                    nib,
                    vshlq_n_u8::<4>(shr_and(vld1q_u8(qh.add(16 * k)), 2 * p, 3)),
                )
            };
            let sc = b.add(192 + 2 * j) as *const i8;
            scaled(half(0), half(1), -32, *sc as i16, *sc.add(1) as i16)
        }
    }
}

pub(super) struct Q3K;
impl Fmt for Q3K {
    const FMT: QFormat = QFormat::Q3K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, _: usize) -> Scales {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            Scales {
                ws: [f16(b.add(108)); 8],
                m: [[0.0; 8]; 2],
            }
        }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            let (h, p) = (j / 4, j % 4);
            let sc = std::slice::from_raw_parts(b.add(96), 12);
            // q = low bits + 4 where the high bit is set, then offset -4.
            let half = |k: usize| {
                let low = shr_and(vld1q_u8(b.add(32 + 32 * h + 16 * k)), 2 * p, 3);
                let set = vtstq_u8(vld1q_u8(b.add(16 * k)), vdupq_n_u8(1 << (4 * h + p)));
                vaddq_u8(low, vandq_u8(set, vdupq_n_u8(4)))
            };
            scaled(
                half(0),
                half(1),
                -4,
                scale_q3_k(2 * j, sc),
                scale_q3_k(2 * j + 1, sc),
            )
        }
    }
}

pub(super) struct Q2K;
impl Fmt for Q2K {
    const FMT: QFormat = QFormat::Q2K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, _: usize) -> Scales {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            let (d, dmin) = (f16(b.add(80)), f16(b.add(82)));
            let mut out = Scales {
                ws: [d; 8],
                m: [[0.0; 8]; 2],
            };
            for g in 0..16 {
                out.m[g / 8][g % 8] = -(dmin * (*b.add(g) >> 4) as f32);
            }
            out
        }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
        // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and
        // lengths it gives within the buffers its safe caller checked
        unsafe {
            let (h, p) = (j / 4, j % 4);
            let q = b.add(16 + 32 * h);
            let (s0, s1) = (
                (*b.add(2 * j) & 0x0f) as i16,
                (*b.add(2 * j + 1) & 0x0f) as i16,
            );
            scaled(
                shr_and(vld1q_u8(q), 2 * p, 3),
                shr_and(vld1q_u8(q.add(16)), 2 * p, 3),
                0,
                s0,
                s1,
            )
        }
    }
}

/// Runs `$body` with `$F` the format type of `$fmt` and `$M` its minimum kind.
macro_rules! with_format {
    ($fmt:expr, $F:ident, $M:ident, $body:expr) => {
        match $fmt {
            QFormat::Q4_0 => {
                type $F = Q40;
                const $M: u8 = 0;
                $body
            }
            QFormat::Q4_1 => {
                type $F = Q41;
                const $M: u8 = 1;
                $body
            }
            QFormat::Q5_0 => {
                type $F = Q50;
                const $M: u8 = 0;
                $body
            }
            QFormat::Q5_1 => {
                type $F = Q51;
                const $M: u8 = 1;
                $body
            }
            QFormat::Q8_0 => {
                type $F = Q80;
                const $M: u8 = 0;
                $body
            }
            QFormat::Q2K => {
                type $F = Q2K;
                const $M: u8 = 2;
                $body
            }
            QFormat::Q3K => {
                type $F = Q3K;
                const $M: u8 = 0;
                $body
            }
            QFormat::Q4K => {
                type $F = Q4K;
                const $M: u8 = 1;
                $body
            }
            QFormat::Q5K => {
                type $F = Q5K;
                const $M: u8 = 1;
                $body
            }
            QFormat::Q6K => {
                type $F = Q6K;
                const $M: u8 = 0;
                $body
            }
            QFormat::Mxfp4 => {
                type $F = Mx4;
                const $M: u8 = 0;
                $body
            }
        }
    };
}

pub(super) use with_format;
