//! The 32-element block types Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 (ggml-common.h).
//!
//! Layouts (all little-endian; `d` and `m` are f16):
//!
//! | type | bytes | fields |
//! |---|---|---|
//! | Q4_0 | 18 | `d`, `qs[16]`: element j in the low nibble of `qs[j]`, j+16 in the high one; value `(q - 8) * d` |
//! | Q4_1 | 20 | `d`, `m`, `qs[16]`; value `q * d + m` |
//! | Q5_0 | 22 | `d`, `qh[4]` (u32, bit j = 5th bit of element j), `qs[16]`; value `(q - 16) * d` |
//! | Q5_1 | 24 | `d`, `m`, `qh[4]`, `qs[16]`; value `q * d + m` |
//! | Q8_0 | 34 | `d`, `qs[32]` (i8); value `q * d` |

use super::{dequant_blocks, dot_blocks, quantize_blocks, read_f16, write_f16};

const QK: usize = 32;

// ---- Q4_0 -------------------------------------------------------------------------

#[inline(always)]
fn decode_q4_0(b: &[u8; 18], y: &mut [f32; QK]) {
    let d = read_f16(b, 0);
    for j in 0..QK / 2 {
        let q = b[2 + j];
        y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
        y[j + QK / 2] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// `quantize_row_q4_0_ref`: the element of largest magnitude maps to -8.
fn encode_q4_0(x: &[f32; QK], y: &mut [u8; 18]) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(y, 0, d);
    for j in 0..QK / 2 {
        let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
        let q1 = ((x[j + QK / 2] * id + 8.5) as i8).min(15) as u8;
        y[2 + j] = q0 | (q1 << 4);
    }
}

pub(super) fn dequant_q4_0(src: &[u8], dst: &mut [f32]) {
    dequant_blocks(src, dst, decode_q4_0)
}

pub(super) fn dot_q4_0(row: &[u8], x: &[f32]) -> f32 {
    dot_blocks(row, x, decode_q4_0)
}

pub(super) fn quantize_q4_0(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, encode_q4_0)
}

// ---- Q4_1 -------------------------------------------------------------------------

#[inline(always)]
fn decode_q4_1(b: &[u8; 20], y: &mut [f32; QK]) {
    let d = read_f16(b, 0);
    let m = read_f16(b, 2);
    for j in 0..QK / 2 {
        let q = b[4 + j];
        y[j] = (q & 0x0f) as f32 * d + m;
        y[j + QK / 2] = (q >> 4) as f32 * d + m;
    }
}

/// Smallest and largest element of a block, as ggml's min/max loop finds them.
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// `quantize_row_q4_1_ref`: 16 steps from the minimum to the maximum.
fn encode_q4_1(x: &[f32; QK], y: &mut [u8; 20]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(y, 0, d);
    write_f16(y, 2, min);
    for j in 0..QK / 2 {
        let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
        let q1 = (((x[j + QK / 2] - min) * id + 0.5) as i8).min(15) as u8;
        y[4 + j] = q0 | (q1 << 4);
    }
}

pub(super) fn dequant_q4_1(src: &[u8], dst: &mut [f32]) {
    dequant_blocks(src, dst, decode_q4_1)
}

pub(super) fn dot_q4_1(row: &[u8], x: &[f32]) -> f32 {
    dot_blocks(row, x, decode_q4_1)
}

pub(super) fn quantize_q4_1(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, encode_q4_1)
}

// ---- Q5_0 -------------------------------------------------------------------------

/// The 5-bit values of a Q5 block: low nibbles from `qs`, and bit j of the u32 `qh` as
/// the 5th bit of element j. Testing bits against constant masks (rather than shifting
/// by j) keeps the loop vectorizable.
#[inline(always)]
fn q5_values(qh: u32, qs: &[u8]) -> [u8; QK] {
    let mut q = [0u8; QK];
    for j in 0..QK / 2 {
        let h0 = if qh & (1 << j) != 0 { 0x10 } else { 0 };
        let h1 = if qh & (1 << (j + QK / 2)) != 0 {
            0x10
        } else {
            0
        };
        q[j] = (qs[j] & 0x0f) | h0;
        q[j + QK / 2] = (qs[j] >> 4) | h1;
    }
    q
}

