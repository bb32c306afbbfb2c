//! The answers of `tuili plan`: speed, latency, memory fit, energy and cost of one model
//! on one chip, with an error band from the calibration behind them.

use serde::Serialize;

use crate::chip::{ChipKind, ChipProfile, Precision};
use crate::cost::{KvFormat, ModelCost};
use crate::step::{step_ops, Coeffs, Hardware, StepShape};
use crate::PlanError;

/// The prompt length of `ttft_ms` and `prefill_tokens_per_s`.
pub const PROMPT: usize = 512;

/// Share of a chip's memory left for the runtime, activations and (on a CPU) the system.
pub const MEMORY_RESERVE: f64 = 0.10;

/// Error band of a chip that borrows another chip's coefficients: at least this, and
/// twice the lender's.
pub const BORROWED_BAND: f64 = 0.25;

/// Error band of a chip planned from its datasheet alone.
pub const DATASHEET_BAND: f64 = 0.5;

/// What the user asked.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Sequences decoding together.
    pub batch: usize,
    /// Context length of each sequence.
    pub ctx: usize,
    /// CPU threads (`None`: all).
    pub threads: Option<usize>,
    /// KV cache storage.
    pub kv: KvFormat,
    /// Price per chip-hour replacing the profile's.
    pub usd_per_hour: Option<f64>,
    /// Chips the model is split over (tensor parallelism; 1: one chip).
    pub tp: usize,
}

/// Where a plan's coefficients come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoeffSource {
    /// `measured` (fitted on this chip), `borrowed` (from the nearest measured chip of
    /// the same kind) or `datasheet` (none measured: default efficiencies).
    pub kind: &'static str,
    /// The chip the coefficients were fitted on, if any.
    pub from: Option<String>,
    /// What they were fitted to.
    pub source: String,
    /// The coefficients, as keys of this object.
    #[serde(flatten)]
    pub coeffs: Coeffs,
}

/// The coefficients for `chip`: its own calibration, else the nearest calibrated chip
/// of the same kind (by bandwidth and BF16 rate, in log space), else the datasheet
/// defaults; and the error band that goes with them.
pub fn coefficients(chip: &ChipProfile, all: &[ChipProfile]) -> (Coeffs, f64, CoeffSource) {
    let source = |kind, from: Option<&ChipProfile>, text: String, c: &Coeffs| CoeffSource {
        kind,
        from: from.map(|f| f.name.clone()),
        source: text,
        coeffs: *c,
    };
    if let Some(cal) = &chip.calibration {
        let s = source("measured", Some(chip), cal.source.clone(), &cal.coeffs);
        return (cal.coeffs, cal.error_band, s);
    }
    let distance = |o: &ChipProfile| {
        let bw = (o.bandwidth_gbs.value / chip.bandwidth_gbs.value)
            .ln()
            .abs();
        let f = (o.compute.ops_per_s(Precision::Bf16) / chip.compute.ops_per_s(Precision::Bf16))
            .ln()
            .abs();
        bw + f
    };
    let nearest = all
        .iter()
        .filter(|o| o.kind == chip.kind && o.name != chip.name)
        .filter_map(|o| o.calibration.as_ref().map(|c| (o, c)))
        .min_by(|a, b| distance(a.0).total_cmp(&distance(b.0)));
    match nearest {
        Some((o, cal)) => {
            let band = (2.0 * cal.error_band).max(BORROWED_BAND);
            let text = format!("borrowed from {} ({})", o.name, cal.source);
            (
                cal.coeffs,
                band,
                source("borrowed", Some(o), text, &cal.coeffs),
            )
        }
        None => {
            let c = match chip.kind {
                ChipKind::Cpu => Coeffs::DATASHEET,
                ChipKind::Accelerator => Coeffs::DATASHEET_ACCELERATOR,
            };
            let text = "no chip of this kind is calibrated: default efficiencies".to_string();
            (c, DATASHEET_BAND, source("datasheet", None, text, &c))
        }
    }
}

