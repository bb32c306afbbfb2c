//! Quantize / dequantize / dot on seeded random data, for every supported type, and
//! the errors the checked entry points return.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tuili_backend::quant::{dequant_fn, dequant_rows, dequantize, dot_fn, quantize, row_bytes};
use tuili_backend::BackendError;
use tuili_gguf::GgmlType;

/// Every type with kernels, and the bound on the worst RMS(error) / RMS(data) over
/// 256-element chunks of a round trip on Gaussian data (measured, plus ~15%).
const TYPES: [(GgmlType, f64); 13] = [
    (GgmlType::F32, 0.0),
    (GgmlType::F16, 2.7e-4),
    (GgmlType::BF16, 2.1e-3),
    (GgmlType::Q8_0, 0.007),
    (GgmlType::Q6_K, 0.024),
    (GgmlType::Q5_1, 0.047),
    (GgmlType::Q5_0, 0.055),
    (GgmlType::Q5_K, 0.048),
    (GgmlType::Q4_1, 0.1),
    (GgmlType::Q4_0, 0.113),
    (GgmlType::Q4_K, 0.091),
    (GgmlType::Q3_K, 0.19),
    (GgmlType::Q2_K, 0.39),
];

/// Standard normal samples (Box-Muller), scaled by a per-256 factor from 0.01 to 10
/// so that blocks see different magnitudes, as rows of a real weight do.
fn gaussian(rng: &mut StdRng, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    let mut scale = 1.0f32;
    while out.len() < n {
        if out.len() % 256 == 0 {
            scale = 10f32.powf(rng.gen_range(-2.0..1.0));
        }
        let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
        let u2: f32 = rng.gen();
        out.push(scale * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos());
    }
    out
}

fn rms(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x * x, n + 1));
    (sum / n as f64).sqrt()
}

/// RMS of the error relative to RMS of the data, per 256-element chunk, worst chunk.
fn worst_relative_rms(x: &[f32], y: &[f32]) -> f64 {
    x.chunks(256)
        .zip(y.chunks(256))
        .map(|(x, y)| {
            let err = rms(x.iter().zip(y).map(|(a, b)| *a as f64 - *b as f64));
            err / rms(x.iter().map(|&a| a as f64))
        })
        .fold(0.0, f64::max)
}

fn round_trip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let q = quantize(ty, x).unwrap_or_else(|e| panic!("{ty}: {e}"));
    assert_eq!(
        q.len(),
        row_bytes(ty, x.len()).expect("whole blocks"),
        "{ty}"
    );
    dequantize(ty, &q, x.len()).unwrap_or_else(|e| panic!("{ty}: {e}"))
}

#[test]
fn round_trip_error_is_within_each_types_bound() {
    let mut rng = StdRng::seed_from_u64(1);
    let x = gaussian(&mut rng, 64 * 256);
    for (ty, bound) in TYPES {
        let y = round_trip(ty, &x);
        let err = worst_relative_rms(&x, &y);
        println!("{ty}: worst relative RMS error {err:.5} (bound {bound})");
        assert!(err <= bound, "{ty}: relative RMS error {err} above {bound}");
    }
}

#[test]
fn requantizing_dequantized_values_changes_little() {
    // Values already on a type's grid come back unchanged for the types whose scale is
    // a plain function of the block's extremes. The K-quants search their scales, and
    // a grid that does not span the whole range can be refitted; Q3_K's symmetric fit
    // with an odd number of levels moves the most.
    let mut rng = StdRng::seed_from_u64(2);
    let x = gaussian(&mut rng, 16 * 256);
    for (ty, _) in TYPES {
        let y1 = round_trip(ty, &x);
        let y2 = round_trip(ty, &y1);
        let first = rms(x.iter().zip(&y1).map(|(a, b)| (*a - *b) as f64));
        let second = rms(y1.iter().zip(&y2).map(|(a, b)| (*a - *b) as f64));
        let ratio = match ty {
            GgmlType::Q3_K => 0.35,
            GgmlType::Q2_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => 0.01,
            _ => 0.0,
        };
        assert!(
            second <= ratio * first,
            "{ty}: second round trip moved {second:e}, first {first:e}"
        );
    }
}

