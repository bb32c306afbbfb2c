//! Each weight format as two AVX2 steps: the float scales of a 256-element group, and
//! the integer codes of one of its 32-element blocks, in registers. The panel decoder
//! stores them; the one-token kernel uses them directly.

use std::arch::x86_64::*;

use super::super::scalar::{scale_min_k4, scale_q3_k};
use super::super::QFormat;
use crate::quant::mxfp4::{e8m0_half, KVALUES};

/// A group's scales: `ws` lane `j` = float scale of block `j` (0 past the blocks
/// present); `m` = minimum terms, lane `j` of `m[0]` for block `j` (or half-blocks
/// 0..8 and 8..16 in `m[0]`, `m[1]` for Q2_K).
pub(in crate::kernels) struct Scales {
    pub(in crate::kernels) ws: __m256,
    pub(in crate::kernels) m: [__m256; 2],
}

pub(in crate::kernels) trait Fmt {
    const FMT: QFormat;
    /// Scales of the group at `b` holding `nbj` blocks.
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales;
    /// Codes of block `j` of the group at `b`: elements 0..16 and 16..32.
    unsafe fn codes(b: *const u8, j: usize) -> (__m256i, __m256i);
}

/// `$f::<F, M>(args)` for the format type `F` of `$fmt` and its minimum kind `M` (0: none,
/// 1: one per 32 elements, 2: one per 16): the one dispatch of every x86 kernel that is
/// generic over the format.
macro_rules! with_format {
    ($fmt:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $fmt {
            QFormat::Q4_0 => $f::<Q40, 0>($($arg),*),
            QFormat::Q4_1 => $f::<Q41, 1>($($arg),*),
            QFormat::Q5_0 => $f::<Q50, 0>($($arg),*),
            QFormat::Q5_1 => $f::<Q51, 1>($($arg),*),
            QFormat::Q8_0 => $f::<Q80, 0>($($arg),*),
            QFormat::Q2K => $f::<Q2K, 2>($($arg),*),
            QFormat::Q3K => $f::<Q3K, 0>($($arg),*),
            QFormat::Q4K => $f::<Q4K, 1>($($arg),*),
            QFormat::Q5K => $f::<Q5K, 1>($($arg),*),
            QFormat::Q6K => $f::<Q6K, 0>($($arg),*),
            QFormat::Mxfp4 => $f::<Mx4, 0>($($arg),*),
        }
    };
}
pub(in crate::kernels) use with_format;

/// The f16 at `p` as f32.
#[inline(always)]
pub(super) unsafe fn f16(p: *const u8) -> f32 {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let h = (p as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
    }
}

/// 16 bytes at `p`, zero-extended to 16 i16 lanes. (`vpmovzxbw` does this in one
/// instruction, but it crosses 128-bit lanes, which costs Zen 3 three times the
/// throughput of an in-lane shuffle of the bytes loaded into both halves.)
#[inline(always)]
unsafe fn u8x16(p: *const u8) -> __m256i {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let v = _mm256_broadcastsi128_si256(_mm_loadu_si128(p as *const __m128i));
        // Low half: bytes 0..8 in the low byte of each lane; high half: bytes 8..16.
        let z = -1i8;
        let shuf = _mm256_setr_epi8(
            0, z, 1, z, 2, z, 3, z, 4, z, 5, z, 6, z, 7, z, 8, z, 9, z, 10, z, 11, z, 12, z, 13, z,
            14, z, 15, z,
        );
        _mm256_shuffle_epi8(v, shuf)
    }
}

/// `(v >> n) & mask` on u16 lanes, `n` at run time.
#[inline(always)]
unsafe fn shr_and(v: __m256i, n: usize, mask: i16) -> __m256i {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        _mm256_and_si256(
            _mm256_srl_epi16(v, _mm_cvtsi32_si128(n as i32)),
            _mm256_set1_epi16(mask),
        )
    }
}

/// 32 i8 codes (element order) sign-extended: elements 0..16 and 16..32.
#[inline(always)]
unsafe fn widen_i8(v: __m256i) -> (__m256i, __m256i) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        (
            _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v)),
            _mm256_cvtepi8_epi16(_mm256_extracti128_si256(v, 1)),
        )
    }
}

/// Lane `i` (16 bits) all ones where bit `i` of half `H` of `qh` is set (half 0: bits
/// 0..16, half 1: bits 16..32). In-lane: the byte holding the bit is shuffled into
/// each lane, then tested.
#[inline(always)]
unsafe fn bits16<const H: i8>(qh: __m256i) -> __m256i {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let (a, b, z) = (2 * H, 2 * H + 1, -1i8);
        let shuf = _mm256_setr_epi8(
            a, z, a, z, a, z, a, z, a, z, a, z, a, z, a, z, b, z, b, z, b, z, b, z, b, z, b, z, b,
            z, b, z,
        );
        let sel = _mm256_setr_epi16(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
        _mm256_cmpeq_epi16(_mm256_and_si256(_mm256_shuffle_epi8(qh, shuf), sel), sel)
    }
}

