//! Tests of the interleaved layout and its products: the layout holds the file's
//! bytes and ggml's values, and every table gives the block-sum specification's bits.

use super::blocksum::{file_block, file_row_times, Block, Scale};
use super::interleave::{has_min, is_k};
use super::tests::{bits, col_choices, tables, weights, FORMATS};
use super::*;
use crate::matmul::{matmul_with, Weight};
use crate::quant::dequantize;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The formats with the interleaved layout.
fn interleaved_formats() -> impl Iterator<Item = QFormat> {
    FORMATS.into_iter().filter(|&f| interleavable(f))
}

/// Packing a matrix larger than one release chunk hands back the file's bytes in order,
/// each byte once, and the layout still holds every row.
#[test]
fn packing_releases_the_file_chunk_by_chunk() {
    let mut rng = StdRng::seed_from_u64(11);
    let (fmt, cols) = (QFormat::Q8_0, 64);
    let rows = 2 * 1024 * IROWS + 21;
    let (w, rb) = weights(&mut rng, fmt, rows, cols);
    let seen = std::sync::Mutex::new(Vec::new());
    let packed = pack_releasing(fmt, &w, rows, cols, &|r| seen.lock().unwrap().push(r));
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.windows(2).all(|p| p[0].end == p[1].start) && seen[0].start == 0);
    assert_eq!(seen[2].end, w.len());
    let mut row = vec![0u8; rb];
    for r in [0, 1024 * IROWS - 1, 1024 * IROWS, rows - 1] {
        packed.file_row(r, &mut row);
        assert_eq!(row, &w[r * rb..(r + 1) * rb], "r={r}");
    }
}

/// The interleaved layout holds the file's bytes: every row comes back exactly, every
/// block gives the codes and scales of the file's own reading (`file_block`), and
/// those give back ggml's dequantized values exactly.
#[test]
fn interleaved_layout_round_trips() {
    let mut rng = StdRng::seed_from_u64(10);
    for fmt in interleaved_formats() {
        for &cols in col_choices(fmt) {
            let rows = 37;
            let (w, rb) = weights(&mut rng, fmt, rows, cols);
            let deq = dequantize(fmt.ty(), &w, rows * cols).unwrap();
            let packed = pack(fmt, &w, rows, cols);
            let mut row = vec![0u8; rb];
            for r in 0..rows {
                packed.file_row(r, &mut row);
                let file = &w[r * rb..(r + 1) * rb];
                assert_eq!(row, file, "{fmt:?} cols={cols} r={r}");
                for b in 0..cols / QB {
                    let blk = packed.block(r, b);
                    assert_eq!(blk, file_block(fmt, file, b), "{fmt:?} r={r} b={b}");
                    for i in 0..QB {
                        let want = deq[r * cols + QB * b + i];
                        assert_eq!(blk.value(i), want, "{fmt:?} r={r} b={b} i={i}");
                    }
                }
            }
        }
    }
}

