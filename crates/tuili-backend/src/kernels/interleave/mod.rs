//! Weights repacked at load with rows interleaved: the layout of the block-sum
//! specification (see the module docs of `kernels`, "Interleaved rows").
//!
//! A matrix is cut into groups of [`IROWS`] rows (the last one padded with zero rows).
//! A group stores, block after block, the codes of its 16 rows so that one 512-bit load
//! and a shift and a mask give, in 32-bit lane `r`, row `r`'s codes of one element pair
//! as two int16 values; `vpdpwssd` with the token's activation pair broadcast then adds
//! that pair's products into lane `r`, and after 16 pairs lane `r` holds row `r`'s
//! whole integer block sum. The block's float scales (f16, one per row) and, for Q4_1
//! and Q5_1, its minimums come first:
//!
//! ```text
//! group = [scales: nb x 16 f16][mins: nb x 16 f16, Q4_1 only][pad to 64][codes: nb x CB bytes]
//! ```
//!
//! Scales first, so that a group is one forward stream: the codes that follow are
//! prefetched a fixed distance ahead, which runs into the next group's scales.
//!
//! Codes of a block (`CB` bytes, `CB / 64` chunks of 64 bytes, row `r` at bytes
//! `4r..4r+4` of each chunk):
//! - Q4_0, Q4_1 (4 chunks): the 32-bit word of row `r` in chunk `c` holds element pairs
//!   `p = 4c + j` (`j < 4`): element `2p` at bits `4j..4j+4`, element `2p + 1` at bits
//!   `16+4j..20+4j`. Pair `p` is `(word >> 4j) & 0x000f000f`. The stored nibbles are
//!   the file's (Q4_0's `- 8` is applied to the block sum: `Σ (q-8) x = Σ q x - 8 Σ x`).
//! - Q5_0, Q5_1 (5 chunks): the nibbles as Q4, then a chunk of fifth bits: bit `p` of row
//!   `r`'s word is element `2p`'s, bit `16 + p` element `2p + 1`'s, so pair `p`'s are
//!   `((word >> p) << 4) & 0x00100010`. Q5_0's `- 16` is applied to the block sum.
//! - Q8_0 (8 chunks): the bytes of row `r` in chunk `c` are elements `4c, 4c+2, 4c+1,
//!   4c+3`, so that the low bytes of the two 16-bit halves are the pair `2c` and the
//!   high bytes the pair `2c + 1`, each sign-extended by shifts.
//!
//! The same bytes as the file (a 16-row group of Q4_0 blocks: 256 + 32 = 288 bytes, as
//! 16 file blocks of 18; of Q5_0, 320 + 32 = 16 x 22), plus the padding of the last group
//! and of each group's scales to a cache line.
//!
//! The K-quants (`kquants`) take chunks of the same kinds per 32-element block (Q4_K as
//! Q4_1, Q5_K as Q5_1; Q6_K's low nibbles as Q4 and two more chunks of high bits; Q3_K
//! and Q2_K chunks of 2-bit values), and instead of the per-block f16 scales a *head*
//! per 256-element super-block: the 16 rows' f16 `d` (and `dmin`) and their sub-block
//! scales (and minimums) as bytes, from which a product forms the block-sum
//! specification's float scales exactly (`blocksum`).

mod kquants;
mod write;

use super::blocksum::{Block, Scale};
use super::{AlignedBuf, QFormat, QB};
use crate::quant::f16_to_f32;

#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(unused_imports)
)]
pub(crate) use kquants::{is_k, HEAD_D, HEAD_DMIN, HEAD_M, HEAD_SC, HEAD_SC16};
pub(crate) use write::{pack, pack_releasing};

/// Rows per interleaved group (one per 32-bit lane of a 512-bit register).
pub const IROWS: usize = 16;

/// A weight matrix in the interleaved layout.
#[derive(Clone)]
pub(crate) struct Packed {
    pub(crate) fmt: QFormat,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    /// Bytes from one group to the next (a multiple of 64).
    pub(crate) group_bytes: usize,
    /// `[ceil(rows / 16), group_bytes]`.
    pub(crate) bytes: AlignedBuf<u8>,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({} x {} {:?})", self.rows, self.cols, self.fmt)
    }
}

/// Code bytes of one block of a group (16 rows).
pub(crate) fn code_bytes(fmt: QFormat) -> usize {
    match fmt {
        QFormat::Q8_0 => 512,
        QFormat::Q6K => 384,
        QFormat::Q5_0 | QFormat::Q5_1 | QFormat::Q5K => 320,
        QFormat::Q3K => 192,
        QFormat::Q2K => 128,
        _ => 256,
    }
}

