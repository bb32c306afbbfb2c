//! The kernel sources run on the host: `src/kernels/*.cu` compiled as C++ (with
//! `TUILI_HOST`), each block of a launch run by one OS thread per CUDA thread, with warp
//! shuffles and `__syncthreads` as barriers. Element-wise kernels and every weight
//! type's decoder (through `dequant_*`, which the embedding lookup and the cuBLAS path
//! use) must give the CPU reference's bits exactly (the host build does not fuse
//! multiply-adds); `matvec_*` and the split attention, whose sums run in another order,
//! must match an f64 reference to 1e-5. This checks the block layouts, index arithmetic
//! and reductions of the sources on machines without a GPU (it says nothing of timing,
//! memory ordering on a real GPU, or the PTX compiler). Needs a C++ compiler (`$CXX` or
//! `c++`); without one the tests say "skipped".

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tuili_backend::ops::{
    axpy, gelu_tanh, gelu_tanh_mul, norm_in_place, rms_norm, rope, rope_inv_freq, silu_mul,
    swiglu_oai_mul, NormKind, RopeMode,
};
use tuili_backend::quant::{dequantize, quantize};
use tuili_gguf::GgmlType;

/// Host stand-ins for CUDA's built-ins, then the kernel sources, then a `main` that
/// runs one kernel over files of raw little-endian values.
const HARNESS: &str = r#"
#include <barrier>
#include <cmath>
#include <cstdint>
#include <thread>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
struct uint2 { unsigned x, y; };
struct uint4 { unsigned x, y, z, w; };
struct float4 { float x, y, z, w; };
struct Dim3 { unsigned x = 0, y = 0, z = 0; };
static Dim3 blockIdx, blockDim, gridDim;
static thread_local Dim3 threadIdx;
// One block runs at a time: a barrier per warp for shuffles, one for the block.
static std::barrier<>* warp_bar[32];
static std::barrier<>* block_bar;
static double shfl_slot[32][32];
template <class T> T shfl_xor(T v, int o) {
    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    shfl_slot[warp][lane] = (double)v;
    warp_bar[warp]->arrive_and_wait();
    T r = (T)shfl_slot[warp][lane ^ o];
    warp_bar[warp]->arrive_and_wait();
    return r;
}
#define __device__
#define __forceinline__ inline
#define __global__
#define __launch_bounds__(x)
#define __restrict__ __restrict
#define __shared__ static
#define __syncthreads() block_bar->arrive_and_wait()
#define __shfl_xor_sync(mask, v, o) shfl_xor(v, o)
static inline int min(int a, int b) { return a < b ? a : b; }
static inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
float f16_to_f32(unsigned short h) {
    unsigned s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0 ? std::ldexp((float)m, -24)
            : e == 31 ? (m ? NAN : INFINITY)
            : std::ldexp((float)(m | 1024), (int)e - 25);
    return s ? -v : v;
}
#define TUILI_HOST
#include "common.cuh"
#include "quant.cu"
#include "ops.cu"
#include "attention.cu"

template <class T> std::vector<T> load(const char* path) {
    std::vector<T> v;
    FILE* f = std::fopen(path, "rb");
    if (!f) { std::perror(path); std::exit(2); }
    T x;
    while (std::fread(&x, sizeof x, 1, f) == 1) v.push_back(x);
    std::fclose(f);
    return v;
}
template <class T> void save(const char* path, const std::vector<T>& v) {
    FILE* f = std::fopen(path, "wb");
    std::fwrite(v.data(), sizeof(T), v.size(), f);
    std::fclose(f);
}
// Runs kernel body `call` for every global thread index i < total, one at a time
// (kernels whose threads do not talk to each other).
template <class F> void each(size_t total, F call) {
    blockDim.x = 1;
    threadIdx.x = 0;
    for (size_t i = 0; i < total; i++) { blockIdx.x = (unsigned)i; call(); }
}
// A launch of grid (gx, gy) blocks of `threads` threads (a multiple of 32): blocks one
// after another, the threads of a block as OS threads.
template <class F> void launch(unsigned gx, unsigned gy, unsigned threads, F call) {
    gridDim.x = gx; gridDim.y = gy; blockDim.x = threads;
    for (unsigned y = 0; y < gy; y++) for (unsigned x = 0; x < gx; x++) {
        blockIdx.x = x; blockIdx.y = y;
        // Threads that return early leave the block barrier (as exited GPU threads do).
        std::barrier<> bb(threads);
        block_bar = &bb;
        std::vector<std::barrier<>*> wb;
        for (unsigned w = 0; w < threads / 32; w++) wb.push_back(warp_bar[w] = new std::barrier<>(32));
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < threads; t++) ts.emplace_back([&, t] {
            threadIdx.x = t;
            call();
            bb.arrive_and_drop();
        });
        for (auto& t : ts) t.join();
        for (auto* b : wb) delete b;
    }
}
#define DISPATCH(T) if (ty == #T) each((size_t)n * slices, [&] { dequant_##T(w.data(), row_bytes, slices, ids.empty() ? nullptr : ids.data(), n, out.data()); });
#define DISPATCH_MV(T) if (ty == #T) launch((rows + MV_ROWS - 1) / MV_ROWS, 1, 32 * MV_ROWS, [&] { matvec_##T(w.data(), rows, row_bytes, cols / 8, x.data(), cols, n, y.data()); });

