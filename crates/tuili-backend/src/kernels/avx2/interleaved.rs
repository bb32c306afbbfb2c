//! AVX2 twins of the interleaved products (`kernels::interleave`): a 256-bit register
//! holds one half of a 16-row group (8 rows, one lane each), so `vpmaddwd` + `vpaddd`
//! add an element pair of 8 rows, and one float step serves 8 outputs per block.
//! Tiles of a whole group (both halves, so each cache line is read once) times up to 4
//! tokens, or, for a batch of many tokens and the formats `kernels::tune` chose on this
//! CPU, of one half times 8 tokens; the rows' codes are decoded in registers once per
//! tile. The K-quants' tiles are in `interleaved_k`.

use std::arch::x86_64::*;
use std::ops::Range;

use std::marker::PhantomData;

use super::super::interleave::{code_offset, has_min, Packed, Prefetch};
use super::super::{Out, QFormat, QuantActs};
use super::interleaved_k::{KMin, K16, Q2, Q3, Q6};

/// Rows per register: half a group.
pub(super) const HROWS: usize = 8;
/// Rows per group.
const GROWS: usize = 2 * HROWS;
/// Tokens per tile of a whole group.
const TT: usize = 4;
/// Tokens per tile of one register half.
const TH: usize = 8;
/// The fewest tokens that run in tiles of one register half.
const HALF_TILES_FROM: usize = 16;

/// `out[t * ldo + r - rows.start] = row r · token t` for rows `rows` (`rows.start` a
/// multiple of 16) and tokens `0..nt`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn interleaved(
    p: &Packed,
    rows: Range<usize>,
    a: &QuantActs,
    nt: usize,
    out: Out,
    half_tiles: bool,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        match p.fmt {
            QFormat::Q4_0 | QFormat::Q4_1 => groups::<Legacy<Q4>>(p, rows, a, nt, out, half_tiles),
            QFormat::Q5_0 | QFormat::Q5_1 => groups::<Legacy<Q5>>(p, rows, a, nt, out, half_tiles),
            QFormat::Q8_0 => groups::<Legacy<Q8>>(p, rows, a, nt, out, half_tiles),
            QFormat::Q4K => groups::<KMin<Q4>>(p, rows, a, nt, out, half_tiles),
            QFormat::Q5K => groups::<KMin<Q5>>(p, rows, a, nt, out, half_tiles),
            QFormat::Q6K => groups::<K16<Q6>>(p, rows, a, nt, out, half_tiles),
            QFormat::Q3K => groups::<K16<Q3>>(p, rows, a, nt, out, half_tiles),
            QFormat::Q2K => groups::<K16<Q2>>(p, rows, a, nt, out, half_tiles),
            // `interleave::interleavable` leaves it out: never packed.
            QFormat::Mxfp4 => unreachable!("MXFP4 weights are not interleaved"),
        }
    }
}

/// How a format's code bytes become element pairs: `pairs` adds the products of block
/// `b` of the group whose codes start at `group` into `s[h][t]` (register half `first +
/// h` of the group, token `t`; lane = row).
pub(super) trait Codes {
    unsafe fn pairs<const T: usize, const NH: usize>(
        group: *const u8,
        b: usize,
        first: usize,
        xq: &[*const i32; T],
        s: &mut [[__m256i; T]; NH],
    );
}

/// Q4_0, Q4_1 (`FIFTH` false) and Q5_0, Q5_1: four pairs per chunk, `(word >> 4j) &
/// 0x000f000f`, plus for Q5 each pair's fifth bits from the fifth chunk.
pub(super) struct Small<const FIFTH: bool>;
pub(super) type Q4 = Small<false>;
pub(super) type Q5 = Small<true>;
/// Q8_0: two pairs per chunk, the low and the high bytes of each 16-bit half.
struct Q8;

