//! AVX2 twins of the interleaved products (`kernels::interleave`): a 256-bit register
//! holds one half of a 16-row group (8 rows, one lane each), so `vpmaddwd` + `vpaddd`
//! add an element pair of 8 rows, and one float step serves 8 outputs per block.
//! Tiles of a whole group (both halves, so each cache line is read once) times up to 4
//! tokens, or, for a batch of many tokens and the formats `kernels::tune` chose on this
//! CPU, of one half times 8 tokens (from the token-octet layout, `QuantActs::q8`, where
//! the activations have it: no broadcast per multiply-add); the rows' codes are decoded
//! in registers once per tile. The K-quants' tiles are in `interleaved_k`.

use std::arch::x86_64::*;
use std::ops::Range;

use std::marker::PhantomData;

use super::super::interleave::{code_offset, has_min, Packed, Prefetch};
use super::super::{OctetView, Out, QFormat, QuantActs};
use super::interleaved_k::{KMin, K16, Q2, Q3, Q6};

/// Rows per register: half a group.
pub(super) const HROWS: usize = 8;
/// Rows per group.
const GROWS: usize = 2 * HROWS;
/// Tokens per tile of a whole group.
const TT: usize = 4;
/// Tokens per tile of one register half.
const TH: usize = 8;
/// The fewest tokens that run in tiles of one register half: where the token-octet
/// layout begins (one octet already reads each group's codes once, where whole-group
/// tiles of `TT` tokens read them twice).
const HALF_TILES_FROM: usize = super::super::OCTETS_FROM;

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

/// How a format's code bytes become element pairs: `pairs` hands `sink` the codes of
/// every element pair `p` of block `b` of the group whose codes start at `group`, as
/// `ck[h]` (register half `first + h` of the group; lane = row).
pub(super) trait Codes {
    unsafe fn pairs<const NH: usize, S: PairSink<NH>>(
        group: *const u8,
        b: usize,
        first: usize,
        sink: &mut S,
    );
}

/// What a tile does with one element pair's codes: adds their products with the
/// tokens' activations into its integer sums.
pub(super) trait PairSink<const NH: usize> {
    unsafe fn add(&mut self, ck: &[__m256i; NH], p: usize);
}

/// The sums `s[h][t]` of register halves times `T` tokens, each token's activation pair
/// broadcast (`accumulate`).
pub(super) struct Broadcast<'a, const T: usize, const NH: usize> {
    pub(super) xq: &'a [*const i32; T],
    pub(super) s: &'a mut [[__m256i; T]; NH],
}

impl<const T: usize, const NH: usize> PairSink<NH> for Broadcast<'_, T, NH> {
    #[inline(always)]
    unsafe fn add(&mut self, ck: &[__m256i; NH], p: usize) {
        // SAFETY: the caller keeps every `xq[t] + p` within its token's activations; the
        // CPU has AVX2
        unsafe { accumulate(ck, self.xq, p, self.s) }
    }
}

/// The sums of one register half times the 8 tokens of an octet, in rotated lanes
/// (`madd_rotated`): `s[4c + a]` lane `i` holds row `i ^ 4c` times token `(i + a) % 8`.
pub(super) struct Rotated<'a> {
    /// The octet's element pairs (`QuantActs::q8`): pair `p` at `q8 + 16 p`.
    pub(super) q8: *const i32,
    pub(super) s: &'a mut [__m256i; 8],
}

