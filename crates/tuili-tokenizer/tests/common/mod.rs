//! Shared helpers: fixtures and the optional real models.
#![allow(dead_code)]

use std::path::PathBuf;

/// A fixture from `tests/data/`.
pub fn fixture(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("parsing fixture {}: {e}", path.display()))
}

/// Say why a test is skipped. Written straight to stderr, which the test harness does not
/// capture, so the line shows even when the test passes.
fn skip(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

/// The real model `file` (e.g. `smol.gguf`) from `$TUILI_TEST_MODELS_DIR`, or `None` after
/// printing why the calling test is skipped.
pub fn model(file: &str) -> Option<tuili_gguf::GgufFile> {
    let Some(dir) = std::env::var_os("TUILI_TEST_MODELS_DIR") else {
        skip(&format!("TUILI_TEST_MODELS_DIR is not set (needs {file})"));
        return None;
    };
    let path = PathBuf::from(dir).join(file);
    if !path.is_file() {
        skip(&format!("{} does not exist", path.display()));
        return None;
    }
    Some(
        tuili_gguf::GgufFile::open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display())),
    )
}

pub fn str_of(v: &serde_json::Value) -> &str {
    v.as_str().expect("a string")
}

pub fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}