int main(int argc, char** argv) {
    std::string op = argv[1];
    if (op == "dequant") {  // dequant TYPE ROW_BYTES COLS W IDS OUT
        std::string ty = argv[2];
        int row_bytes = std::atoi(argv[3]), cols = std::atoi(argv[4]), slices = cols / 8;
        auto w = load<u8>(argv[5]);
        auto ids = load<u32>(argv[6]);
        int n = (int)ids.size();
        std::vector<float> out((size_t)n * cols, NAN);
        DISPATCH(q4_0) DISPATCH(q4_1) DISPATCH(q5_0) DISPATCH(q5_1) DISPATCH(q8_0) DISPATCH(mxfp4)
        DISPATCH(q4_k) DISPATCH(q5_k) DISPATCH(q6_k) DISPATCH(f32) DISPATCH(f16) DISPATCH(bf16)
        save(argv[7], out);
    } else if (op == "matvec") {  // matvec TYPE ROW_BYTES COLS W X OUT (x: [n, cols])
        std::string ty = argv[2];
        int row_bytes = std::atoi(argv[3]), cols = std::atoi(argv[4]);
        auto w = load<u8>(argv[5]);
        auto x = load<float>(argv[6]);
        int rows = (int)(w.size() / row_bytes), n = (int)(x.size() / cols);
        std::vector<float> y((size_t)n * rows, NAN);
        DISPATCH_MV(q4_0) DISPATCH_MV(q4_1) DISPATCH_MV(q5_0) DISPATCH_MV(q5_1) DISPATCH_MV(q8_0) DISPATCH_MV(mxfp4)
        DISPATCH_MV(q4_k) DISPATCH_MV(q5_k) DISPATCH_MV(q6_k) DISPATCH_MV(f32) DISPATCH_MV(f16) DISPATCH_MV(bf16)
        save(argv[7], y);
    } else if (op == "attention") {
        // attention N_HEAD N_KV_HEAD HEAD_DIM BLOCK SPLIT_LEN WINDOW TEMP_SCALE TEMP_FLOOR
        //           SOFTCAP Q K V POS TABLE OUT SINKS ("-": none)
        // K, V: [n_pos, kv_dim] of one sequence; queries at positions POS.
        int nh = std::atoi(argv[2]), nkv = std::atoi(argv[3]), hd = std::atoi(argv[4]);
        int bs = std::atoi(argv[5]), split_len = std::atoi(argv[6]), window = std::atoi(argv[7]);
        float temp_scale = std::strtof(argv[8], nullptr), temp_floor = std::strtof(argv[9], nullptr);
        float softcap = std::strtof(argv[10], nullptr);
        argv += 4;
        auto q = load<float>(argv[7]);
        auto k = load<float>(argv[8]);
        auto v = load<float>(argv[9]);
        auto pos = load<u32>(argv[10]);
        auto table = load<u32>(argv[11]);
        int kv_dim = nkv * hd, n_pos = (int)(k.size() / kv_dim), n = (int)pos.size();
        int nb = 0;
        for (u32 b : table) nb = nb > (int)b + 1 ? nb : (int)b + 1;
        std::vector<float> kp((size_t)nb * bs * kv_dim, NAN), vp = kp;
        std::vector<u32> all(n_pos), chunk(n_pos > n ? n_pos : n, 0);
        for (int i = 0; i < n_pos; i++) all[i] = i;
        each((size_t)n_pos * kv_dim, [&] { kv_write(k.data(), v.data(), kp.data(), vp.data(), all.data(), chunk.data(), table.data(), (int)table.size(), 0, nb, bs, kv_dim, n_pos); });
        u32 max_len = 0;
        for (u32 p : pos) max_len = max_len > p + 1 ? max_len : p + 1;
        int splits = (int)((max_len + split_len - 1) / split_len);
        int pairs = n * nh;
        std::vector<float> po((size_t)pairs * splits * hd, NAN), pml((size_t)pairs * splits * 2, NAN);
        std::vector<float> out((size_t)pairs * hd, NAN);
        launch(pairs, splits, 32 * ATT_WARPS, [&] { attention_split(q.data(), kp.data(), vp.data(), pos.data(), chunk.data(), table.data(), (int)table.size(), 0, nb, bs, nh, nkv, hd, 1.0f / std::sqrt((float)hd), window, temp_scale, temp_floor, softcap, split_len, po.data(), pml.data()); });
        std::vector<float> sinks;
        if (std::string(argv[13]) != "-") sinks = load<float>(argv[13]);
        launch(pairs, 1, 64, [&] { attention_combine(po.data(), pml.data(), splits, hd, sinks.empty() ? nullptr : sinks.data(), nh, out.data()); });
        save(argv[12], out);
    } else if (op == "rms_norm") {  // rms_norm DIM EPS X W OUT IN_PLACE_OUT
        int dim = std::atoi(argv[2]);
        float eps = std::strtof(argv[3], nullptr);
        auto x = load<float>(argv[4]);
        auto w = load<float>(argv[5]);
        int n = (int)(x.size() / dim);
        std::vector<float> out(x.size(), NAN);
        launch(n, 1, 256, [&] { rms_norm(x.data(), w.data(), nullptr, dim, eps, out.data()); });
        save(argv[6], out);
        launch(n, 1, 256, [&] { rms_norm(x.data(), w.data(), nullptr, dim, eps, x.data()); });
        save(argv[7], x);
    } else if (op == "rope") {  // rope HEADS HEAD_DIM NEOX X POS INV OUT
        int heads = std::atoi(argv[2]), hd = std::atoi(argv[3]), neox = std::atoi(argv[4]);
        auto x = load<float>(argv[5]);
        auto pos = load<u32>(argv[6]);
        auto inv = load<float>(argv[7]);
        int n = (int)pos.size(), pairs = (int)inv.size();
        each((size_t)n * heads * pairs, [&] { rope(x.data(), pos.data(), inv.data(), n, heads, hd, pairs, neox, 1.0f); });
        save(argv[8], x);
    } else if (op == "layer_norm") {  // layer_norm DIM EPS X W B OUT IN_PLACE_OUT
        int dim = std::atoi(argv[2]);
        float eps = std::strtof(argv[3], nullptr);
        auto x = load<float>(argv[4]);
        auto w = load<float>(argv[5]);
        auto b = load<float>(argv[6]);
        int n = (int)(x.size() / dim);
        std::vector<float> out(x.size(), NAN);
        launch(n, 1, 256, [&] { layer_norm(x.data(), w.data(), b.data(), nullptr, dim, eps, out.data()); });
        save(argv[7], out);
        launch(n, 1, 256, [&] { layer_norm(x.data(), w.data(), b.data(), nullptr, dim, eps, x.data()); });
        save(argv[8], x);
    } else if (op == "silu_add") {  // silu_add G U BIAS SILU_OUT ADD_OUT BIAS_OUT GELU_OUT SCALE_OUT SWIGLU_OAI_OUT GELU_ALONE_OUT
        auto g = load<float>(argv[2]);
        auto u = load<float>(argv[3]);
        auto b = load<float>(argv[4]);
        int total = (int)g.size(), d = (int)b.size();
        auto s = g, a = g, bo = g, ge = g, sc = g, so = g, gl = g;
        each(total, [&] { silu_mul(s.data(), u.data(), total); });
        each(total, [&] { add(a.data(), u.data(), total); });
        each(total, [&] { add_bias(bo.data(), b.data(), d, total); });
        each(total, [&] { gelu_tanh_mul(ge.data(), u.data(), total); });
        each(total, [&] { gelu_tanh_mul(gl.data(), nullptr, total); });
        save(argv[11], gl);
        each(total, [&] { scale(sc.data(), 25.298f, total); });
        each(total, [&] { swiglu_oai_mul(so.data(), u.data(), total); });
        save(argv[10], so);
        save(argv[5], s); save(argv[6], a); save(argv[7], bo); save(argv[8], ge); save(argv[9], sc);
    } else if (op == "rows") {  // rows DIM SRC IDX W GATHER_OUT SCATTER_OUT FILL_OUT
        int dim = std::atoi(argv[2]);
        auto src = load<float>(argv[3]);
        auto idx = load<u32>(argv[4]);
        auto w = load<float>(argv[5]);
        int n = (int)idx.size(), total = n * dim;
        std::vector<float> gathered((size_t)total, NAN), dst = src, filled = src;
        each(total, [&] { gather_rows(src.data(), idx.data(), dim, total, gathered.data()); });
        each(total, [&] { scatter_add_rows(gathered.data(), idx.data(), w.data(), dim, total, dst.data()); });
        each(filled.size(), [&] { fill(filled.data(), 0.5f, (int)filled.size()); });
        save(argv[6], gathered); save(argv[7], dst); save(argv[8], filled);
    } else if (op == "kv_write") {  // kv_write KV_DIM BLOCK N_BLOCKS K V POS TABLE KOUT VOUT
        int kv_dim = std::atoi(argv[2]), bs = std::atoi(argv[3]), nb = std::atoi(argv[4]);
        auto k = load<float>(argv[5]);
        auto v = load<float>(argv[6]);
        auto pos = load<u32>(argv[7]);
        auto table = load<u32>(argv[8]);
        int n = (int)pos.size();
        std::vector<u32> chunk(n, 0);
        std::vector<float> kp((size_t)2 * nb * bs * kv_dim, 0), vp = kp;
        // Layer 1 of a two-layer pool.
        each((size_t)n * kv_dim, [&] { kv_write(k.data(), v.data(), kp.data(), vp.data(), pos.data(), chunk.data(), table.data(), (int)table.size(), 1, nb, bs, kv_dim, n); });
        save(argv[9], kp); save(argv[10], vp);
    } else {
        return 2;
    }
    return 0;
}
"#;

