//! Chip profiles: a datasheet as data. Every number is a `{ value, source }` pair, so a
//! reader can check where it came from; the format is documented in `docs/PLANNER.md`.
//!
//! Built-in profiles live in `chips/*.toml` (embedded in the binary); profiles under
//! `$TUILI_HOME/planner/chips` (written by `tuili plan --probe` and `--calibrate`) take
//! precedence over a built-in profile of the same name.

use std::path::Path;

use toml::{Table, Value};
use tuili_gguf::GgmlType;

use crate::fit::MAX_ETA;
use crate::step::{Coeffs, ServeCoeffs};
use crate::PlanError;

/// The precisions a chip quotes a throughput for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// 32-bit float.
    Fp32,
    /// BF16 or FP16 (datasheets quote them at the same rate).
    Bf16,
    /// 8-bit float.
    Fp8,
    /// 8-bit integer.
    Int8,
    /// 4-bit integer (or FP4, where the chip has that instead).
    Int4,
}

impl Precision {
    /// Every precision, in the order of [`Compute::tflops`].
    pub const ALL: [Precision; 5] = [
        Precision::Fp32,
        Precision::Bf16,
        Precision::Fp8,
        Precision::Int8,
        Precision::Int4,
    ];

    /// The key of the profile's `[compute]` table.
    pub fn key(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp8 => "fp8",
            Precision::Int8 => "int8",
            Precision::Int4 => "int4",
        }
    }

    /// The precision that work of this one runs at when the chip has no rate for it:
    /// 4-bit weights widen to 8-bit integers, everything else to BF16.
    fn fallback(self) -> Option<Precision> {
        match self {
            Precision::Bf16 => None,
            Precision::Int4 => Some(Precision::Int8),
            _ => Some(Precision::Bf16),
        }
    }

    fn index(self) -> usize {
        Precision::ALL.iter().position(|&p| p == self).unwrap_or(0)
    }
}

/// A number and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced {
    /// The value, in the unit the key names.
    pub value: f64,
    /// A datasheet URL or title, or how it was measured or estimated.
    pub source: String,
}

/// Dense throughput per precision (datasheets quote sparse rates too: not these).
#[derive(Debug, Clone, PartialEq)]
pub struct Compute {
    /// TFLOPS or TOPS per precision, in [`Precision::ALL`] order; 0 when the chip has
    /// no rate for it.
    pub tflops: [Sourced; 5],
}

impl Compute {
    /// Operations per second at `p`, following [`Precision`]'s fallbacks where the chip
    /// has no rate.
    pub fn ops_per_s(&self, p: Precision) -> f64 {
        let mut p = p;
        loop {
            let v = self.tflops[p.index()].value;
            if v > 0.0 {
                return v * 1e12;
            }
            match p.fallback() {
                Some(next) => p = next,
                // Validation guarantees a positive BF16 rate.
                None => return v * 1e12,
            }
        }
    }
}

/// What kind of chip: decides activation widths and attention precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChipKind {
    /// A CPU: f32 activations and attention, throughput scales with threads.
    Cpu,
    /// A GPU or an accelerator: 16-bit activations and attention.
    Accelerator,
}

/// Thread scaling of a CPU profile.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuThreads {
    /// Threads the `[compute]` and `[memory]` figures are for (all cores).
    pub threads: Sourced,
    /// Read bandwidth one thread reaches, GB/s (bandwidth scales with threads up to the
    /// full figure).
    pub bandwidth_per_thread_gbs: Sourced,
}

