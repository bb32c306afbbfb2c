//! The profile of the machine the planner runs on (`tuili plan --probe`): measured
//! bandwidth (the caller measures it the way `tuili bench --membw` does) and a matmul
//! per precision through the CPU backend's own kernels.

use std::time::Instant;

use tuili_backend::matmul::{matmul, Weight};
use tuili_backend::quant::quantize;
use tuili_gguf::GgmlType;
use tuili_models::synthetic::WEIGHT_TYPES;

use tuili_backend::ops::{
    gelu_tanh_mul, rms_norm, rope_angles, rope_inv_freq, rope_rotate, silu_mul, RopeMode,
};

use crate::chip::{ChipKind, ChipProfile, Compute, CpuThreads, Elementwise, Precision, Sourced};
use crate::PlanError;

/// Weight rows and columns of the probe's matmul: large enough to leave the caches
/// behind per call, small enough to run in tens of milliseconds.
const ROWS: usize = 2048;
const COLS: usize = 2048;
/// Tokens per product: enough that compute, not weight reads, bounds it.
const TOKENS: usize = 64;
/// Seconds spent per weight type: the best product of this long a run is taken, so a
/// machine shared with other work still shows its undisturbed rate.
const SECONDS: f64 = 1.5;
/// Turns each type takes.
const ROUNDS: usize = 10;

/// The weight type the CPU backend runs each precision with (`None`: no such type).
fn probe_type(p: Precision) -> Option<GgmlType> {
    match p {
        Precision::Fp32 => Some(GgmlType::F32),
        Precision::Bf16 => Some(GgmlType::BF16),
        Precision::Fp8 => None,
        Precision::Int8 => Some(GgmlType::Q8_0),
        Precision::Int4 => Some(GgmlType::Q4_0),
    }
}

/// FLOPs per second of the backend's matmul with weights of each type in `types`, on
/// the global thread pool: the best of repeated `[tokens, COLS] × [ROWS, COLS]ᵀ`
/// products. The types take turns in short rounds, so that other work on a shared
/// machine disturbs them all alike and each type's best comes from a quiet moment.
pub fn matmul_rates(types: &[GgmlType], tokens: usize) -> Result<Vec<f64>, PlanError> {
    // Deterministic, non-trivial weights (the rate does not depend on the values).
    let vals: Vec<f32> = (0..ROWS * COLS)
        .map(|i| ((i * 7919 % 1013) as f32 / 1013.0) - 0.5)
        .collect();
    let mut weights = Vec::new();
    for &ty in types {
        let err = |e: tuili_backend::BackendError| {
            PlanError::BadOption(format!("probe: {} weights: {e}", ty.name()))
        };
        let w = Weight::from_vec(ty, ROWS, COLS, quantize(ty, &vals).map_err(err)?).map_err(err)?;
        w.prepare();
        weights.push(w);
    }
    let x: Vec<f32> = (0..tokens * COLS).map(|i| (i % 17) as f32 / 17.0).collect();
    let mut out = vec![0f32; tokens * ROWS];
    let mut best = vec![f64::INFINITY; types.len()];
    for w in &weights {
        matmul(w, &x, tokens, &mut out);
    }
    let per_round = SECONDS / ROUNDS as f64;
    for _ in 0..ROUNDS {
        for (w, b) in weights.iter().zip(&mut best) {
            let start = Instant::now();
            while start.elapsed().as_secs_f64() < per_round {
                let t0 = Instant::now();
                matmul(w, &x, tokens, &mut out);
                *b = b.min(t0.elapsed().as_secs_f64());
            }
        }
    }
    std::hint::black_box(&out);
    let flops = 2.0 * (ROWS * COLS * tokens) as f64;
    Ok(best.iter().map(|b| flops / b.max(1e-9)).collect())
}

/// One vector op of the probe: (gate, out).
type VectorOp<'a> = dyn Fn(&mut Vec<f32>, &mut Vec<f32>) + 'a;

