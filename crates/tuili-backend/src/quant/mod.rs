//! Quantized tensor formats, bit-exact to ggml's block layouts.
//!
//! A quantized row is a run of blocks; each block holds `block_size()` elements in
//! `type_size()` bytes (see [`GgmlType`]). For every supported type this module has
//! three kernels, picked in one place (`kernels`, below):
//!
//! - **dequantize** a row to f32, value for value what ggml's `dequantize_row_*` gives;
//! - **dot** a row with f32 activations. The activations stay f32 (no activation
//!   quantization), so the result is the dot of the dequantized row with `x` up to f32
//!   rounding. Each block is decoded into a small stack array and multiplied into
//!   several independent accumulators, a shape the compiler auto-vectorizes. This is the
//!   scalar reference that SIMD kernels are tested against, and the decode path until
//!   they exist;
//! - **quantize** f32 to blocks with ggml's reference quantizers (`quantize_row_*_ref`),
//!   so the files we write hold the bytes ggml writes. (For the K-quants that is ggml
//!   built without fused multiply-add; with `-march=native` the C compiler fuses some
//!   of their multiply-adds and a few scales come out different.)
//!
//! The kernels behind [`DequantFn`] and [`DotFn`] trust their caller on lengths (debug
//! assertions only); [`dequantize`], [`dequant_rows`] and [`quantize`] check them and
//! return a [`BackendError`] naming the type and the limit.

mod convert;
mod float;
mod kquantize;
mod kquants;
pub(crate) mod legacy;
pub(crate) mod mxfp4;

pub use convert::convert_rows;
pub use float::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};

use crate::BackendError;
use tuili_gguf::GgmlType;

/// Dequantize one row: `src` holds whole blocks, `dst.len()` = elements (multiple of block size).
pub type DequantFn = fn(src: &[u8], dst: &mut [f32]);

/// Dot product of one quantized weight row with f32 activations: `sum_i w[i] * x[i]`.
pub type DotFn = fn(row: &[u8], x: &[f32]) -> f32;

/// Quantize whole blocks: `src.len()` elements into `dst` (exactly the bytes they take).
type QuantizeFn = fn(src: &[f32], dst: &mut [u8]);

/// The kernels of one tensor type.
struct Kernels {
    dequant: DequantFn,
    dot: DotFn,
    quantize: QuantizeFn,
}

/// The one place that maps a tensor type to its kernels; `None` for types without them
/// (Q8_1 and Q8_K, which ggml uses only for quantized activations).
fn kernels(ty: GgmlType) -> Option<Kernels> {
    use {float as f, kquantize as kq, kquants as k, legacy as l, mxfp4 as mx};
    let (dequant, dot, quantize): (DequantFn, DotFn, QuantizeFn) = match ty {
        GgmlType::F32 => (f::dequant_f32, f::dot_f32, f::quantize_f32),
        GgmlType::F16 => (f::dequant_f16, f::dot_f16, f::quantize_f16),
        GgmlType::BF16 => (f::dequant_bf16, f::dot_bf16, f::quantize_bf16),
        GgmlType::Q4_0 => (l::dequant_q4_0, l::dot_q4_0, l::quantize_q4_0),
        GgmlType::Q4_1 => (l::dequant_q4_1, l::dot_q4_1, l::quantize_q4_1),
        GgmlType::Q5_0 => (l::dequant_q5_0, l::dot_q5_0, l::quantize_q5_0),
        GgmlType::Q5_1 => (l::dequant_q5_1, l::dot_q5_1, l::quantize_q5_1),
        GgmlType::Q8_0 => (l::dequant_q8_0, l::dot_q8_0, l::quantize_q8_0),
        GgmlType::Q2_K => (k::dequant_q2_k, k::dot_q2_k, kq::quantize_q2_k),
        GgmlType::Q3_K => (k::dequant_q3_k, k::dot_q3_k, kq::quantize_q3_k),
        GgmlType::Q4_K => (k::dequant_q4_k, k::dot_q4_k, kq::quantize_q4_k),
        GgmlType::Q5_K => (k::dequant_q5_k, k::dot_q5_k, kq::quantize_q5_k),
        GgmlType::Q6_K => (k::dequant_q6_k, k::dot_q6_k, kq::quantize_q6_k),
        GgmlType::MXFP4 => (mx::dequant_mxfp4, mx::dot_mxfp4, mx::quantize_mxfp4),
        GgmlType::Q8_1 | GgmlType::Q8_K => return None,
    };
    Some(Kernels {
        dequant,
        dot,
        quantize,
    })
}

