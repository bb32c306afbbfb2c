//! Behaviour on small hand-made vocabularies: special-token matching, end-of-generation,
//! streaming detokenization, llama.cpp's defaults and the errors for bad metadata.

use tuili_tokenizer::{StreamDecoder, Tokenizer, TokenizerConfig, TokenizerError};

/// GPT-2's byte alphabet: printable Latin-1 stands for itself, the rest moves to U+0100...
fn byte_char(b: u8) -> char {
    let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable {
        return b as char;
    }
    let shifted = (0..b)
        .filter(|&x| !((0x21..=0x7E).contains(&x) || (0xA1..=0xAC).contains(&x) || x >= 0xAE))
        .count() as u32;
    char::from_u32(256 + shifted).expect("valid char")
}

/// Byte tokens 0..256 (id = byte), then merged tokens, then specials.
fn bpe_config(pre: &str) -> TokenizerConfig {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let mut types = vec![1; 256];
    let merges: Vec<String> = ["Ġ t", "h e", "Ġt he", "Ġ w", "o r", "Ġw or"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for m in &merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    // A whole word with no merge path, for llama.cpp's ignore_merges.
    tokens.push("Ġworld".into());
    types.push(1);
    for (t, ty) in [
        ("<|im_start|>", 3),
        ("<|im_end|>", 3),
        ("<|endoftext|>", 3),
        ("<tool>", 4),
        ("<tool>x", 4),
    ] {
        tokens.push(t.into());
        types.push(ty);
    }
    let id = |t: &str| tokens.iter().position(|x| x == t).map(|i| i as u32);
    TokenizerConfig {
        model: "gpt2".into(),
        pre: Some(pre.into()),
        bos: id("<|endoftext|>"),
        eos: id("<|endoftext|>"),
        tokens: tokens.clone(),
        token_types: Some(types),
        merges: Some(merges),
        ..Default::default()
    }
}

fn bpe(pre: &str) -> Tokenizer {
    Tokenizer::new(bpe_config(pre)).expect("valid config")
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
    check::<tuili_tokenizer::ChatTemplate>();
}

#[test]
fn debug_output_is_a_summary() {
    let text = format!("{:?}", bpe("gpt-2"));
    assert!(text.contains("vocab_size: 268"), "{text}");
    assert!(text.len() < 400, "{text}");
}

#[test]
fn merges_and_byte_tokens() {
    let tok = bpe("gpt-2");
    let the = tok.token_id("Ġthe").expect("Ġthe");
    let ids = tok.encode("x the", false, false);
    assert_eq!(ids, [u32::from(b'x'), the]);
    assert_eq!(tok.token_bytes(the), b" the");
    assert_eq!(tok.token_text(the), "Ġthe");
    // Unknown ids decode to nothing instead of panicking.
    assert_eq!(tok.token_bytes(1_000_000), b"");
    assert_eq!(tok.decode(&[1_000_000, u32::from(b'a')], false), "a");
}

#[test]
fn special_tokens_longest_first_and_only_when_asked() {
    let tok = bpe("gpt-2");
    let start = tok.token_id("<|im_start|>").expect("start");
    let tool = tok.token_id("<tool>").expect("tool");
    let tool_x = tok.token_id("<tool>x").expect("tool x");
    // Control tokens need parse_special.
    assert_eq!(tok.encode("<|im_start|>", false, true), [start]);
    assert!(!tok.encode("<|im_start|>", false, false).contains(&start));
    // User-defined tokens are matched either way, the longest text first.
    assert_eq!(tok.encode("<tool>x<tool>", false, false), [tool_x, tool]);
    // Hidden by skip_special: control yes, user-defined no.
    let ids = tok.encode("<|im_start|>a<tool>", false, true);
    assert_eq!(tok.decode(&ids, true), "a<tool>");
    assert_eq!(tok.decode(&ids, false), "<|im_start|>a<tool>");
}

#[test]
fn end_of_generation_tokens_are_found_by_name() {
    let tok = bpe("gpt-2");
    let im_end = tok.token_id("<|im_end|>").expect("im_end");
    let eot = tok.token_id("<|endoftext|>").expect("eot");
    assert!(tok.is_eog(im_end));
    assert!(tok.is_eog(eot));
    assert!(!tok.is_eog(tok.token_id("<|im_start|>").expect("start")));
    assert!(!tok.is_eog(u32::from(b'a')));
    assert_eq!(tok.eog_ids(), [im_end, eot]);
}

#[test]
fn llama_bpe_adds_bos_and_keeps_whole_words() {
    let tok = bpe("llama-bpe");
    assert!(tok.add_bos());
    let world = tok.token_id("Ġworld").expect("Ġworld");
    let bos = tok.bos().expect("bos");
    // "Ġworld" has no merge path ("Ġwor" + "l" + "d" stop there) but is a token: llama.cpp
    // emits it whole for llama-bpe (ignore_merges).
    assert_eq!(tok.encode(" world", true, false), [bos, world]);
    let gpt2 = bpe("gpt-2");
    assert_ne!(gpt2.encode(" world", false, false), [world]);
    // decode(skip_special) drops the BOS encode added.
    assert_eq!(tok.decode(&[bos, world], true), " world");
}

#[test]
fn stream_decoder_never_splits_a_character() {
    let tok = bpe("gpt-2");
    let text = "a🎉b你好 👍🏽!";
    let ids = tok.encode(text, false, false);
    // Every multi-byte character is spelled as single-byte tokens here.
    assert!(ids.len() > text.chars().count());
    let mut stream = StreamDecoder::new(&tok);
    let mut pieces = Vec::new();
    for &id in &ids {
        let piece = stream.push(id);
        assert!(!piece.contains('\u{FFFD}'), "broken UTF-8 in {piece:?}");
        pieces.push(piece);
    }
    let rest = stream.finish();
    assert_eq!(rest, "");
    assert_eq!(pieces.concat(), text);
    assert_eq!(pieces.concat(), tok.decode(&ids, true));
    // The emoji's first three bytes give nothing; the fourth gives the whole emoji.
    let emoji: Vec<u32> = "🎉".bytes().map(u32::from).collect();
    let mut stream = StreamDecoder::new(&tok);
    let out: Vec<String> = emoji.iter().map(|&id| stream.push(id)).collect();
    assert_eq!(out, ["", "", "", "🎉"]);
}

#[test]
fn stream_decoder_matches_lossy_decode_on_invalid_bytes() {
    let tok = bpe("gpt-2");
    // 0xFF is never valid; 0xE4 0xBD starts a character that a plain 'a' then breaks; a
    // dangling 0xF0 at the end stays incomplete until finish.
    let ids: Vec<u32> = vec![0x61, 0xFF, 0x62, 0xE4, 0xBD, 0x61, 0xF0];
    let mut stream = StreamDecoder::new(&tok);
    let mut out = String::new();
    for &id in &ids {
        out.push_str(&stream.push(id));
    }
    assert_eq!(out, "a\u{FFFD}b\u{FFFD}a");
    out.push_str(&stream.finish());
    assert_eq!(out, tok.decode(&ids, true));
    assert_eq!(out, "a\u{FFFD}b\u{FFFD}a\u{FFFD}");
}

#[test]
fn bad_metadata_is_an_error_naming_the_problem() {
    let err = |cfg: TokenizerConfig| Tokenizer::new(cfg).expect_err("must fail").to_string();

    let mut cfg = bpe_config("gpt-2");
    cfg.model = "wordpiece".into();
    assert!(err(cfg).contains("\"wordpiece\""));

    let mut cfg = bpe_config("gpt-2");
    cfg.pre = Some("klingon".into());
    let msg = err(cfg);
    assert!(
        msg.contains("\"klingon\"") && msg.contains("qwen2"),
        "{msg}"
    );

    let mut cfg = bpe_config("gpt-2");
    cfg.merges = None;
    assert!(err(cfg).contains("merges"));

    let mut cfg = bpe_config("gpt-2");
    cfg.tokens[260] = "a".into();
    let msg = err(cfg);
    assert!(
        msg.contains("duplicate token \"a\" at ids 97 and 260"),
        "{msg}"
    );

    let mut cfg = bpe_config("gpt-2");
    cfg.token_types = Some(vec![1; 10]);
    let msg = err(cfg);
    assert!(
        msg.contains("token_type has 10 entries") && msg.contains("tokens"),
        "{msg}"
    );

    let mut cfg = bpe_config("gpt-2");
    cfg.add_bos = Some(true);
    cfg.bos = Some(99_999);
    let msg = err(cfg);
    assert!(msg.contains("add_bos") && msg.contains("BOS"), "{msg}");

    let cfg = TokenizerConfig {
        model: "llama".into(),
        ..Default::default()
    };
    assert!(matches!(
        Tokenizer::new(cfg),
        Err(TokenizerError::EmptyVocab)
    ));
}
