//! Ollama's API, so that apps written for Ollama work unchanged: `POST /api/chat` and
//! `POST /api/generate` (streamed as newline-delimited JSON by default, or one object with
//! `stream: false`), `GET /api/tags`, `POST /api/show` and `GET /api/version`. Requests
//! become chat-completions bodies; errors are Ollama's `{"error": "..."}`.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream;
use serde_json::{json, Map, Value};
use tuili_engine::{FinishReason, Usage};

use crate::chat_run::{self, arguments_value, ChatRun, Step};
use crate::routes::body;
use crate::state::unix_now;
use crate::validate::kind;
use crate::{AppState, ServerError};

/// An error as Ollama writes it, with the status [`ServerError`] gives it.
pub(crate) struct OllamaError(pub ServerError);

impl From<ServerError> for OllamaError {
    fn from(e: ServerError) -> Self {
        OllamaError(e)
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        if let ServerError::Engine(detail) = &self.0 {
            tracing::error!("engine error: {detail}");
        }
        (self.0.status(), Json(json!({"error": self.0.to_string()}))).into_response()
    }
}

/// `GET /api/version`: tuili's version.
pub async fn version() -> Response {
    Json(json!({"version": env!("CARGO_PKG_VERSION")})).into_response()
}

/// RFC 3339 UTC time of Unix second `secs` (Ollama's `created_at`).
fn rfc3339(secs: u64) -> String {
    tuili_tokenizer::strftime("%Y-%m-%dT%H:%M:%SZ", secs as i64)
}

/// What the served model says of itself: a GGUF file (its family, size and quantization
/// are not known to the HTTP layer, so they are left empty).
fn details() -> Value {
    json!({"format": "gguf", "parent_model": "", "families": [], "family": "",
           "parameter_size": "", "quantization_level": ""})
}

/// `GET /api/tags`: the one model served.
pub async fn tags(State(state): State<AppState>) -> Response {
    let name = state.config().model_name.clone();
    Json(json!({"models": [{
        "name": name, "model": name, "modified_at": rfc3339(state.started()),
        "details": details(),
    }]}))
    .into_response()
}

/// `POST /api/show`: the model's template, context length and capabilities.
pub async fn show(
    State(state): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    let req = object(&body(b, &state)?)?;
    let name = req.get("model").or_else(|| req.get("name"));
    state.check_model(name.and_then(Value::as_str))?;
    let ready = state.ready()?;
    let template = ready.template.source().to_string();
    let mut caps = vec!["completion"];
    if crate::tools::ToolFormat::of_template(&template).is_some() {
        caps.push("tools");
    }
    if template.contains("<think>") {
        caps.push("thinking");
    }
    Ok(Json(json!({
        "modelfile": "", "parameters": "", "template": template,
        "details": details(),
        "model_info": {"tuili.context_length": ready.engine.n_ctx()},
        "capabilities": caps,
        "modified_at": rfc3339(state.started()),
    }))
    .into_response())
}

fn object(b: &[u8]) -> Result<Map<String, Value>, ServerError> {
    match serde_json::from_slice(b) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(ServerError::InvalidJson(format!(
            "the body must be a JSON object, got {}",
            kind(&other)
        ))),
        Err(e) => Err(ServerError::InvalidJson(e.to_string())),
    }
}

