//! Output of `tuili bench`: llama-bench's markdown table, printed row by row as the
//! children finish, or one JSON array at the end.

use std::fmt::Write as _;

use super::{ChildOutput, Format, ModelInfo, Test};
use crate::membw::{mean, stddev, Bandwidth};

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
    json: Vec<String>,
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
            Format::Json => {
                let mut o = String::from("{");
                field(&mut o, "test", &json_str("membw"));
                field(&mut o, "n_threads", &bw.threads.to_string());
                field(&mut o, "buffer_bytes", &bw.bytes.to_string());
                field(&mut o, "avg_bytes_per_s", &num(bw.mean()));
                field(&mut o, "stddev_bytes_per_s", &num(bw.stddev()));
                field(&mut o, "samples_bytes_per_s", &list(&bw.samples));
                close(&mut o);
                self.json.push(o);
            }
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
                    let o = json_row(info, threads, *test, &st, out, bw, self.backend);
                    self.json.push(o);
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
            println!("[\n  {}\n]", self.json.join(",\n  "));
        }
    }
}

/// One test as a JSON object: llama-bench's fields, then peak memory and the bound.
fn json_row(
    info: &ModelInfo,
    threads: usize,
    test: Test,
    st: &Stats,
    out: &ChildOutput,
    bw: Option<&Bandwidth>,
    backend: &str,
) -> String {
    let (n_prompt, n_gen, n_streams) = match test {
        Test::Prompt(n) => (n, 0, 1),
        Test::Gen(n) => (0, n, 1),
        Test::Batch(n, s) => (0, n, s),
    };
    let ts = mean(&st.ts);
    let ns: Vec<f64> = st.ns.iter().map(|&n| n as f64).collect();
    let mut o = String::from("{");
    field(
        &mut o,
        "model_filename",
        &json_str(&info.path.display().to_string()),
    );
    field(&mut o, "model_type", &json_str(&info.desc));
    field(&mut o, "model_size", &info.size.to_string());
    field(&mut o, "model_n_params", &info.params.to_string());
    field(&mut o, "backend", &json_str(backend));
    field(&mut o, "n_threads", &threads.to_string());
    field(&mut o, "n_prompt", &n_prompt.to_string());
    field(&mut o, "n_gen", &n_gen.to_string());
    field(&mut o, "n_streams", &n_streams.to_string());
    field(&mut o, "test", &json_str(&test.name()));
    field(&mut o, "n_depth", &out.depth.to_string());
    if let Some((k, v)) = &out.kv_types {
        field(&mut o, "type_k", &json_str(k));
        field(&mut o, "type_v", &json_str(v));
    }
    field(&mut o, "avg_ns", &format!("{:.0}", mean(&ns)));
    field(&mut o, "stddev_ns", &format!("{:.0}", stddev(&ns)));
    field(&mut o, "avg_ts", &num(ts));
    field(&mut o, "stddev_ts", &num(stddev(&st.ts)));
    let ns_list: Vec<String> = st.ns.iter().map(|n| n.to_string()).collect();
    field(&mut o, "samples_ns", &format!("[{}]", ns_list.join(", ")));
    field(&mut o, "samples_ts", &list(&st.ts));
    field(&mut o, "file_bytes", &info.file_len.to_string());
    field(
        &mut o,
        "weight_bytes_per_token",
        &info.bytes_per_token.to_string(),
    );
    let opt = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
    field(&mut o, "peak_rss_bytes", &opt(out.peak_rss));
    field(&mut o, "kv_cache_bytes", &opt(out.kv_cache_bytes));
    let budget = out.kv_cache_bytes.map(|kv| info.file_len + kv + RSS_SLACK);
    field(&mut o, "rss_budget_bytes", &opt(budget));
    if let (Test::Gen(_), Some(bw)) = (test, bw) {
        let (bound, pct) = bw_bound(info, bw, ts);
        field(&mut o, "membw_bytes_per_s", &num(bw.mean()));
        field(&mut o, "bw_bound_ts", &num(bound));
        field(&mut o, "bw_pct", &num(pct));
    }
    close(&mut o);
    o
}

/// Appends `"key": value, ` to an object under construction.
fn field(o: &mut String, key: &str, value: &str) {
    let _ = write!(o, "{}: {value}, ", json_str(key));
}

/// Ends an object started with `{` and filled by `field`.
fn close(o: &mut String) {
    if o.ends_with(", ") {
        o.truncate(o.len() - 2);
    }
    o.push('}');
}

/// A finite number as JSON (`null` otherwise).
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.6}")
    } else {
        "null".to_string()
    }
}

fn list(v: &[f64]) -> String {
    let items: Vec<String> = v.iter().map(|&x| num(x)).collect();
    format!("[{}]", items.join(", "))
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
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

/// llama-bench's test name: `tg128`, or `tg128 @ d4096` at a depth.
fn test_name(test: Test, depth: usize) -> String {
    if depth > 0 {
        format!("{} @ d{depth}", test.name())
    } else {
        test.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }

    #[test]
    fn objects_close_without_trailing_comma() {
        let mut o = String::from("{");
        field(&mut o, "a", "1");
        field(&mut o, "b", &json_str("x"));
        close(&mut o);
        assert_eq!(o, "{\"a\": 1, \"b\": \"x\"}");
        assert_eq!(num(f64::NAN), "null");
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
        let info = ModelInfo {
            path: "m.gguf".into(),
            desc: "llama 1M F16".into(),
            size: 2_000_000,
            params: 1_000_000,
            bytes_per_token: 1_000_000,
            file_len: 2_000_100,
        };
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
