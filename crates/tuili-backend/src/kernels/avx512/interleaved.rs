//! Products of weights in the interleaved layout (`kernels::interleave`): 16 rows per
//! register, one lane per row, so every `vpdpwssd` adds an element pair of 16 rows and
//! one float step (convert, scale product, fused add) serves 16 outputs per block.
//! Tiles of one or two 16-row groups times up to 8 tokens; the rows' codes are decoded
//! in registers once per tile (a shift and a mask per element pair). The K-quants'
//! tiles are in `interleaved_k`.

use std::arch::x86_64::*;
use std::ops::Range;

use std::marker::PhantomData;

use super::super::interleave::{code_offset, Packed, Prefetch, IROWS};
use super::super::{Out, QFormat, QuantActs};
use super::dot32;
use super::interleaved_k::{KMin, K16, Q2, Q3, Q6};

/// Tokens per tile (a step of 8 decoding sequences is one tile).
const TT: usize = 8;

/// `out[t * ldo + r - rows.start] = row r · token t` for rows `rows` (`rows.start` a
/// multiple of 16) and tokens `0..nt`.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn interleaved(
    p: &Packed,
    rows: Range<usize>,
    a: &QuantActs,
    nt: usize,
    out: Out,
    _half_tiles: bool,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        match p.fmt {
            QFormat::Q4_0 => tiles::<Legacy<Q4, 0>>(p, rows, a, nt, out),
            QFormat::Q4_1 => tiles::<Legacy<Q4, 1>>(p, rows, a, nt, out),
            QFormat::Q5_0 => tiles::<Legacy<Q5, 0>>(p, rows, a, nt, out),
            QFormat::Q5_1 => tiles::<Legacy<Q5, 1>>(p, rows, a, nt, out),
            QFormat::Q8_0 => tiles::<Legacy<Q8, 0>>(p, rows, a, nt, out),
            QFormat::Q4K => tiles::<KMin<Q4>>(p, rows, a, nt, out),
            QFormat::Q5K => tiles::<KMin<Q5>>(p, rows, a, nt, out),
            QFormat::Q6K => tiles::<K16<Q6>>(p, rows, a, nt, out),
            QFormat::Q3K => tiles::<K16<Q3>>(p, rows, a, nt, out),
            QFormat::Q2K => tiles::<K16<Q2>>(p, rows, a, nt, out),
            // `interleave::interleavable` leaves it out: never packed.
            QFormat::Mxfp4 => unreachable!("MXFP4 weights are not interleaved"),
        }
    }
}

/// How a format's code bytes become element pairs: `pairs` adds, for every group `g`
/// (its codes at `base[g]`) and token `t` of the tile, the products of block `b` into
/// `s[g][t]` (lane = row).
pub(super) trait Codes {
    unsafe fn pairs<const G: usize, const T: usize>(
        base: &[*const u8; G],
        b: usize,
        xq: &[*const i32; T],
        s: &mut [[__m512i; T]; G],
    );
}

/// Q4_0, Q4_1 (`FIFTH` false) and Q5_0, Q5_1: four pairs per 64-byte chunk,
/// `(word >> 4j) & 0x000f000f`, plus for Q5 each pair's fifth bits from the fifth chunk.
pub(super) struct Small<const FIFTH: bool>;
pub(super) type Q4 = Small<false>;
pub(super) type Q5 = Small<true>;
/// Q8_0: two pairs per chunk, the low and the high bytes of each 16-bit half.
struct Q8;