/// A chip's datasheet.
#[derive(Debug, Clone, PartialEq)]
pub struct ChipProfile {
    /// Short name (`h100-sxm`), what `--chip` takes.
    pub name: String,
    /// Full product name.
    pub title: String,
    /// CPU or accelerator.
    pub kind: ChipKind,
    /// Memory capacity, GB (10^9 bytes).
    pub capacity_gb: Sourced,
    /// Memory bandwidth, GB/s.
    pub bandwidth_gbs: Sourced,
    /// Dense throughput per precision.
    pub compute: Compute,
    /// Thermal design power, W.
    pub tdp_w: Sourced,
    /// Idle power, W.
    pub idle_w: Sourced,
    /// Chip-to-chip bandwidth, GB/s (bidirectional, as vendors quote it).
    pub interconnect_gbs: Sourced,
    /// The fixed cost of one small all-reduce over a tensor-parallel group of these
    /// chips, µs (optional: [`crate::step::ALLREDUCE_LATENCY_S`] where absent).
    pub allreduce_latency_us: Option<Sourced>,
    /// Price of one chip per hour, USD.
    pub usd_per_hour: Sourced,
    /// CPU thread scaling (CPU profiles only).
    pub cpu: Option<CpuThreads>,
    /// Measured matmul rate per GGUF weight type, TFLOPS (optional, written by
    /// `--probe`): CPU kernels differ per type more than per precision. A weight type
    /// listed here uses this rate instead of its precision's.
    pub kernels: Vec<(GgmlType, Sourced)>,
    /// Measured rate of products of one token (matrix-vector) per GGUF weight type,
    /// TFLOPS, with the weights in cache (optional, written by `--probe`): what
    /// unpacking the weights costs before any memory wait.
    pub matvec: Vec<(GgmlType, Sourced)>,
    /// Measured rates of the per-token vector ops (optional, written by `--probe`).
    pub elementwise: Option<Elementwise>,
    /// Coefficients fitted to measured runs on this chip, if any.
    pub calibration: Option<Calibration>,
    /// A server's own work per step and per token, fitted to served runs (optional,
    /// written by `--calibrate` given a served run); `--simulate` adds it.
    pub serving: Option<Serving>,
}

/// Rates of the vector ops between the products, 10⁹ values per second on one thread:
/// on a CPU they take a measurable share of a step, and differ by family (GeGLU's tanh
/// costs more than SwiGLU's exp).
#[derive(Debug, Clone, PartialEq)]
pub struct Elementwise {
    /// RMS norm, per normalised value.
    pub rms_norm: Sourced,
    /// SwiGLU gate, per value of the feed-forward width.
    pub silu_mul: Sourced,
    /// GeGLU gate (tanh form), per value.
    pub gelu_tanh_mul: Sourced,
    /// RoPE rotation, per rotated value.
    pub rope: Sourced,
    /// Attention over an f16 KV cache (scores, softmax and the weighted sum of values),
    /// 10⁹ multiply-adds per second: two a cached position, head and head element; the
    /// cache streamed from memory, as a decode step reads it. Absent from profiles probed
    /// before it was measured (attention then costs its FLOPs at the FP32 rate).
    pub attention: Option<Sourced>,
    /// The same with the cache in the CPU's caches, as the tokens of a prompt chunk read
    /// the same rows one after another.
    pub attention_cached: Option<Sourced>,
}

impl Elementwise {
    /// The optional keys of the attention rates.
    pub const ATTENTION: [&'static str; 2] = ["attention", "attention_cached"];

    /// The keys of the `[elementwise]` table, in field order.
    pub const KEYS: [&'static str; 4] = ["rms_norm", "silu_mul", "gelu_tanh_mul", "rope"];

    fn fields(&self) -> [&Sourced; 4] {
        [
            &self.rms_norm,
            &self.silu_mul,
            &self.gelu_tanh_mul,
            &self.rope,
        ]
    }
}

/// Coefficients fitted by `tuili plan --calibrate`, saved with the profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// The fitted coefficients.
    pub coeffs: Coeffs,
    /// Relative error of the fit (root mean square over the runs).
    pub error_band: f64,
    /// Runs the fit used.
    pub runs: usize,
    /// What it was fitted to (files and models).
    pub source: String,
}

/// Serving terms fitted by `tuili plan --calibrate` to served runs, saved with the
/// profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Serving {
    /// The fitted terms.
    pub coeffs: ServeCoeffs,
    /// Relative error of the served runs' steps with them (root mean square).
    pub error_band: f64,
    /// Served runs the fit used.
    pub runs: usize,
    /// What it was fitted to.
    pub source: String,
}

