//! Output of `tuili bench`: llama-bench's markdown table, printed row by row as the
//! children finish, or one JSON array at the end.

use serde::Serialize;

use crate::membw::{mean, stddev, Bandwidth};
use crate::{ChildOutput, Format, ModelInfo, Test};

/// Slack above file + KV cache that the issue allows for peak resident memory.
const RSS_SLACK: u64 = 64 << 20;

/// One test's numbers, derived from a child's seconds per repetition.
struct Stats {
    /// Tokens/s of each repetition.
    ts: Vec<f64>,
    /// Nanoseconds of each repetition.
    ns: Vec<u64>,
}

impl Stats {
    fn new(test: Test, secs: &[f64]) -> Stats {
        let n = test.tokens() as f64;
        Stats {
            ts: secs.iter().map(|s| n / s).collect(),
            ns: secs.iter().map(|s| (s * 1e9).round() as u64).collect(),
        }
    }
}

/// The bandwidth bound of a tg result: the speed if every weight byte read per token
/// came at the measured bandwidth. Returns (bound tokens/s, % of it reached).
fn bw_bound(info: &ModelInfo, bw: &Bandwidth, ts: f64) -> (f64, f64) {
    let bound = bw.mean() / info.bytes_per_token.max(1) as f64;
    (bound, 100.0 * ts / bound)
}

/// Collects results and prints them in the chosen format.
pub struct Reporter {
    format: Format,
    membw: bool,
    /// Whether the markdown bandwidth table has begun.
    bw_table: bool,
    /// Whether the markdown model table has begun.
    model_table: bool,
    /// JSON objects, printed as one array by `finish`.
    json: Vec<JsonRow>,
    /// llama-bench's backend column: `CPU` or `CUDA`.
    backend: &'static str,
}

impl Reporter {
    /// A reporter; `membw` adds the bandwidth column to the markdown table.
    pub fn new(format: Format, membw: bool, backend: &'static str) -> Reporter {
        Reporter {
            format,
            membw,
            bw_table: false,
            model_table: false,
            json: Vec::new(),
            backend,
        }
    }

    /// Reports one bandwidth measurement.
    pub fn membw(&mut self, bw: &Bandwidth) {
        match self.format {
            Format::Md => {
                if !self.bw_table {
                    println!("| threads | read bandwidth (GB/s) |     buffer |");
                    println!("| ------: | --------------------: | ---------: |");
                    self.bw_table = true;
                }
                println!(
                    "| {:>7} | {:>21} | {:>10} |",
                    bw.threads,
                    format!("{:.2} ± {:.2}", bw.mean() / 1e9, bw.stddev() / 1e9),
                    format!("{} MiB", bw.bytes >> 20)
                );
            }
            Format::Json => self.json.push(JsonRow::Membw(MembwRow {
                test: "membw",
                n_threads: bw.threads,
                buffer_bytes: bw.bytes,
                avg_bytes_per_s: bw.mean(),
                stddev_bytes_per_s: bw.stddev(),
                samples_bytes_per_s: bw.samples.clone(),
            })),
        }
    }

    /// Reports the tests of one model run with `threads` threads.
    pub fn model_run(
        &mut self,
        info: &ModelInfo,
        threads: usize,
        out: &ChildOutput,
        bw: Option<&Bandwidth>,
    ) {
        for (test, secs) in &out.samples {
            let st = Stats::new(*test, secs);
            match self.format {
                Format::Md => self.md_row(info, threads, (*test, out.depth), &st, bw),
                Format::Json => {
                    let row = test_row(info, threads, *test, &st, out, bw, self.backend);
                    self.json.push(JsonRow::Test(Box::new(row)));
                }
            }
        }
    }

    fn md_row(
        &mut self,
        info: &ModelInfo,
        threads: usize,
        (test, depth): (Test, usize),
        st: &Stats,
        bw: Option<&Bandwidth>,
    ) {
        if !self.model_table {
            // A blank line ends the bandwidth table, if there was one.
            if self.bw_table {
                println!();
            }
            let extra = if self.membw { " % bw bound |" } else { "" };
            let extra_rule = if self.membw { " ---------: |" } else { "" };
            println!(
                "| {:<30} | {:>10} | {:>10} | {:<10} | {:>7} | {:>15} | {:>20} |{extra}",
                "model", "size", "params", "backend", "threads", "test", "t/s"
            );
            println!(
                "| {:-<30} | {:->9}: | {:->9}: | {:-<10} | {:->6}: | {:->14}: | {:->19}: |{extra_rule}",
                "", "", "", "", "", "", ""
            );
            self.model_table = true;
        }
        let ts = mean(&st.ts);
        let pct = match (self.membw, test, bw) {
            (true, Test::Gen(_), Some(bw)) => format!(" {:>9.1}% |", bw_bound(info, bw, ts).1),
            (true, _, _) => format!(" {:>10} |", ""),
            _ => String::new(),
        };
        println!(
            "| {:<30} | {:>10} | {:>10} | {:<10} | {:>7} | {:>15} | {:>20} |{pct}",
            info.desc,
            human_size(info.size),
            human_params(info.params),
            self.backend,
            threads,
            test_name(test, depth),
            format!("{:.2} ± {:.2}", ts, stddev(&st.ts)),
        );
    }

