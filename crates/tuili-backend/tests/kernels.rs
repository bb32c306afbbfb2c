//! The SIMD kernels through the public API: every table this CPU runs against the
//! scalar specification bit for bit, batch invariance of `matmul` for every type, and
//! accuracy against an f64 product.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tuili_backend::kernels::{self, available, scalar, scalar_twin, Kernels, QuantActs};
use tuili_backend::matmul::{matmul, matmul_with, Weight};
use tuili_backend::{dequantize, quantize};
use tuili_gguf::GgmlType;

/// Every weight type with kernels.
fn types() -> Vec<GgmlType> {
    GgmlType::ALL
        .into_iter()
        .filter(|&t| tuili_backend::dequant_fn(t).is_ok())
        .collect()
}

/// Row lengths to try: odd multiples of the block size, partial 256-groups, 4096.
fn col_choices(ty: GgmlType) -> &'static [usize] {
    match ty.block_size() {
        256 => &[256, 768, 4096],
        32 => &[32, 96, 288, 4096],
        _ => &[1, 7, 33, 96, 4096],
    }
}

/// A random weight whose rows have different magnitudes, and its dequantized values.
fn weight(rng: &mut StdRng, ty: GgmlType, rows: usize, cols: usize) -> (Weight, Vec<f32>) {
    let mut wf = Vec::with_capacity(rows * cols);
    for _ in 0..rows {
        let scale = 10f32.powf(rng.gen_range(-2.0..1.0));
        wf.extend((0..cols).map(|_| rng.gen_range(-1.0f32..1.0) * scale));
    }
    let bytes = quantize(ty, &wf).unwrap();
    let deq = dequantize(ty, &bytes, rows * cols).unwrap();
    (Weight::from_vec(ty, rows, cols, bytes).unwrap(), deq)
}

/// Activations with an outlier column, as real residual streams have.
fn acts(rng: &mut StdRng, n: usize, cols: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    for t in 0..n {
        x[t * cols + cols / 3] *= 40.0;
    }
    x
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn this_cpu_has_its_simd_table() {
    let names: Vec<&str> = available().iter().map(|k| k.name()).collect();
    eprintln!(
        "kernel tables: {names:?}, selected {}",
        kernels::select().name()
    );
    assert_eq!(names[0], "scalar");
    if cfg!(target_arch = "aarch64") {
        assert!(names.contains(&"neon"));
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
    {
        assert!(names.contains(&"avx2"));
        if std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vnni")
        {
            assert!(names.contains(&"avx512"));
        }
    }
}

/// Each SIMD table gives the scalar bits for every type, odd shapes and token counts
/// (one token takes the fused path, a few the direct path where a table has it, many
/// the panel path; the interleaved formats take the interleaved products); a table with
/// the bf16-pair products gives the bits of its scalar twin, which runs them too.
#[test]
fn simd_matmul_matches_scalar_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(11);
    let simd: Vec<&Kernels> = available().into_iter().skip(1).collect();
    for ty in types() {
        for &cols in col_choices(ty) {
            for rows in [1, 7, 37] {
                let (w, _) = weight(&mut rng, ty, rows, cols);
                for n in [1, 2, 5, 9, 20] {
                    let x = acts(&mut rng, n, cols);
                    let spec = |k: &Kernels| {
                        let mut want = vec![0f32; n * rows];
                        matmul_with(scalar_twin(k), &w, &x, n, &mut want);
                        assert!(want.iter().all(|v| v.is_finite()), "{ty}");
                        want
                    };
                    let plain = spec(scalar());
                    for k in &simd {
                        let want = if k.bf16_pairs() {
                            spec(k)
                        } else {
                            plain.clone()
                        };
                        let mut got = vec![0f32; n * rows];
                        matmul_with(k, &w, &x, n, &mut got);
                        assert_eq!(
                            bits(&want),
                            bits(&got),
                            "{} {ty} {rows}x{cols} n={n}",
                            k.name()
                        );
                    }
                }
            }
        }
    }
}

/// Every output is the same bits whatever batch the token is in and wherever it sits.
#[test]
fn matmul_is_batch_invariant_for_every_type() {
    let mut rng = StdRng::seed_from_u64(12);
    for ty in types() {
        let cols = col_choices(ty)[1];
        let rows = 45;
        let (w, _) = weight(&mut rng, ty, rows, cols);
        let n = 13;
        let x = acts(&mut rng, n, cols);
        let mut all = vec![0f32; n * rows];
        matmul(&w, &x, n, &mut all);
        for t in 0..n {
            let mut alone = vec![0f32; rows];
            matmul(&w, &x[t * cols..(t + 1) * cols], 1, &mut alone);
            assert_eq!(
                bits(&alone),
                bits(&all[t * rows..(t + 1) * rows]),
                "{ty} t={t}"
            );
        }
        // A different split: tokens 3..8 as their own batch.
        let mut part = vec![0f32; 5 * rows];
        matmul(&w, &x[3 * cols..8 * cols], 5, &mut part);
        assert_eq!(bits(&part), bits(&all[3 * rows..8 * rows]), "{ty}");
    }
}

/// Against an f64 product of the dequantized weights. Two measures: the worst error of
/// one output relative to `Σ |w_i x_i|` (what cancellation cannot hide), and the RMS
/// error over all outputs relative to their RMS: under 1e-4, or for BF16 weights under
/// the bf16-pair specification (activations rounded to bf16) under 2^-8.
#[test]
fn matmul_is_accurate_against_f64() {
    let mut rng = StdRng::seed_from_u64(13);
    let (mut worst_ty, mut worst, mut worst_rms) = (GgmlType::F32, 0f64, 0f64);
    for ty in types() {
        let cols = if ty.block_size() == 256 { 1536 } else { 576 };
        let rows = 64;
        let (w, deq) = weight(&mut rng, ty, rows, cols);
        let n = 4;
        let x = acts(&mut rng, n, cols);
        let mut out = vec![0f32; n * rows];
        matmul(&w, &x, n, &mut out);
        let (mut err2, mut ref2, mut max_rel) = (0f64, 0f64, 0f64);
        for t in 0..n {
            for r in 0..rows {
                let (mut want, mut abs) = (0f64, 0f64);
                for c in 0..cols {
                    let p = deq[r * cols + c] as f64 * x[t * cols + c] as f64;
                    want += p;
                    abs += p.abs();
                }
                let e = out[t * rows + r] as f64 - want;
                err2 += e * e;
                ref2 += want * want;
                max_rel = max_rel.max(e.abs() / abs);
            }
        }
        let rms = (err2 / ref2).sqrt();
        eprintln!("{ty:5}: worst |err| / Σ|w x| = {max_rel:.2e}, RMS error / RMS = {rms:.2e}");
        // The bf16-pair products round each activation to bf16 (2^-8 relative at most).
        let bound = if ty == GgmlType::BF16 && kernels::select().bf16_pairs() {
            1.0 / 256.0
        } else {
            1e-4
        };
        assert!(max_rel < bound && rms < bound, "{ty}: {max_rel} {rms}");
        if max_rel > worst {
            (worst_ty, worst, worst_rms) = (ty, max_rel, rms);
        }
    }
    eprintln!("worst: {worst_ty} {worst:.2e} (RMS {worst_rms:.2e})");
}

#[test]
fn dot_and_axpy_match_scalar_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(14);
    for n in (0..80).chain([127, 128, 129, 4096, 4099]) {
        let a: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let want = scalar().dot(&a, &b);
        let exact: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
        let abs: f64 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| (x as f64 * y as f64).abs())
            .sum();
        assert!(
            (want as f64 - exact).abs() <= 1e-6 * abs.max(1e-30),
            "n={n}"
        );
        let mut y0 = b.clone();
        scalar().axpy(0.37, &a, &mut y0);
        for k in available() {
            assert_eq!(
                k.dot(&a, &b).to_bits(),
                want.to_bits(),
                "{} n={n}",
                k.name()
            );
            let mut y = b.clone();
            k.axpy(0.37, &a, &mut y);
            assert_eq!(bits(&y), bits(&y0), "{} n={n}", k.name());
        }
    }
}

