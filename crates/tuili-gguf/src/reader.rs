//! The GGUF reader: parses header, metadata and tensor infos, checking every count,
//! length and offset against the bytes actually present before using it.
//!
//! Layout (all little-endian):
//! ```text
//! "GGUF" | version u32 | tensor_count u64 | kv_count u64
//! kv_count x   (key: string, value type u32, value)
//! tensor_count x (name: string, n_dims u32, dims u64[n_dims], type u32, offset u64)
//! padding to general.alignment | data section (tensor offsets are relative to it)
//! string = len u64, bytes;  array = element type u32, count u64, elements
//! ```

use std::collections::HashMap;
use std::path::Path;

use crate::value::{id_name, min_encoded_size, type_id, StrArray, UNBOXED_FROM};
use crate::{GgmlType, GgufError, Value};

type Result<T> = std::result::Result<T, GgufError>;

/// The file magic, `"GGUF"`.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Deepest nesting of arrays inside one metadata value.
pub const MAX_ARRAY_DEPTH: usize = 64;
/// Most dimensions a tensor may have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Largest `general.alignment` accepted. GGUF stores it as a u32, but real files use 32
/// (sometimes up to a page); a hostile 2 GiB alignment would make a rewrite of a tiny
/// file pad it to 2 GiB, so anything above 16 MiB is refused.
pub const MAX_ALIGNMENT: u64 = 1 << 24;

/// Smallest possible size of one metadata entry: key length (8), type (4), a 1-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest possible size of one tensor info: name length (8), n_dims (4), one dim (8),
/// type (4), offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

/// Where and how big one tensor is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in GGUF order: fastest-varying first (`dims[0]` is the row length).
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Product of all dimensions (checked not to overflow when the file was opened).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// Number of rows: product of `dims[1..]` (1 for a vector).
    pub fn rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// Elements per row: `dims[0]`.
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }
}

/// Checks a tensor shape and returns `(n_elements, n_bytes)`. Shared with the writer so
/// that it never writes a file the reader rejects.
pub(crate) fn check_shape(name: &str, dims: &[u64], ty: GgmlType) -> Result<(u64, u64)> {
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(GgufError::BadDimCount {
            tensor: name.to_string(),
            n_dims: dims.len() as u64,
            limit: MAX_DIMS,
        });
    }
    if let Some(index) = dims.iter().position(|&d| d == 0) {
        return Err(GgufError::ZeroDim {
            tensor: name.to_string(),
            index,
            dims: dims.to_vec(),
        });
    }
    let overflow = || GgufError::ElementCountOverflow {
        tensor: name.to_string(),
        dims: dims.to_vec(),
        ty,
    };
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    let block_size = ty.block_size();
    if !dims[0].is_multiple_of(block_size as u64) {
        return Err(GgufError::RowNotBlockMultiple {
            tensor: name.to_string(),
            row_len: dims[0],
            ty,
            block_size,
        });
    }
    let n_bytes = ty.bytes_for(n_elements).ok_or_else(overflow)?;
    Ok((n_elements, n_bytes))
}

/// Reads little-endian fields, turning every short read into a [`GgufError`].
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn bytes(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.left() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.offset(),
                needed: n,
                file_len: self.buf.len() as u64,
            });
        }
        // n <= left, which is a usize.
        let n = n as usize;
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N as u64, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &dyn Fn() -> String) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads a count and checks that `count * min_item_bytes` fits in what is left, so
    /// a hostile count can never drive an allocation.
    fn count(&mut self, min_item_bytes: u64, what: &dyn Fn() -> String) -> Result<u64> {
        let offset = self.offset();
        let count = self.u64(what)?;
        let bytes_left = self.left();
        let max = bytes_left / min_item_bytes;
        if count > max {
            return Err(GgufError::CountTooLarge {
                what: what(),
                offset,
                count,
                bytes_left,
                max,
            });
        }
        Ok(count)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        self.str(what).map(str::to_string)
    }

    /// A string, borrowed from the buffer.
    fn str(&mut self, what: &dyn Fn() -> String) -> Result<&'a str> {
        let len = self.count(1, &|| format!("the length of {}", what()))?;
        let offset = self.offset();
        let raw = self.bytes(len, what)?;
        std::str::from_utf8(raw).map_err(|source| GgufError::InvalidUtf8 {
            what: what(),
            offset,
            source,
        })
    }
}