/// Values per second of each vector op the forward pass runs per token, on one
/// thread (the forward pass splits them over threads by token): the best of
/// alternating rounds over a 4096-wide row.
fn elementwise_rates(when: &str) -> Elementwise {
    const N: usize = 4096;
    const HEAD: usize = 64;
    let x: Vec<f32> = (0..N).map(|i| (i % 29) as f32 / 29.0 - 0.5).collect();
    let weight = vec![1.0f32; N];
    let inv_freq = rope_inv_freq(HEAD, 10000.0);
    let mut cos_sin = vec![(0f32, 0f32); HEAD / 2];
    rope_angles(&inv_freq, 17, &mut cos_sin);
    let mut out = vec![0f32; N];
    let mut gate = x.clone();
    let ops: [&VectorOp; 4] = [
        &|_, out| rms_norm(&x, &weight, 1e-6, out),
        &|gate, _| silu_mul(gate, &x),
        &|gate, _| gelu_tanh_mul(gate, &x),
        &|gate, _| rope_rotate(gate, HEAD, &cos_sin, RopeMode::Neox),
    ];
    let mut best = [f64::INFINITY; 4];
    for _ in 0..ROUNDS {
        for (op, b) in ops.iter().zip(&mut best) {
            let start = Instant::now();
            while start.elapsed().as_secs_f64() < 0.02 {
                // The gate is refreshed so values stay in range.
                gate.copy_from_slice(&x);
                let t0 = Instant::now();
                op(&mut gate, &mut out);
                *b = b.min(t0.elapsed().as_secs_f64());
            }
        }
    }
    std::hint::black_box((&gate, &out));
    let [a, b, c, d] = best.map(|secs| Sourced {
        value: N as f64 / secs.max(1e-12) / 1e9,
        source: format!("{when}: one thread over {N} values, best of {ROUNDS} rounds"),
    });
    Elementwise {
        rms_norm: a,
        silu_mul: b,
        gelu_tanh_mul: c,
        rope: d,
        attention: Some(attention_rate(when, 1 << 17)),
        attention_cached: Some(attention_rate(when, 1 << 10)),
    }
}

/// Multiply-adds per second of attention on one thread, as the forward pass runs it for
/// one token and one K/V head: scores of a group of query heads against the cached keys,
/// a softmax per head, the weighted sum of the cached values; f16 rows laid out as in the
/// paged cache (two K/V heads a position). The shape is a common one (Llama 3 8B: four
/// query heads of 128 per K/V head), over `np` positions: 2¹⁷ make a 64 MiB cache, past
/// any L3 here, as a decode step reads every layer's cache once; 2¹⁰ (512 KiB) stay in
/// cache, as a prompt chunk's tokens read the same rows in turn (2-4× faster).
fn attention_rate(when: &str, np: usize) -> Sourced {
    use tuili_backend::{kernels, KvType};
    const G: usize = 4;
    const HD: usize = 128;
    const KVH: usize = 2;
    let k = kernels::select();
    let ty = KvType::F16;
    // One position's K/V heads, encoded once and repeated over the cache.
    let x: Vec<f32> = (0..KVH * HD)
        .map(|i| (i % 31) as f32 / 31.0 - 0.5)
        .collect();
    let mut row = vec![0u8; ty.bytes(KVH * HD)];
    ty.encode(&x, &mut row);
    let cache = row.repeat(np);
    let rows: Vec<usize> = (0..np).map(|p| p * KVH * HD).collect();
    let q: Vec<f32> = (0..G * HD).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect();
    let mut scores = vec![0f32; G * np];
    let mut out = vec![0f32; G * HD];
    let mut best = f64::INFINITY;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        loop {
            let t0 = Instant::now();
            k.scores_kv(ty, &q, HD, &cache, &rows, &mut scores);
            for row in scores.chunks_exact_mut(np) {
                k.softmax(row, 0.088);
            }
            k.mix_kv(ty, &scores, &cache, &rows, &mut out);
            best = best.min(t0.elapsed().as_secs_f64());
            if start.elapsed().as_secs_f64() >= 0.01 {
                break;
            }
        }
    }
    std::hint::black_box((&scores, &out));
    Sourced {
        value: (2 * G * HD * np) as f64 / best.max(1e-12) / 1e9,
        source: format!(
            "{when}: one thread, {G} query heads of {HD} over {np} f16 positions ({} KiB of \
             cache: scores, softmax, weighted sum), best of {ROUNDS} rounds",
            cache.len() >> 10
        ),
    }
}

