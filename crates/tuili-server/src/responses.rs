//! `POST /v1/responses`, OpenAI's Responses API: `input` (a string or items: messages,
//! `function_call`, `function_call_output`), `instructions`, function tools, `text.format`
//! and `previous_response_id` become a chat-completions body; the answer is a response
//! object with `reasoning`, `message` and `function_call` output items, whole or as the
//! Responses event stream (see `responses_stream`). Errors are OpenAI's.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use tuili_engine::{FinishReason, Usage};

use crate::chat_run;
use crate::routes::body;
use crate::state::unix_now;
use crate::validate::{kind, known_object, random_u64};
use crate::{AppState, ServerError};

/// Fields of a Responses request; others are refused by name.
const KNOWN: &[&str] = &[
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "stream",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "previous_response_id",
    "store",
    // Passed through: sampling.
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    // Accepted and ignored: they do not change the answer.
    "metadata",
    "user",
    "service_tier",
    "reasoning",
    "include",
    "truncation",
    "prompt_cache_key",
    "safety_identifier",
];

/// A new id with `prefix`.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{:016x}{:08x}", random_u64(), random_u64() as u32)
}

/// A checked request: the chat body to run and what the answer echoes.
pub(crate) struct ResponsesJob {
    pub chat: Value,
    /// The conversation so far (earlier turns and this input), to store with the output.
    pub history: Vec<Value>,
    pub store: bool,
    /// Request fields the response object repeats.
    pub echo: Map<String, Value>,
}

/// `POST /v1/responses`.
pub async fn responses(
    State(state): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ServerError> {
    let b = body(b, &state)?;
    let req: Value =
        serde_json::from_slice(&b).map_err(|e| ServerError::InvalidJson(e.to_string()))?;
    let job = to_chat(&req, |id| state.stored().get(id))?;
    let run = chat_run::start(&state, &job.chat).await.map_err(renamed)?;
    let head = Head {
        id: new_id("resp"),
        created: unix_now(),
        model: state.config().model_name.clone(),
        echo: job.echo.clone(),
    };
    if job.chat["stream"].as_bool().unwrap_or(false) {
        return Ok(crate::responses_stream::events(run, head, job, state));
    }
    let w = run.whole().await?;
    let mut out = Output::default();
    if !w.reasoning.is_empty() {
        out.reasoning = Some((new_id("rs"), w.reasoning));
    }
    if !w.text.is_empty() || w.calls.is_empty() {
        out.text = Some((new_id("msg"), w.text));
    }
    for (name, args) in w.calls {
        out.calls.push(Call {
            id: new_id("fc"),
            call_id: new_id("call"),
            name,
            arguments: args,
        });
    }
    let resp = head.object(&out, Some((w.reason, &w.usage)));
    if job.store {
        state
            .stored()
            .put(head.id.clone(), out.history(job.history));
    }
    Ok(Json(resp).into_response())
}

/// Chat-completions names in errors become the Responses API's.
pub(crate) fn renamed(e: ServerError) -> ServerError {
    let rename = |p: String| {
        for (from, to) in [
            ("max_tokens", "max_output_tokens"),
            ("response_format", "text.format"),
            ("messages", "input"),
        ] {
            if let Some(rest) = p.strip_prefix(from) {
                return format!("{to}{rest}");
            }
        }
        p
    };
    match e {
        ServerError::InvalidField { param, message } => ServerError::InvalidField {
            param: rename(param),
            message,
        },
        ServerError::Unsupported { param, message } => ServerError::Unsupported {
            param: rename(param),
            message,
        },
        e => e,
    }
}

/// One function call of the output.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub id: String,
    pub call_id: String,
    pub name: String,
    pub arguments: String,
}

/// The output items: a thought, a message and calls, each with its id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Output {
    pub reasoning: Option<(String, String)>,
    pub text: Option<(String, String)>,
    pub calls: Vec<Call>,
}

pub(crate) fn reasoning_item(id: &str, text: &str, done: bool) -> Value {
    let content = if done {
        json!([{"type": "reasoning_text", "text": text}])
    } else {
        json!([])
    };
    json!({"type": "reasoning", "id": id, "summary": [], "content": content,
           "status": if done { "completed" } else { "in_progress" }})
}

pub(crate) fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

pub(crate) fn message_item(id: &str, text: &str, done: bool) -> Value {
    let content = if done {
        json!([text_part(text)])
    } else {
        json!([])
    };
    json!({"type": "message", "id": id, "role": "assistant", "content": content,
           "status": if done { "completed" } else { "in_progress" }})
}

