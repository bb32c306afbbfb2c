//! AVX-512 (BW + VNNI) products of several tokens, bit-identical to `scalar`.
//!
//! The AVX2 table does everything else (activation quantization, weight decoding); this
//! one replaces the products of quantized weights: many tokens times a decoded panel
//! (prefill), a few tokens times weights decoded in registers (batched decode), and one
//! token times two rows per register (decode); `float` those of float weights, `bf16`
//! those of BF16 weights under the bf16-pair specification (the `avx512_bf16` table),
//! `attention` the attention scores and weighted sums.
//!
//! # Two tokens per register
//!
//! A 512-bit register holds the 8 lanes of the specification for two tokens: lanes 0..8
//! belong to token `2p`, lanes 8..16 to token `2p + 1`. The weight block's 32 codes
//! are loaded as two 256-bit halves, each broadcast to both halves of a register, and
//! the activations are packed per token pair (`QuantActs::qp`) so that
//!
//! ```text
//! isum = vpdpwssd(vpmaddwd([c0..16 | c0..16], [x_2p 0..16 | x_2p+1 0..16]),
//!                 [c16..32 | c16..32], [x_2p 16..32 | x_2p+1 16..32])
//! ```
//!
//! gives in lane `k < 8` exactly the specification's integer lane `k` of token `2p`
//! (elements `2k, 2k+1, 16+2k, 17+2k`), and in lane `8 + k` that of token `2p + 1`.
//! The float steps then run per lane in the specification's order: one fused
//! multiply-add per block, the group's minimum terms, the same final reduction. The
//! integer sums are exact, so the order of the two halves does not matter.

use std::arch::x86_64::*;
use std::marker::PhantomData;
use std::ops::Range;

mod attention;
mod bf16;
mod float;
mod interleaved;
mod interleaved_k;

use super::avx2::formats::{
    with_format, Fmt, Mx4, Q2K, Q3K, Q40, Q41, Q4K, Q50, Q51, Q5K, Q6K, Q80,
};
use super::avx2::{gemm as gemm_avx2, gemv as gemv_avx2, hsum, AVX2};
use super::{Kernels, MinKind, Out, PackView, Panel, QFormat, QuantActs, GROUP, QB};

static AVX512: Kernels = Kernels {
    name: "avx512",
    pack: Some(pack),
    octets: None,
    gemm,
    gemv: Some(gemv),
    direct: Some(direct),
    direct_max: DIRECT_MAX,
    interleaved: interleaved::interleaved,
    tunes_tiles: false,
    float_gemm: float::float_gemm,
    scores: attention::scores,
    mix: attention::mix,
    glu,
    narrower: Some(&AVX2),
    ..AVX2
};

/// The AVX-512 table with BF16 weights under the bf16-pair specification
/// (`kernels::bf16dot`), through `vdpbf16ps`.
static AVX512_BF16: Kernels = Kernels {
    name: "avx512_bf16",
    bf16: Some(bf16::KERNELS),
    ..AVX512
};

/// `ops::Glu::apply_plain` compiled for AVX-512: 16 lanes wide, the same operations.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")]
unsafe fn glu(act: crate::ops::Glu, gate: &mut [f32], up: &[f32]) {
    act.apply_plain(gate, up)
}

/// Batches up to this many tokens skip the decoded panel: each tile of rows is decoded
/// in registers once per tile of token pairs, cheaper than storing and reloading codes
/// when few tokens share them (batched decode).
const DIRECT_MAX: usize = 4 * PD;

/// Token pairs per tile of `direct` (8 tokens: a step of 8 decoding sequences).
const PD: usize = 4;

/// The AVX-512 table, if this CPU has AVX-512 F/BW/DQ/VL with VNNI (and the AVX2 set).
pub(super) fn kernels() -> Option<&'static Kernels> {
    let ok = super::avx2::kernels().is_some()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni");
    ok.then_some(&AVX512)
}

