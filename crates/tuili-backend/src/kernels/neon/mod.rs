//! NEON twins of `scalar` (aarch64, where NEON is always present), bit-identical to it.
//!
//! The 8 lanes of the specification are two `float32x4_t`: lanes 0..4 hold the products
//! of elements `{2k, 2k+1, 16+2k, 17+2k}` for k < 4 (elements 0..8 and 16..24), lanes
//! 4..8 those of elements 8..16 and 24..32. A 32-element block of codes or activations
//! is four `int16x8_t`: elements 0..8, 8..16, 16..24, 24..32.
//!
//! `matmul` repacks every integer format for the interleaved products (`interleaved`,
//! `interleaved_k`), which follow the block-sum specification instead; `dot` has them
//! with the dot-product extension (`sdot`), in the `neon_dotprod` table.

use std::arch::aarch64::*;

mod dot;
mod formats;
mod interleaved;
mod interleaved_k;

use formats::{with_format, Fmt, Mx4, Scales, Q2K, Q3K, Q40, Q41, Q4K, Q50, Q51, Q5K, Q6K, Q80};

use super::scalar::{float_at, QMAX, TINY};
use super::{FFormat, Kernels, MinKind, Out, Panel, QFormat, QuantActs, GROUP, QB};
use crate::kv::{KvType, Q8_0_BLOCK, Q8_0_BYTES};

static NEON: Kernels = Kernels {
    name: "neon",
    f32_reference: false,
    quantize: quantize_row,
    pack: None,
    octets: None,
    decode,
    gemm,
    gemv: Some(gemv),
    direct: None,
    direct_max: 0,
    interleaved: interleaved::interleaved,
    tunes_tiles: false,
    float_gemm,
    bf16: None,
    dot,
    axpy,
    scores: scores_by_dot,
    mix: mix_by_axpy,
    softmax: super::scalar::softmax,
    glu: super::scalar::glu,
    narrower: None,
};

/// The NEON table (NEON is part of the aarch64 baseline).
pub(super) fn kernels() -> &'static Kernels {
    &NEON
}

/// The NEON table with the interleaved products of the dot-product extension (`dot`):
/// the same bits.
static NEON_DOTPROD: Kernels = Kernels {
    name: "neon_dotprod",
    interleaved: dot::interleaved,
    ..NEON
};

/// The dot-product table, if this CPU has the extension (ARMv8.4 on, optional from
/// ARMv8.2).
pub(super) fn dotprod_kernels() -> Option<&'static Kernels> {
    std::arch::is_aarch64_feature_detected!("dotprod").then_some(&NEON_DOTPROD)
}

// ---- small helpers ------------------------------------------------------------------

/// 8 lanes as two halves.
type F8 = (float32x4_t, float32x4_t);
pub(super) type Codes = [int16x8_t; 4];

#[inline(always)]
unsafe fn zero8() -> F8 {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe { (vdupq_n_f32(0.0), vdupq_n_f32(0.0)) }
}

/// `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`, as `kernels::reduce8`.
#[inline(always)]
unsafe fn hsum(v: F8) -> f32 {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
        let s4 = vaddq_f32(v.0, v.1);
        let s2 = vadd_f32(vget_low_f32(s4), vget_high_f32(s4));
        vget_lane_f32::<0>(s2) + vget_lane_f32::<1>(s2)
    }
}

#[inline(always)]
unsafe fn load8(p: *const f32) -> F8 {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe { (vld1q_f32(p), vld1q_f32(p.add(4))) }
}

/// `acc = fma(a, b, acc)` on 8 lanes.
#[inline(always)]
unsafe fn fma8(acc: F8, a: F8, b: F8) -> F8 {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe { (vfmaq_f32(acc.0, a.0, b.0), vfmaq_f32(acc.1, a.1, b.1)) }
}

#[inline(always)]
unsafe fn load_codes(p: *const i16) -> Codes {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
        [
            vld1q_s16(p),
            vld1q_s16(p.add(8)),
            vld1q_s16(p.add(16)),
            vld1q_s16(p.add(24)),
        ]
    }
}

/// The 8 exact lane sums of a block: `c · x` split as the specification says.
#[inline(always)]
unsafe fn isum(c: &Codes, x: &Codes) -> (int32x4_t, int32x4_t) {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
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
}

/// `acc = fma(p, float(isum), acc)`.
#[inline(always)]
unsafe fn step(acc: F8, p: f32, s: (int32x4_t, int32x4_t)) -> F8 {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
        (
            vfmaq_n_f32(acc.0, vcvtq_f32_s32(s.0), p),
            vfmaq_n_f32(acc.1, vcvtq_f32_s32(s.1), p),
        )
    }
}

// ---- activations --------------------------------------------------------------------

unsafe fn quantize_row(x: &[f32], q: &mut [i16], d: &mut [f32], s: &mut [f32], s16: &mut [f32]) {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
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
}

unsafe fn decode(fmt: QFormat, w: &[u8], row_bytes: usize, p: &mut Panel) {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
        with_format!(fmt, F, M, {
            let _ = M;
            decode_rows::<F>(w, row_bytes, p)
        })
    }
}

