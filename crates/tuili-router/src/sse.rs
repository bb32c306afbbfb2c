//! Reading the OpenAI response shapes on the way through: SSE events of a stream (counting
//! tokens, finding the usage, the `[DONE]` marker and error events, collecting logprobs,
//! and stripping logprobs the client did not ask for) and the same facts of a JSON body.

use serde_json::Value;

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

/// `(prompt_tokens, completion_tokens)` of a `usage` object.
pub fn usage_of(v: &Value) -> Option<(u64, u64)> {
    let u = v.get("usage")?;
    Some((
        u["prompt_tokens"].as_u64()?,
        u["completion_tokens"].as_u64().unwrap_or(0),
    ))
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
        if v.get("error").is_some() {
            self.errored = true;
        }
        let c = &v["choices"][0];
        let text_piece = c["delta"]["content"]
            .as_str()
            .or(c["text"].as_str())
            .unwrap_or("");
        if !text_piece.is_empty() {
            self.tokens += 1;
        }
        self.logprobs.extend(logprobs_of(c));
        if let Some(u) = usage_of(&v) {
            self.usage = Some(u);
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