impl PairSink<1> for Rotated<'_> {
    #[inline(always)]
    unsafe fn add(&mut self, ck: &[__m256i; 1], p: usize) {
        // SAFETY: the caller keeps pair `p` within the octet's lines; the CPU has AVX2
        unsafe { madd_rotated(ck[0], self.q8.add(16 * p), self.s) }
    }
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
    unsafe fn pairs<const NH: usize, S: PairSink<NH>>(
        group: *const u8,
        b: usize,
        first: usize,
        sink: &mut S,
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
                    sink.add(&ck, 16 * b + 4 * c + j);
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
    unsafe fn pairs<const NH: usize, S: PairSink<NH>>(
        group: *const u8,
        b: usize,
        first: usize,
        sink: &mut S,
    ) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            for c in 0..8 {
                let v: [__m256i; NH] = std::array::from_fn(|h| {
                    _mm256_load_si256(group.add(512 * b + 64 * c + 32 * (first + h)) as _)
                });
                let lo = v.map(|v| _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(v)));
                let hi = v.map(|v| _mm256_srai_epi16::<8>(v));
                sink.add(&lo, 16 * b + 2 * c);
                sink.add(&hi, 16 * b + 2 * c + 1);
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

/// `s[4c + a] += madd(ck_c, lanes a.. of the octet's pair)` for `c` in 0..2 and `a` in
/// 0..4, where `ck_0 = ck` (lane i: row i) and `ck_1` is `ck` with its 128-bit halves
/// swapped (lane i: row i ^ 4), and the 8 lanes read from lane `a` of the pair's doubled
/// line hold token `(i + a) % 8`: every row meets every token once, with 4 loads and no
/// broadcast (on Zen 3 a broadcast from memory takes a vector pipe, as a multiply-add
/// does). The sums stay in registers.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn madd_rotated(ck: __m256i, line: *const i32, s: &mut [__m256i; 8]) {
    // SAFETY: the caller keeps the pair's 16 lanes at `line` within the octet buffer; the
    // block reads them and writes only its register operands
    unsafe {
        std::arch::asm!(
            "vperm2i128 {c1}, {ck}, {ck}, 1",
            "vmovdqa {x}, ymmword ptr [{l}]",
            "vpmaddwd {t}, {x}, {ck}",
            "vpaddd {s0}, {s0}, {t}",
            "vpmaddwd {x}, {x}, {c1}",
            "vpaddd {s4}, {s4}, {x}",
            "vmovdqu {x}, ymmword ptr [{l} + 4]",
            "vpmaddwd {t}, {x}, {ck}",
            "vpaddd {s1}, {s1}, {t}",
            "vpmaddwd {x}, {x}, {c1}",
            "vpaddd {s5}, {s5}, {x}",
            "vmovdqu {x}, ymmword ptr [{l} + 8]",
            "vpmaddwd {t}, {x}, {ck}",
            "vpaddd {s2}, {s2}, {t}",
            "vpmaddwd {x}, {x}, {c1}",
            "vpaddd {s6}, {s6}, {x}",
            "vmovdqu {x}, ymmword ptr [{l} + 12]",
            "vpmaddwd {t}, {x}, {ck}",
            "vpaddd {s3}, {s3}, {t}",
            "vpmaddwd {x}, {x}, {c1}",
            "vpaddd {s7}, {s7}, {x}",
            l = in(reg) line,
            ck = in(ymm_reg) ck,
            c1 = out(ymm_reg) _,
            x = out(ymm_reg) _,
            t = out(ymm_reg) _,
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

    /// Whether the format has `octet_tile`.
    const OCTETS: bool = false;

    /// Register half `first` of group `g` times the 8 tokens of octet `u` (tokens `8u..8u
    /// + 8`), from the token-octet layout (`QuantActs::q8`); writes the group's first
    /// `valid` rows among them (`out` at the group's row 0, token `8u`).
    unsafe fn octet_tile(
        _p: &Packed,
        _g: usize,
        _first: usize,
        _a: &QuantActs,
        _u: usize,
        _valid: usize,
        _out: Out,
    ) {
        unreachable!("a format without octet tiles")
    }
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

    const OCTETS: bool = true;

    #[inline(always)]
    unsafe fn octet_tile(
        p: &Packed,
        g: usize,
        first: usize,
        a: &QuantActs,
        u: usize,
        valid: usize,
        out: Out,
    ) {
        // SAFETY: as for `octet_tile`, whose contract is this one's
        unsafe { octet_tile::<C>(p, g, first, a, u, valid, out) }
    }
}

/// Runs the tiles: each group of the rows over the tokens. A batch of at least
/// `HALF_TILES_FROM` tokens runs in tiles of one register half times `TH` tokens: the
/// codes decoded once serve twice the tokens, and the sums stay in registers. Where the
/// activations have the token-octet layout and the format octet tiles, those run, octet
/// by octet over all the groups; else tiles that broadcast each token's pairs, group by
/// group. The rest (a decode, a small batch, the last `nt % TH` tokens) runs in tiles
/// of the whole group times up to `TT` tokens, each cache line read once. All give the
/// same bits: every output's blocks are summed in order, whatever the tile.
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
        let valid = |g: usize| (rows.end - g * GROWS).min(GROWS);
        let at = |g: usize, t: usize| Out {
            ptr: out.ptr.add((g - g0) * GROWS + t * out.ldo),
            ldo: out.ldo,
        };
        // Octet tiles run octet by octet over all the groups: an octet's activations
        // (64 bytes a pair) are read from L1/L2 by every group, whose codes stay in L2.
        let octets = half_tiles && nt >= HALF_TILES_FROM && K::OCTETS && a.octets;
        let whole = if octets { nt - nt % TH } else { 0 };
        for u in 0..whole / TH {
            for g in g0..g1 {
                for first in 0..2 {
                    if HROWS * first < valid(g) {
                        K::octet_tile(p, g, first, a, u, valid(g), at(g, TH * u));
                    }
                }
            }
        }
        for g in g0..g1 {
            let (valid, at) = (valid(g), |t: usize| at(g, t));
            let mut t = whole;
            if !octets && half_tiles && nt >= HALF_TILES_FROM {
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
            C::pairs(codes, b, first, &mut Broadcast { xq: &xq, s: &mut s });
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

/// Where the lines of octet `u` of `a` start (see `QuantActs::q8`): element pairs,
/// block scales, block sums, Σ q, half-block sums, half-block Σ q.
pub(super) struct Octet {
    pub(super) q8: *const i32,
    pub(super) d8: *const f32,
    pub(super) s8: *const f32,
    pub(super) xsum8: *const i32,
    pub(super) s16: *const f32,
    pub(super) xsum16: *const i32,
}

impl Octet {
    /// # Safety
    /// `a` holds the octet layout and `u < ceil(n / 8)`.
    #[inline(always)]
    pub(super) unsafe fn of(a: &QuantActs, u: usize) -> Octet {
        // SAFETY: `size_octets` sized every buffer for all octets (this fn's contract)
        unsafe {
            let line = 16 * a.nbp() * u;
            Octet {
                q8: a.q8.as_ptr().add(u * a.cols / 2 * 16),
                d8: a.d8.as_ptr().add(line),
                s8: a.s8.as_ptr().add(line),
                xsum8: a.xsum8.as_ptr().add(line),
                s16: a.s16_8.as_ptr().add(2 * line),
                xsum16: a.xsum16_8.as_ptr().add(2 * line),
            }
        }
    }
}

/// Register half `first` of group `g` times the 8 tokens of octet `u`, their products
/// in rotated lanes (`madd_rotated`); writes the group's first `valid` rows among them.
/// Each output's integer block sums and float steps are those of `tile`, in the same
/// order: the same bits.
#[inline(always)]
unsafe fn octet_tile<C: Codes>(
    p: &Packed,
    g: usize,
    first: usize,
    a: &QuantActs,
    u: usize,
    valid: usize,
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to, `a` holds the octet layout of octet `u`, and the
    // pointers it is given lie within the buffers its safe caller checked
    unsafe {
        let group = p.bytes.as_ptr().add(g * p.group_bytes);
        let (scales, mins) = (group.add(p.scales_at()), group.add(p.mins_at()));
        let codes = group.add(p.codes_at());
        let Octet {
            q8,
            d8,
            s8,
            xsum8: x8,
            ..
        } = Octet::of(a, u);
        let (offset, min) = (code_offset(p.fmt), has_min(p.fmt));
        let o = _mm256_set1_epi32(offset);
        let prefetch = Prefetch::new(p, 1);
        let mut acc = [_mm256_setzero_ps(); 8];
        for b in 0..p.nb() {
            prefetch.block(group, b);
            let mut s = [_mm256_setzero_si256(); 8];
            C::pairs(codes, b, first, &mut Rotated { q8, s: &mut s });
            // Lane i of `w[c]`: row i ^ 4c's scale (minimum).
            let w = halves(_mm256_cvtph_ps(_mm_loadu_si128(
                scales.add(32 * b + 16 * first) as _,
            )));
            let m = if min {
                halves(_mm256_cvtph_ps(_mm_loadu_si128(
                    mins.add(32 * b + 16 * first) as _,
                )))
            } else {
                [_mm256_setzero_ps(); 2]
            };
            for rot in 0..4 {
                // Lane i: token (i + rot) % 8's block scale, Σ q, and sum.
                let at = 16 * b + rot;
                let d = _mm256_loadu_ps(d8.add(at));
                // Σ (q - o) x = Σ q x - o Σ x, exact.
                let ox = _mm256_mullo_epi32(_mm256_loadu_si256(x8.add(at) as _), o);
                for c in 0..2 {
                    let k = 4 * c + rot;
                    let sk = if offset != 0 {
                        _mm256_sub_epi32(s[k], ox)
                    } else {
                        s[k]
                    };
                    let pp = _mm256_mul_ps(w[c], d);
                    acc[k] = _mm256_fmadd_ps(pp, _mm256_cvtepi32_ps(sk), acc[k]);
                    if min {
                        acc[k] = _mm256_fmadd_ps(m[c], _mm256_loadu_ps(s8.add(at)), acc[k]);
                    }
                }
            }
        }
        store_octet(&acc, first, valid, out);
    }
}

/// Writes an octet tile's outputs among the group's first `valid` rows: lane `i` of
/// `acc[4c + rot]` is row `8 first + (i ^ 4c)` times token `(i + rot) % 8` (`out` at the
/// group's row 0, the octet's first token).
#[inline(always)]
pub(super) unsafe fn store_octet(acc: &[__m256; 8], first: usize, valid: usize, out: Out) {
    // SAFETY: the caller keeps `out` valid for the writes of these rows and 8 tokens; the
    // CPU has AVX
    unsafe {
        let mut v = [[0f32; 8]; 8];
        for (v, acc) in v.iter_mut().zip(acc) {
            _mm256_storeu_ps(v.as_mut_ptr(), *acc);
        }
        for (k, v) in v.iter().enumerate() {
            let (c, rot) = (k / 4, k % 4);
            for (i, &y) in v.iter().enumerate() {
                let r = HROWS * first + (i ^ (4 * c));
                if r < valid {
                    *out.ptr.add((i + rot) % 8 * out.ldo + r) = y;
                }
            }
        }
    }
}

/// `[v, v with its 128-bit halves swapped]`.
#[inline(always)]
pub(super) unsafe fn halves(v: __m256) -> [__m256; 2] {
    // SAFETY: the caller runs on a CPU with AVX
    unsafe { [v, _mm256_permute2f128_ps::<1>(v, v)] }
}

/// Writes the token-octet layout (`QuantActs::q8`, `d8`, `s8`, `xsum8`) of octets
/// `octets` (tokens `8u..8u + 8`; a missing token is zeros).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn pack_octets(v: &OctetView, octets: Range<usize>) {
    // SAFETY: the caller upholds this unsafe fn's contract: the octets' tokens are
    // quantized, the octet buffers are sized for every octet, and these octets' slots
    // are written by this caller alone
    unsafe {
        let (n, nbp, np) = (v.n, v.nbp, v.cols / 2);
        for u in octets {
            let here = |i: usize| 8 * u + i < n;
            // Element pairs, 8 x 8 at a time: rows = tokens, transposed to rows = pairs.
            let q8 = v.to.q8.add(u * np * 16);
            for p0 in (0..np).step_by(8) {
                let r: [__m256i; 8] = std::array::from_fn(|i| {
                    if here(i) {
                        _mm256_loadu_si256(v.q.add((8 * u + i) * v.cols + 2 * p0) as _)
                    } else {
                        _mm256_setzero_si256()
                    }
                });
                let t: [__m256i; 8] = std::array::from_fn(|k| {
                    let (a, b) = (r[2 * (k / 2)], r[2 * (k / 2) + 1]);
                    if k % 2 == 0 {
                        _mm256_unpacklo_epi32(a, b)
                    } else {
                        _mm256_unpackhi_epi32(a, b)
                    }
                });
                // t[0]: pairs 0,1 (4,5) of tokens 0,1 interleaved; t[1]: pairs 2,3 (6,7).
                let w: [__m256i; 8] = std::array::from_fn(|k| {
                    let (hi, j, quad) = (k % 2 == 1, (k / 2) % 2, k / 4);
                    let (a, b) = (t[4 * quad + j], t[4 * quad + 2 + j]);
                    if hi {
                        _mm256_unpackhi_epi64(a, b)
                    } else {
                        _mm256_unpacklo_epi64(a, b)
                    }
                });
                // w[2j + h + 4 quad]: tokens 4 quad..4 quad + 4 of pairs 2j + h (low
                // lane) and 4 + 2j + h (high lane).
                for j in 0..4 {
                    let (lo, hi) = (w[j], w[4 + j]);
                    let first = _mm256_permute2x128_si256::<0x20>(lo, hi);
                    let second = _mm256_permute2x128_si256::<0x31>(lo, hi);
                    for (pair, x) in [(p0 + j, first), (p0 + 4 + j, second)] {
                        let dst = q8.add(16 * pair);
                        _mm256_store_si256(dst as _, x);
                        _mm256_store_si256(dst.add(8) as _, x);
                    }
                }
            }
            // Per block: scales, sums and Σ q; per half-block: sums and Σ q.
            let line = |src: *const u32, per: usize, dst: *mut u32| {
                for b in 0..per * nbp {
                    let at = (u * per * nbp + b) * 16;
                    for i in 0..8 {
                        let x = if here(i) {
                            *src.add((8 * u + i) * per * nbp + b)
                        } else {
                            0
                        };
                        *dst.add(at + i) = x;
                        *dst.add(at + 8 + i) = x;
                    }
                }
            };
            let t = &v.to;
            line(v.d.cast(), 1, t.d8.cast());
            line(v.s.cast(), 1, t.s8.cast());
            line(v.xsum.cast(), 1, t.xsum8.cast());
            line(v.s16.cast(), 2, t.s16_8.cast());
            line(v.xsum16.cast(), 2, t.xsum16_8.cast());
        }
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