    /// Prints the JSON array (markdown rows are already out).
    pub fn finish(self) {
        if self.format == Format::Json {
            let text = serde_json::to_string_pretty(&self.json)
                .expect("bench results serialize: plain numbers and strings");
            println!("{text}");
        }
    }
}

/// One object of the JSON array.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum JsonRow {
    Membw(MembwRow),
    Test(Box<TestRow>),
}

/// One bandwidth measurement (`"test": "membw"`).
#[derive(Debug, Serialize)]
struct MembwRow {
    test: &'static str,
    n_threads: usize,
    buffer_bytes: usize,
    avg_bytes_per_s: f64,
    stddev_bytes_per_s: f64,
    samples_bytes_per_s: Vec<f64>,
}

/// One test: llama-bench's fields, then peak memory and, for tg with `--membw`, the
/// bandwidth bound. Non-finite numbers are written as `null`.
#[derive(Debug, Serialize)]
struct TestRow {
    model_filename: String,
    model_type: String,
    model_size: u64,
    model_n_params: u64,
    backend: String,
    n_threads: usize,
    n_prompt: usize,
    n_gen: usize,
    n_streams: usize,
    test: String,
    n_depth: usize,
    /// How the KV cache stored keys and values, when the child said.
    #[serde(skip_serializing_if = "Option::is_none")]
    type_k: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    type_v: Option<String>,
    avg_ns: u64,
    stddev_ns: u64,
    avg_ts: f64,
    stddev_ts: f64,
    samples_ns: Vec<u64>,
    samples_ts: Vec<f64>,
    file_bytes: u64,
    weight_bytes_per_token: u64,
    peak_rss_bytes: Option<u64>,
    kv_cache_bytes: Option<u64>,
    /// File + KV cache + `RSS_SLACK`.
    rss_budget_bytes: Option<u64>,
    #[serde(flatten)]
    bound: Option<BoundFields>,
}

/// The bandwidth bound of a tg result (see `bw_bound`).
#[derive(Debug, Serialize)]
struct BoundFields {
    membw_bytes_per_s: f64,
    bw_bound_ts: f64,
    bw_pct: f64,
}

fn test_row(
    info: &ModelInfo,
    threads: usize,
    test: Test,
    st: &Stats,
    out: &ChildOutput,
    bw: Option<&Bandwidth>,
    backend: &str,
) -> TestRow {
    let (n_prompt, n_gen, n_streams) = match test {
        Test::Prompt(n) => (n, 0, 1),
        Test::Gen(n) => (0, n, 1),
        Test::Batch(n, s) => (0, n, s),
    };
    let ts = mean(&st.ts);
    let ns: Vec<f64> = st.ns.iter().map(|&n| n as f64).collect();
    let bound = match (test, bw) {
        (Test::Gen(_), Some(bw)) => {
            let (bound, pct) = bw_bound(info, bw, ts);
            Some(BoundFields {
                membw_bytes_per_s: bw.mean(),
                bw_bound_ts: bound,
                bw_pct: pct,
            })
        }
        _ => None,
    };
    TestRow {
        model_filename: info.path.display().to_string(),
        model_type: info.desc.clone(),
        model_size: info.size,
        model_n_params: info.params,
        backend: backend.to_string(),
        n_threads: threads,
        n_prompt,
        n_gen,
        n_streams,
        test: test.name(),
        n_depth: out.depth,
        type_k: out.kv_types.as_ref().map(|(k, _)| k.clone()),
        type_v: out.kv_types.as_ref().map(|(_, v)| v.clone()),
        avg_ns: mean(&ns).round() as u64,
        stddev_ns: stddev(&ns).round() as u64,
        avg_ts: ts,
        stddev_ts: stddev(&st.ts),
        samples_ns: st.ns.clone(),
        samples_ts: st.ts.clone(),
        file_bytes: info.file_len,
        weight_bytes_per_token: info.bytes_per_token,
        peak_rss_bytes: out.peak_rss,
        kv_cache_bytes: out.kv_cache_bytes,
        rss_budget_bytes: out.kv_cache_bytes.map(|kv| info.file_len + kv + RSS_SLACK),
        bound,
    }
}

