//! Tokenizers read from Hugging Face `tokenizer.json` files give the ids of the Python
//! `tokenizers` package on a fixture corpus (Chinese, emoji, whitespace runs, special
//! tokens), for the SmolLM2, Qwen2.5 and Gemma 3 vocabularies.
//!
//! `tests/hf/tokenizers_fixture.py` writes each tokenizer directory from the test model's
//! GGUF vocabulary with the `tokenizers` API and records `tokenizers`' ids (see its
//! docstring for why that is a fair test). The interpreter is `TUILI_LLAMACPP_PYTHON`, else
//! `~/.cache/tuili/llamacpp-venv/bin/python`, with `tokenizers` and `gguf`; without them, or
//! without the models, the test says it skipped (a failure under `TUILI_REQUIRE_LLAMACPP=1`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;
use tuili_gguf::{GgufFile, GgufWriter};
use tuili_tokenizer::{hf_tokenizer_keys, ChatTemplate, Tokenizer};

fn python() -> Option<PathBuf> {
    tuili_testkit::llamacpp_python("tokenizers, gguf")
}

fn open_dir(dir: &Path) -> GgufFile {
    let mut w = GgufWriter::new();
    for (k, v) in hf_tokenizer_keys(dir).expect("read the tokenizer directory") {
        w.add(k, v).unwrap();
    }
    GgufFile::from_bytes(w.to_bytes()).unwrap()
}

fn check(model: &str) {
    let (Some(python), Some(gguf)) = (python(), tuili_testkit::model(model)) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("tuili-hf-tok-{model}-{}", std::process::id()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/hf/tokenizers_fixture.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(&gguf)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let file = open_dir(&dir);
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer from tokenizer.json");
    let expected: Json =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let texts = expected["texts"].as_array().unwrap();
    let ids = expected["ids"].as_array().unwrap();
    let mut tokens = 0;
    for (text, want) in texts.iter().zip(ids) {
        let text = text.as_str().unwrap();
        let want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.encode(text, false, true), want, "{model}: {text:?}");
        assert_eq!(tok.decode(&want, false), text, "{model}: decoding {text:?}");
        tokens += want.len();
    }
    eprintln!(
        "{model}: {} texts, {tokens} tokens, ids equal to tokenizers'",
        texts.len()
    );

    // The template and the special tokens come through as the GGUF path reads them.
    let original = GgufFile::open(&gguf).unwrap();
    let from_gguf = Tokenizer::from_gguf(&original).unwrap();
    assert_eq!(tok.eos(), from_gguf.eos(), "{model}: EOS");
    assert_eq!(tok.vocab_size(), from_gguf.vocab_size());
    let ours = ChatTemplate::from_gguf(&file).unwrap();
    match ChatTemplate::from_gguf(&original).unwrap() {
        Some(theirs) => {
            let msgs = [tuili_tokenizer::ChatMessage::new("user", "Hi 你好")];
            let ours = ours.expect("the chat template of tokenizer_config.json");
            assert_eq!(
                ours.render(&msgs, true).unwrap(),
                theirs.render(&msgs, true).unwrap()
            );
        }
        None => assert!(ours.is_none(), "{model}: a template from nowhere"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn smollm2_tokenizer_json_matches_tokenizers() {
    check("smol.gguf");
}

#[test]
fn qwen25_tokenizer_json_matches_tokenizers() {
    check("qwen.gguf");
}

#[test]
fn gemma3_tokenizer_json_matches_tokenizers() {
    check("gemma.gguf");
}
