//! A serving simulator: the engine's own [`Scheduler`] (and its KV block manager), sized
//! as the engine sizes them, driven by a clock that advances by each step's predicted
//! time instead of running the model. Requests arrive as [`crate::load`] draws or
//! replays them; the result is the latency distribution a server would show at that
//! load.

use std::collections::HashMap;

use tuili_engine::kv_pool_sizes;
use tuili_engine::scheduler::{SchedulerConfig, SeqEvent, SeqRequest};
use tuili_engine::serve::EngineConfig;
use tuili_engine::Scheduler;
use tuili_models::{Config, SplitMix64};

use serde::Serialize;

use crate::cost::ModelCost;
pub use crate::load::{LengthOf, Lengths, Request, Workload, MAX_REQUESTS};
use crate::step::{step_ops, Chunk, Coeffs, Hardware, ServeCoeffs, StepShape};
use crate::PlanError;

/// What the simulated server showed.
#[derive(Debug, Clone, Serialize)]
pub struct SimResult {
    /// Mean arrivals per second (of a trace: requests over the span of its arrivals).
    pub rate: f64,
    /// Requests completed.
    pub requests: usize,
    /// Seconds from the first arrival to the last completion.
    pub duration_s: f64,
    /// Generated tokens per second over that time.
    pub output_tokens_per_s: f64,
    /// Time to first token, ms: p50, p90, p99.
    pub ttft_ms: [f64; 3],
    /// Time per output token after the first, ms: p50, p90, p99.
    pub tpot_ms: [f64; 3],
    /// Engine steps.
    pub steps: u64,
    /// Sequences preempted (their KV freed, recomputed later).
    pub preemptions: u64,
    /// Mean and largest share of KV blocks in use over the steps.
    pub kv_use: [f64; 2],
    /// Share of the time the bottleneck worked at its peak rate (sets the power drawn
    /// between idle and TDP).
    pub utilization: f64,
}

/// What is served, and on what: the model (its configuration and cost), the engine's
/// limits, the chip's rates and coefficients.
#[derive(Debug, Clone, Copy)]
pub struct Server<'a> {
    /// The model's configuration (sizes the engine's KV pool).
    pub mcfg: &'a Config,
    /// The engine's limits.
    pub engine: &'a EngineConfig,
    /// The model's cost.
    pub cost: &'a ModelCost,
    /// The chip's rates.
    pub hw: &'a Hardware,
    /// The chip's coefficients.
    pub coeffs: &'a Coeffs,
    /// The server's own work per step and per sampled token (zero: the engine alone).
    pub serving: ServeCoeffs,
    /// The share of its predicted speed the chip runs at (1: as predicted; below 1 on a
    /// machine shared with other work, as a reference run measures it).
    pub speed: f64,
    /// The share of its calibrated memory bandwidth it runs at besides (1: as
    /// calibrated): a machine whose neighbours load the memory slows the memory-bound
    /// steps (decode) and leaves the compute-bound ones (prefill) as they were.
    pub memory_speed: f64,
}

/// One simulated request, for fitting the serving terms to measured ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Seconds from its arrival to its first token.
    pub ttft_s: f64,
    /// Seconds per output token after the first (0 for one token).
    pub tpot_s: f64,
    /// Requests started (each paying [`ServeCoeffs::request_s`]) in the steps its first
    /// token waited for: every start since the server was last idle up to that token,
    /// its own included. With the steps as they are, `ttft_s` grows by this many
    /// `request_s`.
    pub starts_before_first: f64,
    /// Prompt chunks run beside its decodes (in the steps after its first token), per
    /// output token after the first: `tpot_s` grows by this many
    /// [`ServeCoeffs::mixed_s`].
    pub mixed_per_token: f64,
}

/// Runs the load `w` draws through [`simulate_requests`].
pub fn simulate(s: &Server, w: &Workload) -> Result<SimResult, PlanError> {
    let reqs = w.draw()?;
    let mut r = simulate_requests(s, &reqs, w.seed)?;
    r.rate = w.rate;
    Ok(r)
}

/// Runs `reqs` through a scheduler configured as the engine would be under `s.engine`
/// for `s.mcfg`, each step taking the time [`step_ops`] predicts on `s.hw` under
/// `s.coeffs`. `seed` draws the prompts' tokens.
pub fn simulate_requests(s: &Server, reqs: &[Request], seed: u64) -> Result<SimResult, PlanError> {
    Ok(simulate_outcomes(s, reqs, seed)?.0)
}

