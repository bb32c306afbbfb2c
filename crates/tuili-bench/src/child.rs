//! The measuring side of `tuili bench`, run in a child process per thread count: the
//! process-wide pool takes its size at first use, so each `-t` needs a fresh process.
//!
//! A child prints one result per line on stdout (`key value...`, parsed by the parent);
//! everything meant for people goes to stderr.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tuili_backend::pool;
use tuili_engine::runner::blocks_for;
use tuili_engine::{Device, KvLayout, KvType, Runner};
use tuili_models::{KvPool, Model, SeqChunk, SplitMix64, SEQ_BLOCK};

use crate::{membw, Host};

/// One test: a prompt of `n` tokens in one batch, or `n` single-token decode steps of
/// one sequence or of several side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// `ppN`: one forward pass over `n` tokens on an empty cache.
    Prompt(usize),
    /// `tgN`: `n` forward passes of one token each, from an empty cache.
    Gen(usize),
    /// `tgNxS`: `n` forward passes of `s` sequences of one token each (a batch of `s`
    /// decode steps, as a serving engine runs them), from empty caches.
    Batch(usize, usize),
}

impl Test {
    /// llama-bench's name: `pp512`, `tg128`; `tg128x64` for 64 sequences.
    pub fn name(self) -> String {
        match self {
            Test::Prompt(n) => format!("pp{n}"),
            Test::Gen(n) => format!("tg{n}"),
            Test::Batch(n, s) => format!("tg{n}x{s}"),
        }
    }

    /// Tokens processed per repetition.
    pub fn tokens(self) -> usize {
        match self {
            Test::Prompt(n) | Test::Gen(n) => n,
            Test::Batch(n, s) => n * s,
        }
    }

    /// Positions one sequence of the test fills, and sequences.
    fn shape(self) -> (usize, usize) {
        match self {
            Test::Prompt(n) | Test::Gen(n) => (n, 1),
            Test::Batch(n, s) => (n, s),
        }
    }

    /// Parses `pp512` / `tg128` / `tg128x64`.
    pub fn parse(s: &str) -> Option<Test> {
        let n = |rest: &str| rest.parse::<usize>().ok().filter(|&n| n > 0);
        if let Some(rest) = s.strip_prefix("pp") {
            n(rest).map(Test::Prompt)
        } else {
            let rest = s.strip_prefix("tg")?;
            match rest.split_once('x') {
                Some((a, b)) => Some(Test::Batch(n(a)?, n(b)?)),
                None => n(rest).map(Test::Gen),
            }
        }
    }
}

/// Sets the pool to `threads` and checks that it took: the pool must not have been
/// used before in this process.
fn init_pool(threads: usize) -> Result<&'static pool::ThreadPool> {
    pool::set_threads(threads);
    let p = pool::global();
    if p.n_threads() != threads {
        bail!(
            "the thread pool has {} threads, asked for {threads}",
            p.n_threads()
        );
    }
    Ok(p)
}

/// Measures read bandwidth with `threads` threads and prints `membw BYTES S1 S2 ...`
/// (bytes read per pass, then bytes/s per pass). On a GPU: a device-to-device copy,
/// counting bytes read plus bytes written.
pub fn run_membw(threads: usize, bytes: usize, passes: usize, dev: Device) -> Result<()> {
    let p = init_pool(threads)?;
    let samples = match dev {
        Device::Cuda(n) => tuili_cuda::CudaOps::new(n)?.copy_bandwidth(bytes, passes)?,
        Device::Cpu | Device::Auto => membw::measure(p, bytes, passes).samples,
    };
    let bw = membw::Bandwidth {
        threads,
        bytes,
        samples,
    };
    let samples: Vec<String> = bw.samples.iter().map(|s| format!("{s:.0}")).collect();
    println!("membw {} {}", bw.bytes, samples.join(" "));
    Ok(())
}

/// Fills positions `0..depth` of every sequence (block tables `tables`) through
/// `Runner::fill_kv`: on the CPU, pseudo-random K/V written straight into the pool (a
/// real prefill of 16k tokens takes minutes on a small CPU; decode speed does not depend
/// on the values), elsewhere a prefill.
fn prefill(runner: &mut dyn Runner, tables: &[Vec<u32>], depth: usize) -> Result<()> {
    for blocks in tables {
        runner.fill_kv(blocks, depth)?;
    }
    Ok(())
}

/// Seconds for one repetition of `test`, each sequence starting at position `depth`
/// (what is before it stays); sequence `j` uses block table `tables[j]`.
fn run_once(
    runner: &mut dyn Runner,
    tables: &[Vec<u32>],
    test: Test,
    depth: usize,
    rng: &mut SplitMix64,
) -> Result<f64> {
    // Random token ids, as llama-bench uses (`std::rand() % n_vocab`).
    let vocab = runner.config().vocab;
    match test {
        Test::Prompt(n) => {
            let tokens: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).collect();
            let t0 = Instant::now();
            // Logits of the last token only, as llama.cpp computes for a prompt batch.
            let chunk = SeqChunk {
                tokens: &tokens,
                start: depth,
                blocks: &tables[0],
                local_blocks: &[],
                logits_from: n - 1,
            };
            let logits = runner.forward_batch(&[chunk])?;
            let secs = t0.elapsed().as_secs_f64();
            std::hint::black_box(logits);
            Ok(secs)
        }
        Test::Gen(n) | Test::Batch(n, _) => {
            let streams = test.shape().1;
            let mut tokens: Vec<[u32; 1]> =
                (0..streams).map(|_| [rng.below(vocab) as u32]).collect();
            let t0 = Instant::now();
            for pos in 0..n {
                let chunks: Vec<SeqChunk> = tokens
                    .iter()
                    .zip(tables)
                    .map(|(t, blocks)| SeqChunk {
                        tokens: t,
                        start: depth + pos,
                        blocks,
                        local_blocks: &[],
                        logits_from: 0,
                    })
                    .collect();
                let logits = runner.forward_batch(&chunks)?;
                std::hint::black_box(logits);
                for t in tokens.iter_mut() {
                    t[0] = rng.below(vocab) as u32;
                }
            }
            Ok(t0.elapsed().as_secs_f64())
        }
    }
}