fn kernels_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kernels")
}

/// The harness, compiled once per test binary; `None` (with a note) without a compiler.
fn harness() -> Option<&'static Path> {
    static EXE: OnceLock<Option<PathBuf>> = OnceLock::new();
    EXE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tuili-host-kernels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let src = dir.join("harness.cpp");
        std::fs::write(&src, HARNESS).expect("write harness");
        let exe = dir.join("harness");
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let out = Command::new(&cxx)
            .args([
                "-std=c++20",
                "-O1",
                "-ffp-contract=off",
                "-pthread",
                "-w",
                "-I",
            ])
            .arg(kernels_dir())
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(exe),
            Ok(o) => panic!(
                "the kernel sources do not compile as host C++:\n{}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => {
                tuili_testkit::skip(&format!("no C++ compiler ({cxx}: {e})"));
                None
            }
        }
    })
    .as_deref()
}

/// A scratch file path for this test.
fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tuili-hk-{}-{name}", std::process::id()))
}

fn write_f32(name: &str, v: &[f32]) -> PathBuf {
    let p = tmp(name);
    std::fs::write(
        &p,
        v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .expect("write");
    p
}

fn write_u32(name: &str, v: &[u32]) -> PathBuf {
    let p = tmp(name);
    std::fs::write(
        &p,
        v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .expect("write");
    p
}

fn read_f32(p: &Path) -> Vec<f32> {
    std::fs::read(p)
        .expect("read")
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn run(exe: &Path, args: &[&dyn AsRef<std::ffi::OsStr>]) {
    let mut c = Command::new(exe);
    for a in args {
        c.arg(a);
    }
    let out = c.output().expect("run harness");
    assert!(
        out.status.success(),
        "harness failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rng() -> (StdRng, u64) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    (StdRng::seed_from_u64(seed), seed)
}

fn random(r: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| r.gen_range(-scale..scale)).collect()
}

/// Bit-for-bit equality, naming the first difference; the reference must not be all zeros.
fn same_bits(what: &str, seed: u64, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(
        want.iter().any(|&v| v != 0.0),
        "{what}: the reference is all zeros"
    );
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{what}: element {i} is {} on the host build of the kernel, {} on the CPU (seed {seed})",
            got[i], want[i]
        );
    }
}

/// ‖got − want‖ / ‖want‖ ≤ tol, against an f64 reference that is not all zeros.
fn close(what: &str, seed: u64, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what}: non-finite output (seed {seed})"
    );
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).powi(2))
        .sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    assert!(den > 0.0, "{what}: the reference is all zeros");
    let e = (num / den).sqrt();
    assert!(
        e <= tol,
        "{what}: relative error {e:.3e} > {tol:.0e} (seed {seed})"
    );
}

