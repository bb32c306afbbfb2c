//! Raw GGUF byte builders for hostile files, and the list of hostile cases that both
//! `reader_checks.rs` and the `bad_files/` folder are made from.
#![allow(dead_code)]

/// Appends little-endian GGUF fields to a buffer, with no checks at all.
#[derive(Default, Clone)]
pub struct Raw(pub Vec<u8>);

pub const T_U8: u32 = 0;
pub const T_U32: u32 = 4;
pub const T_BOOL: u32 = 7;
pub const T_STRING: u32 = 8;
pub const T_ARRAY: u32 = 9;
pub const F32_ID: u32 = 0;
pub const Q4_0_ID: u32 = 2;

impl Raw {
    /// Magic, version, tensor count, kv count.
    pub fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        Raw::default()
            .bytes(b"GGUF")
            .u32(version)
            .u64(n_tensors)
            .u64(n_kv)
    }
    pub fn bytes(mut self, b: &[u8]) -> Raw {
        self.0.extend_from_slice(b);
        self
    }
    pub fn u8(self, v: u8) -> Raw {
        self.bytes(&[v])
    }
    pub fn u32(self, v: u32) -> Raw {
        self.bytes(&v.to_le_bytes())
    }
    pub fn u64(self, v: u64) -> Raw {
        self.bytes(&v.to_le_bytes())
    }
    pub fn string(self, s: &str) -> Raw {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    pub fn kv_u32(self, key: &str, v: u32) -> Raw {
        self.string(key).u32(T_U32).u32(v)
    }
    pub fn kv_str(self, key: &str, v: &str) -> Raw {
        self.string(key).u32(T_STRING).string(v)
    }
    /// A tensor info: name, n_dims, dims, type id, offset.
    pub fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Raw {
        let mut r = self.string(name).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(ty).u64(offset)
    }
    /// Zero bytes up to the next multiple of `align`.
    pub fn pad(mut self, align: usize) -> Raw {
        let n = self.0.len().next_multiple_of(align);
        self.0.resize(n, 0);
        self
    }
    pub fn zeros(mut self, n: usize) -> Raw {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    pub fn cut(mut self, n: usize) -> Raw {
        self.0.truncate(self.0.len() - n);
        self
    }
}

/// One hostile file: its name, its bytes, and a phrase its error must contain.
pub struct BadCase {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub phrase: &'static str,
}

fn case(name: &'static str, raw: Raw, phrase: &'static str) -> BadCase {
    BadCase {
        name,
        bytes: raw.0,
        phrase,
    }
}

/// A file with one tensor info `w` (F32, 16 elements = 64 bytes) and its data present.
fn one_tensor(dims: &[u64], ty: u32, offset: u64) -> Raw {
    Raw::header(3, 1, 0)
        .tensor("w", dims, ty, offset)
        .pad(32)
        .zeros(64)
}

pub fn bad_cases() -> Vec<BadCase> {
    let nested = {
        // 65 arrays, each holding one array, around an empty u8 array.
        let mut r = Raw::header(3, 0, 1).string("deep").u32(T_ARRAY);
        for _ in 0..65 {
            r = r.u32(T_ARRAY).u64(1);
        }
        r.u32(T_U8).u64(0)
    };
    vec![
        case("empty", Raw::default(), "the file ends while reading the magic"),
        case("bad_magic", Raw::default().bytes(b"GGML").u32(3).u64(0).u64(0), "not a GGUF file"),
        case("version_1", Raw::header(1, 0, 0), "GGUF version 1 (at byte 4) is not supported"),
        case("version_4", Raw::header(4, 0, 0), "GGUF version 4 (at byte 4) is not supported"),
        case("big_endian", Raw::header(3u32.swap_bytes(), 0, 0), "big-endian"),
        case(
            "truncated_header",
            Raw::header(3, 0, 0).cut(4),
            "the file ends while reading the metadata entry count: 8 bytes needed at byte 16",
        ),
        case(
            "kv_count_too_large",
            Raw::header(3, 0, u64::MAX).kv_u32("a", 1),
            "the metadata entry count at byte 16 is 18446744073709551615",
        ),
        case(
            "truncated_entry",
            Raw::header(3, 0, 1).string("abcdefghij").bytes(&[4, 0]),
            "the file ends while reading the value type of metadata key 'abcdefghij': 4 bytes needed at byte 42",
        ),
        case(
            "key_length_too_large",
            Raw::header(3, 0, 1).u64(1000).bytes(b"abcdefghijklm"),
            "the length of the key of metadata entry 0 at byte 24 is 1000, but the 13 bytes left",
        ),
        case(
            "truncated_value",
            Raw::header(3, 0, 1).string("k").u32(T_U32).bytes(&[1, 2]),
            "the file ends while reading the value of metadata key 'k'",
        ),
        case(
            "string_value_too_long",
            Raw::header(3, 0, 1).string("k").u32(T_STRING).u64(99).bytes(b"short"),
            "the length of the value of metadata key 'k' at byte 37 is 99",
        ),
        case(
            "array_count_too_large",
            Raw::header(3, 0, 1).string("arr").u32(T_ARRAY).u32(T_U32).u64(1 << 40).u32(7),
            "the element count of an array of u32 in metadata key 'arr'",
        ),
        case(
            "truncated_array",
            Raw::header(3, 0, 1).string("arr").u32(T_ARRAY).u32(T_STRING).u64(2).string("abcdefgh").u32(9),
            "the file ends while reading the length of the value of metadata key 'arr'",
        ),
        case("nesting_too_deep", nested, "metadata key 'deep': arrays are nested more than 64 deep"),
        case(
            "unknown_value_type",
            Raw::header(3, 0, 1).string("k").u32(13).u64(0),
            "metadata key 'k': unknown value type 13 at byte 33",
        ),
        case(
            "unknown_array_element_type",
            Raw::header(3, 0, 1).string("k").u32(T_ARRAY).u32(99).u64(0),
            "metadata key 'k': unknown value type 99 at byte 37",
        ),
        case(
            "invalid_utf8_key",
            Raw::header(3, 0, 1).u64(2).bytes(&[0xff, 0xfe]).u32(T_U8).u8(0),
            "the key of metadata entry 0 at byte 32 is not valid UTF-8",
        ),
        case(
            "invalid_bool",
            Raw::header(3, 0, 1).string("b").u32(T_BOOL).u8(2),
            "metadata key 'b': bool at byte 37 is 2, expected 0 or 1",
        ),
        case(
            "duplicate_key",
            Raw::header(3, 0, 2).kv_u32("k", 1).kv_u32("k", 2),
            "metadata key 'k' appears twice (second time at byte 41)",
        ),
        case(
            "alignment_zero",
            Raw::header(3, 0, 1).kv_u32("general.alignment", 0),
            "general.alignment is 0; it must be a power of two",
        ),
        case(
            "alignment_not_power_of_two",
            Raw::header(3, 0, 1).kv_u32("general.alignment", 48),
            "general.alignment is 48; it must be a power of two",
        ),
        case(
            "alignment_too_large",
            Raw::header(3, 0, 1).kv_u32("general.alignment", 1 << 25),
            "general.alignment is 33554432; it must be a power of two between 1 and 16777216",
        ),
        case(
            "alignment_not_integer",
            Raw::header(3, 0, 1).kv_str("general.alignment", "32"),
            "general.alignment is String(\"32\") (a string)",
        ),
        case(
            "tensor_count_too_large",
            Raw::header(3, 1 << 50, 0).zeros(64),
            "the tensor count (checked against the bytes after the metadata) at byte 8 is 1125899906842624",
        ),
        case(
            "truncated_tensor_info",
            Raw::header(3, 1, 0).tensor("a_rather_long_tensor_name.weight", &[16], F32_ID, 0).cut(10),
            "the file ends while reading the type of tensor 'a_rather_long_tensor_name.weight'",
        ),
        case("too_many_dims", one_tensor(&[1, 1, 1, 1, 16], F32_ID, 0), "tensor 'w': has 5 dimensions"),
        case("no_dims", one_tensor(&[], F32_ID, 0).zeros(32), "tensor 'w': has 0 dimensions"),
        case("zero_dim", one_tensor(&[16, 0], F32_ID, 0), "tensor 'w': dimension 1 is 0"),
        case(
            "element_count_overflow",
            one_tensor(&[1 << 32, 1 << 32, 2], F32_ID, 0),
            "tensor 'w': dims [4294967296, 4294967296, 2] of type F32 hold more elements or bytes than fit in 64 bits",
        ),
        case(
            "byte_size_overflow",
            one_tensor(&[1 << 62], F32_ID, 0),
            "hold more elements or bytes than fit in 64 bits",
        ),
        case("unknown_tensor_type", one_tensor(&[16], 4, 0), "tensor 'w': unknown tensor type 4 at byte"),
        case(
            "row_not_block_multiple",
            one_tensor(&[33, 2], Q4_0_ID, 0),
            "tensor 'w': row length 33 is not a multiple of the Q4_0 block size 32",
        ),
        case(
            "misaligned_offset",
            one_tensor(&[16], F32_ID, 4),
            "tensor 'w': data offset 4 is not a multiple of the alignment 32",
        ),
        case(
            "data_past_end",
            one_tensor(&[16], F32_ID, 0).cut(1),
            "tensor 'w': data [64, 128) ends past the end of the file (127 bytes)",
        ),
        case(
            "offset_overflow",
            one_tensor(&[16], F32_ID, u64::MAX - 31),
            "tensor 'w': data [18446744073709551615, 18446744073709551615) ends past the end",
        ),
        case(
            "duplicate_tensor",
            Raw::header(3, 2, 0).tensor("w", &[16], F32_ID, 0).tensor("w", &[16], F32_ID, 64).pad(32).zeros(128),
            "tensor 'w' appears twice (second tensor info at byte 57)",
        ),
        case(
            "overlapping_tensors",
            Raw::header(3, 2, 0).tensor("a", &[16], F32_ID, 0).tensor("b", &[16], F32_ID, 32).pad(32).zeros(128),
            "tensors 'a' (data [0, 64)) and 'b' (data [32, 96)) overlap",
        ),
        case(
            "invalid_utf8_tensor_name",
            Raw::header(3, 1, 0).u64(1).u8(0xc0).u32(1).u64(16).u32(F32_ID).u64(0).pad(32).zeros(64),
            "the name of tensor 0 at byte 32 is not valid UTF-8",
        ),
    ]
}