/// The AVX-512 table with the bf16-pair products, if this CPU has AVX-512 BF16 and its
/// `vdpbf16ps` gives the specification's bits (checked once, on values chosen to tell).
pub(super) fn bf16_kernels() -> Option<&'static Kernels> {
    static CHECKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = kernels().is_some()
        && is_x86_feature_detected!("avx512bf16")
        // SAFETY: the CPU has every instruction set `bf16::gemm` enables.
        && *CHECKED.get_or_init(|| unsafe { super::bf16dot::matches(bf16::KERNELS) });
    ok.then_some(&AVX512_BF16)
}

/// Writes the token-pair copies (see `QuantActs::qp`) of pairs `pairs`: plain copies,
/// zeros for a missing odd token.
unsafe fn pack(v: &PackView, pairs: Range<usize>) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let (n, cols, nbp) = (v.n, v.cols, v.nbp);
        let nb = cols / QB;
        let ngs = nbp / GROUP;
        for p in pairs {
            for half in 0..2 {
                let t = 2 * p + half;
                let here = t < n;
                let (o, o8) = (16 * half, 8 * half);
                for b in 0..nb {
                    let dst = v.qp.add((p * nb + b) * 64);
                    for (k, at) in [(0, o), (16, 32 + o)] {
                        if here {
                            std::ptr::copy_nonoverlapping(
                                v.q.add(t * cols + b * QB + k),
                                dst.add(at),
                                16,
                            );
                        } else {
                            std::ptr::write_bytes(dst.add(at), 0, 16);
                        }
                    }
                }
                for j in 0..nbp {
                    let d = if here { *v.d.add(t * nbp + j) } else { 0.0 };
                    std::slice::from_raw_parts_mut(v.dp.add((p * nbp + j) * 16 + o8), 8).fill(d);
                }
                for g in 0..ngs {
                    copy8(
                        v.s,
                        t * nbp + 8 * g,
                        here,
                        v.sp.add((p * ngs + g) * 16 + o8),
                    );
                }
                for g in 0..2 * ngs {
                    copy8(
                        v.s16,
                        t * 2 * nbp + 8 * g,
                        here,
                        v.s16p.add((p * 2 * ngs + g) * 16 + o8),
                    );
                }
            }
        }
    }
}

/// 8 floats from `src + at` (or zeros when `here` is false) to `dst`.
#[inline(always)]
unsafe fn copy8(src: *const f32, at: usize, here: bool, dst: *mut f32) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        if here {
            std::ptr::copy_nonoverlapping(src.add(at), dst, 8);
        } else {
            std::ptr::write_bytes(dst, 0, 8);
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn gemv(fmt: QFormat, w: &[u8], row_bytes: usize, a: &QuantActs, t: usize, out: Out) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe { with_format!(fmt, gemv_f(w, row_bytes, a, t, out)) }
}

/// Codes of block `j` of the groups at `a` and `b` (two rows) as `[row a | row b]`:
/// elements 0..16 of each, then elements 16..32 of each. The default joins the AVX2
/// codes; Q4_K and Q6_K widen both rows' bytes in one 512-bit step.
trait PairCodes: Fmt {
    #[inline(always)]
    unsafe fn pair_codes(a: *const u8, b: *const u8, j: usize) -> (__m512i, __m512i) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let (a0, a1) = Self::codes(a, j);
            let (b0, b1) = Self::codes(b, j);
            (join_i(a0, b0), join_i(a1, b1))
        }
    }

    /// `[row a | row a]` (the few-token product's layout). The default broadcasts the
    /// AVX2 codes; Q4_K widens its bytes into both halves at once, fewer shuffles (Q6_K
    /// keeps the default, its pair form was 4 % slower).
    #[inline(always)]
    unsafe fn dup_codes(a: *const u8, j: usize) -> (__m512i, __m512i) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let (c0, c1) = Self::codes(a, j);
            (_mm512_broadcast_i64x4(c0), _mm512_broadcast_i64x4(c1))
        }
    }
}

