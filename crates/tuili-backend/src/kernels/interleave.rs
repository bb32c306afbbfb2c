//! Weights repacked at load with rows interleaved: the layout of the block-sum
//! specification (see the module docs of `kernels`, "Interleaved rows").
//!
//! A matrix is cut into groups of [`IROWS`] rows (the last one padded with zero rows).
//! A group stores, block after block, the codes of its 16 rows so that one 512-bit load
//! and a shift and a mask give, in 32-bit lane `r`, row `r`'s codes of one element pair
//! as two int16 values; `vpdpwssd` with the token's activation pair broadcast then adds
//! that pair's products into lane `r`, and after 16 pairs lane `r` holds row `r`'s
//! whole integer block sum. Then the block's float scales (f16, one per row) and, for
//! Q4_1, its minimums:
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
//! - Q8_0 (8 chunks): the bytes of row `r` in chunk `c` are elements `4c, 4c+2, 4c+1,
//!   4c+3`, so that the low bytes of the two 16-bit halves are the pair `2c` and the
//!   high bytes the pair `2c + 1`, each sign-extended by shifts.
//!
//! The same bytes as the file (a 16-row group of Q4_0 blocks: 256 + 32 = 288 bytes, as
//! 16 file blocks of 18), plus the padding of the last group and of each group to a
//! cache line.

use super::{AlignedBuf, QFormat, QB};
use crate::quant::f16_to_f32;

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
        _ => 256,
    }
}

/// Offset of the codes in a group of `nb` blocks: after the scales (and minimums),
/// rounded up to a cache line.
fn codes_at(fmt: QFormat, nb: usize) -> usize {
    let per_block = if fmt == QFormat::Q4_1 { 2 } else { 1 };
    (nb * 2 * IROWS * per_block).next_multiple_of(64)
}

/// How far ahead of the codes being read the products prefetch: about 2 KiB, a few
/// blocks of a group (the next group's scales and codes near its end).
pub(crate) const PREFETCH_BYTES: usize = 2048;

/// Whether `fmt` has the interleaved layout.
pub(crate) fn interleavable(fmt: QFormat) -> bool {
    matches!(fmt, QFormat::Q4_0 | QFormat::Q4_1 | QFormat::Q8_0)
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

    /// Row `r` in the file's layout (`row`: `[cols / 32 * type_size]`), the exact
    /// bytes `pack` took.
    pub(crate) fn file_row(&self, r: usize, row: &mut [u8]) {
        let (g, lane) = (r / IROWS, r % IROWS);
        let grp = &self.bytes[g * self.group_bytes..(g + 1) * self.group_bytes];
        let (cb, ts) = (code_bytes(self.fmt), self.fmt.ty().type_size());
        for (b, blk) in row.chunks_exact_mut(ts).enumerate().take(self.nb()) {
            let sc = self.scales_at() + 2 * (IROWS * b + lane);
            blk[0..2].copy_from_slice(&grp[sc..sc + 2]);
            for chunk in 0..cb / 64 {
                let at = self.codes_at() + cb * b + 64 * chunk + 4 * lane;
                let v = [grp[at], grp[at + 1], grp[at + 2], grp[at + 3]];
                if self.fmt == QFormat::Q8_0 {
                    let e = 2 + 4 * chunk;
                    [blk[e], blk[e + 2], blk[e + 1], blk[e + 3]] = v;
                    continue;
                }
                let qs = if self.fmt == QFormat::Q4_1 {
                    let mn = self.mins_at() + 2 * (IROWS * b + lane);
                    blk[2..4].copy_from_slice(&grp[mn..mn + 2]);
                    &mut blk[4..20]
                } else {
                    &mut blk[2..18]
                };
                let word = u32::from_le_bytes(v);
                for j in 0..4 {
                    let p = 4 * chunk + j;
                    for (e, bits) in [(2 * p, 4 * j), (2 * p + 1, 16 + 4 * j)] {
                        let nib = ((word >> bits) & 15) as u8;
                        if e < 16 {
                            qs[e] = (qs[e] & 0xf0) | nib;
                        } else {
                            qs[e - 16] = (qs[e - 16] & 0x0f) | (nib << 4);
                        }
                    }
                }
            }
        }
    }

    /// Row `r` as the specification sees it: `codes` `[cols]` (Q4_0's less 8), the
    /// block scales `ws` `[nb]` and, for Q4_1, the minimums `minv` `[nb]`.
    pub(crate) fn unpack_row(&self, r: usize, codes: &mut [i16], ws: &mut [f32], minv: &mut [f32]) {
        let (g, lane) = (r / IROWS, r % IROWS);
        let grp = &self.bytes[g * self.group_bytes..(g + 1) * self.group_bytes];
        let cb = code_bytes(self.fmt);
        let f16_at = |at: usize| f16_to_f32(u16::from_le_bytes([grp[at], grp[at + 1]]));
        for b in 0..self.nb() {
            ws[b] = f16_at(self.scales_at() + 2 * (IROWS * b + lane));
            if self.fmt == QFormat::Q4_1 {
                minv[b] = f16_at(self.mins_at() + 2 * (IROWS * b + lane));
            }
            let c = &mut codes[QB * b..QB * (b + 1)];
            for chunk in 0..cb / 64 {
                let at = self.codes_at() + cb * b + 64 * chunk + 4 * lane;
                let v = [grp[at], grp[at + 1], grp[at + 2], grp[at + 3]];
                if self.fmt == QFormat::Q8_0 {
                    let e = 4 * chunk;
                    [c[e], c[e + 2], c[e + 1], c[e + 3]] = v.map(|q| q as i8 as i16);
                } else {
                    let word = u32::from_le_bytes(v);
                    let offset = if self.fmt == QFormat::Q4_0 { 8 } else { 0 };
                    for j in 0..4 {
                        let p = 4 * chunk + j;
                        c[2 * p] = ((word >> (4 * j)) & 15) as i16 - offset;
                        c[2 * p + 1] = ((word >> (16 + 4 * j)) & 15) as i16 - offset;
                    }
                }
            }
        }
    }
}

