//! `POST /v1/messages`, Anthropic's Messages API: the request becomes a chat-completions
//! body (system prompt, content blocks, `tool_use`/`tool_result`, tools and `tool_choice`,
//! `stop_sequences`); the answer is a message of content blocks, whole or as Anthropic's
//! event stream (`message_start`, `content_block_start`/`delta`/`stop`, `message_delta`,
//! `message_stop`). Errors use Anthropic's body, `{"type": "error", "error": {...}}`.

use std::collections::VecDeque;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use tuili_engine::{FinishReason, Usage};

use crate::chat_run::{self, arguments_value, sse_answer, ChatRun, EventLayout, Step};
use crate::routes::body;
use crate::validate::{kind, known_object, random_u64};
use crate::{AppState, ServerError};

/// Fields of a Messages request; others are refused by name.
const KNOWN: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    // Accepted and ignored: they do not change the answer.
    "metadata",
    "service_tier",
    "cache_control",
    "inference_geo",
    "speed",
    "user_profile_id",
    "workspace_id",
];

/// An error in Anthropic's shape, with the status [`ServerError`] gives it.
pub(crate) struct AnthropicError(pub ServerError);

impl From<ServerError> for AnthropicError {
    fn from(e: ServerError) -> Self {
        AnthropicError(e)
    }
}

/// Anthropic's error type for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// `{"type": "error", "error": {"type", "message"}}`.
pub(crate) fn error_json(e: &ServerError) -> Value {
    json!({"type": "error", "error": {"type": error_type(e.status()), "message": e.to_string()}})
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        if let ServerError::Engine(detail) = &self.0 {
            tracing::error!("engine error: {detail}");
        }
        (self.0.status(), Json(error_json(&self.0))).into_response()
    }
}

/// `POST /v1/messages`.
pub async fn messages(
    State(state): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, AnthropicError> {
    let b = body(b, &state)?;
    let req: Value =
        serde_json::from_slice(&b).map_err(|e| ServerError::InvalidJson(e.to_string()))?;
    let chat = to_chat(&req)?;
    let stream = chat["stream"].as_bool().unwrap_or(false);
    let model = state.config().model_name.clone();
    let run = chat_run::start(&state, &chat).await?;
    let id = format!("msg_{:016x}{:08x}", random_u64(), random_u64() as u32);
    if stream {
        return Ok(events(run, id, model));
    }
    let w = run.whole().await?;
    let mut content = Vec::new();
    if !w.reasoning.is_empty() {
        content.push(json!({"type": "thinking", "thinking": w.reasoning, "signature": ""}));
    }
    if !w.text.is_empty() || w.calls.is_empty() {
        content.push(json!({"type": "text", "text": w.text}));
    }
    for (name, args) in &w.calls {
        content.push(
            json!({"type": "tool_use", "id": tool_use_id(), "name": name,
                            "input": arguments_value(args)}),
        );
    }
    Ok(Json(json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(w.reason, !w.calls.is_empty(), w.stop.is_some()),
        "stop_sequence": w.stop,
        "usage": usage(&w.usage),
    }))
    .into_response())
}

/// Anthropic's usage: `input_tokens` are those not read from the prefix cache.
fn usage(u: &Usage) -> Value {
    json!({"input_tokens": u.prompt_tokens - u.cached_tokens, "output_tokens": u.completion_tokens,
           "cache_read_input_tokens": u.cached_tokens, "cache_creation_input_tokens": 0})
}

fn tool_use_id() -> String {
    format!("toolu_{:016x}{:08x}", random_u64(), random_u64() as u32)
}

fn stop_reason(r: FinishReason, calls: bool, by_string: bool) -> &'static str {
    match r {
        FinishReason::Stop if calls => "tool_use",
        FinishReason::Stop if by_string => "stop_sequence",
        FinishReason::Stop => "end_turn",
        FinishReason::Length | FinishReason::ContextFull => "max_tokens",
        FinishReason::Cancelled => "refusal",
    }
}