// Every integer format takes the interleaved products in `matmul`; the lane products
// here stay only as the twins the kernel tests check.
impl PairCodes for Q40 {}
impl PairCodes for Q41 {}
impl PairCodes for Q50 {}
impl PairCodes for Q51 {}
impl PairCodes for Q80 {}
impl PairCodes for Q2K {}
impl PairCodes for Q3K {}
impl PairCodes for Q5K {}
impl PairCodes for Mx4 {}

impl PairCodes for Q4K {
    #[inline(always)]
    unsafe fn pair_codes(a: *const u8, b: *const u8, j: usize) -> (__m512i, __m512i) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            // 32 bytes per sub-block pair: 2i in the low nibbles, 2i + 1 in the high ones.
            let o = 16 + 32 * (j / 2);
            k4_nibbles(
                bytes_pair(a.add(o), b.add(o)),
                bytes_pair(a.add(o + 16), b.add(o + 16)),
                j,
            )
        }
    }
    #[inline(always)]
    unsafe fn dup_codes(a: *const u8, j: usize) -> (__m512i, __m512i) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let o = 16 + 32 * (j / 2);
            k4_nibbles(bytes_dup(a.add(o)), bytes_dup(a.add(o + 16)), j)
        }
    }
}

/// Sub-block `j` of a Q4_K pair from the widened bytes of its two halves: even `j`
/// in the low nibbles, odd `j` in the high ones.
#[inline(always)]
unsafe fn k4_nibbles(v0: __m512i, v1: __m512i, j: usize) -> (__m512i, __m512i) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        if j.is_multiple_of(2) {
            let m = _mm512_set1_epi16(0x0f);
            (_mm512_and_si512(v0, m), _mm512_and_si512(v1, m))
        } else {
            (_mm512_srli_epi16::<4>(v0), _mm512_srli_epi16::<4>(v1))
        }
    }
}

impl PairCodes for Q6K {
    #[inline(always)]
    unsafe fn pair_codes(a: *const u8, b: *const u8, j: usize) -> (__m512i, __m512i) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let (h, p) = (j / 4, j % 4);
            let ql = load_pair(a, b, 64 * h + 32 * (p & 1));
            let qh = load_pair(a, b, 128 + 32 * h);
            // Bytes [a 0..32 | b 0..32]: low 4 bits from ql, 2 high bits from qh.
            let nib = shr_and8(ql, 4 * (p / 2), 0x0f);
            let high = _mm512_slli_epi16::<4>(shr_and8(qh, 2 * p, 3));
            let q = _mm512_sub_epi8(_mm512_or_si512(nib, high), _mm512_set1_epi8(32));
            // 128-bit quarters [a 0..16, b 0..16, a 16..32, b 16..32].
            let q = _mm512_shuffle_i64x2::<0b11_01_10_00>(q, q);
            let (sa, sb) = (
                a.add(192 + 2 * j) as *const i8,
                b.add(192 + 2 * j) as *const i8,
            );
            (
                _mm512_mullo_epi16(
                    _mm512_cvtepi8_epi16(_mm512_castsi512_si256(q)),
                    i16_pair(*sa as i16, *sb as i16),
                ),
                _mm512_mullo_epi16(
                    _mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64::<1>(q)),
                    i16_pair(*sa.add(1) as i16, *sb.add(1) as i16),
                ),
            )
        }
    }
}

/// The 32 bytes at offset `o` of `a` and of `b`: `[a | b]`.
#[inline(always)]
unsafe fn load_pair(a: *const u8, b: *const u8, o: usize) -> __m512i {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        join_i(
            _mm256_loadu_si256(a.add(o) as *const __m256i),
            _mm256_loadu_si256(b.add(o) as *const __m256i),
        )
    }
}

/// 16 lanes of `x`, then 16 lanes of `y`.
#[inline(always)]
unsafe fn i16_pair(x: i16, y: i16) -> __m512i {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe { _mm512_mask_set1_epi16(_mm512_set1_epi16(x), 0xffff_0000, y) }
}

/// `(v >> n) & mask` on the bytes of `v`, `n` at run time.
#[inline(always)]
unsafe fn shr_and8(v: __m512i, n: usize, mask: i8) -> __m512i {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        _mm512_and_si512(
            _mm512_srl_epi16(v, _mm_cvtsi32_si128(n as i32)),
            _mm512_set1_epi8(mask),
        )
    }
}