/// Whether `fmt`'s codes have a fifth bit (a fifth chunk per block).
fn fifth_bit(fmt: QFormat) -> bool {
    matches!(fmt, QFormat::Q5_0 | QFormat::Q5_1 | QFormat::Q5K)
}

/// Whether `fmt` stores a minimum per block (its products add `minv * s`).
pub(crate) fn has_min(fmt: QFormat) -> bool {
    matches!(
        fmt,
        QFormat::Q4_1 | QFormat::Q5_1 | QFormat::Q4K | QFormat::Q5K
    )
}

/// What the specification's codes are less than the stored unsigned ones (Q4_0's `q -
/// 8`, Q5_0's `q - 16`, Q6_K's `q - 32`, Q3_K's `q - 4`): the products subtract `offset
/// * Σ x` from the block sum (from each 16-element half's sum for Q6_K and Q3_K).
pub(crate) fn code_offset(fmt: QFormat) -> i32 {
    match fmt {
        QFormat::Q4_0 => 8,
        QFormat::Q5_0 => 16,
        QFormat::Q6K => 32,
        QFormat::Q3K => 4,
        _ => 0,
    }
}

/// Offset of the low nibbles in a file block of a 4/5-bit format.
fn qs_at(fmt: QFormat) -> usize {
    match fmt {
        QFormat::Q4_0 => 2,
        QFormat::Q4_1 => 4,
        QFormat::Q5_0 => 6,
        _ => 8,
    }
}

/// Offset of the codes in a group of `nb` blocks: after the scales (and minimums), or
/// the K-quants' heads, rounded up to a cache line.
fn codes_at(fmt: QFormat, nb: usize) -> usize {
    if is_k(fmt) {
        return (nb / 8 * kquants::head_bytes(fmt)).next_multiple_of(64);
    }
    let per_block = if has_min(fmt) { 2 } else { 1 };
    (nb * 2 * IROWS * per_block).next_multiple_of(64)
}

/// How far ahead of the bytes being read the products prefetch, into L2 (`prefetcht1`):
/// 4 KiB, several blocks of a group (the next group's scales and codes near its end). On
/// Zen 4 (one thread, a Q8_0 matrix streamed from DRAM, 131072 x 640, CPU time of
/// `examples/matmul_bench`) this took the one-token product from 10.4-11.0 to 14.0-16.2
/// GB/s with the AVX-512 table and from 8.0-9.1 to 14.5-14.9 with the AVX2 one, against
/// 2 KiB into L1; Q4_0 gained less, the K-quants and products from L3 did not move. The
/// NEON tiles take the same distance and level (`prfm pldl2keep`) unmeasured: tuili's
/// aarch64 kernels are tested only under emulation so far.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(crate) const PREFETCH_BYTES: usize = 4096;

/// Prefetches the cache line at `p` into L2 (`prefetcht1`; `prfm pldl2keep`, as stable
/// Rust has no aarch64 prefetch intrinsic).
///
/// # Safety
/// The CPU has SSE (every x86-64 does); prefetching an address reads nothing, so any
/// address will do.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
pub(crate) unsafe fn prefetch_line(p: *const u8) {
    // SAFETY: a prefetch reads nothing (this fn's contract)
    #[cfg(target_arch = "x86_64")]
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        _mm_prefetch::<_MM_HINT_T1>(p as *const i8)
    }
    // SAFETY: a prefetch reads nothing, writes nothing and leaves the flags alone
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!(
            "prfm pldl2keep, [{0}]",
            in(reg) p,
            options(nostack, preserves_flags, readonly)
        )
    }
}

/// The K-quants' prefetch: the `cb` code bytes of a block, `PREFETCH_BYTES` ahead of
/// block `b` of the codes at `codes` (their heads are read slowly enough for the
/// hardware prefetcher).
///
/// # Safety
/// As for [`prefetch_line`].
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
pub(crate) unsafe fn prefetch_codes(codes: *const u8, b: usize, cb: usize) {
    let ahead = codes.wrapping_add(cb * b + PREFETCH_BYTES);
    for line in 0..cb / 64 {
        // SAFETY: this fn's contract
        unsafe { prefetch_line(ahead.wrapping_add(64 * line)) };
    }
}

