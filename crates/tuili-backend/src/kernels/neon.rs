//! NEON twins of `scalar` (aarch64, where NEON is always present), bit-identical to it.
//!
//! The 8 lanes of the specification are two `float32x4_t`: lanes 0..4 hold the products
//! of elements `{2k, 2k+1, 16+2k, 17+2k}` for k < 4 (elements 0..8 and 16..24), lanes
//! 4..8 those of elements 8..16 and 24..32. A 32-element block of codes or activations
//! is four `int16x8_t`: elements 0..8, 8..16, 16..24, 24..32.

use std::arch::aarch64::*;

use super::scalar::{float_at, scale_min_k4, scale_q3_k, QMAX, TINY};
use super::{FFormat, Kernels, MinKind, Out, Panel, QFormat, QuantActs, GROUP, QB};
use crate::quant::f16_to_f32;

static NEON: Kernels = Kernels {
    name: "neon",
    f32_reference: false,
    quantize: quantize_row,
    decode,
    gemm,
    gemv: Some(gemv),
    float_gemm,
    dot,
    axpy,
};

/// The NEON table (NEON is part of the aarch64 baseline).
pub(super) fn kernels() -> &'static Kernels {
    &NEON
}

// ---- small helpers ------------------------------------------------------------------

/// 8 lanes as two halves.
type F8 = (float32x4_t, float32x4_t);
type Codes = [int16x8_t; 4];

#[inline(always)]
unsafe fn zero8() -> F8 {
    (vdupq_n_f32(0.0), vdupq_n_f32(0.0))
}

/// `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`, as `kernels::reduce8`.
#[inline(always)]
unsafe fn hsum(v: F8) -> f32 {
    let s4 = vaddq_f32(v.0, v.1);
    let s2 = vadd_f32(vget_low_f32(s4), vget_high_f32(s4));
    vget_lane_f32::<0>(s2) + vget_lane_f32::<1>(s2)
}

#[inline(always)]
unsafe fn load8(p: *const f32) -> F8 {
    (vld1q_f32(p), vld1q_f32(p.add(4)))
}

/// `acc = fma(a, b, acc)` on 8 lanes.
#[inline(always)]
unsafe fn fma8(acc: F8, a: F8, b: F8) -> F8 {
    (vfmaq_f32(acc.0, a.0, b.0), vfmaq_f32(acc.1, a.1, b.1))
}

#[inline(always)]
unsafe fn load_codes(p: *const i16) -> Codes {
    [
        vld1q_s16(p),
        vld1q_s16(p.add(8)),
        vld1q_s16(p.add(16)),
        vld1q_s16(p.add(24)),
    ]
}

/// The 8 exact lane sums of a block: `c · x` split as the specification says.
#[inline(always)]
unsafe fn isum(c: &Codes, x: &Codes) -> (int32x4_t, int32x4_t) {
    let a = vmlal_s16(
        vmull_s16(vget_low_s16(c[0]), vget_low_s16(x[0])),
        vget_low_s16(c[2]),
        vget_low_s16(x[2]),
    );
    let b = vmlal_high_s16(vmull_high_s16(c[0], x[0]), c[2], x[2]);
    let e = vmlal_s16(
        vmull_s16(vget_low_s16(c[1]), vget_low_s16(x[1])),
        vget_low_s16(c[3]),
        vget_low_s16(x[3]),
    );
    let f = vmlal_high_s16(vmull_high_s16(c[1], x[1]), c[3], x[3]);
    (vpaddq_s32(a, b), vpaddq_s32(e, f))
}

/// `acc = fma(p, float(isum), acc)`.
#[inline(always)]
unsafe fn step(acc: F8, p: f32, s: (int32x4_t, int32x4_t)) -> F8 {
    (
        vfmaq_n_f32(acc.0, vcvtq_f32_s32(s.0), p),
        vfmaq_n_f32(acc.1, vcvtq_f32_s32(s.1), p),
    )
}

// ---- activations --------------------------------------------------------------------