const TYPES: [(GgmlType, &str); 12] = [
    (GgmlType::Q4_0, "q4_0"),
    (GgmlType::Q4_1, "q4_1"),
    (GgmlType::Q5_0, "q5_0"),
    (GgmlType::Q5_1, "q5_1"),
    (GgmlType::Q8_0, "q8_0"),
    (GgmlType::MXFP4, "mxfp4"),
    (GgmlType::Q4_K, "q4_k"),
    (GgmlType::Q5_K, "q5_k"),
    (GgmlType::Q6_K, "q6_k"),
    (GgmlType::F32, "f32"),
    (GgmlType::F16, "f16"),
    (GgmlType::BF16, "bf16"),
];

#[test]
fn matvec_every_type_matches_an_f64_reference() {
    let Some(exe) = harness() else { return };
    let (mut r, seed) = rng();
    // 9 rows: the last block of 4 warps has one row; 1, 3 and 8 tokens.
    let (rows, cols) = (9, 768);
    for (ty, name) in TYPES {
        let bytes = quantize(ty, &random(&mut r, rows * cols, 1.0)).expect("quantize");
        let wf = dequantize(ty, &bytes, rows * cols).expect("dequantize");
        let w = tmp(&format!("mv.{name}.w"));
        std::fs::write(&w, &bytes).expect("write");
        for n in [1, 3, 8] {
            let x = random(&mut r, n * cols, 1.0);
            let want: Vec<f64> = (0..n * rows)
                .map(|i| {
                    let (t, o) = (i / rows, i % rows);
                    (0..cols)
                        .map(|c| wf[o * cols + c] as f64 * x[t * cols + c] as f64)
                        .sum()
                })
                .collect();
            let xf = write_f32(&format!("mv.{name}.x"), &x);
            let out = tmp(&format!("mv.{name}.out"));
            let (rb, cs) = ((bytes.len() / rows).to_string(), cols.to_string());
            run(exe, &[&"matvec", &name, &rb, &cs, &w, &xf, &out]);
            close(
                &format!("matvec_{name} n={n}"),
                seed,
                &read_f32(&out),
                &want,
                1e-5,
            );
        }
    }
}

