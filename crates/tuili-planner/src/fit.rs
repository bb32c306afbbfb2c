//! Fitting a chip's efficiencies and overheads to measured steps, by robust least
//! squares on relative errors.
//!
//! The step time is `Σ max(mem / η_mem, comp / η_comp) + L·layer + step + S·seq +
//! T·token`. For fixed η's it is linear in the four overheads, so the fit searches the
//! η's on a logarithmic grid (then a finer one around the best point) and, at each,
//! solves for non-negative overheads by Huber-weighted iteratively reweighted least
//! squares. Residuals are relative (`predicted / measured - 1`): the runs span
//! milliseconds to seconds and each should count the same.

use crate::step::{Coeffs, ServeCoeffs, StepOps};
use crate::PlanError;

/// Relative residual at which the Huber loss turns from quadratic to linear: runs
/// further off than this (a disturbed measurement) weigh less.
const HUBER_DELTA: f64 = 0.05;

/// The largest efficiency a fit returns and a profile accepts: a profile's rates may
/// have been measured on a disturbed machine, a datasheet may understate a chip, and a
/// model small enough to stay in cache beats the memory bandwidth.
pub const MAX_ETA: f64 = 4.0;

/// Runs a fit needs at least: more than the six unknowns.
pub const MIN_RUNS: usize = 7;

/// One measured step.
#[derive(Debug, Clone)]
pub struct Obs {
    /// Roofline inputs and counts of the step.
    pub ops: StepOps,
    /// Measured seconds.
    pub seconds: f64,
}

/// The fitted coefficients and how well they fit.
#[derive(Debug, Clone, PartialEq)]
pub struct FitResult {
    /// The coefficients.
    pub coeffs: Coeffs,
    /// Relative residual of each run, in input order.
    pub residuals: Vec<f64>,
    /// Root mean square of the residuals.
    pub rms: f64,
}

/// Fits `obs`.
pub fn fit(obs: &[Obs]) -> Result<FitResult, PlanError> {
    if obs.len() < MIN_RUNS {
        return Err(PlanError::Fit(format!(
            "{} runs, at least {MIN_RUNS} are needed (pp and tg tests of two or more models)",
            obs.len()
        )));
    }
    let mut best: Option<(f64, Coeffs)> = None;
    let search = |etas_m: &[f64], etas_c: &[f64], best: &mut Option<(f64, Coeffs)>| {
        for &em in etas_m {
            for &ec in etas_c {
                let (loss, c) = overheads_at(obs, em, ec);
                if best.as_ref().is_none_or(|(l, _)| loss < *l) {
                    *best = Some((loss, c));
                }
            }
        }
    };
    // Efficiencies above 1 are allowed (see `MAX_ETA`).
    const MEM: (f64, f64, usize) = (0.02, MAX_ETA, 44);
    const COMP: (f64, f64, usize) = (0.005, MAX_ETA, 48);
    search(
        &geomspace(MEM.0, MEM.1, MEM.2),
        &geomspace(COMP.0, COMP.1, COMP.2),
        &mut best,
    );
    let Some((_, coarse)) = best else {
        return Err(PlanError::Fit("empty search grid".into()));
    };
    // A finer grid around the coarse optimum (one coarse step either side).
    let step = |(lo, hi, n): (f64, f64, usize)| (hi / lo).ln() / (n - 1) as f64;
    // Within the coarse range: profiles accept efficiencies up to its top.
    let around = |x: f64, (lo, hi, n): (f64, f64, usize)| {
        let s = step((lo, hi, n));
        geomspace((x * (-s).exp()).max(lo), (x * s.exp()).min(hi), 21)
    };
    search(
        &around(coarse.eta_mem, MEM),
        &around(coarse.eta_comp, COMP),
        &mut best,
    );
    let (_, coeffs) = best.ok_or_else(|| PlanError::Fit("empty search grid".into()))?;
    let residuals: Vec<f64> = obs.iter().map(|o| rel(o, &coeffs)).collect();
    let rms = rms(&residuals);
    Ok(FitResult {
        coeffs,
        residuals,
        rms,
    })
}

