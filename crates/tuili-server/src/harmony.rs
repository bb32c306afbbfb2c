//! gpt-oss's answers in OpenAI's harmony format, split as they stream. An answer is a run
//! of messages, `{header}<|message|>{body}<|end|>`, each after `<|start|>` (the first one's
//! `<|start|>assistant` is the end of the prompt). The header names the channel and maybe
//! a recipient:
//!
//! - `<|channel|>analysis` is the thought: `reasoning_content`;
//! - `<|channel|>commentary to=functions.NAME <|constrain|>json` is a call of NAME whose
//!   body is its JSON arguments (the recipient may also stand before the channel, and the
//!   content type may be written without `<|constrain|>`);
//! - `<|channel|>final`, and commentary with no recipient (a preamble meant for the user),
//!   are `content`.
//!
//! The markers are control tokens: the engine renders them into the text for these models
//! (`GenerateRequest::render_special`). `<|call|>` and `<|return|>` end the generation and
//! never reach the text; they are read as ends of a message all the same, as in a
//! rendered conversation.

use crate::chat_output::{partial_suffix, Piece, Sink};

const START: &str = "<|start|>";
const END: &str = "<|end|>";
const MESSAGE: &str = "<|message|>";
const CHANNEL: &str = "<|channel|>";
const CALL: &str = "<|call|>";
const RETURN: &str = "<|return|>";
/// What ends a message's body (`<|start|>` too: a model that skips `<|end|>`).
const BODY_ENDS: [&str; 4] = [END, CALL, RETURN, START];
/// A header longer than this without `<|message|>` is not a header: shown as text.
const MAX_HEADER: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Reading a header, up to `<|message|>`.
    Header,
    Body(Sink),
    /// After a message's end, up to the next `<|start|>`.
    Between,
}

/// Splits one harmony answer; feed it text with [`push`](Self::push), then
/// [`finish`](Self::finish).
#[derive(Debug)]
pub struct HarmonyParser {
    state: State,
    held: String,
    calls: usize,
}

impl Default for HarmonyParser {
    fn default() -> Self {
        HarmonyParser {
            state: State::Header,
            held: String::new(),
            calls: 0,
        }
    }
}

impl HarmonyParser {
    /// Tool calls parsed so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// The pieces `text` completes.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.held.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Header => match self.held.find(MESSAGE) {
                    Some(at) if at <= MAX_HEADER => {
                        let header: String = self.held.drain(..at + MESSAGE.len()).collect();
                        let kind = self.kind(&header[..at], &mut out);
                        self.state = State::Body(kind);
                    }
                    found => {
                        if found.is_none() && could_be_header(&self.held) {
                            return out;
                        }
                        // Text that is no header (a model that ignores the format).
                        self.state = State::Body(Sink::Content);
                    }
                },
                State::Body(kind) => {
                    let hit = BODY_ENDS
                        .iter()
                        .filter_map(|m| self.held.find(m).map(|at| (at, *m)))
                        .min();
                    let Some((at, marker)) = hit else {
                        let cut = self.held.len() - partial_suffix(&self.held, &BODY_ENDS);
                        kind.emit(&mut out, &self.held[..cut]);
                        self.held.drain(..cut);
                        return out;
                    };
                    kind.emit(&mut out, &self.held[..at]);
                    self.held.drain(..at + marker.len());
                    self.state = if marker == START {
                        State::Header
                    } else {
                        State::Between
                    };
                }
                State::Between => match self.held.find(START) {
                    Some(at) => {
                        self.held.drain(..at + START.len());
                        self.state = State::Header;
                    }
                    None => {
                        let rest = self.held.trim_start();
                        if rest.is_empty() || START.starts_with(rest) {
                            return out;
                        }
                        // Text after a message's end with no new message: shown.
                        self.held = rest.to_string();
                        self.state = State::Body(Sink::Content);
                    }
                },
            }
        }
    }

    /// Whatever is held at the end: a body's tail, or a header that never finished (shown
    /// as the text it was).
    pub fn finish(&mut self) -> Vec<Piece> {
        let held = std::mem::take(&mut self.held);
        let mut out = Vec::new();
        match self.state {
            State::Body(kind) => kind.emit(&mut out, &held),
            State::Header => Sink::Content.emit(&mut out, &held),
            State::Between => {}
        }
        self.state = State::Between;
        out
    }

    /// The kind of the message whose header is `header`; a call's start goes out now.
    fn kind(&mut self, header: &str, out: &mut Vec<Piece>) -> Sink {
        let (channel, recipient) = parse_header(header);
        match recipient {
            Some(r) => match r.strip_prefix("functions.") {
                Some(name) if !name.is_empty() => {
                    let index = self.calls;
                    self.calls += 1;
                    out.push(Piece::CallStart {
                        index,
                        name: name.to_string(),
                    });
                    Sink::Call(index)
                }
                // Built-in tools (browser, python) are the model's own working: thought.
                _ => Sink::Reasoning,
            },
            None if channel == Some("analysis") => Sink::Reasoning,
            None => Sink::Content,
        }
    }
}

