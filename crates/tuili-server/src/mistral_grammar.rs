//! The grammar of a Mistral v11+ answer that calls tools, as [`crate::mistral`] reads it:
//! `[TOOL_CALLS]NAME[ARGS]{ARGS}` per call (one without `parallel_tool_calls`), ARGS fitting
//! NAME's schema, and `[CALL_ID]` then a 9-character id before `[ARGS]` where the vocabulary
//! has that token (Mistral Small 3.2's template requires such ids). For `required` and a
//! named function the calls come first, after a `[THINK]…[/THINK]` thought where the
//! vocabulary has those tokens; under `auto` the answer is free text until the model writes
//! `[TOOL_CALLS]`, then calls only, as in llama.cpp's lazy grammar for Ministral 3.
//!
//! The markers are matched as the vocabulary's own tokens (`<[ID]>`), so that no run of
//! smaller tokens spells one; a vocabulary without them gets them as text, and under `auto`
//! no grammar (nothing to switch on).

use serde_json::{json, Value};
use tuili_tokenizer::Tokenizer;

use crate::harmony_grammar::{lit, token_ref};
use crate::mistral::{ARGS, CALL_ID, THINK, THINK_END, TOOL_CALLS};
use crate::tools::json_layout;

/// The grammar of an answer of calls of `wanted` (tools in OpenAI's layout); `None` under
/// `auto` when the vocabulary has no `[TOOL_CALLS]` token.
pub(crate) fn grammar(
    wanted: &[&Value],
    auto: bool,
    parallel: bool,
    tok: &Tokenizer,
) -> Option<String> {
    let trigger_id = tok.token_id(TOOL_CALLS);
    if auto && trigger_id.is_none() {
        return None;
    }
    let m = |s: &str| token_ref(tok, s).unwrap_or_else(|| lit(s));
    let (trigger, args) = (m(TOOL_CALLS), m(ARGS));
    let id = token_ref(tok, CALL_ID)
        .map(|t| format!(" ({t} /[a-zA-Z0-9]{{9}}/)?"))
        .unwrap_or_default();
    let mut rules = String::new();
    let mut calls = Vec::new();
    for (i, t) in wanted.iter().enumerate() {
        let f = &t["function"];
        let name = lit(f["name"].as_str().unwrap_or_default());
        let mut schema = match f.get("parameters") {
            Some(p) if p.is_object() => p.clone(),
            _ => json!({"type": "object"}),
        };
        schema["x-guidance"] = json_layout();
        rules += &format!("c{i}: {name}{id} {args} a{i}\na{i}: %json {schema}\n");
        calls.push(format!("c{i}"));
    }
    // How many calls: under `auto` none is needed.
    let more = match (parallel, auto) {
        (true, false) => "+",
        (true, true) => "*",
        (false, false) => "",
        (false, true) => "?",
    };
    let before = match (trigger_id, auto) {
        // Free text (the thought among it) until the trigger.
        (Some(t), true) => format!("<[^{t}]>*"),
        _ => match (tok.token_id(THINK), tok.token_id(THINK_END)) {
            (Some(open), Some(end)) => format!("(<[{open}]> <[^{end}]>* <[{end}]>)?"),
            _ => String::new(),
        },
    };
    Some(format!(
        "start: {before} call{more}\ncall: {trigger} ({})\n{rules}",
        calls.join(" | ")
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::chat_output::Piece;
    use crate::mistral::tests::{at_every_step, call};
    use crate::tools::tests::{
        booking, compiler, constraint, marked_compiler, refused_at, weather,
    };
    use crate::tools::ToolFormat;

    const CALL: &str = "[TOOL_CALLS]weather[ARGS]{\"city\": \"Paris\"}";
    const BOOK: &str =
        "[TOOL_CALLS]book[ARGS]{\"city\": \"Rome\", \"nights\": 3, \"room\": \"double\"}";

    /// Whether `text` fits and the answer may end after it (the end-of-generation token fits).
    fn ends(tok: &tuili_tokenizer::Tokenizer, mut c: tuili_engine::Constraint, text: &str) -> bool {
        let eos = tok.eos().expect("an end-of-generation token");
        tok.encode(text, false, true)
            .into_iter()
            .all(|t| c.accept(t).is_ok())
            && (c.is_finished() || (c.accept(eos).is_ok() && c.is_finished()))
    }

    /// Asserts what the server's parser reads from the text the engine renders for `text`'s
    /// tokens (control tokens rendered), fed whole and at every chunk size.
    #[track_caller]
    fn read_back(tok: &tuili_tokenizer::Tokenizer, text: &str, want: &[Piece], calls: usize) {
        let rendered = tok.decode(&tok.encode(text, false, true), false);
        assert_eq!(rendered, text);
        at_every_step(&rendered, want, calls);
    }

    #[test]
    fn required_calls_fit_the_schemas_one_without_parallel() {
        let Some((tok, g)) = marked_compiler() else {
            return;
        };
        let body = json!({"tools": [weather(), booking()], "tool_choice": "required"});
        let c = constraint(&g, &tok, body, ToolFormat::MistralV11);
        let with_id = "[TOOL_CALLS]weather[CALL_ID]a1B2c3D4e[ARGS]{\"city\": \"Oslo\"}";
        let thought = "[THINK]Weather, then [a] hotel.[/THINK]";
        for good in [
            CALL.to_string(),
            format!("{CALL}{BOOK}"),
            with_id.to_string(),
            format!("{thought}{BOOK}{with_id}"),
        ] {
            assert!(ends(&tok, c.clone(), &good), "{good}");
        }
        // Not before a whole call.
        for unfinished in ["", thought, "[TOOL_CALLS]weather[ARGS]{\"city\": \"Paris\""] {
            assert!(!ends(&tok, c.clone(), unfinished), "{unfinished}");
        }
        // The parser reads back what the grammar lets through.
        let [s0, a0] = call(
            0,
            "book",
            "{\"city\": \"Rome\", \"nights\": 3, \"room\": \"double\"}",
        );
        let [s1, a1] = call(1, "weather", "{\"city\": \"Oslo\"}");
        let want = [
            Piece::Reasoning("Weather, then [a] hotel.".into()),
            s0,
            a0,
            s1,
            a1,
        ];
        read_back(&tok, &format!("{thought}{BOOK}{with_id}"), &want, 2);

        let at = |text: &str, what: &str| text.find(what).unwrap();
        // Text first, an unknown function, arguments off the schema, a bad id, a call
        // without `[ARGS]`: each refused at the token where it goes wrong.
        let text_first = format!("Sure.{CALL}");
        refused_at(&tok, &c, &text_first, 0);
        let unknown = CALL.replace("weather", "stocks");
        refused_at(&tok, &c, &unknown, at(&unknown, "stocks"));
        let town = CALL.replace("city", "town");
        refused_at(&tok, &c, &town, at(&town, "town"));
        let nights = BOOK.replace('3', "12");
        refused_at(&tok, &c, &nights, at(&nights, "12") + 1);
        let suite = BOOK.replace("double", "suite");
        refused_at(&tok, &c, &suite, at(&suite, "suite"));
        let short_id = with_id.replace("a1B2c3D4e", "a1");
        refused_at(&tok, &c, &short_id, at(&short_id, "[ARGS]"));
        let no_args = "[TOOL_CALLS]weather{\"city\": \"Paris\"}";
        refused_at(&tok, &c, no_args, at(no_args, "{"));
        // Markers are their tokens: the same text spelled by ordinary tokens is refused.
        let (plain, _) = compiler("smol.gguf").unwrap();
        let spelled = plain.encode(CALL, false, false);
        assert!(c.clone().accept(spelled[0]).is_err());

        // parallel_tool_calls false: one call, then only the end.
        let body = json!({"tools": [weather(), booking()], "tool_choice": "required",
                          "parallel_tool_calls": false});
        let c = constraint(&g, &tok, body, ToolFormat::MistralV11);
        assert!(ends(&tok, c.clone(), BOOK));
        let two = format!("{BOOK}{CALL}");
        refused_at(&tok, &c, &two, BOOK.len());

        // A named function: only it.
        let body = json!({"tools": [weather(), booking()],
                          "tool_choice": {"type": "function", "function": {"name": "book"}}});
        let c = constraint(&g, &tok, body, ToolFormat::MistralV11);
        assert!(ends(&tok, c.clone(), BOOK));
        refused_at(&tok, &c, CALL, at(CALL, "weather"));
    }

    #[test]
    fn auto_is_free_text_until_the_trigger_then_calls() {
        let Some((tok, g)) = marked_compiler() else {
            return;
        };
        let c = constraint(
            &g,
            &tok,
            json!({"tools": [weather()]}),
            ToolFormat::MistralV11,
        );
        let text = "It is sunny, <b>really</b> [1, 2] {not json} [ARGS].";
        // Text alone is a whole answer.
        assert!(ends(&tok, c.clone(), text));
        assert!(ends(&tok, c.clone(), ""));
        let answer = format!("[THINK]Look it up.[/THINK]Let me look.{CALL}{CALL}");
        assert!(ends(&tok, c.clone(), &answer));
        let [s0, a0] = call(0, "weather", "{\"city\": \"Paris\"}");
        let [s1, a1] = call(1, "weather", "{\"city\": \"Paris\"}");
        let want = [
            Piece::Reasoning("Look it up.".into()),
            Piece::Content("Let me look.".into()),
            s0,
            a0,
            s1,
            a1,
        ];
        read_back(&tok, &answer, &want, 2);
        // After the trigger: calls only, fitting the schema.
        let town = format!("Hm.{}", CALL.replace("city", "town"));
        refused_at(&tok, &c, &town, town.find("town").unwrap());
        let after = format!("{CALL} Done.");
        refused_at(&tok, &c, &after, CALL.len());
        // parallel_tool_calls false: text, then at most one call.
        let body = json!({"tools": [weather()], "parallel_tool_calls": false});
        let single = constraint(&g, &tok, body, ToolFormat::MistralV11);
        assert!(ends(&tok, single.clone(), text));
        assert!(ends(&tok, single.clone(), &format!("Let me look.{CALL}")));
        let two = format!("Hm.{CALL}{CALL}");
        refused_at(&tok, &single, &two, 3 + CALL.len());
        // A vocabulary without the trigger token: nothing to switch on.
        let (plain, _) = compiler("smol.gguf").unwrap();
        let auto = crate::tools::tests::spec(json!({"tools": [weather()]}))
            .unwrap()
            .unwrap();
        assert_eq!(auto.grammar(ToolFormat::MistralV11, &plain), None);
    }

    /// The tool-call forms the real templates of Ministral 3 (`NAME[ARGS]`) and Mistral
    /// Small 3.2 (`NAME[CALL_ID]ID[ARGS]`) write: told from the template, and what they write
    /// for a past turn of two calls fits the grammar and reads back as those calls.
    #[test]
    fn what_the_ministral_3_and_mistral_small_templates_write_fits() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/mistral_v11_templates.json"
        );
        let fx: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let Some((tok, g)) = marked_compiler() else {
            return;
        };
        for key in ["ministral3", "mistral_small_3_2"] {
            let source = fx[key].as_str().unwrap();
            assert_eq!(
                ToolFormat::of_template(source),
                Some(ToolFormat::MistralV11),
                "{key}"
            );
            let turn = past_calls(source);
            let want_id = key == "mistral_small_3_2";
            assert_eq!(turn.contains("[CALL_ID]"), want_id, "{key}: {turn}");
            let body = json!({"tools": [weather(), booking()], "tool_choice": "required"});
            let c = constraint(&g, &tok, body, ToolFormat::MistralV11);
            assert!(ends(&tok, c, &turn), "{key}: {turn}");
            let [s0, a0] = call(0, "weather", "{\"city\": \"Paris\"}");
            let [s1, a1] = call(1, "book", "{\"city\": \"Rome\", \"nights\": 2}");
            read_back(&tok, &turn, &[s0, a0, s1, a1], 2);
        }
    }

    /// The calls part of an assistant turn of two calls as the template `source` writes it.
    fn past_calls(source: &str) -> String {
        use tuili_tokenizer::{ChatMessage, ChatTemplate};
        let template = ChatTemplate::new(source, "<s>", "</s>").unwrap();
        let mut asks = ChatMessage::new("assistant", "");
        asks.tool_calls = Some(json!([
            {"type": "function", "id": "call00001",
             "function": {"name": "weather", "arguments": {"city": "Paris"}}},
            {"type": "function", "id": "call00002",
             "function": {"name": "book", "arguments": {"city": "Rome", "nights": 2}}}]));
        let user = ChatMessage::new("user", "Weather in Paris, and a hotel in Rome?");
        let tools = json!([weather(), booking()]);
        let all = template
            .render_with(&[user, asks], false, Some(&tools), None)
            .unwrap();
        let from = all.find("[TOOL_CALLS]").expect("a call");
        let turn = &all[from..];
        turn.strip_suffix("</s>").unwrap_or(turn).to_string()
    }
}