/// `(v >> n) & mask` on bytes (16-bit shifts: `mask` drops what crosses bytes).
#[inline(always)]
unsafe fn shr_and8(v: __m256i, n: usize, mask: i8) -> __m256i {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        _mm256_and_si256(
            _mm256_srl_epi16(v, _mm_cvtsi32_si128(n as i32)),
            _mm256_set1_epi8(mask),
        )
    }
}

/// The nibbles of 16 bytes: `(low, high)` = elements 0..16 and 16..32.
#[inline(always)]
unsafe fn nibbles(qs: *const u8) -> (__m256i, __m256i) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let v = u8x16(qs);
        (
            _mm256_and_si256(v, _mm256_set1_epi16(0x0f)),
            _mm256_srli_epi16(v, 4),
        )
    }
}

/// The u32 at byte `ts * j` of `b`, or 0 for `j >= nbj` (absent blocks).
#[inline(always)]
unsafe fn dword(b: *const u8, ts: usize, j: usize, nbj: usize) -> i32 {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        if j < nbj {
            (b.add(ts * j) as *const i32).read_unaligned()
        } else {
            0
        }
    }
}

/// The first 4 bytes of each of 8 blocks of `ts` bytes: 8 u32 lanes.
#[inline(always)]
unsafe fn heads(b: *const u8, ts: usize, nbj: usize) -> __m256i {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        if nbj == 8 {
            let at = |j: usize| (b.add(ts * j) as *const i32).read_unaligned();
            _mm256_setr_epi32(at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7))
        } else {
            let at = |j: usize| dword(b, ts, j, nbj);
            _mm256_setr_epi32(at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7))
        }
    }
}

/// Legacy blocks start with f16 `d` (and for Q4_1/Q5_1 f16 `m` right after): both as
/// 8 f32 lanes, one per block.
#[inline(always)]
unsafe fn legacy_dm(b: *const u8, ts: usize, nbj: usize) -> (__m256, __m256) {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let v = heads(b, ts, nbj);
        let d = _mm256_and_si256(v, _mm256_set1_epi32(0xffff));
        let m = _mm256_srli_epi32(v, 16);
        // packus interleaves 128-bit halves: [d0..4 m0..4 | d4..8 m4..8] -> [d0..8 | m0..8].
        let p = _mm256_permute4x64_epi64(_mm256_packus_epi32(d, m), 0b11_01_10_00);
        (
            _mm256_cvtph_ps(_mm256_castsi256_si128(p)),
            _mm256_cvtph_ps(_mm256_extracti128_si256(p, 1)),
        )
    }
}

#[inline(always)]
unsafe fn no_min(ws: __m256) -> Scales {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        Scales {
            ws,
            m: [_mm256_setzero_ps(); 2],
        }
    }
}

pub(in crate::kernels) struct Q40;
impl Fmt for Q40 {
    const FMT: QFormat = QFormat::Q4_0;
    #[inline(always)]
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe { no_min(legacy_dm(b, 18, nbj).0) }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> (__m256i, __m256i) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let (lo, hi) = nibbles(b.add(18 * j + 2));
            let eight = _mm256_set1_epi16(8);
            (_mm256_sub_epi16(lo, eight), _mm256_sub_epi16(hi, eight))
        }
    }
}

pub(in crate::kernels) struct Q41;
impl Fmt for Q41 {
    const FMT: QFormat = QFormat::Q4_1;
    #[inline(always)]
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let (ws, m) = legacy_dm(b, 20, nbj);
            Scales {
                ws,
                m: [m, _mm256_setzero_ps()],
            }
        }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> (__m256i, __m256i) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe { nibbles(b.add(20 * j + 4)) }
    }
}

pub(in crate::kernels) struct Q50;
impl Fmt for Q50 {
    const FMT: QFormat = QFormat::Q5_0;
    #[inline(always)]
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe { no_min(legacy_dm(b, 22, nbj).0) }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> (__m256i, __m256i) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let blk = b.add(22 * j);
            let qh = _mm256_set1_epi32((blk.add(2) as *const i32).read_unaligned());
            let (lo, hi) = nibbles(blk.add(6));
            // (q | h << 4) - 16 = q - 16 where the bit is clear, q where it is set.
            let sixteen = _mm256_set1_epi16(16);
            (
                _mm256_sub_epi16(lo, _mm256_andnot_si256(bits16::<0>(qh), sixteen)),
                _mm256_sub_epi16(hi, _mm256_andnot_si256(bits16::<1>(qh), sixteen)),
            )
        }
    }
}