/// f64 dot of the dequantized row with `x`, and the sum of |w x| that bounds its
/// rounding error.
fn reference_dot(ty: GgmlType, row: &[u8], x: &[f32]) -> (f64, f64) {
    let w = dequantize(ty, row, x.len()).expect("whole blocks");
    let dot = w.iter().zip(x).map(|(a, b)| *a as f64 * *b as f64).sum();
    let abs = w
        .iter()
        .zip(x)
        .map(|(a, b)| (*a as f64 * *b as f64).abs())
        .sum();
    (dot, abs)
}

#[test]
fn dot_equals_f64_dot_of_dequantized_row() {
    let mut rng = StdRng::seed_from_u64(3);
    for n in [256, 2048, 4864] {
        let w = gaussian(&mut rng, n);
        for (ty, _) in TYPES {
            let row = quantize(ty, &w).expect("finite whole blocks");
            let dot = dot_fn(ty).expect("supported");
            // Activations that correlate with the weights, so the sum does not cancel
            // and a relative error is meaningful.
            let wq = dequantize(ty, &row, n).expect("whole blocks");
            let x: Vec<f32> = wq.iter().map(|v| v + rng.gen_range(-0.5..0.5)).collect();
            let (want, _) = reference_dot(ty, &row, &x);
            let got = dot(&row, &x) as f64;
            let rel = (got - want).abs() / want.abs();
            assert!(
                rel < 1e-5,
                "{ty}, n = {n}: dot {got} vs {want} (rel {rel:e})"
            );
            // Independent activations: the error is relative to the sum of |w x|.
            let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let (want, abs) = reference_dot(ty, &row, &x);
            let got = dot(&row, &x) as f64;
            assert!(
                (got - want).abs() < 1e-5 * abs,
                "{ty}, n = {n}: dot {got} vs {want}"
            );
        }
    }
}

/// ggml's own quality check (tests/test-quantize-fns.cpp): on `0.1 + 2 cos(i)`, 4096
/// values, sqrt(sum of squared errors) / n must stay under 0.002 (0.0075 for Q2_K,
/// 0.004 for Q3_K).
#[test]
fn ggml_test_quantize_fns_thresholds_hold() {
    let n = 32 * 128;
    let x: Vec<f32> = (0..n)
        .map(|i| (0.1 + 2.0 * (i as f32).cos() as f64) as f32)
        .collect();
    for (ty, _) in TYPES {
        let y = round_trip(ty, &x);
        let sum: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum();
        let err = sum.sqrt() / n as f64;
        let max = match ty {
            GgmlType::Q2_K => 0.0075,
            GgmlType::Q3_K => 0.004,
            _ => 0.002,
        };
        assert!(
            err < max,
            "{ty}: total quantization error {err} not below {max}"
        );
    }
}

#[test]
fn float_types_take_any_length() {
    let x = [1.5f32, -2.25, 3.0];
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        let q = quantize(ty, &x).expect("any length");
        assert_eq!(dequantize(ty, &q, 3).expect("3 elements"), x, "{ty}");
        let dot = dot_fn(ty).expect("supported")(&q, &[1.0, 1.0, 2.0]);
        assert_eq!(dot, 5.25, "{ty}");
    }
}

#[test]
fn zero_and_constant_blocks_survive() {
    for (ty, _) in TYPES {
        let n = ty.block_size().max(32) * 2;
        let zeros = vec![0.0f32; n];
        assert_eq!(round_trip(ty, &zeros), zeros, "{ty}: zeros");
        // A constant block: ggml's min/max quantizers keep it exactly, the symmetric
        // ones to within one step of their grid.
        let c = vec![0.75f32; n];
        let err = worst_relative_rms(&c, &round_trip(ty, &c));
        assert!(err < 0.02, "{ty}: constant block error {err}");
    }
}

#[test]
fn dequant_rows_decodes_each_row_as_dequantize() {
    let mut rng = StdRng::seed_from_u64(4);
    let (rows, cols) = (3, 512);
    let x = gaussian(&mut rng, rows * cols);
    for (ty, _) in TYPES {
        let q = quantize(ty, &x).expect("finite whole blocks");
        let mut out = vec![0.0f32; rows * cols];
        dequant_rows(ty, &q, cols, &mut out).expect("matching sizes");
        let rb = row_bytes(ty, cols).expect("whole blocks");
        for r in 0..rows {
            let one = dequantize(ty, &q[r * rb..(r + 1) * rb], cols).expect("one row");
            assert_eq!(&out[r * cols..(r + 1) * cols], &one[..], "{ty} row {r}");
        }
        let f = dequant_fn(ty).expect("supported");
        let mut raw = vec![0.0f32; rows * cols];
        f(&q, &mut raw);
        assert_eq!(raw, out, "{ty}: dequant_fn");
    }
}