/// What gpt-oss-20b sometimes writes before `<|channel|>analysis` or `<|channel|>final`, with
/// ` to=assistant` or without; llama.cpp drops it, and so does this parser.
const STRAY: &str = "<|channel|>commentary";
const STRAY_TO: &str = " to=assistant";

/// `header` without a stray commentary channel before an analysis or final one.
fn without_stray(header: &str) -> &str {
    // Right after the role, if any (the first message's role is in the prompt).
    let Some(rest) = header
        .trim_start()
        .trim_start_matches("assistant")
        .strip_prefix(STRAY)
    else {
        return header;
    };
    let rest = rest.strip_prefix(STRAY_TO).unwrap_or(rest);
    let real = ["analysis", "final"]
        .iter()
        .any(|c| rest.strip_prefix(CHANNEL).is_some_and(|r| r.starts_with(c)));
    if real {
        rest
    } else {
        header
    }
}

/// The channel and the recipient (`to=...`) a header names.
fn parse_header(header: &str) -> (Option<&str>, Option<&str>) {
    let header = without_stray(header);
    // A word ends at whitespace or at the next marker.
    let word = |s: &'static str| {
        header.find(s).map(|at| {
            let rest = &header[at + s.len()..];
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '<')
                .unwrap_or(rest.len());
            &rest[..end]
        })
    };
    let channel = word(CHANNEL).filter(|c| !c.is_empty());
    let recipient = word("to=").filter(|r| !r.is_empty());
    (channel, recipient)
}

