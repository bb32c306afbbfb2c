//! Decoding the K-quants Q2_K, Q3_K, Q4_K, Q5_K and Q6_K: super-blocks of 256
//! elements split into sub-blocks of 16 or 32, each with its own quantized scale
//! (ggml-common.h `block_q*_K`, ggml-quants.c `dequantize_row_q*_K`).
//!
//! | type | bytes | fields in order |
//! |---|---|---|
//! | Q2_K | 84  | `scales[16]` (4-bit scale, 4-bit min), `qs[64]` (2 bits), `d`, `dmin` |
//! | Q3_K | 110 | `hmask[32]` (3rd bit), `qs[64]` (low 2 bits), `scales[12]` (16 x 6 bits), `d` |
//! | Q4_K | 144 | `d`, `dmin`, `scales[12]` (8 x 6-bit scale and min), `qs[128]` (4 bits) |
//! | Q5_K | 176 | `d`, `dmin`, `scales[12]`, `qh[32]` (5th bit), `qs[128]` (low 4 bits) |
//! | Q6_K | 210 | `ql[128]` (low 4 bits), `qh[64]` (high 2 bits), `scales[16]` (i8), `d` |

use super::{dequant_blocks, dot_blocks, read_f16};
use tuili_gguf::QK_K;

/// Scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block, from the 12 packed
/// bytes: 6 bits each, the top 2 bits of sub-blocks 4..8 stored in bytes 0..8.
#[inline(always)]
pub(super) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Signed scale of sub-block `j` (0..16) of a Q3_K block: the low nibble from bytes
/// 0..8, the top 2 bits from bytes 8..12, stored with an offset of 32.
#[inline(always)]
pub(super) fn scale_q3_k(j: usize, sc: &[u8]) -> i32 {
    let low = if j < 8 { sc[j] & 0x0f } else { sc[j - 8] >> 4 };
    let high = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i32 - 32
}

// Each decoder first unpacks the quants into a `[_; 256]` array in element order, with
// byte operations the compiler vectorizes, then applies the sub-block scales in a
// second loop of plain multiply(-subtract). The float expressions are ggml's, in the
// same order, so the values are bit-identical to `dequantize_row_q*_K`.

/// `y[i] = d[i / G] * q[i] - m[i / G]`, for `NG` sub-blocks of `G` elements.
#[inline(always)]
fn affine<const G: usize, const NG: usize>(
    q: &[u8; QK_K],
    d: &[f32; NG],
    m: &[f32; NG],
    y: &mut [f32; QK_K],
) {
    debug_assert_eq!(G * NG, QK_K);
    for g in 0..NG {
        for l in 0..G {
            y[G * g + l] = d[g] * q[G * g + l] as f32 - m[g];
        }
    }
}

/// `y[i] = d[i / 16] * q[i]` for 16 sub-blocks of 16 signed quants.
#[inline(always)]
fn signed16(q: &[i8; QK_K], d: &[f32; 16], y: &mut [f32; QK_K]) {
    for g in 0..16 {
        for l in 0..16 {
            y[16 * g + l] = d[g] * q[16 * g + l] as f32;
        }
    }
}

// ---- Q2_K -------------------------------------------------------------------------

#[inline(always)]
fn decode_q2_k(b: &[u8; 84], y: &mut [f32; QK_K]) {
    let d = read_f16(b, 80);
    let min = read_f16(b, 82);
    // Sub-block g (16 elements): scale in the low nibble of scales[g], min in the high.
    let mut dl = [0.0f32; 16];
    let mut ml = [0.0f32; 16];
    for g in 0..16 {
        dl[g] = d * (b[g] & 0x0f) as f32;
        ml[g] = min * (b[g] >> 4) as f32;
    }
    // Element 128h + 32p + l is bits 2p..2p+2 of qs[32h + l].
    let mut q = [0u8; QK_K];
    for h in 0..2 {
        for p in 0..4 {
            for l in 0..32 {
                q[128 * h + 32 * p + l] = (b[16 + 32 * h + l] >> (2 * p)) & 3;
            }
        }
    }
    affine::<16, 16>(&q, &dl, &ml, y);
}

pub(super) fn dequant_q2_k(src: &[u8], dst: &mut [f32]) {
    dequant_blocks(src, dst, decode_q2_k)
}

pub(super) fn dot_q2_k(row: &[u8], x: &[f32]) -> f32 {
    dot_blocks(row, x, decode_q2_k)
}