#[test]
fn bad_sizes_are_errors_that_name_the_limit() {
    let e = dequantize(GgmlType::Q4_0, &[0u8; 18], 33).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Q4_0 stores blocks of 32 elements, but the element count is 33"
    );
    let e = dequantize(GgmlType::Q4_K, &[0u8; 100], 256).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Q4_K: the quantized buffer must be 144, got 100"
    );
    let e = quantize(GgmlType::Q6_K, &[0.0; 100]).unwrap_err();
    assert!(
        matches!(
            e,
            BackendError::PartialBlock {
                n: 100,
                block_size: 256,
                ..
            }
        ),
        "{e}"
    );

    let mut out = vec![0.0f32; 64];
    let e = dequant_rows(GgmlType::Q8_0, &[0u8; 34], 48, &mut out).unwrap_err();
    assert!(matches!(e, BackendError::PartialBlock { n: 48, .. }), "{e}");
    let e = dequant_rows(GgmlType::Q8_0, &[0u8; 34], 0, &mut out).unwrap_err();
    assert!(matches!(e, BackendError::PartialBlock { n: 0, .. }), "{e}");
    let e = dequant_rows(GgmlType::Q8_0, &[0u8; 34], 32, &mut out[..48]).unwrap_err();
    assert!(
        matches!(
            e,
            BackendError::Length {
                expected: 32,
                got: 48,
                ..
            }
        ),
        "{e}"
    );
    let e = dequant_rows(GgmlType::Q8_0, &[0u8; 34], 32, &mut out).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Q8_0: the quantized buffer must be 68, got 34"
    );
    assert!(dequant_rows(GgmlType::Q8_0, &[0u8; 68], 32, &mut out).is_ok());
}

#[test]
fn activation_only_types_are_unsupported_by_name() {
    for ty in [GgmlType::Q8_1, GgmlType::Q8_K] {
        let e = dequant_fn(ty).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("dequantize is not supported for tensor type {ty}")
        );
        assert!(matches!(
            dot_fn(ty),
            Err(BackendError::Unsupported { op: "dot", .. })
        ));
        assert!(matches!(
            quantize(ty, &[0.0; 256]),
            Err(BackendError::Unsupported { op: "quantize", .. })
        ));
        assert!(dequantize(ty, &[], 0).is_err());
    }
}

#[test]
fn block_types_refuse_non_finite_input() {
    let mut x = vec![0.5f32; 256];
    x[7] = f32::NAN;
    x[9] = f32::INFINITY;
    for (ty, _) in TYPES.into_iter().filter(|(t, _)| t.is_quantized()) {
        let e = quantize(ty, &x).unwrap_err();
        assert!(
            matches!(e, BackendError::NonFinite { index: 7, .. }),
            "{ty}: {e}"
        );
    }
    // The float types can hold them.
    let q = quantize(GgmlType::F16, &x).expect("f16 has NaN and infinity");
    let y = dequantize(GgmlType::F16, &q, 256).expect("256 elements");
    assert!(y[7].is_nan() && y[9] == f32::INFINITY);
}

#[test]
fn odd_finite_inputs_do_not_panic() {
    // Huge, tiny and mixed magnitudes push the f16 scales to overflow or underflow.
    let cases: [&[f32]; 4] = [
        &[3e38, -2e38],
        &[1e-30, -2e-38],
        &[65504.0 * 64.0, 1e-3],
        &[1e-8, 1e6],
    ];
    for (ty, _) in TYPES {
        for c in cases {
            let n = ty.block_size().max(32) * 2;
            let x: Vec<f32> = (0..n)
                .map(|i| c[i % c.len()] * (1.0 - 0.5 * i as f32 / n as f32))
                .collect();
            let q = quantize(ty, &x).unwrap_or_else(|e| panic!("{ty}: {e}"));
            let y = dequantize(ty, &q, n).expect("whole blocks");
            assert_eq!(y.len(), n);
        }
    }
}
