//! The lane-specification products of the integer formats: weight rows decoded to a
//! panel (`decode`), one token straight from the weight bytes (`gemv`), and tiles of rows
//! times tokens over a panel (`gemm`).

use std::arch::x86_64::*;

use super::formats::{with_format, Fmt, Mx4, Q2K, Q3K, Q40, Q41, Q4K, Q50, Q51, Q5K, Q6K, Q80};
use super::{hsum, store2, A8};
use crate::kernels::{MinKind, Out, Panel, QFormat, QuantActs, GROUP, QB};

// ---- weight decoding ----------------------------------------------------------------

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn decode(fmt: QFormat, w: &[u8], row_bytes: usize, p: &mut Panel) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        match fmt {
            QFormat::Q4_0 => decode_rows::<Q40>(w, row_bytes, p),
            QFormat::Q4_1 => decode_rows::<Q41>(w, row_bytes, p),
            QFormat::Q5_0 => decode_rows::<Q50>(w, row_bytes, p),
            QFormat::Q5_1 => decode_rows::<Q51>(w, row_bytes, p),
            QFormat::Q8_0 => decode_rows::<Q80>(w, row_bytes, p),
            QFormat::Q2K => decode_rows::<Q2K>(w, row_bytes, p),
            QFormat::Q3K => decode_rows::<Q3K>(w, row_bytes, p),
            QFormat::Q4K => decode_rows::<Q4K>(w, row_bytes, p),
            QFormat::Q5K => decode_rows::<Q5K>(w, row_bytes, p),
            QFormat::Q6K => decode_rows::<Q6K>(w, row_bytes, p),
            QFormat::Mxfp4 => decode_rows::<Mx4>(w, row_bytes, p),
        }
    }
}

#[inline(always)]
unsafe fn decode_rows<F: Fmt>(w: &[u8], row_bytes: usize, p: &mut Panel) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
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
                _mm256_storeu_ps(p.ws.as_mut_ptr().add((r * ng + g) * GROUP), sc.ws);
                let mv = p.minv.as_mut_ptr().add((r * ng + g) * npg);
                for (h, m) in sc.m.iter().enumerate().take(npg / GROUP) {
                    _mm256_storeu_ps(mv.add(GROUP * h), *m);
                }
                let codes = p.codes.as_mut_ptr().add(r * cols + 256 * g);
                for j in 0..nbj {
                    let (c0, c1) = F::codes(b, j);
                    store2(codes.add(QB * j), c0, c1);
                }
            }
        }
    }
}

// ---- one token ----------------------------------------------------------------------

#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::kernels) unsafe fn gemv(
    fmt: QFormat,
    w: &[u8],
    row_bytes: usize,
    a: &QuantActs,
    t: usize,
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe { with_format!(fmt, gemv_f(w, row_bytes, a, t, out)) }
}

#[inline(always)]
unsafe fn gemv_f<F: Fmt, const M: u8>(
    w: &[u8],
    row_bytes: usize,
    a: &QuantActs,
    t: usize,
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let nr = w.len() / row_bytes;
        let mut r = 0;
        while r + R1 <= nr {
            fused::<F, R1, M>(w, row_bytes, r, a, t, out);
            r += R1;
        }
        while r < nr {
            fused::<F, 1, M>(w, row_bytes, r, a, t, out);
            r += 1;
        }
    }
}

/// How many row tiles ahead the one-token kernel prefetches.
const PREFETCH_TILES: usize = 2;

/// `R` rows from `r0` times token `t`, decoding codes in registers: the same operations
/// as decoding a panel and running `micro::<R, 1, M>` on it.
#[inline(always)]
unsafe fn fused<F: Fmt, const R: usize, const M: u8>(
    w: &[u8],
    row_bytes: usize,
    r0: usize,
    a: &QuantActs,
    t: usize,
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let cols = a.cols;
        let nb = cols / QB;
        let ng = nb.div_ceil(GROUP);
        let npg = 8 * M as usize;
        let gbytes = F::FMT.group_bytes();
        let rows: [*const u8; R] = std::array::from_fn(|r| w.as_ptr().add((r0 + r) * row_bytes));
        let (xq, xd, xs) = a.token_ptrs(t, M);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut pp = [A8([0.0; 8]); R];
        let mut mins = [[_mm256_setzero_ps(); 2]; R];
        for g in 0..ng {
            let nbj = (nb - GROUP * g).min(GROUP);
            let d8 = _mm256_loadu_ps(xd.add(GROUP * g));
            // Rows are short (hundreds of bytes), too short for the hardware prefetcher to
            // run ahead: fetch the same group of the next tile's rows now.
            let glen = gbytes.min(row_bytes - g * gbytes);
            for r in 0..R {
                let next = rows[r].wrapping_add(g * gbytes + PREFETCH_TILES * R * row_bytes);
                let mut off = 0;
                while off < glen {
                    _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(off) as *const i8);
                    off += 64;
                }
            }
            for r in 0..R {
                let sc = F::scales(rows[r].add(g * gbytes), nbj);
                _mm256_store_ps(pp[r].0.as_mut_ptr(), _mm256_mul_ps(sc.ws, d8));
                mins[r] = sc.m;
            }
            for j in 0..nbj {
                let e = (GROUP * g + j) * QB;
                let x0 = _mm256_loadu_si256(xq.add(e) as *const __m256i);
                let x1 = _mm256_loadu_si256(xq.add(e + 16) as *const __m256i);
                for r in 0..R {
                    let (c0, c1) = F::codes(rows[r].add(g * gbytes), j);
                    let isum =
                        _mm256_add_epi32(_mm256_madd_epi16(c0, x0), _mm256_madd_epi16(c1, x1));
                    acc[r] = _mm256_fmadd_ps(
                        _mm256_broadcast_ss(&pp[r].0[j]),
                        _mm256_cvtepi32_ps(isum),
                        acc[r],
                    );
                }
            }
            for h in 0..M as usize {
                let s8 = _mm256_loadu_ps(xs.add(npg * g + GROUP * h));
                for r in 0..R {
                    acc[r] = _mm256_fmadd_ps(mins[r][h], s8, acc[r]);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            *out.ptr.add(r0 + r) = hsum(*acc_r);
        }
    }
}

