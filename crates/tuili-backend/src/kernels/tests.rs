//! Unit tests of what the public API hides: decoded panels, the gemm tiles and the
//! activation quantizer, each SIMD table against the scalar specification, bit for bit.

use super::*;
use crate::kv::KvType;
use crate::quant::{dequantize, quantize};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub(super) const FORMATS: [QFormat; 11] = QFormat::ALL;

/// The tables under test: every one this CPU runs, scalar first, or those named in
/// `TUILI_TEST_KERNELS` (comma-separated; scalar always stays first).
pub(super) fn tables() -> impl Iterator<Item = &'static Kernels> {
    let only = std::env::var("TUILI_TEST_KERNELS").ok();
    available().into_iter().filter(move |k| {
        k.name() == "scalar"
            || only
                .as_deref()
                .is_none_or(|o| o.split(',').any(|n| n == k.name()))
    })
}

/// The bit patterns of `v`, for exact comparisons that name the first difference.
pub(crate) fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Row lengths to try for `fmt`: partial groups for the 32-element formats.
pub(super) fn col_choices(fmt: QFormat) -> &'static [usize] {
    if fmt.ty().block_size() == 32 {
        &[32, 96, 224, 256, 288, 576, 800]
    } else {
        &[256, 768]
    }
}

/// Random weights of `fmt` quantized with ggml's reference quantizer: `(bytes, row_bytes)`.
pub(super) fn weights(
    rng: &mut StdRng,
    fmt: QFormat,
    rows: usize,
    cols: usize,
) -> (Vec<u8>, usize) {
    // Scales vary per row so blocks see different magnitudes.
    let mut w = Vec::with_capacity(rows * cols);
    for _ in 0..rows {
        let scale = 10f32.powf(rng.gen_range(-2.0..1.0));
        w.extend((0..cols).map(|_| rng.gen_range(-1.0f32..1.0) * scale));
    }
    let bytes = quantize(fmt.ty(), &w).unwrap();
    let rb = bytes.len() / rows;
    (bytes, rb)
}

pub(super) fn decoded(
    k: &Kernels,
    fmt: QFormat,
    w: &[u8],
    rb: usize,
    rows: usize,
    cols: usize,
) -> Panel {
    let mut p = Panel::default();
    // Fill first with garbage so stale values would show.
    p.reset(fmt, rows, cols);
    p.codes.fill(1234);
    p.ws.fill(f32::NAN);
    p.minv.fill(f32::NAN);
    k.decode(fmt, w, rb, &mut p);
    p
}

/// The decoded codes and scales give back ggml's dequantized values exactly.
#[test]
fn scalar_decode_reconstructs_dequantize() {
    let mut rng = StdRng::seed_from_u64(1);
    for fmt in FORMATS {
        for &cols in col_choices(fmt) {
            let rows = 3;
            let (w, rb) = weights(&mut rng, fmt, rows, cols);
            let want = dequantize(fmt.ty(), &w, rows * cols).unwrap();
            let p = decoded(scalar(), fmt, &w, rb, rows, cols);
            let (ng, npg) = (p.ng, fmt.min_kind().per_group());
            for r in 0..rows {
                for i in 0..cols {
                    let b = i / QB;
                    let mut v = p.ws[r * ng * GROUP + b] * p.codes[r * cols + i] as f32;
                    let mv = &p.minv[r * ng * npg..];
                    match fmt.min_kind() {
                        MinKind::None => {}
                        MinKind::Per32 => v += mv[b],
                        MinKind::Per16 => v += mv[(b / GROUP) * 16 + (b % GROUP) * 2 + i % 32 / 16],
                    }
                    // Values, not bits: the reference may give -0 where we give +0.
                    assert_eq!(
                        v,
                        want[r * cols + i],
                        "{fmt:?} cols={cols} r={r} i={i}: {v} vs {}",
                        want[r * cols + i]
                    );
                }
            }
        }
    }
}