/// Everything parsed from the bytes; the storage is attached by [`GgufFile`].
struct Parsed {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

fn read_value(
    cur: &mut Cursor<'_>,
    ty: u32,
    ty_offset: u64,
    key: &str,
    depth: usize,
) -> Result<Value> {
    use type_id::*;
    let what = || format!("the value of metadata key '{key}'");
    Ok(match ty {
        U8 => Value::U8(cur.u8(&what)?),
        I8 => Value::I8(i8::from_le_bytes(cur.array(&what)?)),
        U16 => Value::U16(u16::from_le_bytes(cur.array(&what)?)),
        I16 => Value::I16(i16::from_le_bytes(cur.array(&what)?)),
        U32 => Value::U32(cur.u32(&what)?),
        I32 => Value::I32(i32::from_le_bytes(cur.array(&what)?)),
        U64 => Value::U64(cur.u64(&what)?),
        I64 => Value::I64(i64::from_le_bytes(cur.array(&what)?)),
        F32 => Value::F32(f32::from_le_bytes(cur.array(&what)?)),
        F64 => Value::F64(f64::from_le_bytes(cur.array(&what)?)),
        BOOL => {
            let offset = cur.offset();
            match cur.u8(&what)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                value => {
                    return Err(GgufError::InvalidBool {
                        key: key.to_string(),
                        offset,
                        value,
                    })
                }
            }
        }
        STRING => Value::String(cur.string(&what)?),
        ARRAY => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(GgufError::NestingTooDeep {
                    key: key.to_string(),
                    offset: ty_offset,
                    limit: MAX_ARRAY_DEPTH,
                });
            }
            let elem_offset = cur.offset();
            let elem_ty =
                cur.u32(&|| format!("the element type of an array in metadata key '{key}'"))?;
            let Some(min_size) = min_encoded_size(elem_ty) else {
                return Err(GgufError::UnknownValueType {
                    key: key.to_string(),
                    offset: elem_offset,
                    found: elem_ty,
                });
            };
            let count = cur.count(min_size, &|| {
                format!(
                    "the element count of an array of {} in metadata key '{key}'",
                    id_name(elem_ty)
                )
            })?;
            // `count` is bounded by the bytes left, so these allocations are too.
            if count as usize > UNBOXED_FROM && matches!(elem_ty, F32 | I32 | STRING) {
                let n = count as usize;
                return Ok(match elem_ty {
                    F32 => Value::F32Array(
                        (0..n)
                            .map(|_| cur.array(&what).map(f32::from_le_bytes))
                            .collect::<Result<_>>()?,
                    ),
                    I32 => Value::I32Array(
                        (0..n)
                            .map(|_| cur.array(&what).map(i32::from_le_bytes))
                            .collect::<Result<_>>()?,
                    ),
                    _ => {
                        let mut a = StrArray::default();
                        for _ in 0..n {
                            a.push(cur.str(&what)?);
                        }
                        Value::StrArray(a)
                    }
                });
            }
            let mut items = Vec::with_capacity(count as usize);
            for _ in 0..count {
                items.push(read_value(cur, elem_ty, elem_offset, key, depth + 1)?);
            }
            Value::Array(items)
        }
        found => {
            return Err(GgufError::UnknownValueType {
                key: key.to_string(),
                offset: ty_offset,
                found,
            })
        }
    })
}