/// The built-in profiles: (file name, text).
pub const BUILTIN: &[(&str, &str)] = &[
    ("h100-sxm.toml", include_str!("../chips/h100-sxm.toml")),
    ("h100-pcie.toml", include_str!("../chips/h100-pcie.toml")),
    ("h200.toml", include_str!("../chips/h200.toml")),
    ("b200.toml", include_str!("../chips/b200.toml")),
    ("a100-80gb.toml", include_str!("../chips/a100-80gb.toml")),
    ("l4.toml", include_str!("../chips/l4.toml")),
    ("rtx-4090.toml", include_str!("../chips/rtx-4090.toml")),
    ("mi300x.toml", include_str!("../chips/mi300x.toml")),
    ("gaudi3.toml", include_str!("../chips/gaudi3.toml")),
    ("tpu-v5e.toml", include_str!("../chips/tpu-v5e.toml")),
    (
        "inferentia2.toml",
        include_str!("../chips/inferentia2.toml"),
    ),
    ("groq-lpu.toml", include_str!("../chips/groq-lpu.toml")),
    ("m4-max.toml", include_str!("../chips/m4-max.toml")),
    ("m3-max.toml", include_str!("../chips/m3-max.toml")),
    (
        "jetson-agx-orin.toml",
        include_str!("../chips/jetson-agx-orin.toml"),
    ),
    (
        "raspberry-pi-5.toml",
        include_str!("../chips/raspberry-pi-5.toml"),
    ),
    (
        "ryzen-7840u.toml",
        include_str!("../chips/ryzen-7840u.toml"),
    ),
];

/// Reads the profiles: the built-in ones, then those in `user_dir` (if it exists), a
/// user profile replacing a built-in one of the same name.
pub fn load_all(user_dir: Option<&Path>) -> Result<Vec<ChipProfile>, PlanError> {
    let mut all = Vec::new();
    for (file, text) in BUILTIN {
        all.push(parse(file, text)?);
    }
    if let Some(dir) = user_dir.filter(|d| d.is_dir()) {
        let entries = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for p in paths {
            let text = std::fs::read_to_string(&p).map_err(|e| io_err(&p, e))?;
            let chip = parse(&p.display().to_string(), &text)?;
            all.retain(|c: &ChipProfile| c.name != chip.name);
            all.push(chip);
        }
    }
    Ok(all)
}

