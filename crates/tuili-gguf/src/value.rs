//! Metadata values and their GGUF type ids.

/// Arrays of more numbers or strings than this are read unboxed ([`Value::F32Array`],
/// [`Value::I32Array`], [`Value::StrArray`]): a tokenizer's 262k tokens, scores and types
/// take 4 to 6 MB so instead of some 30 MB of boxed values (24 bytes and an allocation
/// each), held for as long as the file is open. Shorter arrays (per-layer values) stay
/// [`Value::Array`]. Either form is the same value (`==`) and the same bytes on disk.
pub const UNBOXED_FROM: usize = 4096;

/// A metadata value. GGUF arrays hold elements of one type; nested arrays are allowed.
#[derive(Debug, Clone)]
pub enum Value {
    /// `uint8` (type 0).
    U8(u8),
    /// `int8` (type 1).
    I8(i8),
    /// `uint16` (type 2).
    U16(u16),
    /// `int16` (type 3).
    I16(i16),
    /// `uint32` (type 4).
    U32(u32),
    /// `int32` (type 5).
    I32(i32),
    /// `uint64` (type 10).
    U64(u64),
    /// `int64` (type 11).
    I64(i64),
    /// `float32` (type 6).
    F32(f32),
    /// `float64` (type 12).
    F64(f64),
    /// `bool` (type 7), one byte 0 or 1.
    Bool(bool),
    /// UTF-8 string (type 8), u64 length then bytes.
    String(String),
    /// Array (type 9): element type, u64 count, elements.
    Array(Vec<Value>),
    /// An array of `float32`, unboxed (see [`UNBOXED_FROM`]).
    F32Array(Vec<f32>),
    /// An array of `int32`, unboxed.
    I32Array(Vec<i32>),
    /// An array of strings, unboxed.
    StrArray(StrArray),
}

/// Strings in one buffer: string `i` is `text[ends[i - 1]..ends[i]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StrArray {
    text: String,
    ends: Vec<usize>,
}

impl StrArray {
    /// Appends `s`.
    pub fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(self.text.len());
    }

    /// Strings held.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// String `i`.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.text[start..end])
    }

    /// The strings in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }
}

impl<'a> FromIterator<&'a str> for StrArray {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> StrArray {
        let mut a = StrArray::default();
        iter.into_iter().for_each(|s| a.push(s));
        a
    }
}

impl PartialEq for Value {
    /// Values are equal when they say the same: an unboxed array equals the
    /// [`Value::Array`] of the same elements.
    fn eq(&self, other: &Value) -> bool {
        use Value::*;
        match (self, other) {
            (U8(a), U8(b)) => a == b,
            (I8(a), I8(b)) => a == b,
            (U16(a), U16(b)) => a == b,
            (I16(a), I16(b)) => a == b,
            (U32(a), U32(b)) => a == b,
            (I32(a), I32(b)) => a == b,
            (U64(a), U64(b)) => a == b,
            (I64(a), I64(b)) => a == b,
            (F32(a), F32(b)) => a == b,
            (F64(a), F64(b)) => a == b,
            (Bool(a), Bool(b)) => a == b,
            (String(a), String(b)) => a == b,
            (Array(a), Array(b)) => a == b,
            (F32Array(a), F32Array(b)) => a == b,
            (I32Array(a), I32Array(b)) => a == b,
            (StrArray(a), StrArray(b)) => a == b,
            (a, b) => match (a.boxed(), b.boxed()) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            },
        }
    }
}

/// GGUF metadata value type ids.
pub(crate) mod type_id {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// Smallest encoded size in bytes of one value of type `id` (arrays and strings may
/// be empty: 12 bytes for element type + count, 8 for the length). `None` if unknown.
pub(crate) fn min_encoded_size(id: u32) -> Option<u64> {
    use type_id::*;
    Some(match id {
        U8 | I8 | BOOL => 1,
        U16 | I16 => 2,
        U32 | I32 | F32 => 4,
        U64 | I64 | F64 => 8,
        STRING => 8,
        ARRAY => 12,
        _ => return None,
    })
}

/// Name of type id `id`, as [`Value::type_name`] spells it.
pub(crate) fn id_name(id: u32) -> &'static str {
    use type_id::*;
    match id {
        U8 => "u8",
        I8 => "i8",
        U16 => "u16",
        I16 => "i16",
        U32 => "u32",
        I32 => "i32",
        F32 => "f32",
        BOOL => "bool",
        STRING => "string",
        ARRAY => "array",
        U64 => "u64",
        I64 => "i64",
        F64 => "f64",
        _ => "unknown",
    }
}

