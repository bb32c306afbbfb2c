//! The float types F32, F16 and BF16 (block size 1, little-endian), and the f16/bf16
//! conversions the block formats use for their scales.

use super::{dequant_blocks, dot_blocks, quantize_blocks};

/// Elements per chunk in the dot products: decoded onto the stack, then multiplied in.
const CHUNK: usize = 32;

/// f16 bits to f32, exact for every input (subnormals, infinities, NaN payloads).
///
/// Written without branches so that loops over it vectorize: the exponent is rebiased
/// by integer addition, and the two special exponents are fixed up by selects.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let em = (h & 0x7fff) << 13; // exponent and mantissa, moved to f32's positions
    let exp = em & 0x0f80_0000;
    // Normal numbers: rebias the exponent from 15 to 127.
    let normal = em + ((127 - 15) << 23);
    // Infinity and NaN: the exponent becomes all ones.
    let special = em + ((255 - 31) << 23);
    // Zero and subnormals: m * 2^-24, computed exactly as (1 + m/1024) * 2^-14 - 2^-14.
    let magic = f32::from_bits(113 << 23);
    let sub = (f32::from_bits(em + (113 << 23)) - magic).to_bits();
    let bits = if exp == 0x0f80_0000 {
        special
    } else if exp == 0 {
        sub
    } else {
        normal
    };
    f32::from_bits(bits | sign)
}

/// f32 to f16 bits, rounding to nearest even (ggml's `GGML_FP32_TO_FP16`).
#[inline(always)]
pub fn f32_to_f16(v: f32) -> u16 {
    half::f16::from_f32(v).to_bits()
}

/// bf16 bits to f32 (exact: bf16 is the top half of an f32).
#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// f32 to bf16 bits as ggml's `ggml_compute_fp32_to_bf16`: round to nearest even,
/// NaN kept a quiet NaN.
#[inline(always)]
pub fn f32_to_bf16(v: f32) -> u16 {
    let u = v.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

#[inline(always)]
fn read_f32(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[inline(always)]
fn read_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

/// The `CHUNK` little-endian u16 values in `b`.
#[inline(always)]
fn halves(b: &[u8; CHUNK * 2]) -> [u16; CHUNK] {
    let mut h = [0u16; CHUNK];
    for (i, hi) in h.iter_mut().enumerate() {
        *hi = u16::from_le_bytes([b[2 * i], b[2 * i + 1]]);
    }
    h
}

pub(super) fn dequant_f32(src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len() * 4);
    for (b, y) in src.chunks_exact(4).zip(dst.iter_mut()) {
        *y = read_f32(b);
    }
}

/// Decode `CHUNK` f16 values.
#[inline(always)]
fn chunk_f16(b: &[u8; CHUNK * 2], y: &mut [f32; CHUNK]) {
    // Gather the halves first: the compiler then loads them whole, where reading them
    // byte by byte inside the conversion loop stays scalar.
    let h = halves(b);
    for (yi, &hi) in y.iter_mut().zip(&h) {
        *yi = f16_to_f32(hi);
    }
}

/// Decode `CHUNK` bf16 values.
#[inline(always)]
fn chunk_bf16(b: &[u8; CHUNK * 2], y: &mut [f32; CHUNK]) {
    let h = halves(b);
    for (yi, &hi) in y.iter_mut().zip(&h) {
        *yi = bf16_to_f32(hi);
    }
}

pub(super) fn dequant_f16(src: &[u8], dst: &mut [f32]) {
    dequant_chunked(src, dst, chunk_f16, |b| f16_to_f32(read_u16(b)));
}

pub(super) fn dequant_bf16(src: &[u8], dst: &mut [f32]) {
    dequant_chunked(src, dst, chunk_bf16, |b| bf16_to_f32(read_u16(b)));
}

/// Dequantize in chunks of `CHUNK` elements of two bytes, then the tail one by one.
#[inline(always)]
fn dequant_chunked(
    src: &[u8],
    dst: &mut [f32],
    decode_chunk: fn(&[u8; CHUNK * 2], &mut [f32; CHUNK]),
    decode_one: fn(&[u8]) -> f32,
) {
    debug_assert_eq!(src.len(), dst.len() * 2);
    let full = dst.len() / CHUNK * CHUNK;
    let (src_main, src_tail) = src.split_at(full * 2);
    let (dst_main, dst_tail) = dst.split_at_mut(full);
    dequant_blocks(src_main, dst_main, decode_chunk);
    for (b, y) in src_tail.chunks_exact(2).zip(dst_tail) {
        *y = decode_one(b);
    }
}

/// Dot in chunks of `CHUNK` elements of `size` bytes, then the tail one by one.
#[inline(always)]
fn dot_chunked<const TS: usize>(
    row: &[u8],
    x: &[f32],
    decode_chunk: fn(&[u8; TS], &mut [f32; CHUNK]),
    decode_one: fn(&[u8]) -> f32,
) -> f32 {
    let size = TS / CHUNK;
    debug_assert_eq!(row.len(), x.len() * size);
    let full = x.len() / CHUNK * CHUNK;
    let (row_main, row_tail) = row.split_at(full * size);
    let (x_main, x_tail) = x.split_at(full);
    let mut sum = dot_blocks(row_main, x_main, decode_chunk);
    for (b, &xi) in row_tail.chunks_exact(size).zip(x_tail) {
        sum += decode_one(b) * xi;
    }
    sum
}

pub(super) fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    fn chunk(b: &[u8; CHUNK * 4], y: &mut [f32; CHUNK]) {
        for (yi, c) in y.iter_mut().zip(b.chunks_exact(4)) {
            *yi = read_f32(c);
        }
    }
    dot_chunked(row, x, chunk, read_f32)
}

