//! Times `matmul` on random weights: weight GB/s for one token (decode) and GMAC/s for
//! a batch (prefill).
//!
//! `cargo run --release -p tuili-backend --example matmul_bench -- THREADS [TYPES] [N] [ROWSxCOLS,...]`
//! e.g. `-- 2 Q4_1,Q8_0 512 196608x576` (a weight larger than L3 shows DRAM speed).
//! `TUILI_KERNELS=scalar|f32` compares other kernels.
//! Each line is the median of 5 timings, by the wall clock and by CPU time (summed over
//! the process's threads from `/proc/self/task/*/schedstat`): on a shared machine the
//! second says what the kernels do with the time they get.

use std::time::Instant;

use tuili_backend::matmul::{matmul, Weight};
use tuili_backend::{kernels, pool, quantize};
use tuili_gguf::GgmlType;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let types: Vec<GgmlType> = args
        .get(2)
        .map(|s| {
            s.split(',')
                .filter_map(|n| GgmlType::ALL.into_iter().find(|t| t.name() == n))
                .collect()
        })
        .unwrap_or_else(|| {
            vec![
                GgmlType::Q4_1,
                GgmlType::Q8_0,
                GgmlType::Q4_0,
                GgmlType::Q5_0,
                GgmlType::Q4_K,
                GgmlType::Q6_K,
                GgmlType::F16,
            ]
        });
    let batch: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(64);
    let custom: Vec<(usize, usize)> = args
        .get(4)
        .map(|s| {
            s.split(',')
                .filter_map(|rc| {
                    let (r, c) = rc.split_once('x')?;
                    Some((r.parse().ok()?, c.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    pool::set_threads(threads);
    println!(
        "kernels {}, {} threads",
        kernels::select().name(),
        pool::global().n_threads()
    );
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    for ty in types {
        // K-quants need whole 256-element rows: use the FFN-down shape for them.
        let shapes: &[(usize, usize)] = if !custom.is_empty() {
            &custom
        } else if ty.block_size() == 256 {
            &[(576, 1536), (1536, 1536)]
        } else {
            &[(1536, 576), (49152, 576)]
        };
        for &(rows, cols) in shapes {
            let wf: Vec<f32> = (0..rows * cols).map(|_| rand()).collect();
            let Ok(bytes) = quantize(ty, &wf) else {
                continue;
            };
            let wbytes = bytes.len();
            let Ok(w) = Weight::from_vec(ty, rows, cols, bytes) else {
                continue;
            };
            for n in [1, batch] {
                let x: Vec<f32> = (0..n * cols).map(|_| rand()).collect();
                let mut out = vec![0f32; n * rows];
                matmul(&w, &x, n, &mut out);
                // About 0.3 s per timing.
                let t0 = Instant::now();
                matmul(&w, &x, n, &mut out);
                let once = t0.elapsed().as_secs_f64().max(1e-7);
                let iters = ((0.3 / once) as usize).clamp(1, 100_000);
                let mut times: Vec<(f64, f64)> = (0..5)
                    .map(|_| {
                        let (t0, c0) = (Instant::now(), cpu_seconds());
                        for _ in 0..iters {
                            matmul(&w, &x, n, &mut out);
                        }
                        let wall = t0.elapsed().as_secs_f64() / iters as f64;
                        (wall, (cpu_seconds() - c0) / iters as f64)
                    })
                    .collect();
                times.sort_by(|a, b| a.0.total_cmp(&b.0));
                let t = times[2].0;
                times.sort_by(|a, b| a.1.total_cmp(&b.1));
                // CPU time per thread: what one dedicated core per thread would take.
                let c = times[2].1 / threads as f64;
                println!(
                    "{:5} {rows:6}x{cols:<5} n={n:<4} wall {:9.1} us {:6.2} GB/s {:6.2} GMAC/s | cpu {:9.1} us {:6.2} GB/s {:6.2} GMAC/s",
                    ty.name(),
                    t * 1e6,
                    wbytes as f64 / t / 1e9,
                    (rows * cols * n) as f64 / t / 1e9,
                    c * 1e6,
                    wbytes as f64 / c / 1e9,
                    (rows * cols * n) as f64 / c / 1e9
                );
            }
        }
    }
}

/// CPU seconds used so far by all threads of this process (0 where /proc is missing).
fn cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum::<u64>() as f64
        * 1e-9
}
