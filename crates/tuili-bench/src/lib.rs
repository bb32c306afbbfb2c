//! `tuili bench`: prompt and generation speed with llama-bench's definitions, and the
//! memory bandwidth that bounds generation.
//!
//! - `ppN`: tokens/s of one forward pass over `N` random tokens on an empty KV cache;
//! - `tgN`: tokens/s of `N` forward passes of one random token each, starting from an
//!   empty cache (llama-bench runs tg with no prompt);
//! - `tgNxS` (with `--streams S`): `N` steps of `S` sequences decoding side by side, one
//!   forward pass per step over all of them, as the serving engine batches them; t/s
//!   counts the tokens of all sequences;
//! - `--device cuda` runs the model on a GPU, and `--membw` then measures the GPU's
//!   memory bandwidth by a device-to-device copy (bytes read plus bytes written);
//! - each test runs once to warm up, then `-r` times; the table shows mean ± sample
//!   standard deviation of the per-repetition tokens/s, as llama-bench does.
//!
//! The thread pool takes its size at first use, so each model × thread count runs in a
//! child process of this same binary (`--child`), which reports back on stdout.
//!
//! This crate is the harness; the binary that hosts it (`tuili`) parses the command
//! line into [`Options`] and supplies what only it knows through [`Host`]. A child is
//! started as `<current executable> bench --child ...` with the flags of `tuili bench`,
//! so the host must route that command line back to [`bench`].
//!
//! Errors are `anyhow` errors with context, unlike the other library crates' `thiserror`
//! enums: every one ends as a message to the person running the benchmark, and nothing
//! matches on them.
#![deny(missing_docs)]

mod child;
pub mod membw;
mod report;
pub mod synthetic;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use tuili_engine::{Device, KvLayout, KvType, Runner};
use tuili_gguf::{GgmlType, GgufFile};
use tuili_models::Model;

pub use child::Test;
use membw::Bandwidth;
use report::Reporter;

/// Most threads `-t` accepts.
const MAX_THREADS: usize = 1024;
/// Most repetitions `-r` accepts.
const MAX_REPS: usize = 10_000;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A markdown table in llama-bench's layout.
    Md,
    /// A JSON array, one object per test (llama-bench's field names where they exist).
    Json,
}

/// What a child process measures (internal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ChildKind {
    /// Run the tests on one model.
    Model,
    /// Measure read bandwidth.
    Membw,
}

/// What the host binary supplies: the models it knows by name, how it opens one, and how
/// it puts a model on a device.
pub trait Host {
    /// The model a `-m` entry names: a path, or a known model name (pulled on first use).
    fn model_path(&self, name: &str) -> Result<PathBuf>;

    /// The model at `path` as the host loads it for every command: a GGUF file, or
    /// whatever else the host converts (a Hugging Face directory), quantized on load
    /// when `quant` names a type.
    fn open(&self, path: &Path, quant: Option<&str>) -> Result<Arc<GgufFile>>;

    /// `model` on `device` (resolved: not `auto`) with a KV pool of `kv`.
    fn runner<'m>(
        &self,
        model: &'m Model,
        device: Device,
        kv: KvLayout,
    ) -> Result<Box<dyn Runner + 'm>>;

    /// A status line for people (stderr).
    fn status(&self, msg: &str);
}

