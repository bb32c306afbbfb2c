//! The one error type of this crate. Every message is a full sentence that names what
//! was wrong (key, tensor, byte offset) and the value and limit involved.

use std::path::PathBuf;

/// Everything that can go wrong reading or writing a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, mapped or written.
    #[error("cannot {action} '{path}': {source}")]
    Io {
        /// What was being done ("open", "map", "write").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: bytes 0..4 are {found:?}, expected \"GGUF\" ({expected:?})")]
    BadMagic {
        /// The bytes found (fewer than 4 when the file is that short).
        found: Vec<u8>,
        /// The magic bytes expected.
        expected: [u8; 4],
    },

    /// A version other than 2 or 3.
    #[error("GGUF version {version} (at byte 4) is not supported; this reader supports versions 2 and 3{hint}")]
    UnsupportedVersion {
        /// The version in the header.
        version: u32,
        /// Extra advice, e.g. for version 1 or a big-endian file.
        hint: &'static str,
    },

    /// The file ends in the middle of something.
    #[error("the file ends while reading {what}: {needed} bytes needed at byte {offset}, but the file has only {file_len} bytes")]
    Truncated {
        /// What was being read, e.g. "the value of metadata key 'general.name'".
        what: String,
        /// Where it starts.
        offset: u64,
        /// How many bytes it needs.
        needed: u64,
        /// Length of the whole file.
        file_len: u64,
    },

    /// A count or length that the remaining bytes cannot possibly hold.
    #[error("{what} at byte {offset} is {count}, but the {bytes_left} bytes left in the file can hold at most {max}")]
    CountTooLarge {
        /// What the count is, e.g. "the length of the key of metadata entry 3".
        what: String,
        /// Where the count is stored.
        offset: u64,
        /// The count read.
        count: u64,
        /// Bytes left after the count.
        bytes_left: u64,
        /// The largest count those bytes could hold.
        max: u64,
    },

    /// Arrays nested deeper than [`crate::MAX_ARRAY_DEPTH`].
    #[error("metadata key '{key}': arrays are nested more than {limit} deep at byte {offset}")]
    NestingTooDeep {
        /// The metadata key.
        key: String,
        /// Where the too-deep array starts.
        offset: u64,
        /// The depth limit.
        limit: usize,
    },

    /// A metadata value type id this reader does not know.
    #[error("metadata key '{key}': unknown value type {found} at byte {offset} (known types are 0 to 12)")]
    UnknownValueType {
        /// The metadata key.
        key: String,
        /// Where the type id is stored.
        offset: u64,
        /// The type id read.
        found: u32,
    },

    /// A string (key, value or tensor name) that is not UTF-8.
    #[error("{what} at byte {offset} is not valid UTF-8: {source}")]
    InvalidUtf8 {
        /// Which string.
        what: String,
        /// Where its bytes start.
        offset: u64,
        /// Where the UTF-8 is broken.
        source: std::str::Utf8Error,
    },

    /// A bool stored as something other than 0 or 1.
    #[error("metadata key '{key}': bool at byte {offset} is {value}, expected 0 or 1")]
    InvalidBool {
        /// The metadata key.
        key: String,
        /// Where the byte is.
        offset: u64,
        /// The byte read.
        value: u8,
    },

    /// The same metadata key twice.
    #[error("metadata key '{key}' appears twice (second time at byte {offset})")]
    DuplicateKey {
        /// The key.
        key: String,
        /// Where the second copy starts.
        offset: u64,
    },

    /// `general.alignment` is 0, not a power of two, or not an integer.
    #[error("general.alignment is {value}; it must be a power of two between 1 and {max}")]
    BadAlignment {
        /// The value found, as text.
        value: String,
        /// The largest alignment accepted.
        max: u64,
    },

    /// A tensor type id this crate does not know.
    #[error("tensor '{tensor}': unknown tensor type {id} at byte {offset}")]
    UnknownTensorType {
        /// The tensor name.
        tensor: String,
        /// Where the type id is stored.
        offset: u64,
        /// The type id read.
        id: u32,
    },

    /// Zero or more than [`crate::MAX_DIMS`] dimensions.
    #[error("tensor '{tensor}': has {n_dims} dimensions; it must have between 1 and {limit}")]
    BadDimCount {
        /// The tensor name.
        tensor: String,
        /// The dimension count read.
        n_dims: u64,
        /// The largest dimension count accepted.
        limit: usize,
    },

    /// A dimension of size 0.
    #[error("tensor '{tensor}': dimension {index} is 0 (dims {dims:?}); every dimension must be at least 1")]
    ZeroDim {
        /// The tensor name.
        tensor: String,
        /// Which dimension.
        index: usize,
        /// All dimensions.
        dims: Vec<u64>,
    },

    /// The element count or byte size does not fit in 64 bits.
    #[error("tensor '{tensor}': dims {dims:?} of type {ty} hold more elements or bytes than fit in 64 bits")]
    ElementCountOverflow {
        /// The tensor name.
        tensor: String,
        /// All dimensions.
        dims: Vec<u64>,
        /// Its type.
        ty: crate::GgmlType,
    },

    /// The row length is not a whole number of quantization blocks.
    #[error("tensor '{tensor}': row length {row_len} is not a multiple of the {ty} block size {block_size}")]
    RowNotBlockMultiple {
        /// The tensor name.
        tensor: String,
        /// `dims[0]`.
        row_len: u64,
        /// Its type.
        ty: crate::GgmlType,
        /// Elements per block of that type.
        block_size: usize,
    },

    /// A tensor offset that is not a multiple of the alignment.
    #[error(
        "tensor '{tensor}': data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedOffset {
        /// The tensor name.
        tensor: String,
        /// Its offset from the start of the data section.
        offset: u64,
        /// `general.alignment`.
        alignment: u64,
    },

    /// A tensor's data range ends past the end of the file.
    #[error(
        "tensor '{tensor}': data [{start}, {end}) ends past the end of the file ({file_len} bytes)"
    )]
    DataPastEnd {
        /// The tensor name.
        tensor: String,
        /// Absolute start in the file.
        start: u64,
        /// Absolute end in the file (exclusive); `u64::MAX` on overflow.
        end: u64,
        /// Length of the whole file.
        file_len: u64,
    },

    /// The same tensor name twice.
    #[error("tensor '{tensor}' appears twice (second tensor info at byte {offset})")]
    DuplicateTensor {
        /// The name.
        tensor: String,
        /// Where the second tensor info starts (0 in the writer).
        offset: u64,
    },

    /// Two tensors share bytes.
    #[error("tensors '{first}' (data [{first_start}, {first_end})) and '{second}' (data [{second_start}, {second_end})) overlap")]
    OverlappingTensors {
        /// The tensor that starts first.
        first: String,
        /// Its start, relative to the data section.
        first_start: u64,
        /// Its end (exclusive).
        first_end: u64,
        /// The tensor that starts inside it.
        second: String,
        /// Its start.
        second_start: u64,
        /// Its end (exclusive).
        second_end: u64,
    },

    /// A metadata key that a typed getter needs is absent.
    #[error("metadata key '{key}' is missing")]
    MissingKey {
        /// The key.
        key: String,
    },

    /// A metadata value of the wrong type for a typed getter.
    #[error("metadata key '{key}' is {found}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// What the getter accepts.
        expected: &'static str,
        /// What the file has.
        found: String,
    },

    /// Writer: tensor data of the wrong length.
    #[error("tensor '{tensor}': {len} bytes of data given, but dims {dims:?} of type {ty} need {expected}")]
    DataLength {
        /// The tensor name.
        tensor: String,
        /// Its dimensions.
        dims: Vec<u64>,
        /// Its type.
        ty: crate::GgmlType,
        /// Bytes needed.
        expected: u64,
        /// Bytes given.
        len: u64,
    },

    /// Writer: an array whose elements are not all of one type.
    #[error("metadata key '{key}': array element {index} is {found} but element 0 is {first}; GGUF arrays hold one type")]
    MixedArray {
        /// The key.
        key: String,
        /// The first element of another type.
        index: usize,
        /// The type of element 0.
        first: &'static str,
        /// The type of element `index`.
        found: &'static str,
    },
}