#[test]
fn simd_decode_matches_scalar() {
    let mut rng = StdRng::seed_from_u64(2);
    for k in tables().skip(1) {
        for fmt in FORMATS {
            for &cols in col_choices(fmt) {
                let rows = 5;
                let (w, rb) = weights(&mut rng, fmt, rows, cols);
                let a = decoded(scalar(), fmt, &w, rb, rows, cols);
                let b = decoded(k, fmt, &w, rb, rows, cols);
                assert_eq!(a.codes, b.codes, "{} {fmt:?} cols={cols}: codes", k.name());
                assert_eq!(
                    bits(&a.ws),
                    bits(&b.ws),
                    "{} {fmt:?} cols={cols}: ws",
                    k.name()
                );
                assert_eq!(
                    bits(&a.minv),
                    bits(&b.minv),
                    "{} {fmt:?} cols={cols}: minv",
                    k.name()
                );
            }
        }
    }
}

/// Every tile shape of every SIMD table gives the scalar bits, for every token window.
#[test]
fn simd_gemm_matches_scalar_on_every_tile_shape() {
    let mut rng = StdRng::seed_from_u64(3);
    for k in tables().skip(1) {
        for fmt in FORMATS {
            let cols = col_choices(fmt)[1];
            // Several row tiles of every product and a ragged tail.
            let rows = 37;
            let (w, rb) = weights(&mut rng, fmt, rows, cols);
            let p = decoded(scalar(), fmt, &w, rb, rows, cols);
            let n = 11;
            let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
            let mut acts = QuantActs::new();
            scalar().quantize_acts(&x, cols, &mut acts);
            // The table's own quantizer: it may add a layout its gemm reads.
            let mut acts_k = QuantActs::new();
            k.quantize_acts(&x, cols, &mut acts_k);
            for (t0, nt) in [
                (0, 1),
                (3, 1),
                (0, 2),
                (1, 3),
                (2, 4),
                (0, 5),
                (1, 7),
                (0, 11),
            ] {
                let mut want = vec![0f32; nt * rows];
                let mut got = vec![0f32; nt * rows];
                for (kk, a, o) in [(scalar(), &acts, &mut want), (k, &acts_k, &mut got)] {
                    let out = Out {
                        ptr: o.as_mut_ptr(),
                        ldo: rows,
                    };
                    // SAFETY: out holds nt * rows values.
                    unsafe { kk.gemm(&p, a, t0, nt, out) };
                }
                assert_eq!(
                    bits(&want),
                    bits(&got),
                    "{} {fmt:?} t0={t0} nt={nt}",
                    k.name()
                );
                assert!(want.iter().all(|v| v.is_finite() && *v != 0.0));
            }
        }
    }
}

#[test]
fn quantized_activations_are_close_and_identical_across_tables() {
    let mut rng = StdRng::seed_from_u64(4);
    let cols = 96;
    let mut x: Vec<f32> = (0..4 * cols).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
    // Block 1: all zero; block 2: one huge value; token 1 block 0: tiny values;
    // token 2: exact ties at the rounding point (amax 32767 makes id = 1).
    x[32..64].fill(0.0);
    x[64] = 3e38;
    x[cols..cols + 32].iter_mut().for_each(|v| *v *= 1e-31);
    for (i, v) in x[2 * cols..2 * cols + 32].iter_mut().enumerate() {
        *v = if i == 0 { 32767.0 } else { i as f32 + 0.5 };
    }
    let mut want = QuantActs::new();
    scalar().quantize_acts(&x, cols, &mut want);
    assert_eq!(want.d(0)[1], 0.0);
    assert_eq!(want.q(1)[..32], [0; 32]);
    assert_eq!(want.q(2)[1..4], [2, 2, 4], "ties round to even");
    // Reconstruction error per element is at most half a step.
    for t in 0..4 {
        for i in 0..cols {
            let d = want.d(t)[i / QB];
            let err = (d * want.q(t)[i] as f32 - x[t * cols + i]).abs();
            assert!(
                err <= 0.5 * d * 1.0001 + 1e-30,
                "t={t} i={i}: {err} vs d={d}"
            );
        }
    }
    for k in tables().skip(1) {
        let mut got = QuantActs::new();
        k.quantize_acts(&x, cols, &mut got);
        assert_eq!(want.q, got.q, "{}", k.name());
        assert_eq!(bits(&want.d), bits(&got.d), "{}", k.name());
        assert_eq!(bits(&want.s), bits(&got.s), "{}", k.name());
        assert_eq!(bits(&want.s16), bits(&got.s16), "{}", k.name());
    }
}

