//! Writing the interleaved layout: `pack` fills a matrix's groups in parallel (the
//! thread pool's chunks take whole groups), each through a `GroupMut` of its bytes, one
//! row per lane.

use super::kquants::is_k;
use super::{code_bytes, codes_at, fifth_bit, has_min, interleavable, qs_at, Packed, IROWS};
use crate::kernels::{AlignedBuf, QFormat, QB};
use crate::pool::{self, SyncPtr};

/// Repacks `rows` rows of `cols` (a multiple of 32; of 256 for the K-quants) of `fmt`
/// (`interleavable`), `w`: `[rows, row_bytes]` as in the file.
pub(crate) fn pack(fmt: QFormat, w: &[u8], rows: usize, cols: usize) -> Packed {
    pack_releasing(fmt, w, rows, cols, &|_| {})
}

/// Groups packed between two calls of `release` in [`pack_releasing`]: 16 Mi rows' worth
/// of bytes at most (10 MiB of a 640-wide Q8_0 matrix), so a weight read from a mapped
/// file never has much more than its packed copy resident.
const RELEASE_GROUPS: usize = 1024;

/// [`pack`], calling `release(range)` with the byte range of `w` it has finished reading,
/// in order, chunk by chunk: a mapped file drops those pages at once instead of holding a
/// second copy of the whole matrix until the end.
pub(crate) fn pack_releasing(
    fmt: QFormat,
    w: &[u8],
    rows: usize,
    cols: usize,
    release: &dyn Fn(std::ops::Range<usize>),
) -> Packed {
    assert!(interleavable(fmt) && cols.is_multiple_of(fmt.ty().block_size()));
    let nb = cols / QB;
    let row_bytes = cols / fmt.ty().block_size() * fmt.ty().type_size();
    assert_eq!(w.len(), rows * row_bytes, "pack: weight bytes");
    let group_bytes = codes_at(fmt, nb) + nb * code_bytes(fmt);
    let ng = rows.div_ceil(IROWS);
    let mut bytes = AlignedBuf::<u8>::default();
    bytes.resize(ng * group_bytes, 0);
    let out = SyncPtr::new(&mut bytes);
    let mut first = 0;
    while first < ng {
        let chunk = first..(first + RELEASE_GROUPS).min(ng);
        pool::global().for_ranges(chunk.len(), 1, &|groups| {
            for g in groups.start + chunk.start..groups.end + chunk.start {
                // SAFETY: the chunks' group ranges are disjoint, so each group's bytes are
                // written by one caller only, and they lie within `bytes` (`ng` groups).
                let dst = unsafe { out.slice(g * group_bytes..(g + 1) * group_bytes) };
                let mut group = GroupMut {
                    fmt,
                    nb,
                    codes_at: codes_at(fmt, nb),
                    bytes: dst,
                };
                for lane in 0..IROWS.min(rows - g * IROWS) {
                    let r = g * IROWS + lane;
                    let row = &w[r * row_bytes..(r + 1) * row_bytes];
                    if is_k(fmt) {
                        group.put_row_k(lane, row);
                    } else {
                        group.put_row(lane, row);
                    }
                }
            }
        });
        let end_row = (chunk.end * IROWS).min(rows);
        release(chunk.start * IROWS * row_bytes..end_row * row_bytes);
        first = chunk.end;
    }
    Packed {
        fmt,
        rows,
        cols,
        group_bytes,
        bytes,
    }
}

/// The bytes of one group, being written.
pub(super) struct GroupMut<'a> {
    pub(super) fmt: QFormat,
    /// Blocks per row.
    pub(super) nb: usize,
    /// Offset of the codes.
    codes_at: usize,
    pub(super) bytes: &'a mut [u8],
}

impl GroupMut<'_> {
    /// Block `b`'s codes: `code_bytes` bytes, chunk `c`'s word of row `lane` at `64 c +
    /// 4 lane`.
    #[inline]
    fn codes_mut(&mut self, b: usize) -> &mut [u8] {
        let cb = code_bytes(self.fmt);
        let at = self.codes_at + b * cb;
        &mut self.bytes[at..at + cb]
    }

    /// Sets row `lane`'s word of chunk `c` of block `b`.
    #[inline]
    pub(super) fn put_word(&mut self, lane: usize, b: usize, c: usize, w: u32) {
        let at = 64 * c + 4 * lane;
        self.codes_mut(b)[at..at + 4].copy_from_slice(&w.to_le_bytes());
    }

    /// Copies `v` to byte `at` of the group.
    #[inline]
    pub(super) fn put(&mut self, at: usize, v: &[u8]) {
        self.bytes[at..at + v.len()].copy_from_slice(v);
    }

    /// Writes the unsigned codes `q` (element order, 4 or 5 bits; Q6_K's low 4) of row
    /// `lane`'s block `b`: the four nibble chunks, and the chunk of fifth bits if the
    /// format has one.
    #[inline]
    pub(super) fn put_small(&mut self, lane: usize, b: usize, q: &[u8; QB]) {
        for c in 0..4 {
            let mut word = 0u32;
            for j in 0..4 {
                let p = 4 * c + j;
                word |= ((q[2 * p] & 15) as u32) << (4 * j);
                word |= ((q[2 * p + 1] & 15) as u32) << (16 + 4 * j);
            }
            self.put_word(lane, b, c, word);
        }
        if fifth_bit(self.fmt) {
            let mut word = 0u32;
            for p in 0..16 {
                word |= ((q[2 * p] >> 4) as u32 & 1) << p;
                word |= ((q[2 * p + 1] >> 4) as u32 & 1) << (16 + p);
            }
            self.put_word(lane, b, 4, word);
        }
    }

    /// Writes row `lane` of a legacy format (`row`: its blocks as in the file).
    fn put_row(&mut self, lane: usize, row: &[u8]) {
        let fmt = self.fmt;
        let mins_at = self.nb * 2 * IROWS;
        for (b, blk) in row.chunks_exact(fmt.ty().type_size()).enumerate() {
            // The f16 scale (and minimum) as stored in the file.
            self.put((b * IROWS + lane) * 2, &blk[0..2]);
            if has_min(fmt) {
                self.put(mins_at + (b * IROWS + lane) * 2, &blk[2..4]);
            }
            if fmt == QFormat::Q8_0 {
                let q = &blk[2..34];
                for c in 0..8 {
                    let e = 4 * c;
                    let w = u32::from_le_bytes([q[e], q[e + 2], q[e + 1], q[e + 3]]);
                    self.put_word(lane, b, c, w);
                }
                continue;
            }
            // File order: element i < 16 is the low nibble of qs[i], element 16 + i the
            // high nibble; Q5: bit i of the file's qh is element i's fifth bit.
            let qs = &blk[qs_at(fmt)..qs_at(fmt) + 16];
            let qh = if fifth_bit(fmt) {
                let h = &blk[qs_at(fmt) - 4..qs_at(fmt)];
                u32::from_le_bytes([h[0], h[1], h[2], h[3]])
            } else {
                0
            };
            let mut q = [0u8; QB];
            for i in 0..16 {
                q[i] = (qs[i] & 15) | ((((qh >> i) & 1) << 4) as u8);
                q[i + 16] = (qs[i] >> 4) | ((((qh >> (i + 16)) & 1) << 4) as u8);
            }
            self.put_small(lane, b, &q);
        }
    }
}
