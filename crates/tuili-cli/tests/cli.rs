//! End-to-end runs of the `tuili` binary on the real models (pinned outputs from an
//! independent reference) and on bad input.

use std::process::{Command, Output};

/// The real model `name` (`smol.gguf`, `qwen.gguf`), or return from the test after a
/// visible skip line (a failure with `TUILI_REQUIRE_MODELS=1`).
macro_rules! need_model {
    ($name:expr) => {
        match tuili_testkit::model($name) {
            Some(p) => p,
            None => return,
        }
    };
}

fn tuili(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tuili"))
        .args(args)
        .env("TUILI_QUIET", "1")
        .env(
            "TUILI_HOME",
            std::env::temp_dir().join("tuili-cli-test-home"),
        )
        .output()
        .expect("run tuili")
}

fn stdout_of(args: &[&str]) -> String {
    let out = tuili(args);
    assert!(
        out.status.success(),
        "tuili {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn tokenize_ids_match_llama_cpp() {
    let smol = need_model!("smol.gguf");
    let m = smol.to_str().unwrap();
    let ids = |p: &str| stdout_of(&["tokenize", "-m", m, "--ids", "-p", p]);
    assert_eq!(ids("Once upon a time").trim(), "[6403, 1980, 253, 655]");
    assert_eq!(
        ids("The three primary colors are").trim(),
        "[504, 1296, 3003, 4683, 359]"
    );
    let listing = stdout_of(&["tokenize", "-m", m, "-p", "Once upon"]);
    assert!(listing.contains("6403 -> 'Once'"), "{listing}");

    let qwen = need_model!("qwen.gguf");
    let out = stdout_of(&[
        "tokenize",
        "-m",
        qwen.to_str().unwrap(),
        "--ids",
        "-p",
        "Once upon a time",
    ]);
    assert_eq!(out.trim(), "[12522, 5193, 264, 882]");
}

#[test]
fn greedy_story_continuation_smollm2() {
    let smol = need_model!("smol.gguf");
    let out = stdout_of(&[
        "run",
        "-m",
        smol.to_str().unwrap(),
        "-p",
        "Once upon a time",
        "-n",
        "18",
        "--temp",
        "0",
    ]);
    // The independent f32 reference's greedy continuation.
    assert!(
        out.starts_with(
            "Once upon a time, the city of Nova Haven was a thriving metropolis, with towering skyscrapers"
        ),
        "{out}"
    );
}

#[test]
fn greedy_chat_answers_paris() {
    let smol = need_model!("smol.gguf");
    let q = "What is the capital of France?";
    let out = stdout_of(&[
        "run",
        "-m",
        smol.to_str().unwrap(),
        "--chat",
        "-p",
        q,
        "-n",
        "24",
        "--temp",
        "0",
    ]);
    assert!(out.starts_with("The capital of France is Paris."), "{out}");
    let qwen = need_model!("qwen.gguf");
    let out = stdout_of(&[
        "run",
        "-m",
        qwen.to_str().unwrap(),
        "--chat",
        "-p",
        q,
        "-n",
        "24",
        "--temp",
        "0",
    ]);
    assert!(out.contains("Paris"), "{out}");
}

#[test]
fn seeded_sampling_is_reproducible() {
    let smol = need_model!("smol.gguf");
    let m = smol.to_str().unwrap();
    let run = |seed: &str| {
        stdout_of(&[
            "run",
            "-m",
            m,
            "-p",
            "My favourite food is",
            "-n",
            "24",
            "--temp",
            "1.0",
            "--seed",
            seed,
        ])
    };
    let a = run("7");
    assert_eq!(a, run("7"));
    assert_ne!(a, run("8"));
}

#[test]
fn info_describes_the_model() {
    let smol = need_model!("smol.gguf");
    let out = stdout_of(&["info", "-m", smol.to_str().unwrap()]);
    for needle in [
        "architecture:  llama",
        "layers:        30",
        "Q4_1 x",
        "Q8_0 x1",
        "context:       8192",
        "49152 tokens",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[test]
fn bad_model_file_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("tuili-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.gguf");
    std::fs::write(&path, b"GGUF\x03\x00\x00\x00\xff\xff\xff\xff").unwrap();
    let out = tuili(&["info", "-m", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: opening"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let out = tuili(&["run", "-m", "no-such-model", "-p", "x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("neither a file nor a known model") && err.contains("smollm2-135m"),
        "{err}"
    );
}

#[test]
fn prompt_longer_than_context_is_refused() {
    let smol = need_model!("smol.gguf");
    let long = "word ".repeat(100);
    let out = tuili(&["run", "-m", smol.to_str().unwrap(), "-c", "32", "-p", &long]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the context holds 32"), "{err}");
}

/// Final PPL of the first 4 chunks (n_ctx 512) of the GPL-3 text.
fn ppl4(model: &std::path::Path) -> f64 {
    let out = stdout_of(&[
        "perplexity",
        "-m",
        model.to_str().unwrap(),
        "-f",
        "/usr/share/common-licenses/GPL-3",
        "-c",
        "512",
        "--chunks",
        "4",
    ]);
    let line = out
        .lines()
        .find(|l| l.starts_with("Final estimate: PPL = "))
        .expect("final line");
    line["Final estimate: PPL = ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Perplexity against the independent f32 numpy reference (`ref_ppl.py` of the shared
/// reference, run on the same tokens): first 4 chunks of GPL-3 at n_ctx 512.
#[test]
fn perplexity_matches_the_f32_reference() {
    if !std::path::Path::new("/usr/share/common-licenses/GPL-3").exists() {
        tuili_testkit::skip("/usr/share/common-licenses/GPL-3 not found");
        return;
    }
    let smol = need_model!("smol.gguf");
    let got = ppl4(&smol);
    let want = 18.1994;
    assert!(
        (got / want - 1.0).abs() < 0.002,
        "smol: PPL {got}, reference {want}"
    );
    let qwen = need_model!("qwen.gguf");
    let got = ppl4(&qwen);
    let want = 6.2022;
    assert!(
        (got / want - 1.0).abs() < 0.002,
        "qwen: PPL {got}, reference {want}"
    );
}