/// The 16 bytes at `a` and at `b`, zero-extended to 16-bit lanes: `[a | b]`.
#[inline(always)]
unsafe fn bytes_pair(a: *const u8, b: *const u8) -> __m512i {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let v = _mm256_inserti128_si256::<1>(
            _mm256_castsi128_si256(_mm_loadu_si128(a as *const __m128i)),
            _mm_loadu_si128(b as *const __m128i),
        );
        _mm512_cvtepu8_epi16(v)
    }
}

/// The 16 bytes at `a`, zero-extended to 16-bit lanes, in both halves: `[a | a]`.
#[inline(always)]
unsafe fn bytes_dup(a: *const u8) -> __m512i {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe { _mm512_cvtepu8_epi16(dup16(a)) }
}

/// The 16 bytes at `a` in both halves of a 256-bit register (one broadcast load).
#[inline(always)]
unsafe fn dup16(a: *const u8) -> __m256i {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(a as *const __m128i)) }
}

/// `[lo | hi]` of two integer halves.
#[inline(always)]
unsafe fn join_i(lo: __m256i, hi: __m256i) -> __m512i {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe { _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi) }
}

/// Row pairs per tile of the one-token product (4 rows).
const RP: usize = 2;

/// How many row tiles ahead the one-token product prefetches (16 rows; measured on
/// Zen 5 against 8 and 32).
const PREFETCH_TILES: usize = 4;

/// How many row tiles ahead the few-token product prefetches (32 rows).
const PREFETCH_TILES_DIRECT: usize = 8;

#[inline(always)]
unsafe fn gemv_f<F: PairCodes, const M: u8>(
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
        while r + 2 * RP <= nr {
            row_pairs::<F, M>(w, row_bytes, r, a, t, out);
            r += 2 * RP;
        }
        if r < nr {
            let o = Out {
                ptr: out.ptr.add(r),
                ldo: out.ldo,
            };
            gemv_avx2(F::FMT, &w[r * row_bytes..], row_bytes, a, t, o);
        }
    }
}

/// `2 RP` rows from `r0` times token `t`, two rows per register (row `2i` in lanes 0..8,
/// row `2i + 1` in lanes 8..16), codes decoded in registers: per row the operations of
/// the AVX2 one-token product.
#[inline(always)]
unsafe fn row_pairs<F: PairCodes, const M: u8>(
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
        let rows: [*const u8; 2 * RP] =
            std::array::from_fn(|r| w.as_ptr().add((r0 + r) * row_bytes));
        let (xq, xd, xs) = a.token_ptrs(t, M);
        // Lane k of `sel + j` picks block j of the low row (k < 8) or of the high row.
        let sel = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 8, 8, 8, 8, 8, 8, 8, 8);
        let mut acc = [_mm512_setzero_ps(); RP];
        let mut pp = [_mm512_setzero_ps(); RP];
        let mut mins = [[_mm512_setzero_ps(); 2]; RP];
        for g in 0..ng {
            let nbj = (nb - GROUP * g).min(GROUP);
            let d8 = _mm256_loadu_ps(xd.add(GROUP * g));
            // Rows are short, too short for the hardware prefetcher: fetch the same group
            // of the rows a few tiles ahead.
            let glen = gbytes.min(row_bytes - g * gbytes);
            for row in rows {
                let next = row.wrapping_add(g * gbytes + PREFETCH_TILES * 2 * RP * row_bytes);
                let mut off = 0;
                while off < glen {
                    _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(off) as *const i8);
                    off += 64;
                }
            }
            for i in 0..RP {
                let sa = F::scales(rows[2 * i].add(g * gbytes), nbj);
                let sb = F::scales(rows[2 * i + 1].add(g * gbytes), nbj);
                pp[i] = join(_mm256_mul_ps(sa.ws, d8), _mm256_mul_ps(sb.ws, d8));
                mins[i] = [join(sa.m[0], sb.m[0]), join(sa.m[1], sb.m[1])];
            }
            for j in 0..nbj {
                let e = (GROUP * g + j) * QB;
                let x0 = _mm512_broadcast_i64x4(_mm256_loadu_si256(xq.add(e) as *const __m256i));
                let x1 =
                    _mm512_broadcast_i64x4(_mm256_loadu_si256(xq.add(e + 16) as *const __m256i));
                let idx = _mm512_add_epi32(sel, _mm512_set1_epi32(j as i32));
                for i in 0..RP {
                    let (c0, c1) = F::pair_codes(
                        rows[2 * i].add(g * gbytes),
                        rows[2 * i + 1].add(g * gbytes),
                        j,
                    );
                    let isum = dot32(_mm512_madd_epi16(c0, x0), c1, x1);
                    let p = _mm512_permutexvar_ps(idx, pp[i]);
                    acc[i] = _mm512_fmadd_ps(p, _mm512_cvtepi32_ps(isum), acc[i]);
                }
            }
            for h in 0..M as usize {
                let s16 = _mm512_broadcast_f32x8(_mm256_loadu_ps(xs.add(npg * g + GROUP * h)));
                for i in 0..RP {
                    acc[i] = _mm512_fmadd_ps(mins[i][h], s16, acc[i]);
                }
            }
        }
        for i in 0..RP {
            *out.ptr.add(r0 + 2 * i) = hsum(_mm512_castps512_ps256(acc[i]));
            *out.ptr.add(r0 + 2 * i + 1) = hsum(_mm512_extractf32x8_ps::<1>(acc[i]));
        }
    }
}

