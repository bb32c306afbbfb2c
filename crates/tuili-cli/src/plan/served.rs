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
use tuili_planner::fit::{self, Excess};
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

/// What the traces fitted: the request and mixed-step terms, each with the RMS of the
/// relative residuals it was fitted to (first tokens; times per output token).
pub(super) struct TraceFit {
    pub request_s: f64,
    pub request_rms: f64,
    /// `None` where no request decoded beside an arriving prompt.
    pub mixed: Option<(f64, f64)>,
}

/// The request term fitted to the first tokens of `traces` on `chip` under `coeffs` and
/// `serving`'s step terms, then the mixed-step term to their times per output token.
pub(super) fn fit_traces(
    traces: &[ServedTrace],
    chip: &ChipProfile,
    coeffs: &Coeffs,
    serving: ServeCoeffs,
) -> Result<TraceFit> {
    let mut models: Vec<(PathBuf, Config, ModelCost)> = Vec::new();
    // Every trace's requests under the terms `with`: their first tokens (`first`) or
    // their times per output token, measured and predicted, with the term's count.
    let mut observe = |with: ServeCoeffs, first: bool| -> Result<Vec<Excess>, PlanError> {
        let mut obs = Vec::new();
        for t in traces {
            let p = replay(t, chip, coeffs, with, &mut models)
                .map_err(|e| PlanError::Fit(format!("{e:#}")))?;
            let measured = t.ttft_s.iter().zip(&t.tpot_s);
            for ((o, r), (&ttft_s, &tpot_s)) in p.iter().zip(&t.requests).zip(measured) {
                if first {
                    obs.push(Excess {
                        measured_s: ttft_s,
                        predicted_s: o.ttft_s,
                        count: o.starts_before_first,
                    });
                } else if r.output_tokens > 1 {
                    obs.push(Excess {
                        measured_s: tpot_s,
                        predicted_s: o.tpot_s,
                        count: o.mixed_per_token,
                    });
                }
            }
        }
        Ok(obs)
    };
    // The request term first (the mixed steps at 0), then the mixed-step term with it.
    let base = ServeCoeffs {
        mixed_s: 0.0,
        ..serving
    };
    let (request_s, _, request_rms) = fit::fit_replayed(
        |x| {
            observe(
                ServeCoeffs {
                    request_s: x,
                    ..base
                },
                true,
            )
        },
        fit::fit_request,
    )?;
    let with = ServeCoeffs { request_s, ..base };
    let mixed = match observe(with, false)?.iter().any(|o| o.count > 0.0) {
        true => {
            let (m, _, rms) = fit::fit_replayed(
                |x| observe(ServeCoeffs { mixed_s: x, ..with }, false),
                fit::fit_mixed,
            )?;
            Some((m, rms))
        }
        false => None,
    };
    let with = ServeCoeffs {
        mixed_s: mixed.map_or(0.0, |(m, _)| m),
        ..with
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
    Ok(TraceFit {
        request_s,
        request_rms,
        mixed,
    })
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
        memory_speed: 1.0,
    };
    Ok(sim::simulate_outcomes(&server, &t.requests, 1)?.1)
}

/// The middle value (the lower of the two middle ones), as a p50 by nearest rank.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get((v.len().max(1) - 1) / 2).copied().unwrap_or(f64::NAN)
}