/// How a model child runs its tests.
#[derive(Debug, Clone, Copy)]
pub struct ModelRun {
    /// Threads of the pool.
    pub threads: usize,
    /// Timed repetitions per test (after one warm-up).
    pub reps: usize,
    /// Where the model runs (resolved).
    pub dev: Device,
    /// How the KV cache stores keys and values.
    pub kv: (KvType, KvType),
    /// Positions prefilled in each sequence before a test's runs.
    pub depth: usize,
}

/// Loads `path` (quantized to `quant` if given) with a pool of `run.threads`, prefills
/// `run.depth` positions of every sequence, runs each test once to warm up and then
/// `run.reps` times from there, and prints `sample TEST SECS...` per test, then
/// `threads N` (the pool size), `depth N`, `kv_types K V`, `kv_cache_bytes BYTES` and
/// `peak_rss BYTES`.
pub fn run_model(
    path: &Path,
    quant: Option<&str>,
    tests: &[Test],
    run: &ModelRun,
    host: &dyn Host,
) -> Result<()> {
    let ModelRun {
        threads,
        reps,
        dev,
        kv: (k_type, v_type),
        depth,
    } = *run;
    init_pool(threads)?;
    let file = host.open(path, quant)?;
    let mut model = Model::load(&file).with_context(|| format!("loading {}", path.display()))?;
    // One pool for the largest test: each sequence gets its own blocks (llama-bench sizes
    // its context to the test; a larger pool only costs memory that is never touched).
    let need = depth + tests.iter().map(|t| t.shape().0).max().unwrap_or(1).max(1);
    let streams = tests.iter().map(|t| t.shape().1).max().unwrap_or(1);
    if need > model.config().ctx_len {
        // Speed does not depend on what the positions mean: run, but say so.
        eprintln!(
            "warning: {}: a test reaches position {need}, past the model's trained context of {}",
            path.display(),
            model.config().ctx_len
        );
    }
    model.use_context(need);
    let per_seq = blocks_for(need, SEQ_BLOCK);
    let kv = KvLayout {
        n_blocks: per_seq * streams,
        block_size: SEQ_BLOCK,
        n_local_blocks: 0,
        k_type,
        v_type,
    };
    let tables: Vec<Vec<u32>> = (0..streams)
        .map(|j| ((j * per_seq) as u32..((j + 1) * per_seq) as u32).collect())
        .collect();
    let mut runner = host.runner(&model, dev, kv)?;
    let mut rng = SplitMix64::new(0x7475_696c_6920_6265);
    for &test in tests {
        let tables = &tables[..test.shape().1];
        prefill(runner.as_mut(), tables, depth)
            .with_context(|| format!("prefilling {depth} positions for {}", test.name()))?;
        run_once(runner.as_mut(), tables, test, depth, &mut rng)
            .with_context(|| format!("warm-up run of {}", test.name()))?;
        let mut secs = Vec::with_capacity(reps);
        for _ in 0..reps {
            secs.push(run_once(runner.as_mut(), tables, test, depth, &mut rng)?);
        }
        let s: Vec<String> = secs.iter().map(|s| format!("{s:.9}")).collect();
        println!("sample {} {}", test.name(), s.join(" "));
    }
    // The pool that ran the tests, reported so the parent can check it against `-t`.
    println!("threads {}", pool::global().n_threads());
    println!("depth {depth}");
    println!("kv_types {k_type} {v_type}");
    println!(
        "kv_cache_bytes {}",
        KvPool::block_bytes(model.config(), SEQ_BLOCK, k_type, v_type) * kv.n_blocks
    );
    match peak_rss() {
        Some(b) => println!("peak_rss {b}"),
        None => eprintln!("warning: VmHWM not found in /proc/self/status"),
    }
    Ok(())
}

/// Peak resident set size of this process (`VmHWM`), in bytes; `None` off Linux.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vmhwm(&status)
}

/// The `VmHWM:  1234 kB` line of `/proc/self/status`, in bytes.
fn parse_vmhwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut parts = line["VmHWM:".len()..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => n.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_round_trip() {
        for t in [
            Test::Prompt(512),
            Test::Gen(128),
            Test::Gen(1),
            Test::Batch(128, 64),
        ] {
            assert_eq!(Test::parse(&t.name()), Some(t));
        }
        assert_eq!(Test::parse("pp0"), None);
        assert_eq!(Test::parse("tgx"), None);
        assert_eq!(Test::parse("xx12"), None);
        assert_eq!(Test::parse("tg128x0"), None);
        assert_eq!(Test::parse("tg12x"), None);
    }

    #[test]
    fn vmhwm_is_read_in_bytes() {
        let status = "Name:\ttuili\nVmPeak:\t  999 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 10 kB\n";
        assert_eq!(parse_vmhwm(status), Some(2048 * 1024));
        assert_eq!(parse_vmhwm("VmRSS: 1 kB\n"), None);
        assert_eq!(parse_vmhwm("VmHWM: 12 MB\n"), None);
        // This process has one.
        assert!(peak_rss().is_some_and(|b| b > 0));
    }
}
