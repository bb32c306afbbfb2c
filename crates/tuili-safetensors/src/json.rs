//! The JSON files of a Hugging Face model directory.

use std::path::Path;

use serde_json::Value;

use crate::{Result, SafetensorsError};

/// Reads `path` as JSON, refusing files over `max_bytes`; `Ok(None)` when there is no such
/// file. Nesting beyond serde_json's limit (128) is an error, never a deep recursion.
pub fn read_json(path: &Path, max_bytes: u64) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let err = |problem: String| SafetensorsError::Json {
        path: path.to_path_buf(),
        problem,
    };
    let io = |source| SafetensorsError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > max_bytes {
        return Err(err(format!(
            "{len} bytes, more than the limit of {max_bytes}"
        )));
    }
    let text = std::fs::read(path).map_err(io)?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| err(format!("not valid JSON: {e}")))
}