/// `acc + madd(a, b)` as one `vpdpwssd` (the compiler's generic tuning otherwise
/// splits the intrinsic into `vpmaddwd` + `vpaddd`, an extra instruction in the
/// innermost loops).
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn dot32(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let mut acc = acc;
        std::arch::asm!(
            "vpdpwssd {acc}, {a}, {b}",
            acc = inout(zmm_reg) acc,
            a = in(zmm_reg) a,
            b = in(zmm_reg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
        acc
    }
}

/// `[lo | hi]`.
#[inline(always)]
unsafe fn join(lo: __m256, hi: __m256) -> __m512 {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe { _mm512_insertf32x8::<1>(_mm512_castps256_ps512(lo), hi) }
}

/// Rows and token pairs per tile. Three rows, not four: with four pairs of tokens (a step
/// of 8 decoding sequences) four rows' accumulators and codes spill registers (measured:
/// 8-stream decode +12 %, prefill +2 %).
const R: usize = 3;
const P: usize = 3;

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn gemm(p: &Panel, a: &QuantActs, t0: usize, nt: usize, out: Out) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        if !a.packed {
            return gemm_avx2(p, a, t0, nt, out);
        }
        match p.min_kind() {
            MinKind::None => gemm_m::<0>(p, a, t0, nt, out),
            MinKind::Per32 => gemm_m::<1>(p, a, t0, nt, out),
            MinKind::Per16 => gemm_m::<2>(p, a, t0, nt, out),
        }
    }
}

#[inline(always)]
unsafe fn gemm_m<const M: u8>(p: &Panel, a: &QuantActs, t0: usize, nt: usize, out: Out) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let end = t0 + nt;
        let mut t = t0;
        // Pairs start at even tokens: an odd first token goes alone.
        if t % 2 == 1 {
            gemm_avx2(p, a, t, 1, out);
            t += 1;
        }
        pair_tiles::<_, P>(
            &PanelTiles::<M> { p, a },
            p.nr,
            t,
            end - t,
            out_at(out, t - t0),
        );
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn direct(
    fmt: QFormat,
    w: &[u8],
    row_bytes: usize,
    a: &QuantActs,
    t0: usize,
    nt: usize,
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        if !a.packed || t0 % 2 == 1 {
            for t in 0..nt {
                gemv_avx2(fmt, w, row_bytes, a, t0 + t, out_at(out, t));
            }
            return;
        }
        with_format!(fmt, direct_f(w, row_bytes, a, t0, nt, out))
    }
}