impl<const FIFTH: bool> Codes for Small<FIFTH> {
    #[inline(always)]
    unsafe fn pairs<const G: usize, const T: usize>(
        base: &[*const u8; G],
        b: usize,
        xq: &[*const i32; T],
        s: &mut [[__m512i; T]; G],
    ) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let cb = if FIFTH { 320 } else { 256 };
            let (m4, m10) = (
                _mm512_set1_epi32(0x000f_000f),
                _mm512_set1_epi32(0x0010_0010),
            );
            // Pair p's fifth bits (bits p and 16 + p) are brought to bits 4 and 20 by a shift
            // left by 4, then one more shift right per pair; from pair 12 on (whose bit 16 + p
            // the shift left pushes out) by a shift right by 8 instead.
            let h0: [__m512i; G] = std::array::from_fn(|g| {
                if FIFTH {
                    _mm512_load_si512(base[g].add(cb * b + 256) as _)
                } else {
                    _mm512_setzero_si512()
                }
            });
            let mut h = h0.map(|v| _mm512_slli_epi32::<4>(v));
            for c in 0..4 {
                let mut v: [__m512i; G] =
                    std::array::from_fn(|g| _mm512_load_si512(base[g].add(cb * b + 64 * c) as _));
                for j in 0..4 {
                    let pair = 16 * b + 4 * c + j;
                    if FIFTH && c == 3 && j == 0 {
                        h = h0.map(|v| _mm512_srli_epi32::<8>(v));
                    }
                    let ck: [__m512i; G] = std::array::from_fn(|g| {
                        let nib = _mm512_and_si512(v[g], m4);
                        if FIFTH {
                            _mm512_or_si512(nib, _mm512_and_si512(h[g], m10))
                        } else {
                            nib
                        }
                    });
                    for t in 0..T {
                        let x = _mm512_set1_epi32(*xq[t].add(pair));
                        for g in 0..G {
                            s[g][t] = dot32(s[g][t], ck[g], x);
                        }
                    }
                    if FIFTH {
                        for hg in h.iter_mut() {
                            *hg = _mm512_srli_epi32::<1>(*hg);
                        }
                    }
                    if j < 3 {
                        for vg in v.iter_mut() {
                            *vg = _mm512_srli_epi32::<4>(*vg);
                        }
                    }
                }
            }
        }
    }
}

impl Codes for Q8 {
    #[inline(always)]
    unsafe fn pairs<const G: usize, const T: usize>(
        base: &[*const u8; G],
        b: usize,
        xq: &[*const i32; T],
        s: &mut [[__m512i; T]; G],
    ) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            for c in 0..8 {
                let v: [__m512i; G] =
                    std::array::from_fn(|g| _mm512_load_si512(base[g].add(512 * b + 64 * c) as _));
                let lo: [__m512i; G] =
                    std::array::from_fn(|g| _mm512_srai_epi16::<8>(_mm512_slli_epi16::<8>(v[g])));
                let hi: [__m512i; G] = std::array::from_fn(|g| _mm512_srai_epi16::<8>(v[g]));
                for t in 0..T {
                    let x0 = _mm512_set1_epi32(*xq[t].add(16 * b + 2 * c));
                    let x1 = _mm512_set1_epi32(*xq[t].add(16 * b + 2 * c + 1));
                    for g in 0..G {
                        s[g][t] = dot32(s[g][t], lo[g], x0);
                        s[g][t] = dot32(s[g][t], hi[g], x1);
                    }
                }
            }
        }
    }
}

/// One tile of a format: groups `g..g + G` times tokens `t0..t0 + T`, writing the
/// first `valid` rows.
pub(super) trait Tile {
    unsafe fn tile<const G: usize, const T: usize>(
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
    unsafe fn tile<const G: usize, const T: usize>(
        p: &Packed,
        g: usize,
        a: &QuantActs,
        t0: usize,
        valid: usize,
        out: Out,
    ) {
        // SAFETY: as for `tile`, whose contract is this one's
        unsafe { tile::<C, M, G, T>(p, g, a, t0, valid, out) }
    }
}

/// Runs the tiles: pairs of groups (a single one at the end), each over the tokens in
/// tiles of up to `TT`.
#[inline(always)]
unsafe fn tiles<K: Tile>(p: &Packed, rows: Range<usize>, a: &QuantActs, nt: usize, out: Out) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        debug_assert!(rows.start.is_multiple_of(IROWS) && rows.end <= p.rows);
        let (g0, g1) = (rows.start / IROWS, rows.end.div_ceil(IROWS));
        let prefetch = Prefetch::new(p, 2);
        for i in g0..g1.min(g0 + 2) {
            prefetch.ramp(p.bytes.as_ptr().add(i * p.group_bytes));
        }
        let mut g = g0;
        while g < g1 {
            let two = g + 1 < g1;
            let valid = (rows.end - g * IROWS).min(if two { 2 * IROWS } else { IROWS });
            let o = Out {
                ptr: out.ptr.add((g - g0) * IROWS),
                ldo: out.ldo,
            };
            let mut t = 0;
            while t < nt {
                let n = (nt - t).min(TT);
                let ot = Out {
                    ptr: o.ptr.add(t * o.ldo),
                    ldo: o.ldo,
                };
                macro_rules! by_tokens {
                    ($g:literal) => {
                        match n {
                            1 => K::tile::<$g, 1>(p, g, a, t, valid, ot),
                            2 => K::tile::<$g, 2>(p, g, a, t, valid, ot),
                            3 => K::tile::<$g, 3>(p, g, a, t, valid, ot),
                            4 => K::tile::<$g, 4>(p, g, a, t, valid, ot),
                            5 => K::tile::<$g, 5>(p, g, a, t, valid, ot),
                            6 => K::tile::<$g, 6>(p, g, a, t, valid, ot),
                            7 => K::tile::<$g, 7>(p, g, a, t, valid, ot),
                            _ => K::tile::<$g, 8>(p, g, a, t, valid, ot),
                        }
                    };
                }
                if two {
                    by_tokens!(2)
                } else {
                    by_tokens!(1)
                }
                t += n;
            }
            g += if two { 2 } else { 1 };
        }
    }
}