/// The profile named `name` among `all`.
pub fn find<'a>(all: &'a [ChipProfile], name: &str) -> Result<&'a ChipProfile, PlanError> {
    all.iter().find(|c| c.name == name).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        PlanError::UnknownChip(name.to_string(), names.join(", "))
    })
}

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> PlanError {
    PlanError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads one profile from TOML text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<ChipProfile, PlanError> {
    let err = |key: &str, msg: String| PlanError::Profile {
        file: file.to_string(),
        key: key.to_string(),
        msg,
    };
    let root: Table = text
        .parse()
        .map_err(|e: toml::de::Error| err("(syntax)", e.message().to_string()))?;
    let r = Reader { file };
    r.only(
        "",
        &root,
        &[
            "name",
            "title",
            "kind",
            "memory",
            "compute",
            "power",
            "interconnect",
            "price",
            "cpu",
            "kernels",
            "matvec",
            "elementwise",
            "calibration",
            "serving",
        ],
    )?;
    let name = r.string(&root, "name")?;
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid_name {
        return Err(err(
            "name",
            format!("'{name}' must be lowercase letters, digits and '-'"),
        ));
    }
    let kind = match r.string(&root, "kind")?.as_str() {
        "cpu" => ChipKind::Cpu,
        "gpu" | "accelerator" => ChipKind::Accelerator,
        k => {
            return Err(err(
                "kind",
                format!("'{k}' is not one of cpu, gpu, accelerator"),
            ))
        }
    };
    let memory = r.table(&root, "memory")?;
    r.only("memory", memory, &["capacity_gb", "bandwidth_gbs"])?;
    let compute_t = r.table(&root, "compute")?;
    r.only("compute", compute_t, &Precision::ALL.map(Precision::key))?;
    let power = r.table(&root, "power")?;
    r.only("power", power, &["tdp_w", "idle_w"])?;
    let inter = r.table(&root, "interconnect")?;
    r.only(
        "interconnect",
        inter,
        &["bandwidth_gbs", "allreduce_latency_us"],
    )?;
    let price = r.table(&root, "price")?;
    r.only("price", price, &["usd_per_hour"])?;

    let tflops = Precision::ALL.map(|p| {
        let key = format!("compute.{}", p.key());
        // BF16 is what every other precision falls back to: it must be there.
        let allow_zero = p != Precision::Bf16;
        r.sourced(compute_t, &key, allow_zero)
    });
    let [a, b, c, d, e] = tflops;
    let compute = Compute {
        tflops: [a?, b?, c?, d?, e?],
    };
    let tdp_w = r.sourced(power, "power.tdp_w", false)?;
    let idle_w = r.sourced(power, "power.idle_w", false)?;
    if idle_w.value > tdp_w.value {
        return Err(err(
            "power.idle_w",
            format!("{} W is above power.tdp_w {} W", idle_w.value, tdp_w.value),
        ));
    }
    let cpu = match root.get("cpu") {
        None => None,
        Some(_) => {
            let t = r.table(&root, "cpu")?;
            r.only("cpu", t, &["threads", "bandwidth_per_thread_gbs"])?;
            Some(CpuThreads {
                threads: r.sourced(t, "cpu.threads", false)?,
                bandwidth_per_thread_gbs: r.sourced(t, "cpu.bandwidth_per_thread_gbs", false)?,
            })
        }
    };
    if cpu.is_some() && kind != ChipKind::Cpu {
        return Err(err(
            "cpu",
            "only a profile of kind = \"cpu\" has a [cpu] table".into(),
        ));
    }
    let kernels = r.type_rates(&root, "kernels")?;
    let matvec = r.type_rates(&root, "matvec")?;
    let elementwise = match root.get("elementwise") {
        None => None,
        Some(_) => {
            let t = r.table(&root, "elementwise")?;
            let mut keys = Elementwise::KEYS.to_vec();
            keys.extend(Elementwise::ATTENTION);
            r.only("elementwise", t, &keys)?;
            let [a, b, c, d] =
                Elementwise::KEYS.map(|k| r.sourced(t, &format!("elementwise.{k}"), false));
            let [attention, attention_cached] = Elementwise::ATTENTION.map(|k| {
                t.get(k)
                    .map(|_| r.sourced(t, &format!("elementwise.{k}"), false))
                    .transpose()
            });
            let (attention, attention_cached) = (attention?, attention_cached?);
            Some(Elementwise {
                rms_norm: a?,
                silu_mul: b?,
                gelu_tanh_mul: c?,
                rope: d?,
                attention,
                attention_cached,
            })
        }
    };
    let measured = elementwise.is_some() || !kernels.is_empty() || !matvec.is_empty();
    if measured && kind != ChipKind::Cpu {
        return Err(err(
            "kernels",
            "[kernels], [matvec] and [elementwise] are measured CPU rates: kind must be \"cpu\""
                .into(),
        ));
    }
    let calibration = match root.get("calibration") {
        None => None,
        Some(_) => Some(r.calibration(r.table(&root, "calibration")?)?),
    };
    let serving = match root.get("serving") {
        None => None,
        Some(_) => Some(r.serving(r.table(&root, "serving")?)?),
    };
    Ok(ChipProfile {
        title: r.string(&root, "title")?,
        name,
        kind,
        capacity_gb: r.sourced(memory, "memory.capacity_gb", false)?,
        bandwidth_gbs: r.sourced(memory, "memory.bandwidth_gbs", false)?,
        compute,
        tdp_w,
        idle_w,
        interconnect_gbs: r.sourced(inter, "interconnect.bandwidth_gbs", false)?,
        allreduce_latency_us: inter
            .get("allreduce_latency_us")
            .map(|_| r.sourced(inter, "interconnect.allreduce_latency_us", false))
            .transpose()?,
        usd_per_hour: r.sourced(price, "price.usd_per_hour", true)?,
        cpu,
        kernels,
        matvec,
        elementwise,
        calibration,
        serving,
    })
}

/// Reads keys out of one profile, naming the file and key in every error.
struct Reader<'a> {
    file: &'a str,
}

