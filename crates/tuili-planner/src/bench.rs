//! `tuili bench -o json` results as measured engine steps: what each test ran per step
//! and how long one step took.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::load::{check_trace, Request};
use crate::step::StepShape;
use crate::PlanError;

/// One object of `tuili bench -o json`: a test row, or a bandwidth row (`"test":
/// "membw"`), whose other fields are absent.
#[derive(Debug, Clone, Deserialize)]
struct Row {
    test: String,
    n_threads: usize,
    #[serde(default)]
    model_filename: Option<String>,
    #[serde(default)]
    n_prompt: usize,
    #[serde(default)]
    n_gen: usize,
    #[serde(default)]
    n_streams: usize,
    #[serde(default)]
    n_depth: usize,
    #[serde(default)]
    avg_ns: Option<f64>,
    #[serde(default)]
    stddev_ns: Option<f64>,
    #[serde(default)]
    type_k: Option<String>,
    #[serde(default)]
    type_v: Option<String>,
    #[serde(default)]
    avg_bytes_per_s: Option<f64>,
    #[serde(default)]
    served: bool,
    // A served trace's (`"test": "trace"`): the server's limits, the requests as sent,
    // and each one's measured time to first token and per output token after it.
    #[serde(default)]
    max_num_seqs: usize,
    #[serde(default)]
    n_ctx: usize,
    #[serde(default)]
    requests: Vec<Request>,
    #[serde(default)]
    ttft_s: Vec<f64>,
    #[serde(default)]
    tpot_s: Vec<f64>,
}

/// Requests sent to `tuili serve` and what each measured (`"test": "trace"`, as
/// `bench/plan-serve-check.py --serve-calibrate` writes them): the request term is
/// fitted to their first tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedTrace {
    /// The model file.
    pub model: PathBuf,
    /// The server's threads.
    pub threads: usize,
    /// Its most sequences together (`--parallel`).
    pub max_num_seqs: usize,
    /// Its context per sequence (`--ctx`).
    pub n_ctx: usize,
    /// The requests, arrivals from the first one's sending.
    pub requests: Vec<Request>,
    /// Each request's measured seconds from sending to its first token.
    pub ttft_s: Vec<f64>,
    /// Each request's measured seconds per output token after the first.
    pub tpot_s: Vec<f64>,
}

/// One measured test.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRun {
    /// The model file.
    pub model: PathBuf,
    /// Threads of the run.
    pub threads: usize,
    /// llama-bench's test name (`pp512`, `tg32x4`).
    pub test: String,
    /// Prompt tokens (pp tests).
    pub n_prompt: usize,
    /// Generated tokens per sequence (tg tests).
    pub n_gen: usize,
    /// Sequences decoding side by side.
    pub n_streams: usize,
    /// Positions in the cache before the test.
    pub n_depth: usize,
    /// Mean seconds of one repetition.
    pub seconds: f64,
    /// Sample standard deviation of the repetitions' seconds.
    pub stddev: f64,
    /// KV cache types (keys, values), when the bench said.
    pub kv_types: Option<(String, String)>,
    /// Read bandwidth measured with the same thread count in the same file, bytes/s.
    pub membw: Option<f64>,
    /// Measured through `tuili serve` (`"served": true`, as `bench/plan-serve-check.py
    /// --serve-calibrate` writes it: the streams' time per output token), not by
    /// `tuili bench`: its steps include the server's own work.
    pub served: bool,
}

impl BenchRun {
    /// The step the test repeats: one prefill, or one decoding step of every stream
    /// at the middle of the generated range (attention grows linearly along it).
    pub fn step(&self) -> StepShape {
        if self.n_prompt > 0 {
            StepShape::prefill(self.n_depth, self.n_prompt)
        } else {
            StepShape::decode(self.n_streams.max(1), self.n_depth + (self.n_gen - 1) / 2)
        }
    }

    /// Measured seconds of that step.
    pub fn step_seconds(&self) -> f64 {
        self.seconds / self.steps() as f64
    }

    /// Steps in one repetition.
    pub fn steps(&self) -> usize {
        if self.n_prompt > 0 {
            1
        } else {
            self.n_gen
        }
    }

    /// Tokens per second of the test (all streams).
    pub fn tokens_per_s(&self) -> f64 {
        self.step().tokens() as f64 / self.step_seconds()
    }