/// Softmax attention in f64 of queries at `pos` over K/V `[n_pos, kv_dim]`.
#[allow(clippy::too_many_arguments)]
fn attention_f64(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pos: &[u32],
    (nh, nkv, hd): (usize, usize, usize),
    window: usize,
    (temp_scale, temp_floor): (f64, f64),
    softcap: f64,
    sinks: Option<&[f32]>,
) -> Vec<f64> {
    let kv_dim = nkv * hd;
    let mut out = vec![0f64; q.len()];
    for (t, &p) in pos.iter().enumerate() {
        for h in 0..nh {
            let qh = &q[(t * nh + h) * hd..(t * nh + h + 1) * hd];
            let kvh = h / (nh / nkv) * hd;
            // Positions p0..=p: the last `window` of them when window > 0.
            let p0 = if window > 0 {
                (p as usize + 1).saturating_sub(window)
            } else {
                0
            };
            let s: Vec<f64> = (p0..=p as usize)
                .map(|j| {
                    let kj = &k[j * kv_dim + kvh..j * kv_dim + kvh + hd];
                    let d: f64 = qh.iter().zip(kj).map(|(&a, &b)| a as f64 * b as f64).sum();
                    // Llama 4's temperature of the query's position (floor 0: none).
                    let t = if temp_floor > 0.0 {
                        1.0 + temp_scale * ((p as f64 / temp_floor).floor() + 1.0).ln()
                    } else {
                        1.0
                    };
                    let s = d / (hd as f64).sqrt() * t;
                    // Logit soft-capping (0: none).
                    if softcap > 0.0 {
                        softcap * (s / softcap).tanh()
                    } else {
                        s
                    }
                })
                .collect();
            // A sink joins the maximum and the denominator, and attends to nothing.
            let sink = sinks.map(|s| s[h] as f64);
            let m = s
                .iter()
                .copied()
                .chain(sink)
                .fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum::<f64>() + sink.map_or(0.0, |s| (s - m).exp());
            let o = &mut out[(t * nh + h) * hd..(t * nh + h + 1) * hd];
            for (j, ej) in (p0..).zip(&e) {
                let vj = &v[j * kv_dim + kvh..j * kv_dim + kvh + hd];
                for (od, &vd) in o.iter_mut().zip(vj) {
                    *od += ej / z * vd as f64;
                }
            }
        }
    }
    out
}

