//! A chat answer split as it streams: the thought (`<think>…</think>`) into
//! `reasoning_content`, tool calls (in the model's format) into `tool_calls`, the rest into
//! `content`. Text that might begin a marker is held back until it is known not to, so a
//! marker is never split across deltas and never shown as content.

use serde_json::Value;

use crate::harmony::HarmonyParser;
use crate::mistral::MistralParser;
use crate::tools::ToolFormat;

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";
const CALL_OPEN: &str = "<tool_call>";
const CALL_CLOSE: &str = "</tool_call>";

/// One piece of a parsed answer, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Visible text.
    Content(String),
    /// Thought.
    Reasoning(String),
    /// A tool call's start: its name (its arguments follow as [`Piece::CallArgs`]).
    CallStart {
        /// Position among this answer's calls.
        index: usize,
        /// Function name.
        name: String,
    },
    /// More of a started call's arguments (JSON text, to concatenate).
    CallArgs {
        /// Which call.
        index: usize,
        /// The fragment.
        text: String,
    },
    /// A complete tool call.
    ToolCall {
        /// Position among this answer's calls.
        index: usize,
        /// Function name.
        name: String,
        /// Arguments as a JSON string (OpenAI's layout).
        arguments: String,
    },
}

/// Where a run of an answer's text goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Sink {
    Reasoning,
    Content,
    /// Arguments of this call.
    Call(usize),
}

