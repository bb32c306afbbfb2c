//! Kernels for transformer inference: quantized block formats and the small set
//! of ops the models call.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod fault;
pub mod kernels;
pub mod kv;
pub mod matmul;
pub mod ops;
pub mod pool;
pub mod quant;

pub use kv::KvType;
pub use quant::{
    dequant_fn, dequant_rows, dequantize, dot_fn, quantize, row_bytes, DequantFn, DotFn,
};

use tuili_gguf::GgmlType;

/// Everything that can go wrong in this crate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// No kernel exists for this tensor type and operation.
    #[error("{op} is not supported for tensor type {ty}")]
    Unsupported {
        /// The operation asked for (`"dequantize"`, `"dot"`, `"quantize"`).
        op: &'static str,
        /// The tensor type.
        ty: GgmlType,
    },
    /// An element count is not a whole number of blocks.
    #[error("{ty} stores blocks of {block_size} elements, but {what} is {n}")]
    PartialBlock {
        /// The tensor type.
        ty: GgmlType,
        /// Which count was wrong (`"the element count"`, `"the row length"`).
        what: &'static str,
        /// The count given.
        n: usize,
        /// Elements per block of `ty`.
        block_size: usize,
    },
    /// A buffer does not have the length its element count implies.
    #[error("{ty}: {what} must be {expected}, got {got}")]
    Length {
        /// The tensor type.
        ty: GgmlType,
        /// Which buffer was wrong.
        what: &'static str,
        /// The length it must have.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// An element count whose byte size does not fit in memory.
    #[error("{ty}: {n} elements take more bytes than fit in memory")]
    TooLarge {
        /// The tensor type.
        ty: GgmlType,
        /// The element count given.
        n: usize,
    },
    /// A quantizer was given NaN or an infinity, which no block scale can hold.
    #[error(
        "cannot quantize to {ty}: element {index} is {value}, only finite values can be quantized"
    )]
    NonFinite {
        /// The target type.
        ty: GgmlType,
        /// Index of the first bad element.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// A weight matrix reaches past the end of the bytes that hold it.
    #[error("a {rows} x {cols} {ty} weight at byte {offset} needs {needed} bytes; its source has {available}")]
    WeightOutOfBounds {
        /// Rows of the weight.
        rows: usize,
        /// Columns of the weight.
        cols: usize,
        /// Element type.
        ty: GgmlType,
        /// Start of the weight in its source.
        offset: usize,
        /// Bytes the weight needs.
        needed: usize,
        /// Bytes in the source.
        available: usize,
    },
}