// ---- Q3_K -------------------------------------------------------------------------

#[inline(always)]
fn decode_q3_k(b: &[u8; 110], y: &mut [f32; QK_K]) {
    let d_all = read_f16(b, 108);
    let sc = &b[96..108];
    let mut dl = [0.0f32; 16];
    for (g, dg) in dl.iter_mut().enumerate() {
        *dg = d_all * scale_q3_k(g, sc) as f32;
    }
    // As Q2_K for the low 2 bits (qs at 32..96); bit 4h + p of hmask[l] is the third
    // bit of element 128h + 32p + l: set means no offset, clear means subtract 4.
    let mut q = [0i8; QK_K];
    for h in 0..2 {
        for p in 0..4 {
            let m = 1u8 << (4 * h + p);
            for l in 0..32 {
                let low = ((b[32 + 32 * h + l] >> (2 * p)) & 3) as i8;
                let offset = if b[l] & m != 0 { 0 } else { 4 };
                q[128 * h + 32 * p + l] = low - offset;
            }
        }
    }
    signed16(&q, &dl, y);
}

pub(super) fn dequant_q3_k(src: &[u8], dst: &mut [f32]) {
    dequant_blocks(src, dst, decode_q3_k)
}

pub(super) fn dot_q3_k(row: &[u8], x: &[f32]) -> f32 {
    dot_blocks(row, x, decode_q3_k)
}

// ---- Q4_K and Q5_K ----------------------------------------------------------------

/// Scales and mins of the 8 sub-blocks of a Q4_K/Q5_K block, as f32:
/// `(d * scale, dmin * min)`.
#[inline(always)]
fn k4_scales(b: &[u8]) -> ([f32; 8], [f32; 8]) {
    let d = read_f16(b, 0);
    let min = read_f16(b, 2);
    let mut dd = [0.0f32; 8];
    let mut mm = [0.0f32; 8];
    for g in 0..8 {
        let (sc, m) = scale_min_k4(g, &b[4..16]);
        dd[g] = d * sc as f32;
        mm[g] = min * m as f32;
    }
    (dd, mm)
}

#[inline(always)]
fn decode_q4_k(b: &[u8; 144], y: &mut [f32; QK_K]) {
    let (dd, mm) = k4_scales(b);
    // Each 64 elements use 32 bytes of qs: low nibbles first (sub-block 2i), then high.
    // (Written in one pass: an unpacked u8 array in between defeats the vectorizer.)
    for i in 0..4 {
        let (d1, m1, d2, m2) = (dd[2 * i], mm[2 * i], dd[2 * i + 1], mm[2 * i + 1]);
        for l in 0..32 {
            let v = b[16 + 32 * i + l];
            y[64 * i + l] = d1 * (v & 0x0f) as f32 - m1;
            y[64 * i + 32 + l] = d2 * (v >> 4) as f32 - m2;
        }
    }
}

pub(super) fn dequant_q4_k(src: &[u8], dst: &mut [f32]) {
    dequant_blocks(src, dst, decode_q4_k)
}

pub(super) fn dot_q4_k(row: &[u8], x: &[f32]) -> f32 {
    dot_blocks(row, x, decode_q4_k)
}

#[inline(always)]
fn decode_q5_k(b: &[u8; 176], y: &mut [f32; QK_K]) {
    let (dd, mm) = k4_scales(b);
    // As Q4_K (qs at 48..176), plus bit g of qh[l] (16..48) as the 5th bit of
    // element l of sub-block g.
    for i in 0..4 {
        let (d1, m1, d2, m2) = (dd[2 * i], mm[2 * i], dd[2 * i + 1], mm[2 * i + 1]);
        for l in 0..32 {
            let v = b[48 + 32 * i + l];
            let h = b[16 + l] >> (2 * i);
            y[64 * i + l] = d1 * ((v & 0x0f) | ((h & 1) << 4)) as f32 - m1;
            y[64 * i + 32 + l] = d2 * ((v >> 4) | ((h & 2) << 3)) as f32 - m2;
        }
    }
}

pub(super) fn dequant_q5_k(src: &[u8], dst: &mut [f32]) {
    dequant_blocks(src, dst, decode_q5_k)
}

pub(super) fn dot_q5_k(row: &[u8], x: &[f32]) -> f32 {
    dot_blocks(row, x, decode_q5_k)
}

// ---- Q6_K -------------------------------------------------------------------------

