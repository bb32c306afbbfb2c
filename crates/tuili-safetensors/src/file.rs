//! One safetensors file: header parsed and checked at open, data borrowed from the mapping.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::Value;

use crate::{Result, SafetensorsError};

/// The largest header accepted (the `safetensors` package's own limit).
pub const MAX_HEADER_BYTES: u64 = 100 << 20;
/// The deepest JSON nesting accepted in a header. A valid header is 3 deep
/// (`{name: {shape: [..]}}`); the margin admits odd but harmless metadata.
pub const MAX_JSON_DEPTH: usize = 16;
/// The most dimensions a tensor may have.
pub const MAX_DIMS: usize = 8;

/// A tensor element type as safetensors names it; only the types tuili reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
    /// Bytes: packed data such as gpt-oss's MXFP4 expert blocks and their E8M0 scales.
    U8,
}

/// dtypes of the format that tuili does not read: named in the error rather than "unknown".
const OTHER_DTYPES: &[&str] = &[
    "F64", "I64", "U64", "I32", "U32", "I16", "U16", "I8", "BOOL", "F8_E4M3", "F8_E5M2", "F8_E8M0",
    "F6_E2M3", "F6_E3M2", "F4", "C64",
];

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::U8 => 1,
        }
    }

    /// The name in the header.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::U8 => "U8",
        }
    }

    fn from_name(name: &str) -> Option<Dtype> {
        [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::U8]
            .into_iter()
            .find(|d| d.name() == name)
    }
}

/// A tensor's header entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape, outermost first (row-major, as PyTorch).
    pub shape: Vec<u64>,
    /// Byte range in the file (absolute: header included).
    pub range: std::ops::Range<usize>,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// An opened, fully checked safetensors file.
pub struct SafeTensors {
    storage: Storage,
    name: String,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for SafeTensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafeTensors")
            .field("name", &self.name)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl SafeTensors {
    /// Maps the file at `path` and checks its header.
    pub fn open(path: impl AsRef<Path>) -> Result<SafeTensors> {
        let path = path.as_ref();
        let io = |action, source| SafetensorsError::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(|e| io("open", e))?;
        // SAFETY: a shared read-only mapping that this process never writes; as with GGUF
        // (tuili-gguf's reader), weight files are not edited in place while mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io("map", e))?;
        let name = path.display().to_string();
        let (tensors, metadata) = parse(&map, &name)?;
        Ok(SafeTensors::new(
            Storage::Mapped(map),
            name,
            tensors,
            metadata,
        ))
    }

    /// Checks an in-memory file, keeping the buffer.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<SafeTensors> {
        let name = "<memory>".to_string();
        let (tensors, metadata) = parse(&bytes, &name)?;
        Ok(SafeTensors::new(
            Storage::Owned(bytes),
            name,
            tensors,
            metadata,
        ))
    }

    fn new(
        storage: Storage,
        name: String,
        tensors: Vec<TensorInfo>,
        metadata: BTreeMap<String, String>,
    ) -> SafeTensors {
        let index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        SafeTensors {
            storage,
            name,
            tensors,
            index,
            metadata,
        }
    }

    /// The file's name (its path, or `<memory>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tensors, in data order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The `__metadata__` strings.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// A tensor's bytes (checked in range at open).
    pub fn data(&self, t: &TensorInfo) -> &[u8] {
        &self.bytes()[t.range.clone()]
    }

    fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

fn header_err(file: &str, field: impl Into<String>, problem: String) -> SafetensorsError {
    SafetensorsError::Header {
        file: file.to_string(),
        field: field.into(),
        problem,
    }
}

/// The deepest nesting of `[`/`{` in `json`, outside strings; stops counting past `limit`.
fn json_depth(json: &[u8], limit: usize) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for &b in json {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
                if max > limit {
                    return max;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

type Parsed = (Vec<TensorInfo>, BTreeMap<String, String>);

fn parse(bytes: &[u8], file: &str) -> Result<Parsed> {
    let len = bytes.len() as u64;
    let Some(n) = bytes.get(..8) else {
        return Err(header_err(
            file,
            "header length",
            format!("the file has {len} bytes, fewer than the 8 of the header length"),
        ));
    };
    let n = u64::from_le_bytes(n.try_into().expect("8 bytes"));
    if n > len - 8 {
        return Err(header_err(
            file,
            "header length",
            format!("{n} bytes, but only {} follow in the file", len - 8),
        ));
    }
    if n > MAX_HEADER_BYTES {
        return Err(header_err(
            file,
            "header length",
            format!("{n} bytes, more than the limit of {MAX_HEADER_BYTES}"),
        ));
    }
    let json = &bytes[8..8 + n as usize];
    let depth = json_depth(json, MAX_JSON_DEPTH);
    if depth > MAX_JSON_DEPTH {
        return Err(header_err(
            file,
            "header JSON",
            format!("nested more than {MAX_JSON_DEPTH} deep"),
        ));
    }
    let header: Value = serde_json::from_slice(json)
        .map_err(|e| header_err(file, "header JSON", format!("not valid JSON: {e}")))?;
    let Value::Object(entries) = header else {
        return Err(header_err(
            file,
            "header JSON",
            "is not a JSON object".to_string(),
        ));
    };
    let data_start = 8 + n as usize;
    let data_len = bytes.len() - data_start;
    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, entry) in entries {
        if name == "__metadata__" {
            metadata = read_metadata(file, &entry)?;
            continue;
        }
        tensors.push(read_tensor(file, &name, &entry, data_start, data_len)?);
    }
    tensors.sort_by_key(|t| (t.range.start, t.range.end));
    for pair in tensors.windows(2) {
        if pair[1].range.start < pair[0].range.end {
            return Err(header_err(
                file,
                format!("tensor '{}' data_offsets", pair[1].name),
                format!(
                    "bytes {}..{} of the data overlap tensor '{}' at {}..{}",
                    pair[1].range.start - data_start,
                    pair[1].range.end - data_start,
                    pair[0].name,
                    pair[0].range.start - data_start,
                    pair[0].range.end - data_start
                ),
            ));
        }
    }
    Ok((tensors, metadata))
}

fn read_metadata(file: &str, entry: &Value) -> Result<BTreeMap<String, String>> {
    let Value::Object(kv) = entry else {
        return Err(header_err(
            file,
            "__metadata__",
            "is not an object of strings".to_string(),
        ));
    };
    kv.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(header_err(
                file,
                format!("__metadata__.{k}"),
                "is not a string".to_string(),
            )),
        })
        .collect()
}

fn read_tensor(
    file: &str,
    name: &str,
    entry: &Value,
    data_start: usize,
    data_len: usize,
) -> Result<TensorInfo> {
    let field = |f: &str| format!("tensor '{name}' {f}");
    let err = |f: &str, problem: String| header_err(file, field(f), problem);
    let Value::Object(e) = entry else {
        return Err(err("entry", "is not an object".to_string()));
    };
    let dtype_name = e
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| err("dtype", "is missing or not a string".to_string()))?;
    let dtype = match Dtype::from_name(dtype_name) {
        Some(d) => d,
        None if OTHER_DTYPES.contains(&dtype_name) => {
            return Err(SafetensorsError::UnsupportedDtype {
                file: file.to_string(),
                tensor: name.to_string(),
                dtype: dtype_name.to_string(),
            })
        }
        None => {
            return Err(err(
                "dtype",
                format!("{dtype_name:?} is not a safetensors dtype"),
            ))
        }
    };
    let shape = e
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| err("shape", "is missing or not an array".to_string()))?;
    if shape.len() > MAX_DIMS {
        return Err(err(
            "shape",
            format!(
                "has {} dimensions, more than the limit of {MAX_DIMS}",
                shape.len()
            ),
        ));
    }
    let shape = shape
        .iter()
        .map(|d| {
            d.as_u64()
                .ok_or_else(|| err("shape", format!("holds {d}, not a non-negative integer")))
        })
        .collect::<Result<Vec<u64>>>()?;
    let offsets = e
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|o| o.len() == 2)
        .ok_or_else(|| err("data_offsets", "is missing or not a pair".to_string()))?;
    let (Some(begin), Some(end)) = (offsets[0].as_u64(), offsets[1].as_u64()) else {
        return Err(err(
            "data_offsets",
            "holds something other than non-negative integers".to_string(),
        ));
    };
    if begin > end || end > data_len as u64 {
        return Err(err(
            "data_offsets",
            format!("[{begin}, {end}] is not a range inside the {data_len} bytes of data"),
        ));
    }
    let bytes = shape
        .iter()
        .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d));
    if bytes != Some(end - begin) {
        return Err(err(
            "shape",
            format!(
                "{shape:?} of {} needs {} bytes, but data_offsets [{begin}, {end}] span {}",
                dtype.name(),
                bytes.map_or("more than 2^64".to_string(), |b| b.to_string()),
                end - begin
            ),
        ));
    }
    Ok(TensorInfo {
        name: name.to_string(),
        dtype,
        shape,
        range: data_start + begin as usize..data_start + end as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::json_depth;

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(json_depth(br#"{"a": "[[[{{\"[", "b": [1]}"#, 16), 2);
        assert_eq!(json_depth(b"[[[]]]", 16), 3);
        assert_eq!(json_depth(&[b'['; 100], 16), 17);
    }
}
