//! Any byte string either fails to open with an error or opens into a file whose every
//! accessor works; a file that opens also survives a write/read round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tuili_gguf::{GgufFile, GgufWriter};

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };

    // Touch everything a loader would.
    let mut sum = 0u64;
    for (key, value) in f.metadata() {
        assert!(f.get(key).is_some());
        sum = sum.wrapping_add(value.describe().len() as u64);
        let _ = (
            f.get_u64(key),
            f.get_f32(key),
            f.get_str(key),
            f.get_bool(key),
        );
        let _ = (
            f.get_str_array(key),
            f.get_f32_array(key),
            f.get_i32_array(key),
        );
    }
    for t in f.tensors() {
        let bytes = f.tensor_data(t);
        assert_eq!(bytes.len() as u64, t.n_bytes, "{}", t.name);
        assert_eq!(Some(t.n_bytes), t.ty.bytes_for(t.n_elements()));
        assert!(f.tensor(&t.name).is_some());
        sum = sum.wrapping_add(bytes.iter().map(|&b| u64::from(b)).sum::<u64>());
    }
    std::hint::black_box(sum);

    // Rewrite what was read; the writer must accept it and the reader must get it back.
    let mut w = GgufWriter::new();
    for (key, value) in f.metadata() {
        w.add(key.as_str(), value.clone())
            .expect("writer accepts what the reader accepted");
    }
    for t in f.tensors() {
        w.add_tensor(t.name.as_str(), &t.dims, t.ty, f.tensor_data(t).to_vec())
            .expect("writer accepts every tensor the reader accepted");
    }
    let g = GgufFile::from_bytes(w.to_bytes()).expect("the rewritten file opens");
    // Debug formatting compares NaN payload-insensitively but otherwise exactly.
    assert_eq!(format!("{:?}", f.metadata()), format!("{:?}", g.metadata()));
    assert_eq!(f.tensors().len(), g.tensors().len());
    for (a, b) in f.tensors().iter().zip(g.tensors()) {
        assert_eq!((&a.name, &a.dims, a.ty), (&b.name, &b.dims, b.ty));
        assert_eq!(f.tensor_data(a), g.tensor_data(b));
    }
});
