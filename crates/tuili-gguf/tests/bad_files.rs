//! The `bad_files/` regression folder: every file there must fail to open with an error
//! containing the phrase that `bad_files/expected.txt` gives for it (never a panic).
//!
//! The files are made from `common::bad_cases()`; regenerate them after changing a case
//! with `TUILI_REGEN_BAD_FILES=1 cargo test -p tuili-gguf --test bad_files`. Files added
//! by hand (e.g. fuzz findings) only need a line in `expected.txt`.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use tuili_gguf::GgufFile;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("bad_files")
}

/// `expected.txt`: one `file-name phrase...` per line; `#` starts a comment line.
fn expected() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir().join("expected.txt")).expect("read expected.txt");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, phrase) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            (name.to_string(), phrase.trim().to_string())
        })
        .collect()
}

/// Rewrites the folder from the generator when `TUILI_REGEN_BAD_FILES` is set, once per
/// run, before any test reads it.
fn maybe_regenerate() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if std::env::var_os("TUILI_REGEN_BAD_FILES").is_some() {
        ONCE.call_once(regenerate);
    }
}

fn regenerate() {
    std::fs::create_dir_all(dir()).expect("create bad_files");
    let mut listing = String::from(
        "# file name, then a phrase its error message must contain. Made by the generator\n\
         # in tests/common/mod.rs (see tests/bad_files.rs); hand-added files go below it.\n",
    );
    for c in common::bad_cases() {
        std::fs::write(dir().join(format!("{}.gguf", c.name)), &c.bytes).expect("write case");
        listing.push_str(&format!("{}.gguf {}\n", c.name, c.phrase));
    }
    std::fs::write(dir().join("expected.txt"), listing).expect("write expected.txt");
}

#[test]
fn every_bad_file_fails_with_its_phrase() {
    maybe_regenerate();
    let expected = expected();
    let mut seen = 0;
    for entry in std::fs::read_dir(dir()).expect("list bad_files") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name")
            .to_string();
        // expected.txt and .gitignore live here too.
        if !name.ends_with(".gguf") {
            continue;
        }
        let phrase = expected
            .get(&name)
            .unwrap_or_else(|| panic!("{name} has no line in expected.txt"));
        let bytes = std::fs::read(&path).expect("read bad file");
        assert!(
            bytes.len() <= 4096,
            "{name} is {} bytes; keep regression files small",
            bytes.len()
        );
        let msg = match GgufFile::from_bytes(bytes) {
            Ok(_) => panic!("{name} opened without error"),
            Err(e) => e.to_string(),
        };
        assert!(
            msg.contains(phrase.as_str()),
            "{name}: error {msg:?} does not contain {phrase:?}"
        );
        // The mmap path gives the same answer.
        let mapped = GgufFile::open(&path)
            .expect_err("mapped file fails too")
            .to_string();
        assert_eq!(mapped, msg, "{name}");
        seen += 1;
    }
    assert_eq!(
        seen,
        expected.len(),
        "expected.txt names files that are missing"
    );
}

#[test]
fn generated_cases_match_the_committed_files() {
    maybe_regenerate();
    for c in common::bad_cases() {
        let path = dir().join(format!("{}.gguf", c.name));
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            on_disk == c.bytes,
            "{} differs from its generator; regenerate",
            c.name
        );
        assert_eq!(
            expected()
                .get(&format!("{}.gguf", c.name))
                .map(String::as_str),
            Some(c.phrase)
        );
    }
}