/// The chat fields shared by `/api/chat` and `/api/generate`: `model`, `stream` (default
/// true), `format`, `think` and `options`.
fn common(req: &Map<String, Value>, chat: &mut Map<String, Value>) -> Result<(), ServerError> {
    if let Some(m) = req.get("model") {
        chat.insert("model".into(), m.clone());
    }
    let stream = match req.get("stream") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ServerError::field(
                "stream",
                format!("stream must be a boolean, got {}", kind(other)),
            ))
        }
    };
    chat.insert("stream".into(), json!(stream));
    match req.get("format") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "json" => {
            chat.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(Value::String(s)) if s.is_empty() => {}
        Some(s @ Value::Object(_)) => {
            chat.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": "format", "schema": s}}),
            );
        }
        Some(other) => {
            return Err(ServerError::field(
                "format",
                format!("format must be \"json\" or a JSON schema, got {other}"),
            ))
        }
    }
    if let Some(Value::Bool(t)) = req.get("think") {
        chat.insert("chat_template_kwargs".into(), json!({"enable_thinking": t}));
    }
    match req.get("options") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            for (from, to) in [
                ("temperature", "temperature"),
                ("top_p", "top_p"),
                ("top_k", "top_k"),
                ("min_p", "min_p"),
                ("seed", "seed"),
                ("stop", "stop"),
                ("repeat_penalty", "repetition_penalty"),
                ("presence_penalty", "presence_penalty"),
                ("frequency_penalty", "frequency_penalty"),
            ] {
                if let Some(v) = o.get(from).filter(|v| !v.is_null()) {
                    chat.insert(to.into(), v.clone());
                }
            }
            // -1 (and -2, "fill the context") mean no limit but the context.
            if let Some(n) = o.get("num_predict").and_then(Value::as_i64) {
                if n >= 0 {
                    chat.insert("max_tokens".into(), json!(n.max(1)));
                }
            }
            // Other options (num_ctx, num_thread, mirostat...) are the server's own
            // settings here, and ignored as Ollama ignores unknown ones.
        }
        Some(other) => {
            return Err(ServerError::field(
                "options",
                format!("options must be an object, got {}", kind(other)),
            ))
        }
    }
    Ok(())
}

/// Ollama messages as chat messages: tool calls' `arguments` are objects, and a `tool`
/// message answers the earliest unanswered call (Ollama has no call ids).
fn messages(list: &[Value]) -> Result<Vec<Value>, ServerError> {
    let mut out = Vec::with_capacity(list.len());
    let mut unanswered = std::collections::VecDeque::new();
    for (i, m) in list.iter().enumerate() {
        let at = format!("messages[{i}]");
        let Some(role) = m.get("role").and_then(Value::as_str) else {
            return Err(ServerError::field(
                format!("{at}.role"),
                format!("{at}.role is required"),
            ));
        };
        if m.get("images").is_some_and(|v| !v.is_null()) {
            return Err(ServerError::unsupported(
                format!("{at}.images"),
                format!("{at}.images: images are not supported"),
            ));
        }
        let content = m.get("content").and_then(Value::as_str).unwrap_or("");
        let mut msg = json!({"role": role, "content": content});
        if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
            let mut list = Vec::new();
            for (k, c) in calls.iter().enumerate() {
                let id = format!("call_{i}_{k}");
                unanswered.push_back(id.clone());
                list.push(json!({"id": id, "type": "function", "function": {
                    "name": c.pointer("/function/name").cloned().unwrap_or(Value::Null),
                    "arguments": c.pointer("/function/arguments").cloned().unwrap_or(json!({})),
                }}));
            }
            msg["tool_calls"] = Value::Array(list);
        }
        if role == "tool" {
            let id = unanswered
                .pop_front()
                .unwrap_or_else(|| format!("call_{i}"));
            msg["tool_call_id"] = json!(id);
        }
        out.push(msg);
    }
    Ok(out)
}

/// `POST /api/chat`.
pub async fn chat(
    State(state): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    let t0 = Instant::now();
    let req = object(&body(b, &state)?)?;
    let mut chat = Map::new();
    common(&req, &mut chat)?;
    let list = match req.get("messages") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(l)) => l.clone(),
        Some(other) => {
            return Err(ServerError::field(
                "messages",
                format!("messages must be a list, got {}", kind(other)),
            )
            .into())
        }
    };
    if list.is_empty() {
        // An empty chat loads the model, as Ollama's does.
        state.check_model(req.get("model").and_then(Value::as_str))?;
        state.ready()?;
        return Ok(Json(done_load(&state, "message")).into_response());
    }
    chat.insert("messages".into(), Value::Array(messages(&list)?));
    if let Some(t) = req.get("tools").filter(|v| !v.is_null()) {
        chat.insert("tools".into(), t.clone());
    }
    answer(state, Value::Object(chat), Shape::Chat, t0).await
}

