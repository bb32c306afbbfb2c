//! End-to-end runs of `tuili bench` on a small random model: one child process per
//! thread count, llama-bench's table and JSON, and clear errors on bad arguments.

use std::path::PathBuf;
use std::process::{Command, Output};

use tuili_gguf::GgmlType;
use tuili_models::synthetic::{write_synthetic, SyntheticSpec};
use tuili_models::Arch;

fn tuili(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tuili"))
        .arg("bench")
        .args(args)
        .env(
            "TUILI_HOME",
            std::env::temp_dir().join("tuili-bench-test-home"),
        )
        .output()
        .expect("run tuili")
}

fn ok_stdout(args: &[&str]) -> String {
    let out = tuili(args);
    assert!(
        out.status.success(),
        "tuili bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn err_text(args: &[&str]) -> String {
    let out = tuili(args);
    assert!(!out.status.success(), "tuili bench {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A tiny llama model of weight type `ty`, written to `name`. Tests run in parallel
/// threads: the file is written under a temporary name renamed into place, so no child
/// process ever maps a half-written file (that was a SIGBUS).
fn write_tiny(name: &str, ty: GgmlType) -> PathBuf {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("tuili-bench-{name}-{}.gguf", std::process::id()));
    let tmp = dir.join(format!("tuili-bench-{name}-{}.partial", std::process::id()));
    let bytes =
        write_synthetic(&SyntheticSpec::tiny(Arch::Llama, ty)).expect("write the tiny model");
    std::fs::write(&tmp, bytes).expect("save the tiny model");
    std::fs::rename(&tmp, &path).expect("move the tiny model into place");
    path
}

/// The tiny Q8_0 model, written once per test binary.
fn tiny_model() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| write_tiny("tiny", GgmlType::Q8_0))
        .clone()
}

#[test]
fn json_has_every_test_per_thread_count() {
    let m = tiny_model();
    let m = m.to_str().expect("utf-8 path");
    let out = ok_stdout(&[
        "-m", m, "-t", "1,2", "-p", "16", "-n", "4", "-r", "2", "-o", "json",
    ]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("a JSON array");
    let got: Vec<(u64, &str)> = rows
        .iter()
        .map(|r| {
            let threads = r["n_threads"].as_u64().expect("n_threads");
            (threads, r["test"].as_str().expect("test"))
        })
        .collect();
    assert_eq!(
        got,
        [(1, "pp16"), (1, "tg4"), (2, "pp16"), (2, "tg4")],
        "{out}"
    );
    for r in &rows {
        // Two samples per test, and a peak RSS within the budget (a tiny model is far
        // below).
        let samples = r["samples_ts"].as_array().expect("samples_ts");
        assert_eq!(samples.len(), 2, "{r}");
        let rss = r["peak_rss_bytes"].as_u64().expect("peak_rss_bytes");
        let budget = r["rss_budget_bytes"].as_u64().expect("rss_budget_bytes");
        assert!(rss > 0 && rss <= budget, "{r}");
    }
}

#[test]
fn markdown_table_and_bandwidth_column() {
    let m = tiny_model();
    let m = m.to_str().expect("utf-8 path");
    let out = ok_stdout(&[
        "-m",
        m,
        "-t",
        "2",
        "-p",
        "8",
        "-n",
        "2",
        "-r",
        "1",
        "--membw",
        "--membw-mib",
        "8",
    ]);
    assert!(out.contains("| threads | read bandwidth (GB/s) |"), "{out}");
    assert!(
        out.contains("| model ") && out.contains("| backend ") && out.contains("% bw bound"),
        "{out}"
    );
    let rows: Vec<&str> = out.lines().filter(|l| l.contains("| CPU ")).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        rows[0].contains(" pp8 ") && rows[1].contains(" tg2 "),
        "{out}"
    );
    // Only the tg row has a percentage.
    assert!(
        !rows[0].contains('%') && rows[1].trim_end().ends_with("% |"),
        "{out}"
    );
}

#[test]
fn bad_arguments_name_the_limit() {
    let m = tiny_model();
    let m = m.to_str().expect("utf-8 path");
    let e = err_text(&["-m", m, "-t", "0"]);
    assert!(
        e.contains("-t must be between 1 and 1024") && e.contains("got 0"),
        "{e}"
    );
    let e = err_text(&["-m", m, "-r", "0"]);
    assert!(
        e.contains("-r must be between 1") && e.contains("got 0"),
        "{e}"
    );
    let e = err_text(&["--synthetic", "q9_9", "--write-only"]);
    assert!(e.contains("unknown synthetic weight type 'q9_9'"), "{e}");
    let e = err_text(&["-m", "/nonexistent/model.gguf", "-r", "1"]);
    assert!(e.contains("/nonexistent/model.gguf"), "{e}");
}

/// A test past the model's trained context (here 256 positions) runs, for its speed, and
/// says so on stderr, naming both numbers (as llama-bench, whose `-d` often goes past it).
#[test]
fn past_the_trained_context_is_a_warning() {
    let m = tiny_model();
    let m = m.to_str().expect("utf-8 path");
    let out = tuili(&["-m", m, "-p", "0", "-n", "8", "-d", "300", "-r", "1"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{e}");
    assert!(e.contains("308") && e.contains("256"), "{e}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("tg8 @ d300"));
}

/// `--quant` benches the model as `run` and `serve` would load it: quantized in memory,
/// its size and type reported as loaded, and an already quantized file refused.
#[test]
fn quant_benches_the_model_quantized_on_load() {
    let f32_path = write_tiny("f32", GgmlType::F32);
    let m = f32_path.to_str().expect("utf-8 path");
    let row = |extra: &[&str]| {
        let mut args = vec![
            "-m", m, "-t", "1", "-p", "8", "-n", "2", "-r", "1", "-o", "json",
        ];
        args.extend_from_slice(extra);
        let out = ok_stdout(&args);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("a JSON array");
        assert_eq!(rows.len(), 2, "{out}");
        rows[0].clone()
    };
    let plain = row(&[]);
    let quant = row(&["--quant", "q8_0"]);
    let ty = |r: &serde_json::Value| r["model_type"].as_str().expect("model_type").to_string();
    assert!(ty(&plain).contains("F32"), "{plain}");
    assert!(ty(&quant).ends_with(" Q8_0"), "{quant}");
    let size = |r: &serde_json::Value| r["model_size"].as_u64().expect("model_size");
    // Q8_0 stores 34 bytes per 32 weights against F32's 128; the norms stay F32.
    let ratio = size(&plain) as f64 / size(&quant) as f64;
    assert!(ratio > 3.0 && ratio < 3.77, "{plain} {quant}");
    assert_eq!(plain["model_n_params"], quant["model_n_params"]);

    let q8 = tiny_model();
    let e = err_text(&["-m", q8.to_str().expect("utf-8 path"), "--quant", "q4_0"]);
    assert!(
        e.contains("already Q8_0") && e.contains("--allow-requantize"),
        "{e}"
    );
    let e = err_text(&["-m", m, "--quant", "q9_9"]);
    assert!(e.contains("q9_9"), "{e}");
    let _ = std::fs::remove_file(&f32_path);
}