/// What `tuili bench` was asked to do: its command line, parsed.
#[derive(Debug, Clone)]
pub struct Options {
    /// GGUF files or known model names; empty: `default_model`, unless `synthetic` or
    /// `membw` alone is given.
    pub models: Vec<String>,
    /// The model benched when none is named.
    pub default_model: String,
    /// Prompt lengths; each is one `ppN` test (0 = none).
    pub n_prompt: Vec<usize>,
    /// Generation lengths; each is one `tgN` test (0 = none).
    pub n_gen: Vec<usize>,
    /// Sequences decoding side by side: each `n_gen` length also runs as one `tgNxS`
    /// test per count above 1.
    pub streams: Vec<usize>,
    /// Where the models run.
    pub device: Device,
    /// How the KV cache stores keys and values (`None`: the device's default).
    pub cache_types: (Option<KvType>, Option<KvType>),
    /// Context depth: each sequence's cache holds this many positions before the timed
    /// runs, which start from there (llama-bench's `-d`).
    pub depth: usize,
    /// Thread counts (empty: all cores).
    pub threads: Vec<usize>,
    /// Timed repetitions of each test, after one warm-up run.
    pub reps: usize,
    /// Output format.
    pub output: Format,
    /// Also measure read bandwidth per thread count, and show each tg result as a
    /// percentage of the bound it sets.
    pub membw: bool,
    /// Buffer size of the bandwidth measurement in MiB.
    pub membw_mib: usize,
    /// Weight types of SmolLM2-135M-shaped random models to bench too (e.g. `q4_k`).
    pub synthetic: Vec<String>,
    /// Where the synthetic models are written.
    pub synthetic_dir: PathBuf,
    /// Only write the synthetic models and print their paths.
    pub write_only: bool,
    /// Quantize each model on load to this type (llama.cpp's name) before it is benched.
    pub quant: Option<String>,
    /// Internal: measure in this process (one model, one thread count).
    pub child: Option<ChildKind>,
}

/// Size, parameters and bytes read per generated token of one model file.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The file.
    pub path: PathBuf,
    /// llama-bench's description: architecture, size class, file type.
    pub desc: String,
    /// Bytes of all tensors.
    pub size: u64,
    /// Elements of all tensors.
    pub params: u64,
    /// Weight bytes one decode step reads: every tensor except the embedding table, of
    /// which one row is read, unless the output is tied to it (then all of it is read).
    pub bytes_per_token: u64,
    /// Length of the file as loaded (after conversion or `--quant`: the bytes in memory).
    pub file_len: u64,
}

impl ModelInfo {
    /// Reads the tensor table of `file`, loaded from `path` (no tensor data is touched).
    pub fn of(path: &Path, file: &GgufFile) -> Result<ModelInfo> {
        let file_len = file.data().len() as u64;
        let size: u64 = file.tensors().iter().map(|t| t.n_bytes).sum();
        let params: u64 = file.tensors().iter().map(|t| t.n_elements()).sum();
        let embd = file
            .tensor("token_embd.weight")
            .with_context(|| format!("{}: no token_embd.weight tensor", path.display()))?;
        let tied = file.tensor("output.weight").is_none();
        let bytes_per_token = if tied {
            size
        } else {
            size - embd.n_bytes + embd.n_bytes / embd.rows().max(1)
        };
        let arch = file.get_str("general.architecture").unwrap_or("?");
        let desc = format!("{arch} {} {}", size_class(params), file_type_name(file));
        Ok(ModelInfo {
            path: path.to_path_buf(),
            desc,
            size,
            params,
            bytes_per_token,
            file_len,
        })
    }
}

/// `135M`, `1.5B`: the parameter count the way model names round it.
fn size_class(params: u64) -> String {
    let p = params as f64;
    if p >= 1e9 {
        format!("{:.1}B", p / 1e9)
    } else {
        format!("{:.0}M", p / 1e6)
    }
}

/// llama.cpp's name of `general.file_type` (`llama_model_ftype_name`), or the type
/// holding most matrix bytes, marked "(guessed)" as llama.cpp does.
fn file_type_name(file: &GgufFile) -> String {
    let known = match file.get_u64("general.file_type").ok() {
        Some(0) => Some("all F32"),
        Some(1) => Some("F16"),
        Some(2) => Some("Q4_0"),
        Some(3) => Some("Q4_1"),
        Some(7) => Some("Q8_0"),
        Some(8) => Some("Q5_0"),
        Some(9) => Some("Q5_1"),
        Some(10) => Some("Q2_K - Medium"),
        Some(11) => Some("Q3_K - Small"),
        Some(12) => Some("Q3_K - Medium"),
        Some(13) => Some("Q3_K - Large"),
        Some(14) => Some("Q4_K - Small"),
        Some(15) => Some("Q4_K - Medium"),
        Some(16) => Some("Q5_K - Small"),
        Some(17) => Some("Q5_K - Medium"),
        Some(18) => Some("Q6_K"),
        Some(32) => Some("BF16"),
        _ => None,
    };
    if let Some(name) = known {
        return name.to_string();
    }
    let mut bytes: Vec<(GgmlType, u64)> = Vec::new();
    for t in file.tensors().iter().filter(|t| t.dims.len() >= 2) {
        match bytes.iter_mut().find(|(ty, _)| *ty == t.ty) {
            Some((_, b)) => *b += t.n_bytes,
            None => bytes.push((t.ty, t.n_bytes)),
        }
    }
    match bytes.iter().max_by_key(|(_, b)| *b) {
        Some((ty, _)) => format!("{} (guessed)", ty.name()),
        None => "no matrices".to_string(),
    }
}