/// One plan: the stable JSON of `tuili plan -o json` (fields are only ever added).
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The model file.
    pub model: String,
    /// Its architecture.
    pub arch: String,
    /// The chip's profile name.
    pub chip: String,
    /// The chip's full name.
    pub chip_title: String,
    /// Weight storage (`as stored`, or the `--quant` asked).
    pub quant: String,
    /// Sequences decoding together.
    pub batch: usize,
    /// Context length of each sequence.
    pub ctx: usize,
    /// CPU threads, for CPU chips.
    pub threads: Option<usize>,
    /// Chips the model is split over by tensor parallelism; speeds, memory, energy and
    /// cost are those of the group.
    pub tp: usize,
    /// KV cache storage of keys and values.
    pub kv_type: String,
    /// Bytes of all weights.
    pub weight_bytes: u64,
    /// Weight bytes per storage format.
    pub weight_bytes_by_format: Vec<(String, u64)>,
    /// Parameters (all experts).
    pub params: u64,
    /// Parameters one token goes through.
    pub active_params: u64,
    /// KV bytes a token adds once local layers hold their window.
    pub kv_bytes_per_token: u64,
    /// KV bytes of one sequence at `ctx`.
    pub kv_bytes_per_sequence: u64,
    /// FLOPs of one decoded token at position `ctx / 2`.
    pub decode_flops_per_token: f64,
    /// FLOPs per token of a `PROMPT`-token prefill.
    pub prefill_flops_per_token: f64,
    /// Tokens/s of one sequence decoding at position `ctx / 2`.
    pub decode_tokens_per_s: f64,
    /// Tokens/s of `batch` sequences decoding together at `ctx / 2`, all of them.
    pub decode_tokens_per_s_batch: f64,
    /// What bounds the batched decode step: `memory`, `compute` or `overhead`.
    pub decode_bound: &'static str,
    /// Tokens/s of a `PROMPT`-token prefill.
    pub prefill_tokens_per_s: f64,
    /// Time to the first token of a `PROMPT`-token prompt, ms.
    pub ttft_ms: f64,
    /// Whether weights and `batch` sequences of `ctx` fit the chip's memory.
    pub fits: bool,
    /// Sequences of `ctx` that fit beside the weights.
    pub max_sequences: u64,
    /// Bytes the weights and `batch` sequences need.
    pub memory_needed_bytes: u64,
    /// Bytes usable on the chip (capacity less the reserve).
    pub memory_usable_bytes: u64,
    /// Energy per token of the batched decode.
    pub joules_per_token: f64,
    /// Cost per million tokens of the batched decode.
    pub usd_per_million_tokens: f64,
    /// The price per hour used (of all `tp` chips).
    pub usd_per_hour: f64,
    /// Relative uncertainty of the speeds (from calibration).
    pub error_band: f64,
    /// The coefficients and where they come from.
    pub calibration: CoeffSource,
}