/// The row dequantizer for `ty`; an error names the type when there is none.
pub fn dequant_fn(ty: GgmlType) -> Result<DequantFn, BackendError> {
    kernels(ty)
        .map(|k| k.dequant)
        .ok_or(BackendError::Unsupported {
            op: "dequantize",
            ty,
        })
}

/// The row-times-activations dot product for `ty`; an error names the type when there
/// is none.
pub fn dot_fn(ty: GgmlType) -> Result<DotFn, BackendError> {
    kernels(ty)
        .map(|k| k.dot)
        .ok_or(BackendError::Unsupported { op: "dot", ty })
}

/// Bytes taken by `n` elements of `ty`, checking that `n` is whole blocks.
pub fn row_bytes(ty: GgmlType, n: usize) -> Result<usize, BackendError> {
    let block_size = ty.block_size();
    if !n.is_multiple_of(block_size) {
        return Err(BackendError::PartialBlock {
            ty,
            what: "the element count",
            n,
            block_size,
        });
    }
    (n / block_size)
        .checked_mul(ty.type_size())
        .ok_or(BackendError::TooLarge { ty, n })
}

/// Dequantize `n` elements of `ty` from `src`, which must hold exactly their bytes.
pub fn dequantize(ty: GgmlType, src: &[u8], n: usize) -> Result<Vec<f32>, BackendError> {
    let f = dequant_fn(ty)?;
    check_len(ty, "the quantized buffer", row_bytes(ty, n)?, src.len())?;
    let mut dst = vec![0.0; n];
    f(src, &mut dst);
    Ok(dst)
}

/// Dequantize rows of `row_len` elements: `dst.len()` must be a whole number of rows
/// and `src` must hold exactly their bytes (rows are contiguous, as in a GGUF tensor).
pub fn dequant_rows(
    ty: GgmlType,
    src: &[u8],
    row_len: usize,
    dst: &mut [f32],
) -> Result<(), BackendError> {
    let f = dequant_fn(ty)?;
    if row_len == 0 || !row_len.is_multiple_of(ty.block_size()) {
        return Err(BackendError::PartialBlock {
            ty,
            what: "the row length",
            n: row_len,
            block_size: ty.block_size(),
        });
    }
    let rows = dst.len() / row_len;
    check_len(ty, "the output buffer", rows * row_len, dst.len())?;
    let bytes = rows
        .checked_mul(row_bytes(ty, row_len)?)
        .ok_or(BackendError::TooLarge { ty, n: dst.len() })?;
    check_len(ty, "the quantized buffer", bytes, src.len())?;
    // Whole rows are whole blocks, so the rows decode as one run of blocks.
    f(src, dst);
    Ok(())
}

/// Quantize `src` to `ty` with ggml's reference quantizer. `src.len()` must be whole
/// blocks; the block types accept only finite values.
pub fn quantize(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>, BackendError> {
    let k = kernels(ty).ok_or(BackendError::Unsupported { op: "quantize", ty })?;
    let bytes = row_bytes(ty, src.len())?;
    if ty.is_quantized() {
        if let Some((index, &value)) = src.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(BackendError::NonFinite { ty, index, value });
        }
    }
    let mut dst = vec![0u8; bytes];
    (k.quantize)(src, &mut dst);
    Ok(dst)
}

fn check_len(
    ty: GgmlType,
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), BackendError> {
    if expected == got {
        Ok(())
    } else {
        Err(BackendError::Length {
            ty,
            what,
            expected,
            got,
        })
    }
}

/// Independent f32 accumulators for a dot product: enough lanes that the adds do not
/// wait on each other (four SSE registers, two AVX ones).
struct Acc([f32; Acc::LANES]);

impl Acc {
    const LANES: usize = 16;

    fn new() -> Self {
        Acc([0.0; Acc::LANES])
    }

