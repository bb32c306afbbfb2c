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

/// A tiny llama model written once per test binary. Tests run in parallel threads: the
/// file is written once, under a temporary name renamed into place, so no child process
/// ever maps a half-written file (that was a SIGBUS).
fn tiny_model() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("tuili-bench-tiny-{}.gguf", std::process::id()));
        let tmp = dir.join(format!("tuili-bench-tiny-{}.partial", std::process::id()));
        let bytes = write_synthetic(&SyntheticSpec::tiny(Arch::Llama, GgmlType::Q8_0))
            .expect("write the tiny model");
        std::fs::write(&tmp, bytes).expect("save the tiny model");
        std::fs::rename(&tmp, &path).expect("move the tiny model into place");
        path
    })
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