/// [`simulate_requests`], with each request's [`Outcome`] in input order.
pub fn simulate_outcomes(
    s: &Server,
    reqs: &[Request],
    seed: u64,
) -> Result<(SimResult, Vec<Outcome>), PlanError> {
    let Server {
        mcfg,
        engine,
        cost,
        hw,
        coeffs,
        serving,
        speed,
        memory_speed,
    } = *s;
    check(engine, reqs)?;
    for (name, v) in [("--speed", speed), ("--memory-speed", memory_speed)] {
        if !(v > 0.0 && v.is_finite()) {
            return Err(PlanError::BadOption(format!(
                "{name} must be positive, got {v}"
            )));
        }
    }
    let coeffs = &Coeffs {
        eta_mem: coeffs.eta_mem * memory_speed,
        ..*coeffs
    };
    let (blocks, local) = kv_pool_sizes(mcfg, engine);
    let sc = SchedulerConfig {
        max_num_seqs: engine.max_num_seqs,
        max_batched_tokens: engine.max_batched_tokens.max(engine.max_num_seqs),
        block_size: engine.block_size,
        num_blocks: blocks,
        max_model_len: engine.n_ctx,
    };
    let engine_err = |e: tuili_engine::EngineError| PlanError::BadOption(e.to_string());
    let mut sched = match (local, mcfg.max_window()) {
        (n, Some(window)) if n > 0 => Scheduler::with_local(sc, n, window),
        _ => Scheduler::new(sc),
    }
    .map_err(engine_err)?;

    let mut rng = SplitMix64::new(seed ^ 0x5EED);
    let n = reqs.len();
    let arrivals: Vec<f64> = reqs.iter().map(|r| r.arrival_s).collect();
    let mut times: HashMap<StepShape, (f64, f64)> = HashMap::new();
    let mut first = vec![f64::NAN; n];
    let mut finish = vec![f64::NAN; n];
    let mut started = vec![false; n];
    // Requests started since the server was last idle, and at each first token.
    let (mut busy_starts, mut starts_before) = (0usize, vec![0.0; n]);
    // Prompt chunks run beside each request's decodes.
    let mut mixed_seen = vec![0usize; n];
    let (mut clock, mut next, mut done) = (arrivals[0], 0, 0);
    let (mut kv_sum, mut kv_max, mut steps, mut busy) = (0.0, 0.0f64, 0u64, 0.0);
    while done < n {
        while next < n && arrivals[next] <= clock {
            // Random prompts: no two share a prefix, as in a load test.
            let prompt = (0..reqs[next].prompt_tokens)
                .map(|_| (rng.next_u64() % 30_000) as u32 + 10)
                .collect();
            let req = SeqRequest {
                id: next as u64,
                prompt,
                max_new_tokens: reqs[next].output_tokens,
            };
            sched.add(req).map_err(engine_err)?;
            next += 1;
        }
        let out = sched.schedule();
        if out.is_empty() {
            if sched.has_unfinished() && next == n {
                return Err(PlanError::BadOption(format!(
                    "the KV pool of {blocks} blocks of {} tokens cannot hold one of the \
                     requests left",
                    engine.block_size
                )));
            }
            let arrival = arrivals[next.min(n - 1)];
            if arrival > clock {
                busy_starts = 0;
            }
            clock = clock.max(arrival);
            continue;
        }
        let decoding: Vec<usize> = out
            .scheduled
            .iter()
            .filter(|x| x.tokens.len() == 1)
            .map(|x| x.id as usize)
            .collect();
        let mixed = if decoding.is_empty() {
            0
        } else {
            out.scheduled.len() - decoding.len()
        };
        for &i in &decoding {
            mixed_seen[i] += mixed;
        }
        let mut shape = StepShape::default();
        for x in &out.scheduled {
            match x.tokens.len() {
                1 => shape.decode.push(x.start_pos),
                n => shape.prefill.push(Chunk {
                    start: x.start_pos,
                    n,
                }),
            }
        }
        // Equal prompts make equal steps over and over (a lone sequence decoding the
        // same positions request after request): each shape is costed once.
        let (secs, peak) = *times.entry(shape).or_insert_with_key(|shape| {
            let ops = step_ops(cost, hw, shape);
            (ops.seconds(coeffs), ops.peak_seconds())
        });
        // The server's work: every sequence whose step ends in a sample streams a token.
        let sampled = out.scheduled.iter().filter(|x| x.sample).count();
        // A request's first chunk pays its admission, once.
        let starts = out
            .scheduled
            .iter()
            .filter(|x| !std::mem::replace(&mut started[x.id as usize], true))
            .count();
        busy_starts += starts;
        clock += (secs + serving.seconds(sampled, starts, mixed)) / speed;
        busy += peak;
        steps += 1;
        let used = sched.stats().blocks_used as f64 / blocks.max(1) as f64;
        kv_sum += used;
        kv_max = kv_max.max(used);
        let outputs: Vec<(u64, Option<u32>)> = out
            .scheduled
            .iter()
            .map(|x| (x.id, x.sample.then_some(1)))
            .collect();
        for ev in sched.update(&outputs).map_err(engine_err)? {
            match ev {
                SeqEvent::Token { id, .. } => {
                    let f = &mut first[id as usize];
                    if f.is_nan() {
                        *f = clock;
                        starts_before[id as usize] = busy_starts as f64;
                    }
                }
                SeqEvent::Finished { id, .. } => {
                    finish[id as usize] = clock;
                    done += 1;
                }
            }
        }
    }
    let ttft: Vec<f64> = (0..n).map(|i| first[i] - arrivals[i]).collect();
    let tpot: Vec<f64> = (0..n)
        .filter(|&i| reqs[i].output_tokens > 1)
        .map(|i| (finish[i] - first[i]) / (reqs[i].output_tokens - 1) as f64)
        .collect();
    let duration = finish.iter().copied().fold(0.0, f64::max) - arrivals[0];
    let generated: usize = reqs.iter().map(|r| r.output_tokens).sum();
    let span = arrivals[n - 1] - arrivals[0];
    let outcomes = (0..n)
        .map(|i| Outcome {
            ttft_s: ttft[i],
            tpot_s: match reqs[i].output_tokens {
                1 => 0.0,
                k => (finish[i] - first[i]) / (k - 1) as f64,
            },
            starts_before_first: starts_before[i],
            mixed_per_token: match reqs[i].output_tokens {
                1 => 0.0,
                k => mixed_seen[i] as f64 / (k - 1) as f64,
            },
        })
        .collect();
    let result = SimResult {
        rate: if span > 0.0 {
            (n - 1) as f64 / span
        } else {
            0.0
        },
        requests: n,
        duration_s: duration,
        output_tokens_per_s: generated as f64 / duration.max(1e-12),
        ttft_ms: percentiles(ttft).map(|v| v * 1e3),
        tpot_ms: percentiles(tpot).map(|v| v * 1e3),
        steps,
        preemptions: sched.stats().preemptions,
        kv_use: [kv_sum / steps.max(1) as f64, kv_max],
        utilization: (busy / duration.max(1e-12)).min(1.0),
    };
    Ok((result, outcomes))
}

