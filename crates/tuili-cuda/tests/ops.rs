//! Every op on every compiled backend against the CPU's scalar reference.
//!
//! One test body per op; `backends()` gives the CPU's fast kernels always and the GPU
//! when this build has the CUDA backend and the machine has a device (otherwise it
//! prints "skipped: no CUDA device (...)" and the body runs on the CPU alone). Inputs are
//! fresh random data on every run (the seed is printed; `TUILI_TEST_SEED` replays it); outputs are
//! compared by relative error ‖out − ref‖ / ‖ref‖, and a reference of all zeros fails.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tuili_backend::matmul::{matmul, Weight};
use tuili_backend::ops::{rms_norm, rope, rope_inv_freq, silu_mul, RopeMode};
use tuili_backend::quant::{dequantize, quantize};
use tuili_cuda::{AttentionCase, CudaError, CudaModel, CudaOps, KvLayout};
use tuili_gguf::{GgmlType, GgufFile};
use tuili_models::synthetic::{write_synthetic, SyntheticSpec, WEIGHT_TYPES};
use tuili_models::{Arch, Model};

/// What a backend runs; each returns the op's output on the host.
trait Backend {
    fn name(&self) -> String;
    fn matmul(&self, w: &Weight, x: &[f32], n: usize) -> Vec<f32>;
    fn embedding(&self, w: &Weight, ids: &[u32]) -> Vec<f32>;
    fn rms_norm(&self, x: &[f32], w: &[f32], eps: f32) -> Vec<f32>;
    fn rope(&self, x: &[f32], hd: usize, f: &[f32], pos: &[usize], mode: RopeMode) -> Vec<f32>;
    fn silu_mul(&self, g: &[f32], u: &[f32]) -> Vec<f32>;
    fn add(&self, x: &[f32], y: &[f32]) -> Vec<f32>;
    /// `None`: the backend has no stand-alone attention op (the CPU's lives in the model).
    fn attention(&self, c: &AttentionCase) -> Option<Vec<f32>>;
}

struct Cpu;

impl Backend for Cpu {
    fn name(&self) -> String {
        "cpu".into()
    }
    fn matmul(&self, w: &Weight, x: &[f32], n: usize) -> Vec<f32> {
        let mut y = vec![f32::NAN; n * w.rows()];
        matmul(w, x, n, &mut y);
        y
    }
    fn embedding(&self, w: &Weight, ids: &[u32]) -> Vec<f32> {
        let mut out = vec![f32::NAN; ids.len() * w.cols()];
        for (row, &id) in out.chunks_exact_mut(w.cols()).zip(ids) {
            w.dequant_row(id as usize, row);
        }
        out
    }
    fn rms_norm(&self, x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
        let mut out = vec![f32::NAN; x.len()];
        for (xr, or) in x.chunks_exact(w.len()).zip(out.chunks_exact_mut(w.len())) {
            rms_norm(xr, w, eps, or);
        }
        out
    }
    fn rope(&self, x: &[f32], hd: usize, f: &[f32], pos: &[usize], mode: RopeMode) -> Vec<f32> {
        let mut out = x.to_vec();
        let per_token = x.len() / pos.len();
        for (t, &p) in out.chunks_exact_mut(per_token).zip(pos) {
            rope(t, hd, f, p, mode);
        }
        out
    }
    fn silu_mul(&self, g: &[f32], u: &[f32]) -> Vec<f32> {
        let mut out = g.to_vec();
        silu_mul(&mut out, u);
        out
    }
    fn add(&self, x: &[f32], y: &[f32]) -> Vec<f32> {
        let mut out = x.to_vec();
        tuili_backend::ops::add(&mut out, y);
        out
    }
    fn attention(&self, _c: &AttentionCase) -> Option<Vec<f32>> {
        None
    }
}

struct Gpu(CudaOps);

