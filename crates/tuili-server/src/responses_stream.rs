//! The Responses API's event stream: `response.created`, `response.in_progress`, then per
//! output item `response.output_item.added`, its deltas (`response.output_text.delta`,
//! `response.reasoning_text.delta`, `response.function_call_arguments.delta`) and their
//! `.done` events, `response.output_item.done`, and last `response.completed` (or
//! `response.incomplete`). Every event carries its `sequence_number`.

use std::collections::VecDeque;

use axum::response::sse;
use axum::response::Response;
use serde_json::{json, Value};
use tuili_engine::FinishReason;

use crate::chat_run::{sse_answer, ChatRun, EventLayout, Step};
use crate::responses::{
    call_item, message_item, new_id, reasoning_item, text_part, Call, Head, Output, ResponsesJob,
};
use crate::{AppState, ServerError};

/// The item being streamed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Open {
    Reasoning,
    Text,
    /// The parser's call index.
    Call(usize),
}

struct Streamer {
    pending: VecDeque<sse::Event>,
    seq: u64,
    head: Head,
    /// Items finished so far, in order.
    items: Vec<Value>,
    /// The open item: its kind, id and text so far.
    open: Option<(Open, String, String)>,
    /// Everything, for the stored conversation.
    all: Output,
    job: ResponsesJob,
    state: AppState,
}

/// The answer as the Responses event stream.
pub(crate) fn events(run: ChatRun, head: Head, job: ResponsesJob, state: AppState) -> Response {
    let mut st = Streamer {
        pending: VecDeque::new(),
        seq: 0,
        head,
        items: Vec::new(),
        open: None,
        all: Output::default(),
        job,
        state,
    };
    let created = st.head.object(&Output::default(), None);
    st.send(json!({"type": "response.created", "response": created}));
    st.send(json!({"type": "response.in_progress", "response": created}));
    sse_answer(run, st)
}

impl EventLayout for Streamer {
    fn queue(&mut self) -> &mut VecDeque<sse::Event> {
        &mut self.pending
    }

    fn step(&mut self, s: Step) {
        self.on_step(s)
    }

    fn error(&mut self, e: ServerError) {
        let b = e.body();
        self.send(json!({"type": "error", "code": b.code, "message": b.message, "param": b.param}));
    }
}

impl Streamer {
    /// Queues event `v` (its `type` is also the SSE event name) with the next sequence
    /// number.
    fn send(&mut self, mut v: Value) {
        v["sequence_number"] = json!(self.seq);
        self.seq += 1;
        let name = v["type"].as_str().unwrap_or("message").to_string();
        self.pending
            .push_back(sse::Event::default().event(name).data(v.to_string()));
    }

    fn output_index(&self) -> usize {
        self.items.len()
    }

    /// Opens an item of `kind` unless it is the one open; returns its id.
    fn open(&mut self, kind: Open, call: Option<&Call>) -> String {
        if let Some((k, id, _)) = &self.open {
            if *k == kind {
                return id.clone();
            }
        }
        self.close();
        let i = self.output_index();
        let (id, item) = match (kind, call) {
            (Open::Call(_), Some(c)) => (c.id.clone(), call_item(c, false)),
            (Open::Reasoning, _) => {
                let id = new_id("rs");
                let item = reasoning_item(&id, "", false);
                (id, item)
            }
            _ => {
                let id = new_id("msg");
                let item = message_item(&id, "", false);
                (id, item)
            }
        };
        self.send(json!({"type": "response.output_item.added", "output_index": i, "item": item}));
        if kind == Open::Text {
            self.send(json!({"type": "response.content_part.added", "item_id": id,
                             "output_index": i, "content_index": 0, "part": text_part("")}));
        }
        self.open = Some((kind, id.clone(), String::new()));
        id
    }