/// Plans `model` (read from `model_path`) on `chip`; `all` are the profiles a chip
/// never measured may borrow coefficients from.
pub fn plan(
    model: &ModelCost,
    model_path: &str,
    quant: Option<&str>,
    chip: &ChipProfile,
    all: &[ChipProfile],
    o: &PlanOptions,
) -> Result<Plan, PlanError> {
    check(model, chip, o)?;
    let threads = (chip.kind == ChipKind::Cpu).then_some(o.threads).flatten();
    let hw = Hardware {
        tp: o.tp,
        ..Hardware::of(chip, threads, o.kv)
    };
    let (coeffs, band, source) = coefficients(chip, all);
    let pos = o.ctx / 2;
    let single = step_ops(model, &hw, &StepShape::decode(1, pos));
    let batch = step_ops(model, &hw, &StepShape::decode(o.batch, pos));
    let prompt = PROMPT.min(o.ctx);
    let prefill = step_ops(model, &hw, &StepShape::prefill(0, prompt));
    let batch_s = batch.seconds(&coeffs);
    let prefill_s = prefill.seconds(&coeffs);

    let usable = (chip.capacity_gb.value * 1e9 * (1.0 - MEMORY_RESERVE)) as u64 * o.tp as u64;
    let weights = model.weight_bytes();
    let per_seq = model.kv_bytes(o.ctx, o.kv).max(1);
    let needed = weights + o.batch as u64 * per_seq;
    let max_sequences = usable.saturating_sub(weights) / per_seq;

    // Power between idle and TDP in proportion to how busy the bottleneck is.
    let util = batch.utilization(&coeffs);
    let watts = (chip.idle_w.value + (chip.tdp_w.value - chip.idle_w.value) * util) * o.tp as f64;
    let per_token_s = batch_s / o.batch as f64;
    let price = o.usd_per_hour.unwrap_or(chip.usd_per_hour.value) * o.tp as f64;
    let (mem, comp): (f64, f64) = batch.ops.iter().fold((0.0, 0.0), |(m, c), op| {
        let (em, ec) = (op.mem_s / coeffs.eta_mem, op.comp_s / coeffs.eta_comp);
        if em >= ec {
            (m + em, c)
        } else {
            (m, c + ec)
        }
    });
    let over = batch.overhead(&coeffs);
    let decode_bound = if over >= mem.max(comp) {
        "overhead"
    } else if mem >= comp {
        "memory"
    } else {
        "compute"
    };
    Ok(Plan {
        model: model_path.to_string(),
        arch: model.arch.clone(),
        chip: chip.name.clone(),
        chip_title: chip.title.clone(),
        quant: quant.unwrap_or("as stored").to_string(),
        batch: o.batch,
        ctx: o.ctx,
        threads,
        tp: o.tp,
        kv_type: format!("{}/{}", o.kv.k.name(), o.kv.v.name()),
        weight_bytes: weights,
        weight_bytes_by_format: model.bytes_by_format(),
        params: model.params(),
        active_params: model.active_params(),
        kv_bytes_per_token: model.kv_bytes_per_token(o.kv),
        kv_bytes_per_sequence: per_seq,
        decode_flops_per_token: model.decode_flops(pos),
        prefill_flops_per_token: model.prefill_flops_per_token(prompt),
        decode_tokens_per_s: 1.0 / single.seconds(&coeffs),
        decode_tokens_per_s_batch: o.batch as f64 / batch_s,
        decode_bound,
        prefill_tokens_per_s: prompt as f64 / prefill_s,
        ttft_ms: prefill_s * 1e3,
        fits: needed <= usable,
        max_sequences,
        memory_needed_bytes: needed,
        memory_usable_bytes: usable,
        joules_per_token: watts * per_token_s,
        usd_per_million_tokens: price / 3600.0 * per_token_s * 1e6,
        usd_per_hour: price,
        error_band: band,
        calibration: source,
    })
}

/// The most chips a model may be split over.
pub const MAX_TP: usize = 64;

/// Refuses options out of range, naming the limit.
fn check(model: &ModelCost, chip: &ChipProfile, o: &PlanOptions) -> Result<(), PlanError> {
    const MAX_BATCH: usize = 1 << 20;
    if o.tp == 0 || o.tp > MAX_TP {
        return Err(PlanError::BadOption(format!(
            "--tp must be between 1 and {MAX_TP} chips, got {}",
            o.tp
        )));
    }
    if o.batch == 0 || o.batch > MAX_BATCH {
        return Err(PlanError::BadOption(format!(
            "--batch must be between 1 and {MAX_BATCH}, got {}",
            o.batch
        )));
    }
    if o.ctx == 0 || o.ctx > model.ctx_len {
        return Err(PlanError::BadOption(format!(
            "--ctx must be between 1 and the model's trained context {}, got {}",
            model.ctx_len, o.ctx
        )));
    }
    match (o.threads, &chip.cpu) {
        (Some(t), Some(cpu)) => {
            let max = cpu.threads.value as usize;
            if t == 0 || t > max {
                return Err(PlanError::BadOption(format!(
                    "--threads must be between 1 and {max} (the threads of {}), got {t}",
                    chip.name
                )));
            }
        }
        (Some(_), None) => {
            return Err(PlanError::BadOption(format!(
                "--threads applies to CPU chips; {} is not one",
                chip.name
            )))
        }
        _ => {}
    }
    if let Some(p) = o.usd_per_hour {
        if !(p >= 0.0 && p.is_finite()) {
            return Err(PlanError::BadOption(format!(
                "--price must be a price per hour of at least 0, got {p}"
            )));
        }
    }
    Ok(())
}