impl Backend for Gpu {
    fn name(&self) -> String {
        format!("cuda:0 ({})", self.0.device().name)
    }
    fn matmul(&self, w: &Weight, x: &[f32], n: usize) -> Vec<f32> {
        self.0.matmul(w, x, n).expect("cuda matmul")
    }
    fn embedding(&self, w: &Weight, ids: &[u32]) -> Vec<f32> {
        self.0.embedding(w, ids).expect("cuda embedding")
    }
    fn rms_norm(&self, x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
        self.0.rms_norm(x, w, eps).expect("cuda rms_norm")
    }
    fn rope(&self, x: &[f32], hd: usize, f: &[f32], pos: &[usize], mode: RopeMode) -> Vec<f32> {
        self.0.rope(x, hd, f, pos, mode).expect("cuda rope")
    }
    fn silu_mul(&self, g: &[f32], u: &[f32]) -> Vec<f32> {
        self.0.silu_mul(g, u).expect("cuda silu_mul")
    }
    fn add(&self, x: &[f32], y: &[f32]) -> Vec<f32> {
        self.0.add(x, y).expect("cuda add")
    }
    fn attention(&self, c: &AttentionCase) -> Option<Vec<f32>> {
        Some(self.0.attention(c).expect("cuda attention"))
    }
}

/// Prints why the GPU side of a test does not run; with `TUILI_REQUIRE_GPU` set (as
/// scripts/gpu-check.sh sets it on a GPU machine) a missing GPU fails the test instead.
fn skip_note(e: &CudaError) {
    let why = match e {
        CudaError::NoDevice(why) => why.clone(),
        other => other.to_string(),
    };
    if std::env::var_os("TUILI_REQUIRE_GPU").is_some() {
        panic!("TUILI_REQUIRE_GPU is set but the GPU cannot be used: {why}");
    }
    tuili_testkit::skip(&format!(
        "no CUDA device ({why}); the CUDA side of this test did not run"
    ));
}

/// The CPU, and the GPU where there is one.
fn backends() -> Vec<Box<dyn Backend>> {
    let mut b: Vec<Box<dyn Backend>> = vec![Box::new(Cpu)];
    match CudaOps::new(0) {
        Ok(ops) => b.push(Box::new(Gpu(ops))),
        Err(e) => skip_note(&e),
    }
    b
}

/// A fresh seed per run, printed so that a failure can be replayed with
/// `TUILI_TEST_SEED`.
fn rng(test: &str) -> (StdRng, u64) {
    let seed = std::env::var("TUILI_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: seed {seed}");
    (StdRng::seed_from_u64(seed), seed)
}

