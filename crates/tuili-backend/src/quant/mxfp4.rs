//! MXFP4 (OCP microscaling FP4), as ggml lays it out (`block_mxfp4`, 17 bytes):
//! `e` (u8, an E8M0 power-of-two scale) then `qs[16]`: element j in the low nibble of
//! `qs[j]`, j+16 in the high one. A nibble indexes [`KVALUES`], twice the E2M1 value,
//! so the value is `KVALUES[q] · 2^(e - 128)` (half the scale 2^(e - 127)). gpt-oss's
//! expert weights come in this format.

use super::{dequant_blocks, dot_blocks, quantize_blocks};

const QK: usize = 32;

/// Twice the E2M1 values of the 16 nibbles (ggml's `kvalues_mxfp4`): integers, so the
/// integer kernels take them as codes.
pub(crate) const KVALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// `2^(e - 128)`, exact in f32 for every `e` (ggml's `GGML_E8M0_TO_FP32_HALF`: `e` of 0
/// and 1 are subnormal).
#[inline(always)]
pub(crate) fn e8m0_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        (e as u32 - 1) << 23
    };
    f32::from_bits(bits)
}

#[inline(always)]
fn decode(b: &[u8; 17], y: &mut [f32; QK]) {
    let d = e8m0_half(b[0]);
    for j in 0..QK / 2 {
        let q = b[1 + j];
        y[j] = KVALUES[(q & 0x0f) as usize] as f32 * d;
        y[j + QK / 2] = KVALUES[(q >> 4) as usize] as f32 * d;
    }
}

/// The nibble whose value at scale `d` is nearest `x` (the first of equals), as
/// ggml's `best_index_mxfp4`.
fn best_index(x: f32, d: f32) -> u8 {
    let mut best = 0;
    let mut best_err = (KVALUES[0] as f32 * d - x).abs();
    for (i, &k) in KVALUES.iter().enumerate().skip(1) {
        let err = (k as f32 * d - x).abs();
        if err < best_err {
            best = i as u8;
            best_err = err;
        }
    }
    best
}

/// `quantize_row_mxfp4_ref`: the scale is the largest magnitude's power of two over 4.
fn encode(x: &[f32; QK], y: &mut [u8; 17]) {
    let amax = x
        .iter()
        .fold(0.0f32, |a, v| if a < v.abs() { v.abs() } else { a });
    let e = if amax > 0.0 {
        (amax.log2().floor() - 2.0 + 127.0) as u8
    } else {
        0
    };
    let d = e8m0_half(e);
    y[0] = e;
    for j in 0..QK / 2 {
        y[1 + j] = best_index(x[j], d) | (best_index(x[j + QK / 2], d) << 4);
    }
}

pub(super) fn dequant_mxfp4(src: &[u8], dst: &mut [f32]) {
    dequant_blocks(src, dst, decode)
}

pub(super) fn dot_mxfp4(row: &[u8], x: &[f32]) -> f32 {
    dot_blocks(row, x, decode)
}

pub(super) fn quantize_mxfp4(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, encode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e8m0_half_is_two_to_the_e_minus_128() {
        for e in 0..=254u8 {
            assert_eq!(e8m0_half(e), 2f64.powi(e as i32 - 128) as f32, "e = {e}");
        }
    }

    /// A hand-built block: e = 128 (scale 1), nibbles chosen per element.
    #[test]
    fn layout_puts_the_second_half_in_high_nibbles() {
        let mut b = [0u8; 17];
        b[0] = 129; // scale 2
        b[1] = 0xf7; // element 0: 7 -> 12·2, element 16: 15 -> -12·2
        b[16] = 0x09; // element 15: 9 -> -1·2, element 31: 0 -> 0
        let mut y = [0.0; QK];
        decode(&b, &mut y);
        assert_eq!((y[0], y[16], y[15], y[31]), (24.0, -24.0, -2.0, 0.0));
    }

    #[test]
    fn quantize_round_trips_representable_values() {
        // Values on the grid of scale 2^-3 (e = 125): each comes back exactly.
        let x: [f32; QK] = std::array::from_fn(|j| KVALUES[(j * 5) % 16] as f32 * 0.125);
        let mut b = [0u8; 17];
        encode(&x, &mut b);
        let mut y = [0.0; QK];
        decode(&b, &mut y);
        assert_eq!(x, y);
    }
}