/// p50, p90, p99 by nearest rank (0 for none).
fn percentiles(mut v: Vec<f64>) -> [f64; 3] {
    if v.is_empty() {
        return [0.0; 3];
    }
    v.sort_by(f64::total_cmp);
    [0.50, 0.90, 0.99].map(|q| {
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    })
}

fn check(engine: &EngineConfig, reqs: &[Request]) -> Result<(), PlanError> {
    for (i, r) in reqs.iter().enumerate() {
        if r.prompt_tokens == 0
            || r.output_tokens == 0
            || r.prompt_tokens + r.output_tokens > engine.n_ctx
        {
            return Err(PlanError::BadOption(format!(
                "request {i}: its prompt ({}) and output ({} tokens) must be at least 1 \
                 and fit the context of {} together",
                r.prompt_tokens, r.output_tokens, engine.n_ctx
            )));
        }
    }
    if reqs.is_empty() {
        return Err(PlanError::BadOption("no requests to simulate".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentiles(v), [50.0, 90.0, 99.0]);
        assert_eq!(percentiles(vec![3.0]), [3.0; 3]);
        assert_eq!(percentiles(Vec::new()), [0.0; 3]);
    }
}

/// Latency objectives: each a percentile of TTFT or TPOT under a limit, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// (metric, percentile index into [p50, p90, p99], limit in seconds).
    pub limits: Vec<(Metric, usize, f64)>,
}