fn random(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

/// ‖out − ref‖ / ‖ref‖ in f64; panics on a zero reference or a non-finite output.
fn rel_err(out: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(out.len(), reference.len(), "output length");
    assert!(out.iter().all(|v| v.is_finite()), "non-finite output");
    let (mut num, mut den) = (0f64, 0f64);
    for (&o, &r) in out.iter().zip(reference) {
        num += (o as f64 - r) * (o as f64 - r);
        den += r * r;
    }
    assert!(
        den > 0.0,
        "the reference is all zeros: the test proves nothing"
    );
    (num / den).sqrt()
}

fn check(what: &str, backend: &dyn Backend, seed: u64, out: &[f32], reference: &[f64], tol: f64) {
    let e = rel_err(out, reference);
    assert!(
        e <= tol,
        "{what} on {}: relative error {e:.3e} > {tol:.0e} (seed {seed})",
        backend.name()
    );
}

#[test]
fn matmul_every_type_matches_the_scalar_reference() {
    let (mut r, seed) = rng("matmul");
    // 37 rows: not a multiple of any tile. 19 tokens: past the matrix-vector kernel.
    let (rows, cols) = (37, 512);
    let backends = backends();
    for ty in WEIGHT_TYPES {
        let data = random(&mut r, rows * cols, 1.0);
        let bytes = quantize(ty, &data).expect("quantize");
        let wf = dequantize(ty, &bytes, rows * cols).expect("dequantize");
        let w = Weight::from_vec(ty, rows, cols, bytes).expect("weight");
        for n in [1, 3, 8, 19] {
            let x = random(&mut r, n * cols, 1.0);
            // Reference: the scalar dequantization, then f64 dot products.
            let mut want = vec![0f64; n * rows];
            for t in 0..n {
                for o in 0..rows {
                    want[t * rows + o] = (0..cols)
                        .map(|c| wf[o * cols + c] as f64 * x[t * cols + c] as f64)
                        .sum();
                }
            }
            for b in &backends {
                let got = b.matmul(&w, &x, n);
                // The CPU's SIMD kernels round activations to 16-bit integers per block
                // (about 3e-5 relative), and to bf16 for BF16 weights where the CPU has
                // AVX-512 BF16 (`Kernels::bf16_pairs`: 8 significant bits); the GPU keeps
                // them f32.
                let bf16_pairs = ty == GgmlType::BF16
                    && b.name() == "cpu"
                    && tuili_backend::kernels::select().bf16_pairs();
                check(
                    &format!("matmul {ty} n={n}"),
                    b.as_ref(),
                    seed,
                    &got,
                    &want,
                    if bf16_pairs { 1.0 / 256.0 } else { 1e-4 },
                );
            }
        }
    }
}

#[test]
fn embedding_every_type_matches_the_scalar_reference() {
    let (mut r, seed) = rng("embedding");
    let (rows, cols) = (50, 256);
    let backends = backends();
    for ty in WEIGHT_TYPES {
        let bytes = quantize(ty, &random(&mut r, rows * cols, 2.0)).expect("quantize");
        let wf = dequantize(ty, &bytes, rows * cols).expect("dequantize");
        let w = Weight::from_vec(ty, rows, cols, bytes).expect("weight");
        let ids: Vec<u32> = (0..9).map(|_| r.gen_range(0..rows as u32)).collect();
        let want: Vec<f64> = ids
            .iter()
            .flat_map(|&id| wf[id as usize * cols..(id as usize + 1) * cols].iter())
            .map(|&v| v as f64)
            .collect();
        for b in &backends {
            let got = b.embedding(&w, &ids);
            // Dequantization is exact arithmetic on both sides, up to one rounding.
            check(
                &format!("embedding {ty}"),
                b.as_ref(),
                seed,
                &got,
                &want,
                1e-6,
            );
        }
    }
}

#[test]
fn rms_norm_matches_the_reference() {
    let (mut r, seed) = rng("rms_norm");
    let (n, dim) = (5, 896);
    let x = random(&mut r, n * dim, 3.0);
    let w = random(&mut r, dim, 1.0);
    let eps = 1e-6f32;
    let mut want = vec![0f64; n * dim];
    for t in 0..n {
        let row = &x[t * dim..(t + 1) * dim];
        let ms: f64 = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / dim as f64;
        let s = 1.0 / (ms + eps as f64).sqrt();
        for i in 0..dim {
            want[t * dim + i] = row[i] as f64 * s * w[i] as f64;
        }
    }
    for b in backends() {
        let got = b.rms_norm(&x, &w, eps);
        check("rms_norm", b.as_ref(), seed, &got, &want, 1e-6);
    }
}

#[test]
fn rope_both_layouts_match_the_reference() {
    let (mut r, seed) = rng("rope");
    let (heads, hd) = (3, 64);
    let inv = rope_inv_freq(hd, 10000.0);
    let pos: Vec<usize> = vec![0, 1, 17, 4095, 100_000];
    let x = random(&mut r, pos.len() * heads * hd, 1.0);
    for mode in [RopeMode::Normal, RopeMode::Neox] {
        let mut want: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        for (t, &p) in pos.iter().enumerate() {
            for h in 0..heads {
                let head = &mut want[(t * heads + h) * hd..(t * heads + h + 1) * hd];
                for (i, &f) in inv.iter().enumerate() {
                    let th = p as f64 * f as f64;
                    let (a, b) = match mode {
                        RopeMode::Normal => (2 * i, 2 * i + 1),
                        RopeMode::Neox => (i, i + hd / 2),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * th.cos() - x1 * th.sin();
                    head[b] = x0 * th.sin() + x1 * th.cos();
                }
            }
        }
        for b in backends() {
            let got = b.rope(&x, hd, &inv, &pos, mode);
            check(
                &format!("rope {mode:?}"),
                b.as_ref(),
                seed,
                &got,
                &want,
                1e-6,
            );
        }
    }
}

#[test]
fn silu_mul_and_add_match_the_reference() {
    let (mut r, seed) = rng("silu_mul/add");
    let g = random(&mut r, 4000, 6.0);
    let u = random(&mut r, 4000, 2.0);
    let silu: Vec<f64> = g
        .iter()
        .zip(&u)
        .map(|(&g, &u)| g as f64 / (1.0 + (-(g as f64)).exp()) * u as f64)
        .collect();
    let sum: Vec<f64> = g
        .iter()
        .zip(&u)
        .map(|(&a, &b)| a as f64 + b as f64)
        .collect();
    for b in backends() {
        check(
            "silu_mul",
            b.as_ref(),
            seed,
            &b.silu_mul(&g, &u),
            &silu,
            1e-6,
        );
        check("add", b.as_ref(), seed, &b.add(&g, &u), &sum, 1e-7);
    }
}

/// Softmax attention in f64: `q: [n, n_head, hd]` at positions `pos`, K/V `[n_pos, kv_dim]`.
fn attention_reference(c: &AttentionCase) -> Vec<f64> {
    let hd = c.head_dim;
    let kv_dim = c.n_kv_head * hd;
    let group = c.n_head / c.n_kv_head;
    let mut out = vec![0f64; c.q.len()];
    for (t, &p) in c.pos.iter().enumerate() {
        for h in 0..c.n_head {
            let q = &c.q[(t * c.n_head + h) * hd..(t * c.n_head + h + 1) * hd];
            let kvh = (h / group) * hd;
            let p0 = c.window.map_or(0, |w| (p + 1).saturating_sub(w));
            let scores: Vec<f64> = (p0..=p)
                .map(|j| {
                    let k = &c.k[j * kv_dim + kvh..j * kv_dim + kvh + hd];
                    q.iter()
                        .zip(k)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .map(|s| {
                    c.softcap
                        .map_or(s, |cap| cap as f64 * (s / cap as f64).tanh())
                })
                .collect();
            // A sink joins the maximum and the denominator, and attends to nothing.
            let sink = c.sinks.map(|s| s[h] as f64);
            let max = scores
                .iter()
                .copied()
                .chain(sink)
                .fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let z: f64 = e.iter().sum::<f64>() + sink.map_or(0.0, |s| (s - max).exp());
            let o = &mut out[(t * c.n_head + h) * hd..(t * c.n_head + h + 1) * hd];
            for (j, w) in (p0..).zip(&e) {
                let v = &c.v[j * kv_dim + kvh..j * kv_dim + kvh + hd];
                for (od, &vd) in o.iter_mut().zip(v) {
                    *od += w / z * vd as f64;
                }
            }
        }
    }
    out
}

#[test]
fn paged_attention_decode_and_prefill_match_the_reference() {
    let (mut r, seed) = rng("attention");
    let backends = backends();
    // (n_head, n_kv_head, head_dim, n_pos, query positions, block size, split length,
    // sliding window, sinks, soft-cap)
    type Case = (
        usize,
        usize,
        usize,
        usize,
        Vec<usize>,
        usize,
        usize,
        Option<usize>,
        bool,
        Option<f32>,
    );
    let cases: [Case; 10] = [
        // Decode: one token at the end of a long context, cut into many splits.
        (14, 2, 64, 1000, vec![999], 16, 64, None, false, None),
        // Prefill: every position of a short prompt, one split.
        (9, 3, 64, 40, (0..40).collect(), 16, 4096, None, false, None),
        // Prefill in several splits, a head size that is not a multiple of 32.
        (4, 4, 80, 70, (0..70).collect(), 7, 32, None, false, None),
        // A mixed batch: queries at scattered positions, head_dim 128.
        (
            8,
            2,
            128,
            300,
            vec![0, 5, 150, 299],
            64,
            100,
            None,
            false,
            None,
        ),
        // Sliding windows (Gemma 3's local layers): decode across splits, and a prefill.
        (4, 1, 256, 1000, vec![999], 16, 64, Some(512), false, None),
        (4, 2, 64, 70, (0..70).collect(), 8, 16, Some(9), false, None),
        // Sinks (gpt-oss): decode across splits, and a windowed prefill.
        (8, 1, 64, 500, vec![499], 16, 64, None, true, None),
        (4, 2, 64, 40, (0..40).collect(), 8, 16, Some(8), true, None),
        // Soft-capped scores (Gemma 2): decode across splits, and a windowed prefill.
        (8, 4, 128, 500, vec![499], 16, 64, None, false, Some(0.5)),
        (
            4,
            2,
            64,
            40,
            (0..40).collect(),
            8,
            16,
            Some(8),
            false,
            Some(0.3),
        ),
    ];
    let (n_cases, mut ran) = (cases.len(), 0);
    for (n_head, n_kv_head, head_dim, n_pos, pos, block_size, split_len, window, sinks, softcap) in
        cases
    {
        let kv_dim = n_kv_head * head_dim;
        let sinks = sinks.then(|| random(&mut r, n_head, 3.0));
        let q = random(&mut r, pos.len() * n_head * head_dim, 1.0);
        let k = random(&mut r, n_pos * kv_dim, 1.0);
        let v = random(&mut r, n_pos * kv_dim, 1.0);
        let case = AttentionCase {
            q: &q,
            k: &k,
            v: &v,
            pos: &pos,
            n_head,
            n_kv_head,
            head_dim,
            block_size,
            split_len,
            window,
            sinks: sinks.as_deref(),
            softcap,
        };
        let want = attention_reference(&case);
        for b in &backends {
            if let Some(got) = b.attention(&case) {
                check(
                    &format!(
                        "attention {n_head}/{n_kv_head}x{head_dim} n_pos={n_pos} {window:?} \
                         sinks {}",
                        case.sinks.is_some()
                    ),
                    b.as_ref(),
                    seed,
                    &got,
                    &want,
                    1e-5,
                );
                ran += 1;
            }
        }
    }
    // Only the GPU has a stand-alone paged-attention op (the CPU's is tested through the
    // model): without one this test compared nothing, and says so.
    if backends.len() > 1 {
        assert_eq!(ran, n_cases, "the GPU skipped an attention case");
    } else {
        assert_eq!(ran, 0);
        tuili_testkit::skip("no CUDA device: paged attention was compared on no backend");
    }
}

fn load(spec: &SyntheticSpec) -> Model {
    let bytes = write_synthetic(spec).expect("write model");
    let file = Arc::new(GgufFile::from_bytes(bytes).expect("read model"));
    Model::load(&file).expect("load model")
}

/// The whole forward pass on the GPU against the CPU's, on random models: a prompt in
/// one batch, then decode steps, then two sequences in one ragged batch.
#[test]
fn cuda_model_logits_match_the_cpu_model() {
    for (arch, ty) in [
        (Arch::Llama, GgmlType::Q4_1),
        (Arch::Qwen2, GgmlType::Q8_0),
        (Arch::Llama, GgmlType::Q4_K),
        (Arch::Qwen2, GgmlType::F16),
        (Arch::Qwen3, GgmlType::Q4_0),
        (Arch::Gemma3, GgmlType::Q8_0),
        (Arch::Qwen3Moe, GgmlType::Q4_K),
        (Arch::Smollm3, GgmlType::Q5_0),
        (Arch::Granite, GgmlType::Q8_0),
        (Arch::Olmo2, GgmlType::Q6_K),
        (Arch::Phi3, GgmlType::Q4_1),
        (Arch::Mistral3, GgmlType::Q8_0),
        (Arch::GptOss, GgmlType::MXFP4),
        (Arch::Deci, GgmlType::Q4_K),
    ] {
        let model = load(&SyntheticSpec::tiny(arch, ty));
        let kv = KvLayout::f32(32, 16);
        let mut gpu = match CudaModel::new(&model, 0, kv, &mut |_, _| {}) {
            Ok(g) => g,
            Err(e @ (CudaError::NoDevice(_) | CudaError::NotCompiled)) => {
                skip_note(&e);
                return;
            }
            Err(e) => panic!("CudaModel::new: {e}"),
        };
        let vocab = model.config().vocab;
        let prompt: Vec<u32> = (0..40).map(|i| (i * 37 + 5) % vocab as u32).collect();
        let mut cache = model.new_cache(kv.n_blocks * kv.block_size);
        let table: Vec<u32> = (0..kv.n_blocks as u32).rev().collect();
        let want = model.forward(&prompt, &mut cache, 0).expect("cpu");
        let chunk = tuili_models::SeqChunk {
            tokens: &prompt,
            start: 0,
            blocks: &table,
            local_blocks: &[],
            logits_from: 0,
        };
        let got = gpu.forward_batch(&[chunk]).expect("gpu prefill");
        let want64: Vec<f64> = want.iter().map(|&v| v as f64).collect();
        let e = rel_err(&got, &want64);
        assert!(e < 1e-4, "{arch:?} {ty}: prefill logits differ by {e:.3e}");
        for step in 0..5u32 {
            let tok = [(step * 101 + 7) % vocab as u32];
            let start = prompt.len() + step as usize;
            let want = model.forward(&tok, &mut cache, 0).expect("cpu");
            let chunk = tuili_models::SeqChunk {
                tokens: &tok,
                start,
                blocks: &table,
                local_blocks: &[],
                logits_from: 0,
            };
            let got = gpu.forward_batch(&[chunk]).expect("gpu decode");
            let want64: Vec<f64> = want.iter().map(|&v| v as f64).collect();
            let e = rel_err(&got, &want64);
            assert!(
                e < 1e-4,
                "{arch:?} {ty}: decode step {step} differs by {e:.3e}"
            );
        }
    }
}

/// A split pool on the GPU (gemma3's local layers in a region of their own, reused as a
/// ring, entries before each window `FREED_BLOCK`): the logits of the CPU's one region.
#[test]
fn cuda_split_pool_matches_the_cpu_model() {
    use tuili_models::synthetic::SYNTHETIC_WINDOW;
    use tuili_models::{local_blocks_needed, FREED_BLOCK};
    let model = load(&SyntheticSpec::tiny(Arch::Gemma3, GgmlType::Q8_0));
    let (bs, step) = (4, 7);
    let n_local = local_blocks_needed(SYNTHETIC_WINDOW, step, bs);
    let kv = KvLayout {
        n_local_blocks: n_local,
        ..KvLayout::f32(16, bs)
    };
    let mut gpu = match CudaModel::new(&model, 0, kv, &mut |_, _| {}) {
        Ok(g) => g,
        Err(e @ (CudaError::NoDevice(_) | CudaError::NotCompiled)) => {
            skip_note(&e);
            return;
        }
        Err(e) => panic!("CudaModel::new: {e}"),
    };
    let vocab = model.config().vocab;
    let prompt: Vec<u32> = (0..60).map(|i| (i * 37 + 5) % vocab as u32).collect();
    let mut cache = model.new_cache(64);
    let want = model.forward(&prompt, &mut cache, 0).expect("cpu");
    let table: Vec<u32> = (0..16).collect();
    let mut got = Vec::new();
    for start in (0..prompt.len()).step_by(step) {
        let end = (start + step).min(prompt.len());
        // The ring, with the entries before the first token's window released.
        let first = (start + 1).saturating_sub(SYNTHETIC_WINDOW) / bs;
        let local: Vec<u32> = (0..16)
            .map(|i| {
                if i < first {
                    FREED_BLOCK
                } else {
                    (i % n_local) as u32
                }
            })
            .collect();
        let chunk = tuili_models::SeqChunk {
            tokens: &prompt[start..end],
            start,
            blocks: &table,
            local_blocks: &local,
            logits_from: 0,
        };
        got.extend(gpu.forward_batch(&[chunk]).expect("gpu step"));
    }
    let want64: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    let e = rel_err(&got, &want64);
    assert!(e < 1e-4, "split pool: logits differ by {e:.3e}");
}