/// Every table's softmax gives the bits of `ops::softmax_scaled`, whatever the length.
#[test]
fn softmax_matches_the_specification() {
    let mut rng = StdRng::seed_from_u64(6);
    for n in (1..40).chain([255, 256, 513]) {
        let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-150.0f32..30.0)).collect();
        for scale in [1.0, 0.125] {
            let mut want = x.clone();
            crate::ops::softmax_scaled(&mut want, scale);
            for k in tables() {
                let mut got = x.clone();
                k.softmax(&mut got, scale);
                assert_eq!(bits(&got), bits(&want), "{} n={n} scale={scale}", k.name());
            }
        }
    }
}

/// Every table's gated activations give the bits of `ops::Glu::apply_plain` (compiled
/// for the baseline instruction set), for every activation, over both signs, the far
/// tails and the non-finite values, whatever the length. A NaN stays a NaN; which of
/// two NaN operands an instruction passes on (and so a NaN's sign) is not specified by
/// IEEE 754, and the vectorized loops may order a product's operands otherwise.
#[test]
fn glu_matches_the_specification() {
    let bits = |v: &[f32]| -> Vec<u32> {
        v.iter()
            .map(|x| {
                if x.is_nan() {
                    f32::NAN.to_bits()
                } else {
                    x.to_bits()
                }
            })
            .collect()
    };
    use crate::ops::Glu;
    let mut rng = StdRng::seed_from_u64(7);
    let odd = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -100.0,
        100.0,
        0.0,
        -0.0,
    ];
    for n in (1..40).chain([255, 256, 4864]) {
        let gate: Vec<f32> = (0..n)
            .map(|i| match i % 11 {
                0 => odd[(i / 11) % odd.len()],
                _ => rng.gen_range(-30.0f32..30.0),
            })
            .collect();
        let up: Vec<f32> = (0..n).map(|_| rng.gen_range(-10.0f32..10.0)).collect();
        for act in [Glu::Silu, Glu::GeluTanh, Glu::SwigluOai] {
            let mut want = gate.clone();
            act.apply_plain(&mut want, &up);
            for k in tables() {
                let mut got = gate.clone();
                k.glu(act, &mut got, &up);
                assert_eq!(bits(&got), bits(&want), "{} {act:?} n={n}", k.name());
            }
        }
    }
}

/// Many tokens (quantized by all the threads) give each token's bits alone.
#[test]
fn parallel_quantization_equals_each_token_alone() {
    let mut rng = StdRng::seed_from_u64(5);
    let (cols, n) = (160, 2 * super::PARALLEL_QUANTIZE_MIN + 3);
    let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
    for k in tables() {
        let mut all = QuantActs::new();
        k.quantize_acts(&x, cols, &mut all);
        for t in 0..n {
            let mut one = QuantActs::new();
            k.quantize_acts(&x[t * cols..(t + 1) * cols], cols, &mut one);
            assert_eq!(all.q(t), one.q(0), "{} t={t}", k.name());
            assert_eq!(bits(all.d(t)), bits(one.d(0)), "{} t={t}", k.name());
            assert_eq!(bits(all.s(t)), bits(one.s(0)), "{} t={t}", k.name());
            let h = 2 * all.nbp();
            assert_eq!(
                bits(&all.s16[t * h..(t + 1) * h]),
                bits(&one.s16[..h]),
                "{} t={t}",
                k.name()
            );
        }
    }
}