impl Value {
    /// The GGUF type id of this value.
    pub fn type_id(&self) -> u32 {
        use type_id::*;
        match self {
            Value::U8(_) => U8,
            Value::I8(_) => I8,
            Value::U16(_) => U16,
            Value::I16(_) => I16,
            Value::U32(_) => U32,
            Value::I32(_) => I32,
            Value::U64(_) => U64,
            Value::I64(_) => I64,
            Value::F32(_) => F32,
            Value::F64(_) => F64,
            Value::Bool(_) => BOOL,
            Value::String(_) => STRING,
            Value::Array(_) | Value::F32Array(_) | Value::I32Array(_) | Value::StrArray(_) => ARRAY,
        }
    }

    /// Short name of the type: `"u8"`, `"f32"`, `"string"`, `"array"`, ...
    pub fn type_name(&self) -> &'static str {
        id_name(self.type_id())
    }

    /// The type with element detail, e.g. `"array of string"`, for error messages.
    pub fn describe(&self) -> String {
        match self {
            Value::Array(items) => match items.first() {
                Some(first) => format!("array of {}", first.describe()),
                None => "empty array".to_string(),
            },
            Value::F32Array(_) => "array of f32".to_string(),
            Value::I32Array(_) => "array of i32".to_string(),
            Value::StrArray(_) => "array of string".to_string(),
            other => other.type_name().to_string(),
        }
    }

    /// Any integer type whose value is >= 0.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type whose value fits in `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// `F32`, `F64` (rounded) or any integer (rounded to the nearest f32).
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            _ => self
                .as_i64()
                .map(|v| v as f32)
                .or_else(|| self.as_u64().map(|v| v as f32)),
        }
    }

    /// `Bool` only.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// `String` only.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// `Array` only (see [`Value::array_len`] and [`Value::str_at`] for every array).
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// Elements of an array of either form; `None` for other values.
    pub fn array_len(&self) -> Option<usize> {
        match self {
            Value::Array(a) => Some(a.len()),
            Value::F32Array(a) => Some(a.len()),
            Value::I32Array(a) => Some(a.len()),
            Value::StrArray(a) => Some(a.len()),
            _ => None,
        }
    }

    /// String `i` of an array of strings of either form.
    pub fn str_at(&self, i: usize) -> Option<&str> {
        match self {
            Value::Array(a) => a.get(i)?.as_str(),
            Value::StrArray(a) => a.get(i),
            _ => None,
        }
    }

    /// An unboxed array as a [`Value::Array`] (`None` for other values).
    pub fn boxed(&self) -> Option<Vec<Value>> {
        match self {
            Value::F32Array(a) => Some(a.iter().map(|&x| Value::F32(x)).collect()),
            Value::I32Array(a) => Some(a.iter().map(|&x| Value::I32(x)).collect()),
            Value::StrArray(a) => Some(a.iter().map(|x| Value::String(x.into())).collect()),
            Value::Array(a) => Some(a.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_conversions_respect_sign_and_range() {
        assert_eq!(Value::I32(-1).as_u64(), None);
        assert_eq!(Value::I32(7).as_u64(), Some(7));
        assert_eq!(Value::U64(u64::MAX).as_i64(), None);
        assert_eq!(Value::U64(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(Value::I8(-3).as_i64(), Some(-3));
        assert_eq!(Value::F32(1.0).as_u64(), None);
        assert_eq!(Value::Bool(true).as_u64(), None);
        assert_eq!(Value::String("1".into()).as_i64(), None);
    }

    #[test]
    fn float_conversions() {
        assert_eq!(Value::F64(0.5).as_f32(), Some(0.5));
        assert_eq!(Value::I16(-2).as_f32(), Some(-2.0));
        assert_eq!(Value::U64(u64::MAX).as_f32(), Some(u64::MAX as f32));
        assert_eq!(Value::Bool(true).as_f32(), None);
    }

    #[test]
    fn names_and_descriptions() {
        assert_eq!(Value::U16(1).type_name(), "u16");
        let nested = Value::Array(vec![Value::Array(vec![Value::String("a".into())])]);
        assert_eq!(nested.describe(), "array of array of string");
        assert_eq!(Value::Array(vec![]).describe(), "empty array");
        for id in 0..=12 {
            assert!(min_encoded_size(id).is_some(), "type {id}");
            assert_ne!(id_name(id), "unknown");
        }
        assert_eq!(min_encoded_size(13), None);
    }
}