#[inline(always)]
fn decode_q5_0(b: &[u8; 22], y: &mut [f32; QK]) {
    let d = read_f16(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let q = q5_values(qh, &b[6..22]);
    for (yj, &qj) in y.iter_mut().zip(&q) {
        *yj = (qj as i32 - 16) as f32 * d;
    }
}

/// Pack 32 five-bit values: low nibbles into `qs`, 5th bits into the returned `qh`.
fn pack_q5(q: &[u8; QK], qs: &mut [u8]) -> u32 {
    let mut qh = 0u32;
    for j in 0..QK / 2 {
        let (q0, q1) = (q[j], q[j + QK / 2]);
        qs[j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
        qh |= (((q0 & 0x10) >> 4) as u32) << j;
        qh |= (((q1 & 0x10) >> 4) as u32) << (j + QK / 2);
    }
    qh
}

/// `quantize_row_q5_0_ref`: the element of largest magnitude maps to -16.
fn encode_q5_0(x: &[f32; QK], y: &mut [u8; 22]) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(y, 0, d);
    let mut q = [0u8; QK];
    for (qj, &v) in q.iter_mut().zip(x) {
        *qj = ((v * id + 16.5) as i8).min(31) as u8;
    }
    let qh = pack_q5(&q, &mut y[6..22]);
    y[2..6].copy_from_slice(&qh.to_le_bytes());
}

pub(super) fn dequant_q5_0(src: &[u8], dst: &mut [f32]) {
    dequant_blocks(src, dst, decode_q5_0)
}

pub(super) fn dot_q5_0(row: &[u8], x: &[f32]) -> f32 {
    dot_blocks(row, x, decode_q5_0)
}

pub(super) fn quantize_q5_0(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, encode_q5_0)
}

// ---- Q5_1 -------------------------------------------------------------------------

#[inline(always)]
fn decode_q5_1(b: &[u8; 24], y: &mut [f32; QK]) {
    let d = read_f16(b, 0);
    let m = read_f16(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let q = q5_values(qh, &b[8..24]);
    for (yj, &qj) in y.iter_mut().zip(&q) {
        *yj = qj as f32 * d + m;
    }
}

/// `quantize_row_q5_1_ref`: 32 steps from the minimum to the maximum.
fn encode_q5_1(x: &[f32; QK], y: &mut [u8; 24]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(y, 0, d);
    write_f16(y, 2, min);
    let mut q = [0u8; QK];
    for (qj, &v) in q.iter_mut().zip(x) {
        // ggml converts straight to uint8_t here, without the MIN of the other types.
        *qj = ((v - min) * id + 0.5) as u8;
    }
    let qh = pack_q5(&q, &mut y[8..24]);
    y[4..8].copy_from_slice(&qh.to_le_bytes());
}

pub(super) fn dequant_q5_1(src: &[u8], dst: &mut [f32]) {
    dequant_blocks(src, dst, decode_q5_1)
}

pub(super) fn dot_q5_1(row: &[u8], x: &[f32]) -> f32 {
    dot_blocks(row, x, decode_q5_1)
}

pub(super) fn quantize_q5_1(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, encode_q5_1)
}

// ---- Q8_0 -------------------------------------------------------------------------

#[inline(always)]
fn decode_q8_0(b: &[u8; 34], y: &mut [f32; QK]) {
    let d = read_f16(b, 0);
    for (yj, &q) in y.iter_mut().zip(&b[2..]) {
        *yj = (q as i8) as f32 * d;
    }
}

/// `quantize_row_q8_0_ref`: the largest magnitude maps to ±127, rounding half away
/// from zero.
fn encode_q8_0(x: &[f32; QK], y: &mut [u8; 34]) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(y, 0, d);
    for (q, &v) in y[2..].iter_mut().zip(x) {
        *q = (v * id).round() as i8 as u8;
    }
}

pub(super) fn dequant_q8_0(src: &[u8], dst: &mut [f32]) {
    dequant_blocks(src, dst, decode_q8_0)
}

pub(super) fn dot_q8_0(row: &[u8], x: &[f32]) -> f32 {
    dot_blocks(row, x, decode_q8_0)
}

pub(crate) fn quantize_q8_0(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, encode_q8_0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built Q4_0 block: d = 0.5, nibbles chosen per element.
    #[test]
    fn q4_0_layout_puts_the_second_half_in_high_nibbles() {
        let mut b = [0u8; 18];
        b[..2].copy_from_slice(&0x3800u16.to_le_bytes()); // f16 0.5
        b[2] = 0x9f; // element 0: 15 -> 3.5, element 16: 9 -> 0.5
        b[17] = 0x08; // element 15: 8 -> 0, element 31: 0 -> -4
        let mut y = [0.0; QK];
        decode_q4_0(&b, &mut y);
        assert_eq!((y[0], y[16], y[15], y[31]), (3.5, 0.5, 0.0, -4.0));
        assert_eq!(y[1], -4.0);
    }

    /// Q5_0: bit j of qh is the 5th bit of element j, for both halves.
    #[test]
    fn q5_0_high_bits_come_from_qh() {
        let mut b = [0u8; 22];
        b[..2].copy_from_slice(&0x3c00u16.to_le_bytes()); // f16 1.0
        let qh: u32 = (1 << 3) | (1 << 20);
        b[2..6].copy_from_slice(&qh.to_le_bytes());
        let mut y = [0.0; QK];
        decode_q5_0(&b, &mut y);
        for (j, &v) in y.iter().enumerate() {
            let expect = if j == 3 || j == 20 { 0.0 } else { -16.0 };
            assert_eq!(v, expect, "element {j}");
        }
    }
}
