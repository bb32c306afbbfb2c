//! The interleaved layout of the K-quants Q4_K, Q5_K and Q6_K (see the parent module).
//!
//! A group of 16 rows holds, for each 256-element super-block `s`, a *head*, then (after
//! all heads, padded to a cache line) the codes of every 32-element block:
//!
//! ```text
//! group = [head 0][head 1]...[pad to 64][codes: nb x CB bytes]
//! Q4_K, Q5_K head (320 bytes) = [d: 16 f16][dmin: 16 f16][sc: 8 x 16 u8][m: 8 x 16 u8]
//! Q6_K head (288 bytes)       = [d: 16 f16][sc: 16 x 16 i8]
//! ```
//!
//! Row `r` is lane `r % 16` of every section: its f16 `d` at `2 lane`, sub-block `j`'s
//! scale at `HEAD_SC + 16 j + lane`. The sub-block scales are the file's 6-bit
//! (Q4_K, Q5_K) or 8-bit (Q6_K) integers, one byte each; the products turn them into
//! the specification's float scales `d · sc` and minimums `-(dmin · m)` with one exact
//! multiply (see `blocksum`), so the copy has the file's size (Q6_K: exactly; Q4_K and
//! Q5_K: 64 bytes more per group and super-block, the 6-bit values unpacked).
//!
//! Codes of a 32-element block (`CB` bytes, chunks of 64, row `r`'s word at `4 lane`):
//! - Q4_K (4 chunks) and Q5_K (5 chunks): exactly Q4_1's and Q5_1's (parent module).
//! - Q6_K (6 chunks): chunks 0..4 the low 4 bits as Q4 (pairs `p = 4c + j`); chunk
//!   `4 + h` the high 2 bits of half `h` (elements `16h..16h + 16`, pairs `8h + p'`):
//!   element `2p` at bits `2p'..2p' + 2`, element `2p + 1` at bits `16 + 2p'..`. Pair
//!   `p`'s high bits are then `(word >> 2p') & 0x00030003`; the products take them as
//!   `(word << 4 >> 2p') & 0x00300030` (from `p' = 2` on, `word >> (2p' - 4)`, so no
//!   bit is shifted out), already in place above the nibble.

use super::{fifth_bit, Packed, IROWS};
use crate::kernels::blocksum::{Block, Scale};
use crate::kernels::scalar::scale_min_k4;
use crate::kernels::{QFormat, QB};
use crate::quant::f16_to_f32;

/// Offset in a head of the 16 rows' f16 `d`.
pub(crate) const HEAD_D: usize = 0;
/// Q4_K, Q5_K: offset of the 16 rows' f16 `dmin`.
pub(crate) const HEAD_DMIN: usize = 32;
/// Q4_K, Q5_K: offset of sub-block 0's 16 scales (u8); sub-block `j`'s at `+ 16 j`.
pub(crate) const HEAD_SC: usize = 64;
/// Q4_K, Q5_K: offset of sub-block 0's 16 minimums (u8).
pub(crate) const HEAD_M: usize = 192;
/// Q6_K: offset of 16-element sub-block 0's 16 scales (i8); sub-block `k`'s at `+ 16 k`.
pub(crate) const HEAD_SC6: usize = 32;

/// Whether `fmt` is a K-quant with the interleaved layout.
pub(crate) fn is_k(fmt: QFormat) -> bool {
    matches!(fmt, QFormat::Q4K | QFormat::Q5K | QFormat::Q6K)
}

/// Bytes of one super-block's head.
pub(super) fn head_bytes(fmt: QFormat) -> usize {
    match fmt {
        QFormat::Q6K => 288,
        _ => 320,
    }
}

/// The Q6_K chunk of half `h`'s high bits: the 32-bit word of 16 elements' 2 bits.
fn high_word(q: &[u8; QB], h: usize) -> u32 {
    (0..8).fold(0u32, |w, p| {
        let (e0, e1) = (16 * h + 2 * p, 16 * h + 2 * p + 1);
        w | (((q[e0] >> 4) as u32) << (2 * p)) | (((q[e1] >> 4) as u32) << (16 + 2 * p))
    })
}

impl Packed {
    /// Byte `at` of super-block `s`'s head of row `r`'s group.
    fn head_byte(&self, r: usize, s: usize, at: usize) -> usize {
        (r / IROWS) * self.group_bytes + self.head_at(s) + at
    }

    /// Writes row `r` (`row`: its super-blocks as in the file).
    pub(super) fn put_row_k(&mut self, r: usize, row: &[u8]) {
        let fmt = self.fmt;
        let lane = r % IROWS;
        for (s, sb) in row.chunks_exact(fmt.ty().type_size()).enumerate() {
            let at = |p: &Packed, off: usize| p.head_byte(r, s, off);
            let d_at = if fmt == QFormat::Q6K { 208 } else { 0 };
            let d = at(self, HEAD_D + 2 * lane);
            self.bytes[d..d + 2].copy_from_slice(&sb[d_at..d_at + 2]);
            if fmt == QFormat::Q6K {
                for k in 0..16 {
                    let o = at(self, HEAD_SC6 + 16 * k + lane);
                    self.bytes[o] = sb[192 + k];
                }
            } else {
                let dm = at(self, HEAD_DMIN + 2 * lane);
                self.bytes[dm..dm + 2].copy_from_slice(&sb[2..4]);
                for j in 0..8 {
                    let (sc, m) = scale_min_k4(j, &sb[4..16]);
                    let (o, om) = (
                        at(self, HEAD_SC + 16 * j + lane),
                        at(self, HEAD_M + 16 * j + lane),
                    );
                    self.bytes[o] = sc;
                    self.bytes[om] = m;
                }
            }
            for j in 0..8 {
                let q = file_codes(fmt, sb, j);
                let b = 8 * s + j;
                self.put_small(r, b, &q);
                if fmt == QFormat::Q6K {
                    let codes = self.codes_mut(r, b);
                    for h in 0..2 {
                        let o = 64 * (4 + h) + 4 * lane;
                        codes[o..o + 4].copy_from_slice(&high_word(&q, h).to_le_bytes());
                    }
                }
            }
        }
    }

