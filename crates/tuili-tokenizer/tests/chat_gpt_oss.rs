//! gpt-oss's chat template (OpenAI's harmony format: channels, a developer message, typed
//! tool namespaces, the current date) renders exactly as transformers renders it. The
//! expected strings come from scripts/gen_gpt_oss_fixtures.py; the date the template
//! writes is replaced by `DATE` on both sides.

mod common;

use common::{fixture, str_of};
use tuili_tokenizer::{ChatMessage, ChatTemplate};

/// `text` with the date after "Current date: " replaced by `DATE`.
fn without_date(text: &str) -> String {
    const KEY: &str = "Current date: ";
    match text.find(KEY) {
        Some(i) => {
            let start = i + KEY.len();
            let end = (start + "YYYY-MM-DD".len()).min(text.len());
            format!("{}DATE{}", &text[..start], &text[end..])
        }
        None => text.to_string(),
    }
}

#[test]
fn gpt_oss_template_renders_like_transformers() {
    let fx = fixture("chat_gpt_oss.json");
    // gpt-oss's tokens for BOS and EOS; this template writes neither.
    let template = ChatTemplate::new(str_of(&fx["template"]), "<|startoftext|>", "<|return|>")
        .expect("the gpt-oss template compiles");
    let cases = fx["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 6);
    for case in cases {
        let conv = str_of(&case["conversation"]);
        let messages: Vec<ChatMessage> = fx["conversations"][conv]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| ChatMessage::new(str_of(&m["role"]), str_of(&m["content"])))
            .collect();
        let gen = case["add_generation_prompt"].as_bool().expect("bool");
        let got = template
            .render(&messages, gen)
            .unwrap_or_else(|e| panic!("{conv}/gen={gen}: {e}"));
        assert_eq!(
            without_date(&got),
            str_of(&case["expected"]),
            "{conv}/gen={gen}"
        );
    }
}