unsafe fn quantize_row(x: &[f32], q: &mut [i16], d: &mut [f32], s: &mut [f32], s16: &mut [f32]) {
    let nb = x.len() / QB;
    d[nb..].fill(0.0);
    s[nb..].fill(0.0);
    s16[2 * nb..].fill(0.0);
    let fmax = vdupq_n_f32(f32::MAX);
    for b in 0..nb {
        let p = x.as_ptr().add(QB * b);
        let mut v = [vdupq_n_f32(0.0); 8];
        let mut amax = vdupq_n_f32(0.0);
        let mut fin = vdupq_n_u32(u32::MAX);
        for i in 0..8 {
            v[i] = vld1q_f32(p.add(4 * i));
            let a = vabsq_f32(v[i]);
            // NaN compares false, infinity is above f32::MAX.
            fin = vandq_u32(fin, vcleq_f32(a, fmax));
            amax = vmaxq_f32(amax, a);
        }
        let qb = q.as_mut_ptr().add(QB * b);
        if vminvq_u32(fin) == 0 {
            std::ptr::write_bytes(qb, 0, QB);
            (d[b], s[b], s16[2 * b], s16[2 * b + 1]) = (f32::NAN, f32::NAN, f32::NAN, f32::NAN);
            continue;
        }
        let amax = vmaxvq_f32(amax);
        if amax < TINY {
            std::ptr::write_bytes(qb, 0, QB);
            (d[b], s[b], s16[2 * b], s16[2 * b + 1]) = (0.0, 0.0, 0.0, 0.0);
            continue;
        }
        let id = QMAX / amax;
        let mut sums = [vdupq_n_s32(0); 2];
        for i in 0..8 {
            // Round to nearest, ties to even, as `round_ties_even`.
            let qi = vcvtnq_s32_f32(vmulq_n_f32(v[i], id));
            sums[i / 4] = vaddq_s32(sums[i / 4], qi);
            vst1_s16(qb.add(4 * i), vqmovn_s32(qi));
        }
        let (sa, sb) = (vaddvq_s32(sums[0]), vaddvq_s32(sums[1]));
        let db = amax / QMAX;
        d[b] = db;
        s[b] = db * (sa + sb) as f32;
        s16[2 * b] = db * sa as f32;
        s16[2 * b + 1] = db * sb as f32;
    }
}

// ---- weight formats -----------------------------------------------------------------

/// A group's scales, as the scalar decoder computes them.
struct Scales {
    ws: [f32; 8],
    m: [[f32; 8]; 2],
}

trait Fmt {
    const FMT: QFormat;
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales;
    unsafe fn codes(b: *const u8, j: usize) -> Codes;
}

#[inline(always)]
unsafe fn f16(p: *const u8) -> f32 {
    f16_to_f32((p as *const u16).read_unaligned())
}