#[inline(always)]
unsafe fn decode_rows<F: Fmt>(w: &[u8], row_bytes: usize, p: &mut Panel) {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
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
}

// ---- products -----------------------------------------------------------------------

unsafe fn gemv(fmt: QFormat, w: &[u8], row_bytes: usize, a: &QuantActs, t: usize, out: Out) {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
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
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
        let cols = a.cols;
        let nb = cols / QB;
        let ng = nb.div_ceil(GROUP);
        let npg = 8 * M as usize;
        let gbytes = F::FMT.group_bytes();
        let (xq, xd, xs) = a.token_ptrs(t, M);
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
}

unsafe fn gemm(p: &Panel, a: &QuantActs, t0: usize, nt: usize, out: Out) {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
        match p.min_kind() {
            MinKind::None => gemm_m::<0>(p, a, t0, nt, out),
            MinKind::Per32 => gemm_m::<1>(p, a, t0, nt, out),
            MinKind::Per16 => gemm_m::<2>(p, a, t0, nt, out),
        }
    }
}

#[inline(always)]
unsafe fn gemm_m<const M: u8>(p: &Panel, a: &QuantActs, t0: usize, nt: usize, out: Out) {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
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
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
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
                        pp[r][t][j] = p.ws[((r0 + r) * ng + g) * GROUP + j]
                            * a.d[(t0 + t) * nbp + GROUP * g + j];
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
                        let s = a.token_ptrs(t0 + t, M).2;
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
}

// ---- float weights ------------------------------------------------------------------

/// f16 bits (zero-extended to u32 lanes) to f32, the branch-free formula of
/// `quant::f16_to_f32`, exact for every input.
#[inline(always)]
unsafe fn f16x4(h: uint32x4_t) -> float32x4_t {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
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
}

/// 8 weights of format `F` (0: f32, 1: f16, 2: bf16) from element `i` of `row`.
#[inline(always)]
unsafe fn wload8<const F: u8>(row: *const u8, i: usize) -> F8 {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
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
}

unsafe fn float_gemm(f: FFormat, w: &[u8], nr: usize, cols: usize, x: &[f32], nt: usize, out: Out) {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
        match f {
            FFormat::F32 => float_gemm_f::<0>(w, nr, cols, x, nt, out),
            FFormat::F16 => float_gemm_f::<1>(w, nr, cols, x, nt, out),
            FFormat::BF16 => float_gemm_f::<2>(w, nr, cols, x, nt, out),
        }
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
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
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
}

#[inline(always)]
unsafe fn micro_f<const F: u8, const R: usize, const T: usize>(
    w: &[u8],
    r0: usize,
    cols: usize,
    x: &[f32],
    out: Out,
) {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
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
}

// ---- attention ----------------------------------------------------------------------

grouped_attention_ops!(dot, axpy);

/// `KvType::decode` with NEON, the same bits: f16 by `f16x4` (integer steps, as the
/// weight decoders), bf16 by a shift, `q8_0` codes widened, converted and scaled.
unsafe fn decode_kv(ty: KvType, b: &[u8], out: &mut [f32]) {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
        let n = out.len();
        let (pb, po) = (b.as_ptr(), out.as_mut_ptr());
        let mut i = 0;
        match ty {
            KvType::F32 => {
                while i + 4 <= n {
                    vst1q_f32(po.add(i), vreinterpretq_f32_u8(vld1q_u8(pb.add(4 * i))));
                    i += 4;
                }
            }
            KvType::F16 | KvType::BF16 => {
                while i + 4 <= n {
                    let h = vmovl_u16(vreinterpret_u16_u8(vld1_u8(pb.add(2 * i))));
                    let v = if ty == KvType::F16 {
                        f16x4(h)
                    } else {
                        vreinterpretq_f32_u32(vshlq_n_u32::<16>(h))
                    };
                    vst1q_f32(po.add(i), v);
                    i += 4;
                }
            }
            KvType::Q8_0 => {
                while i + 8 <= n {
                    let blk = pb.add(i / Q8_0_BLOCK * Q8_0_BYTES);
                    let d = crate::quant::f16_to_f32(u16::from_le_bytes([*blk, *blk.add(1)]));
                    let q = vmovl_s8(vld1_s8(blk.add(2 + i % Q8_0_BLOCK) as *const i8));
                    let lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(q)));
                    let hi = vcvtq_f32_s32(vmovl_high_s16(q));
                    vst1q_f32(po.add(i), vmulq_n_f32(lo, d));
                    vst1q_f32(po.add(i + 4), vmulq_n_f32(hi, d));
                    i += 8;
                }
            }
        }
        for (j, o) in out.iter_mut().enumerate().skip(i) {
            *o = ty.at(b, j);
        }
    }
}

#[inline]
unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
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
}

#[inline]
unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    // SAFETY: NEON is part of every aarch64 CPU; the caller keeps the pointers and lengths
    // it gives within the buffers its safe caller checked
    unsafe {
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
}