#[test]
fn split_attention_over_paged_kv_matches_an_f64_reference() {
    let Some(exe) = harness() else { return };
    let (mut r, seed) = rng();
    // (heads, kv heads, head_dim, n_pos, query positions, block size, split length,
    // sliding window or 0, temperature (scale, floor) or floor 0, sinks, soft-cap or 0)
    type Case = (
        usize,
        usize,
        usize,
        usize,
        Vec<u32>,
        usize,
        usize,
        usize,
        (f64, f64),
        bool,
        f64,
    );
    let none = (0.0, 0.0);
    let cases: [Case; 10] = [
        (4, 2, 64, 300, vec![299], 16, 64, 0, none, false, 0.0),
        (3, 3, 80, 37, (0..37).collect(), 8, 16, 0, none, false, 0.0),
        (
            2,
            1,
            128,
            90,
            vec![0, 45, 89],
            32,
            1000,
            0,
            none,
            false,
            0.0,
        ),
        // A window inside one split, across splits, and longer than the sequence.
        (
            4,
            1,
            256,
            300,
            vec![5, 150, 299],
            16,
            64,
            40,
            none,
            false,
            0.0,
        ),
        (2, 2, 64, 90, (0..90).collect(), 8, 16, 7, none, false, 0.0),
        // An attention temperature that changes every 16 positions.
        (
            2,
            1,
            64,
            90,
            vec![3, 20, 89],
            16,
            32,
            0,
            (0.5, 16.0),
            false,
            0.0,
        ),
        // Sinks (gpt-oss): across splits, and with a window from position 0.
        (4, 1, 64, 300, vec![0, 150, 299], 16, 64, 0, none, true, 0.0),
        (4, 2, 64, 40, (0..40).collect(), 8, 16, 8, none, true, 0.0),
        // Soft-capped scores (Gemma 2): across splits, and with a window.
        (
            4,
            2,
            128,
            300,
            vec![0, 150, 299],
            16,
            64,
            0,
            none,
            false,
            0.5,
        ),
        (2, 1, 64, 40, (0..40).collect(), 8, 16, 8, none, false, 0.3),
    ];
    for (nh, nkv, hd, n_pos, pos, bs, split, window, temp, sinks, softcap) in cases {
        let kv_dim = nkv * hd;
        let q = random(&mut r, pos.len() * nh * hd, 1.0);
        let k = random(&mut r, n_pos * kv_dim, 1.0);
        let v = random(&mut r, n_pos * kv_dim, 1.0);
        // Blocks in a scrambled order with gaps: block b of the sequence is 2 * (n - 1 - b).
        let n_blk = n_pos.div_ceil(bs);
        let table: Vec<u32> = (0..n_blk).map(|b| 2 * (n_blk - 1 - b) as u32).collect();
        let sinks = sinks.then(|| random(&mut r, nh, 3.0));
        let want = attention_f64(
            &q,
            &k,
            &v,
            &pos,
            (nh, nkv, hd),
            window,
            temp,
            softcap,
            sinks.as_deref(),
        );
        let sinks_file = sinks
            .as_ref()
            .map_or_else(|| "-".into(), |s| write_f32("att.sinks", s));
        let f = (
            write_f32("att.q", &q),
            write_f32("att.k", &k),
            write_f32("att.v", &v),
            write_u32("att.pos", &pos),
            write_u32("att.table", &table),
        );
        let out = tmp("att.out");
        let a: [String; 6] = [nh, nkv, hd, bs, split, window].map(|x| x.to_string());
        let (ts, tf, sc) = (temp.0.to_string(), temp.1.to_string(), softcap.to_string());
        run(
            exe,
            &[
                &"attention",
                &a[0],
                &a[1],
                &a[2],
                &a[3],
                &a[4],
                &a[5],
                &ts,
                &tf,
                &sc,
                &f.0,
                &f.1,
                &f.2,
                &f.3,
                &f.4,
                &out,
                &sinks_file,
            ],
        );
        let what = format!(
            "attention {nh}/{nkv}x{hd} n_pos={n_pos} split={split} window={window} sinks={} \
             softcap={softcap}",
            sinks.is_some()
        );
        close(&what, seed, &read_f32(&out), &want, 1e-5);
    }
}

#[test]
fn every_decoder_matches_the_cpu_dequantizer_bit_for_bit() {
    let Some(exe) = harness() else { return };
    let (mut r, seed) = rng();
    let (rows, cols) = (7, 512);
    for (ty, name) in TYPES {
        let bytes = quantize(ty, &random(&mut r, rows * cols, 3.0)).expect("quantize");
        let all = dequantize(ty, &bytes, rows * cols).expect("dequantize");
        let ids: Vec<u32> = (0..11).map(|_| r.gen_range(0..rows as u32)).collect();
        let want: Vec<f32> = ids
            .iter()
            .flat_map(|&i| {
                all[i as usize * cols..(i as usize + 1) * cols]
                    .iter()
                    .copied()
            })
            .collect();
        let w = tmp(&format!("{name}.w"));
        std::fs::write(&w, &bytes).expect("write");
        let id_file = write_u32(&format!("{name}.ids"), &ids);
        let out = tmp(&format!("{name}.out"));
        let row_bytes = (bytes.len() / rows).to_string();
        let cols_s = cols.to_string();
        run(
            exe,
            &[&"dequant", &name, &row_bytes, &cols_s, &w, &id_file, &out],
        );
        same_bits(&format!("dequant_{name}"), seed, &read_f32(&out), &want);
    }
}