/// Legacy blocks: `d` at byte 0 of each block, and `m` at byte 2 where `MIN`.
#[inline(always)]
unsafe fn legacy_scales<const MIN: bool>(b: *const u8, ts: usize, nbj: usize) -> Scales {
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

/// u8 values `v` (elements in order) widened to codes, plus `offset`.
#[inline(always)]
unsafe fn widen(lo: uint8x16_t, hi: uint8x16_t, offset: i16) -> Codes {
    let o = vdupq_n_s16(offset);
    let w = |v: uint16x8_t| vaddq_s16(vreinterpretq_s16_u16(v), o);
    [
        w(vmovl_u8(vget_low_u8(lo))),
        w(vmovl_high_u8(lo)),
        w(vmovl_u8(vget_low_u8(hi))),
        w(vmovl_high_u8(hi)),
    ]
}

/// Bits 0..16 (`lo`) and 16..32 (`hi`) of `qh` as bytes 0x10 or 0.
#[inline(always)]
unsafe fn qh_bits(qh: u32) -> (uint8x16_t, uint8x16_t) {
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

/// Nibbles of 16 bytes: elements 0..16 (low) and 16..32 (high).
#[inline(always)]
unsafe fn nibbles(qs: *const u8) -> (uint8x16_t, uint8x16_t) {
    let v = vld1q_u8(qs);
    (vandq_u8(v, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(v))
}

struct Q40;
impl Fmt for Q40 {
    const FMT: QFormat = QFormat::Q4_0;
    #[inline(always)]
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales {
        legacy_scales::<false>(b, 18, nbj)
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
        let (lo, hi) = nibbles(b.add(18 * j + 2));
        widen(lo, hi, -8)
    }
}

struct Q41;
impl Fmt for Q41 {
    const FMT: QFormat = QFormat::Q4_1;
    #[inline(always)]
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales {
        legacy_scales::<true>(b, 20, nbj)
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
        let (lo, hi) = nibbles(b.add(20 * j + 4));
        widen(lo, hi, 0)
    }
}

struct Q50;
impl Fmt for Q50 {
    const FMT: QFormat = QFormat::Q5_0;
    #[inline(always)]
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales {
        legacy_scales::<false>(b, 22, nbj)
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
        let blk = b.add(22 * j);
        let (h0, h1) = qh_bits((blk.add(2) as *const u32).read_unaligned());
        let (lo, hi) = nibbles(blk.add(6));
        widen(vorrq_u8(lo, h0), vorrq_u8(hi, h1), -16)
    }
}

struct Q51;
impl Fmt for Q51 {
    const FMT: QFormat = QFormat::Q5_1;
    #[inline(always)]
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales {
        legacy_scales::<true>(b, 24, nbj)
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
        let blk = b.add(24 * j);
        let (h0, h1) = qh_bits((blk.add(4) as *const u32).read_unaligned());
        let (lo, hi) = nibbles(blk.add(8));
        widen(vorrq_u8(lo, h0), vorrq_u8(hi, h1), 0)
    }
}

struct Q80;
impl Fmt for Q80 {
    const FMT: QFormat = QFormat::Q8_0;
    #[inline(always)]
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales {
        legacy_scales::<false>(b, 34, nbj)
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
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

#[inline(always)]
unsafe fn k4_scales(b: *const u8) -> Scales {
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

/// The 32 nibbles of sub-block `j` of a Q4_K/Q5_K block whose quants start at `q`.
#[inline(always)]
unsafe fn k4_nibbles(q: *const u8, j: usize) -> (uint8x16_t, uint8x16_t) {
    let q = q.add(32 * (j / 2));
    let (v0, v1) = (vld1q_u8(q), vld1q_u8(q.add(16)));
    if j.is_multiple_of(2) {
        let m = vdupq_n_u8(0x0f);
        (vandq_u8(v0, m), vandq_u8(v1, m))
    } else {
        (vshrq_n_u8::<4>(v0), vshrq_n_u8::<4>(v1))
    }
}

/// `(v >> n) & mask` on bytes, `n` at run time.
#[inline(always)]
unsafe fn shr_and(v: uint8x16_t, n: usize, mask: u8) -> uint8x16_t {
    vandq_u8(vshlq_u8(v, vdupq_n_s8(-(n as i8))), vdupq_n_u8(mask))
}

struct Q4K;
impl Fmt for Q4K {
    const FMT: QFormat = QFormat::Q4K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, _: usize) -> Scales {
        k4_scales(b)
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
        let (lo, hi) = k4_nibbles(b.add(16), j);
        widen(lo, hi, 0)
    }
}

struct Q5K;
impl Fmt for Q5K {
    const FMT: QFormat = QFormat::Q5K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, _: usize) -> Scales {
        k4_scales(b)
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
        let (lo, hi) = k4_nibbles(b.add(48), j);
        let h = |p: *const u8| vshlq_n_u8::<4>(shr_and(vld1q_u8(p), j, 1));
        widen(vorrq_u8(lo, h(b.add(16))), vorrq_u8(hi, h(b.add(32))), 0)
    }
}

/// 16 signed codes (i8 range) widened and multiplied by per-16 scales.
#[inline(always)]
unsafe fn scaled(lo: uint8x16_t, hi: uint8x16_t, offset: i16, s0: i16, s1: i16) -> Codes {
    let c = widen(lo, hi, offset);
    [
        vmulq_n_s16(c[0], s0),
        vmulq_n_s16(c[1], s0),
        vmulq_n_s16(c[2], s1),
        vmulq_n_s16(c[3], s1),
    ]
}

struct Q6K;
impl Fmt for Q6K {
    const FMT: QFormat = QFormat::Q6K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, _: usize) -> Scales {
        Scales {
            ws: [f16(b.add(208)); 8],
            m: [[0.0; 8]; 2],
        }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
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

struct Q3K;
impl Fmt for Q3K {
    const FMT: QFormat = QFormat::Q3K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, _: usize) -> Scales {
        Scales {
            ws: [f16(b.add(108)); 8],
            m: [[0.0; 8]; 2],
        }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
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

struct Q2K;
impl Fmt for Q2K {
    const FMT: QFormat = QFormat::Q2K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, _: usize) -> Scales {
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
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> Codes {
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
        }
    };
}

unsafe fn decode(fmt: QFormat, w: &[u8], row_bytes: usize, p: &mut Panel) {
    with_format!(fmt, F, M, {
        let _ = M;
        decode_rows::<F>(w, row_bytes, p)
    })
}

#[inline(always)]
unsafe fn decode_rows<F: Fmt>(w: &[u8], row_bytes: usize, p: &mut Panel) {
    let (cols, ng) = (p.cols, p.ng);
    let nb = cols / QB;
    let npg = F::FMT.min_kind().per_group();
    let gbytes = F::FMT.group_bytes();
    for r in 0..p.nr {
        let row = w.as_ptr().add(r * row_bytes);
        for g in 0..ng {
            let nbj = (nb - GROUP * g).min(GROUP);
            let b = row.add(g * gbytes);
            let sc = F::scales(b, nbj);
            let at = (r * ng + g) * GROUP;
            p.ws[at..at + GROUP].copy_from_slice(&sc.ws);
            for h in 0..npg / GROUP {
                let at = (r * ng + g) * npg + GROUP * h;
                p.minv[at..at + GROUP].copy_from_slice(&sc.m[h]);
            }
            let codes = p.codes.as_mut_ptr().add(r * cols + 256 * g);
            for j in 0..nbj {
                let c = F::codes(b, j);
                for (i, ci) in c.iter().enumerate() {
                    vst1q_s16(codes.add(QB * j + 8 * i), *ci);
                }
            }
        }
    }
}

// ---- products -----------------------------------------------------------------------

unsafe fn gemv(fmt: QFormat, w: &[u8], row_bytes: usize, a: &QuantActs, t: usize, out: Out) {
    with_format!(fmt, F, M, {
        let nr = w.len() / row_bytes;
        let mut r = 0;
        while r + 4 <= nr {
            fused::<F, 4, M>(w, row_bytes, r, a, t, out);
            r += 4;
        }
        while r < nr {
            fused::<F, 1, M>(w, row_bytes, r, a, t, out);
            r += 1;
        }
    })
}

/// `R` rows from `r0` times token `t`, codes decoded in registers.
#[inline(always)]
unsafe fn fused<F: Fmt, const R: usize, const M: u8>(
    w: &[u8],
    row_bytes: usize,
    r0: usize,
    a: &QuantActs,
    t: usize,
    out: Out,
) {
    let (cols, nbp) = (a.cols, a.nbp());
    let nb = cols / QB;
    let ng = nb.div_ceil(GROUP);
    let npg = 8 * M as usize;
    let gbytes = F::FMT.group_bytes();
    let xq = a.q.as_ptr().add(t * cols);
    let xd = a.d.as_ptr().add(t * nbp);
    let xs = if M == 2 {
        a.s16.as_ptr().add(t * 2 * nbp)
    } else {
        a.s.as_ptr().add(t * nbp)
    };
    let mut acc = [zero8(); R];
    for g in 0..ng {
        let nbj = (nb - GROUP * g).min(GROUP);
        let mut sc: [Scales; R] = std::array::from_fn(|r| {
            F::scales(w.as_ptr().add((r0 + r) * row_bytes + g * gbytes), nbj)
        });
        for r in 0..R {
            for j in 0..GROUP {
                sc[r].ws[j] *= *xd.add(GROUP * g + j);
            }
        }
        for j in 0..nbj {
            let x = load_codes(xq.add((GROUP * g + j) * QB));
            for r in 0..R {
                let c = F::codes(w.as_ptr().add((r0 + r) * row_bytes + g * gbytes), j);
                acc[r] = step(acc[r], sc[r].ws[j], isum(&c, &x));
            }
        }
        for h in 0..M as usize {
            let s8 = load8(xs.add(npg * g + GROUP * h));
            for r in 0..R {
                acc[r] = fma8(acc[r], load8(sc[r].m[h].as_ptr()), s8);
            }
        }
    }
    for r in 0..R {
        *out.ptr.add(r0 + r) = hsum(acc[r]);
    }
}

unsafe fn gemm(p: &Panel, a: &QuantActs, t0: usize, nt: usize, out: Out) {
    match p.min_kind() {
        MinKind::None => gemm_m::<0>(p, a, t0, nt, out),
        MinKind::Per32 => gemm_m::<1>(p, a, t0, nt, out),
        MinKind::Per16 => gemm_m::<2>(p, a, t0, nt, out),
    }
}

#[inline(always)]
unsafe fn gemm_m<const M: u8>(p: &Panel, a: &QuantActs, t0: usize, nt: usize, out: Out) {
    let mut t = 0;
    while t < nt {
        let n = (nt - t).min(4);
        let o = Out {
            ptr: out.ptr.add(t * out.ldo),
            ldo: out.ldo,
        };
        let mut r = 0;
        while r < p.nr {
            let two = r + 2 <= p.nr;
            match (two, n) {
                (true, 4) => micro::<2, 4, M>(p, r, a, t0 + t, o),
                (true, 3) => micro::<2, 3, M>(p, r, a, t0 + t, o),
                (true, 2) => micro::<2, 2, M>(p, r, a, t0 + t, o),
                (true, _) => micro::<2, 1, M>(p, r, a, t0 + t, o),
                (false, 4) => micro::<1, 4, M>(p, r, a, t0 + t, o),
                (false, 3) => micro::<1, 3, M>(p, r, a, t0 + t, o),
                (false, 2) => micro::<1, 2, M>(p, r, a, t0 + t, o),
                (false, _) => micro::<1, 1, M>(p, r, a, t0 + t, o),
            }
            r += if two { 2 } else { 1 };
        }
        t += n;
    }
}

/// `R` decoded rows from `r0` times `T` tokens from `t0`.
#[inline(always)]
unsafe fn micro<const R: usize, const T: usize, const M: u8>(
    p: &Panel,
    r0: usize,
    a: &QuantActs,
    t0: usize,
    out: Out,
) {
    let (cols, ng, nbp) = (p.cols, p.ng, a.nbp());
    let nb = cols / QB;
    let npg = 8 * M as usize;
    let mut acc = [[zero8(); T]; R];
    for g in 0..ng {
        let nbj = (nb - GROUP * g).min(GROUP);
        let mut pp = [[[0f32; 8]; T]; R];
        for r in 0..R {
            for t in 0..T {
                for j in 0..GROUP {
                    pp[r][t][j] =
                        p.ws[((r0 + r) * ng + g) * GROUP + j] * a.d[(t0 + t) * nbp + GROUP * g + j];
                }
            }
        }
        for j in 0..nbj {
            let e = (GROUP * g + j) * QB;
            for r in 0..R {
                let c = load_codes(p.codes.as_ptr().add((r0 + r) * cols + e));
                for t in 0..T {
                    let x = load_codes(a.q.as_ptr().add((t0 + t) * cols + e));
                    acc[r][t] = step(acc[r][t], pp[r][t][j], isum(&c, &x));
                }
            }
        }
        for h in 0..M as usize {
            for r in 0..R {
                let m8 = load8(p.minv.as_ptr().add(((r0 + r) * ng + g) * npg + GROUP * h));
                for t in 0..T {
                    let s = if M == 2 {
                        a.s16.as_ptr().add((t0 + t) * 2 * nbp)
                    } else {
                        a.s.as_ptr().add((t0 + t) * nbp)
                    };
                    acc[r][t] = fma8(acc[r][t], m8, load8(s.add(npg * g + GROUP * h)));
                }
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            *out.ptr.add(t * out.ldo + r0 + r) = hsum(acc[r][t]);
        }
    }
}

// ---- float weights ------------------------------------------------------------------

/// f16 bits (zero-extended to u32 lanes) to f32, the branch-free formula of
/// `quant::f16_to_f32`, exact for every input.
#[inline(always)]
unsafe fn f16x4(h: uint32x4_t) -> float32x4_t {
    let sign = vshlq_n_u32::<16>(vandq_u32(h, vdupq_n_u32(0x8000)));
    let em = vshlq_n_u32::<13>(vandq_u32(h, vdupq_n_u32(0x7fff)));
    let exp = vandq_u32(em, vdupq_n_u32(0x0f80_0000));
    let normal = vaddq_u32(em, vdupq_n_u32((127 - 15) << 23));
    let special = vaddq_u32(em, vdupq_n_u32((255 - 31) << 23));
    let magic = vdupq_n_f32(f32::from_bits(113 << 23));
    let sub = vreinterpretq_u32_f32(vsubq_f32(
        vreinterpretq_f32_u32(vaddq_u32(em, vdupq_n_u32(113 << 23))),
        magic,
    ));
    let is_special = vceqq_u32(exp, vdupq_n_u32(0x0f80_0000));
    let is_sub = vceqq_u32(exp, vdupq_n_u32(0));
    let bits = vbslq_u32(is_special, special, vbslq_u32(is_sub, sub, normal));
    vreinterpretq_f32_u32(vorrq_u32(bits, sign))
}

/// 8 weights of format `F` (0: f32, 1: f16, 2: bf16) from element `i` of `row`.
#[inline(always)]
unsafe fn wload8<const F: u8>(row: *const u8, i: usize) -> F8 {
    match F {
        0 => load8((row as *const f32).add(i)),
        _ => {
            let h = vld1q_u16(row.add(2 * i) as *const u16);
            let (lo, hi) = (vmovl_u16(vget_low_u16(h)), vmovl_high_u16(h));
            if F == 1 {
                (f16x4(lo), f16x4(hi))
            } else {
                (
                    vreinterpretq_f32_u32(vshlq_n_u32::<16>(lo)),
                    vreinterpretq_f32_u32(vshlq_n_u32::<16>(hi)),
                )
            }
        }
    }
}

unsafe fn float_gemm(f: FFormat, w: &[u8], nr: usize, cols: usize, x: &[f32], nt: usize, out: Out) {
    match f {
        FFormat::F32 => float_gemm_f::<0>(w, nr, cols, x, nt, out),
        FFormat::F16 => float_gemm_f::<1>(w, nr, cols, x, nt, out),
        FFormat::BF16 => float_gemm_f::<2>(w, nr, cols, x, nt, out),
    }
}

#[inline(always)]
unsafe fn float_gemm_f<const F: u8>(
    w: &[u8],
    nr: usize,
    cols: usize,
    x: &[f32],
    nt: usize,
    out: Out,
) {
    let mut t = 0;
    while t < nt {
        let n = (nt - t).min(4);
        let o = Out {
            ptr: out.ptr.add(t * out.ldo),
            ldo: out.ldo,
        };
        let xt = &x[t * cols..];
        let mut r = 0;
        while r < nr {
            let two = r + 2 <= nr;
            match (two, n) {
                (true, 4) => micro_f::<F, 2, 4>(w, r, cols, xt, o),
                (true, 3) => micro_f::<F, 2, 3>(w, r, cols, xt, o),
                (true, 2) => micro_f::<F, 2, 2>(w, r, cols, xt, o),
                (true, _) => micro_f::<F, 2, 1>(w, r, cols, xt, o),
                (false, 4) => micro_f::<F, 1, 4>(w, r, cols, xt, o),
                (false, 3) => micro_f::<F, 1, 3>(w, r, cols, xt, o),
                (false, 2) => micro_f::<F, 1, 2>(w, r, cols, xt, o),
                (false, _) => micro_f::<F, 1, 1>(w, r, cols, xt, o),
            }
            r += if two { 2 } else { 1 };
        }
        t += n;
    }
}

#[inline(always)]
unsafe fn micro_f<const F: u8, const R: usize, const T: usize>(
    w: &[u8],
    r0: usize,
    cols: usize,
    x: &[f32],
    out: Out,
) {
    let esize = if F == 0 { 4 } else { 2 };
    let rows: [*const u8; R] = std::array::from_fn(|r| w.as_ptr().add((r0 + r) * cols * esize));
    let mut acc = [[zero8(); T]; R];
    let n8 = cols / 8 * 8;
    let mut i = 0;
    while i < n8 {
        for r in 0..R {
            let wv = wload8::<F>(rows[r], i);
            for t in 0..T {
                acc[r][t] = fma8(acc[r][t], wv, load8(x.as_ptr().add(t * cols + i)));
            }
        }
        i += 8;
    }
    let f = [FFormat::F32, FFormat::F16, FFormat::BF16][F as usize];
    for r in 0..R {
        for t in 0..T {
            let mut v = acc[r][t];
            if n8 < cols {
                // The tail goes lane by lane, as in the scalar twin.
                let mut lanes = [0f32; 8];
                vst1q_f32(lanes.as_mut_ptr(), v.0);
                vst1q_f32(lanes.as_mut_ptr().add(4), v.1);
                let row = std::slice::from_raw_parts(rows[r], cols * esize);
                for i in n8..cols {
                    lanes[i % 8] = float_at(f, row, i).mul_add(x[t * cols + i], lanes[i % 8]);
                }
                v = load8(lanes.as_ptr());
            }
            *out.ptr.add(t * out.ldo + r0 + r) = hsum(v);
        }
    }
}

// ---- attention ----------------------------------------------------------------------

unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [zero8(); 4];
    let nc = n / 8;
    for c in 0..nc {
        acc[c % 4] = fma8(acc[c % 4], load8(pa.add(8 * c)), load8(pb.add(8 * c)));
    }
    if 8 * nc < n {
        let mut lanes = [0f32; 8];
        vst1q_f32(lanes.as_mut_ptr(), acc[nc % 4].0);
        vst1q_f32(lanes.as_mut_ptr().add(4), acc[nc % 4].1);
        for i in 8 * nc..n {
            lanes[i % 8] = a[i].mul_add(b[i], lanes[i % 8]);
        }
        acc[nc % 4] = load8(lanes.as_ptr());
    }
    let add = |x: F8, y: F8| (vaddq_f32(x.0, y.0), vaddq_f32(x.1, y.1));
    hsum(add(add(acc[0], acc[1]), add(acc[2], acc[3])))
}

unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len();
    let n4 = n / 4 * 4;
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let mut i = 0;
    while i < n4 {
        vst1q_f32(
            py.add(i),
            vfmaq_n_f32(vld1q_f32(py.add(i)), vld1q_f32(px.add(i)), a),
        );
        i += 4;
    }
    for i in n4..n {
        y[i] = a.mul_add(x[i], y[i]);
    }
}