/// Groups `g..g + G` times tokens `t0..t0 + T`; writes the first `valid` rows.
#[inline(always)]
unsafe fn tile<C: Codes, const M: u8, const G: usize, const T: usize>(
    p: &Packed,
    g: usize,
    a: &QuantActs,
    t0: usize,
    valid: usize,
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let nb = p.nb();
        let nbp = a.nbp();
        let (scales_at, mins_at) = (p.scales_at(), p.mins_at());
        let base: [*const u8; G] =
            std::array::from_fn(|i| p.bytes.as_ptr().add((g + i) * p.group_bytes));
        let codes = base.map(|b| b.add(p.codes_at()));
        let xq: [*const i32; T] = std::array::from_fn(|i| a.q(t0 + i).as_ptr() as *const i32);
        let xd: [*const f32; T] = std::array::from_fn(|i| a.d.as_ptr().add((t0 + i) * nbp));
        let xs: [*const f32; T] = std::array::from_fn(|i| a.s.as_ptr().add((t0 + i) * nbp));
        let xsum: [*const i32; T] = std::array::from_fn(|i| a.xsum.as_ptr().add((t0 + i) * nbp));
        let offset = code_offset(p.fmt);
        let prefetch = Prefetch::new(p, G);
        let mut acc = [[_mm512_setzero_ps(); T]; G];
        for b in 0..nb {
            for group in base {
                prefetch.block(group, b);
            }
            let mut s = [[_mm512_setzero_si512(); T]; G];
            C::pairs::<G, T>(&codes, b, &xq, &mut s);
            if offset != 0 {
                // Σ (q - o) x = Σ q x - o Σ x, exact.
                for t in 0..T {
                    let c = _mm512_set1_epi32(offset * *xsum[t].add(b));
                    for g in 0..G {
                        s[g][t] = _mm512_sub_epi32(s[g][t], c);
                    }
                }
            }
            for g in 0..G {
                let w = _mm512_cvtph_ps(_mm256_load_si256(
                    base[g].add(scales_at + 2 * IROWS * b) as _
                ));
                for t in 0..T {
                    let pp = _mm512_mul_ps(w, _mm512_set1_ps(*xd[t].add(b)));
                    acc[g][t] = _mm512_fmadd_ps(pp, _mm512_cvtepi32_ps(s[g][t]), acc[g][t]);
                }
                if M == 1 {
                    let m = _mm512_cvtph_ps(_mm256_load_si256(
                        base[g].add(mins_at + 2 * IROWS * b) as _,
                    ));
                    for t in 0..T {
                        acc[g][t] = _mm512_fmadd_ps(m, _mm512_set1_ps(*xs[t].add(b)), acc[g][t]);
                    }
                }
            }
        }
        store(&acc, valid, out);
    }
}

/// Writes the first `valid` rows of the tile's outputs (`acc[g][t]`: group `g`'s 16
/// rows times token `t`).
#[inline(always)]
pub(super) unsafe fn store<const G: usize, const T: usize>(
    acc: &[[__m512; T]; G],
    valid: usize,
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and `out`
    // is valid for the writes of these rows and tokens
    unsafe {
        for g in 0..G {
            let n = valid.saturating_sub(g * IROWS).min(IROWS);
            let mask: __mmask16 = if n == IROWS { 0xffff } else { (1u16 << n) - 1 };
            for t in 0..T {
                _mm512_mask_storeu_ps(out.ptr.add(t * out.ldo + g * IROWS), mask, acc[g][t]);
            }
        }
    }
}
