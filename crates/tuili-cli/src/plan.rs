//! `tuili plan`: what a model will do on a chip (`tuili-planner`), the local machine's
//! profile (`--probe`), calibration from `tuili bench` results (`--calibrate`) and the
//! check of predictions against other bench results (`--check`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use tuili_backend::pool::ThreadPool;
use tuili_bench::membw;
use tuili_engine::serve::EngineConfig;
use tuili_gguf::GgufFile;
use tuili_models::{Config, KvType, Model};
use tuili_planner::bench::BenchRun;
use tuili_planner::chip::{self, Calibration, ChipProfile, Serving, Sourced};
use tuili_planner::cost::{KvFormat, ModelCost, WeightFormat};
use tuili_planner::fit::{self, Obs};
use tuili_planner::plan::{self, Plan, PlanOptions};
use tuili_planner::probe;
use tuili_planner::report;
use tuili_planner::sim::{self, LengthOf, Lengths};
use tuili_planner::step::{step_ops, Hardware, ServeCoeffs};
use tuili_planner::PlanError;

use crate::registry;

mod served;
mod steps;

/// Output format of `tuili plan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// A table for people.
    Table,
    /// The stable JSON object (see docs/PLANNER.md).
    Json,
    /// A self-contained HTML page with charts; --chip may list several chips.
    Html,
}

/// `tuili plan`.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// A GGUF file, a Hugging Face model directory or a known model name.
    #[arg(short = 'm', long = "model")]
    model: Option<String>,
    /// Chip profile name (see --list-chips); `local` is the profile --probe writes.
    /// With `-o html`, a comma-separated list.
    #[arg(long = "chip", default_value = "local")]
    chip: String,
    /// Plan as if every matrix were stored as this (q4_k, q8_0, f16, bf16, fp8, int4...).
    #[arg(long = "quant")]
    quant: Option<String>,
    /// Sequences decoding together.
    #[arg(long = "batch", default_value_t = 1)]
    batch: usize,
    /// Context length of each sequence (default: 4096, or the model's trained context
    /// if shorter).
    #[arg(long = "ctx")]
    ctx: Option<usize>,
    /// CPU threads (CPU chips; default: all).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    /// KV cache type of keys and values (f32, f16, bf16, q8_0).
    #[arg(long = "cache-type", default_value = "f16")]
    cache_type: String,
    /// Price per chip-hour in USD, replacing the profile's.
    #[arg(long = "price")]
    price: Option<f64>,
    /// Split the model over this many chips (tensor parallelism).
    #[arg(long = "tp", default_value_t = 1)]
    tp: usize,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = PlanFormat::Table)]
    output: PlanFormat,
    /// List the chip profiles and exit.
    #[arg(long = "list-chips")]
    list_chips: bool,
    /// Measure this machine and write its profile `local`.
    #[arg(long = "probe")]
    probe: bool,
    /// Thermal design power of this machine for --probe, W.
    #[arg(long = "tdp", default_value_t = 65.0)]
    tdp: f64,
    /// Idle power of this machine for --probe, W.
    #[arg(long = "idle-power", default_value_t = 10.0)]
    idle_power: f64,
    /// Fit the chip's efficiencies and overheads to these `tuili bench -o json` files
    /// and save them with its profile; rows marked `"served": true` (from
    /// `bench/plan-serve-check.py --serve-calibrate`) fit the server's own work per step
    /// and per token, which --simulate adds.
    #[arg(long = "calibrate", value_delimiter = ',')]
    calibrate: Vec<PathBuf>,
    /// Predict the runs of these `tuili bench -o json` files and print the errors.
    #[arg(long = "check", value_delimiter = ',')]
    check: Vec<PathBuf>,
    /// Simulate serving: the engine's scheduler and KV block manager with predicted
    /// step times, Poisson arrivals at each --rate.
    #[arg(long = "simulate")]
    simulate: bool,
    /// Mean request arrivals per second for --simulate, comma-separated.
    #[arg(long = "rate", value_delimiter = ',', default_value = "1")]
    rate: Vec<f64>,
    /// Requests per simulated rate.
    #[arg(long = "requests", default_value_t = 200)]
    requests: usize,
    /// Prompt tokens per simulated request: N, A..B (uniform), lognormal:MEDIAN,SIGMA,MAX
    /// or trace:FILE (the prompt lengths of a recorded trace, drawn with replacement).
    #[arg(long = "prompt-len", default_value = "512", value_parser = prompt_lengths)]
    prompt_len: Lengths,
    /// Generated tokens per simulated request, as --prompt-len.
    #[arg(long = "output-len", default_value = "128", value_parser = output_lengths)]
    output_len: Lengths,
    /// Most sequences the simulated engine runs together (as `tuili serve`).
    #[arg(long = "max-num-seqs", default_value_t = EngineConfig::default().max_num_seqs)]
    max_num_seqs: usize,
    /// Shape of the gamma distribution of the gaps between simulated arrivals: 1 is
    /// Poisson, below 1 burstier, above 1 more regular.
    #[arg(long = "burstiness", default_value_t = 1.0)]
    burstiness: f64,
    /// Replay this recorded load instead of drawing one (JSON: a list of
    /// {arrival_s, prompt_tokens, output_tokens}).
    #[arg(long = "trace")]
    trace: Option<PathBuf>,
    /// The share of its predicted speed the chip runs at in the simulation (below 1 on
    /// a machine shared with other work, as a reference `tuili bench` run measures it).
    #[arg(long = "speed", default_value_t = 1.0)]
    speed: f64,
    /// The share of its calibrated memory bandwidth the chip runs at besides --speed
    /// (below 1 where other work loads the memory: decode slows, prefill does not).
    #[arg(long = "memory-speed", default_value_t = 1.0)]
    memory_speed: f64,
    /// Seed of the simulated arrivals.
    #[arg(long = "seed", default_value_t = 1)]
    seed: u64,
    /// Latency objectives, e.g. "ttft_p99<2s,tpot_p99<100ms": find the highest request
    /// rate one chip sustains under them (simulated, from --rate upwards).
    #[arg(long = "slo")]
    slo: Option<String>,
    /// Requests per second to serve in all, for --slo: how many chips that takes.
    #[arg(long = "target-rate")]
    target_rate: Option<f64>,
    /// Compare the steps of a served load (`tuili serve --step-log`) with the step
    /// model, by kind of step.
    #[arg(long = "steps")]
    steps: Option<PathBuf>,
}

