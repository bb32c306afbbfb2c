//! Published measurements of chips we cannot reach, and the planner's prediction of
//! each: the check of the datasheet side of the model (`data/published.toml`).

use serde::{Deserialize, Serialize};

use crate::chip::{self, ChipProfile};
use crate::cost::KvFormat;
use crate::fit::{self, Obs};
use crate::plan;
use crate::shape::{Mix, Shape};
use crate::step::{step_ops, Hardware, StepShape};
use crate::PlanError;

/// The figures shipped with the planner.
pub const BUILTIN: &str = include_str!("../data/published.toml");

/// One published measurement.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figure {
    /// The chip profile it was measured on.
    pub chip: String,
    /// The model (a [`Shape`] of the same file).
    pub model: String,
    /// The weights' format (see [`Mix::parse`]).
    pub quant: String,
    /// `tgN` (N tokens generated one at a time from an empty cache, tokens/s) or `ppN`
    /// (one prompt of N tokens, tokens/s), as llama-bench names its tests.
    pub test: String,
    /// The measured tokens per second.
    pub value: f64,
    /// The engine and how it was run.
    pub engine: String,
    /// Where the figure was published.
    pub source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    model: Vec<Shape>,
    figure: Vec<Figure>,
}

/// A figure with its prediction.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    /// The chip.
    pub chip: String,
    /// The model.
    pub model: String,
    /// Its format.
    pub quant: String,
    /// The test.
    pub test: String,
    /// Published tokens/s.
    pub published: f64,
    /// Predicted tokens/s from the datasheet, with the coefficients `tuili plan` would
    /// use for the chip.
    pub predicted: f64,
    /// `predicted / published - 1`.
    pub error: f64,
    /// Predicted tokens/s with coefficients fitted to all the other figures (one set
    /// for every chip: the figure itself is held out).
    pub held_out: f64,
    /// `held_out / published - 1`.
    pub held_out_error: f64,
    /// Where the figure was published.
    pub source: String,
}

/// Reads figures and the shapes of their models from TOML `text` (of file `name`).
pub fn parse(text: &str, name: &str) -> Result<(Vec<Shape>, Vec<Figure>), PlanError> {
    let f: File = toml::from_str(text)
        .map_err(|e| PlanError::BadOption(format!("published figures {name}: {e}")))?;
    Ok((f.model, f.figure))
}

/// The step a llama-bench test runs: `ppN` one prefill of N tokens, `tgN` the decode
/// step at the middle of N generated tokens; and the tokens it yields per step.
fn test_step(test: &str) -> Option<(StepShape, f64)> {
    let n = |s: &str| s.parse::<usize>().ok().filter(|&n| n > 0);
    if let Some(n) = test.strip_prefix("pp").and_then(n) {
        return Some((StepShape::prefill(0, n), n as f64));
    }
    let n = test.strip_prefix("tg").and_then(n)?;
    Some((StepShape::decode(1, (n - 1) / 2), 1.0))
}

/// Predicts every figure on the chips `all`: from the datasheet (with the coefficients
/// `tuili plan` would use: the chip's own, borrowed, or the defaults), and with
/// coefficients fitted to the other figures. KV is f16, as llama.cpp stores it.
pub fn check(
    shapes: &[Shape],
    figures: &[Figure],
    all: &[ChipProfile],
) -> Result<Vec<Checked>, PlanError> {
    let kv = KvFormat {
        k: tuili_models::KvType::F16,
        v: tuili_models::KvType::F16,
    };
    let mut rows = Vec::new();
    let mut obs = Vec::new();
    for f in figures {
        let bad = |m: String| PlanError::BadOption(format!("figure {} {}: {m}", f.chip, f.test));
        let shape = shapes
            .iter()
            .find(|s| s.name == f.model)
            .ok_or_else(|| bad(format!("no model named '{}'", f.model)))?;
        let chip = chip::find(all, &f.chip)?;
        let cost = shape.cost(Mix::parse(&f.quant)?);
        let (step, tokens) =
            test_step(&f.test).ok_or_else(|| bad("the test is not ppN or tgN".into()))?;
        if !(f.value > 0.0 && f.value.is_finite()) {
            return Err(bad(format!("value must be positive, got {}", f.value)));
        }
        let (coeffs, _, _) = plan::coefficients(chip, all);
        let ops = step_ops(&cost, &Hardware::of(chip, None, kv), &step);
        let predicted = tokens / ops.seconds(&coeffs);
        rows.push(Checked {
            chip: f.chip.clone(),
            model: f.model.clone(),
            quant: f.quant.clone(),
            test: f.test.clone(),
            published: f.value,
            predicted,
            error: predicted / f.value - 1.0,
            held_out: f64::NAN,
            held_out_error: f64::NAN,
            source: f.source.clone(),
        });
        obs.push((
            Obs {
                ops,
                seconds: tokens / f.value,
            },
            tokens,
        ));
    }
    // Leave one out: too few figures to fit leave the held-out columns NaN.
    if obs.len() > fit::MIN_RUNS {
        for (i, row) in rows.iter_mut().enumerate() {
            let others: Vec<Obs> = (0..obs.len())
                .filter(|&j| j != i)
                .map(|j| obs[j].0.clone())
                .collect();
            let c = fit::fit(&others)?.coeffs;
            let (o, tokens) = &obs[i];
            row.held_out = tokens / o.ops.seconds(&c);
            row.held_out_error = row.held_out / row.published - 1.0;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tests_name_their_steps() {
        assert_eq!(
            test_step("pp512"),
            Some((StepShape::prefill(0, 512), 512.0))
        );
        assert_eq!(test_step("tg129"), Some((StepShape::decode(1, 64), 1.0)));
        for bad in ["tg0", "pp", "xx12", "tg-1"] {
            assert!(test_step(bad).is_none(), "{bad}");
        }
    }
}