#[test]
fn non_finite_activations_mark_their_block() {
    let cols = 64;
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = vec![0.5f32; cols];
        x[40] = bad;
        for k in tables() {
            let mut a = QuantActs::new();
            k.quantize_acts(&x, cols, &mut a);
            assert_eq!(a.d(0)[0], 0.5 / 32767.0, "{}", k.name());
            assert!(
                a.d(0)[1].is_nan() && a.s(0)[1].is_nan(),
                "{} {bad}",
                k.name()
            );
            assert_eq!(a.q(0)[32..], [0; 32]);
        }
    }
}

/// The grouped attention ops give the bits of one `dot` per score and of one `axpy` per
/// position onto zeros, on every table.
#[test]
fn grouped_attention_ops_equal_dot_and_axpy() {
    let mut rng = StdRng::seed_from_u64(5);
    for k in tables() {
        for (g, hd, np) in [
            (1, 64, 1),
            (3, 64, 9),
            (7, 64, 20),
            (2, 128, 11),
            (5, 128, 17),
            (3, 64, 48),
            (3, 96, 8),
            (4, 256, 19),
            (2, 192, 9),
            (3, 72, 5),
            (2, 5, 3),
            (2, 40, 4),
        ] {
            let q: Vec<f32> = (0..g * hd).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            // Rows at scattered offsets of one buffer, as K/V rows in paged blocks.
            let base: Vec<f32> = (0..(np + 3) * hd + 7)
                .map(|_| rng.gen_range(-1.0f32..1.0))
                .collect();
            let rows: Vec<usize> = (0..np)
                .map(|p| ((p * 5 + 2) % (np + 3)) * hd + p % 7)
                .collect();
            let mut scores = vec![0f32; g * np];
            k.scores(&q, hd, &base, &rows, &mut scores);
            let coef: Vec<f32> = (0..g * np).map(|_| rng.gen_range(0.0f32..1.0)).collect();
            let mut mixed = vec![f32::NAN; g * hd];
            k.mix(&coef, &base, &rows, &mut mixed);
            for h in 0..g {
                let mut want_mix = vec![0f32; hd];
                for (p, &r) in rows.iter().enumerate() {
                    let want = k.dot(&q[h * hd..(h + 1) * hd], &base[r..r + hd]);
                    let got = scores[h * np + p];
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{} scores h={h} p={p}",
                        k.name()
                    );
                    assert_ne!(got, 0.0);
                    k.axpy(coef[h * np + p], &base[r..r + hd], &mut want_mix);
                }
                assert_eq!(
                    mixed[h * hd..(h + 1) * hd],
                    want_mix[..],
                    "{} mix h={h}",
                    k.name()
                );
            }
        }
    }
}

/// Attention over K/V rows stored as each `KvType`, decoded in registers, gives on every
/// table the bits of the scalar twin and of attention over the decoded f32 rows (the
/// specification).
#[test]
fn stored_kv_attention_matches_decoded_rows() {
    let mut rng = StdRng::seed_from_u64(7);
    for ty in KvType::ALL {
        for (g, hd, np) in [
            (1, 64, 1),
            (3, 64, 9),
            (7, 64, 20),
            (2, 128, 11),
            (5, 128, 17),
            (3, 96, 8),
            (4, 256, 19),
            (2, 32, 5),
            (3, 72, 5),
            (2, 5, 3),
            (2, 40, 4),
        ] {
            if ty.check_head_dim(hd).is_err() {
                continue;
            }
            let q: Vec<f32> = (0..g * hd).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            // Rows at scattered offsets of one buffer, as K/V rows in paged blocks.
            let n = ((np + 3) * hd + 7).div_ceil(ty.block()) * ty.block();
            let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let mut stored = vec![0u8; ty.bytes(n)];
            ty.encode(&x, &mut stored);
            let mut decoded = vec![0f32; n];
            ty.decode(&stored, &mut decoded);
            let jitter = if ty.block() == 1 { 7 } else { 1 };
            let rows: Vec<usize> = (0..np)
                .map(|p| ((p * 5 + 2) % (np + 3)) * hd + p % jitter)
                .collect();
            let coef: Vec<f32> = (0..g * np).map(|_| rng.gen_range(0.0f32..1.0)).collect();
            let mut want_s = vec![0f32; g * np];
            scalar().scores(&q, hd, &decoded, &rows, &mut want_s);
            let mut want_m = vec![0f32; g * hd];
            scalar().mix(&coef, &decoded, &rows, &mut want_m);
            assert!(want_s.iter().all(|&s| s != 0.0));
            for k in tables() {
                let what = format!("{} {ty} g={g} hd={hd} np={np}", k.name());
                let mut s = vec![f32::NAN; g * np];
                k.scores_kv(ty, &q, hd, &stored, &rows, &mut s);
                assert_eq!(bits(&s), bits(&want_s), "{what}: scores");
                let mut m = vec![f32::NAN; g * hd];
                k.mix_kv(ty, &coef, &stored, &rows, &mut m);
                assert_eq!(bits(&m), bits(&want_m), "{what}: mix");
            }
        }
    }
}

