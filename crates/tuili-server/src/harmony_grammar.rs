//! The grammar of a gpt-oss (harmony) answer that calls a tool, as [`crate::harmony`] reads
//! it. After the prompt's `<|start|>assistant` the model may write thoughts and preambles,
//! each `<|channel|>analysis<|message|>TEXT<|end|>` (or `commentary`) then
//! `<|start|>assistant`, and then the call: `<|channel|>commentary to=functions.NAME
//! <|constrain|>json<|message|>{ARGS}` with ARGS fitting NAME's schema. Its end, `<|call|>`,
//! ends the generation. As in llama.cpp's grammar for gpt-oss, the recipient may stand before
//! the channel instead (` to=functions.NAME<|channel|>commentary json<|message|>`, as the
//! template writes past calls), and the content type may be bare or absent. Under `auto` the
//! answer may end in `<|channel|>final<|message|>TEXT` instead of a call: the thought and the
//! answer are free, only a message addressed to `functions.` is constrained. A stray
//! `<|channel|>commentary` (maybe with ` to=assistant`) may stand before an analysis or final
//! channel, as gpt-oss-20b sometimes writes and llama.cpp's grammar allows.
//!
//! The markers are matched as the vocabulary's own tokens (`<[ID]>`), so that no run of
//! smaller tokens spells one; a vocabulary without them (a test model under gpt-oss's
//! template) gets them as text.

use serde_json::{json, Value};
use tuili_tokenizer::Tokenizer;

use crate::tools::json_layout;

/// Text of a message body: no marker that ends a body in [`crate::harmony`].
const TEXT: &str = r"TEXT: /(?s:.*)/ & ~/(?s:.*<\|(end|start|call|return)\|>.*)/";