    /// acc += w * x, lane by lane; `N` is a multiple of `LANES`. Fixed-size arrays let
    /// the compiler see whole vectors; with slices it picks narrower ones.
    #[inline(always)]
    fn add<const N: usize>(&mut self, w: &[f32; N], x: &[f32; N]) {
        debug_assert_eq!(N % Acc::LANES, 0);
        for c in 0..N / Acc::LANES {
            for k in 0..Acc::LANES {
                self.0[k] += w[Acc::LANES * c + k] * x[Acc::LANES * c + k];
            }
        }
    }

    /// Sum of the lanes. (A pairwise tree here would look better, but it leads the
    /// compiler to vectorize the whole dot two lanes wide.)
    #[inline(always)]
    fn sum(self) -> f32 {
        self.0.iter().sum()
    }
}

/// Dequantize a run of blocks, `TS` bytes each into `BS` elements each.
#[inline(always)]
fn dequant_blocks<const TS: usize, const BS: usize>(
    src: &[u8],
    dst: &mut [f32],
    decode: fn(&[u8; TS], &mut [f32; BS]),
) {
    debug_assert_eq!(src.len() / TS * BS, dst.len());
    debug_assert_eq!(src.len() % TS, 0);
    for (b, y) in src.chunks_exact(TS).zip(dst.chunks_exact_mut(BS)) {
        // chunks_exact gives exactly TS and BS long slices, so these always match.
        if let (Ok(b), Ok(y)) = (b.try_into(), y.try_into()) {
            decode(b, y);
        }
    }
}

/// Dot a run of blocks with `x`: decode each block onto the stack, then multiply-add.
#[inline(always)]
fn dot_blocks<const TS: usize, const BS: usize>(
    row: &[u8],
    x: &[f32],
    decode: fn(&[u8; TS], &mut [f32; BS]),
) -> f32 {
    debug_assert_eq!(row.len() / TS * BS, x.len());
    debug_assert_eq!(row.len() % TS, 0);
    let mut acc = Acc::new();
    let mut w = [0.0f32; BS];
    for (b, xb) in row.chunks_exact(TS).zip(x.chunks_exact(BS)) {
        if let (Ok(b), Ok(xb)) = (b.try_into(), xb.try_into()) {
            decode(b, &mut w);
            acc.add(&w, xb);
        }
    }
    acc.sum()
}

/// Quantize a run of blocks, `BS` elements each into `TS` bytes each.
#[inline(always)]
fn quantize_blocks<const BS: usize, const TS: usize>(
    src: &[f32],
    dst: &mut [u8],
    encode: fn(&[f32; BS], &mut [u8; TS]),
) {
    debug_assert_eq!(src.len() / BS * TS, dst.len());
    debug_assert_eq!(src.len() % BS, 0);
    for (x, y) in src.chunks_exact(BS).zip(dst.chunks_exact_mut(TS)) {
        if let (Ok(x), Ok(y)) = (x.try_into(), y.try_into()) {
            encode(x, y);
        }
    }
}

/// The f16 at `b[at..at + 2]` (little-endian), as f32.
#[inline(always)]
fn read_f16(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Store `v` rounded to f16 at `b[at..at + 2]`, as ggml's `GGML_FP32_TO_FP16`.
#[inline(always)]
fn write_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f32_to_f16(v).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_cover_every_type_but_the_activation_ones() {
        for ty in GgmlType::ALL {
            let has = kernels(ty).is_some();
            assert_eq!(has, !matches!(ty, GgmlType::Q8_1 | GgmlType::Q8_K), "{ty}");
        }
    }

    #[test]
    fn acc_sums_every_lane() {
        let w: [f32; 64] = std::array::from_fn(|i| i as f32);
        let x = [1.0f32; 64];
        let mut acc = Acc::new();
        acc.add(&w, &x);
        assert_eq!(acc.sum(), (0..64).sum::<i32>() as f32);
    }

    #[test]
    fn row_bytes_checks_whole_blocks() {
        assert_eq!(row_bytes(GgmlType::Q4_0, 64), Ok(36));
        assert_eq!(row_bytes(GgmlType::F16, 3), Ok(6));
        assert!(matches!(
            row_bytes(GgmlType::Q4_K, 300),
            Err(BackendError::PartialBlock {
                n: 300,
                block_size: 256,
                ..
            })
        ));
        assert!(matches!(
            row_bytes(GgmlType::F32, usize::MAX),
            Err(BackendError::TooLarge { .. })
        ));
    }
}