#[inline(always)]
fn decode_q6_k(b: &[u8; 210], y: &mut [f32; QK_K]) {
    let d = read_f16(b, 208);
    // ggml computes d * scale * q, left to right.
    let mut ds = [0.0f32; 16];
    for (g, dg) in ds.iter_mut().enumerate() {
        *dg = d * (b[192 + g] as i8) as f32;
    }
    // Each 128 elements use 64 bytes of ql and 32 of qh. Byte l carries elements
    // l, l+32, l+64, l+96: low/high nibbles of ql[l] and ql[l+32], 2 bits each of qh[l].
    let mut q = [0i8; QK_K];
    for h in 0..2 {
        for l in 0..32 {
            let (a, c) = (b[64 * h + l], b[64 * h + 32 + l]);
            let hh = b[128 + 32 * h + l];
            let e = 128 * h + l;
            q[e] = ((a & 0x0f) | ((hh & 3) << 4)) as i8 - 32;
            q[e + 32] = ((c & 0x0f) | (((hh >> 2) & 3) << 4)) as i8 - 32;
            q[e + 64] = ((a >> 4) | (((hh >> 4) & 3) << 4)) as i8 - 32;
            q[e + 96] = ((c >> 4) | (((hh >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    signed16(&q, &ds, y);
}

pub(super) fn dequant_q6_k(src: &[u8], dst: &mut [f32]) {
    dequant_blocks(src, dst, decode_q6_k)
}

pub(super) fn dot_q6_k(row: &[u8], x: &[f32]) -> f32 {
    dot_blocks(row, x, decode_q6_k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pack 8 six-bit (scale, min) pairs the way `quantize_row_q4_K_ref` does.
    fn pack_k4(ls: [u8; 8], lm: [u8; 8]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for j in 0..8 {
            if j < 4 {
                s[j] = ls[j];
                s[j + 4] = lm[j];
            } else {
                s[j + 4] = (ls[j] & 0x0f) | ((lm[j] & 0x0f) << 4);
                s[j - 4] |= (ls[j] >> 4) << 6;
                s[j] |= (lm[j] >> 4) << 6;
            }
        }
        s
    }

    #[test]
    fn k4_scales_unpack_what_ggml_packs() {
        let ls = [0, 63, 17, 32, 45, 1, 63, 30];
        let lm = [63, 0, 5, 48, 19, 62, 33, 16];
        let s = pack_k4(ls, lm);
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &s), (ls[j], lm[j]), "sub-block {j}");
        }
    }

    #[test]
    fn q3_k_scales_unpack_all_sixteen() {
        // Pack scales 0..16 (offset 32 -> stored s + 32) as quantize_row_q3_K_ref does.
        let wanted: Vec<i32> = (0..16).map(|j| j * 4 - 32).collect();
        let mut sc = [0u8; 12];
        for (j, &w) in wanted.iter().enumerate() {
            let l = (w + 32) as u8;
            if j < 8 {
                sc[j] = l & 0x0f;
            } else {
                sc[j - 8] |= (l & 0x0f) << 4;
            }
            sc[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
        }
        for (j, &w) in wanted.iter().enumerate() {
            assert_eq!(scale_q3_k(j, &sc), w, "sub-block {j}");
        }
    }

    #[test]
    fn q6_k_element_order() {
        // d = 1, every scale 1; element e gets quant (e % 64) - 32 through the packing.
        let mut b = [0u8; 210];
        b[208..210].copy_from_slice(&0x3c00u16.to_le_bytes());
        b[192..208].fill(1);
        let q = |e: usize| (e % 64) as u8;
        for half in 0..2 {
            for l in 0..32 {
                let e = 128 * half + l;
                b[64 * half + l] = (q(e) & 0x0f) | ((q(e + 64) & 0x0f) << 4);
                b[64 * half + l + 32] = (q(e + 32) & 0x0f) | ((q(e + 96) & 0x0f) << 4);
                b[128 + 32 * half + l] = (q(e) >> 4)
                    | ((q(e + 32) >> 4) << 2)
                    | ((q(e + 64) >> 4) << 4)
                    | ((q(e + 96) >> 4) << 6);
            }
        }
        let mut y = [0.0; QK_K];
        decode_q6_k(&b, &mut y);
        for (e, &v) in y.iter().enumerate() {
            assert_eq!(v, (e % 64) as f32 - 32.0, "element {e}");
        }
    }
}
