//! Hostile and malformed safetensors files and sharded indexes: each is a clear error that
//! names the field and the limit, never a panic or an out-of-bounds read.

use std::path::PathBuf;

use tuili_safetensors::{Checkpoint, Dtype, SafeTensors, SafetensorsError, MAX_JSON_DEPTH};

/// A file of `header` (JSON text) and `data` bytes.
fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn open_err(bytes: Vec<u8>) -> String {
    match SafeTensors::from_bytes(bytes) {
        Ok(f) => panic!("opened a bad file: {f:?}"),
        Err(e) => e.to_string(),
    }
}

const GOOD: &str = r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]},"a":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]}}"#;

#[test]
fn a_good_file_opens_with_its_tensors_in_data_order() {
    let data: Vec<u8> = (0..12).collect();
    let f = SafeTensors::from_bytes(file(GOOD, &data)).unwrap();
    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let b = f.tensor("b").unwrap();
    assert_eq!((b.dtype, b.shape.as_slice()), (Dtype::BF16, &[2u64][..]));
    assert_eq!(f.data(b), &[8, 9, 10, 11]);
    assert_eq!(f.metadata()["format"], "pt");
}

#[test]
fn truncated_files() {
    assert!(open_err(vec![1, 2, 3]).contains("fewer than the 8"));
    // The data stops before the last tensor's end.
    let e = open_err(file(GOOD, &[0; 10]));
    assert!(
        e.contains("tensor 'b' data_offsets") && e.contains("10 bytes of data"),
        "{e}"
    );
}

#[test]
fn header_longer_than_the_file() {
    let mut bytes = file(GOOD, &[0; 12]);
    bytes[..8].copy_from_slice(&10_000u64.to_le_bytes());
    let e = open_err(bytes);
    assert!(
        e.contains("header length") && e.contains("10000 bytes"),
        "{e}"
    );
    let mut bytes = file(GOOD, &[0; 12]);
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(open_err(bytes).contains("header length"));
}

#[test]
fn overlapping_offsets() {
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let e = open_err(file(h, &[0; 8]));
    assert!(e.contains("overlap tensor 'a'"), "{e}");
}

#[test]
fn offsets_outside_the_data() {
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[100,108]}}"#;
    let e = open_err(file(h, &[0; 8]));
    assert!(
        e.contains("tensor 'a' data_offsets") && e.contains("[100, 108]"),
        "{e}"
    );
    let h = r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#;
    assert!(open_err(file(h, &[0; 8])).contains("[8, 4]"));
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[-1,8]}}"#;
    assert!(open_err(file(h, &[0; 8])).contains("non-negative"));
}

#[test]
fn shape_that_contradicts_the_span() {
    let h = r#"{"a":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}}"#;
    let e = open_err(file(h, &[0; 8]));
    assert!(
        e.contains("tensor 'a' shape") && e.contains("needs 6 bytes"),
        "{e}"
    );
    // An element count that overflows u64 is an error, not a wrap-around.
    let h = r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#;
    assert!(open_err(file(h, &[])).contains("more than 2^64"));
}

/// U8 tensors (gpt-oss's MXFP4 blocks and scales) are one byte an element: a shape that
/// does not span its data is refused like any other.
#[test]
fn u8_tensors_are_one_byte_per_element() {
    let h = r#"{"blocks":{"dtype":"U8","shape":[2,3],"data_offsets":[0,6]}}"#;
    let data: Vec<u8> = (0..6).collect();
    let f = SafeTensors::from_bytes(file(h, &data)).unwrap();
    let t = f.tensor("blocks").unwrap();
    assert_eq!((t.dtype, t.dtype.size()), (Dtype::U8, 1));
    assert_eq!(f.data(t), &data[..]);
    let h = r#"{"blocks":{"dtype":"U8","shape":[2,3],"data_offsets":[0,8]}}"#;
    let e = open_err(file(h, &[0; 8]));
    assert!(
        e.contains("tensor 'blocks' shape") && e.contains("[2, 3] of U8 needs 6 bytes"),
        "{e}"
    );
}