/// `predicted / measured - 1`.
pub fn rel(o: &Obs, c: &Coeffs) -> f64 {
    o.ops.seconds(c) / o.seconds - 1.0
}

/// Root mean square.
fn rms(v: &[f64]) -> f64 {
    (v.iter().map(|r| r * r).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

fn geomspace(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let (a, b) = (lo.ln(), hi.ln());
    (0..n)
        .map(|i| (a + (b - a) * i as f64 / (n - 1) as f64).exp())
        .collect()
}

fn huber(r: f64) -> f64 {
    let a = r.abs();
    if a <= HUBER_DELTA {
        0.5 * r * r
    } else {
        HUBER_DELTA * (a - 0.5 * HUBER_DELTA)
    }
}

/// The best non-negative overheads with the η's fixed, and the Huber loss there.
fn overheads_at(obs: &[Obs], eta_mem: f64, eta_comp: f64) -> (f64, Coeffs) {
    let mut c = Coeffs {
        eta_mem,
        eta_comp,
        layer_s: 0.0,
        step_s: 0.0,
        seq_s: 0.0,
        token_s: 0.0,
    };
    // Each row: (features, target), divided by the measured time (relative residuals).
    let rows: Vec<([f64; 4], f64)> = obs
        .iter()
        .map(|o| {
            let s = o.seconds;
            let x = [
                o.ops.layers / s,
                o.ops.steps / s,
                o.ops.seqs / s,
                o.ops.tokens / s,
            ];
            (x, 1.0 - (o.ops.roofline(&c) + o.ops.fixed_s) / s)
        })
        .collect();
    [c.layer_s, c.step_s, c.seq_s, c.token_s] = huber_nonneg(&rows);
    let loss = obs.iter().map(|o| huber(rel(o, &c))).sum();
    (loss, c)
}

/// A server's own work per step and per sampled token (see [`ServeCoeffs`]), fitted to
/// served runs with the engine's coefficients `engine` fixed.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeFit {
    /// The fitted terms.
    pub coeffs: ServeCoeffs,
    /// Relative residual of each run (with the terms), in input order.
    pub residuals: Vec<f64>,
    /// Root mean square of the residuals.
    pub rms: f64,
}

/// Fits the serving terms to `obs`, steps measured through a server in which every
/// sequence samples a token (decode steps: `ops.seqs` tokens): the part of each step the
/// engine's coefficients do not explain is `step_s + seqs · token_s`, found by the same
/// Huber-weighted non-negative least squares on relative residuals as the overheads.
pub fn fit_serving(obs: &[Obs], engine: &Coeffs) -> Result<ServeFit, PlanError> {
    if obs.len() < 2 {
        return Err(PlanError::Fit(format!(
            "{} served runs, at least 2 are needed (two or more concurrencies)",
            obs.len()
        )));
    }
    let rows: Vec<([f64; 2], f64)> = obs
        .iter()
        .map(|o| {
            let s = o.seconds;
            (
                [o.ops.steps / s, o.ops.seqs / s],
                1.0 - o.ops.seconds(engine) / s,
            )
        })
        .collect();
    let [step_s, token_s] = huber_nonneg(&rows);
    let coeffs = ServeCoeffs {
        step_s,
        token_s,
        ..ServeCoeffs::default()
    };
    let residuals: Vec<f64> = obs
        .iter()
        .map(|o| o.ops.served_seconds(engine, &coeffs) / o.seconds - 1.0)
        .collect();
    let rms = rms(&residuals);
    Ok(ServeFit {
        coeffs,
        residuals,
        rms,
    })
}

/// A serving term fitted to served requests: its value, each request's relative
/// residual with it, and their RMS.
pub type TermFit = (f64, Vec<f64>, f64);

/// One served request's time that a serving term explains: measured, predicted with
/// the term at 0, and how many of the term the time holds. For the request term, a first
/// token and the starts it waits for ([`crate::sim::Outcome::starts_before_first`]); for
/// the mixed-step term, a time per output token and the prompt chunks run beside its
/// decodes per token ([`crate::sim::Outcome::mixed_per_token`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Excess {
    /// Measured seconds.
    pub measured_s: f64,
    /// Predicted seconds with the term at 0.
    pub predicted_s: f64,
    /// Terms in the time.
    pub count: f64,
}