#[inline(always)]
unsafe fn direct_f<F: PairCodes, const M: u8>(
    w: &[u8],
    row_bytes: usize,
    a: &QuantActs,
    t0: usize,
    nt: usize,
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let tiles = FusedTiles::<F, M> {
            w,
            row_bytes,
            a,
            _f: PhantomData,
        };
        pair_tiles::<_, PD>(&tiles, w.len() / row_bytes, t0, nt, out);
    }
}

/// `out` moved on by `t` tokens.
#[inline(always)]
unsafe fn out_at(out: Out, t: usize) -> Out {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        Out {
            ptr: out.ptr.add(t * out.ldo),
            ldo: out.ldo,
        }
    }
}

/// A product computed tile by tile: `RR` rows from `r` times `PP` token pairs from
/// `pair`, writing the first `valid` of their tokens at `out` (see `micro`, `fused`).
trait PairTiles {
    unsafe fn tile<const RR: usize, const PP: usize>(
        &self,
        r: usize,
        pair: usize,
        valid: usize,
        out: Out,
    );
}

/// Rows of a decoded panel (`micro`).
struct PanelTiles<'a, const M: u8> {
    p: &'a Panel,
    a: &'a QuantActs,
}

impl<const M: u8> PairTiles for PanelTiles<'_, M> {
    #[inline(always)]
    unsafe fn tile<const RR: usize, const PP: usize>(
        &self,
        r: usize,
        pair: usize,
        valid: usize,
        out: Out,
    ) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe { micro::<RR, PP, M>(self.p, r, self.a, pair, valid, out) }
    }
}

/// Rows straight from the weight bytes (`fused`).
struct FusedTiles<'a, F, const M: u8> {
    w: &'a [u8],
    row_bytes: usize,
    a: &'a QuantActs,
    _f: PhantomData<F>,
}

impl<F: PairCodes, const M: u8> PairTiles for FusedTiles<'_, F, M> {
    #[inline(always)]
    unsafe fn tile<const RR: usize, const PP: usize>(
        &self,
        r: usize,
        pair: usize,
        valid: usize,
        out: Out,
    ) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe { fused::<F, RR, PP, M>(self.w, self.row_bytes, r, self.a, pair, valid, out) }
    }
}

/// Runs `tiles` over `nr` rows (tiles of `R`, then single rows) and tokens `t0..t0 + nt`
/// (`t0` even) in tiles of at most `MAXP` (<= 4) pairs.
#[inline(always)]
unsafe fn pair_tiles<T: PairTiles, const MAXP: usize>(
    tiles: &T,
    nr: usize,
    t0: usize,
    nt: usize,
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let end = t0 + nt;
        let mut t = t0;
        while t < end {
            let np = (end - t).div_ceil(2).min(MAXP);
            let valid = (end - t).min(2 * np);
            let (o, pair) = (out_at(out, t - t0), t / 2);
            let mut r = 0;
            while r < nr {
                let full = r + R <= nr;
                match (full, np) {
                    (true, 4) => tiles.tile::<R, 4>(r, pair, valid, o),
                    (true, 3) => tiles.tile::<R, 3>(r, pair, valid, o),
                    (true, 2) => tiles.tile::<R, 2>(r, pair, valid, o),
                    (true, _) => tiles.tile::<R, 1>(r, pair, valid, o),
                    (false, 4) => tiles.tile::<1, 4>(r, pair, valid, o),
                    (false, 3) => tiles.tile::<1, 3>(r, pair, valid, o),
                    (false, 2) => tiles.tile::<1, 2>(r, pair, valid, o),
                    (false, _) => tiles.tile::<1, 1>(r, pair, valid, o),
                }
                r += if full { R } else { 1 };
            }
            t += 2 * np;
        }
    }
}

/// A 32-byte aligned group of 8 floats.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct A8([f32; 8]);

