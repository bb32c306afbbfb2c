//! Tests on the real models (SmolLM2-135M, Qwen2.5-Coder-0.5B, Gemma-3-270M) from
//! `$TUILI_TEST_MODELS_DIR`.
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

/// Gemma 3: SentencePiece, 262,144 tokens, BOS added, no space prefix. The fixture's ids are
/// llama.cpp's own (scripts/gen_gemma_fixtures.py), with and without BOS.
#[test]
fn gemma_ids_match_llama_cpp() {
    let Some(tok) = tokenizer("gemma.gguf") else {
        return;
    };
    assert_eq!(tok.vocab_size(), 262_144);
    assert_eq!((tok.bos(), tok.eos()), (Some(2), Some(1)));
    assert!(tok.add_bos() && !tok.add_eos());
    assert_eq!(
        tok.encode("Once upon a time", true, true),
        [2, 14946, 3324, 496, 990]
    );
    check_fixture("gemma.gguf", "tokenize_gemma.json");
    let fx = fixture("tokenize_gemma.json");
    for case in fx["cases"].as_array().expect("cases") {
        let text = str_of(&case["text"]);
        assert_eq!(
            tok.encode(text, true, false),
            ids_of(&case["ids_bos"]),
            "{text:?}"
        );
    }
}

/// The whole GPL-3 text (what the perplexity figures are computed on) gives llama.cpp's ids.
#[test]
fn gemma_gpl3_ids_match_llama_cpp() {
    let Some(tok) = tokenizer("gemma.gguf") else {
        return;
    };
    let gpl = &fixture("tokenize_gemma.json")["gpl3"];
    let Ok(text) = std::fs::read_to_string(str_of(&gpl["path"])) else {
        tuili_testkit::skip("/usr/share/common-licenses/GPL-3 not found");
        return;
    };
    let want = ids_of(&gpl["ids"]);
    for parse_special in [false, true] {
        let got = tok.encode(&text, true, parse_special);
        let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
        assert!(
            got == want,
            "{} ids, llama.cpp {}; first difference at {first_diff:?}",
            got.len(),
            want.len()
        );
    }
}

/// Decoding gives llama.cpp's text (`llama_detokenize`, specials shown), which is the input
/// itself except where the input spells SentencePiece's space mark `▁`; the stream decoder
/// agrees piece by piece.
#[test]
fn gemma_decodes_like_llama_cpp_and_streams() {
    let Some(tok) = tokenizer("gemma.gguf") else {
        return;
    };
    for case in fixture("tokenize_gemma.json")["cases"]
        .as_array()
        .expect("cases")
    {
        let text = str_of(&case["text"]);
        let ids = ids_of(&case["ids_special"]);
        let decoded = tok.decode(&ids, false);
        assert_eq!(decoded, str_of(&case["detok"]), "{text:?}");
        if !text.contains('▁') {
            assert_eq!(decoded, text);
        }
        let with_bos = ids_of(&case["ids_bos"]);
        assert_eq!(
            tok.decode(&with_bos, true),
            tok.decode(&with_bos[1..], true)
        );
        for skip_special in [false, true] {
            let mut stream = StreamDecoder::with_special(&tok, skip_special);
            let mut streamed: String = ids.iter().map(|&id| stream.push(id)).collect();
            streamed.push_str(&stream.finish());
            assert_eq!(streamed, tok.decode(&ids, skip_special), "{text:?}");
        }
    }
}

#[test]
fn gemma_turn_tokens_are_control_and_end_generation() {
    let Some(tok) = tokenizer("gemma.gguf") else {
        return;
    };
    let start = tok.token_id("<start_of_turn>").expect("<start_of_turn>");
    let end = tok.token_id("<end_of_turn>").expect("<end_of_turn>");
    assert_eq!((start, end), (105, 106));
    assert!(tok.is_control(start) && tok.is_control(end));
    // llama.cpp finds `<end_of_turn>` by name as the end-of-turn token.
    assert_eq!(tok.eot(), Some(end));
    assert!(tok.is_eog(end) && tok.is_eog(1) && !tok.is_eog(start));
    // `</s>` is a user-defined token here (an HTML tag, like `<s>`), but llama.cpp makes any
    // token of that name control and end-of-generation; so do we (llama_vocab_is_eog: true
    // for 212, false for 203).
    assert_eq!(
        (tok.token_id("</s>"), tok.token_id("<s>")),
        (Some(212), Some(203))
    );
    assert!(tok.is_eog(212) && tok.is_control(212));
    assert!(!tok.is_eog(203) && !tok.is_control(203));
    let ids = tok.encode("<start_of_turn>user\nhi<end_of_turn>", false, true);
    assert_eq!(ids, [105, 2364, 107, 2202, 106]);
    assert_eq!(tok.decode(&ids, true), "user\nhi");
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

/// This Gemma 3 file carries no `tokenizer.chat_template` (the base model's conversion wrote
/// none), so `tuili run --chat` refuses it and the server falls back to ChatML, as llama.cpp
/// does. The instruction template of Gemma 3 renders as transformers renders it.
#[test]
fn gemma_has_no_template_and_its_instruct_template_renders_like_transformers() {
    if let Some(gguf) = model("gemma.gguf") {
        assert!(ChatTemplate::from_gguf(&gguf).expect("reads").is_none());
    }
    let fx = fixture("chat_gemma3.json");
    let template = ChatTemplate::new(
        str_of(&fx["template"]),
        str_of(&fx["bos"]),
        str_of(&fx["eos"]),
    )
    .expect("compiles");
    for case in fx["cases"].as_array().expect("cases") {
        let conv = str_of(&case["conversation"]);
        let messages: Vec<ChatMessage> = fx["conversations"][conv]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| ChatMessage::new(str_of(&m["role"]), str_of(&m["content"])))
            .collect();
        let gen = case["add_generation_prompt"].as_bool().expect("bool");
        let got = template.render(&messages, gen);
        match (case.get("expected"), case.get("error")) {
            (Some(want), _) => assert_eq!(got.expect("renders"), str_of(want), "{conv}/{gen}"),
            (None, Some(want)) => {
                let err = got.expect_err("raises").to_string();
                assert!(err.contains(str_of(want)), "{conv}/{gen}: {err}");
            }
            _ => panic!("case without expected or error"),
        }
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