impl Reader<'_> {
    fn err(&self, key: &str, msg: impl Into<String>) -> PlanError {
        PlanError::Profile {
            file: self.file.to_string(),
            key: key.to_string(),
            msg: msg.into(),
        }
    }

    /// Refuses keys outside `allowed`: a misspelt key would otherwise be ignored.
    fn only(&self, at: &str, t: &Table, allowed: &[&str]) -> Result<(), PlanError> {
        match t.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => {
                let key = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                Err(self.err(
                    &key,
                    format!("unknown key (allowed: {})", allowed.join(", ")),
                ))
            }
            None => Ok(()),
        }
    }

    fn table<'t>(&self, t: &'t Table, key: &str) -> Result<&'t Table, PlanError> {
        match t.get(key) {
            Some(Value::Table(v)) => Ok(v),
            Some(_) => Err(self.err(key, "must be a table")),
            None => Err(self.err(key, "missing")),
        }
    }

    fn string(&self, t: &Table, key: &str) -> Result<String, PlanError> {
        match t.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            Some(_) => Err(self.err(key, "must be a non-empty string")),
            None => Err(self.err(key, "missing")),
        }
    }

    fn number(&self, v: Option<&Value>, key: &str) -> Result<f64, PlanError> {
        let x = match v {
            Some(Value::Float(f)) => *f,
            Some(Value::Integer(i)) => *i as f64,
            Some(_) => return Err(self.err(key, "must be a number")),
            None => return Err(self.err(key, "missing")),
        };
        if !x.is_finite() {
            return Err(self.err(key, format!("must be finite, got {x}")));
        }
        Ok(x)
    }

    /// A `{ value, source }` pair; `key` is the dotted path, its last part the key in `t`.
    fn sourced(&self, t: &Table, key: &str, allow_zero: bool) -> Result<Sourced, PlanError> {
        let last = key.rsplit('.').next().unwrap_or(key);
        let pair = match t.get(last) {
            Some(Value::Table(p)) => p,
            Some(_) => return Err(self.err(key, "must be { value = NUMBER, source = \"...\" }")),
            None => return Err(self.err(key, "missing")),
        };
        self.only(key, pair, &["value", "source"])?;
        let value = self.number(pair.get("value"), &format!("{key}.value"))?;
        let ok = if allow_zero {
            value >= 0.0
        } else {
            value > 0.0
        };
        if !ok {
            let want = if allow_zero { "at least 0" } else { "positive" };
            return Err(self.err(
                &format!("{key}.value"),
                format!("must be {want}, got {value}"),
            ));
        }
        let source = self.string(pair, "source").map_err(|_| {
            self.err(
                &format!("{key}.source"),
                "every number needs a non-empty source",
            )
        })?;
        Ok(Sourced { value, source })
    }

    /// An optional table of rates per GGUF weight type (`[kernels]`, `[matvec]`).
    fn type_rates(&self, root: &Table, name: &str) -> Result<Vec<(GgmlType, Sourced)>, PlanError> {
        if root.get(name).is_none() {
            return Ok(Vec::new());
        }
        let t = self.table(root, name)?;
        let mut out = Vec::new();
        for key in t.keys() {
            let at = format!("{name}.{key}");
            let ty = GgmlType::ALL
                .into_iter()
                .find(|ty| ty.name().eq_ignore_ascii_case(key))
                .ok_or_else(|| self.err(&at, "not a GGUF weight type"))?;
            out.push((ty, self.sourced(t, &at, false)?));
        }
        Ok(out)
    }

    fn serving(&self, t: &Table) -> Result<Serving, PlanError> {
        self.only(
            "serving",
            t,
            &[
                "step_s",
                "token_s",
                "request_s",
                "mixed_s",
                "error_band",
                "runs",
                "source",
            ],
        )?;
        let num = |k: &str| self.number(t.get(k), &format!("serving.{k}"));
        let coeffs = ServeCoeffs {
            step_s: num("step_s")?,
            token_s: num("token_s")?,
            // Profiles saved before these terms had none.
            request_s: match t.get("request_s") {
                Some(_) => num("request_s")?,
                None => 0.0,
            },
            mixed_s: match t.get("mixed_s") {
                Some(_) => num("mixed_s")?,
                None => 0.0,
            },
        };
        for (k, v) in [
            ("step_s", coeffs.step_s),
            ("token_s", coeffs.token_s),
            ("request_s", coeffs.request_s),
            ("mixed_s", coeffs.mixed_s),
        ] {
            if v < 0.0 {
                return Err(self.err(&format!("serving.{k}"), "serving terms must be at least 0"));
            }
        }
        Ok(Serving {
            coeffs,
            error_band: num("error_band")?.max(0.0),
            runs: num("runs")?.max(0.0) as usize,
            source: self.string(t, "source")?,
        })
    }

    fn calibration(&self, t: &Table) -> Result<Calibration, PlanError> {
        let keys = [
            "eta_mem",
            "eta_comp",
            "layer_s",
            "step_s",
            "seq_s",
            "token_s",
            "error_band",
            "runs",
            "source",
        ];
        self.only("calibration", t, &keys)?;
        let num = |k: &str| self.number(t.get(k), &format!("calibration.{k}"));
        let coeffs = Coeffs {
            eta_mem: num("eta_mem")?,
            eta_comp: num("eta_comp")?,
            layer_s: num("layer_s")?,
            step_s: num("step_s")?,
            seq_s: num("seq_s")?,
            token_s: num("token_s")?,
        };
        let etas_ok = [coeffs.eta_mem, coeffs.eta_comp]
            .iter()
            .all(|&e| e > 0.0 && e <= MAX_ETA);
        if !etas_ok {
            return Err(self.err(
                "calibration.eta_mem",
                format!("efficiencies must be in (0, {MAX_ETA}]"),
            ));
        }
        if [coeffs.layer_s, coeffs.step_s, coeffs.seq_s, coeffs.token_s]
            .iter()
            .any(|&o| o < 0.0)
        {
            return Err(self.err("calibration.layer_s", "overheads must be at least 0"));
        }
        let runs = num("runs")?;
        Ok(Calibration {
            coeffs,
            error_band: num("error_band")?.max(0.0),
            runs: runs.max(0.0) as usize,
            source: self.string(t, "source")?,
        })
    }
}