/// Where user profiles (probed, calibrated) live.
fn user_dir() -> PathBuf {
    registry::home().join("planner").join("chips")
}

fn profiles() -> Result<Vec<ChipProfile>> {
    Ok(chip::load_all(Some(&user_dir()))?)
}

/// `tuili plan`.
pub fn plan(a: PlanArgs) -> Result<()> {
    if a.probe {
        return probe(&a);
    }
    let all = profiles()?;
    if a.list_chips {
        return list(&all);
    }
    if a.output == PlanFormat::Html {
        return html(&a, &all);
    }
    if a.chip.contains(',') {
        bail!(
            "--chip lists several chips only with -o html: got '{}'",
            a.chip
        );
    }
    let chip = chip::find(&all, &a.chip).map_err(|e| {
        if a.chip == "local" {
            anyhow::anyhow!("{e}; run `tuili plan --probe` first to measure this machine")
        } else {
            e.into()
        }
    })?;
    if !a.calibrate.is_empty() {
        return calibrate(&a, chip);
    }
    if !a.check.is_empty() {
        return check(&a, chip);
    }
    let Some(name) = &a.model else {
        bail!("tuili plan needs -m MODEL (or --list-chips, --probe, --calibrate, --check)");
    };
    let path = registry::resolve(name)?;
    let (mcfg, mut cost) = model_cost(&path)?;
    if let Some(q) = &a.quant {
        cost = cost.requantized(WeightFormat::parse(q)?);
    }
    let opts = plan_options(&a, &cost)?;
    if let Some(log) = &a.steps {
        let hw = Hardware::of(chip, chip.cpu.as_ref().and(opts.threads), opts.kv);
        let (coeffs, _, _) = plan::coefficients(chip, &all);
        steps::print(&steps::read(log)?, &cost, &hw, &coeffs, &serving_of(chip));
        return Ok(());
    }
    if a.simulate || a.slo.is_some() {
        return simulate(&a, chip, &all, &mcfg, &cost, &opts);
    }
    let p = plan::plan(
        &cost,
        &path.display().to_string(),
        a.quant.as_deref(),
        chip,
        &all,
        &opts,
    )?;
    match a.output {
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&p)?),
        PlanFormat::Table | PlanFormat::Html => print_plan(&p),
    }
    Ok(())
}

