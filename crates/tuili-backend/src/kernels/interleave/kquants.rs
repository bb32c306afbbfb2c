//! The interleaved layout of the K-quants Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (see the
//! parent module).
//!
//! A group of 16 rows holds, for each 256-element super-block `s`, a *head*, then (after
//! all heads, padded to a cache line) the codes of every 32-element block:
//!
//! ```text
//! group = [head 0][head 1]...[pad to 64][codes: nb x CB bytes]
//! Q4_K, Q5_K head (320 bytes) = [d: 16 f16][dmin: 16 f16][sc: 8 x 16 u8][m: 8 x 16 u8]
//! Q6_K, Q3_K head (288 bytes) = [d: 16 f16][sc: 16 x 16 i8]
//! Q2_K head (320 bytes)       = [d: 16 f16][dmin: 16 f16][sc | m << 4: 16 x 16 u8]
//! ```
//!
//! Row `r` is lane `r % 16` of every section: its f16 `d` at `2 lane`, sub-block `j`'s
//! scale at `HEAD_SC + 16 j + lane`. The sub-block scales are the file's integers (6
//! bits for Q4_K/Q5_K, 8 bits signed for Q6_K, 6 bits signed for Q3_K, Q2_K's scale and
//! minimum nibbles as the file's byte), one byte each; the products turn them into the
//! specification's float scales `d · sc` and minimums `-(dmin · m)` with one exact
//! multiply (see `blocksum`), so the copy has the file's size (Q6_K and Q2_K exactly;
//! Q4_K/Q5_K 64 bytes and Q3_K 64 bytes more per group and super-block, the 6-bit
//! values unpacked).
//!
//! Codes of a 32-element block (`CB` bytes, chunks of 64, row `r`'s word at `4 lane`),
//! in three kinds of chunk:
//! - *nibbles* (the parent module's Q4 chunks): pairs `p = 4c + j`, element `2p` at bits
//!   `4j..4j + 4`, element `2p + 1` at `16 + 4j..`;
//! - *fifth bits* (the parent's Q5 chunk): element `2p` at bit `p`, `2p + 1` at `16 + p`;
//! - *crumbs* (2 bits): chunk `h` holds half `h` (elements `16h..16h + 16`, pairs
//!   `8h + p'`), element `2p` at bits `2p'..2p' + 2`, element `2p + 1` at `16 + 2p'..`.
//!   Pair `p`'s are `(word >> 2p') & 0x00030003`.
//!
//! | format | CB | chunks |
//! |---|---|---|
//! | Q4_K | 256 | nibbles x 4 (as Q4_1) |
//! | Q5_K | 320 | nibbles x 4, fifth bits (as Q5_1) |
//! | Q6_K | 384 | nibbles x 4 (low 4 bits), crumbs x 2 (high 2 bits) |
//! | Q3_K | 192 | crumbs x 2 (low 2 bits), fifth bits (the third bit) |
//! | Q2_K | 128 | crumbs x 2 |
//!
//! The products take a high crumb where it goes as `(word << 4 >> 2p') & 0x00300030`
//! (from `p' = 2` on `word >> (2p' - 4)`, so no bit is shifted out), a third bit as
//! `(word << 2 >> p) & 0x00040004`.

use super::write::GroupMut;
use super::{fifth_bit, Packed, IROWS};
use crate::kernels::blocksum::{Block, Scale};
use crate::kernels::scalar::{scale_min_k4, scale_q3_k};
use crate::kernels::{QFormat, QB};
use crate::quant::f16_to_f32;

/// Offset in a head of the 16 rows' f16 `d`.
pub(crate) const HEAD_D: usize = 0;
/// Q4_K, Q5_K, Q2_K: offset of the 16 rows' f16 `dmin`.
pub(crate) const HEAD_DMIN: usize = 32;
/// Q4_K, Q5_K: offset of sub-block 0's 16 scales (u8); sub-block `j`'s at `+ 16 j`.
/// Q2_K: of 16-element sub-block 0's 16 bytes `sc | m << 4`; sub-block `k`'s at `+ 16 k`.
pub(crate) const HEAD_SC: usize = 64;
/// Q4_K, Q5_K: offset of sub-block 0's 16 minimums (u8).
pub(crate) const HEAD_M: usize = 192;
/// Q6_K, Q3_K: offset of 16-element sub-block 0's 16 scales (i8); sub-block `k`'s at
/// `+ 16 k`.
pub(crate) const HEAD_SC16: usize = 32;

/// Whether `fmt` is a K-quant (all have the interleaved layout).
pub(crate) fn is_k(fmt: QFormat) -> bool {
    matches!(
        fmt,
        QFormat::Q2K | QFormat::Q3K | QFormat::Q4K | QFormat::Q5K | QFormat::Q6K
    )
}

/// Bytes of one super-block's head.
pub(super) fn head_bytes(fmt: QFormat) -> usize {
    match fmt {
        QFormat::Q6K | QFormat::Q3K => 288,
        _ => 320,
    }
}