impl ChipProfile {
    /// Memory bandwidth in bytes/s with `threads` threads (all of it on accelerators).
    pub fn bandwidth(&self, threads: Option<usize>) -> f64 {
        let full = self.bandwidth_gbs.value * 1e9;
        match (&self.cpu, threads) {
            (Some(c), Some(t)) => (c.bandwidth_per_thread_gbs.value * 1e9 * t as f64).min(full),
            _ => full,
        }
    }

    /// Operations per second at `p` with `threads` threads (compute scales linearly
    /// with threads up to the profile's count on CPUs).
    pub fn ops_per_s(&self, p: Precision, threads: Option<usize>) -> f64 {
        self.compute.ops_per_s(p) * self.thread_share(threads)
    }

    /// Operations per second of products with `ty` weights: the measured kernel rate
    /// when the profile has one, else `p`'s (scaled to `threads` like
    /// [`ChipProfile::ops_per_s`]).
    pub fn kernel_ops_per_s(&self, ty: GgmlType, p: Precision, threads: Option<usize>) -> f64 {
        match self.kernels.iter().find(|(t, _)| *t == ty) {
            Some((_, s)) => s.value * 1e12 * self.thread_share(threads),
            None => self.ops_per_s(p, threads),
        }
    }

    /// Operations per second of one-token products with `ty` weights, where measured.
    pub fn matvec_ops_per_s(&self, ty: GgmlType, threads: Option<usize>) -> Option<f64> {
        let (_, s) = self.matvec.iter().find(|(t, _)| *t == ty)?;
        Some(s.value * 1e12 * self.thread_share(threads))
    }

    /// Threads the CPU figures are for with `threads` asked (1 for accelerators).
    pub fn threads_used(&self, threads: Option<usize>) -> f64 {
        match (&self.cpu, threads) {
            (Some(c), Some(t)) => (t as f64).min(c.threads.value),
            (Some(c), None) => c.threads.value,
            _ => 1.0,
        }
    }

    fn thread_share(&self, threads: Option<usize>) -> f64 {
        match (&self.cpu, threads) {
            (Some(c), Some(t)) => (t as f64 / c.threads.value).min(1.0),
            _ => 1.0,
        }
    }

