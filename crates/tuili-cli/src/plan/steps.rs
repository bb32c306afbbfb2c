//! `tuili plan --steps LOG`: a served engine's steps (`tuili serve --step-log`) against
//! the step model. Each step's shape is costed as the simulator costs it; the steps are
//! grouped by kind (decodes only, by batch; prompt chunks only; prompt chunks beside
//! decodes) and each group's measured forward pass and whole step are set beside the
//! prediction, so that a gap between a served load and its simulation can be traced to
//! the kind of step it comes from, or to the time between steps.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tuili_planner::cost::ModelCost;
use tuili_planner::step::{step_ops, Chunk, Coeffs, Hardware, ServeCoeffs, StepShape};

/// One logged step.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct LoggedStep {
    /// Seconds since the previous step ended.
    pub idle_s: f64,
    /// Seconds of the forward pass.
    pub forward_s: f64,
    /// Seconds of the whole step.
    pub step_s: f64,
    /// What it ran.
    pub shape: StepShape,
    /// Sequences whose last token was sampled.
    pub sampled: usize,
}

/// Reads a step log; a line that is not a step is an error naming its number.
pub(super) fn read(path: &Path) -> Result<Vec<LoggedStep>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the step log {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        out.push(parse(line).with_context(|| format!("{} line {}", path.display(), i + 1))?);
    }
    if out.is_empty() {
        bail!("the step log {} has no steps", path.display());
    }
    Ok(out)
}

fn parse(line: &str) -> Result<LoggedStep> {
    let v: serde_json::Value = serde_json::from_str(line)?;
    let num = |k: &str| {
        v[k].as_f64()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .with_context(|| format!("'{k}' is not a duration in seconds"))
    };
    let chunks = v["chunks"].as_array().context("'chunks' is not a list")?;
    if chunks.is_empty() {
        bail!("a step that ran no chunk");
    }
    let mut shape = StepShape::default();
    let mut sampled = 0;
    for c in chunks {
        let (start, n, sample) = match c.as_array().map(Vec::as_slice) {
            Some([s, n, b]) => (s.as_u64(), n.as_u64(), b.as_bool()),
            _ => (None, None, None),
        };
        let (Some(start), Some(n), Some(sample)) = (start, n, sample) else {
            bail!("a chunk is not [start, tokens, sampled]: {c}");
        };
        // As the simulator counts them: a chunk of one token is a decode.
        match n {
            0 => bail!("a chunk of no tokens: {c}"),
            1 => shape.decode.push(start as usize),
            n => shape.prefill.push(Chunk {
                start: start as usize,
                n: n as usize,
            }),
        }
        sampled += usize::from(sample);
    }
    Ok(LoggedStep {
        idle_s: num("idle_s")?,
        forward_s: num("forward_s")?,
        step_s: num("step_s")?,
        shape,
        sampled,
    })
}

/// The kind of a step, for grouping: ordered as printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Decode(usize),
    Prefill,
    Mixed,
}

impl Kind {
    fn of(s: &StepShape) -> Kind {
        match (s.prefill.len(), s.decode.len()) {
            (0, b) => Kind::Decode(b),
            (_, 0) => Kind::Prefill,
            _ => Kind::Mixed,
        }
    }

    fn name(self) -> String {
        match self {
            Kind::Decode(b) => format!("decode ×{b}"),
            Kind::Prefill => "prompt chunks".into(),
            Kind::Mixed => "chunks + decodes".into(),
        }
    }
}

/// Sums of one kind of step.
#[derive(Default)]
struct Group {
    steps: usize,
    tokens: usize,
    forward: f64,
    step: f64,
    predicted: f64,
    served: f64,
    ratios: Vec<f64>,
}