// ---- products -----------------------------------------------------------------------

#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::kernels) unsafe fn gemm(p: &Panel, a: &QuantActs, t0: usize, nt: usize, out: Out) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        match p.min_kind() {
            MinKind::None => gemm_m::<0>(p, a, t0, nt, out),
            MinKind::Per32 => gemm_m::<1>(p, a, t0, nt, out),
            MinKind::Per16 => gemm_m::<2>(p, a, t0, nt, out),
        }
    }
}

/// Rows per tile with one token, and rows x tokens per tile with several.
pub(super) const R1: usize = 4;
pub(super) const RN: usize = 2;
pub(super) const TN: usize = 4;

#[inline(always)]
unsafe fn gemm_m<const M: u8>(p: &Panel, a: &QuantActs, t0: usize, nt: usize, out: Out) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let mut t = 0;
        while t < nt {
            let left = nt - t;
            let o = Out {
                ptr: out.ptr.add(t * out.ldo),
                ldo: out.ldo,
            };
            let tt = t0 + t;
            let mut r = 0;
            if left == 1 {
                while r + R1 <= p.nr {
                    micro::<R1, 1, M>(p, r, a, tt, o);
                    r += R1;
                }
                while r < p.nr {
                    micro::<1, 1, M>(p, r, a, tt, o);
                    r += 1;
                }
                t += 1;
                continue;
            }
            let n = left.min(TN);
            while r < p.nr {
                let two = r + RN <= p.nr;
                match (two, n) {
                    (true, 4) => micro::<RN, 4, M>(p, r, a, tt, o),
                    (true, 3) => micro::<RN, 3, M>(p, r, a, tt, o),
                    (true, _) => micro::<RN, 2, M>(p, r, a, tt, o),
                    (false, 4) => micro::<1, 4, M>(p, r, a, tt, o),
                    (false, 3) => micro::<1, 3, M>(p, r, a, tt, o),
                    (false, _) => micro::<1, 2, M>(p, r, a, tt, o),
                }
                r += if two { RN } else { 1 };
            }
            t += n;
        }
    }
}

/// `R` rows from `r0` times `T` tokens from `t0`, written at `out[t * ldo + r0 + r]`.
#[inline(always)]
unsafe fn micro<const R: usize, const T: usize, const M: u8>(
    p: &Panel,
    r0: usize,
    a: &QuantActs,
    t0: usize,
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let (cols, ng) = (p.cols, p.ng);
        let nb = cols / QB;
        let npg = 8 * M as usize;
        let codes: [*const i16; R] = std::array::from_fn(|r| p.codes.as_ptr().add((r0 + r) * cols));
        let ws: [*const f32; R] = std::array::from_fn(|r| p.ws.as_ptr().add((r0 + r) * ng * GROUP));
        let mv: [*const f32; R] = std::array::from_fn(|r| p.minv.as_ptr().add((r0 + r) * ng * npg));
        let tok: [_; T] = std::array::from_fn(|t| a.token_ptrs(t0 + t, M));
        let xq: [*const i16; T] = std::array::from_fn(|t| tok[t].0);
        let xd: [*const f32; T] = std::array::from_fn(|t| tok[t].1);
        let xs: [*const f32; T] = std::array::from_fn(|t| tok[t].2);
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let mut pp = [[A8([0.0; 8]); T]; R];
        for g in 0..ng {
            let nbj = (nb - GROUP * g).min(GROUP);
            for r in 0..R {
                let w8 = _mm256_loadu_ps(ws[r].add(GROUP * g));
                for t in 0..T {
                    let d8 = _mm256_loadu_ps(xd[t].add(GROUP * g));
                    _mm256_store_ps(pp[r][t].0.as_mut_ptr(), _mm256_mul_ps(w8, d8));
                }
            }
            for j in 0..nbj {
                let e = (GROUP * g + j) * QB;
                // The rows' codes stay in registers while each token's block is loaded once.
                let mut c = [[_mm256_setzero_si256(); 2]; R];
                for r in 0..R {
                    c[r][0] = _mm256_load_si256(codes[r].add(e) as *const __m256i);
                    c[r][1] = _mm256_load_si256(codes[r].add(e + 16) as *const __m256i);
                }
                for t in 0..T {
                    let x0 = _mm256_load_si256(xq[t].add(e) as *const __m256i);
                    let x1 = _mm256_load_si256(xq[t].add(e + 16) as *const __m256i);
                    for r in 0..R {
                        let isum = _mm256_add_epi32(
                            _mm256_madd_epi16(c[r][0], x0),
                            _mm256_madd_epi16(c[r][1], x1),
                        );
                        acc[r][t] = _mm256_fmadd_ps(
                            _mm256_broadcast_ss(&pp[r][t].0[j]),
                            _mm256_cvtepi32_ps(isum),
                            acc[r][t],
                        );
                    }
                }
            }
            for h in 0..M as usize {
                for r in 0..R {
                    let m8 = _mm256_loadu_ps(mv[r].add(npg * g + GROUP * h));
                    for t in 0..T {
                        let s8 = _mm256_loadu_ps(xs[t].add(npg * g + GROUP * h));
                        acc[r][t] = _mm256_fmadd_ps(m8, s8, acc[r][t]);
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
