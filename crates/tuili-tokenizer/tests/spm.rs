//! SentencePiece vocabularies: ids equal to the `sentencepiece` library's for a small BPE
//! model trained by scripts/gen_fixtures.py (byte fallback, user-defined token), and the
//! space-prefix / BOS rules llama.cpp applies.

mod common;

use common::{fixture, ids_of, str_of};
use tuili_tokenizer::{StreamDecoder, Tokenizer, TokenizerConfig};

fn spm_tokenizer() -> (Tokenizer, serde_json::Value) {
    let fx = fixture("spm.json");
    let cfg = TokenizerConfig {
        model: "llama".into(),
        tokens: fx["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .map(|t| str_of(t).to_string())
            .collect(),
        scores: Some(
            fx["scores"]
                .as_array()
                .expect("scores")
                .iter()
                .map(|s| s.as_f64().expect("score") as f32)
                .collect(),
        ),
        token_types: Some(
            fx["token_types"]
                .as_array()
                .expect("types")
                .iter()
                .map(|t| t.as_i64().expect("type") as i32)
                .collect(),
        ),
        bos: fx["bos"].as_u64().map(|v| v as u32),
        eos: fx["eos"].as_u64().map(|v| v as u32),
        unk: fx["unk"].as_u64().map(|v| v as u32),
        ..Default::default()
    };
    (Tokenizer::new(cfg).expect("tokenizer"), fx)
}

#[test]
fn ids_match_sentencepiece() {
    let (tok, fx) = spm_tokenizer();
    for case in fx["cases"].as_array().expect("cases") {
        let text = str_of(&case["text"]);
        assert_eq!(
            tok.encode(text, false, false),
            ids_of(&case["ids"]),
            "{text:?}"
        );
    }
}

#[test]
fn bos_and_prefix_space() {
    let (tok, _) = spm_tokenizer();
    // A SentencePiece vocabulary adds BOS by default.
    assert!(tok.add_bos());
    let bos = tok.bos().expect("bos");
    let plain = tok.encode("Hello world", false, false);
    let with_bos = tok.encode("Hello world", true, false);
    assert_eq!(with_bos[0], bos);
    assert_eq!(&with_bos[1..], plain.as_slice());
    // The prefix space is stripped again when decoding; BOS is hidden by skip_special.
    assert_eq!(tok.decode(&plain, true), "Hello world");
    assert_eq!(tok.decode(&with_bos, false), "<s> Hello world");
    assert_eq!(tok.token_text(plain[0]), "▁");
}

#[test]
fn user_defined_tokens_are_always_matched() {
    let (tok, _) = spm_tokenizer();
    let tool = tok.token_id("<tool>").expect("<tool>");
    let ids = tok.encode("call<tool>now", false, false);
    assert!(ids.contains(&tool), "{ids:?}");
    // Text after a special token gets its own prefix space, as in llama.cpp.
    let after = tok.encode("now", false, false);
    assert!(ids.ends_with(&after), "{ids:?} vs {after:?}");
}

#[test]
fn byte_fallback_round_trips_through_the_stream_decoder() {
    let (tok, _) = spm_tokenizer();
    let text = "unseen: 你好 🎉 é";
    let ids = tok.encode(text, false, false);
    assert!(
        ids.iter().any(|&id| tok.token_text(id).starts_with("<0x")),
        "{ids:?}"
    );
    assert_eq!(tok.decode(&ids, true), text);
    let mut stream = StreamDecoder::new(&tok);
    let mut out = String::new();
    for &id in &ids {
        let piece = stream.push(id);
        assert!(!piece.contains('\u{FFFD}'), "{piece:?}");
        out.push_str(&piece);
    }
    out.push_str(&stream.finish());
    assert_eq!(out, text);
}