/// Repacks `rows` rows of `cols` (a multiple of 32) of `fmt` (`interleavable`), `w`:
/// `[rows, row_bytes]` as in the file.
pub(crate) fn pack(fmt: QFormat, w: &[u8], rows: usize, cols: usize) -> Packed {
    assert!(interleavable(fmt) && cols.is_multiple_of(QB));
    let ts = fmt.ty().type_size();
    let nb = cols / QB;
    let row_bytes = nb * ts;
    assert_eq!(w.len(), rows * row_bytes, "pack: weight bytes");
    let cb = code_bytes(fmt);
    let has_min = fmt == QFormat::Q4_1;
    let group_bytes = codes_at(fmt, nb) + nb * cb;
    let ng = rows.div_ceil(IROWS);
    let mut bytes = AlignedBuf::<u8>::default();
    bytes.resize(ng * group_bytes, 0);
    let (scales_at, mins_at, codes0) = (0, nb * 2 * IROWS, codes_at(fmt, nb));
    for r in 0..rows {
        let (g, lane) = (r / IROWS, r % IROWS);
        let dst = &mut bytes[g * group_bytes..(g + 1) * group_bytes];
        for b in 0..nb {
            let blk = &w[r * row_bytes + b * ts..r * row_bytes + (b + 1) * ts];
            // The f16 scale (and minimum) as stored in the file.
            let sc = scales_at + (b * IROWS + lane) * 2;
            dst[sc..sc + 2].copy_from_slice(&blk[0..2]);
            if has_min {
                let mn = mins_at + (b * IROWS + lane) * 2;
                dst[mn..mn + 2].copy_from_slice(&blk[2..4]);
            }
            let codes = &mut dst[codes0 + b * cb..codes0 + (b + 1) * cb];
            match fmt {
                QFormat::Q8_0 => {
                    let q = &blk[2..34];
                    for c in 0..8 {
                        let at = 64 * c + 4 * lane;
                        let e = 4 * c;
                        codes[at..at + 4].copy_from_slice(&[q[e], q[e + 2], q[e + 1], q[e + 3]]);
                    }
                }
                _ => {
                    let qs = if has_min { &blk[4..20] } else { &blk[2..18] };
                    // File order: element i < 16 is the low nibble of qs[i], element
                    // 16 + i the high nibble.
                    let nib = |i: usize| -> u32 {
                        if i < 16 {
                            (qs[i] & 0x0f) as u32
                        } else {
                            (qs[i - 16] >> 4) as u32
                        }
                    };
                    for c in 0..4 {
                        let mut word = 0u32;
                        for j in 0..4 {
                            let p = 4 * c + j;
                            word |= nib(2 * p) << (4 * j);
                            word |= nib(2 * p + 1) << (16 + 4 * j);
                        }
                        let at = 64 * c + 4 * lane;
                        codes[at..at + 4].copy_from_slice(&word.to_le_bytes());
                    }
                }
            }
        }
    }
    Packed {
        fmt,
        rows,
        cols,
        group_bytes,
        bytes,
    }
}