    /// The model file's name, for tables.
    pub fn model_name(&self) -> String {
        self.model.file_name().map_or_else(
            || self.model.display().to_string(),
            |n| n.to_string_lossy().into(),
        )
    }
}

/// What one `tuili bench -o json` file measured.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchFile {
    /// The pp and tg tests.
    pub runs: Vec<BenchRun>,
    /// Read bandwidth per thread count (`--membw`), bytes/s.
    pub membw: Vec<(usize, f64)>,
    /// Served traces.
    pub traces: Vec<ServedTrace>,
}

/// Reads a `tuili bench -o json` file: its test rows, each with the bandwidth its thread
/// count measured in the same file, and its bandwidth rows.
pub fn read(path: &Path) -> Result<BenchFile, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::chip::io_err(path, e))?;
    parse(&path.display().to_string(), &text)
}

/// Parses the text of a bench JSON file; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<BenchFile, PlanError> {
    let err = |msg: String| PlanError::Bench {
        file: file.to_string(),
        msg,
    };
    let rows: Vec<Row> = serde_json::from_str(text)
        .map_err(|e| err(format!("not the JSON array of `tuili bench -o json`: {e}")))?;
    let membw: Vec<(usize, f64)> = rows
        .iter()
        .filter(|r| r.test == "membw")
        .filter_map(|r| r.avg_bytes_per_s.map(|b| (r.n_threads, b)))
        .collect();
    let mut traces = Vec::new();
    for (i, r) in rows.iter().enumerate().filter(|(_, r)| r.test == "trace") {
        traces.push(trace(r).map_err(|m| err(format!("row {i} (trace): {m}")))?);
    }
    let mut runs = Vec::new();
    for (i, r) in rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.test != "membw" && r.test != "trace")
    {
        let seconds = r
            .avg_ns
            .ok_or_else(|| err(format!("row {i} ({}) has no avg_ns", r.test)))?
            / 1e9;
        let model = r
            .model_filename
            .clone()
            .ok_or_else(|| err(format!("row {i} ({}) has no model_filename", r.test)))?;
        let pp = r.n_prompt > 0 && r.n_gen == 0;
        let tg = r.n_prompt == 0 && r.n_gen > 0;
        if !(pp || tg) || seconds.is_nan() || seconds <= 0.0 || r.n_threads == 0 {
            return Err(err(format!(
                "row {i} ({}): expected a pp or tg test with positive avg_ns and threads, got \
                 n_prompt {}, n_gen {}, avg_ns {:?}, n_threads {}",
                r.test, r.n_prompt, r.n_gen, r.avg_ns, r.n_threads
            )));
        }
        runs.push(BenchRun {
            model: PathBuf::from(model),
            threads: r.n_threads,
            test: r.test.clone(),
            n_prompt: r.n_prompt,
            n_gen: r.n_gen,
            n_streams: r.n_streams.max(1),
            n_depth: r.n_depth,
            seconds,
            stddev: r.stddev_ns.unwrap_or(0.0) / 1e9,
            kv_types: r.type_k.clone().zip(r.type_v.clone()),
            membw: membw
                .iter()
                .find(|(t, _)| *t == r.n_threads)
                .map(|&(_, b)| b),
            served: r.served,
        });
    }
    if runs.is_empty() && membw.is_empty() && traces.is_empty() {
        return Err(err("no pp, tg, membw or trace rows".into()));
    }
    Ok(BenchFile {
        runs,
        membw,
        traces,
    })
}