impl<const FIFTH: bool> Codes for Small<FIFTH> {
    #[inline(always)]
    unsafe fn pairs<const T: usize, const NH: usize>(
        group: *const u8,
        b: usize,
        first: usize,
        xq: &[*const i32; T],
        s: &mut [[__m256i; T]; NH],
    ) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let cb = if FIFTH { 320 } else { 256 };
            let (m4, m10) = (
                _mm256_set1_epi32(0x000f_000f),
                _mm256_set1_epi32(0x0010_0010),
            );
            // Pair p's fifth bits (bits p and 16 + p) are brought to bits 4 and 20 by a shift
            // left by 4, then one more shift right per pair; from pair 12 on (whose bit 16 + p
            // the shift left pushes out) by a shift right by 8 instead.
            let h0: [__m256i; NH] = std::array::from_fn(|h| {
                if FIFTH {
                    _mm256_load_si256(group.add(cb * b + 256 + 32 * (first + h)) as _)
                } else {
                    _mm256_setzero_si256()
                }
            });
            let mut hb = h0.map(|v| _mm256_slli_epi32::<4>(v));
            for c in 0..4 {
                let mut v: [__m256i; NH] = std::array::from_fn(|h| {
                    _mm256_load_si256(group.add(cb * b + 64 * c + 32 * (first + h)) as _)
                });
                for j in 0..4 {
                    if FIFTH && c == 3 && j == 0 {
                        hb = h0.map(|v| _mm256_srli_epi32::<8>(v));
                    }
                    let ck: [__m256i; NH] = std::array::from_fn(|h| {
                        let nib = _mm256_and_si256(v[h], m4);
                        if FIFTH {
                            _mm256_or_si256(nib, _mm256_and_si256(hb[h], m10))
                        } else {
                            nib
                        }
                    });
                    accumulate(&ck, xq, 16 * b + 4 * c + j, s);
                    if FIFTH {
                        hb = hb.map(|v| _mm256_srli_epi32::<1>(v));
                    }
                    if j < 3 {
                        v = v.map(|v| _mm256_srli_epi32::<4>(v));
                    }
                }
            }
        }
    }
}

impl Codes for Q8 {
    #[inline(always)]
    unsafe fn pairs<const T: usize, const NH: usize>(
        group: *const u8,
        b: usize,
        first: usize,
        xq: &[*const i32; T],
        s: &mut [[__m256i; T]; NH],
    ) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            for c in 0..8 {
                for h in 0..NH {
                    let v = _mm256_load_si256(group.add(512 * b + 64 * c + 32 * (first + h)) as _);
                    let lo = _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(v));
                    let hi = _mm256_srai_epi16::<8>(v);
                    let one = std::slice::from_mut(&mut s[h]);
                    accumulate(&[lo], xq, 16 * b + 2 * c, one.try_into().unwrap());
                    accumulate(&[hi], xq, 16 * b + 2 * c + 1, one.try_into().unwrap());
                }
            }
        }
    }
}

/// `s[h][t] += madd(ck[h], pair p of token t)` for every half and token: the products
/// of one element pair (pair `p` of the tokens' int16 activations, `xq[t] + p` as i32).
///
/// A tile of one half and `TH` tokens runs as hand-scheduled assembly: the compiler,
/// left to itself, spills the eight sums and runs at about half the rate of the
/// multiplier (Zen 3: 38 against 68 GMAC/s in a register-only loop). The integer
/// arithmetic is the same, so are the bits.
#[inline(always)]
pub(super) unsafe fn accumulate<const T: usize, const NH: usize>(
    ck: &[__m256i; NH],
    xq: &[*const i32; T],
    p: usize,
    s: &mut [[__m256i; T]; NH],
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has AVX2, and every
    // `xq[t] + p` lies within the token's activations
    unsafe {
        if T == 8 && NH == 1 {
            let s = &mut *(s.as_mut_ptr() as *mut [__m256i; 8]);
            let xq = &*(xq.as_ptr() as *const [*const i32; 8]);
            madd8(ck[0], xq, p, s);
            return;
        }
        for t in 0..T {
            let x = _mm256_set1_epi32(*xq[t].add(p));
            for h in 0..NH {
                s[h][t] = _mm256_add_epi32(s[h][t], _mm256_madd_epi16(ck[h], x));
            }
        }
    }
}

