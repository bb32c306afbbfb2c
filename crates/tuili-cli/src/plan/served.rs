//! The request term of `tuili plan --calibrate`: served traces (`"test": "trace"`)
//! replayed through the simulator with the engine's coefficients and the step terms;
//! what their first tokens took beyond that is the request term. Each trace's TTFT and
//! TPOT medians, measured and predicted with the terms, are printed beside it: a trace
//! whose prompts arrive while others decode shows whether the mixed steps are explained.

use std::path::PathBuf;

use anyhow::Result;
use tuili_engine::serve::EngineConfig;
use tuili_models::Config;
use tuili_planner::bench::ServedTrace;
use tuili_planner::chip::ChipProfile;
use tuili_planner::cost::ModelCost;
use tuili_planner::fit::{self, FirstToken};
use tuili_planner::sim;
use tuili_planner::step::{Coeffs, Hardware, ServeCoeffs};
use tuili_planner::PlanError;

use super::{kv_format, model_cost};

/// The served traces of bench files.
pub(super) fn read_traces(files: &[PathBuf]) -> Result<Vec<ServedTrace>> {
    let mut out = Vec::new();
    for f in files {
        out.extend(tuili_planner::bench::read(f)?.traces);
    }
    Ok(out)
}

/// The request term fitted to the first tokens of `traces` on `chip` under `coeffs` and
/// `serving`'s step terms, and the RMS of the first tokens' relative residuals.
pub(super) fn fit_request_term(
    traces: &[ServedTrace],
    chip: &ChipProfile,
    coeffs: &Coeffs,
    serving: ServeCoeffs,
) -> Result<(f64, f64)> {
    let mut models: Vec<(PathBuf, Config, ModelCost)> = Vec::new();
    let (request_s, _, rms) = fit::fit_request_replayed(|request_s| {
        let mut obs = Vec::new();
        for t in traces {
            let with = ServeCoeffs {
                request_s,
                ..serving
            };
            let p = replay(t, chip, coeffs, with, &mut models)
                .map_err(|e| PlanError::Fit(format!("{e:#}")))?;
            obs.extend(p.iter().zip(&t.ttft_s).map(|(p, &measured_s)| FirstToken {
                measured_s,
                predicted_s: p.ttft_s,
                starts: p.starts_before_first,
            }));
        }
        Ok(obs)
    })?;
    let with = ServeCoeffs {
        request_s,
        ..serving
    };
    println!(
        "| {:>8} | {:>12} | {:>12} | {:>14} | {:>12} | {:>14} |",
        "requests", "sent over ms", "TTFT p50 ms", "predicted", "TPOT p50 ms", "predicted"
    );
    println!(
        "| -------: | -----------: | ----------: | -------------: | ----------: | -------------: |"
    );
    for t in traces {
        let p = replay(t, chip, coeffs, with, &mut models)?;
        let pred_ttft: Vec<f64> = p.iter().map(|o| o.ttft_s).collect();
        let pred_tpot: Vec<f64> = p.iter().map(|o| o.tpot_s).collect();
        let [mt, pt, mp, pp] = [&t.ttft_s, &pred_ttft, &t.tpot_s, &pred_tpot].map(|v| median(v));
        println!(
            "| {:>8} | {:>12.0} | {:>12.1} | {:>6.1} {:>+6.1}% | {:>12.2} | {:>6.2} {:>+6.1}% |",
            t.requests.len(),
            t.requests.last().map_or(0.0, |r| r.arrival_s) * 1e3,
            mt * 1e3,
            pt * 1e3,
            100.0 * (pt / mt - 1.0),
            mp * 1e3,
            pp * 1e3,
            100.0 * (pp / mp - 1.0)
        );
    }
    Ok((request_s, rms))
}

/// `t`'s requests through the simulated server it was measured on.
fn replay(
    t: &ServedTrace,
    chip: &ChipProfile,
    coeffs: &Coeffs,
    serving: ServeCoeffs,
    models: &mut Vec<(PathBuf, Config, ModelCost)>,
) -> Result<Vec<sim::Outcome>> {
    if !models.iter().any(|(p, _, _)| *p == t.model) {
        let (mcfg, cost) = model_cost(&t.model)?;
        models.push((t.model.clone(), mcfg, cost));
    }
    let Some((_, mcfg, cost)) = models.iter().find(|(p, _, _)| *p == t.model) else {
        anyhow::bail!("{}: the model was not read", t.model.display());
    };
    let threads = chip.cpu.as_ref().map(|_| t.threads);
    let hw = Hardware::of(chip, threads, kv_format("f16", "f16")?);
    // `tuili serve`'s limits: its defaults but for --parallel and --ctx.
    let engine = EngineConfig {
        n_ctx: t.n_ctx,
        max_num_seqs: t.max_num_seqs,
        ..EngineConfig::default()
    };
    let server = sim::Server {
        mcfg,
        engine: &engine,
        cost,
        hw: &hw,
        coeffs,
        serving,
        speed: 1.0,
    };
    Ok(sim::simulate_outcomes(&server, &t.requests, 1)?.1)
}

/// The middle value (the lower of the two middle ones), as a p50 by nearest rank.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get((v.len().max(1) - 1) / 2).copied().unwrap_or(f64::NAN)
}
