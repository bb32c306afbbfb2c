//! One test per check the reader makes at open: each hostile file must give an error
//! whose message names what is wrong.

mod common;

use common::{bad_cases, Raw, F32_ID, T_ARRAY, T_U8};
use tuili_gguf::{GgmlType, GgufError, GgufFile};

fn error_of(bytes: Vec<u8>) -> GgufError {
    match GgufFile::from_bytes(bytes) {
        Ok(f) => panic!("expected an error, got a file: {f:?}"),
        Err(e) => e,
    }
}

fn check(name: &str) {
    let all = bad_cases();
    let case = all
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name}"));
    let msg = error_of(case.bytes.clone()).to_string();
    assert!(
        msg.contains(case.phrase),
        "case {name}: error {msg:?} does not contain {:?}",
        case.phrase
    );
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $( #[test] fn $name() { check(stringify!($name)); } )*

        #[test]
        fn every_case_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for c in bad_cases() {
                assert!(tested.contains(&c.name), "case {} has no test", c.name);
            }
        }
    };
}

cases!(
    empty,
    bad_magic,
    version_1,
    version_4,
    big_endian,
    truncated_header,
    kv_count_too_large,
    truncated_entry,
    key_length_too_large,
    truncated_value,
    string_value_too_long,
    array_count_too_large,
    truncated_array,
    nesting_too_deep,
    unknown_value_type,
    unknown_array_element_type,
    invalid_utf8_key,
    invalid_bool,
    duplicate_key,
    alignment_zero,
    alignment_not_power_of_two,
    alignment_too_large,
    alignment_not_integer,
    tensor_count_too_large,
    truncated_tensor_info,
    too_many_dims,
    no_dims,
    zero_dim,
    element_count_overflow,
    byte_size_overflow,
    unknown_tensor_type,
    row_not_block_multiple,
    misaligned_offset,
    data_past_end,
    offset_overflow,
    duplicate_tensor,
    overlapping_tensors,
    invalid_utf8_tensor_name,
);

#[test]
fn short_prefix_of_magic_is_truncation_not_bad_magic() {
    let msg = error_of(b"GG".to_vec()).to_string();
    assert!(
        msg.contains("the file ends while reading the magic"),
        "{msg}"
    );
    let msg = error_of(b"GX".to_vec()).to_string();
    assert!(msg.contains("not a GGUF file"), "{msg}");
}

#[test]
fn nesting_at_the_limit_is_accepted() {
    // 64 levels of arrays: the outermost value plus 63 nested ones.
    let mut r = Raw::header(3, 0, 1).string("deep").u32(T_ARRAY);
    for _ in 0..63 {
        r = r.u32(T_ARRAY).u64(1);
    }
    let f = GgufFile::from_bytes(r.u32(T_U8).u64(0).0).expect("64 levels are allowed");
    let mut v = f.get("deep").expect("key present");
    let mut levels = 1;
    while let Some([inner]) = v.as_array() {
        v = inner;
        levels += 1;
    }
    assert_eq!(levels, 64);
}

#[test]
fn version_2_and_3_are_accepted() {
    for version in [2, 3] {
        let bytes = Raw::header(version, 1, 1)
            .kv_u32("general.alignment", 64)
            .tensor("w", &[16], F32_ID, 0)
            .pad(64)
            .bytes(&[7; 64])
            .0;
        let f = GgufFile::from_bytes(bytes).expect("valid file");
        assert_eq!(f.version(), version);
        assert_eq!(f.alignment(), 64);
        assert_eq!(f.data_offset(), 128);
        let t = f.tensor("w").expect("tensor w");
        assert_eq!(
            (t.ty, t.n_bytes, t.row_len(), t.rows()),
            (GgmlType::F32, 64, 16, 1)
        );
        assert_eq!(f.tensor_data(t), &[7; 64][..]);
    }
}

#[test]
fn tensors_may_be_stored_out_of_order_with_gaps() {
    let bytes = Raw::header(3, 2, 0)
        .tensor("late", &[8], F32_ID, 96)
        .tensor("early", &[8], F32_ID, 0)
        .pad(32)
        .bytes(&[1; 32])
        .zeros(64)
        .bytes(&[2; 32])
        .0;
    let f = GgufFile::from_bytes(bytes).expect("gaps are fine");
    let late = f.tensor("late").expect("late");
    let early = f.tensor("early").expect("early");
    assert_eq!(f.tensor_data(late), &[2; 32][..]);
    assert_eq!(f.tensor_data(early), &[1; 32][..]);
}

#[test]
fn no_tensors_and_no_padding_is_fine() {
    let f = GgufFile::from_bytes(Raw::header(3, 0, 1).kv_u32("a", 5).0).expect("valid");
    assert_eq!(f.tensors().len(), 0);
    assert_eq!(f.get_u64("a").expect("a"), 5);
}

#[test]
fn foreign_tensor_info_gives_empty_data_not_a_panic() {
    let f = GgufFile::from_bytes(Raw::header(3, 0, 0).0).expect("valid");
    let t = tuili_gguf::TensorInfo {
        name: "x".into(),
        dims: vec![16],
        ty: GgmlType::F32,
        offset: u64::MAX,
        n_bytes: 64,
    };
    assert!(f.tensor_data(&t).is_empty());
}

#[test]
fn open_reports_missing_file_with_its_path() {
    let msg = GgufFile::open("/nonexistent/dir/model.gguf")
        .expect_err("no such file")
        .to_string();
    assert!(
        msg.contains("cannot open '/nonexistent/dir/model.gguf'"),
        "{msg}"
    );
}
