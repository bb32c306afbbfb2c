//! Reading the response shapes on the way through: SSE events of a stream (counting tokens,
//! finding the usage, the end marker and error events, collecting logprobs, and stripping
//! logprobs the client did not ask for) and the same facts of a JSON body. Chat and
//! completions, OpenAI's Responses API and Anthropic's Messages API are all read.

use serde_json::{json, Value};

use crate::plan::Api;

/// The token logprobs of one choice, chat (`logprobs.content[].logprob`) or completions
/// (`logprobs.token_logprobs[]`).
pub fn logprobs_of(choice: &Value) -> Vec<f64> {
    let lp = &choice["logprobs"];
    if let Some(content) = lp["content"].as_array() {
        return content
            .iter()
            .filter_map(|t| t["logprob"].as_f64())
            .collect();
    }
    lp["token_logprobs"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// `(prompt_tokens, completion_tokens)` of `v`'s `usage` (OpenAI's names, or the
/// Responses and Messages APIs' `input_tokens`/`output_tokens`).
pub fn usage_of(v: &Value) -> Option<(u64, u64)> {
    match usage_parts(v) {
        (Some(i), o) => Some((i, o.unwrap_or(0))),
        (None, _) => None,
    }
}

/// The input and output token counts of `v`'s `usage`, each when present (an Anthropic
/// stream sends them in different events).
fn usage_parts(v: &Value) -> (Option<u64>, Option<u64>) {
    let Some(u) = v.get("usage") else {
        return (None, None);
    };
    let get = |a: &str, b: &str| u[a].as_u64().or(u[b].as_u64());
    (
        get("prompt_tokens", "input_tokens"),
        get("completion_tokens", "output_tokens"),
    )
}

/// The text an event of any of the streaming APIs adds: chat and completions chunks,
/// `response.output_text.delta`, Anthropic's `content_block_delta`.
fn text_of_event(v: &Value) -> &str {
    let c = &v["choices"][0];
    let openai = c["delta"]["content"].as_str().or(c["text"].as_str());
    let other = match v["type"].as_str() {
        Some("response.output_text.delta") => v["delta"].as_str(),
        Some("content_block_delta") => {
            let d = &v["delta"];
            d["text"].as_str().or(d["partial_json"].as_str())
        }
        _ => None,
    };
    openai.or(other).unwrap_or("")
}

/// How an event of any of the streaming APIs ends the stream: `Some(true)` on an error,
/// `Some(false)` at a normal end (Responses' `response.completed`/`.incomplete`,
/// Anthropic's `message_stop`; chat's `[DONE]` is not JSON and is found before).
fn end_of_event(v: &Value) -> Option<bool> {
    if v.get("error").is_some_and(|e| !e.is_null()) {
        return Some(true);
    }
    match v["type"].as_str() {
        Some("error" | "response.failed") => Some(true),
        Some("response.completed" | "response.incomplete" | "message_stop") => Some(false),
        _ => None,
    }
}

/// The SSE event that ends a broken stream, in `api`'s own error shape.
pub fn error_event(api: Api, e: &crate::ApiError) -> String {
    match api {
        Api::Responses => format!(
            "event: error\ndata: {}\n\n",
            json!({"type": "error", "code": e.code, "message": e.message, "param": null})
        ),
        Api::Messages => format!(
            "event: error\ndata: {}\n\n",
            json!({"type": "error", "error": {"type": "api_error", "message": e.message}})
        ),
        Api::Chat | Api::Completions | Api::Embeddings => format!("data: {}\n\n", e.to_json()),
    }
}

/// Sets every choice's `logprobs` to null.
pub fn strip_logprobs(v: &mut Value) {
    if let Some(choices) = v["choices"].as_array_mut() {
        for c in choices {
            if let Some(o) = c.as_object_mut() {
                if o.contains_key("logprobs") {
                    o.insert("logprobs".into(), Value::Null);
                }
            }
        }
    }
}

/// A stream read event by event as its bytes arrive.
#[derive(Debug, Default)]
pub struct SseScan {
    line: Vec<u8>,
    event: Vec<u8>,
    raw: Vec<u8>,
    /// `data: [DONE]` was seen.
    pub done: bool,
    /// An `{"error": ...}` event was seen (the upstream ended the stream with an error).
    pub errored: bool,
    /// Chunks carrying text.
    pub tokens: u64,
    /// The usage, when a chunk carried one.
    pub usage: Option<(u64, u64)>,
    /// Token logprobs seen so far.
    pub logprobs: Vec<f64>,
    /// Rewrite events without logprobs (the output of [`SseScan::feed`] then differs).
    pub strip: bool,
    /// The Responses API's response id (from `response.created`).
    pub response_id: Option<String>,
}

impl SseScan {
    /// A scanner that rewrites events without logprobs when `strip`.
    pub fn new(strip: bool) -> Self {
        SseScan {
            strip,
            ..Default::default()
        }
    }

    /// Reads `chunk`; returns the events it completed, as received or, when stripping,
    /// rewritten. A partial event is held back, so a stream cut mid-event never hands the
    /// client half an event.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in chunk {
            if !self.strip {
                self.raw.push(b);
            }
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            if self.line.is_empty() {
                let ev = std::mem::take(&mut self.event);
                self.on_event(&ev, &mut out);
                if !self.strip {
                    out.append(&mut self.raw);
                }
            } else {
                self.event.extend_from_slice(&self.line);
                self.event.push(b'\n');
            }
            self.line.clear();
        }
        out
    }

    fn on_event(&mut self, ev: &[u8], out: &mut Vec<u8>) {
        let text = String::from_utf8_lossy(ev);
        let mut data = String::new();
        for line in text.lines() {
            if let Some(d) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
        }
        if data.is_empty() {
            if self.strip && !ev.is_empty() {
                out.extend_from_slice(ev);
                out.push(b'\n');
            }
            return;
        }
        if data == "[DONE]" {
            self.done = true;
            if self.strip {
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            return;
        }
        let Ok(mut v) = serde_json::from_str::<Value>(&data) else {
            if self.strip {
                out.extend_from_slice(ev);
                out.push(b'\n');
            }
            return;
        };
        match end_of_event(&v) {
            Some(true) => self.errored = true,
            Some(false) => self.done = true,
            None => {}
        }
        if let (Some("response.created"), Some(id)) =
            (v["type"].as_str(), v["response"]["id"].as_str())
        {
            self.response_id = Some(id.to_string());
        }
        if !text_of_event(&v).is_empty() {
            self.tokens += 1;
        }
        self.logprobs.extend(logprobs_of(&v["choices"][0]));
        // The usage: at the top (OpenAI, Anthropic's message_delta), in Responses'
        // `response` or in Anthropic's message_start `message`.
        for holder in [&v, &v["response"], &v["message"]] {
            let (i, o) = usage_parts(holder);
            if i.is_some() || o.is_some() {
                let (pi, po) = self.usage.unwrap_or((0, 0));
                self.usage = Some((i.unwrap_or(pi), o.unwrap_or(po)));
            }
        }
        if self.strip {
            strip_logprobs(&mut v);
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(v.to_string().as_bytes());
            out.extend_from_slice(b"\n\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_crlf() {
        let mut s = SseScan::default();
        let whole = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"logprobs\":{\"content\":[{\"logprob\":-0.5}]}}]}\r\n\r\n\
                     data: {\"choices\":[{\"delta\":{\"content\":\"!\"}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        let mut out = Vec::new();
        for piece in whole.as_bytes().chunks(7) {
            out.extend(s.feed(piece));
        }
        assert_eq!(out, whole.as_bytes(), "passed through unchanged");
        assert!(
            s.feed(b"data: {\"cho").is_empty(),
            "half an event is held back"
        );
        assert!(s.done && !s.errored);
        assert_eq!(
            (s.tokens, s.usage, s.logprobs.clone()),
            (2, Some((3, 2)), vec![-0.5])
        );
    }

    #[test]
    fn responses_and_messages_streams_end_and_count() {
        let mut r = SseScan::default();
        r.feed(b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\"}}\n\n");
        assert_eq!(r.response_id.as_deref(), Some("resp_1"));
        r.feed(b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n");
        assert!(!r.done);
        r.feed(b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n");
        assert!(r.done && !r.errored);
        assert_eq!((r.tokens, r.usage), (1, Some((5, 1))));

        let mut m = SseScan::default();
        m.feed(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n");
        m.feed(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Yo\"}}\n\n");
        m.feed(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":3}}\n\n");
        assert!(!m.done);
        m.feed(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        assert!(m.done);
        assert_eq!((m.tokens, m.usage), (1, Some((7, 3))));

        let mut e = SseScan::default();
        e.feed(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n");
        assert!(e.errored && !e.done);
    }

    #[test]
    fn strip_rewrites_without_logprobs_and_errors_are_seen() {
        let mut s = SseScan::new(true);
        let out = s.feed(
            b"data: {\"choices\":[{\"text\":\"a\",\"logprobs\":{\"token_logprobs\":[-1.0]}}]}\n\n",
        );
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with("data: {")
                && out.contains("\"logprobs\":null")
                && out.ends_with("\n\n"),
            "{out}"
        );
        assert_eq!(s.logprobs, vec![-1.0]);
        s.feed(b"data: {\"error\":{\"message\":\"x\"}}\n\n");
        assert!(s.errored && !s.done);
    }
}