pub(crate) fn call_item(c: &Call, done: bool) -> Value {
    json!({"type": "function_call", "id": c.id, "call_id": c.call_id, "name": c.name,
           "arguments": if done { c.arguments.as_str() } else { "" },
           "status": if done { "completed" } else { "in_progress" }})
}

impl Output {
    /// The output items in order: thought, message, calls.
    pub fn items(&self) -> Vec<Value> {
        let mut items = Vec::new();
        if let Some((id, t)) = &self.reasoning {
            items.push(reasoning_item(id, t, true));
        }
        if let Some((id, t)) = &self.text {
            items.push(message_item(id, t, true));
        }
        items.extend(self.calls.iter().map(|c| call_item(c, true)));
        items
    }

    /// `history` with this output appended as an assistant turn.
    pub fn history(&self, mut history: Vec<Value>) -> Vec<Value> {
        let text = self.text.as_ref().map_or("", |(_, t)| t.as_str());
        let mut msg = json!({"role": "assistant", "content": text});
        if !self.calls.is_empty() {
            msg["tool_calls"] = self
                .calls
                .iter()
                .map(|c| {
                    json!({"id": c.call_id, "type": "function",
                           "function": {"name": c.name, "arguments": c.arguments}})
                })
                .collect();
        }
        history.push(msg);
        history
    }
}

/// What every response object of one answer shares.
pub(crate) struct Head {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub echo: Map<String, Value>,
}

impl Head {
    /// The response object; `end` is `None` while it runs.
    pub fn object(&self, out: &Output, end: Option<(FinishReason, &Usage)>) -> Value {
        let (status, incomplete) = match end {
            None => ("in_progress", Value::Null),
            Some((FinishReason::Length | FinishReason::ContextFull, _)) => {
                ("incomplete", json!({"reason": "max_output_tokens"}))
            }
            Some((FinishReason::Cancelled, _)) => ("cancelled", Value::Null),
            Some((FinishReason::Stop, _)) => ("completed", Value::Null),
        };
        let usage = end.map_or(Value::Null, |(_, u)| {
            json!({"input_tokens": u.prompt_tokens,
                   "input_tokens_details": {"cached_tokens": u.cached_tokens},
                   "output_tokens": u.completion_tokens,
                   "output_tokens_details": {"reasoning_tokens": 0},
                   "total_tokens": u.prompt_tokens + u.completion_tokens})
        });
        let mut v = json!({
            "id": self.id, "object": "response", "created_at": self.created,
            "status": status, "model": self.model, "output": out.items(),
            "error": null, "incomplete_details": incomplete, "usage": usage,
        });
        let obj = v.as_object_mut().expect("an object");
        for (k, val) in &self.echo {
            obj.insert(k.clone(), val.clone());
        }
        v
    }
}

fn field(param: &str, message: String) -> ServerError {
    ServerError::field(param, message)
}