/// The prefetch of the interleaved products: into L2, `PREFETCH_BYTES` ahead, what a
/// tile of groups reads of each of its groups, block by block.
///
/// A group whose scales (minimums, heads) fit in the prefetch distance (short rows: a
/// group of a few KiB) is covered whole, an even share of its bytes per block, and past
/// its end the stream goes on at the same place in the next tile, `tile_groups` groups
/// on, which is where this stream of the tile goes next. Prefetching by code bytes alone
/// left the scales and the first codes of every other group cold in two-group tiles:
/// on Zen 4 (one thread, 65536 x 896, streamed from DRAM) Q5_0 ran at 10.3-10.7 GB/s and
/// Q8_0 at 15.1-16.3, against 17.2-17.5 and 24.0-24.5 now. A group with a long scale
/// section (long rows) has its codes prefetched alone, the scales being read slowly
/// enough for the hardware prefetcher.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[derive(Clone, Copy)]
pub(crate) struct Prefetch {
    /// Offset in the group of the first byte prefetched at block 0.
    start: usize,
    /// Bytes the stream moves per block, and prefetches.
    step: usize,
    /// Offsets from here on lie in the next tile: `jump` bytes further.
    end: usize,
    jump: usize,
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
impl Prefetch {
    /// The prefetch streams of tiles of `tile_groups` groups of `p`.
    #[inline(always)]
    pub(crate) fn new(p: &Packed, tile_groups: usize) -> Prefetch {
        let (gb, codes_at) = (p.group_bytes, p.codes_at());
        if codes_at <= PREFETCH_BYTES {
            Prefetch {
                start: PREFETCH_BYTES,
                step: gb.div_ceil(p.nb()),
                end: gb,
                jump: (tile_groups - 1) * gb,
            }
        } else {
            Prefetch {
                start: codes_at + PREFETCH_BYTES,
                step: code_bytes(p.fmt),
                end: usize::MAX,
                jump: 0,
            }
        }
    }

    /// Prefetches what the stream of the group at `group` reads before its prefetch
    /// gets ahead: the `PREFETCH_BYTES` before block 0's share. Without it a product's
    /// first lines arrive one miss at a time, which a small product (tens of µs) pays on
    /// every call.
    ///
    /// # Safety
    /// As for [`Prefetch::block`].
    #[inline(always)]
    pub(crate) unsafe fn ramp(&self, group: *const u8) {
        let mut off = (self.start - PREFETCH_BYTES) & !63;
        while off < self.start {
            // SAFETY: a prefetch reads nothing (this fn's contract)
            unsafe { prefetch_line(group.wrapping_add(off)) };
            off += 64;
        }
    }

    /// Prefetches block `b`'s share of the stream of the group at `group`.
    ///
    /// # Safety
    /// As for [`prefetch_line`].
    #[inline(always)]
    pub(crate) unsafe fn block(&self, group: *const u8, b: usize) {
        let from = self.start + self.step * b;
        let to = from + self.step;
        // Where the share does not cross into the next tile (the common case), plain
        // pointer steps: this runs once per block, beside a few dozen instructions.
        let (mut off, stop) = (from & !63, to.min(self.end));
        while off < stop {
            // SAFETY: a prefetch reads nothing (this fn's contract)
            unsafe { prefetch_line(group.wrapping_add(off)) };
            off += 64;
        }
        while off < to {
            // SAFETY: as above
            unsafe { prefetch_line(group.wrapping_add(off + self.jump)) };
            off += 64;
        }
    }
}

/// Whether `fmt` has the interleaved layout.
pub(crate) fn interleavable(fmt: QFormat) -> bool {
    matches!(
        fmt,
        QFormat::Q4_0
            | QFormat::Q4_1
            | QFormat::Q5_0
            | QFormat::Q5_1
            | QFormat::Q8_0
            | QFormat::Q2K
            | QFormat::Q3K
            | QFormat::Q4K
            | QFormat::Q5K
            | QFormat::Q6K
    )
}

impl Packed {
    /// Blocks per row.
    pub(crate) fn nb(&self) -> usize {
        self.cols / QB
    }
    /// Offset of the scales within a group.
    pub(crate) fn scales_at(&self) -> usize {
        0
    }
    /// Offset of the minimums within a group (Q4_1).
    pub(crate) fn mins_at(&self) -> usize {
        self.nb() * 2 * IROWS
    }
    /// Offset of the codes within a group (a multiple of 64).
    pub(crate) fn codes_at(&self) -> usize {
        codes_at(self.fmt, self.nb())
    }
    /// Offset of super-block `s`'s head within a group (K-quants; `kquants`).
    pub(crate) fn head_at(&self, s: usize) -> usize {
        s * kquants::head_bytes(self.fmt)
    }