#[test]
fn quantized_activations_round_trip_within_half_a_step() {
    let mut rng = StdRng::seed_from_u64(15);
    let cols = 288;
    let x = acts(&mut rng, 3, cols);
    for k in available() {
        let mut a = QuantActs::new();
        k.quantize_acts(&x, cols, &mut a);
        assert_eq!((a.n_tokens(), a.cols()), (3, cols));
        for t in 0..3 {
            for (i, (&q, &v)) in a.q(t).iter().zip(&x[t * cols..]).enumerate() {
                let d = a.d(t)[i / 32];
                // Half a step, plus f32 rounding of x * (32767 / amax): 32767 * 2^-23.
                assert!(
                    (d * q as f32 - v).abs() <= 0.505 * d,
                    "{} t={t} i={i}",
                    k.name()
                );
            }
            // s is the block sum of the quantized values.
            let s: f32 = a.q(t)[..32].iter().map(|&q| q as f32).sum::<f32>() * a.d(t)[0];
            assert_eq!(s, a.s(t)[0]);
        }
    }
}

/// A NaN or an infinity in the activations makes the outputs it touches NaN (for
/// quantized weights: every output of that token), never a panic.
#[test]
fn non_finite_activations_give_nan_not_a_panic() {
    let mut rng = StdRng::seed_from_u64(16);
    for ty in [GgmlType::Q4_1, GgmlType::Q6_K, GgmlType::F16] {
        let cols = 256;
        let (w, _) = weight(&mut rng, ty, 5, cols);
        let mut x = acts(&mut rng, 2, cols);
        x[cols + 17] = f32::NAN;
        for k in available() {
            let mut out = vec![0f32; 2 * 5];
            matmul_with(k, &w, &x, 2, &mut out);
            assert!(out[..5].iter().all(|v| v.is_finite()), "{} {ty}", k.name());
            assert!(out[5..].iter().all(|v| v.is_nan()), "{} {ty}", k.name());
        }
    }
}