#[test]
fn row_and_element_kernels_match_the_cpu_ops() {
    let Some(exe) = harness() else { return };
    let (mut r, seed) = rng();

    // RMSNorm: [3, 896].
    let dim = 896;
    let x = random(&mut r, 3 * dim, 2.0);
    let w = random(&mut r, dim, 1.0);
    let mut want = vec![0f32; x.len()];
    for (xr, or) in x.chunks_exact(dim).zip(want.chunks_exact_mut(dim)) {
        rms_norm(xr, &w, 1e-6, or);
    }
    let (out, in_place) = (tmp("rms.out"), tmp("rms.inplace"));
    let (xf, wf) = (write_f32("rms.x", &x), write_f32("rms.w", &w));
    run(
        exe,
        &[&"rms_norm", &"896", &"1e-6", &xf, &wf, &out, &in_place],
    );
    // 256 threads sum the squares in another order than the CPU (both in f64).
    let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    close("rms_norm", seed, &read_f32(&out), &want, 1e-7);
    // Written over its input (per-head QK-norm): the same bits.
    same_bits(
        "rms_norm in place",
        seed,
        &read_f32(&in_place),
        &read_f32(&out),
    );

    // LayerNorm with a bias (StarCoder2): [3, 896].
    let b = random(&mut r, dim, 0.5);
    let mut want = x.clone();
    for xr in want.chunks_exact_mut(dim) {
        norm_in_place(NormKind::Layer, xr, &w, Some(&b), 1e-5);
    }
    let (out, in_place) = (tmp("ln.out"), tmp("ln.inplace"));
    let bf = write_f32("ln.b", &b);
    run(
        exe,
        &[
            &"layer_norm",
            &"896",
            &"1e-5",
            &xf,
            &wf,
            &bf,
            &out,
            &in_place,
        ],
    );
    // Sums in f64 in another order than the CPU's; the mean and the scale rounded to f32.
    let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    close("layer_norm", seed, &read_f32(&out), &want, 1e-6);
    same_bits(
        "layer_norm in place",
        seed,
        &read_f32(&in_place),
        &read_f32(&out),
    );

    // RoPE in both layouts, over the whole head and over 48 of its dimensions (partial
    // rotary embeddings): 4 tokens of 3 heads of 64.
    let (heads, hd) = (3, 64);
    let pos: Vec<u32> = vec![0, 7, 511, 32_767];
    let x = random(&mut r, pos.len() * heads * hd, 1.0);
    for (mode, neox, rot) in [
        (RopeMode::Normal, "0", hd),
        (RopeMode::Neox, "1", hd),
        (RopeMode::Normal, "0", 48),
        (RopeMode::Neox, "1", 48),
    ] {
        let inv = rope_inv_freq(rot, 1_000_000.0);
        let mut want = x.clone();
        for (t, &p) in want.chunks_exact_mut(heads * hd).zip(&pos) {
            rope(t, hd, &inv, p as usize, mode);
        }
        let out = tmp("rope.out");
        let (xf, pf, ff) = (
            write_f32("rope.x", &x),
            write_u32("rope.pos", &pos),
            write_f32("rope.inv", &inv),
        );
        run(exe, &[&"rope", &"3", &"64", &neox, &xf, &pf, &ff, &out]);
        same_bits(
            &format!("rope {mode:?} over {rot}"),
            seed,
            &read_f32(&out),
            &want,
        );
    }

    // SiLU×up, add, bias add over [5, 300].
    let g = random(&mut r, 1500, 8.0);
    let u = random(&mut r, 1500, 2.0);
    let b = random(&mut r, 300, 1.0);
    let mut silu = g.clone();
    silu_mul(&mut silu, &u);
    let sum: Vec<f32> = g.iter().zip(&u).map(|(a, b)| a + b).collect();
    let biased: Vec<f32> = g.iter().enumerate().map(|(i, a)| a + b[i % 300]).collect();
    let mut gelu = g.clone();
    gelu_tanh_mul(&mut gelu, &u);
    let scaled: Vec<f32> = g.iter().map(|v| v * 25.298).collect();
    let (so, ao, bo) = (tmp("silu.out"), tmp("add.out"), tmp("bias.out"));
    let (go, sco, oai) = (tmp("gelu.out"), tmp("scale.out"), tmp("swiglu_oai.out"));
    let gelu_alone_out = tmp("gelu_alone.out");
    let (gf, uf, bf) = (write_f32("g", &g), write_f32("u", &u), write_f32("b", &b));
    run(
        exe,
        &[
            &"silu_add",
            &gf,
            &uf,
            &bf,
            &so,
            &ao,
            &bo,
            &go,
            &sco,
            &oai,
            &gelu_alone_out,
        ],
    );
    // gpt-oss's clamped SwiGLU: `expf` of the C library against Rust's `exp`, within a
    // tolerance (the inputs reach past the clamp at ±7).
    let mut swiglu = g.clone();
    swiglu_oai_mul(&mut swiglu, &u);
    let swiglu: Vec<f64> = swiglu.iter().map(|&v| v as f64).collect();
    close("swiglu_oai_mul", seed, &read_f32(&oai), &swiglu, 1e-6);
    // GELU through the same exp polynomial and roundings: bit for bit.
    same_bits("gelu_tanh_mul", seed, &read_f32(&go), &gelu);
    let mut gelu_alone = g.clone();
    gelu_tanh(&mut gelu_alone);
    same_bits("gelu", seed, &read_f32(&gelu_alone_out), &gelu_alone);
    same_bits("scale", seed, &read_f32(&sco), &scaled);
    same_bits("silu_mul", seed, &read_f32(&so), &silu);
    same_bits("add", seed, &read_f32(&ao), &sum);
    same_bits("add_bias", seed, &read_f32(&bo), &biased);
}