    /// Row `r`'s word of chunk `chunk` of block `b` (its 4 bytes in the group).
    fn word(&self, r: usize, b: usize, chunk: usize) -> [u8; 4] {
        let (g, lane) = (r / IROWS, r % IROWS);
        let at = g * self.group_bytes + self.codes_at() + code_bytes(self.fmt) * b + 64 * chunk;
        let v = &self.bytes[at + 4 * lane..at + 4 * lane + 4];
        [v[0], v[1], v[2], v[3]]
    }

    /// Row `r`'s f16 of block `b` in the section at `section` (scales or minimums).
    fn f16_bytes(&self, r: usize, b: usize, section: usize) -> [u8; 2] {
        let at = (r / IROWS) * self.group_bytes + section + 2 * (IROWS * b + r % IROWS);
        [self.bytes[at], self.bytes[at + 1]]
    }

    /// Row `r`'s unsigned 4/5-bit codes of block `b` (before any offset), element order
    /// (Q6_K: the low 4 bits).
    fn small_codes(&self, r: usize, b: usize) -> [u8; 32] {
        let mut q = [0u8; 32];
        for chunk in 0..4 {
            let word = u32::from_le_bytes(self.word(r, b, chunk));
            for j in 0..4 {
                let p = 4 * chunk + j;
                q[2 * p] = ((word >> (4 * j)) & 15) as u8;
                q[2 * p + 1] = ((word >> (16 + 4 * j)) & 15) as u8;
            }
        }
        if fifth_bit(self.fmt) {
            let hi = u32::from_le_bytes(self.word(r, b, 4));
            for p in 0..16 {
                q[2 * p] |= (((hi >> p) & 1) << 4) as u8;
                q[2 * p + 1] |= (((hi >> (16 + p)) & 1) << 4) as u8;
            }
        }
        q
    }

    /// Row `r`'s signed 8-bit codes of block `b` (Q8_0), element order.
    fn byte_codes(&self, r: usize, b: usize) -> [i8; 32] {
        let mut q = [0i8; 32];
        for chunk in 0..8 {
            let [a, b2, c, d] = self.word(r, b, chunk);
            let e = 4 * chunk;
            [q[e], q[e + 2], q[e + 1], q[e + 3]] = [a, b2, c, d].map(|v| v as i8);
        }
        q
    }

    /// Row `r` in the file's layout (`row`: `[cols / 32 * type_size]`), the exact
    /// bytes `pack` took.
    pub(crate) fn file_row(&self, r: usize, row: &mut [u8]) {
        if is_k(self.fmt) {
            return self.file_row_k(r, row);
        }
        let ts = self.fmt.ty().type_size();
        for (b, blk) in row.chunks_exact_mut(ts).enumerate().take(self.nb()) {
            blk[0..2].copy_from_slice(&self.f16_bytes(r, b, self.scales_at()));
            if self.fmt == QFormat::Q8_0 {
                for (o, q) in blk[2..34].iter_mut().zip(self.byte_codes(r, b)) {
                    *o = q as u8;
                }
                continue;
            }
            if has_min(self.fmt) {
                blk[2..4].copy_from_slice(&self.f16_bytes(r, b, self.mins_at()));
            }
            let q = self.small_codes(r, b);
            let qs_at = qs_at(self.fmt);
            for i in 0..16 {
                blk[qs_at + i] = (q[i] & 15) | ((q[i + 16] & 15) << 4);
            }
            if fifth_bit(self.fmt) {
                let qh = (0..32).fold(0u32, |h, i| h | (((q[i] >> 4) as u32) << i));
                blk[qs_at - 4..qs_at].copy_from_slice(&qh.to_le_bytes());
            }
        }
    }

    /// Block `b` of row `r` as the block-sum specification sees it: codes (less
    /// `code_offset`), scale, minimum.
    pub(crate) fn block(&self, r: usize, b: usize) -> Block {
        if is_k(self.fmt) {
            return self.block_k(r, b);
        }
        let f16 = |v: [u8; 2]| f16_to_f32(u16::from_le_bytes(v));
        let ws = f16(self.f16_bytes(r, b, self.scales_at()));
        let minv =
            has_min(self.fmt).then(|| Scale::Whole(f16(self.f16_bytes(r, b, self.mins_at()))));
        let codes = if self.fmt == QFormat::Q8_0 {
            self.byte_codes(r, b).map(|q| q as i16)
        } else {
            let off = code_offset(self.fmt) as i16;
            self.small_codes(r, b).map(|q| q as i16 - off)
        };
        Block {
            codes,
            ws: Scale::Whole(ws),
            minv,
        }
    }
}
