//! GGUF model files: a reader over mmap that checks every field against the file
//! before using it, and a writer.
//!
//! Design decisions:
//! - Everything except tensor data is parsed and checked at open: counts and lengths
//!   are bounded by the bytes left before anything is allocated, tensor shapes, types,
//!   alignment, ranges and overlaps are checked, so later accessors cannot fail or panic.
//! - Tensor data is never copied: [`GgufFile::tensor_data`] borrows from the mapping.
//! - Errors name the key or tensor, the byte offset, the value found and the limit.
//! - The writer shares the shape checks with the reader, so it cannot write a file
//!   the reader rejects; it always writes version 3.
#![deny(missing_docs)]

mod error;
mod reader;
mod types;
mod value;
mod writer;

pub use error::GgufError;
pub use reader::{
    GgufFile, TensorInfo, DEFAULT_ALIGNMENT, MAGIC, MAX_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS,
};
pub use types::{GgmlType, QK_K};
pub use value::{StrArray, Value, UNBOXED_FROM};
pub use writer::{GgufWriter, WRITE_VERSION};

/// Result with this crate's error.
pub type Result<T, E = GgufError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn file_is_send_and_sync() {
        assert_send_sync::<GgufFile>();
        assert_send_sync::<GgufWriter>();
    }
}