pub(super) fn dot_f16(row: &[u8], x: &[f32]) -> f32 {
    dot_chunked(row, x, chunk_f16, |b| f16_to_f32(read_u16(b)))
}

pub(super) fn dot_bf16(row: &[u8], x: &[f32]) -> f32 {
    dot_chunked(row, x, chunk_bf16, |b| bf16_to_f32(read_u16(b)))
}

pub(super) fn quantize_f32(src: &[f32], dst: &mut [u8]) {
    debug_assert_eq!(src.len() * 4, dst.len());
    for (x, b) in src.iter().zip(dst.chunks_exact_mut(4)) {
        b.copy_from_slice(&x.to_le_bytes());
    }
}

pub(super) fn quantize_f16(src: &[f32], dst: &mut [u8]) {
    quantize_blocks::<1, 2>(src, dst, |x, b| *b = f32_to_f16(x[0]).to_le_bytes());
}

pub(super) fn quantize_bf16(src: &[f32], dst: &mut [u8]) {
    quantize_blocks::<1, 2>(src, dst, |x, b| *b = f32_to_bf16(x[0]).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_to_f32_matches_half_for_every_bit_pattern() {
        for h in 0..=u16::MAX {
            let ours = f16_to_f32(h);
            let theirs = half::f16::from_bits(h).to_f32();
            if theirs.is_nan() {
                assert!(ours.is_nan(), "{h:#06x}");
                // The payload moves up unchanged.
                assert_eq!(ours.to_bits() & 0x007f_ffff, ((h as u32) & 0x3ff) << 13);
            } else {
                assert_eq!(ours.to_bits(), theirs.to_bits(), "{h:#06x}");
            }
        }
    }

    #[test]
    fn f16_round_trips_and_rounds_to_even() {
        for h in (0..=u16::MAX).filter(|h| h & 0x7c00 != 0x7c00) {
            assert_eq!(f32_to_f16(f16_to_f32(h)), h);
        }
        // 1 + 2^-11 is halfway between 1 and the next f16; ties go to the even mantissa.
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(f32_to_f16(1e6), 0x7c00); // overflows to infinity
    }

    #[test]
    fn bf16_rounds_like_ggml() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // Halfway cases: ties to even.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        // A signalling NaN becomes a quiet one instead of rounding into infinity.
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7f80);
        for h in (0..=u16::MAX).filter(|h| h & 0x7f80 != 0x7f80) {
            assert_eq!(f32_to_bf16(bf16_to_f32(h)), h);
        }
    }

    #[test]
    fn dot_handles_a_tail_shorter_than_a_chunk() {
        let x: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let w: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.125).collect();
        let mut row = vec![0u8; 37 * 4];
        quantize_f32(&w, &mut row);
        let expect: f64 = w.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
        assert!((dot_f32(&row, &x) as f64 - expect).abs() < 1e-4);
    }
}