/// The options of a plan from the command line.
fn plan_options(a: &PlanArgs, cost: &ModelCost) -> Result<PlanOptions> {
    Ok(PlanOptions {
        batch: a.batch,
        ctx: a.ctx.unwrap_or(4096.min(cost.ctx_len)),
        threads: a.threads,
        kv: kv_format(&a.cache_type, &a.cache_type)?,
        usd_per_hour: a.price,
        tp: a.tp,
    })
}

/// The engine a simulation sizes its scheduler and KV pool as.
fn engine_config(a: &PlanArgs, o: &PlanOptions) -> EngineConfig {
    EngineConfig {
        n_ctx: o.ctx,
        max_num_seqs: a.max_num_seqs,
        k_type: o.kv.k,
        v_type: o.kv.v,
        ..EngineConfig::default()
    }
}

/// `-o html`: for each chip of --chip, the plan, plans at batches 1, 2, 4, ... up to
/// what fits (at most 256), and simulated serving at rates up to what the decode
/// sustains; one HTML page of them.
fn html(a: &PlanArgs, all: &[ChipProfile]) -> Result<()> {
    let Some(name) = &a.model else {
        bail!("tuili plan -o html needs -m MODEL");
    };
    let path = registry::resolve(name)?;
    let (mcfg, mut cost) = model_cost(&path)?;
    if let Some(q) = &a.quant {
        cost = cost.requantized(WeightFormat::parse(q)?);
    }
    let o = plan_options(a, &cost)?;
    let model = path.display().to_string();
    let mut chips = Vec::new();
    for chip_name in a.chip.split(',').map(str::trim) {
        let chip = chip::find(all, chip_name)?;
        let at = |batch: usize| {
            let o = PlanOptions { batch, ..o.clone() };
            plan::plan(&cost, &model, a.quant.as_deref(), chip, all, &o)
        };
        let p = at(a.batch)?;
        let most = (p.max_sequences as usize).clamp(1, 256);
        let batches = std::iter::successors(Some(1usize), |b| Some(b * 2))
            .take_while(|&b| b <= most)
            .map(at)
            .collect::<Result<Vec<_>, _>>()?;
        // Requests/s the decode of --max-num-seqs sequences sustains.
        let cap = at(a.max_num_seqs.min(most))?.decode_tokens_per_s_batch / a.output_len.mean();
        let engine = engine_config(a, &o);
        let threads = chip.cpu.as_ref().and(o.threads);
        let hw = Hardware {
            tp: o.tp,
            ..Hardware::of(chip, threads, o.kv)
        };
        let (coeffs, _, _) = plan::coefficients(chip, all);
        let server = sim::Server {
            mcfg: &mcfg,
            engine: &engine,
            cost: &cost,
            hw: &hw,
            coeffs: &coeffs,
            serving: serving_of(chip),
            speed: a.speed,
            memory_speed: a.memory_speed,
        };
        let load = [0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0]
            .iter()
            .map(|f| sim::simulate(&server, &workload(a, f * cap)))
            .collect::<Result<Vec<_>, _>>()?;
        chips.push(report::ChipReport {
            plan: p,
            batches,
            load,
        });
    }
    let r = report::Report {
        model,
        workload: format!(
            "{} requests of {} prompt + {} generated tokens per rate, Poisson arrivals \
             (burstiness {}), at most {} sequences together, rates up to what that decode \
             sustains",
            a.requests, a.prompt_len, a.output_len, a.burstiness, a.max_num_seqs
        ),
        chips,
    };
    print!("{}", report::html(&r));
    Ok(())
}

