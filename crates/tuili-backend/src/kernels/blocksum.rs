//! The block-sum specification (weights in the interleaved layout, see the module docs
//! of `kernels`, "Interleaved rows"), in plain Rust: the blocks of a row as the file
//! defines them ([`file_block`]) and the one order of float operations that every
//! table's interleaved product follows ([`blocksum`]).
//!
//! A block is 32 elements (one activation block). Its value is `ws · c (+ minv)` with
//! small integer codes `c`, and one float scale `ws` for the block or, for the K-quants
//! of 16-element sub-blocks (Q6_K, Q3_K, Q2_K), one per half: the sub-block scale
//! stays out of the codes, so Q6_K's integer sums stay within 32 bits.
//!
//! The K-quants' float scales are products: `ws = d · sc` and `minv = -(dmin · m)`
//! with `d`, `dmin` the super-block's f16 values and `sc`, `m` its sub-block integers
//! (6 bits unsigned for Q4_K/Q5_K, 8 bits signed for Q6_K, 6 bits signed for Q3_K, 4
//! bits for Q2_K). They are exact in f32: an
//! f16 has an 11-bit significand, so the product with an integer of at most 8 bits
//! has at most 19 significant bits (f32 holds 24), and its exponent stays within f32's
//! normal range (f16's smallest subnormal is 2^-24, the largest product 65504 · 128).
//! So every way of forming them (here, at repack time, or in a register: `float(sc) *
//! float(d)`) gives the same bits, and the layout can store the file's small integers
//! instead of an f32 per sub-block (the copy keeps the file's size).

#[cfg(test)]
use super::{
    scalar::{scale_min_k4, scale_q3_k},
    QFormat,
};
use super::{QuantActs, QB};
#[cfg(test)]
use crate::quant::f16_to_f32;

/// The float scale(s) of a block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scale {
    /// One for the 32 elements.
    Whole(f32),
    /// One per 16-element half (Q6_K's sub-blocks).
    Halves([f32; 2]),
}

/// One 32-element block of a weight row as the specification sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Block {
    /// Integer codes in element order (Q4_0's `q - 8`, Q6_K's `q - 32`, ...).
    pub(crate) codes: [i16; QB],
    pub(crate) ws: Scale,
    /// The minimum term, of the block (Q4_1, Q5_1, Q4_K, Q5_K) or of each half (Q2_K,
    /// whose scales are per half too): element `i` is `ws · c[i] + minv`.
    pub(crate) minv: Option<Scale>,
}

impl Block {
    /// Element `i`'s value, as ggml's dequantization computes it (`ws · c`, then the
    /// minimum added), for the tests that tie the specification to the format.
    #[cfg(test)]
    pub(crate) fn value(&self, i: usize) -> f32 {
        let at = |s: Scale| match s {
            Scale::Whole(w) => w,
            Scale::Halves(w) => w[i / 16],
        };
        at(self.ws) * self.codes[i] as f32 + self.minv.map_or(0.0, at)
    }
}

/// One output (a row times token `t` of `a`), `block(b)` giving block `b` of the row
/// (`b < cols / 32`): one float accumulator, blocks in order, each (half-)block's
/// integer sum whole:
///
/// ```text
/// acc = fma(ws[b] * d_x[b], float(Σ_i c[32b+i] x[32b+i]), acc)            (Whole)
/// for h = 0, 1:                                                            (Halves)
///     acc = fma(ws[b][h] * d_x[b], float(Σ_i c[32b+16h+i] x[32b+16h+i]), acc)
///     acc = fma(minv[b][h], s16_x[2b+h], acc)                              (Halves minimum)
/// acc = fma(minv[b], s_x[b], acc)                                          (Whole minimum)
/// ```
pub(crate) fn blocksum(block: impl Fn(usize) -> Block, a: &QuantActs, t: usize) -> f32 {
    let nbp = a.nbp();
    let (xq, xd, xs) = (a.q(t), &a.d[t * nbp..], &a.s[t * nbp..]);
    let xs16 = &a.s16[t * 2 * nbp..];
    let isum = |c: &[i16], x: &[i16]| -> i32 {
        // Exact: |c| <= 128 and |x| <= 32767, at most 32 terms.
        c.iter().zip(x).map(|(&c, &x)| c as i32 * x as i32).sum()
    };
    let mut acc = 0f32;
    for (b, x) in xq.chunks_exact(QB).enumerate() {
        let blk = block(b);
        match blk.ws {
            Scale::Whole(ws) => {
                acc = (ws * xd[b]).mul_add(isum(&blk.codes, x) as f32, acc);
            }
            Scale::Halves(ws) => {
                for h in 0..2 {
                    let s = isum(&blk.codes[16 * h..16 * h + 16], &x[16 * h..16 * h + 16]);
                    acc = (ws[h] * xd[b]).mul_add(s as f32, acc);
                    if let Some(Scale::Halves(m)) = blk.minv {
                        acc = m[h].mul_add(xs16[2 * b + h], acc);
                    }
                }
            }
        }
        if let Some(Scale::Whole(m)) = blk.minv {
            acc = m.mul_add(xs[b], acc);
        }
    }
    acc
}