impl Sink {
    /// Gives out `text`, if any, as this kind of piece.
    pub(crate) fn emit(self, out: &mut Vec<Piece>, text: &str) {
        if text.is_empty() {
            return;
        }
        let text = text.to_string();
        out.push(match self {
            Sink::Reasoning => Piece::Reasoning(text),
            Sink::Content => Piece::Content(text),
            Sink::Call(index) => Piece::CallArgs { index, text },
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Content,
    Reasoning,
    Call,
}

/// Splits one choice's text; feed it deltas with [`push`](Self::push), then
/// [`finish`](Self::finish).
#[derive(Debug)]
pub struct OutputParser {
    tools: Option<ToolFormat>,
    reasoning: bool,
    state: State,
    /// Text not yet given out (a possible marker start, or a call's body).
    held: String,
    calls: usize,
    /// Markers that end plain content.
    open: Vec<&'static str>,
    /// Whitespace right after a thought or a call is the template's layout, not content.
    skip_space: bool,
    /// The Hermes call whose arguments are streaming (its header parsed).
    streaming_call: Option<usize>,
    /// Formats whose calls are the whole answer (Llama 3.x, Mistral): `None` until the
    /// first visible character says whether the answer is calls (held to the end) or text.
    whole: Option<bool>,
    /// Formats whose markers are rendered control tokens, split by their own parser.
    framed: Option<Framed>,
}

/// A format read by a parser of its own.
#[derive(Debug)]
enum Framed {
    /// gpt-oss: harmony messages, split by their channels.
    Harmony(HarmonyParser),
    /// Mistral v11+: `[TOOL_CALLS]NAME[ARGS]{...}` calls.
    Mistral(MistralParser),
}

impl OutputParser {
    /// A parser for `tools` calls (none: no parsing of calls) that splits out
    /// `<think>` blocks when `reasoning`; `in_thought` when the prompt already opened one.
    pub fn new(tools: Option<ToolFormat>, reasoning: bool, in_thought: bool) -> OutputParser {
        OutputParser {
            tools,
            reasoning,
            state: if in_thought {
                State::Reasoning
            } else {
                State::Content
            },
            held: String::new(),
            calls: 0,
            open: [
                (reasoning, THINK_OPEN),
                (
                    matches!(tools, Some(ToolFormat::Hermes | ToolFormat::QwenXml)),
                    CALL_OPEN,
                ),
            ]
            .into_iter()
            .filter_map(|(on, m)| on.then_some(m))
            .collect(),
            skip_space: false,
            streaming_call: None,
            whole: None,
            framed: (tools == Some(ToolFormat::MistralV11))
                .then(|| Framed::Mistral(MistralParser::default())),
        }
    }

    /// A parser for gpt-oss's harmony messages (thought, calls and answer by channel).
    pub fn harmony() -> OutputParser {
        OutputParser {
            framed: Some(Framed::Harmony(HarmonyParser::default())),
            ..OutputParser::new(None, false, false)
        }
    }

    /// Whether this parser changes anything (else the text passes through as content).
    pub fn is_active(&self) -> bool {
        self.tools.is_some() || self.reasoning || self.framed.is_some()
    }

    /// Tool calls parsed so far.
    pub fn calls(&self) -> usize {
        match &self.framed {
            Some(Framed::Harmony(h)) => h.calls(),
            Some(Framed::Mistral(m)) => m.calls(),
            None => self.calls,
        }
    }

    /// The pieces `text` completes.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        match self.framed.as_mut() {
            Some(Framed::Harmony(h)) => return h.push(text),
            Some(Framed::Mistral(m)) => return m.push(text),
            None => {}
        }
        if let Some(opener) = self.whole_answer_opener() {
            if self.whole != Some(false) {
                self.held.push_str(text);
                match self.held.trim_start().chars().next() {
                    None => return Vec::new(),
                    Some(c) if c == opener => {
                        self.whole = Some(true);
                        return Vec::new();
                    }
                    Some(_) => {
                        self.whole = Some(false);
                        let held = std::mem::take(&mut self.held);
                        return self.push(&held);
                    }
                }
            }
        }
        self.held.push_str(text);
        let mut out = Vec::new();
        loop {
            let close = if self.state == State::Reasoning {
                THINK_CLOSE
            } else {
                CALL_CLOSE
            };
            let open = &self.open;
            if self.skip_space && self.state == State::Content {
                let rest = self.held.trim_start_matches(['\n', ' ']).len();
                self.held.drain(..self.held.len() - rest);
                if self.held.is_empty() {
                    return out;
                }
                self.skip_space = false;
            }
            match self.state {
                State::Content => {
                    let hit = open
                        .iter()
                        .filter_map(|m| self.held.find(m).map(|at| (at, *m)))
                        .min();
                    match hit {
                        Some((at, marker)) => {
                            push_text(&mut out, State::Content, &self.held[..at]);
                            self.held.drain(..at + marker.len());
                            self.state = if marker == THINK_OPEN {
                                State::Reasoning
                            } else {
                                State::Call
                            };
                        }
                        None => {
                            let open = open.clone();
                            self.give_out_all_but_marker_starts(&mut out, &open);
                            return out;
                        }
                    }
                }
                State::Reasoning => match self.held.find(close) {
                    Some(at) => {
                        push_text(&mut out, State::Reasoning, &self.held[..at]);
                        self.held.drain(..at + close.len());
                        self.skip_space = true;
                        self.state = State::Content;
                    }
                    None => {
                        self.give_out_all_but_marker_starts(&mut out, &[close]);
                        return out;
                    }
                },
                State::Call => {
                    // XML calls go out whole at their closing tag.
                    let json = self.tools != Some(ToolFormat::QwenXml);
                    if json && self.streaming_call.is_none() {
                        if let Header::Done { name, len } = header(&self.held) {
                            // `{"name": ..., "arguments": ` seen: the name goes out now,
                            // the arguments as they come.
                            self.held.drain(..len);
                            let index = self.calls;
                            self.calls += 1;
                            self.streaming_call = Some(index);
                            out.push(Piece::CallStart { index, name });
                            continue;
                        }
                    }
                    match (self.held.find(close), self.streaming_call) {
                        (Some(at), Some(index)) => {
                            push_args(&mut out, index, without_outer_close(&self.held[..at]));
                            self.held.drain(..at + close.len());
                            self.end_call();
                        }
                        (Some(at), None) => {
                            // A call of another layout: parsed whole.
                            let body = self.held[..at].to_string();
                            self.held.drain(..at + close.len());
                            self.end_call();
                            out.push(self.call(&body));
                        }
                        (None, Some(index)) => {
                            let cut = args_ready(&self.held);
                            push_args(&mut out, index, &self.held[..cut]);
                            self.held.drain(..cut);
                            return out;
                        }
                        (None, None) => return out,
                    }
                }
            }
        }
    }

    /// Gives out the held text as the current state's kind, but for an end that might
    /// begin one of `markers`.
    fn give_out_all_but_marker_starts(&mut self, out: &mut Vec<Piece>, markers: &[&str]) {
        let cut = self.held.len() - partial_suffix(&self.held, markers);
        push_text(out, self.state, &self.held[..cut]);
        self.held.drain(..cut);
    }

    /// Whatever is held at the end: a call whose closing tag never came is a call if its
    /// body is whole, else shown as the text it was.
    pub fn finish(&mut self) -> Vec<Piece> {
        match self.framed.as_mut() {
            Some(Framed::Harmony(h)) => return h.finish(),
            Some(Framed::Mistral(m)) => return m.finish(),
            None => {}
        }
        let held = std::mem::take(&mut self.held);
        let mut out = Vec::new();
        if self.whole == Some(true) {
            match self.whole_calls(&held) {
                Some(calls) => out.extend(calls),
                None => push_text(&mut out, State::Content, &held),
            }
            return out;
        }
        match (self.state, self.streaming_call) {
            (State::Call, Some(index)) => push_args(&mut out, index, without_outer_close(&held)),
            (State::Call, None) => match self.call(&held) {
                Piece::Content(_) => {
                    push_text(&mut out, State::Content, &format!("{CALL_OPEN}{held}"))
                }
                call => out.push(call),
            },
            (s, _) => push_text(&mut out, s, &held),
        }
        self.end_call();
        out
    }

    fn end_call(&mut self) {
        self.streaming_call = None;
        self.skip_space = true;
        self.state = State::Content;
    }

    /// The character that opens an answer made of calls, for formats where the calls
    /// are the whole answer.
    fn whole_answer_opener(&self) -> Option<char> {
        match self.tools {
            Some(ToolFormat::Llama3) => Some('{'),
            Some(ToolFormat::Mistral) => Some('['),
            Some(
                ToolFormat::Hermes
                | ToolFormat::QwenXml
                | ToolFormat::Harmony
                | ToolFormat::MistralV11,
            )
            | None => None,
        }
    }

    /// An answer of calls: Llama 3.x's objects joined by `;`, or Mistral's list. `None`
    /// when any part is not a call (then it is text).
    fn whole_calls(&mut self, text: &str) -> Option<Vec<Piece>> {
        let values: Vec<Value> = match self.tools {
            Some(ToolFormat::Mistral) => match serde_json::from_str(text.trim()).ok()? {
                Value::Array(items) => items,
                _ => return None,
            },
            _ => text
                .split(';')
                .map(|part| serde_json::from_str(part.trim()).ok())
                .collect::<Option<Vec<Value>>>()?,
        };
        let calls: Vec<(String, String)> = values.iter().map(call_of).collect::<Option<_>>()?;
        Some(
            calls
                .into_iter()
                .map(|(n, a)| self.next_call(n, a))
                .collect(),
        )
    }

    fn next_call(&mut self, name: String, arguments: String) -> Piece {
        self.calls += 1;
        Piece::ToolCall {
            index: self.calls - 1,
            name,
            arguments,
        }
    }

    /// A call's body as a tool call, or as plain text when it is not `{"name", "arguments"}`.
    fn call(&mut self, body: &str) -> Piece {
        let parsed = if self.tools == Some(ToolFormat::QwenXml) {
            crate::tool_xml::parse_call(body)
        } else {
            serde_json::from_str::<Value>(body.trim())
                .ok()
                .as_ref()
                .and_then(call_of)
        };
        match parsed {
            Some((name, arguments)) => self.next_call(name, arguments),
            None => Piece::Content(format!("{CALL_OPEN}{body}{CALL_CLOSE}")),
        }
    }
}

/// How far a Hermes call body is into `{"name": "...", "arguments": `.
#[derive(Debug, PartialEq)]
enum Header {
    /// Could still become it.
    Partial,
    /// Cannot.
    NoMatch,
    /// Complete, with the first character of the arguments after it.
    Done {
        /// The function name.
        name: String,
        /// Bytes of the header.
        len: usize,
    },
}

fn header(s: &str) -> Header {
    let b = s.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    // One of `lits` at `i`: advances past it; `Err` is the verdict when it is not there.
    let expect = |i: &mut usize, lits: &[&str]| -> Result<(), Header> {
        let rest = &s[*i..];
        if let Some(l) = lits.iter().find(|l| rest.starts_with(**l)) {
            *i += l.len();
            return Ok(());
        }
        Err(if lits.iter().any(|l| l.starts_with(rest)) {
            Header::Partial
        } else {
            Header::NoMatch
        })
    };
    let steps = |i: &mut usize| -> Result<String, Header> {
        skip_ws(i);
        expect(i, &["{"])?;
        skip_ws(i);
        expect(i, &["\"name\""])?;
        skip_ws(i);
        expect(i, &[":"])?;
        skip_ws(i);
        match b.get(*i) {
            None => return Err(Header::Partial),
            Some(b'"') => {}
            Some(_) => return Err(Header::NoMatch),
        }
        let mut j = *i + 1;
        while j < b.len() && b[j] != b'"' {
            j += if b[j] == b'\\' { 2 } else { 1 };
        }
        if j >= b.len() {
            return Err(Header::Partial);
        }
        let name: String = serde_json::from_str(&s[*i..=j]).map_err(|_| Header::NoMatch)?;
        *i = j + 1;
        skip_ws(i);
        expect(i, &[","])?;
        skip_ws(i);
        expect(i, &["\"arguments\"", "\"parameters\""])?;
        skip_ws(i);
        expect(i, &[":"])?;
        skip_ws(i);
        if *i >= b.len() {
            return Err(Header::Partial);
        }
        Ok(name)
    };
    match steps(&mut i) {
        Ok(name) => Header::Done { name, len: i },
        Err(verdict) => verdict,
    }
}

/// The arguments text of what ends a call body: without the call object's closing brace
/// and the whitespace around it.
fn without_outer_close(body: &str) -> &str {
    let t = body.trim_end();
    t.strip_suffix('}').unwrap_or(t).trim_end()
}

/// How much of a streaming call's held arguments can go out: all but what might be the
/// call object's closing brace, whitespace, or the start of `</tool_call>`.
fn args_ready(held: &str) -> usize {
    let tag = partial_suffix(held, &[CALL_CLOSE]);
    let before = held[..held.len() - tag].trim_end();
    before.strip_suffix('}').unwrap_or(before).len()
}

fn push_args(out: &mut Vec<Piece>, index: usize, text: &str) {
    if !text.is_empty() {
        out.push(Piece::CallArgs {
            index,
            text: text.to_string(),
        });
    }
}

/// `{"name", "arguments"}` (or Llama's `"parameters"`) as (name, arguments JSON text).
fn call_of(v: &Value) -> Option<(String, String)> {
    let name = v.get("name")?.as_str()?.to_string();
    let args = match v.get("arguments").or(v.get("parameters")) {
        Some(Value::String(s)) => s.clone(),
        Some(a) => a.to_string(),
        None => "{}".to_string(),
    };
    Some((name, args))
}

fn push_text(out: &mut Vec<Piece>, state: State, text: &str) {
    if text.is_empty() {
        return;
    }
    out.push(match state {
        State::Reasoning => Piece::Reasoning(text.to_string()),
        _ => Piece::Content(text.to_string()),
    });
}

/// Length of the longest end of `text` that begins one of `markers` (and could complete
/// it with more text).
pub(crate) fn partial_suffix(text: &str, markers: &[&str]) -> usize {
    let mut best = 0;
    for m in markers {
        for n in (1..m.len()).rev() {
            if n > best && text.ends_with(&m[..n]) {
                best = n;
                break;
            }
        }
    }
    best
}

/// `pieces` with neighbouring text of one kind joined, as a client joins deltas.
#[cfg(test)]
pub(crate) fn merged(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    for piece in pieces {
        match (out.last_mut(), piece) {
            (Some(Piece::Content(a)), Piece::Content(b)) => a.push_str(&b),
            (Some(Piece::Reasoning(a)), Piece::Reasoning(b)) => a.push_str(&b),
            (
                Some(Piece::CallArgs { index: i, text: a }),
                Piece::CallArgs { index: j, text: b },
            ) if *i == j => a.push_str(&b),
            (_, p) => out.push(p),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Feeds `text` in chunks of `step` characters; returns the merged pieces.
    fn run(p: &mut OutputParser, text: &str, step: usize) -> Vec<Piece> {
        let chars: Vec<char> = text.chars().collect();
        let mut pieces = Vec::new();
        for c in chars.chunks(step) {
            pieces.extend(p.push(&c.iter().collect::<String>()));
        }
        pieces.extend(p.finish());
        merged(pieces)
    }

    /// Feeds `text` to a fresh parser from `new` in chunks of many sizes: each time the
    /// pieces (merged, as a client joins them) are `want` and `calls` calls were parsed.
    #[track_caller]
    pub(crate) fn at_every_step(
        new: impl Fn() -> OutputParser,
        text: &str,
        want: &[Piece],
        calls: usize,
    ) {
        for step in [1, 2, 3, 5, 8, 13, 1000] {
            let mut p = new();
            assert_eq!(run(&mut p, text, step), want, "step {step}: {text:?}");
            assert_eq!(p.calls(), calls, "step {step}");
        }
    }

    /// A streamed call: its start, then its arguments.
    pub(crate) fn call(index: usize, name: &str, arguments: &str) -> [Piece; 2] {
        [start(index, name), args(index, arguments)]
    }

    fn start(index: usize, name: &str) -> Piece {
        Piece::CallStart {
            index,
            name: name.into(),
        }
    }

    fn args(index: usize, text: &str) -> Piece {
        Piece::CallArgs {
            index,
            text: text.into(),
        }
    }

    #[test]
    fn arguments_stream_before_the_call_ends() {
        let mut p = OutputParser::new(Some(ToolFormat::Hermes), false, false);
        assert_eq!(p.push("<tool_call>\n{\"name\": \"f\", \"argu"), vec![]);
        assert_eq!(
            p.push("ments\": {\"a\": "),
            vec![start(0, "f"), args(0, "{\"a\":")]
        );
        // Whitespace waits: it might come before the closing tag.
        assert_eq!(p.push("[1, 2]}"), vec![args(0, " [1, 2]")]);
        assert_eq!(p.push("}\n</tool_"), vec![args(0, "}")]);
        assert_eq!(p.push("call>"), vec![]);
        assert_eq!(p.finish(), vec![]);
        assert_eq!(
            header("{\"name\": \"x\", \"parameters\": {"),
            Header::Done {
                name: "x".into(),
                len: 28
            }
        );
        assert_eq!(header(" {\"na"), Header::Partial);
        assert_eq!(header("{\"arguments\": {}"), Header::NoMatch);
    }

    #[test]
    fn calls_thoughts_and_content_split_alike_at_any_chunking() {
        let text = "<think>\nweigh it</think>\n\nLet me look.\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"time\", \"arguments\": {}}\n</tool_call>";
        for step in [1, 2, 3, 7, 1000] {
            let mut p = OutputParser::new(Some(ToolFormat::Hermes), true, false);
            let got = run(&mut p, text, step);
            assert_eq!(
                got,
                vec![
                    Piece::Reasoning("\nweigh it".into()),
                    Piece::Content("Let me look.\n".into()),
                    start(0, "weather"),
                    args(0, "{\"city\": \"Paris\"}"),
                    start(1, "time"),
                    args(1, "{}"),
                ],
                "step {step}"
            );
            assert_eq!(p.calls(), 2);
        }
    }

    #[test]
    fn llama_and_mistral_answers_of_calls_are_held_and_parsed() {
        let call = |i: usize, n: &str, a: &str| Piece::ToolCall {
            index: i,
            name: n.into(),
            arguments: a.into(),
        };
        for step in [1, 4, 100] {
            let mut p = OutputParser::new(Some(ToolFormat::Llama3), false, false);
            let got = run(
                &mut p,
                " {\"name\": \"f\", \"parameters\": {\"x\": 1}}; {\"name\": \"g\", \"parameters\": {}}",
                step,
            );
            assert_eq!(got, vec![call(0, "f", "{\"x\":1}"), call(1, "g", "{}")]);
            let mut p = OutputParser::new(Some(ToolFormat::Mistral), false, false);
            let got = run(&mut p, "[{\"name\": \"f\", \"arguments\": {}}]", step);
            assert_eq!(got, vec![call(0, "f", "{}")]);
            // Text stays text: at once when it does not open like calls, else at the end.
            let mut p = OutputParser::new(Some(ToolFormat::Llama3), false, false);
            assert_eq!(
                run(&mut p, "Hi {x}", step),
                vec![Piece::Content("Hi {x}".into())]
            );
            let mut p = OutputParser::new(Some(ToolFormat::Mistral), false, false);
            assert_eq!(
                run(&mut p, "[1, 2]", step),
                vec![Piece::Content("[1, 2]".into())]
            );
        }
    }

    #[test]
    fn unfinished_or_broken_calls_stay_text_and_plain_text_passes() {
        let mut p = OutputParser::new(Some(ToolFormat::Hermes), false, false);
        let got = run(&mut p, "a <tool_call>{\"nam", 2);
        assert_eq!(got, vec![Piece::Content("a <tool_call>{\"nam".into())]);
        let mut p = OutputParser::new(Some(ToolFormat::Hermes), false, false);
        let got = run(
            &mut p,
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}",
            5,
        );
        assert_eq!(got, vec![start(0, "f"), args(0, "{}")]);
        let mut p = OutputParser::new(Some(ToolFormat::Hermes), false, false);
        let got = run(&mut p, "<tool_call>oops</tool_call> x < y", 3);
        assert_eq!(
            got,
            vec![Piece::Content("<tool_call>oops</tool_call>x < y".into())]
        );
        assert_eq!(p.calls(), 0);
        // Without reasoning, <think> is text; a prompt that opened a thought starts in it.
        let mut p = OutputParser::new(None, false, false);
        assert_eq!(
            run(&mut p, "<think>x", 1),
            vec![Piece::Content("<think>x".into())]
        );
        let mut p = OutputParser::new(None, true, true);
        assert_eq!(
            run(&mut p, "hmm</think>ok", 4),
            vec![Piece::Reasoning("hmm".into()), Piece::Content("ok".into())]
        );
    }

    #[test]
    fn qwen3_coder_xml_calls_stream_whole() {
        let text = "Let me check.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n2\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=get_time>\n</function>\n</tool_call>";
        for step in [1, 3, 7, 1000] {
            let mut p = OutputParser::new(Some(ToolFormat::QwenXml), false, false);
            let pieces = run(&mut p, text, step);
            assert_eq!(
                pieces,
                vec![
                    Piece::Content("Let me check.\n".into()),
                    Piece::ToolCall {
                        index: 0,
                        name: "get_weather".into(),
                        arguments: "{\"city\":\"Paris\",\"days\":2}".into()
                    },
                    Piece::ToolCall {
                        index: 1,
                        name: "get_time".into(),
                        arguments: "{}".into()
                    },
                ],
                "step {step}"
            );
            assert_eq!(p.calls(), 2);
        }
        // A body that is not a call is shown as the text it was.
        let mut p = OutputParser::new(Some(ToolFormat::QwenXml), false, false);
        let pieces = run(&mut p, "<tool_call>\n{\"name\": \"f\"}\n</tool_call>", 4);
        assert_eq!(
            pieces,
            vec![Piece::Content(
                "<tool_call>\n{\"name\": \"f\"}\n</tool_call>".into()
            )]
        );
    }
}
