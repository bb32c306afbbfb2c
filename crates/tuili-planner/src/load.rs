//! The load a simulated server meets: requests with an arrival time and their prompt
//! and output lengths, drawn (Poisson or gamma arrivals, lengths fixed or from a
//! distribution) or read from a recorded trace.

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
    pub prompt_len: Lengths,
    /// Generated tokens of each request.
    pub output_len: Lengths,
    /// Seed of the arrival times, lengths and prompt tokens.
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
        // Lengths from streams of their own: the arrivals of a seed stay the same
        // whatever lengths are asked.
        let mut prompts = SplitMix64::new(self.seed ^ PROMPT_STREAM);
        let mut outputs = SplitMix64::new(self.seed ^ OUTPUT_STREAM);
        let k = self.burstiness;
        let mut t = 0.0;
        Ok((0..self.requests)
            .map(|_| {
                t += gamma(&mut rng, k) / (k * self.rate);
                Request {
                    arrival_s: t,
                    prompt_tokens: self.prompt_len.draw(&mut prompts),
                    output_tokens: self.output_len.draw(&mut outputs),
                }
            })
            .collect())
    }
}

/// Seeds of the prompt and output lengths' streams, relative to the arrivals'.
const PROMPT_STREAM: u64 = 0x5052_4f4d_5054;
const OUTPUT_STREAM: u64 = 0x4f55_5450_5554;

/// Most tokens one drawn length may hold.
pub const MAX_LENGTH: usize = 1 << 24;

/// How many tokens the prompts (or outputs) of a drawn load hold: `N`, `A..B`
/// (uniform, both ends included), `lognormal:MEDIAN,SIGMA,MAX` (drawn again above MAX:
/// request lengths have a long right tail), or `trace:FILE` (the lengths of a recorded
/// trace's requests, drawn with replacement).
#[derive(Debug, Clone, PartialEq)]
pub enum Lengths {
    /// Every request the same.
    Fixed(usize),
    /// Each from `lo` to `hi`, both included, equally likely.
    Uniform {
        /// The shortest.
        lo: usize,
        /// The longest.
        hi: usize,
    },
    /// `median · e^(sigma·z)` for a standard normal `z`, rounded, drawn again above `max`.
    LogNormal {
        /// The median before the cut at `max`.
        median: f64,
        /// The standard deviation of the length's logarithm.
        sigma: f64,
        /// The longest.
        max: usize,
    },
    /// The lengths of trace `path`'s requests.
    Sample {
        /// The trace's file.
        path: String,
        /// Its requests' lengths.
        lengths: Vec<usize>,
    },
}

/// Which length of a trace's requests `trace:FILE` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthOf {
    /// Prompt tokens.
    Prompt,
    /// Generated tokens.
    Output,
}

impl LengthOf {
    fn option(self) -> &'static str {
        match self {
            LengthOf::Prompt => "--prompt-len",
            LengthOf::Output => "--output-len",
        }
    }
}

impl Lengths {
    /// Parses `text` (the syntax of [`Lengths`]) for the lengths `of`; a trace is read
    /// from its file.
    pub fn parse(text: &str, of: LengthOf) -> Result<Lengths, PlanError> {
        let opt = of.option();
        let bad = |why: String| {
            PlanError::BadOption(format!(
                "{opt} {text:?}: {why} (expected N, A..B, lognormal:MEDIAN,SIGMA,MAX or \
                 trace:FILE)"
            ))
        };
        let count = |s: &str| -> Result<usize, PlanError> {
            match s.trim().parse::<usize>() {
                Ok(n) if (1..=MAX_LENGTH).contains(&n) => Ok(n),
                _ => Err(bad(format!("{s:?} is not a length from 1 to {MAX_LENGTH}"))),
            }
        };
        let t = text.trim();
        if let Some(path) = t.strip_prefix("trace:") {
            let reqs = read_trace(Path::new(path))?;
            let lengths = reqs
                .iter()
                .map(|r| match of {
                    LengthOf::Prompt => r.prompt_tokens,
                    LengthOf::Output => r.output_tokens,
                })
                .collect();
            return Ok(Lengths::Sample {
                path: path.to_string(),
                lengths,
            });
        }
        if let Some(args) = t.strip_prefix("lognormal:") {
            let parts: Vec<&str> = args.split(',').collect();
            let [median, sigma, max] = parts[..] else {
                return Err(bad("lognormal takes MEDIAN,SIGMA,MAX".into()));
            };
            let max = count(max)?;
            let median: f64 = median
                .trim()
                .parse()
                .map_err(|_| bad(format!("median {median:?} is not a number")))?;
            let sigma: f64 = sigma
                .trim()
                .parse()
                .map_err(|_| bad(format!("sigma {sigma:?} is not a number")))?;
            if !(1.0..=max as f64).contains(&median) {
                return Err(bad(format!("the median must be from 1 to MAX ({max})")));
            }
            if !(0.0..=4.0).contains(&sigma) {
                return Err(bad("sigma must be from 0 to 4".into()));
            }
            return Ok(Lengths::LogNormal { median, sigma, max });
        }
        if let Some((lo, hi)) = t.split_once("..") {
            let (lo, hi) = (count(lo)?, count(hi)?);
            if lo > hi {
                return Err(bad(format!("{lo} is above {hi}")));
            }
            return Ok(Lengths::Uniform { lo, hi });
        }
        count(t).map(Lengths::Fixed)
    }