/// The chat-completions body of a Responses request; `stored` finds the conversation of a
/// `previous_response_id`.
pub(crate) fn to_chat(
    req: &Value,
    stored: impl Fn(&str) -> Option<Vec<Value>>,
) -> Result<ResponsesJob, ServerError> {
    let map = known_object(req, KNOWN)?;
    let get = |k: &str| map.get(k).filter(|v| !v.is_null());
    let mut history = match get("previous_response_id") {
        None => Vec::new(),
        Some(Value::String(id)) => stored(id).ok_or_else(|| {
            field(
                "previous_response_id",
                format!("previous response with id '{id}' not found (responses are kept for an hour, and only with store: true)"),
            )
        })?,
        Some(other) => {
            return Err(field(
                "previous_response_id",
                format!("previous_response_id must be a string, got {}", kind(other)),
            ))
        }
    };
    match get("input") {
        Some(Value::String(s)) => history.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(&format!("input[{i}]"), item, &mut history)?;
            }
        }
        Some(other) => {
            return Err(field(
                "input",
                format!(
                    "input must be a string or a list of items, got {}",
                    kind(other)
                ),
            ))
        }
        None => return Err(field("input", "input is required".into())),
    }
    let mut messages = Vec::new();
    if let Some(i) = get("instructions") {
        let Some(s) = i.as_str() else {
            return Err(field(
                "instructions",
                format!("instructions must be a string, got {}", kind(i)),
            ));
        };
        messages.push(json!({"role": "system", "content": s}));
    }
    messages.extend(history.iter().cloned());
    let mut chat = Map::new();
    chat.insert("messages".into(), Value::Array(messages));
    for (from, to) in [
        ("model", "model"),
        ("stream", "stream"),
        ("max_output_tokens", "max_tokens"),
        ("parallel_tool_calls", "parallel_tool_calls"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("min_p", "min_p"),
        ("seed", "seed"),
        ("frequency_penalty", "frequency_penalty"),
        ("presence_penalty", "presence_penalty"),
        ("repetition_penalty", "repetition_penalty"),
    ] {
        if let Some(v) = get(from) {
            chat.insert(to.into(), v.clone());
        }
    }
    let mut echo = Map::new();
    if let Some(t) = get("tools") {
        let Some(list) = t.as_array() else {
            return Err(field(
                "tools",
                format!("tools must be a list, got {}", kind(t)),
            ));
        };
        let mut tools = Vec::new();
        for (i, t) in list.iter().enumerate() {
            if t.get("type").and_then(Value::as_str) != Some("function") {
                return Err(ServerError::unsupported(
                    format!("tools[{i}].type"),
                    format!("tools[{i}]: only function tools are supported"),
                ));
            }
            let mut f = Map::new();
            for k in ["name", "description", "parameters"] {
                if let Some(v) = t.get(k).filter(|v| !v.is_null()) {
                    f.insert(k.into(), v.clone());
                }
            }
            tools.push(json!({"type": "function", "function": f}));
        }
        chat.insert("tools".into(), Value::Array(tools));
        echo.insert("tools".into(), t.clone());
    }
    if let Some(c) = get("tool_choice") {
        let choice = match c {
            Value::String(_) => c.clone(),
            _ => match (
                c.get("type").and_then(Value::as_str),
                c.get("name").and_then(Value::as_str),
            ) {
                (Some("function"), Some(name)) => {
                    json!({"type": "function", "function": {"name": name}})
                }
                _ => {
                    return Err(field(
                        "tool_choice",
                        format!("tool_choice must be none, auto, required or {{\"type\": \"function\", \"name\": ...}}, got {c}"),
                    ))
                }
            },
        };
        chat.insert("tool_choice".into(), choice);
        echo.insert("tool_choice".into(), c.clone());
    }
    if let Some(format) = get("text").and_then(|t| t.get("format")) {
        chat.insert("response_format".into(), text_format(format)?);
    }
    let store = match get("store") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(field(
                "store",
                format!("store must be a boolean, got {}", kind(other)),
            ))
        }
    };
    for k in [
        "instructions",
        "max_output_tokens",
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "previous_response_id",
        "text",
        "metadata",
    ] {
        if let Some(v) = get(k) {
            echo.insert(k.into(), v.clone());
        }
    }
    echo.insert("store".into(), Value::Bool(store));
    Ok(ResponsesJob {
        chat: Value::Object(chat),
        history,
        store,
        echo,
    })
}

/// `text.format` as chat's `response_format`.
fn text_format(f: &Value) -> Result<Value, ServerError> {
    Ok(match f.get("type").and_then(Value::as_str) {
        Some("text") => json!({"type": "text"}),
        Some("json_object") => json!({"type": "json_object"}),
        Some("json_schema") => {
            let mut s = json!({"name": f.get("name").cloned().unwrap_or(json!("response"))});
            for k in ["schema", "strict", "description"] {
                if let Some(v) = f.get(k) {
                    s[k] = v.clone();
                }
            }
            json!({"type": "json_schema", "json_schema": s})
        }
        _ => {
            return Err(field(
                "text.format.type",
                format!("text.format.type must be text, json_object or json_schema, got {f}"),
            ))
        }
    })
}

