//! Writer → reader round trips, and the writer's own checks.

use tuili_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Value, MAX_ARRAY_DEPTH, UNBOXED_FROM};

fn every_scalar() -> Vec<(&'static str, Value)> {
    vec![
        ("u8", Value::U8(250)),
        ("i8", Value::I8(-100)),
        ("u16", Value::U16(65_000)),
        ("i16", Value::I16(-30_000)),
        ("u32", Value::U32(4_000_000_000)),
        ("i32", Value::I32(-2_000_000_000)),
        ("u64", Value::U64(u64::MAX - 1)),
        ("i64", Value::I64(i64::MIN + 1)),
        ("f32", Value::F32(-1.5e-7)),
        ("f64", Value::F64(std::f64::consts::PI)),
        ("bool.t", Value::Bool(true)),
        ("bool.f", Value::Bool(false)),
        ("str", Value::String("héllo ▁wörld \u{1F600}".into())),
        ("str.empty", Value::String(String::new())),
    ]
}

/// Deterministic bytes so that every tensor's data is distinct.
fn pattern(n: u64, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn metadata_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    for (k, v) in every_scalar() {
        w.add(k, v.clone()).expect("scalar");
        w.add(format!("arr.{k}"), Value::Array(vec![v.clone(), v]))
            .expect("array");
    }
    w.add("arr.empty", Value::Array(vec![]))
        .expect("empty array");
    let nested = Value::Array(vec![
        Value::Array(vec![Value::U8(1), Value::U8(2)]),
        Value::Array(vec![]),
        Value::Array(vec![Value::String("x".into())]),
    ]);
    w.add("arr.nested", nested).expect("nested array");
    w
}

#[test]
fn every_value_type_round_trips_in_order() {
    let w = metadata_writer();
    let f = GgufFile::from_bytes(w.to_bytes()).expect("reads back");
    assert_eq!(f.version(), 3);
    let keys: Vec<&str> = f.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.len(), 2 * every_scalar().len() + 2);
    assert_eq!(&keys[..3], &["u8", "arr.u8", "i8"]);
    for (k, v) in every_scalar() {
        assert_eq!(f.get(k), Some(&v), "{k}");
        assert_eq!(
            f.get(&format!("arr.{k}")),
            Some(&Value::Array(vec![v.clone(), v])),
            "arr.{k}"
        );
    }
    assert_eq!(f.get("arr.empty"), Some(&Value::Array(vec![])));
    let nested = f
        .get("arr.nested")
        .and_then(Value::as_array)
        .expect("nested");
    assert_eq!(nested.len(), 3);
    assert_eq!(nested[0], Value::Array(vec![Value::U8(1), Value::U8(2)]));
    assert_eq!(nested[2].describe(), "array of string");
}

#[test]
fn typed_getters_convert_and_explain_mismatches() {
    let f = GgufFile::from_bytes(metadata_writer().to_bytes()).expect("reads back");
    assert_eq!(f.get_u64("u16").expect("u16"), 65_000);
    assert_eq!(f.get_f32("f64").expect("f64"), std::f32::consts::PI);
    assert_eq!(f.get_f32("i8").expect("int as f32"), -100.0);
    assert!(f.get_bool("bool.t").expect("bool"));
    assert_eq!(f.get_str("str.empty").expect("str"), "");
    assert_eq!(f.get_str_array("arr.str").expect("strs").len(), 2);
    assert_eq!(f.get_f32_array("arr.f32").expect("f32s"), vec![-1.5e-7; 2]);
    assert_eq!(
        f.get_i32_array("arr.i16").expect("i16 fit i32"),
        vec![-30_000; 2]
    );
    assert_eq!(
        f.get_i32_array("arr.empty").expect("empty"),
        Vec::<i32>::new()
    );

    let msg = f.get_u64("i8").expect_err("negative").to_string();
    assert_eq!(
        msg,
        "metadata key 'i8' is i8, expected a non-negative integer"
    );
    let msg = f.get_str("nope").expect_err("missing").to_string();
    assert_eq!(msg, "metadata key 'nope' is missing");
    let msg = f
        .get_str_array("arr.u32")
        .expect_err("wrong elements")
        .to_string();
    assert_eq!(
        msg,
        "metadata key 'arr.u32' is array of u32, expected an array of strings"
    );
    let msg = f
        .get_i32_array("arr.u32")
        .expect_err("too big for i32")
        .to_string();
    assert!(
        msg.contains("expected an array of integers that fit in i32"),
        "{msg}"
    );
    assert!(f.get_bool("u8").is_err());
    assert!(f.get_f32("str").is_err());
}