/// Whether `held` may still grow into a header: it opens with a marker, a recipient or
/// the role (or the start of one), and has no body end in it.
fn could_be_header(held: &str) -> bool {
    if held.len() > MAX_HEADER || [END, CALL, RETURN].iter().any(|m| held.contains(m)) {
        return false;
    }
    let t = held.trim_start();
    ["<|", "to=", "assistant"]
        .iter()
        .any(|open| t.starts_with(open) || open.starts_with(t))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use crate::chat_output::tests::call;
    use crate::chat_output::OutputParser;

    #[track_caller]
    fn at_every_step(text: &str, want: &[Piece], calls: usize) {
        crate::chat_output::tests::at_every_step(OutputParser::harmony, text, want, calls);
    }

    fn thought(t: &str) -> Piece {
        Piece::Reasoning(t.into())
    }

    fn text(t: &str) -> Piece {
        Piece::Content(t.into())
    }

    // The fixtures are the harmony spec's own examples (openai/harmony, docs/format.md),
    // as the model writes them after the prompt's `<|start|>assistant`; `<|return|>` and
    // `<|call|>` end the generation, so the engine's text stops before them.

    #[test]
    fn thought_then_final_answer() {
        let out = "<|channel|>analysis<|message|>User asks: \"What is 2 + 2?\" Simple arithmetic. Provide answer.<|end|><|start|>assistant<|channel|>final<|message|>2 + 2 = 4.";
        let want = [
            thought("User asks: \"What is 2 + 2?\" Simple arithmetic. Provide answer."),
            text("2 + 2 = 4."),
        ];
        at_every_step(out, &want, 0);
        // A rendered turn ends with <|return|>; it is an end all the same.
        at_every_step(&format!("{out}<|return|>"), &want, 0);
    }

    #[test]
    fn function_call_after_a_thought() {
        let out = "<|channel|>analysis<|message|>Need to use function get_weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"location\":\"San Francisco\"}";
        let [s, a] = call(0, "get_weather", "{\"location\":\"San Francisco\"}");
        let want = [thought("Need to use function get_weather."), s, a];
        at_every_step(out, &want, 1);
        at_every_step(&format!("{out}<|call|>"), &want, 1);
    }

    #[test]
    fn preamble_then_a_call_without_a_space_before_constrain() {
        let out = "<|channel|>analysis<|message|>plan it<|end|><|start|>assistant<|channel|>commentary<|message|>**Action plan**:\n1. Generate an HTML file\n---\nWill start executing the plan step by step<|end|><|start|>assistant<|channel|>commentary to=functions.generate_file<|constrain|>json<|message|>{\"template\": \"basic_html\", \"path\": \"index.html\"}";
        let [s, a] = call(
            0,
            "generate_file",
            "{\"template\": \"basic_html\", \"path\": \"index.html\"}",
        );
        let want = [
            thought("plan it"),
            text("**Action plan**:\n1. Generate an HTML file\n---\nWill start executing the plan step by step"),
            s,
            a,
        ];
        at_every_step(out, &want, 1);
    }

    #[test]
    fn recipient_in_the_role_part_and_several_calls() {
        // "The recipient might be defined in the role or channel section of the header";
        // gpt-oss's chat template writes past calls this way, with the bare content type.
        let out = " to=functions.a<|channel|>commentary json<|message|>{\"x\": 1}<|call|><|start|>assistant to=functions.b<|channel|>commentary json<|message|>{}";
        let [s0, a0] = call(0, "a", "{\"x\": 1}");
        let [s1, a1] = call(1, "b", "{}");
        at_every_step(out, &[s0, a0, s1, a1], 2);
    }

    #[test]
    fn built_in_tools_are_thought_and_odd_output_is_text() {
        let out =
            "<|channel|>analysis to=browser.search code<|message|>{\"query\": \"tuili\"}<|call|>";
        at_every_step(out, &[thought("{\"query\": \"tuili\"}")], 0);
        // A model that writes no header at all: its text is the answer, at once.
        let mut p = HarmonyParser::default();
        assert_eq!(p.push("Hello"), vec![text("Hello")]);
        at_every_step("Hello <|there|> you", &[text("Hello <|there|> you")], 0);
        // A header cut short by the end of the output is shown as it was.
        at_every_step("<|channel|>fin", &[text("<|channel|>fin")], 0);
        // A final answer with no channel named, and a message missing its <|end|>.
        at_every_step(
            "assistant<|message|>hi<|start|>assistant<|channel|>final<|message|>there",
            &[text("hithere")],
            0,
        );
    }

    #[test]
    fn a_stray_commentary_channel_before_analysis_or_final_is_dropped() {
        // gpt-oss-20b's slip that llama.cpp tolerates (its gpt-oss parser's stray_commentary).
        let out = "<|channel|>commentary<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>commentary to=assistant<|channel|>final<|message|>Answer.";
        at_every_step(out, &[thought("Think."), text("Answer.")], 0);
        let call_after = "<|channel|>commentary<|channel|>analysis<|message|>t<|end|><|start|>assistant<|channel|>commentary to=functions.f <|constrain|>json<|message|>{}";
        let [s, a] = call(0, "f", "{}");
        at_every_step(call_after, &[thought("t"), s, a], 1);
        // A preamble (commentary with its own body) is no stray.
        let preamble = "<|channel|>commentary<|message|>Checking.<|end|>";
        at_every_step(preamble, &[text("Checking.")], 0);
    }

    #[test]
    fn a_marker_is_never_split_into_the_text() {
        let mut p = HarmonyParser::default();
        assert_eq!(p.push("<|channel|>final<|message|>ab<|e"), vec![text("ab")]);
        assert_eq!(p.push("nd|>"), vec![]);
        assert_eq!(
            p.push("<|start|>assistant<|channel|>analysis<|mess"),
            vec![]
        );
        assert_eq!(p.push("age|>x"), vec![thought("x")]);
        assert_eq!(p.finish(), vec![]);
    }

    /// What gpt-oss's own chat template writes for an assistant's turns: the tools shown,
    /// the model's part of a turn with a thought and a call of `get_weather` (what follows
    /// the generation prompt), and after the tool's result the answer's turn.
    pub(crate) fn gpt_oss_turns() -> (serde_json::Value, String, String) {
        use serde_json::{json, Value};
        use tuili_tokenizer::{ChatMessage, ChatTemplate};
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tuili-tokenizer/tests/data/chat_gpt_oss.json"
        );
        let fx: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let source = fx["template"].as_str().unwrap();
        assert_eq!(
            crate::tools::ToolFormat::of_template(source),
            Some(crate::tools::ToolFormat::Harmony)
        );
        let template = ChatTemplate::new(source, "<|startoftext|>", "<|return|>").unwrap();
        let tools = json!([{"type": "function", "function": {"name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
        let mut asks = ChatMessage::new("assistant", "Need the weather in Paris.");
        asks.tool_calls = Some(json!([{"type": "function", "id": "call_1",
            "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]));
        let mut result = ChatMessage::new("tool", "{\"temp\": 21}");
        result.tool_call_id = Some("call_1".into());
        let user = ChatMessage::new("user", "Weather in Paris?");
        let answer = ChatMessage::new("assistant", "It is **21 °C**.");

        let render = |messages: &[ChatMessage], gen| {
            template
                .render_with(messages, gen, Some(&tools), None)
                .unwrap()
        };
        let prompt = render(std::slice::from_ref(&user), true);
        let all = render(&[user.clone(), asks.clone()], false);
        assert!(all.starts_with(&prompt), "{prompt}\n---\n{all}");
        let call = all[prompt.len()..].to_string();
        // After the tool's result, the answer (its thought is dropped once answered).
        let all = render(&[user, asks, result, answer], false);
        let (_, turn) = all.rsplit_once("<|start|>assistant").unwrap();
        (tools, call, turn.to_string())
    }

    /// What gpt-oss's own chat template writes for an assistant's turns reads back as those
    /// turns.
    #[test]
    fn reads_back_what_the_gpt_oss_template_writes() {
        let (_, call_turn, answer_turn) = gpt_oss_turns();
        let [s, a] = call(0, "get_weather", "{\"city\": \"Paris\"}");
        let want = [thought("Need the weather in Paris."), s, a];
        at_every_step(&call_turn, &want, 1);
        at_every_step(&answer_turn, &[text("It is **21 °C**.")], 0);
    }
}