fn field(param: &str, message: String) -> ServerError {
    ServerError::field(param, message)
}

/// The chat-completions body of a Messages request.
pub(crate) fn to_chat(req: &Value) -> Result<Value, ServerError> {
    let map = known_object(req, KNOWN)?;
    let max_tokens = match map.get("max_tokens") {
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => n.clone(),
        Some(other) => {
            return Err(field(
                "max_tokens",
                format!("max_tokens must be an integer of at least 1, got {other}"),
            ))
        }
        None => return Err(field("max_tokens", "max_tokens: Field required".into())),
    };
    let mut messages = Vec::new();
    match map.get("system") {
        None | Some(Value::Null) => {}
        Some(s) => messages.push(json!({"role": "system", "content": text_of("system", s)?})),
    }
    let Some(list) = map.get("messages").and_then(Value::as_array) else {
        return Err(field(
            "messages",
            "messages: a list of messages is required".into(),
        ));
    };
    for (i, m) in list.iter().enumerate() {
        message(&format!("messages[{i}]"), m, &mut messages)?;
    }
    let mut out = Map::new();
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_tokens".into(), Value::Number(max_tokens));
    for (from, to) in [
        ("model", "model"),
        ("stream", "stream"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("stop_sequences", "stop"),
    ] {
        if let Some(v) = map.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    }
    if let Some(tools) = map.get("tools").filter(|v| !v.is_null()) {
        let Some(tools) = tools.as_array() else {
            return Err(field(
                "tools",
                format!("tools must be a list, got {}", kind(tools)),
            ));
        };
        let mut list = Vec::new();
        for (i, t) in tools.iter().enumerate() {
            let Some(name) = t.get("name").and_then(Value::as_str) else {
                return Err(field(
                    &format!("tools[{i}].name"),
                    format!("tools[{i}].name is required"),
                ));
            };
            let mut f = json!({"name": name});
            if let Some(d) = t.get("description") {
                f["description"] = d.clone();
            }
            if let Some(s) = t.get("input_schema") {
                f["parameters"] = s.clone();
            }
            list.push(json!({"type": "function", "function": f}));
        }
        out.insert("tools".into(), Value::Array(list));
    }
    if let Some(c) = map.get("tool_choice").filter(|v| !v.is_null()) {
        let (choice, parallel) = tool_choice(c)?;
        out.insert("tool_choice".into(), choice);
        if let Some(p) = parallel {
            out.insert("parallel_tool_calls".into(), Value::Bool(p));
        }
    }
    Ok(Value::Object(out))
}

/// Anthropic's `tool_choice` as OpenAI's, and `parallel_tool_calls` if it says.
fn tool_choice(c: &Value) -> Result<(Value, Option<bool>), ServerError> {
    let parallel = c
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .map(|d| !d);
    let choice = match c.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => match c.get("name").and_then(Value::as_str) {
            Some(name) => json!({"type": "function", "function": {"name": name}}),
            None => {
                return Err(field(
                    "tool_choice.name",
                    "tool_choice.name is required with type 'tool'".into(),
                ))
            }
        },
        _ => {
            return Err(field(
                "tool_choice.type",
                format!("tool_choice.type must be auto, any, tool or none, got {c}"),
            ))
        }
    };
    Ok((choice, parallel))
}

/// The text of a string or of a list of text blocks.
fn text_of(at: &str, v: &Value) -> Result<String, ServerError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut out = String::new();
            for (i, b) in blocks.iter().enumerate() {
                match (b.get("type").and_then(Value::as_str), b.get("text")) {
                    (Some("text"), Some(Value::String(t))) => out.push_str(t),
                    _ => {
                        return Err(field(
                            &format!("{at}[{i}]"),
                            format!(
                            "{at}[{i}] must be a text block {{\"type\": \"text\", \"text\": ...}}"
                        ),
                        ))
                    }
                }
            }
            Ok(out)
        }
        other => Err(field(
            at,
            format!(
                "{at} must be a string or a list of text blocks, got {}",
                kind(other)
            ),
        )),
    }
}