#[test]
fn every_tensor_type_round_trips() {
    for alignment in [1u64, 8, 32, 64, 4096] {
        let mut w = GgufWriter::new()
            .with_alignment(alignment)
            .expect("alignment");
        w.add("general.architecture", Value::String("test".into()))
            .expect("arch");
        let mut expected = Vec::new();
        for (i, ty) in GgmlType::ALL.into_iter().enumerate() {
            // Two rows of one block, then a 3-d and a 4-d shape, with odd element counts
            // for float types so that padding is exercised.
            let bs = ty.block_size() as u64;
            let row = if ty.is_quantized() { 2 * bs } else { 3 };
            let dims: Vec<u64> = match i % 3 {
                0 => vec![row, 2],
                1 => vec![row, 1, 3],
                _ => vec![row, 2, 1, 1],
            };
            let n: u64 = dims.iter().product();
            let data = pattern(ty.bytes_for(n).expect("size"), i as u8);
            let name = format!("t.{}", ty.name());
            w.add_tensor(name.as_str(), &dims, ty, data.clone())
                .expect("tensor");
            expected.push((name, dims, ty, data));
        }
        let bytes = w.to_bytes();
        let mut streamed = Vec::new();
        w.write_to(&mut streamed).expect("write to vec");
        assert_eq!(bytes, streamed, "write_to and to_bytes agree");
        assert_eq!(bytes.len() as u64 % alignment, 0);

        let f = GgufFile::from_bytes(bytes).expect("reads back");
        assert_eq!(f.alignment(), alignment);
        assert_eq!(f.data_offset() % alignment, 0);
        assert_eq!(f.tensors().len(), expected.len());
        for ((name, dims, ty, data), t) in expected.iter().zip(f.tensors()) {
            assert_eq!((&t.name, &t.dims, t.ty), (name, dims, *ty));
            assert_eq!(t.offset % alignment, 0, "{name}");
            assert_eq!(
                f.tensor_data(t),
                &data[..],
                "{name} at alignment {alignment}"
            );
        }
    }
}

#[test]
fn write_file_then_open_maps_the_same_file() {
    let mut w = GgufWriter::new();
    w.add("general.name", Value::String("tiny".into()))
        .expect("name");
    w.add_tensor("w", &[4, 2], GgmlType::F32, pattern(32, 9))
        .expect("tensor");
    let path = std::env::temp_dir().join(format!("tuili-gguf-rt-{}.gguf", std::process::id()));
    w.write_file(&path).expect("write");
    let opened = GgufFile::open(&path);
    let _ = std::fs::remove_file(&path);
    let f = opened.expect("open");
    assert_eq!(f.data(), &w.to_bytes()[..]);
    assert_eq!(f.get_str("general.name").expect("name"), "tiny");
    let t = f.tensor("w").expect("w");
    assert_eq!(f.tensor_data(t), &pattern(32, 9)[..]);
}

#[test]
fn a_copy_writes_the_same_file_and_takes_changes() {
    let mut w = metadata_writer();
    w.add_tensor("t", &[4, 2], GgmlType::F32, pattern(32, 7))
        .unwrap();
    let bytes = w.to_bytes();
    let file = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(GgufWriter::copy_of(&file).unwrap().to_bytes(), bytes);
    let mut changed = GgufWriter::copy_of(&file).unwrap();
    changed.add("u8", Value::U8(1)).unwrap();
    let copy = GgufFile::from_bytes(changed.to_bytes()).unwrap();
    assert_eq!(copy.get("u8"), Some(&Value::U8(1)));
    assert_eq!(copy.metadata().len(), file.metadata().len());
    let t = copy.tensor("t").unwrap();
    assert_eq!(
        copy.tensor_data(t),
        file.tensor_data(file.tensor("t").unwrap())
    );
}

#[test]
fn add_replaces_a_key_in_place() {
    let mut w = GgufWriter::new();
    w.add("a", Value::U32(1)).expect("a");
    w.add("b", Value::U32(2)).expect("b");
    w.add("a", Value::String("again".into())).expect("a again");
    let f = GgufFile::from_bytes(w.to_bytes()).expect("reads back");
    assert_eq!(f.metadata().len(), 2);
    assert_eq!(
        f.metadata()[0],
        ("a".to_string(), Value::String("again".into()))
    );
}

#[test]
fn alignment_key_and_with_alignment_agree() {
    let mut w = GgufWriter::new();
    w.add("general.alignment", Value::U64(128))
        .expect("alignment as u64");
    assert_eq!(w.alignment(), 128);
    w.add_tensor("w", &[3], GgmlType::F32, pattern(12, 0))
        .expect("tensor");
    let f = GgufFile::from_bytes(w.to_bytes()).expect("reads back");
    assert_eq!((f.alignment(), f.data_offset() % 128), (128, 0));
}