/// Tables that decode a few tokens' weights in registers give the scalar bits too.
#[test]
fn direct_products_match_scalar() {
    let mut rng = StdRng::seed_from_u64(6);
    for k in tables().filter(|k| k.direct_max() > 0) {
        for fmt in FORMATS {
            for &cols in col_choices(fmt) {
                let rows = 37;
                let (w, rb) = weights(&mut rng, fmt, rows, cols);
                let p = decoded(scalar(), fmt, &w, rb, rows, cols);
                let n = k.direct_max() + 2;
                let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
                let (mut want_a, mut got_a) = (QuantActs::new(), QuantActs::new());
                scalar().quantize_acts(&x, cols, &mut want_a);
                k.quantize_acts(&x, cols, &mut got_a);
                for (t0, nt) in [
                    (0, 1),
                    (0, 2),
                    (1, 2),
                    (0, 3),
                    (2, k.direct_max()),
                    (0, k.direct_max()),
                ] {
                    let mut want = vec![0f32; nt * rows];
                    let mut got = vec![0f32; nt * rows];
                    // SAFETY: each output holds nt * rows values.
                    unsafe {
                        let o = |v: &mut Vec<f32>| Out {
                            ptr: v.as_mut_ptr(),
                            ldo: rows,
                        };
                        scalar().gemm(&p, &want_a, t0, nt, o(&mut want));
                        k.direct(fmt, &w, rb, &got_a, t0, nt, o(&mut got));
                    }
                    assert_eq!(
                        bits(&want),
                        bits(&got),
                        "{} {fmt:?} cols={cols} t0={t0} nt={nt}",
                        k.name()
                    );
                    assert!(want.iter().all(|v| v.is_finite() && *v != 0.0));
                }
            }
        }
    }
}

/// Tables that multiply one token straight from the weight bytes give the scalar bits,
/// for row counts around every tile size.
#[test]
fn one_token_products_match_scalar() {
    let mut rng = StdRng::seed_from_u64(8);
    for k in tables().filter(|k| k.has_gemv()) {
        for fmt in FORMATS {
            for &cols in col_choices(fmt) {
                for rows in [1, 5, 16, 37] {
                    let (w, rb) = weights(&mut rng, fmt, rows, cols);
                    let p = decoded(scalar(), fmt, &w, rb, rows, cols);
                    let x: Vec<f32> = (0..2 * cols).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
                    let (mut want_a, mut got_a) = (QuantActs::new(), QuantActs::new());
                    scalar().quantize_acts(&x, cols, &mut want_a);
                    k.quantize_acts(&x, cols, &mut got_a);
                    for t in 0..2 {
                        let mut want = vec![0f32; rows];
                        let mut got = vec![0f32; rows];
                        // SAFETY: each output holds `rows` values.
                        unsafe {
                            let o = |v: &mut Vec<f32>| Out {
                                ptr: v.as_mut_ptr(),
                                ldo: rows,
                            };
                            scalar().gemm(&p, &want_a, t, 1, o(&mut want));
                            k.gemv(fmt, &w, rb, &got_a, t, o(&mut got));
                        }
                        assert_eq!(
                            bits(&want),
                            bits(&got),
                            "{} {fmt:?} cols={cols} rows={rows} t={t}",
                            k.name()
                        );
                    }
                }
            }
        }
    }
}