/// As `micro`, with the rows' codes decoded from the weight bytes in registers: the
/// same operations as decoding a panel and running `micro` on it.
#[inline(always)]
unsafe fn fused<F: PairCodes, const RR: usize, const PP: usize, const M: u8>(
    w: &[u8],
    row_bytes: usize,
    r0: usize,
    a: &QuantActs,
    pair0: usize,
    valid: usize,
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let (cols, nbp) = (a.cols, a.nbp());
        let nb = cols / QB;
        let ng = nb.div_ceil(GROUP);
        let ngs = nbp / GROUP;
        let gbytes = F::FMT.group_bytes();
        let rows: [*const u8; RR] = std::array::from_fn(|r| w.as_ptr().add((r0 + r) * row_bytes));
        let xq: [*const i16; PP] =
            std::array::from_fn(|i| a.qp.as_ptr().add((pair0 + i) * nb * 64));
        let xd: [*const f32; PP] =
            std::array::from_fn(|i| a.dp.as_ptr().add((pair0 + i) * nbp * 16));
        let xs: [*const f32; PP] = std::array::from_fn(|i| {
            if M == 2 {
                a.s16p.as_ptr().add((pair0 + i) * 2 * ngs * 16)
            } else {
                a.sp.as_ptr().add((pair0 + i) * ngs * 16)
            }
        });
        let mut acc = [[_mm512_setzero_ps(); PP]; RR];
        let mut ws = [A8([0.0; 8]); RR];
        let mut mins = [[_mm256_setzero_ps(); 2]; RR];
        for g in 0..ng {
            let nbj = (nb - GROUP * g).min(GROUP);
            // As in the one-token product: fetch this group of the rows a few tiles ahead
            // (on the last tile of tokens the next rows are new to the cache).
            let glen = gbytes.min(row_bytes - g * gbytes);
            for row in rows {
                let next = row.wrapping_add(g * gbytes + PREFETCH_TILES_DIRECT * RR * row_bytes);
                let mut off = 0;
                while off < glen {
                    _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(off) as *const i8);
                    off += 64;
                }
            }
            for r in 0..RR {
                let sc = F::scales(rows[r].add(g * gbytes), nbj);
                _mm256_store_ps(ws[r].0.as_mut_ptr(), sc.ws);
                mins[r] = sc.m;
            }
            for j in 0..nbj {
                let blk = GROUP * g + j;
                let mut c = [[_mm512_setzero_si512(); 2]; RR];
                for r in 0..RR {
                    let (c0, c1) = F::dup_codes(rows[r].add(g * gbytes), j);
                    c[r] = [c0, c1];
                }
                for i in 0..PP {
                    let x0 = _mm512_load_si512(xq[i].add(64 * blk) as *const __m512i);
                    let x1 = _mm512_load_si512(xq[i].add(64 * blk + 32) as *const __m512i);
                    let d16 = _mm512_load_ps(xd[i].add(16 * blk));
                    for r in 0..RR {
                        let isum = dot32(_mm512_madd_epi16(c[r][0], x0), c[r][1], x1);
                        let pp = _mm512_mul_ps(_mm512_set1_ps(ws[r].0[j]), d16);
                        acc[r][i] = _mm512_fmadd_ps(pp, _mm512_cvtepi32_ps(isum), acc[r][i]);
                    }
                }
            }
            for h in 0..M as usize {
                for r in 0..RR {
                    let m16 = _mm512_broadcast_f32x8(mins[r][h]);
                    for i in 0..PP {
                        let s16 = _mm512_load_ps(xs[i].add(16 * (M as usize * g + h)));
                        acc[r][i] = _mm512_fmadd_ps(m16, s16, acc[r][i]);
                    }
                }
            }
        }
        store_pairs(&acc, r0, valid, out);
    }
}