#[test]
fn unknown_and_unsupported_dtypes() {
    let h = r#"{"a":{"dtype":"I8","shape":[8],"data_offsets":[0,8]}}"#;
    let e = SafeTensors::from_bytes(file(h, &[0; 8])).unwrap_err();
    assert!(matches!(e, SafetensorsError::UnsupportedDtype { .. }));
    assert!(
        e.to_string()
            .contains("dtype I8; supported: F32, F16, BF16, U8"),
        "{e}"
    );
    let h = r#"{"a":{"dtype":"Q4","shape":[8],"data_offsets":[0,8]}}"#;
    assert!(open_err(file(h, &[0; 8])).contains("\"Q4\" is not a safetensors dtype"));
}

#[test]
fn deeply_nested_json_is_an_error() {
    let deep = format!(
        "{{\"__metadata__\":{}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let e = open_err(file(&deep, &[]));
    assert!(
        e.contains(&format!("nested more than {MAX_JSON_DEPTH} deep")),
        "{e}"
    );
}

#[test]
fn header_not_json_or_not_an_object() {
    assert!(open_err(file("[1]", &[])).contains("not a JSON object"));
    assert!(open_err(file("{\"a\":", &[])).contains("not valid JSON"));
    let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"k":1}}"#;
    assert!(open_err(file(h, &[0; 4])).contains("__metadata__.k"));
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tuili-st-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn shard(name: &str, offset: u64) -> Vec<u8> {
    let h = format!(
        r#"{{"{name}":{{"dtype":"F32","shape":[1],"data_offsets":[{offset},{}]}}}}"#,
        offset + 4
    );
    file(&h, &vec![0; offset as usize + 4])
}

#[test]
fn sharded_checkpoints() {
    let dir = temp_dir("shards");
    std::fs::write(dir.join("a.safetensors"), shard("x", 0)).unwrap();
    std::fs::write(dir.join("b.safetensors"), shard("y", 4)).unwrap();
    let index = |map: &str| {
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            format!(r#"{{"metadata":{{}},"weight_map":{{{map}}}}}"#),
        )
        .unwrap();
        Checkpoint::open_dir(&dir)
    };
    let c = index(r#""x":"a.safetensors","y":"b.safetensors""#).unwrap();
    assert_eq!(c.names().collect::<Vec<_>>(), ["x", "y"]);
    assert_eq!(c.tensor("y").unwrap().shape, [1]);
    assert_eq!(c.files().len(), 2);

    let e = index(r#""x":"b.safetensors","y":"b.safetensors""#)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("maps tensor 'x' to") && e.contains("does not hold it"),
        "{e}"
    );
    // A shard holding a tensor that the map puts nowhere (or elsewhere).
    let two = r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"z":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    std::fs::write(dir.join("a.safetensors"), file(two, &[0; 8])).unwrap();
    let e = index(r#""x":"a.safetensors","y":"b.safetensors""#)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("holds tensor 'z', which the weight map does not map"),
        "{e}"
    );
    let e = index(r#""x":"../a.safetensors""#).unwrap_err().to_string();
    assert!(
        e.contains("not a .safetensors file in the same directory"),
        "{e}"
    );
    let e = index(r#""x":"c.safetensors""#).unwrap_err().to_string();
    assert!(e.contains("c.safetensors"), "{e}");
    std::fs::write(dir.join("model.safetensors.index.json"), "{\"weights\":{}}").unwrap();
    assert!(Checkpoint::open_dir(&dir)
        .unwrap_err()
        .to_string()
        .contains("weight_map"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_directory_without_weights() {
    let dir = temp_dir("empty");
    let e = Checkpoint::open_dir(&dir).unwrap_err().to_string();
    assert!(e.contains("neither model.safetensors nor"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