#[cfg(test)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Block `b` of a row in the file's layout (`row`: whole blocks or super-blocks of
/// `fmt`), read as ggml defines the format (every integer format has the
/// interleaved layout).
#[cfg(test)]
pub(crate) fn file_block(fmt: QFormat, row: &[u8], b: usize) -> Block {
    let ts = fmt.ty().type_size();
    let mut codes = [0i16; QB];
    // Nibble `i` of a legacy block: low nibbles of qs[0..16], then the high ones.
    let nib = |qs: &[u8], i: usize| if i < 16 { qs[i] & 15 } else { qs[i - 16] >> 4 };
    let legacy = || &row[b * ts..(b + 1) * ts];
    match fmt {
        QFormat::Q4_0 | QFormat::Q4_1 | QFormat::Q5_0 | QFormat::Q5_1 => {
            let legacy = legacy();
            let (qs_at, offset) = match fmt {
                QFormat::Q4_0 => (2, 8),
                QFormat::Q4_1 => (4, 0),
                QFormat::Q5_0 => (6, 16),
                _ => (8, 0),
            };
            let five = matches!(fmt, QFormat::Q5_0 | QFormat::Q5_1);
            let qh = if five {
                let h = &legacy[qs_at - 4..qs_at];
                u32::from_le_bytes([h[0], h[1], h[2], h[3]])
            } else {
                0
            };
            for (i, c) in codes.iter_mut().enumerate() {
                let q = nib(&legacy[qs_at..], i) as i16 | (((qh >> i) & 1) << 4) as i16;
                *c = q - offset;
            }
            let minv = matches!(fmt, QFormat::Q4_1 | QFormat::Q5_1)
                .then(|| Scale::Whole(f16_at(legacy, 2)));
            Block {
                codes,
                ws: Scale::Whole(f16_at(legacy, 0)),
                minv,
            }
        }
        QFormat::Mxfp4 => {
            let blk = legacy();
            for (i, c) in codes.iter_mut().enumerate() {
                *c = crate::quant::mxfp4::KVALUES[nib(&blk[1..], i) as usize] as i16;
            }
            Block {
                codes,
                ws: Scale::Whole(crate::quant::mxfp4::e8m0_half(blk[0])),
                minv: None,
            }
        }
        QFormat::Q8_0 => {
            let legacy = legacy();
            for (c, &q) in codes.iter_mut().zip(&legacy[2..34]) {
                *c = q as i8 as i16;
            }
            Block {
                codes,
                ws: Scale::Whole(f16_at(legacy, 0)),
                minv: None,
            }
        }
        QFormat::Q4K | QFormat::Q5K => {
            // Sub-block j of the super-block: element l is nibble (j % 2) of
            // qs[32 (j / 2) + l], and for Q5_K bit j of qh[l] its fifth bit.
            let (sb, j) = (&row[b / 8 * ts..(b / 8 + 1) * ts], b % 8);
            let qs = if fmt == QFormat::Q4K {
                &sb[16..144]
            } else {
                &sb[48..176]
            };
            for (l, c) in codes.iter_mut().enumerate() {
                let v = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 15;
                let hi = if fmt == QFormat::Q5K {
                    (sb[16 + l] >> j) & 1
                } else {
                    0
                };
                *c = (v | (hi << 4)) as i16;
            }
            let (sc, m) = scale_min_k4(j, &sb[4..16]);
            Block {
                codes,
                ws: Scale::Whole(f16_at(sb, 0) * sc as f32),
                minv: Some(Scale::Whole(-(f16_at(sb, 2) * m as f32))),
            }
        }
        QFormat::Q6K => {
            // Element 32j + l (j < 8): its low 4 bits are nibble (j / 2) % 2 of
            // ql[64 (j / 4) + 32 (j % 2) + l], its high 2 bits are bits 2 (j % 4) of
            // qh[32 (j / 4) + l]; sub-block k (16 elements) has the i8 scale scales[k].
            let (sb, j) = (&row[b / 8 * ts..(b / 8 + 1) * ts], b % 8);
            let (h, p) = (j / 4, j % 4);
            for (l, c) in codes.iter_mut().enumerate() {
                let lo = (sb[64 * h + 32 * (p % 2) + l] >> (4 * (p / 2))) & 15;
                let hi = (sb[128 + 32 * h + l] >> (2 * p)) & 3;
                *c = (lo | (hi << 4)) as i16 - 32;
            }
            let d = f16_at(sb, 208);
            let sc = |k: usize| sb[192 + k] as i8 as f32;
            Block {
                codes,
                ws: Scale::Halves([d * sc(2 * j), d * sc(2 * j + 1)]),
                minv: None,
            }
        }
        QFormat::Q3K => {
            // Element 32j + l (j < 8): its low 2 bits are bits 2 (j % 4) of
            // qs[32 (j / 4) + l], its third bit bit j of hmask[l], and its code is
            // the 3 bits less 4; sub-block k has the 6-bit signed scale k.
            let (sb, j) = (&row[b / 8 * ts..(b / 8 + 1) * ts], b % 8);
            for (l, c) in codes.iter_mut().enumerate() {
                let lo = (sb[32 + 32 * (j / 4) + l] >> (2 * (j % 4))) & 3;
                let hi = (sb[l] >> j) & 1;
                *c = (lo | (hi << 2)) as i16 - 4;
            }
            let d = f16_at(sb, 108);
            let sc = |k: usize| scale_q3_k(k, &sb[96..108]) as f32;
            Block {
                codes,
                ws: Scale::Halves([d * sc(2 * j), d * sc(2 * j + 1)]),
                minv: None,
            }
        }
        QFormat::Q2K => {
            // Element 32j + l: bits 2 (j % 4) of qs[32 (j / 4) + l]; sub-block k's scale
            // is the low nibble of scales[k], its minimum the high one.
            let (sb, j) = (&row[b / 8 * ts..(b / 8 + 1) * ts], b % 8);
            for (l, c) in codes.iter_mut().enumerate() {
                *c = ((sb[16 + 32 * (j / 4) + l] >> (2 * (j % 4))) & 3) as i16;
            }
            let (d, dmin) = (f16_at(sb, 80), f16_at(sb, 82));
            let sc = |k: usize| d * (sb[k] & 15) as f32;
            let m = |k: usize| -(dmin * (sb[k] >> 4) as f32);
            Block {
                codes,
                ws: Scale::Halves([sc(2 * j), sc(2 * j + 1)]),
                minv: Some(Scale::Halves([m(2 * j), m(2 * j + 1)])),
            }
        }
    }
}

/// The specification of row `r` of `w` (`[rows, row_bytes]`, the file's layout) times
/// token `t`.
#[cfg(test)]
pub(crate) fn file_row_times(
    fmt: QFormat,
    w: &[u8],
    row_bytes: usize,
    r: usize,
    a: &QuantActs,
    t: usize,
) -> f32 {
    let row = &w[r * row_bytes..(r + 1) * row_bytes];
    blocksum(|b| file_block(fmt, row, b), a, t)
}
