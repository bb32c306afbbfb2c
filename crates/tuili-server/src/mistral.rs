//! The tool calls of Mistral's tekken v11+ models (Ministral 3, Mistral Small 3.1/3.2,
//! Magistral, Devstral), split as they stream. Each call is `[TOOL_CALLS]NAME[ARGS]{json}`,
//! repeated for parallel calls; some versions write `[CALL_ID]ID` between the name and
//! `[ARGS]`. Text before the first `[TOOL_CALLS]` is content; a `[THINK]…[/THINK]` block
//! (Magistral, Ministral 3 Reasoning) is the thought.
//!
//! The markers are control tokens: the engine renders them into the text for these models
//! (`GenerateRequest::render_special`), since without them a call could not be told from text.

use crate::chat_output::{partial_suffix, Piece, Sink};

pub(crate) const TOOL_CALLS: &str = "[TOOL_CALLS]";
pub(crate) const ARGS: &str = "[ARGS]";
pub(crate) const CALL_ID: &str = "[CALL_ID]";
pub(crate) const THINK: &str = "[THINK]";
pub(crate) const THINK_END: &str = "[/THINK]";
/// A call's name (and id) longer than this without `[ARGS]` is not a call: shown as text.
const MAX_HEADER: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
enum State {
    #[default]
    Content,
    Thought,
    /// After `[TOOL_CALLS]`, up to `[ARGS]`.
    Header,
    /// Arguments of this call, up to the next `[TOOL_CALLS]` or the end.
    Args(usize),
}

/// Splits one answer; feed it text with [`push`](Self::push), then [`finish`](Self::finish).
#[derive(Debug, Default)]
pub struct MistralParser {
    state: State,
    held: String,
    calls: usize,
}

impl MistralParser {
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
                State::Content => {
                    let hit = [TOOL_CALLS, THINK]
                        .into_iter()
                        .filter_map(|m| self.held.find(m).map(|at| (at, m)))
                        .min();
                    let Some((at, marker)) = hit else {
                        self.give_out(&mut out, &[TOOL_CALLS, THINK], false);
                        return out;
                    };
                    self.emit(&mut out, at);
                    self.held.drain(..marker.len());
                    self.state = if marker == THINK {
                        State::Thought
                    } else {
                        State::Header
                    };
                }
                State::Thought => match self.held.find(THINK_END) {
                    Some(at) => {
                        self.emit(&mut out, at);
                        self.held.drain(..THINK_END.len());
                        self.state = State::Content;
                    }
                    None => {
                        self.give_out(&mut out, &[THINK_END], false);
                        return out;
                    }
                },
                State::Header => match self.held.find(ARGS) {
                    Some(at) if at <= MAX_HEADER && !name(&self.held[..at]).is_empty() => {
                        let name = name(&self.held[..at]).to_string();
                        self.held.drain(..at + ARGS.len());
                        let index = self.calls;
                        self.calls += 1;
                        out.push(Piece::CallStart { index, name });
                        self.state = State::Args(index);
                    }
                    None if self.held.len() < MAX_HEADER + ARGS.len() => return out,
                    // No name, or none in reach: the marker and what follows are text.
                    _ => {
                        out.push(Piece::Content(TOOL_CALLS.to_string()));
                        self.state = State::Content;
                    }
                },
                State::Args(_) => match self.held.find(TOOL_CALLS) {
                    Some(at) => {
                        let args = self.held[..at].trim_end().len();
                        self.emit(&mut out, args);
                        self.held.drain(..at - args + TOOL_CALLS.len());
                        self.state = State::Header;
                    }
                    None => {
                        self.give_out(&mut out, &[TOOL_CALLS], true);
                        return out;
                    }
                },
            }
        }
    }

    /// Whatever is held at the end: a call cut short before its `[ARGS]` is shown as the
    /// text it was.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        if self.state == State::Header {
            self.held.insert_str(0, TOOL_CALLS);
            self.state = State::Content;
        }
        let len = match self.state {
            State::Args(_) => self.held.trim_end().len(),
            _ => self.held.len(),
        };
        self.emit(&mut out, len);
        self.held.clear();
        out
    }

    /// Gives out the held text but for an end that might begin one of `markers` (and, for
    /// arguments, trailing whitespace: the layout between calls).
    fn give_out(&mut self, out: &mut Vec<Piece>, markers: &[&str], trim: bool) {
        let mut cut = self.held.len() - partial_suffix(&self.held, markers);
        if trim {
            cut = self.held[..cut].trim_end().len();
        }
        self.emit(out, cut);
    }

    /// Gives out the first `len` bytes held as the current state's kind.
    fn emit(&mut self, out: &mut Vec<Piece>, len: usize) {
        let sink = match self.state {
            State::Thought => Sink::Reasoning,
            State::Args(index) => Sink::Call(index),
            State::Content | State::Header => Sink::Content,
        };
        sink.emit(out, &self.held[..len]);
        self.held.drain(..len);
    }
}