/// Writes lanes 0..8 of `acc[r][i]` as token `2i`, lanes 8..16 as token `2i + 1` (if
/// below `valid`), each reduced as `kernels::reduce8`.
#[inline(always)]
unsafe fn store_pairs<const RR: usize, const PP: usize>(
    acc: &[[__m512; PP]; RR],
    r0: usize,
    valid: usize,
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        for r in 0..RR {
            for i in 0..PP {
                let lo = _mm512_castps512_ps256(acc[r][i]);
                let hi = _mm512_extractf32x8_ps::<1>(acc[r][i]);
                *out.ptr.add(2 * i * out.ldo + r0 + r) = hsum(lo);
                if 2 * i + 1 < valid {
                    *out.ptr.add((2 * i + 1) * out.ldo + r0 + r) = hsum(hi);
                }
            }
        }
    }
}

/// `RR` rows from `r0` times the `PP` token pairs from `pair0`; writes the first `valid`
/// of their tokens at `out[t * ldo + r0 + r]` (`t` counted from token `2 pair0`).
#[inline(always)]
unsafe fn micro<const RR: usize, const PP: usize, const M: u8>(
    p: &Panel,
    r0: usize,
    a: &QuantActs,
    pair0: usize,
    valid: usize,
    out: Out,
) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let (cols, ng, nbp) = (p.cols, p.ng, a.nbp());
        let nb = cols / QB;
        let ngs = nbp / GROUP;
        let npg = 8 * M as usize;
        let codes: [*const i16; RR] =
            std::array::from_fn(|r| p.codes.as_ptr().add((r0 + r) * cols));
        let ws: [*const f32; RR] =
            std::array::from_fn(|r| p.ws.as_ptr().add((r0 + r) * ng * GROUP));
        let mv: [*const f32; RR] =
            std::array::from_fn(|r| p.minv.as_ptr().add((r0 + r) * ng * npg));
        let xq: [*const i16; PP] =
            std::array::from_fn(|i| a.qp.as_ptr().add((pair0 + i) * nb * 64));
        let xd: [*const f32; PP] =
            std::array::from_fn(|i| a.dp.as_ptr().add((pair0 + i) * nbp * 16));
        let xs: [*const f32; PP] = std::array::from_fn(|i| {
            if M == 2 {
                a.s16p.as_ptr().add((pair0 + i) * 2 * ngs * 16)
            } else {
                a.sp.as_ptr().add((pair0 + i) * ngs * 16)
            }
        });
        let zero = _mm512_setzero_si512();
        let mut acc = [[_mm512_setzero_ps(); PP]; RR];
        for g in 0..ng {
            let nbj = (nb - GROUP * g).min(GROUP);
            for j in 0..nbj {
                let blk = GROUP * g + j;
                let e = blk * QB;
                // The rows' codes stay in registers while each pair's block is loaded once.
                let mut c = [[zero; 2]; RR];
                for r in 0..RR {
                    c[r][0] = _mm512_broadcast_i64x4(_mm256_load_si256(
                        codes[r].add(e) as *const __m256i
                    ));
                    c[r][1] = _mm512_broadcast_i64x4(_mm256_load_si256(
                        codes[r].add(e + 16) as *const __m256i
                    ));
                }
                for i in 0..PP {
                    let x0 = _mm512_load_si512(xq[i].add(64 * blk) as *const __m512i);
                    let x1 = _mm512_load_si512(xq[i].add(64 * blk + 32) as *const __m512i);
                    let d16 = _mm512_load_ps(xd[i].add(16 * blk));
                    for r in 0..RR {
                        let isum = dot32(_mm512_madd_epi16(c[r][0], x0), c[r][1], x1);
                        let pp = _mm512_mul_ps(_mm512_set1_ps(*ws[r].add(blk)), d16);
                        acc[r][i] = _mm512_fmadd_ps(pp, _mm512_cvtepi32_ps(isum), acc[r][i]);
                    }
                }
            }
            for h in 0..M as usize {
                for r in 0..RR {
                    let m16 =
                        _mm512_broadcast_f32x8(_mm256_loadu_ps(mv[r].add(npg * g + GROUP * h)));
                    for i in 0..PP {
                        let s16 = _mm512_load_ps(xs[i].add(16 * (M as usize * g + h)));
                        acc[r][i] = _mm512_fmadd_ps(m16, s16, acc[r][i]);
                    }
                }
            }
        }
        store_pairs(&acc, r0, valid, out);
    }
}