/// One Anthropic message as chat messages: `tool_result` blocks become `tool` messages,
/// `tool_use` blocks an assistant's `tool_calls`.
fn message(at: &str, m: &Value, out: &mut Vec<Value>) -> Result<(), ServerError> {
    let role = match m.get("role").and_then(Value::as_str) {
        Some(r @ ("user" | "assistant")) => r,
        _ => {
            return Err(field(
                &format!("{at}.role"),
                format!("{at}.role must be 'user' or 'assistant'"),
            ))
        }
    };
    let blocks = match m.get("content") {
        Some(Value::String(s)) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Some(Value::Array(b)) => b,
        _ => {
            return Err(field(
                &format!("{at}.content"),
                format!("{at}.content must be a string or a list of content blocks"),
            ))
        }
    };
    let (mut text, mut calls) = (String::new(), Vec::new());
    for (i, b) in blocks.iter().enumerate() {
        let at = format!("{at}.content[{i}]");
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            // Earlier thoughts are not shown to the model again, as chat templates drop them.
            Some("thinking" | "redacted_thinking") => {}
            Some("tool_use") if role == "assistant" => {
                let id = b.get("id").and_then(Value::as_str).unwrap_or("");
                let Some(name) = b.get("name").and_then(Value::as_str) else {
                    return Err(field(
                        &format!("{at}.name"),
                        format!("{at}.name is required"),
                    ));
                };
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({"id": id, "type": "function",
                                  "function": {"name": name, "arguments": input.to_string()}}));
            }
            Some("tool_result") if role == "user" => {
                let content = match b.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(c) => text_of(&format!("{at}.content"), c)?,
                };
                let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or("");
                out.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
            Some(t) => {
                return Err(ServerError::unsupported(
                    format!("{at}.type"),
                    format!(
                        "{at}: content blocks of type '{t}' are not supported in a {role} message"
                    ),
                ))
            }
            None => {
                return Err(field(
                    &format!("{at}.type"),
                    format!("{at}.type is required"),
                ))
            }
        }
    }
    if role == "assistant" {
        let mut msg = json!({"role": "assistant", "content": text});
        if !calls.is_empty() {
            msg["tool_calls"] = Value::Array(calls);
        }
        out.push(msg);
    } else if !text.is_empty() || !blocks.iter().any(|b| b["type"] == "tool_result") {
        out.push(json!({"role": "user", "content": text}));
    }
    Ok(())
}

/// Anthropic's event stream: `message_start`, then one block per text, thought or tool
/// call (`content_block_start`, deltas, `content_block_stop`), then `message_delta` with the
/// stop reason and `message_stop`. An engine failure is an `error` event.
fn events(run: ChatRun, id: String, model: String) -> Response {
    let start = json!({"type": "message_start", "message": {
        "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": run.prompt_tokens, "output_tokens": 0}}});
    let mut st = Blocks {
        pending: VecDeque::from([event("message_start", &start)]),
        open: None,
        index: 0,
        calls: 0,
    };
    st.pending
        .push_back(event("ping", &json!({"type": "ping"})));
    sse_answer(run, st)
}

fn event(name: &str, v: &Value) -> sse::Event {
    sse::Event::default().event(name).data(v.to_string())
}

/// Which kind of block is open.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Open {
    Text,
    Thinking,
    Call(usize),
}

struct Blocks {
    pending: VecDeque<sse::Event>,
    open: Option<Open>,
    /// Index of the open block (or of the next one).
    index: usize,
    calls: usize,
}

impl EventLayout for Blocks {
    fn queue(&mut self) -> &mut VecDeque<sse::Event> {
        &mut self.pending
    }

    fn step(&mut self, s: Step) {
        self.on_step(s)
    }

    fn error(&mut self, e: ServerError) {
        self.pending.push_back(event("error", &error_json(&e)));
    }
}

