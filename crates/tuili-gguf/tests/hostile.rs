//! Damaged copies of a valid file: every truncation must be an error, and random byte
//! flips must never panic.

use tuili_gguf::{GgmlType, GgufFile, GgufWriter, Value};

/// A valid file whose last tensor ends exactly at the end of the file (no trailing
/// padding), so that every shorter prefix is invalid.
fn valid_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("llama".into()))
        .expect("arch");
    w.add("llama.block_count", Value::U32(2)).expect("u32");
    w.add("f", Value::F32(1e-5)).expect("f32");
    w.add("b", Value::Bool(true)).expect("bool");
    w.add(
        "toks",
        Value::Array(vec![Value::String("a".into()), Value::String("bc".into())]),
    )
    .expect("strings");
    w.add(
        "nested",
        Value::Array(vec![Value::Array(vec![Value::I64(-1)])]),
    )
    .expect("nested");
    w.add_tensor("a", &[3], GgmlType::F32, vec![1; 12])
        .expect("a");
    w.add_tensor("b", &[32, 2], GgmlType::Q4_0, vec![2; 36])
        .expect("b");
    w.add_tensor("c", &[8, 2], GgmlType::F16, vec![3; 32])
        .expect("c");
    w.to_bytes()
}

/// Reads everything a user of the file could read.
fn touch(f: &GgufFile) -> u64 {
    let mut sum = 0u64;
    for (k, v) in f.metadata() {
        sum += k.len() as u64 + v.describe().len() as u64;
    }
    for t in f.tensors() {
        let data = f.tensor_data(t);
        assert_eq!(data.len() as u64, t.n_bytes, "{}", t.name);
        sum += data.iter().map(|&b| u64::from(b)).sum::<u64>();
    }
    sum
}

#[test]
fn every_truncation_is_an_error() {
    let full = valid_file();
    let f = GgufFile::from_bytes(full.clone()).expect("the full file is valid");
    assert_eq!(f.tensors().len(), 3);
    for len in 0..full.len() {
        if let Ok(f) = GgufFile::from_bytes(full[..len].to_vec()) {
            panic!("prefix of {len} of {} bytes opened: {f:?}", full.len());
        }
    }
}

/// xorshift64*: a fixed, dependency-free random sequence.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let full = valid_file();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..20_000 {
        let mut bytes = full.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(bytes.len());
            // Half the time a random byte, half the time a value likely to be a limit.
            bytes[i] = if rng.next() & 1 == 0 {
                rng.next() as u8
            } else {
                [0, 1, 0x7f, 0x80, 0xff][rng.below(5)]
            };
        }
        match GgufFile::from_bytes(bytes) {
            Ok(f) => {
                touch(&f);
                ok += 1;
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                err += 1;
            }
        }
    }
    // Flips in tensor data keep the file valid; flips in the header mostly do not.
    assert!(ok > 1000 && err > 1000, "ok {ok}, err {err}");
}