/// The configuration and the planner's view of the model at `path`, a GGUF file (no
/// tensor data is read) or a Hugging Face directory.
fn model_cost(path: &Path) -> Result<(Config, ModelCost)> {
    let file = if tuili_models::hf::is_hf_dir(path) {
        // Converted in memory as `tuili run` converts it (the weights are copied once).
        crate::convert::open_hf_dir(path)?
    } else {
        GgufFile::open(path).with_context(|| format!("opening {}", path.display()))?
    };
    let file = Arc::new(file);
    let model = Model::load(&file).with_context(|| format!("loading {}", path.display()))?;
    Ok((model.config().clone(), ModelCost::of(&model, &file)))
}

/// The server's own work the profile measured (zero where none was): only a simulated
/// server pays it, never the engine-only predictions of `tuili plan` and `--check`.
fn serving_of(chip: &ChipProfile) -> ServeCoeffs {
    chip.serving.as_ref().map(|s| s.coeffs).unwrap_or_default()
}

/// `--simulate`: one serving simulation per rate.
fn simulate(
    a: &PlanArgs,
    chip: &ChipProfile,
    all: &[ChipProfile],
    mcfg: &Config,
    cost: &ModelCost,
    o: &PlanOptions,
) -> Result<()> {
    let engine = engine_config(a, o);
    let threads = chip.cpu.as_ref().and(o.threads);
    let hw = Hardware {
        tp: o.tp,
        ..Hardware::of(chip, threads, o.kv)
    };
    let (coeffs, band, source) = plan::coefficients(chip, all);
    let server = sim::Server {
        mcfg,
        engine: &engine,
        cost,
        hw: &hw,
        coeffs: &coeffs,
        serving: serving_of(chip),
        speed: a.speed,
        memory_speed: a.memory_speed,
    };
    if let Some(text) = &a.slo {
        let slo = sim::Slo::parse(text)?;
        let w = workload(a, a.rate.first().copied().unwrap_or(1.0));
        let best = sim::max_rate(&server, &w, &slo)?;
        return print_slo(a, chip, text, band, best);
    }
    let mut results = Vec::new();
    if let Some(path) = &a.trace {
        let reqs = tuili_planner::load::read_trace(path)?;
        results.push(sim::simulate_requests(&server, &reqs, a.seed)?);
    } else {
        for &rate in &a.rate {
            results.push(sim::simulate(&server, &workload(a, rate))?);
        }
    }
    if a.output == PlanFormat::Json {
        let v = serde_json::json!({
            "chip": chip.name,
            "error_band": band,
            "calibration": source,
            "serving": serving_of(chip),
            "max_num_seqs": a.max_num_seqs,
            "prompt_len": a.prompt_len.mean(),
            "output_len": a.output_len.mean(),
            "prompt_lengths": a.prompt_len.to_string(),
            "output_lengths": a.output_len.to_string(),
            "runs": results,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let load = match &a.trace {
        Some(p) => format!(
            "{} requests of the trace {}",
            results[0].requests,
            p.display()
        ),
        None => format!(
            "{} requests of {} + {} tokens per rate",
            a.requests, a.prompt_len, a.output_len
        ),
    };
    println!(
        "{} on {} ({}): {load}, at most {} together; ±{:.0}%",
        cost.arch,
        chip.name,
        source.kind,
        a.max_num_seqs,
        100.0 * band
    );
    println!("| req/s | out tok/s | TTFT p50 / p90 / p99 ms     | TPOT p50 / p90 / p99 ms | preempt | KV use mean / max |");
    println!("| ----: | --------: | :-------------------------- | :---------------------- | ------: | :---------------- |");
    for r in &results {
        println!(
            "| {:>5} | {:>9.1} | {:>8.1} / {:>7.1} / {:>7.1} | {:>6.1} / {:>6.1} / {:>6.1} | {:>7} | {:>7.0}% / {:>5.0}% |",
            r.rate,
            r.output_tokens_per_s,
            r.ttft_ms[0],
            r.ttft_ms[1],
            r.ttft_ms[2],
            r.tpot_ms[0],
            r.tpot_ms[1],
            r.tpot_ms[2],
            r.preemptions,
            100.0 * r.kv_use[0],
            100.0 * r.kv_use[1]
        );
    }
    Ok(())
}

fn kv_format(k: &str, v: &str) -> Result<KvFormat> {
    let parse = |s: &str| {
        KvType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .with_context(|| format!("cache type '{s}' is not one of f32, f16, bf16, q8_0"))
    };
    Ok(KvFormat {
        k: parse(k)?,
        v: parse(v)?,
    })
}

fn list(all: &[ChipProfile]) -> Result<()> {
    println!(
        "{:<16} {:>8} {:>9} {:>9} {:>7} {:>7}  calibration  title",
        "chip", "mem GB", "BW GB/s", "BF16 TF", "TDP W", "$/h"
    );
    for c in all {
        let cal = match &c.calibration {
            Some(k) => format!("±{:.0}%", 100.0 * k.error_band),
            None => "-".into(),
        };
        println!(
            "{:<16} {:>8.1} {:>9.1} {:>9.2} {:>7.0} {:>7.3}  {:<11}  {}",
            c.name,
            c.capacity_gb.value,
            c.bandwidth_gbs.value,
            c.compute.tflops[1].value,
            c.tdp_w.value,
            c.usd_per_hour.value,
            cal,
            c.title
        );
    }
    Ok(())
}

fn print_plan(p: &Plan) {
    let gb = |b: u64| b as f64 / 1e9;
    let band = 100.0 * p.error_band;
    println!("model      {} ({}, weights {})", p.model, p.arch, p.quant);
    println!("chip       {} — {}", p.chip, p.chip_title);
    println!(
        "shape      batch {}, context {}, KV {}{}",
        p.batch,
        p.ctx,
        p.kv_type,
        p.threads
            .map_or(String::new(), |t| format!(", {t} threads"))
    );
    println!(
        "memory     weights {:.3} GB + KV {:.3} GB/sequence = {:.3} GB of {:.3} GB usable: {}",
        gb(p.weight_bytes),
        gb(p.kv_bytes_per_sequence),
        gb(p.memory_needed_bytes),
        gb(p.memory_usable_bytes),
        if p.fits { "fits" } else { "does NOT fit" }
    );
    println!(
        "           at most {} sequences of this context",
        p.max_sequences
    );
    println!(
        "decode     {:.1} tokens/s (one sequence), {:.1} tokens/s (batch of {}, {}-bound)   ±{band:.0}%",
        p.decode_tokens_per_s, p.decode_tokens_per_s_batch, p.batch, p.decode_bound
    );
    println!(
        "prefill    {:.1} tokens/s; time to first token of a {}-token prompt {:.1} ms   ±{band:.0}%",
        p.prefill_tokens_per_s,
        plan::PROMPT.min(p.ctx),
        p.ttft_ms
    );
    println!(
        "cost       {:.4} J/token, ${:.4} per million tokens (at ${}/h)",
        p.joules_per_token, p.usd_per_million_tokens, p.usd_per_hour
    );
    println!(
        "calibration {}: {}",
        p.calibration.kind, p.calibration.source
    );
}

/// `--probe`: measure this machine, write `local.toml`.
fn probe(a: &PlanArgs) -> Result<()> {
    crate::load::init_threads(a.threads);
    let threads = tuili_backend::pool::global().n_threads();
    eprintln!("probe: read bandwidth with {threads} and 1 threads");
    // Alternating rounds, the best of each: on a shared machine most are disturbed.
    let (global, one) = (tuili_backend::pool::global(), ThreadPool::new(1));
    let (mut all, mut single) = (0.0f64, 0.0f64);
    for _ in 0..5 {
        let bw = |pool| membw::measure(pool, membw::DEFAULT_BYTES, 3).mean();
        all = all.max(bw(global));
        single = single.max(bw(&one));
    }
    eprintln!("probe: matmul rate per precision");
    let given = |v: f64, what: &str, flag: &str| Sourced {
        value: v,
        source: format!(
            "given to tuili plan --probe ({what}; not measurable from software: {flag})"
        ),
    };
    let profile = probe::local_profile(probe::Measured {
        cpu_name: crate::device::cpu_name(),
        threads,
        bandwidth_all: all,
        bandwidth_one: single,
        capacity: mem_total()?,
        tdp_w: given(a.tdp, "TDP", "--tdp"),
        idle_w: given(a.idle_power, "idle power", "--idle-power"),
        usd_per_hour: given(a.price.unwrap_or(0.05), "price per hour", "--price"),
    })?;
    // The profile must read back as any other (validation of the measured numbers).
    let text = profile.to_toml();
    chip::parse("local.toml", &text)?;
    let dir = user_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("local.toml");
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    print!("{text}");
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn mem_total() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .context("no MemTotal in /proc/meminfo")?;
    Ok(kb * 1024)
}

/// The runs of bench files; a test measured in several files (a rerun on a shared
/// machine) keeps its fastest, least disturbed, measurement.
fn read_runs(files: &[PathBuf]) -> Result<Vec<BenchRun>> {
    let mut runs: Vec<BenchRun> = Vec::new();
    for f in files {
        for run in tuili_planner::bench::read(f)?.runs {
            let same = |r: &BenchRun| {
                (&r.model, r.threads, &r.test, r.n_depth, r.served)
                    == (&run.model, run.threads, &run.test, run.n_depth, run.served)
            };
            match runs.iter_mut().find(|r| same(r)) {
                Some(r) if run.seconds < r.seconds => *r = run,
                Some(_) => {}
                None => runs.push(run),
            }
        }
    }
    Ok(runs)
}

/// The measured steps of bench files, each with the planner's ops for it on `chip`.
fn observations(files: &[PathBuf], chip: &ChipProfile) -> Result<Vec<(BenchRun, Obs)>> {
    let mut costs: Vec<(PathBuf, ModelCost)> = Vec::new();
    let mut out = Vec::new();
    for run in read_runs(files)? {
        if !costs.iter().any(|(p, _)| *p == run.model) {
            costs.push((run.model.clone(), model_cost(&run.model)?.1));
        }
        let Some((_, cost)) = costs.iter().find(|(p, _)| *p == run.model) else {
            bail!("{}: the model was not read", run.model.display());
        };
        let kv = match &run.kv_types {
            Some((k, v)) => kv_format(k, v)?,
            None => kv_format("f16", "f16")?,
        };
        let threads = chip.cpu.as_ref().map(|_| run.threads);
        let hw = Hardware::of(chip, threads, kv);
        let obs = Obs {
            ops: step_ops(cost, &hw, &run.step()),
            seconds: run.step_seconds(),
        };
        out.push((run, obs));
    }
    Ok(out)
}

fn prompt_lengths(text: &str) -> Result<Lengths, PlanError> {
    Lengths::parse(text, LengthOf::Prompt)
}

fn output_lengths(text: &str) -> Result<Lengths, PlanError> {
    Lengths::parse(text, LengthOf::Output)
}

fn workload(a: &PlanArgs, rate: f64) -> sim::Workload {
    sim::Workload {
        rate,
        requests: a.requests,
        prompt_len: a.prompt_len.clone(),
        output_len: a.output_len.clone(),
        seed: a.seed,
        burstiness: a.burstiness,
    }
}

/// The result of an SLO search: the load one chip sustains, the chips a target needs,
/// cost and energy per million generated tokens at that load.
fn print_slo(
    a: &PlanArgs,
    chip: &ChipProfile,
    slo: &str,
    band: f64,
    best: Option<sim::SimResult>,
) -> Result<()> {
    let Some(r) = best else {
        bail!(
            "{} cannot meet {slo} even at {} requests/s: one request alone is too slow",
            chip.name,
            a.rate.first().copied().unwrap_or(1.0)
        );
    };
    let price = a.price.unwrap_or(chip.usd_per_hour.value);
    let per_token_s = 1.0 / r.output_tokens_per_s;
    let watts = chip.idle_w.value + (chip.tdp_w.value - chip.idle_w.value) * r.utilization;
    let chips = a.target_rate.map(|t| (t / r.rate).ceil() as u64);
    let v = serde_json::json!({
        "chip": chip.name,
        "slo": slo,
        "max_rate": r.rate,
        "chips_for_target": chips,
        "target_rate": a.target_rate,
        "usd_per_million_tokens": price / 3600.0 * per_token_s * 1e6,
        "joules_per_token": watts * per_token_s,
        "error_band": band,
        "at_max_rate": r,
    });
    match a.output {
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&v)?),
        PlanFormat::Table | PlanFormat::Html => {
            println!(
                "{}: {:.2} requests/s ({:.1} generated tokens/s) under {slo}   ±{:.0}%",
                chip.name,
                r.rate,
                r.output_tokens_per_s,
                100.0 * band
            );
            println!(
                "  TTFT p50/p99 {:.1}/{:.1} ms, TPOT p50/p99 {:.1}/{:.1} ms, {} preemptions",
                r.ttft_ms[0], r.ttft_ms[2], r.tpot_ms[0], r.tpot_ms[2], r.preemptions
            );
            if let (Some(t), Some(n)) = (a.target_rate, chips) {
                println!("  {t} requests/s need {n} chips");
            }
            println!(
                "  ${:.3} per million generated tokens, {:.4} J per token (at ${price}/h)",
                price / 3600.0 * per_token_s * 1e6,
                watts * per_token_s
            );
        }
    }
    Ok(())
}

/// A CPU profile with the bandwidth `tuili bench --membw` measured in `files` (the best
/// of each thread count: the least disturbed), at all of the profile's threads and at
/// one; other profiles unchanged.
fn with_bench_bandwidth(chip: &ChipProfile, files: &[PathBuf]) -> Result<ChipProfile> {
    let mut out = chip.clone();
    let Some(cpu) = &mut out.cpu else {
        return Ok(out);
    };
    let all_threads = cpu.threads.value as usize;
    for f in files {
        let name = f.display();
        for (threads, bw) in tuili_planner::bench::read(f)?.membw {
            let gbs = bw / 1e9;
            let source = format!("measured by tuili bench --membw, {threads} threads ({name})");
            let slot = if threads == all_threads {
                &mut out.bandwidth_gbs
            } else if threads == 1 {
                &mut cpu.bandwidth_per_thread_gbs
            } else {
                continue;
            };
            if gbs > slot.value || slot.source.starts_with("measured by tuili plan --probe") {
                *slot = Sourced { value: gbs, source };
            }
        }
    }
    Ok(out)
}

/// `--calibrate`: fit and save: the engine's coefficients to `tuili bench` runs, then
/// the serving terms to served runs (`"served": true`) on top of those coefficients (or
/// of the profile's, when no bench run is given).
fn calibrate(a: &PlanArgs, chip: &ChipProfile) -> Result<()> {
    let chip = &with_bench_bandwidth(chip, &a.calibrate)?;
    let (served, runs): (Vec<_>, Vec<_>) = observations(&a.calibrate, chip)?
        .into_iter()
        .partition(|(r, _)| r.served);
    let files: Vec<String> = a
        .calibrate
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let fitted_to = |runs: &[(BenchRun, Obs)]| {
        let mut models: Vec<String> = runs.iter().map(|(r, _)| r.model_name()).collect();
        models.sort();
        models.dedup();
        format!(
            "fitted to {} runs of {} ({})",
            runs.len(),
            models.join(", "),
            files.join(", ")
        )
    };
    let mut saved = chip.clone();
    if !runs.is_empty() {
        let obs: Vec<Obs> = runs.iter().map(|(_, o)| o.clone()).collect();
        let r = fit::fit(&obs)?;
        print_runs(&runs, &r.residuals);
        saved.calibration = Some(Calibration {
            coeffs: r.coeffs,
            error_band: r.rms,
            runs: runs.len(),
            source: fitted_to(&runs),
        });
        if saved.serving.take().is_some() && served.is_empty() {
            println!("the serving terms, fitted on the old coefficients, were dropped");
        }
        let c = r.coeffs;
        println!(
            "eta_mem {:.3}  eta_comp {:.3}  per layer {:.1} µs  per step {:.1} µs  per sequence {:.1} µs  per token {:.2} µs",
            c.eta_mem,
            c.eta_comp,
            c.layer_s * 1e6,
            c.step_s * 1e6,
            c.seq_s * 1e6,
            c.token_s * 1e6
        );
        println!(
            "rms relative error {:.1}% over {} runs",
            100.0 * r.rms,
            runs.len()
        );
    }
    if !served.is_empty() {
        let Some(cal) = &saved.calibration else {
            bail!(
                "served runs are fitted on top of the engine's coefficients: calibrate {} \
                 with tuili bench files first, or give them together",
                chip.name
            );
        };
        let obs: Vec<Obs> = served.iter().map(|(_, o)| o.clone()).collect();
        let r = fit::fit_serving(&obs, &cal.coeffs)?;
        print_runs(&served, &r.residuals);
        saved.serving = Some(Serving {
            coeffs: r.coeffs,
            error_band: r.rms,
            runs: served.len(),
            source: fitted_to(&served),
        });
        println!(
            "serving: per step {:.1} µs  per sampled token {:.1} µs; rms relative error {:.1}% over {} served runs",
            r.coeffs.step_s * 1e6,
            r.coeffs.token_s * 1e6,
            100.0 * r.rms,
            served.len()
        );
    }
    let traces = served::read_traces(&a.calibrate)?;
    if !traces.is_empty() {
        let (Some(cal), Some(serving)) = (&saved.calibration, &mut saved.serving) else {
            bail!(
                "served traces are fitted on top of the engine's coefficients and the \
                 serving step terms: give them with the served runs (and bench files, or \
                 calibrate {} with them first)",
                chip.name
            );
        };
        let f = served::fit_traces(&traces, chip, &cal.coeffs, serving.coeffs)?;
        serving.coeffs.request_s = f.request_s;
        serving.coeffs.mixed_s = f.mixed.map_or(0.0, |(m, _)| m);
        let firsts: usize = traces.iter().map(|t| t.requests.len()).sum();
        serving.source += &format!(
            "; the request and mixed-step terms to the {firsts} requests of {} served traces",
            traces.len()
        );
        println!(
            "serving: per request {:.1} ms; rms relative error {:.1}% over {firsts} first tokens",
            f.request_s * 1e3,
            100.0 * f.request_rms
        );
        match f.mixed {
            Some((m, rms)) => println!(
                "serving: per prompt chunk beside decodes {:.2} ms; rms relative error {:.1}% \
                 over their times per output token",
                m * 1e3,
                100.0 * rms
            ),
            None => println!(
                "serving: no request decoded beside an arriving prompt; no mixed-step term"
            ),
        }
    }
    let text = saved.to_toml();
    chip::parse(&format!("{}.toml", saved.name), &text)?;
    let dir = user_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{}.toml", saved.name));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    println!("saved {}", path.display());
    Ok(())
}

/// `--check`: predict other runs with the chip's saved coefficients.
fn check(a: &PlanArgs, chip: &ChipProfile) -> Result<()> {
    let Some(cal) = &chip.calibration else {
        bail!(
            "chip {} has no calibration: run tuili plan --calibrate first",
            chip.name
        );
    };
    let runs = observations(&a.check, chip)?;
    // A served run also pays the server's work, where the profile has it.
    let serving = serving_of(chip);
    let errs: Vec<f64> = runs
        .iter()
        .map(|(r, o)| {
            let predicted = if r.served {
                o.ops.served_seconds(&cal.coeffs, &serving)
            } else {
                o.ops.seconds(&cal.coeffs)
            };
            predicted / o.seconds - 1.0
        })
        .collect();
    print_runs(&runs, &errs);
    let mut abs: Vec<f64> = errs.iter().map(|e| e.abs()).collect();
    abs.sort_by(f64::total_cmp);
    let median = abs[abs.len() / 2];
    let within = abs.iter().filter(|e| **e <= 0.10).count();
    println!(
        "{} runs: median |error| {:.1}%, max {:.1}%, {} within 10%",
        abs.len(),
        100.0 * median,
        100.0 * abs.last().copied().unwrap_or(0.0),
        within
    );
    Ok(())
}

fn print_runs(runs: &[(BenchRun, Obs)], errs: &[f64]) {
    println!(
        "| {:<12} | {:>7} | {:>12} | {:>13} | {:>14} | {:>7} |",
        "model", "threads", "test", "measured t/s", "predicted t/s", "error"
    );
    println!(
        "| {:-<12} | ------: | -----------: | ------------: | -------------: | ------: |",
        ""
    );
    for ((run, _), e) in runs.iter().zip(errs) {
        let measured = run.tokens_per_s();
        // Predicted time = measured × (1 + e), so predicted t/s = measured / (1 + e).
        println!(
            "| {:<12} | {:>7} | {:>12} | {:>13.1} | {:>14.1} | {:>+6.1}% |",
            run.model_name(),
            run.threads,
            run.test,
            measured,
            measured / (1.0 + e),
            100.0 * e
        );
    }
}