/// The rows a mixture of experts moves: gathered by token, added back weighted (one fused
/// multiply-add per element, as the CPU's `axpy`), and a fill.
#[test]
fn expert_rows_are_gathered_and_added_back_as_on_the_cpu() {
    let Some(exe) = harness() else { return };
    let (mut r, seed) = rng();
    let (dim, n_src) = (96, 7);
    let src = random(&mut r, n_src * dim, 2.0);
    let idx: Vec<u32> = vec![5, 0, 3, 6];
    let w = random(&mut r, idx.len(), 1.0);
    let mut gathered = Vec::new();
    for &i in &idx {
        gathered.extend_from_slice(&src[i as usize * dim..(i as usize + 1) * dim]);
    }
    let mut dst = src.clone();
    for (k, &i) in idx.iter().enumerate() {
        let row = &gathered[k * dim..(k + 1) * dim];
        axpy(
            w[k],
            row,
            &mut dst[i as usize * dim..(i as usize + 1) * dim],
        );
    }
    let (go, so, fo) = (tmp("rows.gather"), tmp("rows.scatter"), tmp("rows.fill"));
    let (sf, xf, wf) = (
        write_f32("rows.src", &src),
        write_u32("rows.idx", &idx),
        write_f32("rows.w", &w),
    );
    run(exe, &[&"rows", &"96", &sf, &xf, &wf, &go, &so, &fo]);
    same_bits("gather_rows", seed, &read_f32(&go), &gathered);
    same_bits("scatter_add_rows", seed, &read_f32(&so), &dst);
    same_bits("fill", seed, &read_f32(&fo), &vec![0.5; src.len()]);
}

#[test]
fn kv_write_puts_each_position_behind_its_block_table() {
    let Some(exe) = harness() else { return };
    let (mut r, seed) = rng();
    let (kv_dim, bs, n_blocks) = (24, 4, 6);
    // Positions 0..10 of one sequence whose blocks are 5, 2, 0 (3 blocks of 4).
    let table: Vec<u32> = vec![5, 2, 0];
    let pos: Vec<u32> = (0..10).collect();
    let k = random(&mut r, pos.len() * kv_dim, 1.0);
    let v = random(&mut r, pos.len() * kv_dim, 1.0);
    let (ko, vo) = (tmp("kv.k.out"), tmp("kv.v.out"));
    let (kf, vf, pf, tf) = (
        write_f32("kv.k", &k),
        write_f32("kv.v", &v),
        write_u32("kv.pos", &pos),
        write_u32("kv.table", &table),
    );
    run(
        exe,
        &[&"kv_write", &"24", &"4", &"6", &kf, &vf, &pf, &tf, &ko, &vo],
    );
    // The pool is [layer 2][block 6][slot 4][kv_dim 24]; layer 1 was written.
    let mut want_k = vec![0f32; 2 * n_blocks * bs * kv_dim];
    let mut want_v = want_k.clone();
    for (t, &p) in pos.iter().enumerate() {
        let block = table[p as usize / bs] as usize;
        let at = ((n_blocks + block) * bs + p as usize % bs) * kv_dim;
        want_k[at..at + kv_dim].copy_from_slice(&k[t * kv_dim..(t + 1) * kv_dim]);
        want_v[at..at + kv_dim].copy_from_slice(&v[t * kv_dim..(t + 1) * kv_dim]);
    }
    same_bits("kv_write K", seed, &read_f32(&ko), &want_k);
    same_bits("kv_write V", seed, &read_f32(&vo), &want_v);
}