/// Q6_K's largest codes (±4096) times the largest activations stay exact: no integer
/// sum of the specification wraps 32 bits.
#[test]
fn q6k_extreme_block_sums_are_exact() {
    let cols = 256;
    // Every 6-bit value 0 (code -32) and every sub-block scale -128: codes of +4096.
    let mut block = vec![0u8; 210];
    for s in &mut block[192..208] {
        *s = 0x80;
    }
    block[208..210].copy_from_slice(&0x3c00u16.to_le_bytes()); // d = 1.0
    let p = decoded(scalar(), QFormat::Q6K, &block, 210, 1, cols);
    assert!(p.codes.iter().all(|&c| c == 4096));
    let x = vec![1.0f32; cols];
    let mut acts = QuantActs::new();
    scalar().quantize_acts(&x, cols, &mut acts);
    let mut got = [0f32];
    let out = Out {
        ptr: got.as_mut_ptr(),
        ldo: 1,
    };
    // SAFETY: out holds one value.
    unsafe { scalar().gemm(&p, &acts, 0, 1, out) };
    // Only the activation scale 1/32767 is rounded; a wrapped sum would be far off.
    let want = 4096.0 * 256.0;
    assert!((got[0] - want).abs() < want * 1e-5, "{} vs {want}", got[0]);
}

/// Random float weights `[nr, cols]` stored as `ty` (in -2..2) and `nt` tokens of
/// activations (in -3..3).
fn float_case(
    rng: &mut StdRng,
    ty: tuili_gguf::GgmlType,
    nr: usize,
    cols: usize,
    nt: usize,
) -> (Vec<u8>, Vec<f32>) {
    let wf: Vec<f32> = (0..nr * cols)
        .map(|_| rng.gen_range(-2.0f32..2.0))
        .collect();
    let x = (0..nt * cols)
        .map(|_| rng.gen_range(-3.0f32..3.0))
        .collect();
    (quantize(ty, &wf).unwrap(), x)
}

/// Float weights: every table gives the scalar bits for every row count up to two
/// tiles and more, token counts past two tiles, and ragged row lengths; outputs land at
/// `t * ldo + r` and nowhere else.
#[test]
fn float_products_match_scalar() {
    let mut rng = StdRng::seed_from_u64(7);
    for f in [FFormat::F32, FFormat::F16, FFormat::BF16] {
        let ty = match f {
            FFormat::F32 => tuili_gguf::GgmlType::F32,
            FFormat::F16 => tuili_gguf::GgmlType::F16,
            FFormat::BF16 => tuili_gguf::GgmlType::BF16,
        };
        for cols in [1, 7, 8, 15, 33, 96] {
            for nr in (1..=11).chain([17, 32]) {
                let nt = 15;
                let (w, x) = float_case(&mut rng, ty, nr, cols, nt);
                let ldo = nr + 3;
                let run = |k: &Kernels, n: usize| {
                    let mut o = vec![f32::NAN; n * ldo];
                    // SAFETY: `o` holds `n` rows of `ldo >= nr` values.
                    unsafe {
                        let out = Out {
                            ptr: o.as_mut_ptr(),
                            ldo,
                        };
                        k.float_gemm(f, &w, nr, cols, &x[..n * cols], n, out);
                    }
                    bits(&o)
                };
                for n in 1..=nt {
                    let want = run(scalar(), n);
                    for t in 0..n {
                        assert!(want[t * ldo + nr..(t + 1) * ldo]
                            .iter()
                            .all(|&b| f32::from_bits(b).is_nan()));
                    }
                    for k in tables().skip(1) {
                        assert_eq!(want, run(k, n), "{} {f:?} {nr}x{cols} n={n}", k.name());
                    }
                }
            }
        }
    }
}

