//! The one error type of this crate: each message names the file, the field and the limit.

use std::path::PathBuf;

/// Everything that can go wrong reading a safetensors file or a sharded checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    /// A file could not be opened, mapped or read.
    #[error("cannot {action} '{path}': {source}")]
    Io {
        /// What was being done ("open", "map", "read").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A header field is wrong; `field` names it (e.g. `tensor 'x' data_offsets`).
    #[error("{file}: {field}: {problem}")]
    Header {
        /// The file (or "<memory>").
        file: String,
        /// The field at fault.
        field: String,
        /// What is wrong, with the value found and the limit.
        problem: String,
    },
    /// A tensor has a dtype tuili does not read.
    #[error("{file}: tensor '{tensor}' has dtype {dtype}; supported: F32, F16, BF16, U8")]
    UnsupportedDtype {
        /// The file.
        file: String,
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: String,
    },
    /// A JSON file of a model directory is too large or not JSON.
    #[error("{path}: {problem}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The sharded index is inconsistent with itself or with the shards.
    #[error("{index}: {problem}")]
    Index {
        /// The index file.
        index: String,
        /// What is wrong.
        problem: String,
    },
}
