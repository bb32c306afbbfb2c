//! safetensors files (Hugging Face's weight format) read over mmap, every header field
//! checked before use, and checkpoints sharded by `model.safetensors.index.json`.
//!
//! A file is an 8-byte little-endian header length `N`, `N` bytes of JSON (one entry per
//! tensor: `dtype`, `shape`, `data_offsets` relative to the data; optional
//! `__metadata__` of strings), then the data. At open:
//! - `N` must fit in the file and under [`MAX_HEADER_BYTES`];
//! - the JSON is nested at most [`MAX_JSON_DEPTH`] deep (checked by a scan before parsing,
//!   so a hostile header is an error, never a deep recursion);
//! - every dtype is known, every shape's element count times the dtype's size equals its
//!   byte span, every span lies inside the data, and the spans, sorted, do not overlap.
//!
//! Tensor data is never copied: [`SafeTensors::data`] borrows from the mapping.
//! [`read_json`] reads the JSON files beside the weights (`config.json`, `tokenizer.json`,
//! ...) with a size limit.
#![deny(missing_docs)]

mod checkpoint;
mod error;
mod file;
mod json;

pub use checkpoint::{Checkpoint, INDEX_FILE, SINGLE_FILE};
pub use error::SafetensorsError;
pub use file::{Dtype, SafeTensors, TensorInfo, MAX_DIMS, MAX_HEADER_BYTES, MAX_JSON_DEPTH};
pub use json::read_json;

/// Result with this crate's error.
pub type Result<T, E = SafetensorsError> = std::result::Result<T, E>;