    /// Row `r`'s unsigned codes of block `b` (4, 5 or 6 bits), element order.
    fn codes_k(&self, r: usize, b: usize) -> [u8; QB] {
        let mut q = self.small_codes(r, b);
        if self.fmt == QFormat::Q6K {
            for h in 0..2 {
                let w = u32::from_le_bytes(self.word(r, b, 4 + h));
                for p in 0..8 {
                    q[16 * h + 2 * p] |= (((w >> (2 * p)) & 3) << 4) as u8;
                    q[16 * h + 2 * p + 1] |= (((w >> (16 + 2 * p)) & 3) << 4) as u8;
                }
            }
        }
        q
    }

    /// Row `r` in the file's layout, the exact bytes `pack` took.
    pub(super) fn file_row_k(&self, r: usize, row: &mut [u8]) {
        let fmt = self.fmt;
        let lane = r % IROWS;
        let ts = fmt.ty().type_size();
        for (s, sb) in row.chunks_exact_mut(ts).enumerate().take(self.cols / 256) {
            let byte = |off: usize| self.bytes[self.head_byte(r, s, off)];
            let f16 = |off: usize| [byte(off), byte(off + 1)];
            sb.fill(0);
            if fmt == QFormat::Q6K {
                sb[208..210].copy_from_slice(&f16(HEAD_D + 2 * lane));
                for k in 0..16 {
                    sb[192 + k] = byte(HEAD_SC6 + 16 * k + lane);
                }
            } else {
                sb[0..2].copy_from_slice(&f16(HEAD_D + 2 * lane));
                sb[2..4].copy_from_slice(&f16(HEAD_DMIN + 2 * lane));
                let sc: [u8; 8] = std::array::from_fn(|j| byte(HEAD_SC + 16 * j + lane));
                let m: [u8; 8] = std::array::from_fn(|j| byte(HEAD_M + 16 * j + lane));
                // The inverse of `scale_min_k4`: 6 bits each, the top 2 bits of
                // sub-blocks 4..8 in the top bits of bytes 0..8.
                for j in 0..4 {
                    sb[4 + j] = sc[j] | ((sc[j + 4] >> 4) << 6);
                    sb[8 + j] = m[j] | ((m[j + 4] >> 4) << 6);
                    sb[12 + j] = (sc[j + 4] & 15) | ((m[j + 4] & 15) << 4);
                }
            }
            for j in 0..8 {
                let q = self.codes_k(r, 8 * s + j);
                for (l, &v) in q.iter().enumerate() {
                    match fmt {
                        QFormat::Q6K => {
                            let (h, p) = (j / 4, j % 4);
                            sb[64 * h + 32 * (p % 2) + l] |= (v & 15) << (4 * (p / 2));
                            sb[128 + 32 * h + l] |= (v >> 4) << (2 * p);
                        }
                        _ => {
                            let qs = if fmt == QFormat::Q4K { 16 } else { 48 };
                            sb[qs + 32 * (j / 2) + l] |= (v & 15) << (4 * (j % 2));
                            if fifth_bit(fmt) {
                                sb[16 + l] |= (v >> 4) << j;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Block `b` of row `r` as the block-sum specification sees it.
    pub(super) fn block_k(&self, r: usize, b: usize) -> Block {
        let (s, j, lane) = (b / 8, b % 8, r % IROWS);
        let byte = |off: usize| self.bytes[self.head_byte(r, s, off)];
        let f16 = |off: usize| f16_to_f32(u16::from_le_bytes([byte(off), byte(off + 1)]));
        let q = self.codes_k(r, b);
        let d = f16(HEAD_D + 2 * lane);
        if self.fmt == QFormat::Q6K {
            let sc = |k: usize| byte(HEAD_SC6 + 16 * k + lane) as i8 as f32;
            return Block {
                codes: q.map(|v| v as i16 - 32),
                ws: Scale::Halves([d * sc(2 * j), d * sc(2 * j + 1)]),
                minv: None,
            };
        }
        let (sc, m) = (byte(HEAD_SC + 16 * j + lane), byte(HEAD_M + 16 * j + lane));
        Block {
            codes: q.map(|v| v as i16),
            ws: Scale::Whole(d * sc as f32),
            minv: Some(-(f16(HEAD_DMIN + 2 * lane) * m as f32)),
        }
    }
}

/// The unsigned codes of sub-block `j` (32 elements) of a file super-block `sb`.
fn file_codes(fmt: QFormat, sb: &[u8], j: usize) -> [u8; QB] {
    std::array::from_fn(|l| match fmt {
        QFormat::Q6K => {
            let (h, p) = (j / 4, j % 4);
            let lo = (sb[64 * h + 32 * (p % 2) + l] >> (4 * (p / 2))) & 15;
            lo | (((sb[128 + 32 * h + l] >> (2 * p)) & 3) << 4)
        }
        _ => {
            let qs = if fmt == QFormat::Q4K { 16 } else { 48 };
            let lo = (sb[qs + 32 * (j / 2) + l] >> (4 * (j % 2))) & 15;
            let hi = if fifth_bit(fmt) {
                (sb[16 + l] >> j) & 1
            } else {
                0
            };
            lo | (hi << 4)
        }
    })
}