/// BF16 weights under the bf16-pair specification (`bf16dot`): every table that runs
/// them so gives its scalar twin's bits for ragged rows, row counts past two tiles and
/// token counts past two tiles, and writes `t * ldo + r` and nothing else. An Intel CPU
/// with AVX-512 BF16 (where `vdpbf16ps` was found to compute the specification) must
/// have such a table: a kernel that fails the table's own check leaves it out.
#[test]
fn bf16_pair_products_match_the_specification() {
    let mut rng = StdRng::seed_from_u64(17);
    let pairs: Vec<&Kernels> = tables().filter(|k| k.bf16_pairs()).collect();
    #[cfg(target_arch = "x86_64")]
    if pairs.is_empty()
        && std::is_x86_feature_detected!("avx512bf16")
        && avx512::kernels().is_some()
    {
        // SAFETY: every x86-64 CPU has `cpuid`.
        #[allow(unused_unsafe)]
        let id = unsafe { std::arch::x86_64::__cpuid(0) };
        let vendor: Vec<u8> = [id.ebx, id.edx, id.ecx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        let note = "this CPU's vdpbf16ps (or the kernel) differs from the bf16-pair specification";
        assert!(vendor != b"GenuineIntel", "{note}");
        eprintln!("{note}: no table runs it");
    }
    for cols in [1, 31, 32, 45, 96, 576] {
        for nr in (1..=9).chain([17, 33]) {
            let nt = 13;
            let (w, x) = float_case(&mut rng, tuili_gguf::GgmlType::BF16, nr, cols, nt);
            let ldo = nr + 3;
            let run = |k: &Kernels, n: usize| {
                let mut o = vec![f32::NAN; n * ldo];
                let mut acts = QuantActs::new();
                k.prepare_bf16(&x[..n * cols], cols, &mut acts);
                // SAFETY: `o` holds `n` rows of `ldo >= nr` values.
                let ran = unsafe {
                    let out = Out {
                        ptr: o.as_mut_ptr(),
                        ldo,
                    };
                    k.bf16_gemm(&w, nr, cols, &acts, out)
                };
                assert!(ran, "{}", k.name());
                bits(&o)
            };
            for n in 1..=nt {
                for k in &pairs {
                    let want = run(scalar_twin(k), n);
                    for t in 0..n {
                        let row = &want[t * ldo..(t + 1) * ldo];
                        assert!(row[..nr].iter().all(|&b| f32::from_bits(b).is_finite()));
                        assert!(row[nr..].iter().all(|&b| f32::from_bits(b).is_nan()));
                    }
                    assert_eq!(want, run(k, n), "{} {nr}x{cols} n={n}", k.name());
                }
            }
        }
    }
}

/// Attention's row checks refuse, by name, a row past the stored values (the last one, or
/// one in the middle) and a `q8_0` row off its blocks, and let the rows that fit through.
#[test]
fn attention_rows_outside_the_cache_or_off_their_blocks_are_refused() {
    let k = select();
    let run = |ty: KvType, rows: Vec<usize>| {
        let (hd, stored) = (32, 4 * 32);
        let base = vec![0u8; ty.bytes(stored)];
        std::panic::catch_unwind(move || {
            let q = vec![0.5f32; hd];
            let mut out = vec![0f32; rows.len()];
            k.scores_kv(ty, &q, hd, &base, &rows, &mut out);
        })
        .map_err(|e| e.downcast_ref::<String>().cloned().unwrap_or_default())
    };
    assert!(run(KvType::F16, vec![0, 96, 32]).is_ok());
    assert!(run(KvType::Q8_0, vec![64, 0, 96]).is_ok());
    assert!(run(KvType::F16, vec![]).is_ok());
    for rows in [vec![0, 97, 32], vec![128], vec![usize::MAX - 8, 0]] {
        let e = run(KvType::F16, rows.clone()).expect_err("refused");
        assert!(
            e.contains("a row lies outside the 128 values"),
            "{rows:?}: {e}"
        );
    }
    let e = run(KvType::Q8_0, vec![0, 48]).expect_err("refused");
    assert!(e.contains("rows must start and end on blocks of 32"), "{e}");
}
