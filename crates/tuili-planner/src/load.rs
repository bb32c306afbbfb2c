//! The load a simulated server meets: requests with an arrival time and their prompt
//! and output lengths, drawn (Poisson or gamma arrivals) or read from a recorded trace.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tuili_models::SplitMix64;

use crate::PlanError;

/// Most requests one simulation runs.
pub const MAX_REQUESTS: usize = 100_000;

/// One request: when it arrives (seconds from the start of the load) and its lengths.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Seconds from the start of the load.
    pub arrival_s: f64,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub output_tokens: usize,
}

/// A drawn load: how many requests, how fast, how bursty, how long.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Mean arrivals per second.
    pub rate: f64,
    /// Requests in all.
    pub requests: usize,
    /// Prompt tokens of each request.
    pub prompt_len: usize,
    /// Generated tokens of each request.
    pub output_len: usize,
    /// Seed of the arrival times and prompt tokens.
    pub seed: u64,
    /// Shape of the gamma distribution of the gaps between arrivals: 1 is a Poisson
    /// process, below 1 burstier, above 1 more regular (the gaps' coefficient of
    /// variation is `1 / sqrt(burstiness)`), as vLLM's benchmark's `--burstiness`.
    pub burstiness: f64,
}

impl Workload {
    /// The requests of this load, arrival times drawn from the seed.
    pub fn draw(&self) -> Result<Vec<Request>, PlanError> {
        let bad = |m: String| Err(PlanError::BadOption(m));
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            return bad(format!("--rate must be positive, got {}", self.rate));
        }
        if !(self.burstiness > 0.0 && self.burstiness.is_finite()) {
            return bad(format!(
                "--burstiness must be positive (1 is Poisson), got {}",
                self.burstiness
            ));
        }
        if self.requests == 0 || self.requests > MAX_REQUESTS {
            return bad(format!(
                "--requests must be between 1 and {MAX_REQUESTS}, got {}",
                self.requests
            ));
        }
        let mut rng = SplitMix64::new(self.seed);
        let k = self.burstiness;
        let mut t = 0.0;
        Ok((0..self.requests)
            .map(|_| {
                t += gamma(&mut rng, k) / (k * self.rate);
                Request {
                    arrival_s: t,
                    prompt_tokens: self.prompt_len,
                    output_tokens: self.output_len,
                }
            })
            .collect())
    }
}

/// A draw of the gamma distribution of shape `k` and scale 1 (Marsaglia and Tsang's
/// method; for `k` = 1 the exponential's inverse transform).
fn gamma(rng: &mut SplitMix64, k: f64) -> f64 {
    // 1 - u keeps ln away from 0.
    let mut uniform = || 1.0 - rng.next_f64();
    if k == 1.0 {
        return -uniform().ln();
    }
    if k < 1.0 {
        // G(k) = G(k + 1) · U^(1/k).
        let u = uniform();
        return gamma(rng, k + 1.0) * u.powf(1.0 / k);
    }
    let d = k - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        // A standard normal by Box and Muller.
        let (u1, u2) = (uniform(), uniform());
        let x = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        if uniform().ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// Reads a recorded load: a JSON array of requests, or an object whose `requests` is
/// one (`{"arrival_s": 0.5, "prompt_tokens": 128, "output_tokens": 64}` each).
pub fn read_trace(path: &Path) -> Result<Vec<Request>, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlanError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_trace(&text, &path.display().to_string())
}

/// [`read_trace`] of the text of file `name`.
pub fn parse_trace(text: &str, name: &str) -> Result<Vec<Request>, PlanError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Trace {
        Bare(Vec<Request>),
        Wrapped { requests: Vec<Request> },
    }
    let reqs = match serde_json::from_str::<Trace>(text) {
        Ok(Trace::Bare(r) | Trace::Wrapped { requests: r }) => r,
        Err(e) => {
            return Err(PlanError::BadOption(format!(
                "trace {name}: not a list of {{arrival_s, prompt_tokens, output_tokens}}: {e}"
            )))
        }
    };
    check_trace(&reqs, name)?;
    Ok(reqs)
}

/// Checks the requests of trace `name`: 1 to [`MAX_REQUESTS`] of them, arrivals in
/// order, every length at least 1.
pub fn check_trace(reqs: &[Request], name: &str) -> Result<(), PlanError> {
    let bad = |msg: String| PlanError::BadOption(format!("trace {name}: {msg}"));
    if reqs.is_empty() || reqs.len() > MAX_REQUESTS {
        return Err(bad(format!(
            "must hold 1 to {MAX_REQUESTS} requests, holds {}",
            reqs.len()
        )));
    }
    let mut last = 0.0;
    for (i, r) in reqs.iter().enumerate() {
        if !(r.arrival_s >= last && r.arrival_s.is_finite()) {
            return Err(bad(format!(
                "request {i}: arrival_s {} must be finite, at least 0 and not before the \
                 previous request's ({last})",
                r.arrival_s
            )));
        }
        if r.prompt_tokens == 0 || r.output_tokens == 0 {
            return Err(bad(format!(
                "request {i}: prompt_tokens and output_tokens must be at least 1"
            )));
        }
        last = r.arrival_s;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps(burstiness: f64) -> (f64, f64) {
        let w = Workload {
            rate: 4.0,
            requests: 40_000,
            prompt_len: 1,
            output_len: 1,
            seed: 3,
            burstiness,
        };
        let r = w.draw().expect("draws");
        let g: Vec<f64> = std::iter::once(r[0].arrival_s)
            .chain(r.windows(2).map(|p| p[1].arrival_s - p[0].arrival_s))
            .collect();
        let n = g.len() as f64;
        let mean = g.iter().sum::<f64>() / n;
        let var = g.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt() / mean)
    }

    #[test]
    fn gaps_have_the_rate_and_the_burstiness_asked() {
        for k in [0.25, 1.0, 4.0] {
            let (mean, cv) = gaps(k);
            assert!((mean * 4.0 - 1.0).abs() < 0.03, "k {k}: mean gap {mean}");
            let want = 1.0 / k.sqrt();
            assert!(
                (cv / want - 1.0).abs() < 0.05,
                "k {k}: cv {cv}, want {want}"
            );
        }
    }

    #[test]
    fn traces_parse_and_refuse_garbage() {
        let t = r#"[{"arrival_s": 0, "prompt_tokens": 5, "output_tokens": 2},
                    {"arrival_s": 0.5, "prompt_tokens": 7, "output_tokens": 3}]"#;
        let r = parse_trace(t, "t").expect("parses");
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].prompt_tokens, 7);
        let wrapped = format!(r#"{{"requests": {t}}}"#);
        assert_eq!(parse_trace(&wrapped, "t").expect("parses"), r);
        for (bad, says) in [
            ("[]", "1 to"),
            ("{", "not a list"),
            (
                r#"[{"arrival_s": 1, "prompt_tokens": 5, "output_tokens": 2},
                    {"arrival_s": 0.5, "prompt_tokens": 5, "output_tokens": 2}]"#,
                "request 1: arrival_s 0.5",
            ),
            (
                r#"[{"arrival_s": 0, "prompt_tokens": 0, "output_tokens": 2}]"#,
                "request 0",
            ),
            (
                r#"[{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 2, "x": 1}]"#,
                "not a list",
            ),
        ] {
            let e = parse_trace(bad, "t.json").unwrap_err().to_string();
            assert!(e.contains("trace t.json") && e.contains(says), "{bad}: {e}");
        }
    }
}