pub(in crate::kernels) struct Q51;
impl Fmt for Q51 {
    const FMT: QFormat = QFormat::Q5_1;
    #[inline(always)]
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let (ws, m) = legacy_dm(b, 24, nbj);
            Scales {
                ws,
                m: [m, _mm256_setzero_ps()],
            }
        }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> (__m256i, __m256i) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let blk = b.add(24 * j);
            let qh = _mm256_set1_epi32((blk.add(4) as *const i32).read_unaligned());
            let (lo, hi) = nibbles(blk.add(8));
            let sixteen = _mm256_set1_epi16(16);
            (
                _mm256_or_si256(lo, _mm256_and_si256(bits16::<0>(qh), sixteen)),
                _mm256_or_si256(hi, _mm256_and_si256(bits16::<1>(qh), sixteen)),
            )
        }
    }
}

pub(in crate::kernels) struct Q80;
impl Fmt for Q80 {
    const FMT: QFormat = QFormat::Q8_0;
    #[inline(always)]
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe { no_min(legacy_dm(b, 34, nbj).0) }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> (__m256i, __m256i) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let q = b.add(34 * j + 2);
            (
                _mm256_cvtepi8_epi16(_mm_loadu_si128(q as *const __m128i)),
                _mm256_cvtepi8_epi16(_mm_loadu_si128(q.add(16) as *const __m128i)),
            )
        }
    }
}

pub(in crate::kernels) struct Mx4;
impl Fmt for Mx4 {
    const FMT: QFormat = QFormat::Mxfp4;
    #[inline(always)]
    unsafe fn scales(b: *const u8, nbj: usize) -> Scales {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let mut ws = [0f32; 8];
            for (j, w) in ws.iter_mut().enumerate().take(nbj) {
                *w = e8m0_half(*b.add(17 * j));
            }
            no_min(_mm256_loadu_ps(ws.as_ptr()))
        }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> (__m256i, __m256i) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let (lo, hi) = nibbles(b.add(17 * j + 1));
            // Each i16 lane's nibble looks up its value in the low byte (its high byte,
            // 0, looks up KVALUES[0] = 0); shifting up and back sign-extends it.
            let k = KVALUES.map(|v| v as u8);
            let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(k.as_ptr() as *const __m128i));
            let value = |n: __m256i| {
                _mm256_srai_epi16(_mm256_slli_epi16(_mm256_shuffle_epi8(table, n), 8), 8)
            };
            (value(lo), value(hi))
        }
    }
}

/// Q4_K and Q5_K: `ws = d * scale`, `m = -(dmin * min)`, 8 sub-blocks.
#[inline(always)]
unsafe fn k4_scales(b: *const u8) -> Scales {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let sc = std::slice::from_raw_parts(b.add(4), 12);
        let mut s = [0i32; 8];
        let mut m = [0i32; 8];
        for j in 0..8 {
            let (a, c) = scale_min_k4(j, sc);
            (s[j], m[j]) = (a as i32, c as i32);
        }
        let s = _mm256_cvtepi32_ps(_mm256_loadu_si256(s.as_ptr() as *const __m256i));
        let m = _mm256_cvtepi32_ps(_mm256_loadu_si256(m.as_ptr() as *const __m256i));
        Scales {
            ws: _mm256_mul_ps(_mm256_set1_ps(f16(b)), s),
            m: [
                _mm256_mul_ps(_mm256_set1_ps(-f16(b.add(2))), m),
                _mm256_setzero_ps(),
            ],
        }
    }
}

pub(in crate::kernels) struct Q4K;
impl Fmt for Q4K {
    const FMT: QFormat = QFormat::Q4K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, _: usize) -> Scales {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe { k4_scales(b) }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> (__m256i, __m256i) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            // 32 bytes per sub-block pair: 2i in the low nibbles, 2i + 1 in the high ones.
            let q = b.add(16 + 32 * (j / 2));
            let (v0, v1) = (u8x16(q), u8x16(q.add(16)));
            if j.is_multiple_of(2) {
                let m = _mm256_set1_epi16(0x0f);
                (_mm256_and_si256(v0, m), _mm256_and_si256(v1, m))
            } else {
                (_mm256_srli_epi16(v0, 4), _mm256_srli_epi16(v1, 4))
            }
        }
    }
}

pub(in crate::kernels) struct Q5K;
impl Fmt for Q5K {
    const FMT: QFormat = QFormat::Q5K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, _: usize) -> Scales {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe { k4_scales(b) }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> (__m256i, __m256i) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let q = _mm256_loadu_si256(b.add(48 + 32 * (j / 2)) as *const __m256i);
            let nib = shr_and8(q, 4 * (j % 2), 0x0f);
            // Bit j of qh[l] is the 5th bit of element l of sub-block j.
            let qh = _mm256_loadu_si256(b.add(16) as *const __m256i);
            let high = _mm256_slli_epi16(shr_and8(qh, j, 1), 4);
            widen_i8(_mm256_or_si256(nib, high))
        }
    }
}