    /// One length.
    fn draw(&self, rng: &mut SplitMix64) -> usize {
        match self {
            Lengths::Fixed(n) => *n,
            Lengths::Uniform { lo, hi } => lo + (rng.next_u64() % (hi - lo + 1) as u64) as usize,
            Lengths::LogNormal { median, sigma, max } => loop {
                // The median is at most MAX, so at least half the draws are kept.
                let z = normal(rng);
                let n = (median * (sigma * z).exp()).round().max(1.0);
                if n <= *max as f64 {
                    break n as usize;
                }
            },
            Lengths::Sample { lengths, .. } => {
                lengths[(rng.next_u64() % lengths.len() as u64) as usize]
            }
        }
    }

    /// The mean length: exact but for the lognormal, whose mean is that of a fixed
    /// sample of 4096 draws.
    pub fn mean(&self) -> f64 {
        match self {
            Lengths::Fixed(n) => *n as f64,
            Lengths::Uniform { lo, hi } => (lo + hi) as f64 / 2.0,
            Lengths::LogNormal { .. } => {
                let mut rng = SplitMix64::new(1);
                (0..4096).map(|_| self.draw(&mut rng) as f64).sum::<f64>() / 4096.0
            }
            Lengths::Sample { lengths, .. } => {
                lengths.iter().sum::<usize>() as f64 / lengths.len() as f64
            }
        }
    }
}

impl std::fmt::Display for Lengths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lengths::Fixed(n) => write!(f, "{n}"),
            Lengths::Uniform { lo, hi } => write!(f, "{lo}..{hi}"),
            Lengths::LogNormal { median, sigma, max } => {
                write!(f, "lognormal:{median},{sigma},{max}")
            }
            Lengths::Sample { path, .. } => write!(f, "trace:{path}"),
        }
    }
}

/// A uniform draw in (0, 1]: 1 - u keeps ln away from 0.
fn uniform(rng: &mut SplitMix64) -> f64 {
    1.0 - rng.next_f64()
}