/// The request term ([`ServeCoeffs::request_s`]) fitted to served first tokens: what the
/// simulator leaves unexplained, `measured - predicted = starts · request_s`, by the same
/// Huber-weighted non-negative least squares on relative residuals as the other terms.
/// Returns the term, each first token's relative residual with it, and their RMS.
pub fn fit_request(obs: &[Excess]) -> Result<TermFit, PlanError> {
    if obs.is_empty() {
        return Err(PlanError::Fit(
            "no served first tokens to fit the request term to".into(),
        ));
    }
    if let Some(o) = obs
        .iter()
        .find(|o| !(o.measured_s > 0.0 && o.predicted_s >= 0.0 && o.count >= 1.0))
    {
        return Err(PlanError::Fit(format!(
            "a served first token needs a positive measured time, a predicted time and at \
             least its own start, got {o:?}"
        )));
    }
    Ok(fit_excess(
        &obs.iter()
            .map(|o| (o.measured_s, o.predicted_s, o.count))
            .collect::<Vec<_>>(),
    ))
}

/// The mixed-step term ([`ServeCoeffs::mixed_s`]) fitted to served TPOTs: `measured -
/// predicted = mixed · mixed_s`, as [`fit_request`] fits its term. Needs requests that
/// decoded beside arriving prompts (staggered bursts).
pub fn fit_mixed(obs: &[Excess]) -> Result<TermFit, PlanError> {
    if !obs.iter().any(|o| o.count > 0.0) {
        return Err(PlanError::Fit(
            "no served request decoded beside an arriving prompt: send staggered bursts to \
             fit the mixed-step term"
                .into(),
        ));
    }
    if let Some(o) = obs
        .iter()
        .find(|o| !(o.measured_s > 0.0 && o.predicted_s >= 0.0 && o.count >= 0.0))
    {
        return Err(PlanError::Fit(format!(
            "a served TPOT needs a positive measured time, a predicted time and mixed \
             chunks of at least 0, got {o:?}"
        )));
    }
    Ok(fit_excess(
        &obs.iter()
            .map(|o| (o.measured_s, o.predicted_s, o.count))
            .collect::<Vec<_>>(),
    ))
}

/// One term `x ≥ 0` for rows `(measured, predicted without it, count)`: `measured ≈
/// predicted + count · x`, Huber-weighted on relative residuals. Returns `x`, the
/// residuals with it and their RMS.
fn fit_excess(rows: &[(f64, f64, f64)]) -> TermFit {
    let eqs: Vec<([f64; 1], f64)> = rows
        .iter()
        .map(|&(m, p, k)| ([k / m], 1.0 - p / m))
        .collect();
    let [x] = huber_nonneg(&eqs);
    let residuals: Vec<f64> = rows
        .iter()
        .map(|&(m, p, k)| (p + k * x) / m - 1.0)
        .collect();
    let rms = rms(&residuals);
    (x, residuals, rms)
}

/// Most replays of [`fit_replayed`].
const REPLAYS: usize = 6;