/// The tests `-p`, `-n` and `--streams` ask for: prompts first, then generations, as
/// llama-bench, then batched generations.
fn tests_of(n_prompt: &[usize], n_gen: &[usize], streams: &[usize]) -> Vec<Test> {
    let pp = n_prompt
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| Test::Prompt(n));
    let tg = n_gen.iter().filter(|&&n| n > 0).map(|&n| Test::Gen(n));
    let batched = n_gen.iter().filter(|&&n| n > 0).flat_map(|&n| {
        streams
            .iter()
            .filter(|&&s| s > 1)
            .map(move |&s| Test::Batch(n, s))
    });
    pp.chain(tg).chain(batched).collect()
}

/// Checks the numbers a user gave, naming the limit that was broken.
fn check_args(a: &Options, threads: &[usize]) -> Result<()> {
    if let Some(&t) = threads.iter().find(|&&t| t == 0 || t > MAX_THREADS) {
        bail!("-t must be between 1 and {MAX_THREADS} threads, got {t}");
    }
    if a.reps == 0 || a.reps > MAX_REPS {
        bail!("-r must be between 1 and {MAX_REPS}, got {}", a.reps);
    }
    if a.membw_mib == 0 || a.membw_mib > 1 << 20 {
        bail!(
            "--membw-mib must be between 1 and {} MiB, got {}",
            1 << 20,
            a.membw_mib
        );
    }
    Ok(())
}

/// `tuili bench` (or, with `child` set, one child's measurement).
pub fn bench(a: &Options, host: &dyn Host) -> Result<()> {
    let threads = if a.threads.is_empty() {
        vec![std::thread::available_parallelism().map_or(1, |n| n.get())]
    } else {
        a.threads.clone()
    };
    check_args(a, &threads)?;
    let tests = tests_of(&a.n_prompt, &a.n_gen, &a.streams);
    // `auto` in a benchmark: the first GPU if there is one (sizes are the user's call).
    let dev = match a.device {
        Device::Auto => match tuili_cuda::devices() {
            Ok(_) => Device::Cuda(0),
            Err(e) => {
                if a.child.is_none() {
                    host.status(&format!("device auto: cpu ({e})"));
                }
                Device::Cpu
            }
        },
        d => d,
    };
    if a.child.is_none() {
        dev.check_early()?;
    }
    let membw_bytes = a.membw_mib << 20;

    if let Some(kind) = a.child {
        let &[t] = threads.as_slice() else {
            bail!("--child takes exactly one thread count, got {threads:?}");
        };
        return match kind {
            ChildKind::Membw => child::run_membw(t, membw_bytes, membw::DEFAULT_PASSES, dev),
            ChildKind::Model => {
                let [m] = a.models.as_slice() else {
                    bail!("--child takes exactly one model, got {}", a.models.len());
                };
                let (k, v) = a.cache_types;
                let run = child::ModelRun {
                    threads: t,
                    reps: a.reps,
                    dev,
                    kv: (
                        k.unwrap_or(dev.default_kv_type()),
                        v.unwrap_or(dev.default_kv_type()),
                    ),
                    depth: a.depth,
                };
                child::run_model(Path::new(m), a.quant.as_deref(), &tests, &run, host)
            }
        };
    }

    let mut paths = Vec::new();
    let default_model = a.models.is_empty() && a.synthetic.is_empty() && !a.membw;
    let names: Vec<String> = if default_model {
        vec![a.default_model.clone()]
    } else {
        a.models.clone()
    };
    if !a.write_only {
        for m in &names {
            paths.push(host.model_path(m)?);
        }
    }
    for s in &a.synthetic {
        paths.push(synthetic::ensure(
            &a.synthetic_dir,
            synthetic::parse_type(s)?,
        )?);
    }
    if a.write_only {
        for p in &paths {
            println!("{}", p.display());
        }
        return Ok(());
    }
    if !paths.is_empty() && tests.is_empty() {
        bail!("nothing to run: -p and -n are all 0");
    }

    let backend = match dev {
        Device::Cuda(_) => "CUDA",
        _ => "CPU",
    };
    let mut rep = Reporter::new(a.output, a.membw, backend);
    let mut bandwidth: Vec<Bandwidth> = Vec::new();
    if a.membw {
        for &t in &threads {
            let bw = spawn_membw(t, a.membw_mib, dev)?;
            rep.membw(&bw);
            bandwidth.push(bw);
        }
    }
    for path in &paths {
        // Opened here only for its tensor table; each child loads its own copy.
        let info = ModelInfo::of(path, &*host.open(path, a.quant.as_deref())?)?;
        for &t in &threads {
            let out = spawn_model(&info.path, t, a)?;
            let bw = bandwidth.iter().find(|b| b.threads == t);
            rep.model_run(&info, t, &out, bw);
        }
    }
    rep.finish();
    Ok(())
}