/// Prints the comparison of `steps` with the step model.
pub(super) fn print(
    steps: &[LoggedStep],
    cost: &ModelCost,
    hw: &Hardware,
    coeffs: &Coeffs,
    serving: &ServeCoeffs,
) {
    let mut groups: BTreeMap<Kind, Group> = BTreeMap::new();
    let (mut idle, mut busy) = (0.0, 0.0);
    for s in steps {
        let predicted = step_ops(cost, hw, &s.shape).seconds(coeffs);
        let mixed = if s.shape.decode.is_empty() {
            0
        } else {
            s.shape.prefill.len()
        };
        // Requests are not marked in the log: a chunk from position 0 starts one.
        let starts = s.shape.prefill.iter().filter(|c| c.start == 0).count();
        let g = groups.entry(Kind::of(&s.shape)).or_default();
        g.steps += 1;
        g.tokens += s.shape.tokens();
        g.forward += s.forward_s;
        g.step += s.step_s;
        g.predicted += predicted;
        g.served += predicted + serving.seconds(s.sampled, starts, mixed);
        g.ratios.push(s.forward_s / predicted);
        idle += s.idle_s;
        busy += s.step_s;
    }
    println!(
        "| {:<16} | {:>5} | {:>6} | {:>10} | {:>10} | {:>10} | {:>7} | {:>10} | {:>7} |",
        "step",
        "steps",
        "tokens",
        "forward ms",
        "model ms",
        "fwd/model",
        "median",
        "step ms",
        "served",
    );
    println!(
        "| :--------------- | ----: | -----: | ---------: | ---------: | ---------: | ------: | ---------: | ------: |"
    );
    for (kind, g) in &mut groups {
        g.ratios.sort_by(f64::total_cmp);
        let n = g.steps as f64;
        println!(
            "| {:<16} | {:>5} | {:>6.0} | {:>10.2} | {:>10.2} | {:>+9.1}% | {:>+6.1}% | {:>10.2} | {:>+6.1}% |",
            kind.name(),
            g.steps,
            g.tokens as f64 / n,
            1e3 * g.forward / n,
            1e3 * g.predicted / n,
            100.0 * (g.forward / g.predicted - 1.0),
            100.0 * (g.ratios[g.ratios.len() / 2] - 1.0),
            1e3 * g.step / n,
            100.0 * (g.step / g.served - 1.0),
        );
    }
    println!(
        "{} steps: {:.3} s in steps, {:.3} s between them (the engine loop and waits for requests)",
        steps.len(),
        busy,
        idle
    );
    println!(
        "fwd/model: measured forward passes over the step model's time (sums; median of the \
         steps' ratios beside it); served: whole steps over the model with the serving terms"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_step_parses_into_the_simulators_shape() {
        let s = parse(
            r#"{"at_s":1.5,"idle_s":0.001,"forward_s":0.02,"step_s":0.021,"chunks":[[40,1,true],[41,1,true],[0,128,false]]}"#,
        )
        .unwrap();
        assert_eq!(s.shape.decode, vec![40, 41]);
        assert_eq!(s.shape.prefill, vec![Chunk { start: 0, n: 128 }]);
        assert_eq!(s.sampled, 2);
        assert_eq!(Kind::of(&s.shape), Kind::Mixed);
        assert_eq!((s.idle_s, s.forward_s, s.step_s), (0.001, 0.02, 0.021));
    }

    #[test]
    fn bad_lines_are_refused_by_what_is_wrong() {
        for (line, why) in [
            (
                r#"{"idle_s":0,"forward_s":0,"step_s":0,"chunks":[[0,0,true]]}"#,
                "no tokens",
            ),
            (
                r#"{"idle_s":0,"forward_s":0,"step_s":0,"chunks":[[0,2]]}"#,
                "not [start",
            ),
            (
                r#"{"idle_s":-1,"forward_s":0,"step_s":0,"chunks":[[0,1,true]]}"#,
                "'idle_s'",
            ),
            (
                r#"{"idle_s":0,"forward_s":0,"step_s":0,"chunks":[]}"#,
                "no chunk",
            ),
            (r#"{"idle_s":0,"forward_s":0,"step_s":0}"#, "'chunks'"),
            ("not json", "expected"),
        ] {
            let e = format!("{:#}", parse(line).unwrap_err());
            assert!(e.contains(why), "{line}: {e}");
        }
    }
}
