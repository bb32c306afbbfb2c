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

/// The real model `file` (e.g. `smol.gguf`) from `$TUILI_TEST_MODELS_DIR`, or `None` after
/// printing why the calling test is skipped (see `tuili_testkit::model`).
pub fn model(file: &str) -> Option<tuili_gguf::GgufFile> {
    let path = tuili_testkit::model(file)?;
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