/// `POST /api/generate`: the prompt (and `system`) rendered through the chat template.
pub async fn generate(
    State(state): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    let t0 = Instant::now();
    let req = object(&body(b, &state)?)?;
    for unsupported in ["raw", "template", "suffix", "images", "context"] {
        if req
            .get(unsupported)
            .is_some_and(|v| !v.is_null() && v != &json!(false) && v != &json!(""))
        {
            return Err(ServerError::unsupported(
                unsupported,
                format!("'{unsupported}' is not supported; send the prompt alone"),
            )
            .into());
        }
    }
    let mut chat = Map::new();
    common(&req, &mut chat)?;
    let prompt = match req.get("prompt") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(ServerError::field(
                "prompt",
                format!("prompt must be a string, got {}", kind(other)),
            )
            .into())
        }
    };
    if prompt.is_empty() {
        state.check_model(req.get("model").and_then(Value::as_str))?;
        state.ready()?;
        return Ok(Json(done_load(&state, "response")).into_response());
    }
    let mut msgs = Vec::new();
    if let Some(s) = req.get("system").and_then(Value::as_str) {
        msgs.push(json!({"role": "system", "content": s}));
    }
    msgs.push(json!({"role": "user", "content": prompt}));
    chat.insert("messages".into(), Value::Array(msgs));
    answer(state, Value::Object(chat), Shape::Generate, t0).await
}

/// The answer to a request with nothing to generate: the model is loaded.
fn done_load(state: &AppState, key: &str) -> Value {
    let mut v = json!({"model": state.config().model_name, "created_at": rfc3339(unix_now()),
                       "done": true, "done_reason": "load"});
    v[key] = if key == "message" {
        json!({"role": "assistant", "content": ""})
    } else {
        json!("")
    };
    v
}

/// Which endpoint answers: chat puts text in `message`, generate in `response`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    Chat,
    Generate,
}

/// One line (or the whole answer) in Ollama's layout.
struct Line {
    text: String,
    thinking: String,
    calls: Vec<Value>,
}

impl Line {
    fn json(&self, shape: Shape, model: &str) -> Value {
        let mut v = json!({"model": model, "created_at": rfc3339(unix_now()), "done": false});
        match shape {
            Shape::Chat => {
                let mut m = json!({"role": "assistant", "content": self.text});
                if !self.thinking.is_empty() {
                    m["thinking"] = json!(self.thinking);
                }
                if !self.calls.is_empty() {
                    m["tool_calls"] = json!(self.calls);
                }
                v["message"] = m;
            }
            Shape::Generate => {
                v["response"] = json!(self.text);
                if !self.thinking.is_empty() {
                    v["thinking"] = json!(self.thinking);
                }
            }
        }
        v
    }
}

/// Marks `v` as the last line: why it ended, the counts and the times in nanoseconds.
fn finish(v: &mut Value, reason: FinishReason, u: &Usage, t0: Instant, first: Instant) {
    let ns = |d: std::time::Duration| d.as_nanos() as u64;
    v["done"] = json!(true);
    v["done_reason"] = json!(match reason {
        FinishReason::Length | FinishReason::ContextFull => "length",
        FinishReason::Stop => "stop",
        FinishReason::Cancelled => "cancelled",
    });
    v["total_duration"] = json!(ns(t0.elapsed()));
    v["load_duration"] = json!(0);
    v["prompt_eval_count"] = json!(u.prompt_tokens);
    v["prompt_eval_duration"] = json!(ns(first.duration_since(t0)));
    v["eval_count"] = json!(u.completion_tokens);
    v["eval_duration"] = json!(ns(first.elapsed()));
}

/// A call as Ollama writes it: `arguments` an object.
fn call(name: &str, args: &str) -> Value {
    json!({"function": {"name": name, "arguments": arguments_value(args)}})
}