    /// The profile as TOML, in the format [`parse`] reads.
    pub fn to_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let pair = |key: &str, s: &Sourced| {
            format!(
                "{key} = {{ value = {}, source = {} }}\n",
                s.value,
                q(&s.source)
            )
        };
        let mut out = String::new();
        out += &format!("name = {}\ntitle = {}\n", q(&self.name), q(&self.title));
        let kind = match self.kind {
            ChipKind::Cpu => "cpu",
            ChipKind::Accelerator => "accelerator",
        };
        out += &format!("kind = {}\n\n[memory]\n", q(kind));
        out += &pair("capacity_gb", &self.capacity_gb);
        out += &pair("bandwidth_gbs", &self.bandwidth_gbs);
        out += "\n[compute]\n";
        for (p, s) in Precision::ALL.iter().zip(&self.compute.tflops) {
            out += &pair(p.key(), s);
        }
        out += "\n[power]\n";
        out += &pair("tdp_w", &self.tdp_w);
        out += &pair("idle_w", &self.idle_w);
        out += "\n[interconnect]\n";
        out += &pair("bandwidth_gbs", &self.interconnect_gbs);
        if let Some(l) = &self.allreduce_latency_us {
            out += &pair("allreduce_latency_us", l);
        }
        out += "\n[price]\n";
        out += &pair("usd_per_hour", &self.usd_per_hour);
        if let Some(c) = &self.cpu {
            out += "\n[cpu]\n";
            out += &pair("threads", &c.threads);
            out += &pair("bandwidth_per_thread_gbs", &c.bandwidth_per_thread_gbs);
        }
        for (name, rates) in [("kernels", &self.kernels), ("matvec", &self.matvec)] {
            if !rates.is_empty() {
                out += &format!("\n[{name}]\n");
                for (ty, s) in rates {
                    out += &pair(&ty.name().to_lowercase(), s);
                }
            }
        }
        if let Some(e) = &self.elementwise {
            out += "\n[elementwise]\n";
            for (k, s) in Elementwise::KEYS.iter().zip(e.fields()) {
                out += &pair(k, s);
            }
            for (k, v) in Elementwise::ATTENTION
                .iter()
                .zip([&e.attention, &e.attention_cached])
            {
                if let Some(a) = v {
                    out += &pair(k, a);
                }
            }
        }
        if let Some(c) = &self.calibration {
            let k = &c.coeffs;
            out += &format!(
                "\n[calibration]\neta_mem = {:?}\neta_comp = {:?}\nlayer_s = {:?}\nstep_s = {:?}\n\
                 seq_s = {:?}\ntoken_s = {:?}\nerror_band = {:?}\nruns = {}\nsource = {}\n",
                k.eta_mem,
                k.eta_comp,
                k.layer_s,
                k.step_s,
                k.seq_s,
                k.token_s,
                c.error_band,
                c.runs,
                q(&c.source)
            );
        }
        if let Some(v) = &self.serving {
            out += &format!(
                "\n[serving]\nstep_s = {:?}\ntoken_s = {:?}\nrequest_s = {:?}\nmixed_s = {:?}\nerror_band = {:?}\nruns = {}\nsource = {}\n",
                v.coeffs.step_s,
                v.coeffs.token_s,
                v.coeffs.request_s,
                v.coeffs.mixed_s,
                v.error_band,
                v.runs,
                q(&v.source)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_loads_and_round_trips() {
        let all = load_all(None).expect("built-in profiles are valid");
        assert_eq!(all.len(), BUILTIN.len());
        for c in &all {
            let again = parse("round trip", &c.to_toml()).expect("written profile parses");
            assert_eq!(&again, c);
            assert!(c.compute.ops_per_s(Precision::Int4) > 0.0, "{}", c.name);
        }
        let mut names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len(), "names are unique");
    }

    #[test]
    fn the_attention_rate_is_optional_and_round_trips() {
        let all = load_all(None).expect("built-in profiles are valid");
        let mut c = all
            .iter()
            .find(|c| c.kind == ChipKind::Cpu)
            .expect("a CPU profile")
            .clone();
        let rate = |value: f64| Sourced {
            value,
            source: "measured".into(),
        };
        let mut e = Elementwise {
            rms_norm: rate(1.0),
            silu_mul: rate(2.0),
            gelu_tanh_mul: rate(0.5),
            rope: rate(3.0),
            attention: Some(rate(20.0)),
            attention_cached: Some(rate(45.0)),
        };
        c.elementwise = Some(e.clone());
        let text = c.to_toml();
        assert_eq!(parse("x.toml", &text).expect("parses"), c);
        // A profile probed before the attention rate reads as without one.
        (e.attention, e.attention_cached) = (None, None);
        let old = text
            .replace("attention = { value = 20, source = \"measured\" }\n", "")
            .replace(
                "attention_cached = { value = 45, source = \"measured\" }\n",
                "",
            );
        assert_ne!(old, text);
        assert_eq!(parse("x.toml", &old).expect("parses").elementwise, Some(e));
        let bad = text.replace("value = 20,", "value = -20,");
        let err = parse("x.toml", &bad).unwrap_err().to_string();
        assert!(err.contains("elementwise.attention"), "{err}");
    }

    #[test]
    fn the_all_reduce_latency_is_optional_and_reaches_the_step_model() {
        use crate::cost::KvFormat;
        use crate::step::Hardware;
        use tuili_models::KvType;
        let f16_kv = KvFormat {
            k: KvType::F16,
            v: KvType::F16,
        };
        let all = load_all(None).expect("built-in profiles are valid");
        let chip = |n: &str| all.iter().find(|c| c.name == n).expect(n).clone();
        let (mi300x, a100) = (chip("mi300x"), chip("a100-80gb"));
        let latency = |c: &ChipProfile| Hardware::of(c, None, f16_kv).allreduce_latency_s;
        assert_eq!(
            mi300x.allreduce_latency_us.as_ref().map(|l| l.value),
            Some(16.0)
        );
        assert!((latency(&mi300x) - 16e-6).abs() < 1e-12);
        assert!(a100.allreduce_latency_us.is_none());
        assert_eq!(latency(&a100), crate::step::ALLREDUCE_LATENCY_S);
        let text = mi300x.to_toml();
        let bad = text.replace("value = 16,", "value = 0,");
        assert_ne!(bad, text);
        let err = parse("x.toml", &bad).unwrap_err().to_string();
        assert!(err.contains("interconnect.allreduce_latency_us"), "{err}");
    }

    fn h100_text() -> &'static str {
        BUILTIN[0].1
    }