/// llama-bench's test name: `tg128`, or `tg128 @ d4096` at a depth.
fn test_name(test: Test, depth: usize) -> String {
    if depth > 0 {
        format!("{} @ d{depth}", test.name())
    } else {
        test.name()
    }
}

/// llama-bench's size column: MiB below 1 GiB, GiB above.
fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes < 1 << 30 {
        format!("{:.2} MiB", b / (1u64 << 20) as f64)
    } else {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    }
}

/// llama-bench's params column: millions below 1e9, billions above.
fn human_params(n: u64) -> String {
    let p = n as f64;
    if p < 1e9 {
        format!("{:.2} M", p / 1e6)
    } else {
        format!("{:.2} B", p / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ModelInfo {
        ModelInfo {
            path: "m.gguf".into(),
            desc: "llama 1M F16".into(),
            size: 2_000_000,
            params: 1_000_000,
            bytes_per_token: 1_000_000,
            file_len: 2_000_100,
        }
    }

    #[test]
    fn json_rows_keep_llama_bench_fields_and_the_bound_only_for_tg() {
        let out = ChildOutput {
            peak_rss: Some(4096),
            kv_cache_bytes: Some(100),
            ..ChildOutput::default()
        };
        let bw = Bandwidth {
            threads: 1,
            bytes: 1 << 20,
            samples: vec![1e10, 1e10],
        };
        let st = Stats::new(Test::Gen(128), &[1.0, 0.5]);
        let row = test_row(&info(), 2, Test::Gen(128), &st, &out, Some(&bw), "CPU");
        let text = serde_json::to_string(&JsonRow::Test(Box::new(row))).expect("serializes");
        let v: serde_json::Value = serde_json::from_str(&text).expect("parses");
        // The keys, in the order they are written (a `Value`'s map sorts them).
        let keys: Vec<&str> = text
            .split("\":")
            .filter_map(|part| part.rsplit_once('"').map(|(_, key)| key))
            .collect();
        assert_eq!(
            keys,
            [
                "model_filename",
                "model_type",
                "model_size",
                "model_n_params",
                "backend",
                "n_threads",
                "n_prompt",
                "n_gen",
                "n_streams",
                "test",
                "n_depth",
                "avg_ns",
                "stddev_ns",
                "avg_ts",
                "stddev_ts",
                "samples_ns",
                "samples_ts",
                "file_bytes",
                "weight_bytes_per_token",
                "peak_rss_bytes",
                "kv_cache_bytes",
                "rss_budget_bytes",
                "membw_bytes_per_s",
                "bw_bound_ts",
                "bw_pct",
            ]
        );
        assert_eq!(v["test"], "tg128");
        assert_eq!(v["avg_ns"], 750_000_000);
        assert_eq!(
            v["samples_ns"],
            serde_json::json!([1_000_000_000u64, 500_000_000u64])
        );
        assert_eq!(v["rss_budget_bytes"], 2_000_100 + 100 + RSS_SLACK);
        // A prompt test has no bound, and a missing peak is null.
        let st = Stats::new(Test::Prompt(16), &[0.0]);
        let row = test_row(
            &info(),
            1,
            Test::Prompt(16),
            &st,
            &ChildOutput::default(),
            Some(&bw),
            "CPU",
        );
        let v = serde_json::to_value(JsonRow::Test(Box::new(row))).expect("serializes");
        assert!(v.get("bw_pct").is_none(), "{v}");
        assert!(v["peak_rss_bytes"].is_null(), "{v}");
        // 16 tokens in 0 s: infinite t/s is written as null.
        assert!(v["avg_ts"].is_null(), "{v}");
    }

    #[test]
    fn sizes_print_like_llama_bench() {
        assert_eq!(human_size(98_362_432), "93.81 MiB");
        assert_eq!(human_size(3 << 30), "3.00 GiB");
        assert_eq!(human_params(134_515_008), "134.52 M");
        assert_eq!(human_params(1_543_714_304), "1.54 B");
    }

    #[test]
    fn bound_is_bandwidth_over_bytes_per_token() {
        let info = info();
        let bw = Bandwidth {
            threads: 1,
            bytes: 1 << 20,
            samples: vec![1e10, 1e10],
        };
        // 10 GB/s over 1 MB per token: 10,000 t/s; 2,500 t/s is 25% of it.
        let (bound, pct) = bw_bound(&info, &bw, 2500.0);
        assert!((bound - 1e4).abs() < 1e-6);
        assert!((pct - 25.0).abs() < 1e-9);
    }

    #[test]
    fn stats_convert_seconds_to_tokens_per_second() {
        let st = Stats::new(Test::Gen(128), &[1.0, 0.5]);
        assert_eq!(st.ts, vec![128.0, 256.0]);
        assert_eq!(st.ns, vec![1_000_000_000, 500_000_000]);
    }
}
