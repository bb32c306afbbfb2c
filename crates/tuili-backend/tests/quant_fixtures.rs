//! Bit-exactness against an independent implementation: the fixtures in
//! `tests/data/quant/` hold random blocks with what the Python `gguf` package
//! (`gguf.quants`, numpy) dequantizes them to, and, for the types it can quantize,
//! f32 input with the bytes it quantizes that to. Regenerate them with
//! `scripts/gen-quant-fixtures.py`; the file format is described there.

use std::path::PathBuf;

use tuili_backend::quant::{dequant_fn, dequantize, dot_fn, quantize};
use tuili_gguf::GgmlType;

const TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// One fixture file, parsed.
struct Fixture {
    /// Random blocks and their dequantized values: `[n]`.
    blocks: Vec<u8>,
    expect: Vec<f32>,
    /// Quantizer input `[m]` and its expected bytes (both empty where gguf has no quantizer).
    input: Vec<f32>,
    quantized: Vec<u8>,
}

/// A little-endian reader over the fixture bytes that fails with the file's name.
struct Reader<'a> {
    name: String,
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.unwrap_or_else(|| panic!("{}: truncated at byte {}", self.name, self.at));
        let s = &self.bytes[self.at..end];
        self.at = end;
        s
    }

    fn u32(&mut self) -> u32 {
        let b = self.take(4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn f32s(&mut self, n: usize) -> Vec<f32> {
        let b = self.take(n * 4);
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

fn load(ty: GgmlType) -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/quant")
        .join(format!("{}.bin", ty.name()));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = path.display().to_string();
    let mut r = Reader {
        name: name.clone(),
        bytes: &bytes,
        at: 0,
    };
    assert_eq!(r.take(4), b"TQFX", "{name}: bad magic");
    assert_eq!(r.u32(), 1, "{name}: version");
    assert_eq!(r.u32(), ty.id(), "{name}: type id");
    let n = r.u32() as usize;
    let nbytes = r.u32() as usize;
    let blocks = r.take(nbytes).to_vec();
    let expect = r.f32s(n);
    let m = r.u32() as usize;
    let input = r.f32s(m);
    let mbytes = r.u32() as usize;
    let quantized = r.take(mbytes).to_vec();
    assert_eq!(r.at, bytes.len(), "{name}: trailing bytes");
    Fixture {
        blocks,
        expect,
        input,
        quantized,
    }
}

/// Index and both values of the first element whose bits differ.
fn first_difference(got: &[f32], want: &[f32]) -> Option<(usize, f32, f32)> {
    got.iter()
        .zip(want)
        .enumerate()
        .find(|(_, (g, w))| g.to_bits() != w.to_bits())
        .map(|(i, (g, w))| (i, *g, *w))
}

#[test]
fn dequantize_matches_gguf_py_bit_for_bit() {
    for ty in TYPES {
        let f = load(ty);
        assert!(f.expect.len() >= 1024, "{ty}: fixture too small");
        let got =
            dequantize(ty, &f.blocks, f.expect.len()).expect("fixture sizes are whole blocks");
        assert_eq!(got.len(), f.expect.len());
        if let Some((i, g, w)) = first_difference(&got, &f.expect) {
            panic!(
                "{ty}: element {i} is {g:e} ({:#010x}), gguf-py says {w:e} ({:#010x})",
                g.to_bits(),
                w.to_bits()
            );
        }
        // The raw kernel, as the matmul calls it, agrees too.
        let mut out = vec![f32::NAN; f.expect.len()];
        (dequant_fn(ty).expect("supported"))(&f.blocks, &mut out);
        assert_eq!(first_difference(&out, &f.expect), None, "{ty}: dequant_fn");
    }
}

#[test]
fn dot_of_fixture_blocks_matches_f64_dot_of_gguf_py_values() {
    // The float fixtures are random bit patterns up to ±inf, whose dot overflows; the
    // block types have f16 scales, so their values stay in range.
    for ty in TYPES.into_iter().filter(|t| t.is_quantized()) {
        let f = load(ty);
        let x: Vec<f32> = (0..f.expect.len())
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let want: f64 = f
            .expect
            .iter()
            .zip(&x)
            .map(|(w, x)| *w as f64 * *x as f64)
            .sum();
        let scale: f64 = f
            .expect
            .iter()
            .zip(&x)
            .map(|(w, x)| (*w as f64 * *x as f64).abs())
            .sum();
        let got = (dot_fn(ty).expect("supported"))(&f.blocks, &x) as f64;
        assert!(
            (got - want).abs() <= 1e-6 * scale,
            "{ty}: dot {got} vs {want} (sum |w x| = {scale})"
        );
    }
}

#[test]
fn quantize_matches_gguf_py_bit_for_bit() {
    let mut checked = 0;
    for ty in TYPES {
        let f = load(ty);
        if f.input.is_empty() {
            continue; // gguf has no quantizer for the K-quants
        }
        let got = quantize(ty, &f.input).expect("fixture input is finite whole blocks");
        assert_eq!(got.len(), f.quantized.len(), "{ty}: byte count");
        if let Some(i) = got.iter().zip(&f.quantized).position(|(a, b)| a != b) {
            let block = i / ty.type_size();
            panic!(
                "{ty}: byte {i} (block {block}) is {:#04x}, gguf-py says {:#04x}",
                got[i], f.quantized[i]
            );
        }
        checked += 1;
    }
    assert_eq!(
        checked, 8,
        "every float and legacy type has a quantize case"
    );
}

/// Input for the K-quant quantizer check: 16 super-blocks made with integer arithmetic
/// only (xorshift, sums of uniforms as a rough Gaussian, power-of-two scales), so every
/// value is exact on every platform. The first blocks are the cases ggml treats
/// specially: zeros, a constant, a single spike, all positive, all negative.
fn kquant_input() -> Vec<f32> {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut x = Vec::with_capacity(16 * 256);
    for b in 0..16 {
        let e = b * 7 % 23 - 16; // scales 2^-16 .. 2^6
        let unit = f32::from_bits(((127 + e - 12) as u32) << 23);
        for i in 0..256 {
            // Sum of four uniforms in [-2^11, 2^11): an integer below 2^13, exact in f32.
            let r: i32 = (0..4).map(|_| ((next() >> 40) % 4096) as i32 - 2048).sum();
            let v = r as f32 * unit;
            x.push(match b {
                0 => 0.0,
                1 => 0.7,
                2 if i == 5 => -3.0,
                2 => 0.0,
                3 => v.abs(),
                4 => -v.abs(),
                _ => v,
            });
        }
    }
    x
}

/// The K-quant quantizers against ggml itself: `kquants-ggml.bin` holds, one type after
/// the other (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K), the bytes that ggml's
/// `quantize_row_q*_K_ref` (ggml-quants.c) wrote for `kquant_input()`, built for plain
/// x86-64 with `-ffp-contract=off`: first at llama.cpp commit 01243c5, and again, to the
/// same bytes, at commit 0c1e57098 (the copy inside the llama-cpp-python 0.3.36 sdist) by
/// `scripts/kquants-ggml/regenerate.sh`, which holds the C harness. (With gcc 12 the bytes
/// stay the same under `-march=native -ffp-contract=fast`; `-ffast-math` changes them.)
/// gguf-py has no K-quant quantizers, so this pins them instead.
#[test]
fn kquant_quantizers_match_ggml_reference_bytes() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/quant/kquants-ggml.bin");
    let want = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let x = kquant_input();
    let mut at = 0;
    for ty in [
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        let got = quantize(ty, &x).expect("finite whole blocks");
        let want = &want[at..at + got.len()];
        at += got.len();
        if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
            panic!(
                "{ty}: byte {i} (super-block {}) is {:#04x}, ggml wrote {:#04x}",
                i / ty.type_size(),
                got[i],
                want[i]
            );
        }
    }
    assert_eq!(at, want.len(), "{}: trailing bytes", path.display());
}