async fn answer(
    state: AppState,
    chat: Value,
    shape: Shape,
    t0: Instant,
) -> Result<Response, OllamaError> {
    let model = state.config().model_name.clone();
    let stream = chat["stream"].as_bool().unwrap_or(true);
    let run = chat_run::start(&state, &chat).await?;
    if !stream {
        let first = Instant::now();
        let w = run.whole().await?;
        let line = Line {
            text: w.text,
            thinking: w.reasoning,
            calls: w.calls.iter().map(|(n, a)| call(n, a)).collect(),
        };
        let mut v = line.json(shape, &model);
        finish(&mut v, w.reason, &w.usage, t0, first);
        return Ok(Json(v).into_response());
    }
    // Calls go out whole, when their arguments are complete (Ollama sends them so).
    let first = Instant::now();
    let lines = stream::unfold(Some((run, Vec::<(String, String)>::new())), move |st| {
        let model = model.clone();
        async move {
            let (mut run, mut calls): (ChatRun, _) = st?;
            loop {
                let steps = match run.next().await {
                    None => return None,
                    Some(Err(e)) => {
                        tracing::error!("engine error on a streamed answer: {e}");
                        let line = json!({"error": e.to_string()}).to_string() + "\n";
                        return Some((Ok::<_, std::convert::Infallible>(line), None));
                    }
                    Some(Ok(steps)) => steps,
                };
                let mut line = Line {
                    text: String::new(),
                    thinking: String::new(),
                    calls: Vec::new(),
                };
                let mut end = None;
                for s in steps {
                    match s {
                        Step::Text(t) => line.text.push_str(&t),
                        Step::Reasoning(t) => line.thinking.push_str(&t),
                        Step::CallStart { name, .. } => calls.push((name, String::new())),
                        Step::CallArgs { index, text } => {
                            if let Some(c) = calls.get_mut(index) {
                                c.1.push_str(&text);
                            }
                        }
                        Step::Done { reason, usage, .. } => end = Some((reason, usage)),
                    }
                }
                if let Some((reason, usage)) = end {
                    line.calls = calls.iter().map(|(n, a)| call(n, a)).collect();
                    let mut v = line.json(shape, &model);
                    finish(&mut v, reason, &usage, t0, first);
                    return Some((Ok(v.to_string() + "\n"), None));
                }
                if !line.text.is_empty() || !line.thinking.is_empty() {
                    let v = line.json(shape, &model).to_string() + "\n";
                    return Some((Ok(v), Some((run, calls))));
                }
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_591_993), "2026-12-06T21:19:53Z");
    }

    #[test]
    fn options_and_messages_become_chat_fields() {
        let req = json!({"model": "m", "format": "json", "think": false,
            "options": {"temperature": 0, "num_predict": 12, "repeat_penalty": 1.1, "num_ctx": 4096}});
        let mut chat = Map::new();
        common(req.as_object().unwrap(), &mut chat).unwrap();
        assert_eq!(chat["stream"], true);
        assert_eq!(chat["max_tokens"], 12);
        assert_eq!(chat["repetition_penalty"], 1.1);
        assert_eq!(chat["response_format"]["type"], "json_object");
        assert_eq!(chat["chat_template_kwargs"]["enable_thinking"], false);
        assert!(!chat.contains_key("num_ctx"));
        let msgs = messages(&[
            json!({"role": "user", "content": "Weather?"}),
            json!({"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "w", "arguments": {"city": "Oslo"}}}]}),
            json!({"role": "tool", "content": "sunny", "tool_name": "w"}),
        ])
        .unwrap();
        assert_eq!(msgs[1]["tool_calls"][0]["id"], msgs[2]["tool_call_id"]);
        assert_eq!(
            msgs[1]["tool_calls"][0]["function"]["arguments"]["city"],
            "Oslo"
        );
        let bad = json!({"options": 3});
        assert!(common(bad.as_object().unwrap(), &mut Map::new()).is_err());
        assert!(messages(&[json!({"role": "user", "content": "x", "images": ["aGk="]})]).is_err());
    }
}