/// Every table's interleaved products give the bits of the block-sum specification
/// (computed from the file's layout), for row counts around the 16-row groups, row
/// ranges that start inside the matrix, and token counts around the 4- and 8-token
/// tiles; rows outside the range are not written.
#[test]
fn interleaved_products_match_the_block_sum_specification() {
    let mut rng = StdRng::seed_from_u64(9);
    for k in tables() {
        for fmt in interleaved_formats() {
            for &cols in col_choices(fmt) {
                for rows in [1, 15, 16, 17, 37, 64] {
                    let (w, rb) = weights(&mut rng, fmt, rows, cols);
                    let packed = pack(fmt, &w, rows, cols);
                    for n in [1, 2, 7, 8, 9, 20, 33] {
                        let x: Vec<f32> =
                            (0..n * cols).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
                        let (mut want_a, mut got_a) = (QuantActs::new(), QuantActs::new());
                        scalar().quantize_acts(&x, cols, &mut want_a);
                        k.quantize_acts(&x, cols, &mut got_a);
                        let starts = [0, 16, 48].into_iter().filter(|&s| s < rows);
                        // Both tile shapes (`tune`): the same bits.
                        for (start, half) in starts.flat_map(|s| [(s, false), (s, true)]) {
                            let mut got = vec![f32::NAN; n * rows];
                            // SAFETY: `got` holds n * rows values.
                            unsafe {
                                let o = Out {
                                    ptr: got.as_mut_ptr().add(start),
                                    ldo: rows,
                                };
                                k.interleaved_tiled(&packed, start..rows, &got_a, n, o, half);
                            }
                            for t in 0..n {
                                for r in 0..rows {
                                    let g = got[t * rows + r];
                                    if r < start {
                                        assert!(g.is_nan(), "{} wrote row {r}", k.name());
                                        continue;
                                    }
                                    let want = file_row_times(fmt, &w, rb, r, &want_a, t);
                                    assert!(want.is_finite() && want != 0.0);
                                    assert_eq!(
                                        want.to_bits(),
                                        g.to_bits(),
                                        "{} {fmt:?} {rows}x{cols} n={n} start={start} half={half} t={t} r={r}: {want} vs {g}",
                                        k.name()
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The K-quants' extreme codes and scales times the largest activations: every
/// (half-)block sum of the specification stays exact on every table (Q6_K's codes of
/// -32 and 31 with scales of -128 and 127, Q4_K's and Q5_K's largest codes, scales
/// and minimums), checked against an f64 product within the activations' rounding.
#[test]
fn kquant_extreme_block_sums_are_exact() {
    let cols = 512;
    // Q6_K: super-block 0 all q = 0 (code -32) with scales -128; super-block 1 all
    // q = 63 (code 31) with scales 127; d = 1.
    let mut q6 = vec![0u8; 2 * 210];
    q6[192..208].fill(0x80);
    q6[210..338].fill(0xff);
    q6[338..402].fill(0xff);
    q6[402..418].fill(127);
    for sb in [0, 210] {
        q6[sb + 208..sb + 210].copy_from_slice(&0x3c00u16.to_le_bytes());
    }
    // Q4_K / Q5_K: every code, scale and minimum at its largest; d = dmin = 1.
    let k45 = |ts: usize| {
        let mut b = vec![0xffu8; 2 * ts];
        for sb in [0, ts] {
            b[sb..sb + 2].copy_from_slice(&0x3c00u16.to_le_bytes());
            b[sb + 2..sb + 4].copy_from_slice(&0x3c00u16.to_le_bytes());
        }
        b
    };
    let cases = [
        (QFormat::Q6K, q6),
        (QFormat::Q4K, k45(144)),
        (QFormat::Q5K, k45(176)),
    ];
    for (fmt, row) in cases {
        let deq = dequantize(fmt.ty(), &row, cols).unwrap();
        let packed = pack(fmt, &row, 1, cols);
        for sign in [1.0f32, -1.0] {
            let x = vec![sign; cols];
            let want: f64 = deq.iter().map(|&w| w as f64 * sign as f64).sum();
            let abs: f64 = deq.iter().map(|&w| (w as f64).abs()).sum();
            for k in tables() {
                let mut acts = QuantActs::new();
                k.quantize_acts(&x, cols, &mut acts);
                let mut got = [0f32];
                // SAFETY: `got` holds one value.
                unsafe {
                    let o = Out {
                        ptr: got.as_mut_ptr(),
                        ldo: 1,
                    };
                    k.interleaved(&packed, 0..1, &acts, 1, o);
                }
                // Only the activation scale 1/32767 and the float steps round; a
                // wrapped integer sum would be far off.
                assert!(
                    (got[0] as f64 - want).abs() <= abs * 1e-5,
                    "{} {fmt:?}: {} vs {want}",
                    k.name(),
                    got[0]
                );
                let spec = file_row_times(fmt, &row, row.len(), 0, &acts, 0);
                assert_eq!(got[0].to_bits(), spec.to_bits(), "{} {fmt:?}", k.name());
            }
        }
    }
}

/// The blocks of the K-quants of 16-element sub-blocks (Q6_K, Q3_K, Q2_K) have a
/// scale per half (and Q2_K a minimum per half), the others one per block.
#[test]
fn sixteen_element_sub_blocks_have_half_scales() {
    let mut rng = StdRng::seed_from_u64(11);
    for fmt in interleaved_formats() {
        let (w, _) = weights(&mut rng, fmt, 1, 256);
        let Block { ws, minv, .. } = file_block(fmt, &w, 3);
        let sixteen = matches!(fmt, QFormat::Q6K | QFormat::Q3K | QFormat::Q2K);
        assert_eq!(matches!(ws, Scale::Halves(_)), sixteen, "{fmt:?}");
        assert_eq!(
            matches!(minv, Some(Scale::Halves(_))),
            fmt == QFormat::Q2K,
            "{fmt:?}"
        );
    }
}

/// Through `matmul` (threads, chunks, every product shape) each table gives the
/// specification's bits for every token, whatever the batch: a batch of 20 tokens,
/// each token alone, and the batch cut in two.
#[test]
fn interleaved_matmul_is_batch_invariant_on_every_table() {
    let mut rng = StdRng::seed_from_u64(12);
    let (rows, cols, n) = (45, 512, 20);
    for fmt in interleaved_formats() {
        let (bytes, rb) = weights(&mut rng, fmt, rows, cols);
        let w = Weight::from_vec(fmt.ty(), rows, cols, bytes.clone()).unwrap();
        let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
        let mut want = vec![0f32; n * rows];
        for t in 0..n {
            let mut acts = QuantActs::new();
            scalar().quantize_acts(&x[t * cols..(t + 1) * cols], cols, &mut acts);
            for r in 0..rows {
                want[t * rows + r] = file_row_times(fmt, &bytes, rb, r, &acts, 0);
            }
        }
        for k in tables() {
            let mut all = vec![0f32; n * rows];
            matmul_with(k, &w, &x, n, &mut all);
            assert_eq!(bits(&all), bits(&want), "{} {fmt:?} batch", k.name());
            let mut parts = vec![0f32; n * rows];
            for (t0, t1) in [(0, 1), (1, 8), (8, 9), (9, 20)] {
                matmul_with(
                    k,
                    &w,
                    &x[t0 * cols..t1 * cols],
                    t1 - t0,
                    &mut parts[t0 * rows..t1 * rows],
                );
            }
            assert_eq!(bits(&parts), bits(&want), "{} {fmt:?} parts", k.name());
        }
    }
}

/// The products of `k` over all of `p`'s rows and `n` tokens: `[n, p.rows]`.
fn products(k: &Kernels, p: &Packed, acts: &QuantActs, n: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; n * p.rows];
    // SAFETY: `out` holds n * rows values.
    unsafe {
        let o = Out {
            ptr: out.as_mut_ptr(),
            ldo: p.rows,
        };
        k.interleaved_tiled(p, 0..p.rows, acts, n, o, false);
    }
    out
}

/// Activations at the ends of the int16 range and on the edges of the `sdot` tables'
/// byte split (`x = 256 hi + lo + 128`), codes at the ends of theirs (every byte pattern
/// is a legacy format's code): every table gives the scalar table's bits, for token
/// counts around the 4-token tiles and odd numbers of 16-row groups.
#[test]
fn interleaved_products_of_extreme_values_match_the_scalar_table() {
    let mut rng = StdRng::seed_from_u64(13);
    let edges = [
        -32767, 32767, -32640, -32639, 32639, 32640, -32512, -257, -256, -129, -128, -1, 0, 127,
        128, 255, 256,
    ];
    let code_bytes = [0x00, 0xff, 0x80, 0x7f, 0x0f, 0xf0];
    for fmt in interleaved_formats() {
        let cols = col_choices(fmt)[1];
        for rows in [16, 48, 80, 37] {
            let (mut w, rb) = weights(&mut rng, fmt, rows, cols);
            if !is_k(fmt) {
                let ts = fmt.ty().type_size();
                let codes_at = if has_min(fmt) { 4 } else { 2 };
                for blk in w.chunks_exact_mut(ts) {
                    for c in &mut blk[codes_at..] {
                        if rng.gen_bool(0.5) {
                            *c = code_bytes[rng.gen_range(0..code_bytes.len())];
                        }
                    }
                }
            }
            let packed = pack(fmt, &w, rows, cols);
            for n in [1, 3, 4, 5, 64] {
                // A block's first activation of ±32767 makes its scale 1: q = x.
                let x: Vec<i16> = (0..n * cols)
                    .map(|i| match i % QB {
                        0 => [-32767, 32767][rng.gen_range(0..2)],
                        _ if rng.gen_bool(0.5) => edges[rng.gen_range(0..edges.len())],
                        _ => rng.gen_range(-32767..=32767),
                    })
                    .collect();
                let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                let mut acts = QuantActs::new();
                scalar().quantize_acts(&xf, cols, &mut acts);
                assert!((0..n).all(|t| acts.q(t) == &x[t * cols..(t + 1) * cols]));
                let want = products(scalar(), &packed, &acts, n);
                for r in 0..rows {
                    assert!(want[r].is_finite(), "{fmt:?} r={r}");
                    let f = file_row_times(fmt, &w, rb, r, &acts, 0);
                    assert_eq!(f.to_bits(), want[r].to_bits(), "{fmt:?} r={r}");
                }
                for k in tables() {
                    let got = products(k, &packed, &acts, n);
                    let what = format!("{} {fmt:?} {rows}x{cols} n={n}", k.name());
                    assert_eq!(bits(&got), bits(&want), "{what}");
                }
            }
        }
    }
}

/// Where the CPU has the dot-product extension its table is the fastest, so the
/// tests that run every table (and `select`) run it; `scripts/test-aarch64.sh`, whose
/// emulated CPU has it, says so with `TUILI_TEST_DOTPROD=1`.
#[cfg(target_arch = "aarch64")]
#[test]
fn the_dotprod_table_runs_where_the_cpu_has_it() {
    let has = std::arch::is_aarch64_feature_detected!("dotprod");
    if std::env::var_os("TUILI_TEST_DOTPROD").is_some() {
        assert!(has, "TUILI_TEST_DOTPROD is set but the CPU lacks dotprod");
    }
    let names: Vec<&str> = available().iter().map(|k| k.name()).collect();
    let want: &[&str] = if has {
        &["scalar", "neon", "neon_dotprod"]
    } else {
        &["scalar", "neon"]
    };
    assert_eq!(names, want);
}