/// A standard normal draw (Box and Muller).
fn normal(rng: &mut SplitMix64) -> f64 {
    let (u1, u2) = (uniform(rng), uniform(rng));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A draw of the gamma distribution of shape `k` and scale 1 (Marsaglia and Tsang's
/// method; for `k` = 1 the exponential's inverse transform).
fn gamma(rng: &mut SplitMix64, k: f64) -> f64 {
    if k == 1.0 {
        return -uniform(rng).ln();
    }
    if k < 1.0 {
        // G(k) = G(k + 1) · U^(1/k).
        let u = uniform(rng);
        return gamma(rng, k + 1.0) * u.powf(1.0 / k);
    }
    let d = k - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        if uniform(rng).ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// Reads a recorded load: a JSON array of requests, an object whose `requests` is one
/// (`{"arrival_s": 0.5, "prompt_tokens": 128, "output_tokens": 64}` each), or JSON
/// lines of requests in any order, as `tuili serve --trace` writes them (a line per
/// request as it ends), which are sorted by arrival.
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
    let not_a_list = |e: String| {
        PlanError::BadOption(format!(
            "trace {name}: not a list of {{arrival_s, prompt_tokens, output_tokens}}: {e}"
        ))
    };
    let reqs = match serde_json::from_str::<Trace>(text) {
        Ok(Trace::Bare(r) | Trace::Wrapped { requests: r }) => r,
        Err(whole) => {
            let lines = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty());
            let mut reqs = Vec::new();
            for (i, line) in lines {
                match serde_json::from_str::<Request>(line) {
                    Ok(r) => reqs.push(r),
                    // Not JSON lines at all: the error of the whole text says more.
                    Err(_) if reqs.is_empty() => return Err(not_a_list(whole.to_string())),
                    Err(e) => return Err(not_a_list(format!("line {}: {e}", i + 1))),
                }
            }
            reqs.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
            reqs
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
            prompt_len: Lengths::Fixed(1),
            output_len: Lengths::Fixed(1),
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

    #[test]
    fn json_lines_in_any_order_are_sorted_by_arrival() {
        let t = "{\"arrival_s\": 2.5, \"prompt_tokens\": 9, \"output_tokens\": 4}\n\n\
                 {\"arrival_s\": 0.5, \"prompt_tokens\": 7, \"output_tokens\": 3}\n";
        let r = parse_trace(t, "t").expect("parses");
        assert_eq!(
            r.iter().map(|r| r.prompt_tokens).collect::<Vec<_>>(),
            [7, 9],
            "{r:?}"
        );
        let broken = format!("{t}{{\"arrival_s\": 1}}\n");
        let e = parse_trace(&broken, "t.jsonl").unwrap_err().to_string();
        assert!(e.contains("trace t.jsonl") && e.contains("line 4"), "{e}");
    }

    fn lengths(text: &str) -> Lengths {
        Lengths::parse(text, LengthOf::Prompt).expect(text)
    }

    fn drawn(l: Lengths, n: usize) -> Vec<usize> {
        let w = Workload {
            rate: 1.0,
            requests: n,
            prompt_len: l,
            output_len: Lengths::Fixed(1),
            seed: 11,
            burstiness: 1.0,
        };
        w.draw()
            .expect("draws")
            .iter()
            .map(|r| r.prompt_tokens)
            .collect()
    }

    #[test]
    fn lengths_are_drawn_from_the_distribution_asked() {
        assert_eq!(drawn(lengths("64"), 5), [64; 5]);

        let u = drawn(lengths("10..13"), 8000);
        for v in 10..=13 {
            let share = u.iter().filter(|&&x| x == v).count() as f64 / 8000.0;
            assert!((share - 0.25).abs() < 0.02, "{v}: {share}");
        }
        assert_eq!(lengths("10..13").mean(), 11.5);

        // Median 200, sigma 1, at most 1000: half the draws below the median, none
        // above the cap, and a long tail (a quarter above 200·e^0.674 ≈ 393, less the
        // 5.4% cut above 1000).
        let l = lengths("lognormal:200,1,1000");
        let v = drawn(l.clone(), 20_000);
        let below = v.iter().filter(|&&x| x < 200).count() as f64 / 20_000.0;
        let over = v.iter().filter(|&&x| x > 393).count() as f64 / 20_000.0;
        assert!(
            (below - 0.5 / 0.946).abs() < 0.015,
            "below the median: {below}"
        );
        assert!(
            (over - (0.25 - 0.054) / 0.946).abs() < 0.015,
            "tail: {over}"
        );
        assert!(v.iter().all(|&x| (1..=1000).contains(&x)));
        let mean = v.iter().sum::<usize>() as f64 / v.len() as f64;
        assert!(
            (l.mean() / mean - 1.0).abs() < 0.05,
            "{} against {mean}",
            l.mean()
        );
        assert_eq!(l.to_string(), "lognormal:200,1,1000");
    }

    #[test]
    fn lengths_leave_the_arrivals_of_a_seed_alone() {
        let arrivals = |l: Lengths| -> Vec<f64> {
            let w = Workload {
                rate: 2.0,
                requests: 50,
                prompt_len: l,
                output_len: Lengths::Fixed(8),
                seed: 5,
                burstiness: 0.5,
            };
            w.draw()
                .expect("draws")
                .iter()
                .map(|r| r.arrival_s)
                .collect()
        };
        assert_eq!(arrivals(lengths("100")), arrivals(lengths("1..900")));
    }

    #[test]
    fn lengths_of_a_trace_are_its_requests() {
        let dir = std::env::temp_dir().join(format!("tuili-lengths-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("t.jsonl");
        std::fs::write(
            &path,
            "{\"arrival_s\": 0, \"prompt_tokens\": 30, \"output_tokens\": 5}\n\
             {\"arrival_s\": 1, \"prompt_tokens\": 90, \"output_tokens\": 7}\n",
        )
        .expect("write");
        let text = format!("trace:{}", path.display());
        let p = Lengths::parse(&text, LengthOf::Prompt).expect("prompts");
        let o = Lengths::parse(&text, LengthOf::Output).expect("outputs");
        assert_eq!((p.mean(), o.mean()), (60.0, 6.0));
        let v = drawn(p.clone(), 400);
        assert!(v.iter().all(|&x| x == 30 || x == 90));
        assert!(v.contains(&30) && v.contains(&90));
        assert_eq!(p.to_string(), text);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_lengths_are_named() {
        for (text, says) in [
            ("0", "is not a length from 1"),
            ("abc", "is not a length"),
            ("9..3", "9 is above 3"),
            ("lognormal:100,1", "MEDIAN,SIGMA,MAX"),
            ("lognormal:500,1,100", "from 1 to MAX (100)"),
            ("lognormal:100,9,1000", "sigma must be"),
            ("trace:/nonexistent/t.json", "/nonexistent/t.json"),
        ] {
            let e = Lengths::parse(text, LengthOf::Output)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{text}: {e}");
            if !text.starts_with("trace:") {
                assert!(e.contains("--output-len"), "{text}: {e}");
            }
        }
    }
}
