//! Tests on the real models (SmolLM2-135M, Qwen2.5-Coder-0.5B) from `$TUILI_TEST_MODELS_DIR`.
//! Each test prints "skipped: ..." and passes when the models are not there.

mod common;

use common::{fixture, ids_of, model, str_of};
use tuili_tokenizer::{ChatMessage, ChatTemplate, StreamDecoder, Tokenizer};

fn tokenizer(file: &str) -> Option<Tokenizer> {
    let gguf = model(file)?;
    Some(Tokenizer::from_gguf(&gguf).expect("tokenizer from GGUF"))
}

#[test]
fn smol_ids_match_llama_cpp() {
    let Some(tok) = tokenizer("smol.gguf") else {
        return;
    };
    assert_eq!(
        tok.encode("Once upon a time", false, true),
        [6403, 1980, 253, 655]
    );
    assert_eq!(
        tok.encode("The three primary colors are", false, true),
        [504, 1296, 3003, 4683, 359]
    );
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!((tok.bos(), tok.eos()), (Some(1), Some(2)));
    assert!(!tok.add_bos());
    // add_bos is false, so add_special changes nothing.
    assert_eq!(
        tok.encode("Once upon a time", true, true),
        [6403, 1980, 253, 655]
    );
}

#[test]
fn qwen_ids_match_llama_cpp() {
    let Some(tok) = tokenizer("qwen.gguf") else {
        return;
    };
    assert_eq!(
        tok.encode("Once upon a time", false, true),
        [12522, 5193, 264, 882]
    );
    assert_eq!(tok.vocab_size(), 151936);
    assert_eq!((tok.bos(), tok.eos()), (Some(151643), Some(151645)));
}

/// Every corpus text gives the reference ids, with and without special-token parsing.
fn check_fixture(file: &str, fixture_name: &str) {
    let Some(tok) = tokenizer(file) else { return };
    let fx = fixture(fixture_name);
    let mut failures = Vec::new();
    let cases = fx["cases"].as_array().expect("cases");
    for case in cases {
        let text = str_of(&case["text"]);
        for (key, parse_special) in [("ids_special", true), ("ids_plain", false)] {
            let want = ids_of(&case[key]);
            let got = tok.encode(text, false, parse_special);
            if got != want {
                failures.push(format!(
                    "{text:?} ({key}):\n   got {got:?}\n  want {want:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(cases.len() > 40);
}

#[test]
fn smol_matches_reference_corpus() {
    check_fixture("smol.gguf", "tokenize_smol.json");
}

#[test]
fn qwen_matches_reference_corpus() {
    check_fixture("qwen.gguf", "tokenize_qwen.json");
}

/// Byte-level BPE is lossless: decoding with special tokens shown gives the text back, and
/// the streaming decoder gives the same text piece by piece.
fn check_round_trip(file: &str, fixture_name: &str) {
    let Some(tok) = tokenizer(file) else { return };
    for case in fixture(fixture_name)["cases"].as_array().expect("cases") {
        let text = str_of(&case["text"]);
        let ids = tok.encode(text, false, true);
        assert_eq!(tok.decode(&ids, false), text);
        for skip_special in [false, true] {
            let mut stream = StreamDecoder::with_special(&tok, skip_special);
            let mut streamed = String::new();
            for &id in &ids {
                let piece = stream.push(id);
                // The corpus has no U+FFFD, so one here is a split character.
                assert!(!piece.contains('\u{FFFD}'), "{text:?}: {piece:?}");
                streamed.push_str(&piece);
            }
            streamed.push_str(&stream.finish());
            assert_eq!(streamed, tok.decode(&ids, skip_special), "{text:?}");
        }
    }
}

#[test]
fn smol_round_trips_and_streams() {
    check_round_trip("smol.gguf", "tokenize_smol.json");
}

#[test]
fn qwen_round_trips_and_streams() {
    check_round_trip("qwen.gguf", "tokenize_qwen.json");
}

#[test]
fn emoji_split_across_tokens_streams_whole() {
    let Some(tok) = tokenizer("qwen.gguf") else {
        return;
    };
    let text = "a 🎉 你好";
    let ids = tok.encode(text, false, true);
    // Qwen spells " 🎉" with three tokens, each a fragment of its UTF-8.
    let fragments = ids
        .iter()
        .filter(|&&id| std::str::from_utf8(tok.token_bytes(id)).is_err())
        .count();
    assert!(fragments >= 2, "{ids:?}");
    let mut stream = StreamDecoder::new(&tok);
    let pieces: Vec<String> = ids.iter().map(|&id| stream.push(id)).collect();
    assert_eq!(pieces.concat(), text);
    assert!(pieces.iter().any(String::is_empty), "{pieces:?}");
    assert!(pieces.iter().any(|p| p.ends_with('🎉')), "{pieces:?}");
}

#[test]
fn special_tokens_decode_and_end_generation() {
    for file in ["smol.gguf", "qwen.gguf"] {
        let Some(tok) = tokenizer(file) else { return };
        let im_end = tok.token_id("<|im_end|>").expect("<|im_end|>");
        let endoftext = tok.token_id("<|endoftext|>").expect("<|endoftext|>");
        let im_start = tok.token_id("<|im_start|>").expect("<|im_start|>");
        assert!(tok.is_eog(im_end) && tok.is_eog(endoftext), "{file}");
        assert_eq!(tok.eot(), Some(im_end), "{file}");
        assert!(!tok.is_eog(im_start), "{file}");
        let ids = tok.encode("<|im_start|>user\nhi<|im_end|>", false, true);
        assert_eq!(ids.first(), Some(&im_start));
        assert_eq!(ids.last(), Some(&im_end));
        assert_eq!(tok.decode(&ids, true), "user\nhi");
        // Without parse_special the marker is ordinary text.
        let plain = tok.encode("<|im_start|>", false, false);
        assert!(
            plain.len() > 1 && !plain.contains(&im_start),
            "{file}: {plain:?}"
        );
        assert_eq!(tok.decode(&plain, true), "<|im_start|>");
    }
}

#[test]
fn chat_templates_come_from_the_file() {
    let fx = fixture("chat_templates.json");
    for (file, name) in [("smol.gguf", "smol"), ("qwen.gguf", "qwen")] {
        let Some(gguf) = model(file) else { return };
        let template = ChatTemplate::from_gguf(&gguf)
            .expect("template compiles")
            .expect("the model has a template");
        let case = fx["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .find(|c| {
                c["template"] == name
                    && c["conversation"] == "multi_turn"
                    && c["add_generation_prompt"] == true
            })
            .expect("a multi-turn case");
        let messages: Vec<ChatMessage> = fx["conversations"]["multi_turn"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| ChatMessage::new(str_of(&m["role"]), str_of(&m["content"])))
            .collect();
        assert_eq!(
            template.render(&messages, true).expect("renders"),
            str_of(&case["expected"])
        );
    }
}