    fn close(&mut self) {
        let Some((kind, id, text)) = self.open.take() else {
            return;
        };
        let i = self.output_index();
        let item = match kind {
            Open::Text => {
                self.send(json!({"type": "response.output_text.done", "item_id": id,
                    "output_index": i, "content_index": 0, "text": text, "logprobs": []}));
                self.send(json!({"type": "response.content_part.done", "item_id": id,
                    "output_index": i, "content_index": 0, "part": text_part(&text)}));
                message_item(&id, &text, true)
            }
            Open::Reasoning => {
                self.send(
                    json!({"type": "response.reasoning_text.done", "item_id": id,
                    "output_index": i, "content_index": 0, "text": text}),
                );
                reasoning_item(&id, &text, true)
            }
            Open::Call(_) => {
                let c = self
                    .all
                    .calls
                    .iter()
                    .find(|c| c.id == id)
                    .cloned()
                    .expect("an open call is recorded");
                self.send(json!({"type": "response.function_call_arguments.done",
                    "item_id": id, "output_index": i, "name": c.name, "arguments": c.arguments}));
                call_item(&c, true)
            }
        };
        self.send(json!({"type": "response.output_item.done", "output_index": i, "item": item}));
        self.items.push(item);
    }

    /// Appends `delta` to the open item's text.
    fn grow(&mut self, delta: &str) {
        if let Some((_, _, t)) = self.open.as_mut() {
            t.push_str(delta);
        }
    }

    fn on_step(&mut self, s: Step) {
        let i = self.output_index();
        match s {
            Step::Text(t) => {
                if t.is_empty() {
                    return;
                }
                let id = self.open(Open::Text, None);
                self.grow(&t);
                let all = self
                    .all
                    .text
                    .get_or_insert_with(|| (id.clone(), String::new()));
                all.1.push_str(&t);
                self.send(json!({"type": "response.output_text.delta", "item_id": id,
                    "output_index": i, "content_index": 0, "delta": t, "logprobs": []}));
            }
            Step::Reasoning(t) => {
                let id = self.open(Open::Reasoning, None);
                self.grow(&t);
                let all = self
                    .all
                    .reasoning
                    .get_or_insert_with(|| (id.clone(), String::new()));
                all.1.push_str(&t);
                self.send(
                    json!({"type": "response.reasoning_text.delta", "item_id": id,
                    "output_index": i, "content_index": 0, "delta": t}),
                );
            }
            Step::CallStart { index, name } => {
                let c = Call {
                    id: new_id("fc"),
                    call_id: new_id("call"),
                    name,
                    arguments: String::new(),
                };
                self.all.calls.push(c.clone());
                self.open(Open::Call(index), Some(&c));
            }
            Step::CallArgs { index, text } => {
                let Some((Open::Call(k), id, _)) = &self.open else {
                    return;
                };
                if *k != index || text.is_empty() {
                    return;
                }
                let id = id.clone();
                if let Some(c) = self.all.calls.iter_mut().find(|c| c.id == id) {
                    c.arguments.push_str(&text);
                }
                self.send(json!({"type": "response.function_call_arguments.delta",
                    "item_id": id, "output_index": i, "delta": text}));
            }
            Step::Done { reason, usage, .. } => {
                if self.items.is_empty() && self.open.is_none() {
                    // An empty answer is still one (empty) message.
                    let id = self.open(Open::Text, None);
                    self.all.text = Some((id, String::new()));
                }
                self.close();
                let mut resp = self.head.object(&Output::default(), Some((reason, &usage)));
                resp["output"] = Value::Array(std::mem::take(&mut self.items));
                let kind = match reason {
                    FinishReason::Stop => "response.completed",
                    FinishReason::Length | FinishReason::ContextFull => "response.incomplete",
                    FinishReason::Cancelled => "response.failed",
                };
                if self.job.store {
                    let history = self.all.history(std::mem::take(&mut self.job.history));
                    self.state.stored().put(self.head.id.clone(), history);
                }
                self.send(json!({"type": kind, "response": resp}));
            }
        }
    }
}