/// `s[t] += madd(ck, broadcast(xq[t][p]))` for 8 tokens, the sums kept in registers.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn madd8(ck: __m256i, xq: &[*const i32; 8], p: usize, s: &mut [__m256i; 8]) {
    // SAFETY: the caller keeps every `xq[t] + p` within its token's activations; the
    // block reads them and writes only its register operands
    unsafe {
        std::arch::asm!(
            "vpbroadcastd {x}, dword ptr [{p0} + 4*{i}]",
            "vpmaddwd {x}, {x}, {ck}",
            "vpaddd {s0}, {s0}, {x}",
            "vpbroadcastd {x}, dword ptr [{p1} + 4*{i}]",
            "vpmaddwd {x}, {x}, {ck}",
            "vpaddd {s1}, {s1}, {x}",
            "vpbroadcastd {x}, dword ptr [{p2} + 4*{i}]",
            "vpmaddwd {x}, {x}, {ck}",
            "vpaddd {s2}, {s2}, {x}",
            "vpbroadcastd {x}, dword ptr [{p3} + 4*{i}]",
            "vpmaddwd {x}, {x}, {ck}",
            "vpaddd {s3}, {s3}, {x}",
            "vpbroadcastd {x}, dword ptr [{p4} + 4*{i}]",
            "vpmaddwd {x}, {x}, {ck}",
            "vpaddd {s4}, {s4}, {x}",
            "vpbroadcastd {x}, dword ptr [{p5} + 4*{i}]",
            "vpmaddwd {x}, {x}, {ck}",
            "vpaddd {s5}, {s5}, {x}",
            "vpbroadcastd {x}, dword ptr [{p6} + 4*{i}]",
            "vpmaddwd {x}, {x}, {ck}",
            "vpaddd {s6}, {s6}, {x}",
            "vpbroadcastd {x}, dword ptr [{p7} + 4*{i}]",
            "vpmaddwd {x}, {x}, {ck}",
            "vpaddd {s7}, {s7}, {x}",
            p0 = in(reg) xq[0],
            p1 = in(reg) xq[1],
            p2 = in(reg) xq[2],
            p3 = in(reg) xq[3],
            p4 = in(reg) xq[4],
            p5 = in(reg) xq[5],
            p6 = in(reg) xq[6],
            p7 = in(reg) xq[7],
            i = in(reg) p,
            ck = in(ymm_reg) ck,
            x = out(ymm_reg) _,
            s0 = inout(ymm_reg) s[0],
            s1 = inout(ymm_reg) s[1],
            s2 = inout(ymm_reg) s[2],
            s3 = inout(ymm_reg) s[3],
            s4 = inout(ymm_reg) s[4],
            s5 = inout(ymm_reg) s[5],
            s6 = inout(ymm_reg) s[6],
            s7 = inout(ymm_reg) s[7],
            options(pure, readonly, nostack, preserves_flags),
        );
    }
}

/// One tile of a format: register halves `first..first + NH` of group `g` (rows `16g +
/// 8 first..16g + 8 (first + NH)`) times tokens `t0..t0 + T`, writing the group's first
/// `valid` rows among them (`out` points at the group's row 0).
pub(super) trait Tile {
    unsafe fn tile<const T: usize, const NH: usize>(
        p: &Packed,
        g: usize,
        first: usize,
        a: &QuantActs,
        t0: usize,
        valid: usize,
        out: Out,
    );
}

/// The tiles of the legacy formats, codes read by `C`.
struct Legacy<C>(PhantomData<C>);

impl<C: Codes> Tile for Legacy<C> {
    #[inline(always)]
    unsafe fn tile<const T: usize, const NH: usize>(
        p: &Packed,
        g: usize,
        first: usize,
        a: &QuantActs,
        t0: usize,
        valid: usize,
        out: Out,
    ) {
        // SAFETY: as for `tile`, whose contract is this one's
        unsafe { tile::<C, T, NH>(p, g, first, a, t0, valid, out) }
    }
}

/// Runs the tiles: each group of the rows over the tokens. A batch of at least
/// `HALF_TILES_FROM` tokens runs in tiles of one register half times `TH` tokens: the
/// codes decoded once serve twice the tokens, and the sums stay in registers. The rest
/// (a decode, a small batch, the last `nt % TH` tokens) runs in tiles of the whole group
/// times up to `TT` tokens, each cache line read once. Both give the same bits: every
/// output's blocks are summed in order, whatever the tile.
#[inline(always)]
unsafe fn groups<K: Tile>(
    p: &Packed,
    rows: Range<usize>,
    a: &QuantActs,
    nt: usize,
    out: Out,
    half_tiles: bool,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let (g0, g1) = (rows.start / GROWS, rows.end.div_ceil(GROWS));
        for g in g0..g1 {
            let valid = (rows.end - g * GROWS).min(GROWS);
            let at = |t: usize| Out {
                ptr: out.ptr.add((g - g0) * GROWS + t * out.ldo),
                ldo: out.ldo,
            };
            let mut t = 0;
            if half_tiles && nt >= HALF_TILES_FROM {
                let whole = nt - nt % TH;
                for first in 0..2 {
                    if HROWS * first < valid {
                        for t in (0..whole).step_by(TH) {
                            K::tile::<TH, 1>(p, g, first, a, t, valid, at(t));
                        }
                    }
                }
                t = whole;
            }
            while t < nt {
                let n = (nt - t).min(TT);
                match n {
                    1 => K::tile::<1, 2>(p, g, 0, a, t, valid, at(t)),
                    2 => K::tile::<2, 2>(p, g, 0, a, t, valid, at(t)),
                    3 => K::tile::<3, 2>(p, g, 0, a, t, valid, at(t)),
                    _ => K::tile::<4, 2>(p, g, 0, a, t, valid, at(t)),
                }
                t += n;
            }
        }
    }
}

