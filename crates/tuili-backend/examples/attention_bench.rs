//! Times attention's two row kernels, `scores_kv` (query heads against K rows) and
//! `mix_kv` (weighted sums of V rows), on one thread, over f16 rows laid out as in the
//! paged KV cache (one position's K/V heads side by side).
//!
//! `cargo run --release -p tuili-backend --example attention_bench -- [GxHDxKVHxNP,...]`
//! e.g. `-- 4x256x1x256,3x64x3x512` (Gemma 3's prefill, SmolLM2's decode at 512).
//! `TUILI_KERNELS=scalar` compares the scalar twin, `TUILI_KV=f32` another cache type. Each figure is the best of 15 timings (the
//! machine's neighbours only ever slow it down).

use std::time::Instant;

use tuili_backend::{kernels, KvType};

fn main() {
    let shapes: Vec<[usize; 4]> = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "4x256x1x256,3x64x3x512,7x64x2x512".into())
        .split(',')
        .filter_map(|s| {
            let v: Vec<usize> = s.split('x').filter_map(|x| x.parse().ok()).collect();
            <[usize; 4]>::try_from(v).ok()
        })
        .collect();
    let k = kernels::select();
    // `TUILI_KV=f32|bf16|q8_0` times another cache type.
    let ty = match std::env::var("TUILI_KV").as_deref() {
        Ok("f32") => KvType::F32,
        Ok("bf16") => KvType::BF16,
        Ok("q8_0") => KvType::Q8_0,
        _ => KvType::F16,
    };
    println!("kernels {}, {ty} rows", k.name());
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    for [g, hd, kvh, np] in shapes {
        // rows: head 0's K row of each position, `kvh * hd` values apart.
        // `TUILI_PAD=k`: k more values between rows (another stride).
        let pad: usize = std::env::var("TUILI_PAD")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let stride = kvh * hd + pad;
        let n = np * stride;
        let x: Vec<f32> = (0..n).map(|_| rand()).collect();
        let mut stored = vec![0u8; ty.bytes(n)];
        ty.encode(&x, &mut stored);
        let rows: Vec<usize> = (0..np).map(|p| p * stride).collect();
        let q: Vec<f32> = (0..g * hd).map(|_| rand()).collect();
        let coef: Vec<f32> = (0..g * np).map(|_| rand().abs() / np as f32).collect();
        let mut scores = vec![0f32; g * np];
        let mut out = vec![0f32; g * hd];
        let flops = (2 * g * hd * np) as f64;
        let time = |f: &mut dyn FnMut()| {
            f();
            let t0 = Instant::now();
            f();
            let once = t0.elapsed().as_secs_f64().max(1e-7);
            let iters = ((0.05 / once) as usize).clamp(1, 1_000_000);
            let t: Vec<f64> = (0..15)
                .map(|_| {
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        f();
                    }
                    t0.elapsed().as_secs_f64() / iters as f64
                })
                .collect();
            t.into_iter().fold(f64::INFINITY, f64::min)
        };
        let ts = time(&mut || k.scores_kv(ty, &q, hd, &stored, &rows, &mut scores));
        let tm = time(&mut || k.mix_kv(ty, &coef, &stored, &rows, &mut out));
        std::hint::black_box((&scores, &out));
        println!(
            "g={g} hd={hd} kv_heads={kvh} np={np}: scores {:8.2} us {:6.2} GFLOP/s | mix {:8.2} us {:6.2} GFLOP/s",
            ts * 1e6,
            flops / ts / 1e9,
            tm * 1e6,
            flops / tm / 1e9
        );
    }
}