    #[test]
    fn serving_terms_round_trip_and_are_checked() {
        let mut c = parse("x.toml", h100_text()).expect("valid");
        c.serving = Some(Serving {
            coeffs: ServeCoeffs {
                step_s: 2e-4,
                token_s: 3.5e-4,
                request_s: 0.04,
                mixed_s: 0.003,
            },
            error_band: 0.04,
            runs: 4,
            source: "served runs".into(),
        });
        let text = c.to_toml();
        assert_eq!(parse("x.toml", &text).expect("parses"), c);
        let bad = text.replace("token_s = 0.00035", "token_s = -0.00035");
        let e = parse("x.toml", &bad).unwrap_err().to_string();
        assert!(
            e.contains("serving.token_s") && e.contains("at least 0"),
            "{e}"
        );
        let bad = text.replace("request_s = 0.04", "request_s = -0.04");
        let e = parse("x.toml", &bad).unwrap_err().to_string();
        assert!(
            e.contains("serving.request_s") && e.contains("at least 0"),
            "{e}"
        );
        // A profile saved before the request term reads as none.
        let old = text
            .replace("request_s = 0.04\n", "")
            .replace("mixed_s = 0.003\n", "");
        let read = parse("x.toml", &old).expect("parses");
        let k = read.serving.expect("serving").coeffs;
        assert_eq!((k.request_s, k.mixed_s), (0.0, 0.0));
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let bad = h100_text().replace("tdp_w = { value = 700", "tdp_w = { value = -700");
        let e = parse("x.toml", &bad).unwrap_err().to_string();
        assert!(
            e.contains("x.toml") && e.contains("power.tdp_w.value"),
            "{e}"
        );
        assert!(e.contains("positive, got -700"), "{e}");

        let bad = h100_text().replace("[interconnect]", "[interconect]");
        let e = parse("x.toml", &bad).unwrap_err().to_string();
        assert!(
            e.contains("interconect") && e.contains("unknown key"),
            "{e}"
        );

        let no_source = h100_text().replacen("source = ", "sauce = ", 1);
        let e = parse("x.toml", &no_source).unwrap_err().to_string();
        assert!(e.contains("unknown key") || e.contains("source"), "{e}");
    }

    #[test]
    fn missing_rates_fall_back_to_wider_precisions() {
        let all = load_all(None).expect("valid");
        let h100 = find(&all, "h100-sxm").expect("present");
        // The H100 has no INT4 tensor-core rate: 4-bit weights run at the INT8 rate.
        assert_eq!(h100.compute.tflops[4].value, 0.0);
        assert_eq!(
            h100.compute.ops_per_s(Precision::Int4),
            h100.compute.ops_per_s(Precision::Int8)
        );
        assert!(find(&all, "nope")
            .unwrap_err()
            .to_string()
            .contains("h100-sxm"));
    }
}
