//! The GGUF writer: version 3, little-endian, tensors padded to the alignment.
//!
//! Everything is checked when it is added (array element types, nesting depth, tensor
//! shapes and data lengths), so writing cannot produce a file that [`crate::GgufFile`]
//! rejects.

use std::io::{self, Write};
use std::path::Path;

use crate::reader::{check_shape, DEFAULT_ALIGNMENT, MAGIC, MAX_ALIGNMENT, MAX_ARRAY_DEPTH};
use crate::value::type_id;
use crate::{GgmlType, GgufError, GgufFile, Value};

/// The version written.
pub const WRITE_VERSION: u32 = 3;

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    data: Vec<u8>,
}

/// Builds a GGUF file in memory: metadata in insertion order, then tensors in
/// insertion order, each tensor's data aligned to the file's alignment.
pub struct GgufWriter {
    alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl std::fmt::Debug for GgufWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWriter")
            .field("alignment", &self.alignment)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter::new()
    }
}

/// Checks that every array in `v` holds one type and that arrays nest at most
/// [`MAX_ARRAY_DEPTH`] deep. Stops at the limit, so recursion stays shallow.
fn check_value(key: &str, v: &Value, depth: usize) -> Result<(), GgufError> {
    let Value::Array(items) = v else {
        return Ok(());
    };
    if depth >= MAX_ARRAY_DEPTH {
        return Err(GgufError::NestingTooDeep {
            key: key.to_string(),
            offset: 0,
            limit: MAX_ARRAY_DEPTH,
        });
    }
    if let Some(first) = items.first() {
        if let Some(index) = items.iter().position(|x| x.type_id() != first.type_id()) {
            return Err(GgufError::MixedArray {
                key: key.to_string(),
                index,
                first: first.type_name(),
                found: items[index].type_name(),
            });
        }
    }
    items
        .iter()
        .try_for_each(|x| check_value(key, x, depth + 1))
}

fn alignment_of(v: &Value) -> Result<u64, GgufError> {
    match v.as_u64() {
        Some(a) if a.is_power_of_two() && a <= MAX_ALIGNMENT => Ok(a),
        Some(a) => Err(GgufError::BadAlignment {
            value: a.to_string(),
            max: MAX_ALIGNMENT,
        }),
        None => Err(GgufError::BadAlignment {
            value: format!("{v:?} (a {})", v.describe()),
            max: MAX_ALIGNMENT,
        }),
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// An array's element type and count.
fn put_array_head(out: &mut Vec<u8>, elem_ty: u32, n: usize) {
    out.extend_from_slice(&elem_ty.to_le_bytes());
    out.extend_from_slice(&(n as u64).to_le_bytes());
}

/// Writes the value without its type id (the caller writes that).
fn put_payload(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_string(out, s),
        Value::F32Array(a) => {
            put_array_head(out, type_id::F32, a.len());
            a.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        Value::I32Array(a) => {
            put_array_head(out, type_id::I32, a.len());
            a.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        Value::StrArray(a) => {
            put_array_head(out, type_id::STRING, a.len());
            a.iter().for_each(|x| put_string(out, x));
        }
        Value::Array(items) => {
            // An empty array still needs an element type; u8 is as good as any.
            put_array_head(
                out,
                items.first().map_or(type_id::U8, Value::type_id),
                items.len(),
            );
            for x in items {
                put_payload(out, x);
            }
        }
    }
}

fn padding(len: u64, alignment: u64) -> usize {
    (len.next_multiple_of(alignment) - len) as usize
}

impl GgufWriter {
    /// An empty file with the default alignment (32).
    pub fn new() -> GgufWriter {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Sets the alignment (a power of two) and records it as `general.alignment` (u32).
    pub fn with_alignment(mut self, alignment: u64) -> Result<GgufWriter, GgufError> {
        let value =
            u32::try_from(alignment)
                .map(Value::U32)
                .map_err(|_| GgufError::BadAlignment {
                    value: alignment.to_string(),
                    max: MAX_ALIGNMENT,
                })?;
        self.add("general.alignment", value)?;
        Ok(self)
    }

    /// A writer holding everything `file` holds (metadata in order, tensors and their
    /// data), to change a key or two and write again.
    pub fn copy_of(file: &GgufFile) -> Result<GgufWriter, GgufError> {
        let mut w = GgufWriter::new();
        for (k, v) in file.metadata() {
            w.add(k.clone(), v.clone())?;
        }
        for t in file.tensors() {
            w.add_tensor(t.name.clone(), &t.dims, t.ty, file.tensor_data(t).to_vec())?;
        }
        Ok(w)
    }

    /// The alignment that will be written.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Adds metadata entry `key`, or replaces its value (keeping its position) if it is
    /// already present. Setting `general.alignment` also sets the alignment.
    pub fn add(&mut self, key: impl Into<String>, value: Value) -> Result<&mut Self, GgufError> {
        let key = key.into();
        check_value(&key, &value, 0)?;
        if key == "general.alignment" {
            self.alignment = alignment_of(&value)?;
        }
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key, value)),
        }
        Ok(self)
    }

    /// Adds a tensor. `dims` are in GGUF order (row length first); `data` must be
    /// exactly `ty.bytes_for(product of dims)` bytes.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Result<&mut Self, GgufError> {
        let name = name.into();
        let (_, expected) = check_shape(&name, dims, ty)?;
        if data.len() as u64 != expected {
            return Err(GgufError::DataLength {
                tensor: name,
                dims: dims.to_vec(),
                ty,
                expected,
                len: data.len() as u64,
            });
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::DuplicateTensor {
                tensor: name,
                offset: 0,
            });
        }
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ty,
            data,
        });
        Ok(self)
    }

    /// Header, metadata, tensor infos and the padding up to the data section.
    fn header(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&WRITE_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut out, key);
            out.extend_from_slice(&value.type_id().to_le_bytes());
            put_payload(&mut out, value);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + t.data.len() as u64).next_multiple_of(self.alignment);
        }
        let pad = padding(out.len() as u64, self.alignment);
        out.resize(out.len() + pad, 0);
        out
    }

    /// Writes the whole file to `w`.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.header())?;
        // Each tensor starts aligned, so its padding depends on its own length only.
        let zeros = [0u8; 4096];
        for t in &self.tensors {
            w.write_all(&t.data)?;
            let mut pad = padding(t.data.len() as u64, self.alignment);
            while pad > 0 {
                let n = pad.min(zeros.len());
                w.write_all(&zeros[..n])?;
                pad -= n;
            }
        }
        Ok(())
    }

    /// The whole file as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.header();
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            let pad = padding(out.len() as u64, self.alignment);
            out.resize(out.len() + pad, 0);
        }
        out
    }

    /// Writes the whole file to `path`, replacing it.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::create(path).map_err(io)?;
        let mut w = io::BufWriter::new(file);
        self.write_to(&mut w).map_err(io)?;
        w.flush().map_err(io)
    }
}