pub(in crate::kernels) struct Q6K;
impl Fmt for Q6K {
    const FMT: QFormat = QFormat::Q6K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, _: usize) -> Scales {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe { no_min(_mm256_set1_ps(f16(b.add(208)))) }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> (__m256i, __m256i) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let (h, p) = (j / 4, j % 4);
            let ql = _mm256_loadu_si256(b.add(64 * h + 32 * (p & 1)) as *const __m256i);
            let qh = _mm256_loadu_si256(b.add(128 + 32 * h) as *const __m256i);
            let nib = shr_and8(ql, 4 * (p / 2), 0x0f);
            let high = _mm256_slli_epi16(shr_and8(qh, 2 * p, 3), 4);
            let q = _mm256_sub_epi8(_mm256_or_si256(nib, high), _mm256_set1_epi8(32));
            let (c0, c1) = widen_i8(q);
            let sc = b.add(192 + 2 * j) as *const i8;
            (
                _mm256_mullo_epi16(c0, _mm256_set1_epi16(*sc as i16)),
                _mm256_mullo_epi16(c1, _mm256_set1_epi16(*sc.add(1) as i16)),
            )
        }
    }
}

pub(in crate::kernels) struct Q3K;
impl Fmt for Q3K {
    const FMT: QFormat = QFormat::Q3K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, _: usize) -> Scales {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe { no_min(_mm256_set1_ps(f16(b.add(108)))) }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> (__m256i, __m256i) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let (h, p) = (j / 4, j % 4);
            let sc = std::slice::from_raw_parts(b.add(96), 12);
            let half = |k: usize| {
                (
                    b.add(32 + 32 * h + 16 * k),
                    b.add(16 * k),
                    scale_q3_k(2 * j + k, sc),
                )
            };
            let ((q0, m0, s0), (q1, m1, s1)) = (half(0), half(1));
            (q3_half(q0, m0, h, p, s0), q3_half(q1, m1, h, p, s1))
        }
    }
}

/// 16 Q3_K codes: bits `2p..2p+2` of `qs`, minus 4 where bit `4h + p` of `hmask` is
/// clear, times `sc`.
#[inline(always)]
unsafe fn q3_half(qs: *const u8, hmask: *const u8, h: usize, p: usize, sc: i16) -> __m256i {
    // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction set
    // of the table this fn belongs to (tables are built only after detection), and the
    // pointers and lengths it is given lie within the buffers its safe caller checked
    unsafe {
        let low = shr_and(u8x16(qs), 2 * p, 3);
        let hm = _mm256_and_si256(u8x16(hmask), _mm256_set1_epi16(1 << (4 * h + p)));
        let clear = _mm256_cmpeq_epi16(hm, _mm256_setzero_si256());
        let q = _mm256_sub_epi16(low, _mm256_and_si256(clear, _mm256_set1_epi16(4)));
        _mm256_mullo_epi16(q, _mm256_set1_epi16(sc))
    }
}

pub(in crate::kernels) struct Q2K;
impl Fmt for Q2K {
    const FMT: QFormat = QFormat::Q2K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, _: usize) -> Scales {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let mut m = [0i32; 16];
            for (g, mg) in m.iter_mut().enumerate() {
                *mg = (*b.add(g) >> 4) as i32;
            }
            let nd = _mm256_set1_ps(-f16(b.add(82)));
            let m0 = _mm256_cvtepi32_ps(_mm256_loadu_si256(m.as_ptr() as *const __m256i));
            let m1 = _mm256_cvtepi32_ps(_mm256_loadu_si256(m.as_ptr().add(8) as *const __m256i));
            Scales {
                ws: _mm256_set1_ps(f16(b.add(80))),
                m: [_mm256_mul_ps(nd, m0), _mm256_mul_ps(nd, m1)],
            }
        }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, j: usize) -> (__m256i, __m256i) {
        // SAFETY: the caller upholds this unsafe fn's contract: the CPU has the instruction
        // set of the table this fn belongs to (tables are built only after detection), and
        // the pointers and lengths it is given lie within the buffers its safe caller
        // checked
        unsafe {
            let (h, p) = (j / 4, j % 4);
            let q = b.add(16 + 32 * h);
            let (s0, s1) = (
                (*b.add(2 * j) & 0x0f) as i16,
                (*b.add(2 * j + 1) & 0x0f) as i16,
            );
            (
                _mm256_mullo_epi16(shr_and(u8x16(q), 2 * p, 3), _mm256_set1_epi16(s0)),
                _mm256_mullo_epi16(shr_and(u8x16(q.add(16)), 2 * p, 3), _mm256_set1_epi16(s1)),
            )
        }
    }
}