fn trace(r: &Row) -> Result<ServedTrace, String> {
    let model = r.model_filename.clone().ok_or("no model_filename")?;
    check_trace(&r.requests, "row").map_err(|e| e.to_string())?;
    let n = r.requests.len();
    if r.ttft_s.len() != n || r.tpot_s.len() != n {
        return Err(format!(
            "{n} requests need as many ttft_s and tpot_s, got {} and {}",
            r.ttft_s.len(),
            r.tpot_s.len()
        ));
    }
    if !r
        .ttft_s
        .iter()
        .chain(&r.tpot_s)
        .all(|v| *v >= 0.0 && v.is_finite())
    {
        return Err("ttft_s and tpot_s must be finite and at least 0".into());
    }
    if r.max_num_seqs == 0 || r.n_ctx == 0 || r.n_threads == 0 {
        return Err(format!(
            "max_num_seqs, n_ctx and n_threads must be at least 1, got {}, {} and {}",
            r.max_num_seqs, r.n_ctx, r.n_threads
        ));
    }
    Ok(ServedTrace {
        model: PathBuf::from(model),
        threads: r.n_threads,
        max_num_seqs: r.max_num_seqs,
        n_ctx: r.n_ctx,
        requests: r.requests.clone(),
        ttft_s: r.ttft_s.clone(),
        tpot_s: r.tpot_s.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"[
      {"test": "membw", "n_threads": 2, "buffer_bytes": 1, "avg_bytes_per_s": 3.0e10,
       "stddev_bytes_per_s": 0, "samples_bytes_per_s": []},
      {"model_filename": "/m/smol.gguf", "n_threads": 2, "n_prompt": 512, "n_gen": 0,
       "n_streams": 1, "test": "pp512", "n_depth": 0, "avg_ns": 500000000, "type_k": "f16",
       "type_v": "f16"},
      {"model_filename": "/m/smol.gguf", "n_threads": 2, "n_prompt": 0, "n_gen": 32,
       "n_streams": 4, "test": "tg32x4", "n_depth": 100, "avg_ns": 320000000}
    ]"#;

    #[test]
    fn rows_become_steps() {
        let f = parse("s.json", SAMPLE).expect("parses");
        assert_eq!(f.membw, vec![(2, 3.0e10)]);
        let runs = f.runs;
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].step(), StepShape::prefill(0, 512));
        assert_eq!(runs[0].step_seconds(), 0.5);
        assert_eq!(runs[0].membw, Some(3.0e10));
        assert_eq!(runs[0].kv_types, Some(("f16".into(), "f16".into())));
        assert_eq!(runs[1].step(), StepShape::decode(4, 115));
        assert!((runs[1].step_seconds() - 0.01).abs() < 1e-12);
        assert!((runs[1].tokens_per_s() - 400.0).abs() < 1e-9);
        assert_eq!(runs[1].model_name(), "smol.gguf");
        assert!(!runs[0].served && !runs[1].served);
        let served = SAMPLE.replace(
            "\"avg_ns\": 320000000",
            "\"avg_ns\": 320000000, \"served\": true",
        );
        assert!(parse("s.json", &served).expect("parses").runs[1].served);
    }

    const TRACE: &str = r#"[
      {"test": "trace", "served": true, "model_filename": "/m/smol.gguf", "n_threads": 2,
       "max_num_seqs": 8, "n_ctx": 1024,
       "requests": [{"arrival_s": 0, "prompt_tokens": 32, "output_tokens": 64},
                    {"arrival_s": 0.1, "prompt_tokens": 32, "output_tokens": 64}],
       "ttft_s": [0.05, 0.06], "tpot_s": [0.007, 0.008]}
    ]"#;

    #[test]
    fn served_traces_are_read_and_checked() {
        let f = parse("t.json", TRACE).expect("parses");
        assert!(f.runs.is_empty());
        let t = &f.traces[0];
        assert_eq!((t.threads, t.max_num_seqs, t.n_ctx), (2, 8, 1024));
        assert_eq!(t.requests[1].arrival_s, 0.1);
        assert_eq!(t.ttft_s, vec![0.05, 0.06]);
        let short = TRACE.replace("[0.05, 0.06]", "[0.05]");
        let e = parse("t.json", &short).unwrap_err().to_string();
        assert!(
            e.contains("row 0 (trace)") && e.contains("2 requests"),
            "{e}"
        );
        let late = TRACE.replace("\"arrival_s\": 0.1", "\"arrival_s\": -1");
        let e = parse("t.json", &late).unwrap_err().to_string();
        assert!(
            e.contains("row 0 (trace)") && e.contains("arrival_s"),
            "{e}"
        );
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let e = parse("x.json", "{}").unwrap_err().to_string();
        assert!(e.contains("x.json") && e.contains("JSON array"), "{e}");
        let e = parse("x.json", "[]").unwrap_err().to_string();
        assert!(e.contains("no pp, tg, membw or trace"), "{e}");
        let bad = SAMPLE.replace("\"avg_ns\": 500000000", "\"avg_ns\": 0");
        let e = parse("x.json", &bad).unwrap_err().to_string();
        assert!(e.contains("row 1 (pp512)"), "{e}");
    }
}
