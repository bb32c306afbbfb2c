//! Any byte string either fails to open with an error or opens into a file whose tensors
//! each span exactly shape × dtype bytes inside the file, in order, without overlap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tuili_safetensors::SafeTensors;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = SafeTensors::from_bytes(data.to_vec()) else {
        return;
    };
    let mut end = 0;
    let mut sum = 0u64;
    for t in f.tensors() {
        let bytes = f.data(t);
        assert_eq!(bytes.len() as u64, t.n_elements() * t.dtype.size() as u64, "{}", t.name);
        assert!(t.range.start >= end, "{} overlaps the tensor before it", t.name);
        end = t.range.end;
        assert!(f.tensor(&t.name).is_some());
        sum = sum.wrapping_add(bytes.iter().map(|&b| u64::from(b)).sum::<u64>());
    }
    std::hint::black_box((sum, f.metadata().len()));
});