/// Register halves `first..first + NH` of group `g` times tokens `t0..t0 + T`; writes
/// the group's first `valid` rows among them.
#[inline(always)]
unsafe fn tile<C: Codes, const T: usize, const NH: usize>(
    p: &Packed,
    g: usize,
    first: usize,
    a: &QuantActs,
    t0: usize,
    valid: usize,
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let nbp = a.nbp();
        let group = p.bytes.as_ptr().add(g * p.group_bytes);
        let (scales, mins) = (group.add(p.scales_at()), group.add(p.mins_at()));
        let codes = group.add(p.codes_at());
        let xq: [*const i32; T] = std::array::from_fn(|i| a.q(t0 + i).as_ptr() as *const i32);
        let xd: [*const f32; T] = std::array::from_fn(|i| a.d.as_ptr().add((t0 + i) * nbp));
        let xs: [*const f32; T] = std::array::from_fn(|i| a.s.as_ptr().add((t0 + i) * nbp));
        let xsum: [*const i32; T] = std::array::from_fn(|i| a.xsum.as_ptr().add((t0 + i) * nbp));
        let (offset, min) = (code_offset(p.fmt), has_min(p.fmt));
        let prefetch = Prefetch::new(p, 1);
        let mut acc = [[_mm256_setzero_ps(); T]; NH];
        for b in 0..p.nb() {
            prefetch.block(group, b);
            let mut s = [[_mm256_setzero_si256(); T]; NH];
            C::pairs::<T, NH>(codes, b, first, &xq, &mut s);
            for h in 0..NH {
                if offset != 0 {
                    // Σ (q - o) x = Σ q x - o Σ x, exact.
                    for t in 0..T {
                        let o = _mm256_set1_epi32(offset * *xsum[t].add(b));
                        s[h][t] = _mm256_sub_epi32(s[h][t], o);
                    }
                }
                // Half `h`'s 8 of the block's 16 scales (and minimums).
                let w =
                    _mm256_cvtph_ps(_mm_loadu_si128(scales.add(32 * b + 16 * (first + h)) as _));
                for t in 0..T {
                    let pp = _mm256_mul_ps(w, _mm256_set1_ps(*xd[t].add(b)));
                    acc[h][t] = _mm256_fmadd_ps(pp, _mm256_cvtepi32_ps(s[h][t]), acc[h][t]);
                }
                if min {
                    let m =
                        _mm256_cvtph_ps(_mm_loadu_si128(mins.add(32 * b + 16 * (first + h)) as _));
                    for t in 0..T {
                        acc[h][t] = _mm256_fmadd_ps(m, _mm256_set1_ps(*xs[t].add(b)), acc[h][t]);
                    }
                }
            }
        }
        store(&acc, first, valid, out);
    }
}

/// Writes a tile's outputs among the group's first `valid` rows (`acc[h][t]`: rows
/// `8 (first + h)..8 (first + h) + 8` times token `t`; `out` at the group's row 0).
#[inline(always)]
pub(super) unsafe fn store<const T: usize, const NH: usize>(
    acc: &[[__m256; T]; NH],
    first: usize,
    valid: usize,
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to, and `out` is valid for the writes of these rows and
    // tokens
    unsafe {
        for h in 0..NH {
            let n = valid.saturating_sub(HROWS * (first + h)).min(HROWS);
            for t in 0..T {
                let o = out.ptr.add(t * out.ldo + HROWS * (first + h));
                if n == HROWS {
                    _mm256_storeu_ps(o, acc[h][t]);
                } else if n > 0 {
                    let mut v = [0f32; HROWS];
                    _mm256_storeu_ps(v.as_mut_ptr(), acc[h][t]);
                    std::ptr::copy_nonoverlapping(v.as_ptr(), o, n);
                }
            }
        }
    }
}
