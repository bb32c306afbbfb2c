//! Published measurements of chips we cannot reach, and the planner's prediction of
//! each: the check of the datasheet side of the model (`data/published.toml`).

use serde::{Deserialize, Serialize};

use crate::chip::{self, ChipProfile};
use crate::cost::{KvFormat, ModelCost};
use crate::fit::{self, Obs};
use crate::plan;
use crate::shape::{Mix, Shape};
use crate::step::{step_ops, Chunk, Hardware, StepOps, StepShape};
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
    /// (one prompt of N tokens, tokens/s), as llama-bench names its tests; or `e2e`:
    /// `batch` requests of `input` prompt tokens and `output` generated tokens run
    /// together, generated tokens per second of the whole run (prefill included), as
    /// server engines' offline benchmarks report it.
    pub test: String,
    /// Of `e2e`: the requests in flight together, a count or `"fill"` (as many as the
    /// KV memory beside the weights holds: an engine's maximum-throughput run).
    #[serde(default)]
    pub batch: Option<Batch>,
    /// Of `e2e`: prompt tokens per request.
    #[serde(default)]
    pub input: Option<usize>,
    /// Of `e2e`: generated tokens per request.
    #[serde(default)]
    pub output: Option<usize>,
    /// Chips the model was split over by tensor parallelism (1 if absent).
    #[serde(default)]
    pub tp: Option<usize>,
    /// How the engine stored the KV cache, where the source says (`f16`, `bf16`,
    /// `q8_0`, `f32`; 8-bit float caches weigh as `q8_0` within 6%); `f16` if absent.
    #[serde(default)]
    pub kv: Option<String>,
    /// The measured tokens per second.
    pub value: f64,
    /// The engine and how it was run.
    pub engine: String,
    /// Where the figure was published.
    pub source: String,
}

/// How many requests an `e2e` figure runs together.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Batch {
    /// This many.
    Count(usize),
    /// `"fill"`, the only word allowed: as many as memory holds.
    Word(String),
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

/// The most requests an `e2e` figure may run together.
pub const MAX_BATCH: usize = 1 << 16;

/// The ops of an `e2e` run and the tokens it generates: one step prefilling all
/// `batch` prompts (an engine splits it into chunks; the work is the same), then
/// `output - 1` decode steps of all of them (the prefill yields each first token),
/// each costed at the middle position of the decode (attention grows linearly).
fn e2e_ops(
    cost: &ModelCost,
    hw: &Hardware,
    batch: usize,
    input: usize,
    output: usize,
) -> (StepOps, f64) {
    let prefill = StepShape {
        prefill: vec![Chunk { start: 0, n: input }; batch],
        decode: Vec::new(),
    };
    let mut ops = step_ops(cost, hw, &prefill);
    if output > 1 {
        let mid = StepShape::decode(batch, input + output / 2);
        ops = ops.then(step_ops(cost, hw, &mid).times((output - 1) as f64));
    }
    (ops.merged(), (batch * output) as f64)
}

/// The requests of figure `f` (an `e2e` one) in flight together: its count, or as many
/// sequences of `input + output` tokens as fit beside the weights in the memory
/// `tuili plan` counts usable, on all `tp` chips.
fn batch_of(
    f: &Figure,
    cost: &ModelCost,
    chip: &ChipProfile,
    kv: KvFormat,
    len: usize,
) -> Result<usize, String> {
    match &f.batch {
        None => Ok(1),
        Some(Batch::Count(n)) if (1..=MAX_BATCH).contains(n) => Ok(*n),
        Some(Batch::Count(n)) => Err(format!("batch must be between 1 and {MAX_BATCH}, got {n}")),
        Some(Batch::Word(w)) if w == "fill" => {
            let chips = f.tp.unwrap_or(1) as f64;
            let usable = chips * chip.capacity_gb.value * 1e9 * (1.0 - plan::MEMORY_RESERVE);
            let free = usable - cost.weight_bytes() as f64;
            let n = (free / cost.kv_bytes(len, kv).max(1) as f64).floor();
            if n < 1.0 {
                return Err(format!(
                    "batch \"fill\": the weights leave no room for one sequence of {len} tokens"
                ));
            }
            Ok((n as usize).min(MAX_BATCH))
        }
        Some(Batch::Word(w)) => Err(format!("batch must be a count or \"fill\", got \"{w}\"")),
    }
}