impl Blocks {
    /// Opens block `kind` unless it is the one open.
    fn open(&mut self, kind: Open, block: Value) {
        if self.open == Some(kind) {
            return;
        }
        self.close();
        self.open = Some(kind);
        let e = json!({"type": "content_block_start", "index": self.index, "content_block": block});
        self.pending.push_back(event("content_block_start", &e));
    }

    fn close(&mut self) {
        if self.open.take().is_some() {
            let e = json!({"type": "content_block_stop", "index": self.index});
            self.pending.push_back(event("content_block_stop", &e));
            self.index += 1;
        }
    }

    fn delta(&mut self, delta: Value) {
        let e = json!({"type": "content_block_delta", "index": self.index, "delta": delta});
        self.pending.push_back(event("content_block_delta", &e));
    }

    fn on_step(&mut self, s: Step) {
        match s {
            Step::Text(t) => {
                if t.is_empty() {
                    return;
                }
                self.open(Open::Text, json!({"type": "text", "text": ""}));
                self.delta(json!({"type": "text_delta", "text": t}));
            }
            Step::Reasoning(t) => {
                self.open(
                    Open::Thinking,
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                );
                self.delta(json!({"type": "thinking_delta", "thinking": t}));
            }
            Step::CallStart { index, name } => {
                self.calls += 1;
                self.open(
                    Open::Call(index),
                    json!({"type": "tool_use", "id": tool_use_id(), "name": name, "input": {}}),
                );
            }
            Step::CallArgs { index, text } => {
                if self.open == Some(Open::Call(index)) && !text.is_empty() {
                    self.delta(json!({"type": "input_json_delta", "partial_json": text}));
                }
            }
            Step::Done {
                reason,
                usage: u,
                stop,
            } => {
                if self.index == 0 && self.open.is_none() {
                    // An empty answer is still one (empty) text block.
                    self.open(Open::Text, json!({"type": "text", "text": ""}));
                }
                self.close();
                let e = json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason(reason, self.calls > 0, stop.is_some()),
                              "stop_sequence": stop},
                    "usage": usage(&u)});
                self.pending.push_back(event("message_delta", &e));
                self.pending
                    .push_back(event("message_stop", &json!({"type": "message_stop"})));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_become_chat_bodies() {
        let req = json!({
        "model": "m", "max_tokens": 64, "system": [{"type": "text", "text": "Be brief."}],
        "stop_sequences": ["END"], "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "tools": [{"name": "w", "description": "weather", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me see."},
                {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                "content": [{"type": "text", "text": "sunny"}]}]},
        ]});
        let chat = to_chat(&req).unwrap();
        assert_eq!(
            chat["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            chat["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Oslo\"}"
        );
        assert_eq!(
            chat["messages"][3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"})
        );
        assert_eq!(chat["messages"].as_array().unwrap().len(), 4);
        assert_eq!(chat["stop"], json!(["END"]));
        assert_eq!(chat["tool_choice"], "required");
        assert_eq!(chat["parallel_tool_calls"], false);
        assert_eq!(
            chat["tools"][0]["function"]["parameters"],
            json!({"type": "object"})
        );
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases = [
            (json!({"messages": []}), "max_tokens"),
            (json!({"max_tokens": 0, "messages": []}), "max_tokens"),
            (json!({"max_tokens": 5}), "messages"),
            (
                json!({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"max_tokens": 5, "messages": [], "frequency": 1}),
                "frequency",
            ),
            (
                json!({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"max_tokens": 5, "messages": [], "tool_choice": {"type": "tool"}}),
                "tool_choice.name",
            ),
        ];
        for (req, param) in cases {
            match to_chat(&req) {
                Err(
                    ServerError::InvalidField { param: p, .. }
                    | ServerError::Unsupported { param: p, .. },
                ) => {
                    assert_eq!(p, param, "{req}")
                }
                other => panic!("{req}: {other:?}"),
            }
        }
        let e = error_json(&ServerError::field("max_tokens", "x"));
        assert_eq!(e["type"], "error");
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert_eq!(error_type(StatusCode::UNAUTHORIZED), "authentication_error");
    }
}