/// One input item as chat messages: a message (`role` and `content` as a string or
/// `input_text`/`output_text` parts), a `function_call` (joined to the assistant turn before
/// it) or a `function_call_output`. Earlier `reasoning` items are dropped, as templates do.
fn input_item(at: &str, item: &Value, out: &mut Vec<Value>) -> Result<(), ServerError> {
    let s = |k: &str| item.get(k).and_then(Value::as_str);
    match s("type") {
        None | Some("message") => {
            let role = match s("role") {
                Some("developer") => "system",
                Some(r @ ("user" | "assistant" | "system")) => r,
                _ => {
                    return Err(field(
                        &format!("{at}.role"),
                        format!("{at}.role must be user, assistant, system or developer"),
                    ))
                }
            };
            let text = match item.get("content") {
                Some(Value::String(t)) => t.clone(),
                Some(Value::Array(parts)) => {
                    let mut t = String::new();
                    for (i, p) in parts.iter().enumerate() {
                        let kind = p.get("type").and_then(Value::as_str);
                        match (kind, p.get("text").and_then(Value::as_str)) {
                            (Some("input_text" | "output_text" | "text"), Some(x)) => {
                                t.push_str(x)
                            }
                            _ => {
                                return Err(ServerError::unsupported(
                                    format!("{at}.content[{i}]"),
                                    format!("{at}.content[{i}]: only input_text and output_text parts are supported"),
                                ))
                            }
                        }
                    }
                    t
                }
                _ => {
                    return Err(field(
                        &format!("{at}.content"),
                        format!("{at}.content must be a string or a list of parts"),
                    ))
                }
            };
            out.push(json!({"role": role, "content": text}));
        }
        Some("function_call") => {
            let (Some(call_id), Some(name)) = (s("call_id"), s("name")) else {
                return Err(field(
                    at,
                    format!("{at}: a function_call needs call_id and name"),
                ));
            };
            let call = json!({"id": call_id, "type": "function",
                "function": {"name": name, "arguments": s("arguments").unwrap_or("{}")}});
            match out.last_mut() {
                Some(last) if last["role"] == "assistant" => {
                    if !last["tool_calls"].is_array() {
                        last["tool_calls"] = json!([]);
                    }
                    last["tool_calls"]
                        .as_array_mut()
                        .expect("a list")
                        .push(call);
                }
                _ => out.push(json!({"role": "assistant", "content": "", "tool_calls": [call]})),
            }
        }
        Some("function_call_output") => {
            let Some(call_id) = s("call_id") else {
                return Err(field(
                    &format!("{at}.call_id"),
                    format!("{at}.call_id is required"),
                ));
            };
            let output = match item.get("output") {
                Some(Value::String(o)) => o.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            out.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
        }
        Some("reasoning") => {}
        Some(t) => {
            return Err(ServerError::unsupported(
                format!("{at}.type"),
                format!("{at}: input items of type '{t}' are not supported"),
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_become_chat_messages() {
        let req = json!({"model": "m", "instructions": "Be brief.", "max_output_tokens": 30,
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "call_id": "call_1", "name": "w", "arguments": "{\"city\": \"Oslo\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            ],
            "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "w"},
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
            "store": false});
        let job = to_chat(&req, |_| None).unwrap();
        let m = &job.chat["messages"];
        assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(m[1], json!({"role": "user", "content": "Weather?"}));
        assert_eq!(m[2]["tool_calls"][0]["function"]["name"], "w");
        assert_eq!(m[3]["role"], "tool");
        assert_eq!(m.as_array().unwrap().len(), 4);
        assert_eq!(job.chat["max_tokens"], 30);
        assert_eq!(job.chat["tools"][0]["function"]["name"], "w");
        assert_eq!(job.chat["tool_choice"]["function"]["name"], "w");
        assert_eq!(
            job.chat["response_format"]["json_schema"]["schema"],
            json!({"type": "object"})
        );
        assert!(!job.store);
        // The instructions are not part of the stored conversation.
        assert_eq!(job.history.len(), 3);
    }

    #[test]
    fn previous_responses_come_first_and_missing_ones_are_errors() {
        let earlier = vec![
            json!({"role": "user", "content": "Hi"}),
            json!({"role": "assistant", "content": "Hello"}),
        ];
        let job = to_chat(
            &json!({"input": "And now?", "previous_response_id": "resp_1"}),
            |id| (id == "resp_1").then(|| earlier.clone()),
        )
        .unwrap();
        assert_eq!(job.chat["messages"].as_array().unwrap().len(), 3);
        assert_eq!(job.chat["messages"][2]["content"], "And now?");
        let cases = [
            (
                json!({"input": "x", "previous_response_id": "resp_2"}),
                "previous_response_id",
            ),
            (json!({}), "input"),
            (json!({"input": 3}), "input"),
            (json!({"input": "x", "modalities": []}), "modalities"),
            (
                json!({"input": [{"role": "robot", "content": "x"}]}),
                "input[0].role",
            ),
            (
                json!({"input": "x", "tools": [{"type": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"input": "x", "text": {"format": {"type": "xml"}}}),
                "text.format.type",
            ),
        ];
        for (req, param) in cases {
            match to_chat(&req, |_| None) {
                Err(
                    ServerError::InvalidField { param: p, .. }
                    | ServerError::Unsupported { param: p, .. },
                ) => {
                    assert_eq!(p, param, "{req}")
                }
                Err(e) => panic!("{req}: {e:?}"),
                Ok(_) => panic!("{req}: accepted"),
            }
        }
        assert!(matches!(renamed(ServerError::field("max_tokens", "x")),
                         ServerError::InvalidField { param, .. } if param == "max_output_tokens"));
    }
}