fn parse(buf: &[u8]) -> Result<Parsed> {
    let file_len = buf.len() as u64;
    let head = &buf[..buf.len().min(4)];
    if head != &MAGIC[..head.len()] {
        return Err(GgufError::BadMagic {
            found: head.to_vec(),
            expected: MAGIC,
        });
    }
    let mut cur = Cursor { buf, pos: 0 };
    cur.bytes(4, &|| "the magic \"GGUF\"".to_string())?;
    let version = cur.u32(&|| "the version".to_string())?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(GgufError::UnsupportedVersion {
                version,
                hint: " (version 1 used 32-bit counts; convert the file with a current llama.cpp)",
            })
        }
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(GgufError::UnsupportedVersion {
                version,
                hint: " (this looks like a big-endian file; only little-endian files are read)",
            })
        }
        _ => return Err(GgufError::UnsupportedVersion { version, hint: "" }),
    }
    let tensor_count_offset = cur.offset();
    let tensor_count = cur.u64(&|| "the tensor count".to_string())?;
    let kv_count = cur.count(MIN_KV_BYTES, &|| "the metadata entry count".to_string())?;

    // kv_count is bounded by the bytes left (each entry takes >= MIN_KV_BYTES).
    let mut metadata: Vec<(String, Value)> = Vec::with_capacity(kv_count as usize);
    let mut key_index = HashMap::with_capacity(kv_count as usize);
    for i in 0..kv_count {
        let entry_offset = cur.offset();
        let key = cur.string(&|| format!("the key of metadata entry {i}"))?;
        let ty_offset = cur.offset();
        let ty = cur.u32(&|| format!("the value type of metadata key '{key}'"))?;
        let value = read_value(&mut cur, ty, ty_offset, &key, 0)?;
        if key_index.contains_key(&key) {
            return Err(GgufError::DuplicateKey {
                key,
                offset: entry_offset,
            });
        }
        key_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }

    let alignment = match key_index.get("general.alignment").map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= MAX_ALIGNMENT => a,
            Some(a) => {
                return Err(GgufError::BadAlignment {
                    value: a.to_string(),
                    max: MAX_ALIGNMENT,
                })
            }
            None => {
                return Err(GgufError::BadAlignment {
                    value: format!("{v:?} (a {})", v.describe()),
                    max: MAX_ALIGNMENT,
                })
            }
        },
    };

    let bytes_left = cur.left();
    let max = bytes_left / MIN_TENSOR_INFO_BYTES;
    if tensor_count > max {
        return Err(GgufError::CountTooLarge {
            what: "the tensor count (checked against the bytes after the metadata)".to_string(),
            offset: tensor_count_offset,
            count: tensor_count,
            bytes_left,
            max,
        });
    }
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(tensor_count as usize);
    let mut tensor_index = HashMap::with_capacity(tensor_count as usize);
    for i in 0..tensor_count {
        let info_offset = cur.offset();
        let name = cur.string(&|| format!("the name of tensor {i}"))?;
        let n_dims = cur.u32(&|| format!("the dimension count of tensor '{name}'"))?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(GgufError::BadDimCount {
                tensor: name,
                n_dims: n_dims.into(),
                limit: MAX_DIMS,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(cur.u64(&|| format!("dimension {d} of tensor '{name}'"))?);
        }
        let ty_offset = cur.offset();
        let ty_id = cur.u32(&|| format!("the type of tensor '{name}'"))?;
        let Some(ty) = GgmlType::from_id(ty_id) else {
            return Err(GgufError::UnknownTensorType {
                tensor: name,
                offset: ty_offset,
                id: ty_id,
            });
        };
        let offset = cur.u64(&|| format!("the data offset of tensor '{name}'"))?;
        let (_, n_bytes) = check_shape(&name, &dims, ty)?;
        if offset % alignment != 0 {
            return Err(GgufError::MisalignedOffset {
                tensor: name,
                offset,
                alignment,
            });
        }
        if tensor_index.contains_key(&name) {
            return Err(GgufError::DuplicateTensor {
                tensor: name,
                offset: info_offset,
            });
        }
        tensor_index.insert(name.clone(), tensors.len());
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
            n_bytes,
        });
    }

    // The data section starts at the next multiple of the alignment.
    let data_offset = cur.offset().next_multiple_of(alignment);
    for t in &tensors {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match (start, end) {
            (Some(_), Some(end)) if end <= file_len => {}
            _ => {
                return Err(GgufError::DataPastEnd {
                    tensor: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                })
            }
        }
    }

    // Sorted by start, any overlap shows up between neighbours.
    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_by_key(|t| t.offset);
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        // Both ends were checked to fit in the file above, so no overflow here.
        if b.offset < a.offset + a.n_bytes {
            return Err(GgufError::OverlappingTensors {
                first: a.name.clone(),
                first_start: a.offset,
                first_end: a.offset + a.n_bytes,
                second: b.name.clone(),
                second_start: b.offset,
                second_end: b.offset + b.n_bytes,
            });
        }
    }

    Ok(Parsed {
        version,
        alignment,
        data_offset,
        metadata,
        key_index,
        tensors,
        tensor_index,
    })
}