/// A crumbs chunk: the 32-bit word of half `h`'s 2-bit values `v[i] >> shift & 3`.
fn crumbs(v: &[u8; QB], shift: u32, h: usize) -> u32 {
    (0..8).fold(0u32, |w, p| {
        let (e0, e1) = (16 * h + 2 * p, 16 * h + 2 * p + 1);
        w | ((((v[e0] >> shift) & 3) as u32) << (2 * p))
            | ((((v[e1] >> shift) & 3) as u32) << (16 + 2 * p))
    })
}

/// A fifth-bits chunk: the word of the 32 values' bit `shift`.
fn bits(v: &[u8; QB], shift: u32) -> u32 {
    (0..16).fold(0u32, |w, p| {
        w | ((((v[2 * p] >> shift) & 1) as u32) << p)
            | ((((v[2 * p + 1] >> shift) & 1) as u32) << (16 + p))
    })
}

impl GroupMut<'_> {
    /// Writes row `lane` (`row`: its super-blocks as in the file).
    pub(super) fn put_row_k(&mut self, lane: usize, row: &[u8]) {
        let fmt = self.fmt;
        for (s, sb) in row.chunks_exact(fmt.ty().type_size()).enumerate() {
            let head = s * head_bytes(fmt);
            match fmt {
                QFormat::Q6K => {
                    self.put(head + HEAD_D + 2 * lane, &sb[208..210]);
                    for k in 0..16 {
                        self.bytes[head + HEAD_SC16 + 16 * k + lane] = sb[192 + k];
                    }
                }
                QFormat::Q3K => {
                    self.put(head + HEAD_D + 2 * lane, &sb[108..110]);
                    for k in 0..16 {
                        let sc = scale_q3_k(k, &sb[96..108]) as i8 as u8;
                        self.bytes[head + HEAD_SC16 + 16 * k + lane] = sc;
                    }
                }
                QFormat::Q2K => {
                    self.put(head + HEAD_D + 2 * lane, &sb[80..82]);
                    self.put(head + HEAD_DMIN + 2 * lane, &sb[82..84]);
                    for k in 0..16 {
                        self.bytes[head + HEAD_SC + 16 * k + lane] = sb[k];
                    }
                }
                _ => {
                    self.put(head + HEAD_D + 2 * lane, &sb[0..2]);
                    self.put(head + HEAD_DMIN + 2 * lane, &sb[2..4]);
                    for j in 0..8 {
                        let (sc, m) = scale_min_k4(j, &sb[4..16]);
                        self.bytes[head + HEAD_SC + 16 * j + lane] = sc;
                        self.bytes[head + HEAD_M + 16 * j + lane] = m;
                    }
                }
            }
            for j in 0..8 {
                let q = file_codes(fmt, sb, j);
                let b = 8 * s + j;
                match fmt {
                    QFormat::Q4K | QFormat::Q5K => self.put_small(lane, b, &q),
                    QFormat::Q6K => {
                        self.put_small(lane, b, &q);
                        self.put_word(lane, b, 4, crumbs(&q, 4, 0));
                        self.put_word(lane, b, 5, crumbs(&q, 4, 1));
                    }
                    _ => {
                        self.put_word(lane, b, 0, crumbs(&q, 0, 0));
                        self.put_word(lane, b, 1, crumbs(&q, 0, 1));
                        if fmt == QFormat::Q3K {
                            self.put_word(lane, b, 2, bits(&q, 2));
                        }
                    }
                }
            }
        }
    }
}

impl Packed {
    /// Byte `at` of super-block `s`'s head of row `r`'s group.
    fn head_byte(&self, r: usize, s: usize, at: usize) -> usize {
        (r / IROWS) * self.group_bytes + self.head_at(s) + at
    }

