//! GGUF model files: a reader over mmap that checks every field against the file
//! before using it, and a writer.
#![deny(missing_docs)]

mod types;

pub use types::{GgmlType, QK_K};
