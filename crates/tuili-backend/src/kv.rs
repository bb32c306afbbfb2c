//! The element types of a KV cache, with llama.cpp's names (`--cache-type-k`,
//! `--cache-type-v`): how a K or V row is stored, converted on write and decoded on read.
//!
//! A cache addresses its rows by *element* offset, as if it held f32; [`KvType::bytes`]
//! turns an element offset into a byte offset. For `q8_0` (ggml's block of 32 values: an
//! f16 scale `d` and 32 i8 codes `q`, value `d * q`) every row, and every head's slice of a
//! row, must start on a block, so the head size must be a multiple of 32.
//!
//! Attention reads a stored row as the f32 values it decodes to (f16 and bf16 widen
//! exactly; a `q8_0` value `d * q` is exact in f32 too, `d` having 11 significant bits
//! and `q` 8), so the specification of attention over any type is attention over the
//! decoded rows, and every kernel table gives its bits (`kernels::Kernels::scores_kv`).

use std::fmt;
use std::str::FromStr;

use crate::quant::{bf16_to_f32, f16_to_f32};

/// Elements per `q8_0` block.
pub const Q8_0_BLOCK: usize = 32;
/// Bytes per `q8_0` block: the f16 scale, then 32 codes.
pub const Q8_0_BYTES: usize = 34;

/// How a KV cache stores its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvType {
    /// 4 bytes a value.
    F32,
    /// IEEE half precision, 2 bytes a value (rounded to nearest even on write).
    F16,
    /// bfloat16 (the top half of an f32), 2 bytes a value.
    BF16,
    /// Blocks of 32 values as an f16 scale and 32 i8 codes: 34 bytes per 32 values.
    Q8_0,
}

impl KvType {
    /// Every type, in the order of their size, largest first.
    pub const ALL: [KvType; 4] = [KvType::F32, KvType::F16, KvType::BF16, KvType::Q8_0];

    /// llama.cpp's name: `f32`, `f16`, `bf16` or `q8_0`.
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::BF16 => "bf16",
            KvType::Q8_0 => "q8_0",
        }
    }

    /// Bytes of `n` values (for `q8_0`, `n` rounded up to whole blocks).
    pub fn bytes(self, n: usize) -> usize {
        match self {
            KvType::F32 => 4 * n,
            KvType::F16 | KvType::BF16 => 2 * n,
            KvType::Q8_0 => n.div_ceil(Q8_0_BLOCK) * Q8_0_BYTES,
        }
    }

    /// Values that must share a row start: 1, or 32 for `q8_0`.
    pub fn block(self) -> usize {
        if self == KvType::Q8_0 {
            Q8_0_BLOCK
        } else {
            1
        }
    }

    /// Why heads of `head_dim` values cannot be stored in this type, if they cannot.
    pub fn check_head_dim(self, head_dim: usize) -> Result<(), String> {
        if head_dim.is_multiple_of(self.block()) {
            Ok(())
        } else {
            Err(format!(
                "KV cache type {self} stores blocks of {} values, but the model's heads have {head_dim}",
                self.block()
            ))
        }
    }

    /// Stores `x` into `out` (`bytes(x.len())` bytes). f16 and bf16 round to nearest
    /// even; `q8_0` is ggml's reference quantizer (`x.len()` a multiple of 32).
    ///
    /// # Panics
    /// If the lengths disagree (shapes come from the model, not from input data).
    pub fn encode(self, x: &[f32], out: &mut [u8]) {
        assert_eq!(out.len(), self.bytes(x.len()), "KvType::encode: lengths");
        match self {
            KvType::F32 => {
                for (o, v) in out.chunks_exact_mut(4).zip(x) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            KvType::F16 | KvType::BF16 => {
                let conv = if self == KvType::F16 {
                    crate::quant::f32_to_f16
                } else {
                    crate::quant::f32_to_bf16
                };
                for (o, &v) in out.chunks_exact_mut(2).zip(x) {
                    o.copy_from_slice(&conv(v).to_le_bytes());
                }
            }
            KvType::Q8_0 => {
                assert!(x.len().is_multiple_of(Q8_0_BLOCK), "KvType::encode: blocks");
                crate::quant::legacy::quantize_q8_0(x, out)
            }
        }
    }

    /// The values stored in `b` (`bytes(out.len())` bytes), exactly as attention reads them:
    /// the scalar specification of every kernel's in-register decoding.
    ///
    /// # Panics
    /// As [`KvType::encode`].
    pub fn decode(self, b: &[u8], out: &mut [f32]) {
        assert_eq!(b.len(), self.bytes(out.len()), "KvType::decode: lengths");
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.at(b, i);
        }
    }

    /// Value `e` of the values stored from the start of `b`.
    #[inline(always)]
    pub fn at(self, b: &[u8], e: usize) -> f32 {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        match self {
            KvType::F32 => f32::from_le_bytes([b[4 * e], b[4 * e + 1], b[4 * e + 2], b[4 * e + 3]]),
            KvType::F16 => f16_to_f32(u16_at(2 * e)),
            KvType::BF16 => bf16_to_f32(u16_at(2 * e)),
            KvType::Q8_0 => {
                let blk = e / Q8_0_BLOCK * Q8_0_BYTES;
                f16_to_f32(u16_at(blk)) * (b[blk + 2 + e % Q8_0_BLOCK] as i8) as f32
            }
        }
    }
}

impl fmt::Display for KvType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KvType {
    type Err = String;

    fn from_str(s: &str) -> Result<KvType, String> {
        KvType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                format!("unknown KV cache type `{s}` (choose from f32, f16, bf16, q8_0)")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for t in KvType::ALL {
            assert_eq!(t.name().parse::<KvType>(), Ok(t));
        }
        let e = "q4_0".parse::<KvType>().unwrap_err();
        assert!(e.contains("q4_0") && e.contains("q8_0"), "{e}");
    }

    #[test]
    fn sizes_follow_the_block_layouts() {
        assert_eq!(KvType::F32.bytes(64), 256);
        assert_eq!(KvType::F16.bytes(64), 128);
        assert_eq!(KvType::BF16.bytes(64), 128);
        assert_eq!(KvType::Q8_0.bytes(64), 68);
        assert!(KvType::Q8_0.check_head_dim(64).is_ok());
        assert!(KvType::Q8_0.check_head_dim(48).is_err());
        assert!(KvType::F16.check_head_dim(48).is_ok());
    }

    #[test]
    fn round_trip_error_is_within_each_types_bound() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 64) as f32 - 31.5) / 7.0)
            .collect();
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        for (t, rel) in [
            (KvType::F32, 0.0),
            (KvType::F16, 1.0 / 2048.0),
            (KvType::BF16, 1.0 / 256.0),
            (KvType::Q8_0, 0.0),
        ] {
            let mut b = vec![0u8; t.bytes(x.len())];
            t.encode(&x, &mut b);
            let mut y = vec![0f32; x.len()];
            t.decode(&b, &mut y);
            for (a, b) in x.iter().zip(&y) {
                let bound = if t == KvType::Q8_0 {
                    amax / 127.0 / 2.0 * 1.01
                } else {
                    a.abs() * rel
                };
                assert!((a - b).abs() <= bound, "{t}: {a} -> {b}");
            }
        }
    }
}