/// What one model child reported.
#[derive(Debug, Default)]
pub struct ChildOutput {
    /// Seconds of each repetition, per test.
    pub samples: Vec<(Test, Vec<f64>)>,
    /// Peak resident memory of the child (VmHWM).
    pub peak_rss: Option<u64>,
    /// Bytes of the child's KV cache.
    pub kv_cache_bytes: Option<u64>,
    /// Size of the thread pool that ran the tests.
    pub threads: Option<usize>,
    /// Positions in each sequence's cache before the timed runs.
    pub depth: usize,
    /// How the KV cache stored keys and values (`f16`, ...).
    pub kv_types: Option<(String, String)>,
}

/// Parses a model child's stdout.
fn parse_child(stdout: &str) -> Result<ChildOutput> {
    let mut out = ChildOutput::default();
    for line in stdout.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("sample") => {
                let name = f.next().unwrap_or("");
                let test = Test::parse(name)
                    .with_context(|| format!("bad test name in child output: {line}"))?;
                let secs = f
                    .map(|s| s.parse::<f64>().ok().filter(|v| *v > 0.0))
                    .collect::<Option<Vec<f64>>>()
                    .with_context(|| format!("bad sample in child output: {line}"))?;
                out.samples.push((test, secs));
            }
            Some("peak_rss") => out.peak_rss = f.next().and_then(|v| v.parse().ok()),
            Some("kv_cache_bytes") => out.kv_cache_bytes = f.next().and_then(|v| v.parse().ok()),
            Some("threads") => out.threads = f.next().and_then(|v| v.parse().ok()),
            Some("depth") => out.depth = f.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            Some("kv_types") => {
                if let (Some(k), Some(v)) = (f.next(), f.next()) {
                    out.kv_types = Some((k.to_string(), v.to_string()));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Runs this binary as a child with `args` and returns its stdout.
fn spawn(args: &[String], what: &str) -> Result<String> {
    let exe = std::env::current_exe().context("finding the tuili binary")?;
    let out = Command::new(exe)
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting the child process for {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({})", out.status);
    }
    String::from_utf8(out.stdout).with_context(|| format!("{what}: output is not UTF-8"))
}

/// Measures bandwidth with `threads` threads (or of the GPU) in a child process.
fn spawn_membw(threads: usize, mib: usize, dev: Device) -> Result<Bandwidth> {
    let args = [
        "--child".into(),
        "membw".into(),
        "-t".into(),
        threads.to_string(),
        "--membw-mib".into(),
        mib.to_string(),
        "--device".into(),
        dev.to_string(),
    ];
    let what = format!("the bandwidth measurement with {threads} threads");
    let stdout = spawn(&args, &what)?;
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("membw "))
        .with_context(|| format!("{what}: no result"))?;
    let nums: Vec<f64> = line
        .split_whitespace()
        .map(|v| v.parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{what}: bad result '{line}'"))?;
    let Some((&bytes, samples)) = nums.split_first() else {
        bail!("{what}: empty result");
    };
    Ok(Bandwidth {
        threads,
        bytes: bytes as usize,
        samples: samples.to_vec(),
    })
}

/// Runs the tests on `path` with `threads` threads in a child process.
fn spawn_model(path: &Path, threads: usize, a: &Options) -> Result<ChildOutput> {
    let join = |v: &[usize]| {
        v.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut args = vec![
        "--child".into(),
        "model".into(),
        "-m".into(),
        path.display().to_string(),
        "-t".into(),
        threads.to_string(),
        "-p".into(),
        join(&a.n_prompt),
        "-n".into(),
        join(&a.n_gen),
        "-r".into(),
        a.reps.to_string(),
        "--device".into(),
        a.device.to_string(),
        "-d".into(),
        a.depth.to_string(),
    ];
    if let Some(t) = a.cache_types.0 {
        args.extend(["--cache-type-k".into(), t.to_string()]);
    }
    if let Some(t) = a.cache_types.1 {
        args.extend(["--cache-type-v".into(), t.to_string()]);
    }
    if !a.streams.is_empty() {
        args.extend(["--streams".into(), join(&a.streams)]);
    }
    if let Some(q) = &a.quant {
        args.extend(["--quant".into(), q.clone()]);
    }
    let what = format!("the benchmark of {} with {threads} threads", path.display());
    let out = parse_child(&spawn(&args, &what)?)?;
    if out.threads != Some(threads) {
        bail!("{what}: the child's pool had {:?} threads", out.threads);
    }
    let want = tests_of(&a.n_prompt, &a.n_gen, &a.streams);
    let got: Vec<Test> = out.samples.iter().map(|(t, _)| *t).collect();
    if got != want {
        bail!("{what}: ran {got:?}, expected {want:?}");
    }
    if let Some((t, s)) = out.samples.iter().find(|(_, s)| s.len() != a.reps) {
        bail!(
            "{what}: {} has {} samples, expected {}",
            t.name(),
            s.len(),
            a.reps
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tests_follow_llama_bench_order_and_skip_zero() {
        assert_eq!(
            tests_of(&[512, 0], &[128], &[]),
            vec![Test::Prompt(512), Test::Gen(128)]
        );
        assert_eq!(tests_of(&[0], &[0], &[64]), vec![]);
        assert_eq!(
            tests_of(&[512], &[128], &[1, 64]),
            vec![Test::Prompt(512), Test::Gen(128), Test::Batch(128, 64)]
        );
    }

    #[test]
    fn child_output_parses_and_rejects_garbage() {
        let out = parse_child(
            "sample pp512 1.5 2.0\nsample tg128 0.5\nthreads 2\nkv_cache_bytes 100\npeak_rss 4096\n",
        )
        .expect("parses");
        assert_eq!(out.samples.len(), 2);
        assert_eq!(out.samples[0], (Test::Prompt(512), vec![1.5, 2.0]));
        assert_eq!(out.peak_rss, Some(4096));
        assert_eq!(out.kv_cache_bytes, Some(100));
        assert_eq!(out.threads, Some(2));
        assert!(parse_child("sample pp512 abc\n").is_err());
        assert!(parse_child("sample pp512 0\n").is_err());
        assert!(parse_child("sample zz 1\n").is_err());
    }

    #[test]
    fn size_classes_round_like_model_names() {
        assert_eq!(size_class(134_515_008), "135M");
        assert_eq!(size_class(1_543_714_304), "1.5B");
    }
}
