//! What the test suites share: the real test models, skips that cannot pass unseen, and a
//! loopback HTTP server ([`http`]) for the clients that fetch models.
//!
//! Tests that need a real model find it in `TUILI_TEST_MODELS_DIR` (set by
//! `scripts/test.sh`). Where it is missing they skip, and say so on the process's real
//! stderr, which the test harness does not capture. With `TUILI_REQUIRE_MODELS=1` (as
//! `scripts/test.sh` sets it) a missing model fails the test instead, naming the model.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod http;

use std::io::Write;
use std::path::PathBuf;

/// The environment variable naming the directory of the real test models.
pub const MODELS_DIR_VAR: &str = "TUILI_TEST_MODELS_DIR";

/// The environment variable that turns a missing model into a failure.
pub const REQUIRE_MODELS_VAR: &str = "TUILI_REQUIRE_MODELS";

/// Whether missing test models must fail the tests (`TUILI_REQUIRE_MODELS=1`).
pub fn models_required() -> bool {
    flag(REQUIRE_MODELS_VAR)
}

/// Whether the environment variable `var` is set to something other than empty or `0`.
pub fn flag(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The path of the test model `name` (`smol.gguf`, `qwen.gguf`, `gemma.gguf`), or `None` after a
/// visible skip line. Panics, naming the model, when models are required.
pub fn model(name: &str) -> Option<PathBuf> {
    let missing = match std::env::var_os(MODELS_DIR_VAR).filter(|d| !d.is_empty()) {
        None => format!("{MODELS_DIR_VAR} is not set"),
        Some(dir) => {
            let p = PathBuf::from(dir).join(name);
            if p.exists() {
                return Some(p);
            }
            format!("{} does not exist", p.display())
        }
    };
    if models_required() {
        panic!(
            "the test model {name} is required ({REQUIRE_MODELS_VAR}=1) but {missing}; \
             `bash scripts/test.sh` fetches it"
        );
    }
    skip(&format!("test model {name} not found: {missing}"));
    None
}

/// Says that the calling test is skipped and why, on the real stderr.
pub fn skip(why: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {why}");
}

/// The Python of the llama.cpp comparisons: `TUILI_LLAMACPP_PYTHON`, else
/// `~/.cache/tuili/llamacpp-venv/bin/python` (which `bash bench/vs-llamacpp.sh --install-only`
/// builds), when it can import `modules` (comma-separated); else `None` after a visible skip
/// line, or a panic under `TUILI_REQUIRE_LLAMACPP=1`.
pub fn llamacpp_python(modules: &str) -> Option<PathBuf> {
    let python = match std::env::var_os("TUILI_LLAMACPP_PYTHON").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/tuili/llamacpp-venv/bin/python"),
    };
    let importable = std::process::Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if importable {
        return Some(python);
    }
    let why = format!(
        "{} cannot import {modules} (set TUILI_LLAMACPP_PYTHON, or run `bash bench/vs-llamacpp.sh --install-only`)",
        python.display()
    );
    assert!(
        !flag("TUILI_REQUIRE_LLAMACPP"),
        "required (TUILI_REQUIRE_LLAMACPP=1) but {why}"
    );
    skip(&why);
    None
}

/// The first largest value's index, as llama.cpp's greedy pick (numpy's argmax).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}