/// A serving term fitted by `fit` ([`fit_request`], [`fit_mixed`]) to served traces that
/// `replay` simulates: `replay(x)` gives every request's time measured and predicted with
/// the term at `x`, and its count. The term changes which step a later arrival joins,
/// so one fit around 0 is not enough: from 0, each round takes the prediction with the
/// term as it stands less its share (`count · x`), refits, and replays with the new
/// term, until it moves less than 0.1%. Returns the term, the relative residuals with
/// it, and their RMS.
pub fn fit_replayed(
    mut replay: impl FnMut(f64) -> Result<Vec<Excess>, PlanError>,
    fit: fn(&[Excess]) -> Result<TermFit, PlanError>,
) -> Result<TermFit, PlanError> {
    let mut x = 0.0;
    for _ in 0..REPLAYS {
        let obs: Vec<Excess> = replay(x)?
            .into_iter()
            .map(|o| Excess {
                predicted_s: (o.predicted_s - o.count * x).max(0.0),
                ..o
            })
            .collect();
        let (next, _, _) = fit(&obs)?;
        let moved = (next - x).abs();
        x = next;
        if moved <= 1e-3 * x {
            break;
        }
    }
    let residuals: Vec<f64> = replay(x)?
        .iter()
        .map(|o| o.predicted_s / o.measured_s - 1.0)
        .collect();
    let rms = rms(&residuals);
    Ok((x, residuals, rms))
}

/// Huber-weighted iteratively reweighted least squares `f·x ≈ y` with `x ≥ 0`.
fn huber_nonneg<const N: usize>(rows: &[([f64; N], f64)]) -> [f64; N] {
    let mut weights = vec![1.0; rows.len()];
    let mut x = [0.0; N];
    for _ in 0..8 {
        x = nonneg_wls(rows, &weights);
        for (w, (f, y)) in weights.iter_mut().zip(rows) {
            let r = (dot(f, &x) - y).abs();
            // Huber's IRLS weight: 1 inside δ, δ/|r| outside.
            *w = if r <= HUBER_DELTA {
                1.0
            } else {
                HUBER_DELTA / r
            };
        }
    }
    x
}