/// A Lark string literal (JSON's escapes).
pub(crate) fn lit(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// `<[ID]>` when `marker` is one token of `tok`'s vocabulary.
pub(crate) fn token_ref(tok: &Tokenizer, marker: &str) -> Option<String> {
    tok.token_id(marker).map(|id| format!("<[{id}]>"))
}

/// The grammar of an answer ending in a call of one of `wanted` (tools in OpenAI's layout),
/// or for `auto` in a call or a final answer.
pub(crate) fn grammar(wanted: &[&Value], auto: bool, tok: &Tokenizer) -> String {
    let m = |s: &str| token_ref(tok, s).unwrap_or_else(|| lit(s));
    let (channel, message, start) = (m("<|channel|>"), m("<|message|>"), m("<|start|>"));
    let constrain = m("<|constrain|>");
    // A body and its `<|end|>`: as text, one lexeme (the lexer needs no lookahead).
    let (body, text_end) = match token_ref(tok, "<|end|>") {
        Some(end) => (format!("TEXT {end}"), String::new()),
        None => (
            "TEXT_END".to_string(),
            "TEXT_END: TEXT \"<|end|>\"\n".to_string(),
        ),
    };
    let mut rules = String::new();
    let mut calls = Vec::new();
    for (i, t) in wanted.iter().enumerate() {
        let f = &t["function"];
        let to = lit(&format!(
            " to=functions.{}",
            f["name"].as_str().unwrap_or_default()
        ));
        let mut args = match f.get("parameters") {
            Some(p) if p.is_object() => p.clone(),
            _ => json!({"type": "object"}),
        };
        args["x-guidance"] = json_layout();
        rules += &format!(
            "c{i}: ({to} {channel} kind | {channel} kind {to}) ctype {message} a{i}\na{i}: %json {args}\n"
        );
        calls.push(format!("c{i}"));
    }
    let end = if auto {
        format!("(call | stray? {channel} \"final\" {message} TEXT)")
    } else {
        "call".to_string()
    };
    format!(
        "start: (msg {start} \"assistant\")* {end}\n\
         msg: (stray? {channel} \"analysis\" | {channel} \"commentary\") {message} {body}\n\
         stray: {channel} \"commentary\" \" to=assistant\"?\n\
         call: {}\n\
         kind: \"commentary\" | \"analysis\"\n\
         ctype: ((\" \" | \" \" {constrain} | {constrain}) \"json\")?\n\
         {rules}{TEXT}\n{text_end}",
        calls.join(" | ")
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::chat_output::Piece;
    use crate::harmony::HarmonyParser;
    use crate::tools::tests::{
        booking, compiler, constraint, fits, marked_compiler, refused_at, weather,
    };
    use crate::tools::ToolFormat;

    const THOUGHT: &str =
        "<|channel|>analysis<|message|>Need the weather, <b>now</b> {x}.<|end|><|start|>assistant";
    const CALL: &str = "<|channel|>commentary to=functions.weather <|constrain|>json<|message|>{\"city\": \"Paris\"}";

    /// Whether `text` fits and completes the grammar: nothing but an end of generation
    /// (`<|call|>`) may follow.
    fn ends(tok: &tuili_tokenizer::Tokenizer, mut c: tuili_engine::Constraint, text: &str) -> bool {
        tok.encode(text, false, true)
            .into_iter()
            .all(|t| c.accept(t).is_ok())
            && c.is_finished()
    }

    /// What the harmony parser reads from `text` (the engine renders the markers).
    fn parsed(text: &str) -> Vec<Piece> {
        let mut p = HarmonyParser::default();
        let mut out = p.push(text);
        out.extend(p.finish());
        crate::chat_output::merged(out)
    }

    #[test]
    fn required_calls_follow_thoughts_and_fit_the_schema() {
        let Some((tok, g)) = marked_compiler() else {
            return;
        };
        let body = json!({"tools": [weather(), booking()], "tool_choice": "required"});
        let c = constraint(&g, &tok, body, ToolFormat::Harmony);
        let book = " to=functions.book<|channel|>commentary json<|message|>{\"city\": \"Rome\", \"nights\": 3, \"room\": \"double\"}";
        let preamble = "<|channel|>commentary<|message|>Checking.<|end|><|start|>assistant";
        for good in [
            format!("{THOUGHT}{CALL}"),
            CALL.to_string(),
            book.to_string(),
            format!("{THOUGHT}{preamble}{book}"),
            format!("{THOUGHT}<|channel|>analysis to=functions.weather<|constrain|>json<|message|>{{\"city\": \"Oslo\"}}"),
        ] {
            assert!(ends(&tok, c.clone(), &good), "{good}");
        }
        // The parser reads back what the grammar lets through.
        let mut want = vec![Piece::Reasoning("Need the weather, <b>now</b> {x}.".into())];
        want.extend([
            Piece::CallStart {
                index: 0,
                name: "weather".into(),
            },
            Piece::CallArgs {
                index: 0,
                text: "{\"city\": \"Paris\"}".into(),
            },
        ]);
        assert_eq!(parsed(&format!("{THOUGHT}{CALL}")), want);

        let at = |text: &str, what: &str| text.find(what).unwrap();
        // A final answer, an unknown function, arguments off the schema, a thought that
        // never ends in a call: each refused at the token where it goes wrong.
        let final_answer = format!("{THOUGHT}<|channel|>final<|message|>Sunny.");
        refused_at(&tok, &c, &final_answer, at(&final_answer, "final"));
        let unknown = CALL.replace("weather", "stocks");
        refused_at(&tok, &c, &unknown, at(&unknown, "stocks") + 1);
        let town = CALL.replace("city", "town");
        refused_at(&tok, &c, &town, at(&town, "town"));
        let nights = book.replace('3', "12");
        refused_at(&tok, &c, &nights, at(&nights, "12") + 1);
        let suite = book.replace("double", "suite");
        refused_at(&tok, &c, &suite, at(&suite, "suite"));
        let stop = "<|channel|>analysis<|message|>Done.<|end|><|return|>";
        refused_at(&tok, &c, stop, at(stop, "<|return|>"));
        let stop = format!("{CALL}<|end|>");
        refused_at(&tok, &c, &stop, at(&stop, "<|end|>"));
        // Markers are their tokens: the same text spelled by ordinary tokens is refused.
        // (SmolLM2's own ids: the markers were added after them.)
        let (plain, _) = compiler("smol.gguf").unwrap();
        let spelled = plain.encode(CALL, false, false);
        assert!(spelled.len() > tok.encode(CALL, false, true).len());
        assert!(c.clone().accept(spelled[0]).is_err());

        // A named function: only it.
        let body = json!({"tools": [weather(), booking()],
                          "tool_choice": {"type": "function", "function": {"name": "book"}}});
        let c = constraint(&g, &tok, body, ToolFormat::Harmony);
        assert!(ends(&tok, c.clone(), &format!("{THOUGHT}{book}")));
        refused_at(&tok, &c, CALL, at(CALL, "weather") + 1);
    }

    /// What gpt-oss's own template writes for a thought and a call (the recipient before
    /// the channel, the bare content type), and for an answer, fits the grammars.
    #[test]
    fn what_the_gpt_oss_template_writes_fits() {
        let Some((tok, g)) = marked_compiler() else {
            return;
        };
        let (tools, call_turn, answer_turn) = crate::harmony::tests::gpt_oss_turns();
        // `<|call|>` ends the generation: the grammar is complete before it.
        let call_turn = call_turn.strip_suffix("<|call|>").expect("a call's end");
        assert!(call_turn.contains(" to=functions.get_weather<|channel|>commentary json"));
        for choice in ["required", "auto"] {
            let body = json!({"tools": tools, "tool_choice": choice});
            let c = constraint(&g, &tok, body, ToolFormat::Harmony);
            assert!(ends(&tok, c.clone(), call_turn), "{choice}: {call_turn}");
            let answer = answer_turn
                .strip_suffix("<|return|>")
                .expect("an answer's end");
            assert_eq!(fits(&tok, c, answer), choice == "auto", "{answer}");
        }
    }

    #[test]
    fn auto_leaves_thought_and_answer_free_and_constrains_calls() {
        let Some((tok, g)) = marked_compiler() else {
            return;
        };
        let c = constraint(&g, &tok, json!({"tools": [weather()]}), ToolFormat::Harmony);
        let answer =
            format!("{THOUGHT}<|channel|>final<|message|>It is <b>sunny</b> {{\"not\": json}}.");
        assert!(fits(&tok, c.clone(), &format!("{answer}<|return|>")));
        assert!(ends(&tok, c.clone(), &format!("{THOUGHT}{CALL}")));
        assert_eq!(
            parsed(&answer),
            [
                Piece::Reasoning("Need the weather, <b>now</b> {x}.".into()),
                Piece::Content("It is <b>sunny</b> {\"not\": json}.".into())
            ]
        );
        let wrong = CALL.replace("Paris", "1\"");
        assert!(!fits(&tok, c.clone(), &wrong));
        let town = format!("{THOUGHT}{}", CALL.replace("city", "town"));
        refused_at(&tok, &c, &town, town.find("town").unwrap());
    }

    /// gpt-oss-20b's stray `<|channel|>commentary` before an analysis or final channel fits
    /// (as in llama.cpp's grammar) and is read past; before anything else it does not fit.
    #[test]
    fn a_stray_commentary_before_analysis_or_final_fits() {
        let Some((tok, g)) = marked_compiler() else {
            return;
        };
        let stray_thought =
            "<|channel|>commentary<|channel|>analysis<|message|>Hm.<|end|><|start|>assistant";
        let stray_final = "<|channel|>commentary to=assistant<|channel|>final<|message|>Sunny.";
        let auto = constraint(&g, &tok, json!({"tools": [weather()]}), ToolFormat::Harmony);
        assert!(fits(
            &tok,
            auto.clone(),
            &format!("{stray_thought}{stray_final}")
        ));
        let required = json!({"tools": [weather()], "tool_choice": "required"});
        let c = constraint(&g, &tok, required, ToolFormat::Harmony);
        assert!(ends(&tok, c.clone(), &format!("{stray_thought}{CALL}")));
        refused_at(&tok, &c, stray_final, stray_final.find("final").unwrap());
        let twice = "<|channel|>commentary<|channel|>commentary<|channel|>analysis";
        refused_at(&tok, &auto, twice, twice.rfind("commentary").unwrap());
        assert_eq!(
            parsed(&format!("{stray_thought}{stray_final}")),
            [
                Piece::Reasoning("Hm.".into()),
                Piece::Content("Sunny.".into())
            ]
        );
    }

    #[test]
    fn without_the_marker_tokens_markers_are_text() {
        // A test model's vocabulary under gpt-oss's template (see tests/harmony.rs).
        let Some((tok, g)) = compiler("smol.gguf") else {
            return;
        };
        let body = json!({"tools": [weather()], "tool_choice": "required"});
        let c = constraint(&g, &tok, body, ToolFormat::Harmony);
        assert!(ends(&tok, c.clone(), &format!("{THOUGHT}{CALL}")));
        let town = CALL.replace("city", "town");
        refused_at(&tok, &c, &town, town.find("town").unwrap());
        let final_answer = format!("{THOUGHT}<|channel|>final<|message|>Sunny.");
        assert!(!fits(&tok, c, &final_answer));
    }
}