/// The function name of a call's header (`NAME` or `NAME[CALL_ID]ID`).
fn name(header: &str) -> &str {
    header.split(CALL_ID).next().unwrap_or_default().trim()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) use crate::chat_output::tests::call;
    use crate::chat_output::OutputParser;
    use crate::tools::ToolFormat;

    /// Asserts what the server's parser for this format reads from `text` at every chunking.
    #[track_caller]
    pub(crate) fn at_every_step(text: &str, want: &[Piece], calls: usize) {
        let new = || OutputParser::new(Some(ToolFormat::MistralV11), false, false);
        crate::chat_output::tests::at_every_step(new, text, want, calls);
    }

    fn text(t: &str) -> Piece {
        Piece::Content(t.into())
    }

    #[test]
    fn calls_after_text_stream_name_first() {
        let out = "Let me look [1] {x}.[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\", \"tags\": [\"a]\"]}";
        let [s, a] = call(
            0,
            "get_weather",
            "{\"city\": \"Paris\", \"tags\": [\"a]\"]}",
        );
        at_every_step(out, &[text("Let me look [1] {x}."), s, a], 1);
        // The name goes out before the arguments end.
        let mut p = MistralParser::default();
        assert_eq!(
            p.push("[TOOL_CALLS]f[ARGS]{\"a\": "),
            [
                Piece::CallStart {
                    index: 0,
                    name: "f".into()
                },
                Piece::CallArgs {
                    index: 0,
                    text: "{\"a\":".into()
                }
            ]
        );
    }

    #[test]
    fn parallel_calls_with_and_without_call_ids() {
        let out = "[TOOL_CALLS]a[ARGS]{\"x\": 1}\n[TOOL_CALLS]b[CALL_ID]k3Xz9Qp2A[ARGS]{}";
        let [s0, a0] = call(0, "a", "{\"x\": 1}");
        let [s1, a1] = call(1, "b", "{}");
        at_every_step(out, &[s0, a0, s1, a1], 2);
    }

    #[test]
    fn thought_then_call_and_odd_output_as_text() {
        let out = "[THINK]Need [the] weather.[/THINK]Checking.[TOOL_CALLS]w[ARGS]{}";
        let [s, a] = call(0, "w", "{}");
        let want = [
            Piece::Reasoning("Need [the] weather.".into()),
            text("Checking."),
            s,
            a,
        ];
        at_every_step(out, &want, 1);
        // A call cut short before `[ARGS]`, or one with no name, stays text.
        at_every_step("Hi [TOOL_CALLS]get_w", &[text("Hi [TOOL_CALLS]get_w")], 0);
        at_every_step("[TOOL_CALLS][ARGS]{}", &[text("[TOOL_CALLS][ARGS]{}")], 0);
        let long = format!("[TOOL_CALLS]{}", "x".repeat(300));
        at_every_step(&long, &[text(&long)], 0);
    }
}