/// What `--probe` measured and knows of this machine.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The CPU's name (`/proc/cpuinfo`).
    pub cpu_name: String,
    /// Threads of the global pool (the compute figures are for all of them).
    pub threads: usize,
    /// Read bandwidth with all threads, bytes/s.
    pub bandwidth_all: f64,
    /// Read bandwidth with one thread, bytes/s.
    pub bandwidth_one: f64,
    /// Memory capacity, bytes.
    pub capacity: u64,
    /// Thermal design power the user gave, W (software cannot measure it).
    pub tdp_w: Sourced,
    /// Idle power the user gave, W.
    pub idle_w: Sourced,
    /// Price per hour the user gave.
    pub usd_per_hour: Sourced,
}

/// Measures the matmul rates and makes the profile `local` of this machine.
pub fn local_profile(m: Measured) -> Result<ChipProfile, PlanError> {
    let when = "measured by tuili plan --probe";
    // Every weight type the forward pass runs, over 64 tokens and over one (whose
    // weights stay in cache: the cost of unpacking them).
    let per_type = |tokens: usize, note: &str| -> Result<Vec<(GgmlType, Sourced)>, PlanError> {
        let rates = matmul_rates(&WEIGHT_TYPES, tokens)?;
        Ok(WEIGHT_TYPES
            .iter()
            .zip(rates)
            .map(|(&ty, r)| {
                let source = format!(
                    "{when}: {} matmul [{tokens}x{COLS}] x [{ROWS}x{COLS}]{note}, {} threads, \
                     best of {ROUNDS} rounds",
                    ty.name(),
                    m.threads
                );
                let value = r / 1e12;
                (ty, Sourced { value, source })
            })
            .collect())
    };
    let kernels = per_type(TOKENS, "")?;
    let matvec = per_type(1, " (in cache)")?;
    // Each precision at the rate of the type the CPU backend runs it with.
    let tflops = Precision::ALL.map(|p| {
        let measured = probe_type(p).and_then(|ty| kernels.iter().find(|(t, _)| *t == ty));
        match measured {
            Some((_, s)) => s.clone(),
            None => Sourced {
                value: 0.0,
                source: format!("{when}: the CPU backend has no FP8 weights; runs at BF16"),
            },
        }
    });
    let sourced = |value: f64, source: String| Sourced { value, source };
    Ok(ChipProfile {
        name: "local".into(),
        title: format!("{} ({} threads)", m.cpu_name, m.threads),
        kind: ChipKind::Cpu,
        capacity_gb: sourced(m.capacity as f64 / 1e9, format!("{when}: MemTotal")),
        bandwidth_gbs: sourced(
            m.bandwidth_all / 1e9,
            format!(
                "{when}: read bandwidth as tuili bench --membw, {} threads",
                m.threads
            ),
        ),
        compute: Compute { tflops },
        tdp_w: m.tdp_w,
        idle_w: m.idle_w,
        interconnect_gbs: sourced(1.25, "assumed: 10 GbE between machines".into()),
        allreduce_latency_us: None,
        usd_per_hour: m.usd_per_hour,
        kernels,
        matvec,
        elementwise: Some(elementwise_rates(when)),
        cpu: Some(CpuThreads {
            threads: sourced(m.threads as f64, format!("{when}: threads of the pool")),
            bandwidth_per_thread_gbs: sourced(
                m.bandwidth_one / 1e9,
                format!("{when}: read bandwidth with one thread"),
            ),
        }),
        calibration: None,
        serving: None,
    })
}