#[test]
fn writer_rejects_bad_input_with_clear_errors() {
    let mut w = GgufWriter::new();
    let err = w
        .add_tensor("q", &[32, 2], GgmlType::Q8_0, vec![0; 67])
        .expect_err("short data");
    assert_eq!(
        err.to_string(),
        "tensor 'q': 67 bytes of data given, but dims [32, 2] of type Q8_0 need 68"
    );
    let err = w
        .add_tensor("q", &[33], GgmlType::Q8_0, vec![])
        .expect_err("row");
    assert!(
        matches!(err, GgufError::RowNotBlockMultiple { row_len: 33, .. }),
        "{err}"
    );
    let err = w
        .add_tensor("q", &[1, 1, 1, 1, 1], GgmlType::F32, vec![0; 4])
        .expect_err("dims");
    assert!(err.to_string().contains("has 5 dimensions"), "{err}");
    let err = w
        .add_tensor("q", &[0], GgmlType::F32, vec![])
        .expect_err("zero dim");
    assert!(err.to_string().contains("dimension 0 is 0"), "{err}");
    w.add_tensor("q", &[1], GgmlType::F32, vec![0; 4])
        .expect("ok");
    let err = w
        .add_tensor("q", &[1], GgmlType::F32, vec![0; 4])
        .expect_err("duplicate");
    assert!(
        err.to_string().contains("tensor 'q' appears twice"),
        "{err}"
    );

    let err = w
        .add("m", Value::Array(vec![Value::U8(1), Value::I8(1)]))
        .expect_err("mixed");
    assert_eq!(
        err.to_string(),
        "metadata key 'm': array element 1 is i8 but element 0 is u8; GGUF arrays hold one type"
    );
    let mut deep = Value::Array(vec![]);
    for _ in 0..MAX_ARRAY_DEPTH {
        deep = Value::Array(vec![deep]);
    }
    let err = w.add("deep", deep).expect_err("too deep");
    assert!(
        err.to_string().contains("nested more than 64 deep"),
        "{err}"
    );
    for bad in [0u64, 48, 1 << 25, 1 << 32] {
        let err = GgufWriter::new()
            .with_alignment(bad)
            .expect_err("bad alignment");
        assert!(
            err.to_string()
                .contains(&format!("general.alignment is {bad}")),
            "{err}"
        );
    }
    let err = w
        .add("general.alignment", Value::F32(32.0))
        .expect_err("float alignment");
    assert!(
        err.to_string()
            .contains("general.alignment is F32(32.0) (a f32)"),
        "{err}"
    );
    // Nothing invalid was kept: the file still reads back.
    assert_eq!(
        GgufFile::from_bytes(w.to_bytes())
            .expect("valid")
            .metadata()
            .len(),
        0
    );
}

/// A vocabulary's arrays (longer than `UNBOXED_FROM`) are read unboxed: the same values,
/// the same accessors' answers, the same bytes when written again; short arrays stay boxed.
#[test]
fn long_arrays_are_read_unboxed_and_say_the_same() {
    let n = UNBOXED_FROM + 7;
    let tokens: Vec<String> = (0..n).map(|i| format!("tok{i}▁é")).collect();
    let scores: Vec<f32> = (0..n).map(|i| -(i as f32) / 3.0).collect();
    let types: Vec<i32> = (0..n).map(|i| (i % 6) as i32 - 1).collect();
    let boxed = [
        Value::Array(tokens.iter().cloned().map(Value::String).collect()),
        Value::Array(scores.iter().copied().map(Value::F32).collect()),
        Value::Array(types.iter().copied().map(Value::I32).collect()),
    ];
    let mut w = GgufWriter::new();
    for (k, v) in ["t", "s", "y"].iter().zip(&boxed) {
        w.add(*k, v.clone()).unwrap();
    }
    w.add("short", Value::Array(vec![Value::I32(3), Value::I32(4)]))
        .unwrap();
    let bytes = w.to_bytes();
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert!(matches!(f.get("t"), Some(Value::StrArray(_))));
    assert!(matches!(f.get("s"), Some(Value::F32Array(_))));
    assert!(matches!(f.get("y"), Some(Value::I32Array(_))));
    assert!(matches!(f.get("short"), Some(Value::Array(_))));
    for (k, v) in ["t", "s", "y"].iter().zip(&boxed) {
        assert_eq!(f.get(k), Some(v), "{k}");
        assert_eq!(f.get(k).unwrap().describe(), v.describe(), "{k}");
        assert_eq!(f.get(k).unwrap().array_len(), Some(n), "{k}");
    }
    assert_eq!(
        f.get_str_array("t").unwrap(),
        tokens.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(f.get_f32_array("s").unwrap(), scores);
    assert_eq!(f.get_i32_array("y").unwrap(), types);
    assert_eq!(f.get_f32_array("y").unwrap()[7], types[7] as f32);
    assert_eq!(
        f.get("t").unwrap().str_at(n - 1),
        Some(tokens[n - 1].as_str())
    );
    assert_eq!(f.get("t").unwrap().str_at(n), None);
    assert!(f.get_i32_array("s").is_err() && f.get_str_array("s").is_err());
    // Written again from the unboxed values: the same bytes.
    let mut again = GgufWriter::new();
    for (k, v) in f.metadata() {
        again.add(k.clone(), v.clone()).unwrap();
    }
    assert_eq!(again.to_bytes(), bytes);
}
