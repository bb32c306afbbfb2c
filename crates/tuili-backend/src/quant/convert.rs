//! Converting a whole tensor from one type to another, row by row, on the thread pool:
//! what `tuili quantize` and quantize-on-load do to every weight. Each row is decoded to
//! f32 and encoded with the reference quantizer, as llama.cpp's `llama-quantize` does
//! (it too goes through f32), so the bytes are the ones it writes.

use std::sync::Mutex;

use super::{dequant_fn, kernels, row_bytes};
use crate::pool::{self, SyncPtr};
use crate::BackendError;
use tuili_gguf::GgmlType;

/// Converts `src`, whole rows of `row_len` elements of type `from`, to type `to`.
/// Rows are split over the global pool. Lengths are checked; a block type refuses
/// a row holding NaN or an infinity, naming the element (counted over the whole tensor).
pub fn convert_rows(
    from: GgmlType,
    src: &[u8],
    to: GgmlType,
    row_len: usize,
) -> Result<Vec<u8>, BackendError> {
    let dequant = dequant_fn(from)?;
    let quantize = kernels(to)
        .ok_or(BackendError::Unsupported {
            op: "quantize",
            ty: to,
        })?
        .quantize;
    let src_row = row_bytes(from, row_len)?;
    let dst_row = row_bytes(to, row_len)?;
    if src_row == 0 || !src.len().is_multiple_of(src_row) {
        return Err(BackendError::Length {
            ty: from,
            what: "the tensor bytes (whole rows)",
            expected: src.len().next_multiple_of(src_row.max(1)),
            got: src.len(),
        });
    }
    let rows = src.len() / src_row;
    let total = rows.checked_mul(dst_row).ok_or(BackendError::TooLarge {
        ty: to,
        n: rows.saturating_mul(row_len),
    })?;
    let mut dst = vec![0u8; total];
    let out = SyncPtr::new(&mut dst);
    let first_error: Mutex<Option<BackendError>> = Mutex::new(None);
    pool::global().for_ranges(rows, 1, &|range| {
        let mut row = vec![0f32; row_len];
        for r in range {
            dequant(&src[r * src_row..(r + 1) * src_row], &mut row);
            if to.is_quantized() {
                if let Some((i, &value)) = row.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                    let mut e = first_error.lock().unwrap_or_else(|e| e.into_inner());
                    e.get_or_insert(BackendError::NonFinite {
                        ty: to,
                        index: r * row_len + i,
                        value,
                    });
                    return;
                }
            }
            // SAFETY: row `r` belongs to this range only (the ranges are disjoint), lies
            // within `dst` (r < rows), and `dst` outlives `for_ranges`, which joins.
            let y = unsafe { out.slice(r * dst_row..(r + 1) * dst_row) };
            quantize(&row, y);
        }
    });
    match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(dst),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize, quantize};

    fn input(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 97.0)
            .collect()
    }

    #[test]
    fn equals_dequantize_then_quantize_row_by_row() {
        let row_len = 512;
        let x = input(row_len * 9);
        let f16 = quantize(GgmlType::F16, &x).unwrap();
        for to in [
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
            GgmlType::F32,
        ] {
            let got = convert_rows(GgmlType::F16, &f16, to, row_len).unwrap();
            let back = dequantize(GgmlType::F16, &f16, x.len()).unwrap();
            assert_eq!(got, quantize(to, &back).unwrap(), "{to}");
        }
    }

    #[test]
    fn bad_lengths_and_values_are_errors() {
        let f32s = quantize(GgmlType::F32, &input(512)).unwrap();
        // 512 elements are not whole rows of 300.
        assert!(convert_rows(GgmlType::F32, &f32s, GgmlType::F16, 300).is_err());
        // 100 is not a multiple of Q8_0's 32.
        assert!(matches!(
            convert_rows(GgmlType::F32, &f32s[..400], GgmlType::Q8_0, 100),
            Err(BackendError::PartialBlock { n: 100, .. })
        ));
        let mut x = input(256);
        x[200] = f32::NAN;
        let bytes = quantize(GgmlType::F32, &x).unwrap();
        assert!(matches!(
            convert_rows(GgmlType::F32, &bytes, GgmlType::Q4_0, 128),
            Err(BackendError::NonFinite { index: 200, .. })
        ));
        assert!(matches!(
            convert_rows(GgmlType::F32, &bytes, GgmlType::Q8_K, 256),
            Err(BackendError::Unsupported { .. })
        ));
    }
}