/// Where the file's bytes live.
enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// An opened, fully checked GGUF file. Metadata and tensor infos are parsed up front;
/// tensor data stays in the mapping (or buffer) and is borrowed from it.
pub struct GgufFile {
    storage: Storage,
    parsed: Parsed,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.parsed.version)
            .field("len", &self.data().len())
            .field("metadata", &self.parsed.metadata.len())
            .field("tensors", &self.parsed.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps the file at `path` and checks it.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let io = |action, source| GgufError::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(|e| io("open", e))?;
        // SAFETY: `Mmap::map` makes a shared, read-only mapping (MAP_SHARED, PROT_READ):
        // its pages are the file's pages in the page cache, which this process never
        // writes. If another process truncates or rewrites the file while it is mapped,
        // reads may fault or see new bytes; that is the usual contract of mmap-based
        // model loaders, and model files are not edited in place.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io("map", e))?;
        let parsed = parse(&map)?;
        Ok(GgufFile {
            storage: Storage::Mapped(map),
            parsed,
        })
    }

    /// Checks an in-memory file, keeping the buffer.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        let parsed = parse(&bytes)?;
        Ok(GgufFile {
            storage: Storage::Owned(bytes),
            parsed,
        })
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.parsed.version
    }

    /// Alignment of the data section and of every tensor offset.
    pub fn alignment(&self) -> u64 {
        self.parsed.alignment
    }

    /// Byte offset of the data section from the start of the file.
    pub fn data_offset(&self) -> u64 {
        self.parsed.data_offset
    }

    /// All metadata entries, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.parsed.metadata
    }

    /// The value of metadata key `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.parsed
            .key_index
            .get(key)
            .map(|&i| &self.parsed.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_string(),
        })
    }

    fn wrong(key: &str, expected: &'static str, found: &Value) -> GgufError {
        GgufError::WrongType {
            key: key.to_string(),
            expected,
            found: found.describe(),
        }
    }

    /// Any integer type holding a value >= 0.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| Self::wrong(key, "a non-negative integer", v))
    }

    /// A float, or an integer converted to f32.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v = self.require(key)?;
        v.as_f32().ok_or_else(|| Self::wrong(key, "a number", v))
    }

    /// A string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Self::wrong(key, "a string", v))
    }

    /// A bool.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| Self::wrong(key, "a bool", v))
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.require(key)?;
        let err = || Self::wrong(key, "an array of strings", v);
        if let Value::StrArray(a) = v {
            return Ok(a.iter().collect());
        }
        v.as_array()
            .ok_or_else(err)?
            .iter()
            .map(|x| x.as_str().ok_or_else(err))
            .collect()
    }

    /// An array of numbers, converted to f32.
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        let v = self.require(key)?;
        let err = || Self::wrong(key, "an array of numbers", v);
        match v {
            Value::F32Array(a) => return Ok(a.clone()),
            Value::I32Array(a) => return Ok(a.iter().map(|&x| x as f32).collect()),
            _ => {}
        }
        v.as_array()
            .ok_or_else(err)?
            .iter()
            .map(|x| x.as_f32().ok_or_else(err))
            .collect()
    }

    /// An array of integers that each fit in i32.
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        let v = self.require(key)?;
        let err = || Self::wrong(key, "an array of integers that fit in i32", v);
        if let Value::I32Array(a) = v {
            return Ok(a.clone());
        }
        v.as_array()
            .ok_or_else(err)?
            .iter()
            .map(|x| {
                x.as_i64()
                    .and_then(|i| i32::try_from(i).ok())
                    .ok_or_else(err)
            })
            .collect()
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.parsed.tensors
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.parsed
            .tensor_index
            .get(name)
            .map(|&i| &self.parsed.tensors[i])
    }

    /// The data bytes of `t` (`t.n_bytes` long). Bounds were checked at open for this
    /// file's tensors; a `TensorInfo` that does not fit this file gives an empty slice.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let range = self
            .parsed
            .data_offset
            .checked_add(t.offset)
            .and_then(|s| Some(s..s.checked_add(t.n_bytes)?))
            .and_then(|r| Some(usize::try_from(r.start).ok()?..usize::try_from(r.end).ok()?));
        range.and_then(|r| self.data().get(r)).unwrap_or(&[])
    }

    /// The whole file.
    pub fn data(&self) -> &[u8] {
        match &self.storage {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }

    /// Whether the file is mapped (not read into a buffer).
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped(_))
    }

    /// Drops the pages of `range` of [`GgufFile::data`] from memory when the file is
    /// mapped (they are read back from the file if touched again): for tensors copied
    /// elsewhere. A hint: nothing happens for an in-memory file or if the kernel refuses.
    pub fn release(&self, range: std::ops::Range<usize>) {
        if let Storage::Mapped(m) = &self.storage {
            if range.start < range.end && range.end <= m.len() {
                // SAFETY: the mapping is shared and read-only (MAP_SHARED, PROT_READ),
                // never written, so MADV_DONTNEED only unmaps clean page-cache pages
                // from this process: later reads fault them back in from the page cache
                // or the file, with the same bytes (the file is not edited in place, as
                // `open` requires). No reference is invalidated.
                #[cfg(unix)]
                let _ = unsafe {
                    m.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        range.start,
                        range.len(),
                    )
                };
            }
        }
    }
}