fn dot<const N: usize>(a: &[f64; N], b: &[f64; N]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Weighted least squares `min Σ w (f·x - y)²` with `x ≥ 0`: solve on the free
/// variables, drop the most negative one, repeat (an active set of at most `N`).
fn nonneg_wls<const N: usize>(rows: &[([f64; N], f64)], w: &[f64]) -> [f64; N] {
    let mut free = [true; N];
    loop {
        let idx: Vec<usize> = (0..N).filter(|&i| free[i]).collect();
        let mut x = [0.0; N];
        if idx.is_empty() {
            return x;
        }
        let n = idx.len();
        let mut a = vec![vec![0.0; n + 1]; n];
        for ((f, y), &wi) in rows.iter().zip(w) {
            for (r, &i) in idx.iter().enumerate() {
                for (c, &j) in idx.iter().enumerate() {
                    a[r][c] += wi * f[i] * f[j];
                }
                a[r][n] += wi * f[i] * y;
            }
        }
        // A tiny ridge keeps collinear features (one model size only) solvable.
        for (r, row) in a.iter_mut().enumerate() {
            row[r] += 1e-12 * (1.0 + row[r].abs());
        }
        let sol = solve(a);
        for (k, &i) in idx.iter().enumerate() {
            x[i] = sol[k];
        }
        match idx
            .iter()
            .copied()
            .filter(|&i| x[i] < 0.0)
            .min_by(|&a, &b| x[a].total_cmp(&x[b]))
        {
            Some(i) => free[i] = false,
            None => return x,
        }
    }
}

/// Gaussian elimination with partial pivoting on an augmented `[n, n + 1]` matrix; a
/// singular column yields 0 for its variable.
fn solve(mut a: Vec<Vec<f64>>) -> Vec<f64> {
    let n = a.len();
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, piv);
        if a[col][col].abs() < 1e-300 {
            continue;
        }
        for r in 0..n {
            if r != col {
                let f = a[r][col] / a[col][col];
                let pivot_row = a[col].clone();
                for (v, p) in a[r].iter_mut().zip(&pivot_row).skip(col) {
                    *v -= f * p;
                }
            }
        }
    }
    (0..n)
        .map(|i| {
            if a[i][i].abs() < 1e-300 {
                0.0
            } else {
                a[i][n] / a[i][i]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::OpTime;

    /// Steps whose times come from known coefficients: a memory-bound op and a
    /// compute-bound op in varying proportions, varying counts.
    fn synthetic(truth: &Coeffs) -> Vec<Obs> {
        let mut obs = Vec::new();
        for i in 0..12 {
            let f = i as f64;
            let ops = StepOps {
                ops: vec![
                    OpTime {
                        mem_s: 1e-3 * (1.0 + f),
                        comp_s: 1e-5 * (1.0 + f * f),
                    },
                    OpTime {
                        mem_s: 1e-5,
                        comp_s: 2e-4 * (1.0 + (i % 4) as f64 * f),
                    },
                ],
                layers: [24.0, 30.0, 18.0][i % 3],
                seqs: (1 + i % 4) as f64,
                tokens: (1 + (i * 37) % 200) as f64,
                steps: 1.0,
                fixed_s: 1e-5 * (i % 5) as f64,
            };
            let seconds = ops.seconds(truth);
            obs.push(Obs { ops, seconds });
        }
        obs
    }

    #[test]
    fn recovers_known_coefficients() {
        let truth = Coeffs {
            eta_mem: 0.6,
            eta_comp: 0.3,
            layer_s: 2e-5,
            step_s: 1e-4,
            seq_s: 5e-5,
            token_s: 1e-6,
        };
        let obs = synthetic(&truth);
        let r = fit(&obs).expect("fits");
        assert!(r.rms < 0.01, "rms {}", r.rms);
        assert!(
            (r.coeffs.eta_mem / truth.eta_mem - 1.0).abs() < 0.05,
            "{:?}",
            r.coeffs
        );
        assert!(
            (r.coeffs.eta_comp / truth.eta_comp - 1.0).abs() < 0.05,
            "{:?}",
            r.coeffs
        );
    }

    #[test]
    fn one_disturbed_run_does_not_move_the_fit() {
        let truth = Coeffs {
            eta_mem: 0.5,
            eta_comp: 0.4,
            layer_s: 1e-5,
            step_s: 2e-4,
            seq_s: 0.0,
            token_s: 0.0,
        };
        let mut obs = synthetic(&truth);
        obs[3].seconds *= 3.0;
        let r = fit(&obs).expect("fits");
        let others: Vec<f64> = (0..obs.len())
            .filter(|&i| i != 3)
            .map(|i| r.residuals[i])
            .collect();
        assert!(others.iter().all(|e| e.abs() < 0.03), "{others:?}");
        assert!(r.residuals[3] < -0.5, "the outlier stays an outlier");
    }

    /// Served decode steps of 1 to 8 sequences: the engine's time under `engine` plus
    /// `truth`'s serving work.
    fn served(engine: &Coeffs, truth: &ServeCoeffs) -> Vec<Obs> {
        synthetic(engine)
            .into_iter()
            .enumerate()
            .map(|(i, mut o)| {
                o.ops.seqs = [1.0, 2.0, 4.0, 8.0][i % 4];
                o.seconds = o.ops.seconds(engine) + truth.step_s + o.ops.seqs * truth.token_s;
                o
            })
            .collect()
    }

    #[test]
    fn serving_terms_are_recovered() {
        let engine = Coeffs {
            eta_mem: 0.5,
            eta_comp: 0.4,
            layer_s: 1e-5,
            step_s: 2e-4,
            seq_s: 3e-5,
            token_s: 1e-6,
        };
        let truth = ServeCoeffs {
            step_s: 1e-4,
            token_s: 3e-4,
            ..ServeCoeffs::default()
        };
        let mut obs = served(&engine, &truth);
        let r = fit_serving(&obs, &engine).expect("fits");
        assert!(r.rms < 1e-6, "rms {}", r.rms);
        assert!(
            (r.coeffs.token_s / truth.token_s - 1.0).abs() < 1e-4,
            "{:?}",
            r.coeffs
        );
        assert!(
            (r.coeffs.step_s / truth.step_s - 1.0).abs() < 1e-3,
            "{:?}",
            r.coeffs
        );
        // A disturbed run (three times as long) leaves the terms within 10%.
        obs[5].seconds *= 3.0;
        let r = fit_serving(&obs, &engine).expect("fits");
        assert!(
            (r.coeffs.token_s / truth.token_s - 1.0).abs() < 0.1,
            "{:?}",
            r.coeffs
        );
        // No server work at all: the terms are zero, never negative.
        let none = served(&engine, &ServeCoeffs::default());
        let r = fit_serving(&none, &engine).expect("fits");
        assert!(
            r.coeffs.token_s.abs() < 1e-9 && r.coeffs.step_s.abs() < 1e-9,
            "{:?}",
            r.coeffs
        );
        let e = fit_serving(&none[..1], &engine).unwrap_err().to_string();
        assert!(
            e.contains("1 served runs") && e.contains("at least 2"),
            "{e}"
        );
    }

    #[test]
    fn the_request_term_is_recovered_and_checked() {
        // Bursts of 1, 2, 4, 8 started together: each first token waits for every start.
        let truth = 0.04;
        let mut obs: Vec<Excess> = [1.0, 2.0, 4.0, 8.0]
            .iter()
            .flat_map(|&s| {
                (0..s as usize).map(move |i| {
                    let predicted_s = 0.02 * s + 0.001 * i as f64;
                    Excess {
                        measured_s: predicted_s + s * truth,
                        predicted_s,
                        count: s,
                    }
                })
            })
            .collect();
        let (request_s, residuals, rms) = fit_request(&obs).expect("fits");
        assert!((request_s / truth - 1.0).abs() < 1e-9, "{request_s}");
        assert!(rms < 1e-9 && residuals.len() == obs.len(), "{rms}");
        // One first token three times as late leaves the term within 5%.
        obs[3].measured_s *= 3.0;
        let (request_s, _, _) = fit_request(&obs).expect("fits");
        assert!((request_s / truth - 1.0).abs() < 0.05, "{request_s}");
        let e = fit_request(&[]).unwrap_err().to_string();
        assert!(e.contains("no served first tokens"), "{e}");
        obs[0].count = 0.0;
        let e = fit_request(&obs).unwrap_err().to_string();
        assert!(e.contains("at least its own start"), "{e}");
    }

    #[test]
    fn the_mixed_step_term_is_recovered_and_needs_mixed_steps() {
        let truth = 0.003;
        let obs: Vec<Excess> = (0..12)
            .map(|i| {
                let count = [0.0, 0.05, 0.1, 0.25][i % 4];
                let predicted_s = 0.01 + 0.001 * i as f64;
                Excess {
                    measured_s: predicted_s + count * truth,
                    predicted_s,
                    count,
                }
            })
            .collect();
        let (mixed_s, _, rms) = fit_mixed(&obs).expect("fits");
        assert!(
            (mixed_s / truth - 1.0).abs() < 1e-9 && rms < 1e-9,
            "{mixed_s} {rms}"
        );
        let closed: Vec<Excess> = obs.iter().map(|o| Excess { count: 0.0, ..*o }).collect();
        let e = fit_mixed(&closed).unwrap_err().to_string();
        assert!(e.contains("staggered bursts"), "{e}");
    }

    #[test]
    fn too_few_runs_is_an_error() {
        let truth = Coeffs::DATASHEET;
        let obs = synthetic(&truth);
        let e = fit(&obs[..3]).unwrap_err().to_string();
        assert!(e.contains("3 runs") && e.contains("at least 7"), "{e}");
    }
}