    /// Row `r`'s unsigned codes of block `b` (2 to 6 bits), element order.
    fn codes_k(&self, r: usize, b: usize) -> [u8; QB] {
        let word = |c: usize| u32::from_le_bytes(self.word(r, b, c));
        // Half h's crumbs of chunk c, shifted left by `shift`, into `q`.
        let add_crumbs = |q: &mut [u8; QB], c: usize, h: usize, shift: u32| {
            let w = word(c);
            for p in 0..8 {
                q[16 * h + 2 * p] |= (((w >> (2 * p)) & 3) << shift) as u8;
                q[16 * h + 2 * p + 1] |= (((w >> (16 + 2 * p)) & 3) << shift) as u8;
            }
        };
        match self.fmt {
            QFormat::Q4K | QFormat::Q5K => self.small_codes(r, b),
            QFormat::Q6K => {
                let mut q = self.small_codes(r, b);
                add_crumbs(&mut q, 4, 0, 4);
                add_crumbs(&mut q, 5, 1, 4);
                q
            }
            _ => {
                let mut q = [0u8; QB];
                add_crumbs(&mut q, 0, 0, 0);
                add_crumbs(&mut q, 1, 1, 0);
                if self.fmt == QFormat::Q3K {
                    let w = word(2);
                    for p in 0..16 {
                        q[2 * p] |= (((w >> p) & 1) << 2) as u8;
                        q[2 * p + 1] |= (((w >> (16 + p)) & 1) << 2) as u8;
                    }
                }
                q
            }
        }
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
            match fmt {
                QFormat::Q6K => {
                    sb[208..210].copy_from_slice(&f16(HEAD_D + 2 * lane));
                    for k in 0..16 {
                        sb[192 + k] = byte(HEAD_SC16 + 16 * k + lane);
                    }
                }
                QFormat::Q3K => {
                    sb[108..110].copy_from_slice(&f16(HEAD_D + 2 * lane));
                    // The inverse of `scale_q3_k`: 6 bits stored plus 32, the low 4 in
                    // nibbles of bytes 0..8, the top 2 in bytes 8..12.
                    for k in 0..16 {
                        let u = (byte(HEAD_SC16 + 16 * k + lane) as i8 + 32) as u8;
                        sb[96 + k % 8] |= (u & 15) << (4 * (k / 8));
                        sb[104 + k % 4] |= (u >> 4) << (2 * (k / 4));
                    }
                }
                QFormat::Q2K => {
                    sb[80..82].copy_from_slice(&f16(HEAD_D + 2 * lane));
                    sb[82..84].copy_from_slice(&f16(HEAD_DMIN + 2 * lane));
                    for k in 0..16 {
                        sb[k] = byte(HEAD_SC + 16 * k + lane);
                    }
                }
                _ => {
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
            }
            for j in 0..8 {
                let q = self.codes_k(r, 8 * s + j);
                let (h, p) = (j / 4, j % 4);
                for (l, &v) in q.iter().enumerate() {
                    match fmt {
                        QFormat::Q6K => {
                            sb[64 * h + 32 * (p % 2) + l] |= (v & 15) << (4 * (p / 2));
                            sb[128 + 32 * h + l] |= (v >> 4) << (2 * p);
                        }
                        QFormat::Q3K => {
                            sb[32 + 32 * h + l] |= (v & 3) << (2 * p);
                            sb[l] |= (v >> 2) << j;
                        }
                        QFormat::Q2K => sb[16 + 32 * h + l] |= v << (2 * p),
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
        let halves = |f: &dyn Fn(usize) -> f32| Scale::Halves([f(2 * j), f(2 * j + 1)]);
        match self.fmt {
            QFormat::Q6K | QFormat::Q3K => {
                let sc = |k: usize| d * byte(HEAD_SC16 + 16 * k + lane) as i8 as f32;
                let offset = if self.fmt == QFormat::Q6K { 32 } else { 4 };
                Block {
                    codes: q.map(|v| v as i16 - offset),
                    ws: halves(&sc),
                    minv: None,
                }
            }
            QFormat::Q2K => {
                let dmin = f16(HEAD_DMIN + 2 * lane);
                let scm = |k: usize| byte(HEAD_SC + 16 * k + lane);
                Block {
                    codes: q.map(|v| v as i16),
                    ws: halves(&|k| d * (scm(k) & 15) as f32),
                    minv: Some(halves(&|k| -(dmin * (scm(k) >> 4) as f32))),
                }
            }
            _ => {
                let (sc, m) = (byte(HEAD_SC + 16 * j + lane), byte(HEAD_M + 16 * j + lane));
                Block {
                    codes: q.map(|v| v as i16),
                    ws: Scale::Whole(d * sc as f32),
                    minv: Some(Scale::Whole(-(f16(HEAD_DMIN + 2 * lane) * m as f32))),
                }
            }
        }
    }
}

/// The unsigned codes of sub-block `j` (32 elements) of a file super-block `sb`.
fn file_codes(fmt: QFormat, sb: &[u8], j: usize) -> [u8; QB] {
    let (h, p) = (j / 4, j % 4);
    let mut q = [0u8; QB];
    match fmt {
        QFormat::Q6K => {
            let (ql, qh) = (
                &sb[64 * h + 32 * (p % 2)..][..QB],
                &sb[128 + 32 * h..][..QB],
            );
            for l in 0..QB {
                q[l] = ((ql[l] >> (4 * (p / 2))) & 15) | (((qh[l] >> (2 * p)) & 3) << 4);
            }
        }
        QFormat::Q3K => {
            let (qs, hm) = (&sb[32 + 32 * h..][..QB], &sb[..QB]);
            for l in 0..QB {
                q[l] = ((qs[l] >> (2 * p)) & 3) | (((hm[l] >> j) & 1) << 2);
            }
        }
        QFormat::Q2K => {
            let qs = &sb[16 + 32 * h..][..QB];
            for l in 0..QB {
                q[l] = (qs[l] >> (2 * p)) & 3;
            }
        }
        _ => {
            let at = if fmt == QFormat::Q4K { 16 } else { 48 };
            let qs = &sb[at + 32 * (j / 2)..][..QB];
            for l in 0..QB {
                q[l] = (qs[l] >> (4 * (j % 2))) & 15;
            }
            if fifth_bit(fmt) {
                let qh = &sb[16..16 + QB];
                for l in 0..QB {
                    q[l] |= ((qh[l] >> j) & 1) << 4;
                }
            }
        }
    }
    q
}