/// What an objective limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Time to first token.
    Ttft,
    /// Time per output token.
    Tpot,
}

impl Slo {
    /// Reads `ttft_p99<2s,tpot_p99<100ms` (metrics `ttft`/`tpot`, percentiles `p50`,
    /// `p90`, `p99`, limits in `s` or `ms`).
    pub fn parse(text: &str) -> Result<Slo, PlanError> {
        let bad = |part: &str| {
            PlanError::BadOption(format!(
                "--slo: '{part}' is not METRIC_PCT<LIMIT (e.g. ttft_p99<2s, tpot_p50<80ms)"
            ))
        };
        let mut limits = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (lhs, rhs) = part.split_once('<').ok_or_else(|| bad(part))?;
            let (metric, pct) = lhs.trim().split_once('_').ok_or_else(|| bad(part))?;
            let metric = match metric {
                "ttft" => Metric::Ttft,
                "tpot" => Metric::Tpot,
                _ => return Err(bad(part)),
            };
            let pct = ["p50", "p90", "p99"]
                .iter()
                .position(|p| *p == pct)
                .ok_or_else(|| bad(part))?;
            let rhs = rhs.trim();
            let (num, scale) = match rhs.strip_suffix("ms") {
                Some(n) => (n, 1e-3),
                None => (rhs.strip_suffix('s').ok_or_else(|| bad(part))?, 1.0),
            };
            let v: f64 = num.trim().parse().map_err(|_| bad(part))?;
            if !(v > 0.0 && v.is_finite()) {
                return Err(bad(part));
            }
            limits.push((metric, pct, v * scale));
        }
        if limits.is_empty() {
            return Err(bad(text));
        }
        Ok(Slo { limits })
    }

    /// Whether `r` meets every objective.
    pub fn met(&self, r: &SimResult) -> bool {
        self.limits.iter().all(|&(m, i, limit)| {
            let v = match m {
                Metric::Ttft => r.ttft_ms[i],
                Metric::Tpot => r.tpot_ms[i],
            };
            v / 1e3 <= limit
        })
    }
}

/// The highest arrival rate at which the simulated server meets `slo`, and its result:
/// quadrupling from `w.rate` until the objectives fail, then bisection (in log space) to
/// 2%: fewer simulations than doubling for the same bracket. `None` when
/// even `w.rate` fails.
pub fn max_rate(s: &Server, w: &Workload, slo: &Slo) -> Result<Option<SimResult>, PlanError> {
    let run = |rate: f64| simulate(s, &Workload { rate, ..w.clone() });
    let first = run(w.rate)?;
    if !slo.met(&first) {
        return Ok(None);
    }
    let (mut good, mut bad) = (first, None::<f64>);
    // Past the server's capacity the queue grows without bound: 40 steps is far.
    for _ in 0..40 {
        let r = run(good.rate * 4.0)?;
        if slo.met(&r) {
            good = r;
        } else {
            bad = Some(r.rate);
            break;
        }
    }
    let Some(mut hi) = bad else {
        return Ok(Some(good));
    };
    while hi / good.rate > 1.02 {
        let mid = (good.rate * hi).sqrt();
        let r = run(mid)?;
        if slo.met(&r) {
            good = r;
        } else {
            hi = mid;
        }
    }
    Ok(Some(good))
}

#[cfg(test)]
mod slo_tests {
    use super::*;

    #[test]
    fn objectives_parse_and_refuse_garbage() {
        let s = Slo::parse("ttft_p99<2s, tpot_p50<100ms").expect("parses");
        assert_eq!(
            s.limits,
            vec![(Metric::Ttft, 2, 2.0), (Metric::Tpot, 0, 0.1)]
        );
        for bad in [
            "",
            "ttft<2s",
            "ttft_p95<2s",
            "itl_p99<2s",
            "ttft_p99<2",
            "ttft_p99<-1s",
        ] {
            let e = Slo::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--slo"), "{bad}: {e}");
        }
    }
}