/// What figure `f` runs: its ops, the tokens they yield, and the test as the table
/// shows it (an `e2e` one with its lengths and batch).
fn figure_ops(
    f: &Figure,
    shape: &Shape,
    cost: &ModelCost,
    chip: &ChipProfile,
    kv: KvFormat,
) -> Result<(StepOps, f64, String), String> {
    let tp = match f.tp.unwrap_or(1) {
        n @ 1..=plan::MAX_TP => n,
        n => {
            return Err(format!(
                "tp must be between 1 and {} chips, got {n}",
                plan::MAX_TP
            ))
        }
    };
    let hw = Hardware {
        tp,
        ..Hardware::of(chip, None, kv)
    };
    if f.test == "e2e" {
        let (input, output) = match (f.input, f.output) {
            (Some(i), Some(o)) if i > 0 && o > 0 => (i, o),
            _ => return Err("test e2e needs input and output, each at least 1 token".into()),
        };
        if input + output > shape.ctx {
            return Err(format!(
                "input + output is {} tokens, over the model's context of {}",
                input + output,
                shape.ctx
            ));
        }
        let batch = batch_of(f, cost, chip, kv, input + output)?;
        let (ops, tokens) = e2e_ops(cost, &hw, batch, input, output);
        let split = if tp > 1 {
            format!(" tp{tp}")
        } else {
            String::new()
        };
        let label = format!("e2e {input}/{output} x{batch}{split}");
        return Ok((ops, tokens, label));
    }
    if f.batch.is_some() || f.input.is_some() || f.output.is_some() {
        return Err("batch, input and output apply to test e2e only".into());
    }
    let (step, tokens) = test_step(&f.test).ok_or("the test is not ppN, tgN or e2e")?;
    Ok((step_ops(cost, &hw, &step), tokens, f.test.clone()))
}

/// The KV cache format of figure `f`.
fn kv_of(f: &Figure) -> Result<KvFormat, String> {
    use tuili_models::KvType;
    let name = f.kv.as_deref().unwrap_or("f16");
    let t = KvType::ALL
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            let names: Vec<&str> = KvType::ALL.iter().map(|t| t.name()).collect();
            format!("kv '{name}' is not one of {}", names.join(", "))
        })?;
    Ok(KvFormat { k: t, v: t })
}

/// The engine a figure was measured with: the first word of its `engine` line.
pub fn engine_of(f: &Figure) -> &str {
    f.engine.split_whitespace().next().unwrap_or("")
}

/// Predicts every figure on the chips `all`: from the datasheet (with the coefficients
/// `tuili plan` would use: the chip's own, borrowed, or the defaults), and with
/// coefficients fitted to the other figures of the same engine.
pub fn check(
    shapes: &[Shape],
    figures: &[Figure],
    all: &[ChipProfile],
) -> Result<Vec<Checked>, PlanError> {
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
        let kv = kv_of(f).map_err(bad)?;
        if !(f.value > 0.0 && f.value.is_finite()) {
            return Err(bad(format!("value must be positive, got {}", f.value)));
        }
        let (ops, tokens, test) = figure_ops(f, shape, &cost, chip, kv).map_err(bad)?;
        let (coeffs, _, _) = plan::coefficients(chip, all);
        let predicted = tokens / ops.seconds(&coeffs);
        rows.push(Checked {
            chip: f.chip.clone(),
            model: f.model.clone(),
            quant: f.quant.clone(),
            test,
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
    // Leave one out within each engine (one calibration per engine, as `--calibrate`
    // fits one): an engine with too few other figures to fit leaves the columns NaN.
    for (i, row) in rows.iter_mut().enumerate() {
        let others: Vec<Obs> = (0..obs.len())
            .filter(|&j| j != i && engine_of(&figures[j]) == engine_of(&figures[i]))
            .map(|j| obs[j].0.clone())
            .collect();
        if others.len() < fit::MIN_RUNS {
            continue;
        }
        let c = fit::fit(&others)?.coeffs;
        let (o, tokens) = &obs[i];
        row.held_out = tokens / o.ops.seconds(&c);
        row.held_out_error = row.held_out / row.published - 1.0;
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
