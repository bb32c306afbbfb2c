//! Parse, don't validate: a request body becomes a `Valid*` value, or a [`ServerError`] that
//! names the field, the limit and the value given ("temperature must be between 0 and 2,
//! got 5"). Nothing after this module re-checks a field.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tuili_engine::SamplingParams;
use tuili_tokenizer::ChatMessage;

use crate::api::{ChatOnly, CommonRequest, CompletionOnly, CHAT_KEYS, COMPLETION_KEYS};
use crate::structured::{self, Guidance};
use crate::tools::{self, ToolSpec};
use crate::ServerError;

/// Most choices one request may ask for (prompts × `n`).
pub const MAX_CHOICES: usize = 16;
/// Most stop strings (OpenAI's limit).
pub const MAX_STOP: usize = 4;
/// Most alternatives per token for chat `top_logprobs` (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Most alternatives per token for completions `logprobs` (OpenAI's limit).
pub const MAX_COMPLETION_LOGPROBS: usize = 5;

/// Settings both endpoints share, checked.
#[derive(Debug, Clone)]
pub struct ValidCommon {
    /// The model asked for, if any (matched against the served names by the handler).
    pub model: Option<String>,
    /// Completion tokens at most; `None`: whatever the context leaves.
    pub max_tokens: Option<usize>,
    /// Sampling settings, seed included (random when the request has none).
    pub sampling: SamplingParams,
    /// Stop strings, none empty, at most [`MAX_STOP`].
    pub stop: Vec<String>,
    /// Completions per prompt.
    pub n: usize,
    /// Answer with server-sent events.
    pub stream: bool,
    /// With `stream`: a last chunk with usage.
    pub include_usage: bool,
    /// Keep generating past end-of-generation tokens.
    pub ignore_eos: bool,
    /// The output's grammar and `logit_bias`.
    pub guidance: Guidance,
}

/// A checked `/v1/chat/completions` request.
#[derive(Debug, Clone)]
pub struct ValidChat {
    /// Shared settings.
    pub common: ValidCommon,
    /// The conversation, text parts joined.
    pub messages: Vec<ChatMessage>,
    /// `Some(k)`: log-probabilities with `k` alternatives.
    pub logprobs: Option<usize>,
    /// `tools`, `tool_choice`, `parallel_tool_calls`; `None` without tools.
    pub tools: Option<ToolSpec>,
    /// `chat_template_kwargs`: extra variables for the chat template.
    pub template_kwargs: Option<Map<String, Value>>,
}

/// One prompt of a completions request.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptIn {
    /// Text, tokenized with the model's special tokens added.
    Text(String),
    /// Token ids, used as given.
    Tokens(Vec<u32>),
}

/// A checked `/v1/completions` request.
#[derive(Debug, Clone)]
pub struct ValidCompletion {
    /// Shared settings.
    pub common: ValidCommon,
    /// One or more prompts.
    pub prompts: Vec<PromptIn>,
    /// `Some(k)`: log-probabilities with `k` alternatives.
    pub logprobs: Option<usize>,
}

/// Parses a chat completions body; a sampling setting it leaves out is `base`'s (the
/// effective defaults: OpenAI's with the model's recommendations in their place).
pub fn chat_request(body: &[u8], base: &SamplingParams) -> Result<ValidChat, ServerError> {
    let value = parse_object(body, CHAT_KEYS)?;
    let chat: ChatOnly = typed(&value)?;
    let mut common = common(&value, base)?;
    if let Some(m) = chat.max_completion_tokens {
        common.max_tokens = Some(positive("max_completion_tokens", m)?);
    }
    let logprobs = match (chat.logprobs.unwrap_or(false), chat.top_logprobs) {
        (false, Some(_)) => {
            return Err(ServerError::field(
                "top_logprobs",
                "top_logprobs needs logprobs set to true",
            ))
        }
        (false, None) => None,
        (true, k) => Some(at_most("top_logprobs", k.unwrap_or(0), MAX_TOP_LOGPROBS)?),
    };
    choices_limit(1, common.n)?;
    let map = value.as_object().expect("parse_object gives an object");
    let template_kwargs = match map.get("chat_template_kwargs") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(o.clone()),
        Some(other) => {
            return Err(ServerError::field(
                "chat_template_kwargs",
                format!(
                    "chat_template_kwargs must be an object, got {}",
                    kind(other)
                ),
            ))
        }
    };
    Ok(ValidChat {
        messages: messages(&chat.messages)?,
        tools: tools::tool_spec(map)?,
        common,
        logprobs,
        template_kwargs,
    })
}

/// Parses a completions body; token-id prompts must lie below `vocab`; sampling
/// settings left out are `base`'s, as in [`chat_request`].
pub fn completion_request(
    body: &[u8],
    vocab: usize,
    base: &SamplingParams,
) -> Result<ValidCompletion, ServerError> {
    let value = parse_object(body, COMPLETION_KEYS)?;
    let only: CompletionOnly = typed(&value)?;
    let common = common(&value, base)?;
    let logprobs = match only.logprobs {
        None => None,
        Some(k) => Some(at_most("logprobs", k, MAX_COMPLETION_LOGPROBS)?),
    };
    let map = value.as_object();
    let get = |k: &str| map.and_then(|m| m.get(k)).unwrap_or(&Value::Null);
    if let Some(b) = get("best_of").as_i64() {
        if b != common.n as i64 {
            return Err(ServerError::unsupported(
                "best_of",
                format!(
                    "best_of other than n is not supported (n is {}, got best_of {b})",
                    common.n
                ),
            ));
        }
    } else if !get("best_of").is_null() {
        return Err(ServerError::field("best_of", "best_of must be an integer"));
    }
    let prompts = prompts(&only.prompt, vocab)?;
    choices_limit(prompts.len(), common.n)?;
    Ok(ValidCompletion {
        common,
        prompts,
        logprobs,
    })
}

/// The body as a JSON object whose keys are all in `known`, with every unsupported feature
/// refused by name.
pub fn parse_object(body: &[u8], known: &[&str]) -> Result<Value, ServerError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ServerError::InvalidJson(e.to_string()))?;
    refuse_unsupported(known_object(&value, known)?)?;
    Ok(value)
}

/// `value` as an object whose keys are all `known`; else the error naming the first other.
pub(crate) fn known_object<'v>(
    value: &'v Value,
    known: &[&str],
) -> Result<&'v Map<String, Value>, ServerError> {
    let Some(map) = value.as_object() else {
        return Err(ServerError::InvalidJson(format!(
            "expected a JSON object, got {}",
            kind(value)
        )));
    };
    if let Some(key) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ServerError::unsupported(
            key.clone(),
            format!("{key}: unrecognized request argument"),
        ));
    }
    Ok(map)
}

/// Deserializes `value` into `T`, naming the JSON path of the first field that does not fit.
pub fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, ServerError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // A missing field is reported at the parent; name the field itself.
        if let Some(rest) = inner.strip_prefix("missing field `") {
            let field = rest.trim_end_matches('`');
            let param = if path == "." {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
            return ServerError::field(param.clone(), format!("'{param}' is required"));
        }
        ServerError::field(path.clone(), format!("invalid value for '{path}': {inner}"))
    })
}

/// Features that change what is generated; accepting them silently would mislead clients.
fn refuse_unsupported(map: &Map<String, Value>) -> Result<(), ServerError> {
    let neutral = |key: &str, v: &Value| -> bool {
        match key {
            // `tools`, `tool_choice` and `parallel_tool_calls` are read by `tools`.
            "functions" => v.is_null() || v.as_array().is_some_and(|a| a.is_empty()),
            "function_call" => v.is_null() || v == "none",
            "metadata" => v.is_null() || v.as_object().is_some_and(|o| o.is_empty()),
            "modalities" => v.is_null() || *v == serde_json::json!(["text"]),
            "store" | "echo" => v.is_null() || *v == Value::Bool(false),
            "suffix" => v.is_null() || v == "",
            "service_tier" => v.is_null() || v == "auto" || v == "default",
            "audio" | "prediction" | "reasoning_effort" | "web_search_options" => v.is_null(),
            "user" => v.is_null() || v.is_string(),
            // What tuili does: the generation prompt added, special tokens and stop strings
            // left out of the text, no hidden states; no reasoning parser, so the reasoning
            // switches change nothing.
            "add_generation_prompt" | "skip_special_tokens" => {
                v.is_null() || *v == Value::Bool(true)
            }
            "continue_final_message" | "no_stop_trim" | "return_hidden_states" => {
                v.is_null() || *v == Value::Bool(false)
            }
            "separate_reasoning" | "stream_reasoning" | "include_reasoning" => {
                v.is_null() || v.is_boolean()
            }
            _ => true,
        }
    };
    for (key, v) in map {
        if !neutral(key, v) {
            let what = match key.as_str() {
                "functions" | "function_call" => {
                    "the legacy functions API is not supported; use tools"
                }
                "audio" | "modalities" => "only text output is supported",
                "echo" => "echo is not supported",
                "suffix" => "suffix (insertion) is not supported",
                "store" | "metadata" => "storing completions is not supported",
                "user" => "user must be a string",
                "add_generation_prompt" | "skip_special_tokens" => "only true is supported",
                "continue_final_message" | "no_stop_trim" | "return_hidden_states" => {
                    "only false is supported"
                }
                "separate_reasoning" | "stream_reasoning" | "include_reasoning" => {
                    "must be a boolean"
                }
                _ => "this parameter is not supported",
            };
            let err = format!("{key}: {what}, got {}", short(v));
            return Err(if key == "user" {
                ServerError::field(key.clone(), err)
            } else {
                ServerError::unsupported(key.clone(), err)
            });
        }
    }
    Ok(())
}

fn common(value: &Value, base: &SamplingParams) -> Result<ValidCommon, ServerError> {
    let c: CommonRequest = typed(value)?;
    let top_k = match c.top_k {
        None => base.top_k,
        Some(-1) => 0,
        Some(k) if k >= 0 => k as usize,
        Some(k) => {
            return Err(ServerError::field(
                "top_k",
                format!("top_k must be at least 0 (or -1 for off), got {k}"),
            ))
        }
    };
    let stream = c.stream.unwrap_or(false);
    if c.stream_options.is_some() && !stream {
        return Err(ServerError::field(
            "stream_options",
            "stream_options is only allowed when stream is true",
        ));
    }
    let sampling = SamplingParams {
        // The request's own value always wins over `base`.
        temperature: range("temperature", c.temperature, 0.0, 2.0, base.temperature)?,
        top_k,
        top_p: range("top_p", c.top_p, 0.0, 1.0, base.top_p)?,
        min_p: range("min_p", c.min_p, 0.0, 1.0, base.min_p)?,
        repeat_penalty: match c.repetition_penalty {
            Some(r) if !(r > 0.0 && r <= 10.0) => {
                return Err(ServerError::field(
                    "repetition_penalty",
                    format!("repetition_penalty must be greater than 0 and at most 10, got {r}"),
                ))
            }
            Some(r) => r as f32,
            None => base.repeat_penalty,
        },
        presence_penalty: range(
            "presence_penalty",
            c.presence_penalty,
            -2.0,
            2.0,
            base.presence_penalty,
        )?,
        frequency_penalty: range(
            "frequency_penalty",
            c.frequency_penalty,
            -2.0,
            2.0,
            base.frequency_penalty,
        )?,
        penalty_last_n: base.penalty_last_n,
        // Negative seeds are valid OpenAI seeds; keep their bits.
        seed: c.seed.map(|s| s as u64).unwrap_or_else(random_u64),
    };
    Ok(ValidCommon {
        model: c.model.filter(|m| !m.is_empty()),
        max_tokens: c
            .max_tokens
            .map(|m| positive("max_tokens", m))
            .transpose()?,
        sampling,
        stop: stop(c.stop.as_ref())?,
        n: match c.n {
            None => 1,
            Some(n) if (1..=MAX_CHOICES as i64).contains(&n) => n as usize,
            Some(n) => {
                return Err(ServerError::field(
                    "n",
                    format!("n must be between 1 and {MAX_CHOICES}, got {n}"),
                ))
            }
        },
        stream,
        include_usage: c
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        ignore_eos: c.ignore_eos.unwrap_or(false),
        guidance: value
            .as_object()
            .map(structured::guidance)
            .transpose()?
            .unwrap_or_default(),
    })
}

fn choices_limit(prompts: usize, n: usize) -> Result<(), ServerError> {
    if prompts * n > MAX_CHOICES {
        return Err(ServerError::field(
            "n",
            format!(
                "{prompts} prompts × n = {n} asks for {} choices; the limit is {MAX_CHOICES}",
                prompts * n
            ),
        ));
    }
    Ok(())
}

fn range(name: &str, v: Option<f64>, lo: f64, hi: f64, default: f32) -> Result<f32, ServerError> {
    match v {
        None => Ok(default),
        Some(x) if (lo..=hi).contains(&x) => Ok(x as f32),
        Some(x) => Err(ServerError::field(
            name,
            format!("{name} must be between {lo} and {hi}, got {x}"),
        )),
    }
}

fn positive(name: &str, v: i64) -> Result<usize, ServerError> {
    if v < 1 {
        return Err(ServerError::field(
            name,
            format!("{name} must be at least 1, got {v}"),
        ));
    }
    Ok(v as usize)
}

fn at_most(name: &str, v: i64, max: usize) -> Result<usize, ServerError> {
    if v < 0 || v > max as i64 {
        return Err(ServerError::field(
            name,
            format!("{name} must be between 0 and {max}, got {v}"),
        ));
    }
    Ok(v as usize)
}

fn stop(v: Option<&Value>) -> Result<Vec<String>, ServerError> {
    let list: Vec<String> = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            if items.len() > MAX_STOP {
                return Err(ServerError::field(
                    "stop",
                    format!(
                        "stop may hold at most {MAX_STOP} strings, got {}",
                        items.len()
                    ),
                ));
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    other => {
                        return Err(ServerError::field(
                            format!("stop[{i}]"),
                            format!("stop[{i}] must be a string, got {}", kind(other)),
                        ))
                    }
                }
            }
            out
        }
        Some(other) => {
            return Err(ServerError::field(
                "stop",
                format!(
                    "stop must be a string or a list of strings, got {}",
                    kind(other)
                ),
            ))
        }
    };
    if let Some(i) = list.iter().position(String::is_empty) {
        return Err(ServerError::field(
            format!("stop[{i}]"),
            "stop strings must not be empty",
        ));
    }
    Ok(list)
}

fn messages(v: &Value) -> Result<Vec<ChatMessage>, ServerError> {
    let Some(items) = v.as_array() else {
        return Err(ServerError::field(
            "messages",
            format!("messages must be a list of messages, got {}", kind(v)),
        ));
    };
    if items.is_empty() {
        return Err(ServerError::field(
            "messages",
            "messages must hold at least 1 message, got 0",
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect()
}

fn message(i: usize, m: &Value) -> Result<ChatMessage, ServerError> {
    let at = |field: &str| format!("messages[{i}].{field}");
    let Some(obj) = m.as_object() else {
        return Err(ServerError::field(
            format!("messages[{i}]"),
            format!("messages[{i}] must be an object, got {}", kind(m)),
        ));
    };
    let role = match obj.get("role") {
        Some(Value::String(r)) => r.as_str(),
        Some(other) => {
            return Err(ServerError::field(
                at("role"),
                format!("{} must be a string, got {}", at("role"), kind(other)),
            ))
        }
        None => {
            return Err(ServerError::field(
                at("role"),
                format!("'{}' is required", at("role")),
            ))
        }
    };
    let role = match role {
        "system" | "user" | "assistant" => role,
        // OpenAI's newer name for system instructions.
        "developer" => "system",
        "tool" => "tool",
        other => {
            return Err(ServerError::field(
                at("role"),
                format!(
                    "{} must be one of system, developer, user, assistant, tool, got '{other}'",
                    at("role")
                ),
            ))
        }
    };
    for (key, v) in obj {
        match key.as_str() {
            "role" | "content" | "name" => {}
            "refusal" | "tool_calls" | "function_call" | "audio" if v.is_null() => {}
            "tool_calls" if v.as_array().is_some_and(|a| a.is_empty()) => {}
            "tool_calls" if role == "assistant" => {}
            "tool_call_id" if role == "tool" => {}
            _ => {
                return Err(ServerError::unsupported(
                    at(key),
                    format!("{} is not supported", at(key)),
                ))
            }
        }
    }
    let content = match obj.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                texts.push(text_part(&at(&format!("content[{j}]")), p)?);
            }
            // vLLM joins text parts with newlines.
            texts.join("\n")
        }
        // An assistant turn that only calls tools has no text.
        None | Some(Value::Null) if role == "assistant" && obj.contains_key("tool_calls") => {
            String::new()
        }
        None | Some(Value::Null) => {
            return Err(ServerError::field(
                at("content"),
                format!("'{}' is required", at("content")),
            ))
        }
        Some(other) => {
            return Err(ServerError::field(
                at("content"),
                format!(
                    "{} must be a string or a list of parts, got {}",
                    at("content"),
                    kind(other)
                ),
            ))
        }
    };
    let mut msg = ChatMessage::new(role, content);
    msg.name = obj.get("name").and_then(Value::as_str).map(String::from);
    if let Some(calls) = obj.get("tool_calls").filter(|v| !v.is_null()) {
        msg.tool_calls = Some(tools::history_calls(&at("tool_calls"), calls)?);
    }
    if role == "tool" {
        msg.tool_call_id = match obj.get("tool_call_id") {
            Some(Value::String(id)) => Some(id.clone()),
            _ => {
                return Err(ServerError::field(
                    at("tool_call_id"),
                    format!("'{}' is required and must be a string", at("tool_call_id")),
                ))
            }
        };
    }
    Ok(msg)
}

fn text_part(at: &str, p: &Value) -> Result<String, ServerError> {
    match p.get("type").and_then(Value::as_str) {
        Some("text") => match p.get("text") {
            Some(Value::String(t)) => Ok(t.clone()),
            other => Err(ServerError::field(
                format!("{at}.text"),
                format!(
                    "{at}.text must be a string, got {}",
                    kind(other.unwrap_or(&Value::Null))
                ),
            )),
        },
        Some(other) => Err(ServerError::unsupported(
            format!("{at}.type"),
            format!("{at}.type '{other}' is not supported; only 'text' parts are"),
        )),
        None => Err(ServerError::field(
            format!("{at}.type"),
            format!("{at} must be an object with a string 'type'"),
        )),
    }
}

fn prompts(v: &Value, vocab: usize) -> Result<Vec<PromptIn>, ServerError> {
    let bad = |what: String| ServerError::field("prompt", what);
    match v {
        Value::String(s) => Ok(vec![PromptIn::Text(s.clone())]),
        Value::Array(items) if items.is_empty() => {
            Err(bad("prompt must not be an empty list".to_string()))
        }
        Value::Array(items) if items.iter().all(Value::is_number) => {
            Ok(vec![PromptIn::Tokens(token_ids("prompt", items, vocab)?)])
        }
        Value::Array(items) if items.len() > MAX_CHOICES => Err(bad(format!(
            "prompt may hold at most {MAX_CHOICES} prompts, got {}",
            items.len()
        ))),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(PromptIn::Text(s.clone())),
                Value::Array(ids) if !ids.is_empty() => Ok(PromptIn::Tokens(token_ids(
                    &format!("prompt[{i}]"),
                    ids,
                    vocab,
                )?)),
                other => Err(ServerError::field(
                    format!("prompt[{i}]"),
                    format!(
                        "prompt[{i}] must be a string or a non-empty list of token ids, got {}",
                        short(other)
                    ),
                )),
            })
            .collect(),
        other => Err(bad(format!(
            "prompt must be a string, a list of strings or a list of token ids, got {}",
            kind(other)
        ))),
    }
}

/// Checks token ids against the vocabulary.
pub fn token_ids(at: &str, items: &[Value], vocab: usize) -> Result<Vec<u32>, ServerError> {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v.as_u64() {
            Some(id) if (id as usize) < vocab => Ok(id as u32),
            _ => Err(ServerError::field(
                format!("{at}[{i}]"),
                format!(
                    "{at}[{i}] must be a token id between 0 and {}, got {v}",
                    vocab - 1
                ),
            )),
        })
        .collect()
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A value for an error message, cut to a readable length.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(80) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s,
    }
}

/// Random bits for seeds of requests that give none and for response ids: different per
/// call, from the clock and a counter.
pub fn random_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let c = COUNTER.fetch_add(1, Ordering::Relaxed);
    tuili_engine::Rng::new(t ^ c.rotate_left(32)).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn completion(v: Value) -> Result<ValidCompletion, ServerError> {
        completion_request(v.to_string().as_bytes(), 100, &SamplingParams::openai())
    }

    fn param(e: ServerError) -> String {
        e.body().param.unwrap_or_default()
    }

    #[test]
    fn prompt_shapes() {
        let p = |v: Value| completion(json!({ "prompt": v })).map(|c| c.prompts);
        assert_eq!(p(json!("hi")).unwrap(), vec![PromptIn::Text("hi".into())]);
        assert_eq!(
            p(json!([1, 2])).unwrap(),
            vec![PromptIn::Tokens(vec![1, 2])]
        );
        assert_eq!(
            p(json!(["a", [3]])).unwrap(),
            vec![PromptIn::Text("a".into()), PromptIn::Tokens(vec![3])]
        );
        assert_eq!(param(p(json!([])).unwrap_err()), "prompt");
        assert_eq!(param(p(json!([1, 100])).unwrap_err()), "prompt[1]");
        assert_eq!(param(p(json!(["a", []])).unwrap_err()), "prompt[1]");
        assert_eq!(param(p(json!(["a", 5])).unwrap_err()), "prompt[1]");
        assert_eq!(param(p(json!({"x": 1})).unwrap_err()), "prompt");
        let many: Vec<String> = (0..17).map(|i| i.to_string()).collect();
        assert_eq!(param(p(json!(many)).unwrap_err()), "prompt");
    }

    #[test]
    fn choices_are_capped_over_prompts_times_n() {
        let e = completion(json!({"prompt": ["a", "b", "c"], "n": 6})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "3 prompts × n = 6 asks for 18 choices; the limit is 16"
        );
        assert!(completion(json!({"prompt": ["a", "b"], "n": 8})).is_ok());
    }

    #[test]
    fn completion_only_fields() {
        let e = completion(json!({"prompt": "a", "logprobs": 6})).unwrap_err();
        assert_eq!(e.to_string(), "logprobs must be between 0 and 5, got 6");
        let c = completion(json!({"prompt": "a", "logprobs": 0})).unwrap();
        assert_eq!(c.logprobs, Some(0));
        assert_eq!(
            param(completion(json!({"prompt": "a", "echo": true})).unwrap_err()),
            "echo"
        );
        assert_eq!(
            param(completion(json!({"prompt": "a", "suffix": "z"})).unwrap_err()),
            "suffix"
        );
        assert_eq!(
            param(completion(json!({"prompt": "a", "best_of": 2})).unwrap_err()),
            "best_of"
        );
        assert!(completion(json!({"prompt": "a", "best_of": 2, "n": 2, "echo": false})).is_ok());
        // Chat-only fields are unknown here.
        assert_eq!(
            param(completion(json!({"prompt": "a", "messages": []})).unwrap_err()),
            "messages"
        );
    }

    fn chat(body: &[u8]) -> Result<ValidChat, ServerError> {
        chat_request(body, &SamplingParams::openai())
    }

    /// A setting the request leaves out is the base's (the model's recommendation); one it
    /// gives is its own, top_k -1 included.
    #[test]
    fn left_out_settings_come_from_the_base() {
        let base = SamplingParams {
            temperature: 0.25,
            top_k: 20,
            top_p: 0.8,
            min_p: 0.1,
            repeat_penalty: 1.1,
            ..SamplingParams::openai()
        };
        let body = br#"{"messages":[{"role":"user","content":"a"}]}"#;
        let s = chat_request(body, &base).unwrap().common.sampling;
        assert_eq!(
            (s.temperature, s.top_k, s.top_p, s.min_p, s.repeat_penalty),
            (0.25, 20, 0.8, 0.1, 1.1)
        );
        let body = br#"{"messages":[{"role":"user","content":"a"}],"temperature":1.5,"top_k":-1,"top_p":1,"min_p":0,"repetition_penalty":1}"#;
        let s = chat_request(body, &base).unwrap().common.sampling;
        assert_eq!(
            (s.temperature, s.top_k, s.top_p, s.min_p, s.repeat_penalty),
            (1.5, 0, 1.0, 0.0, 1.0)
        );
        let s = completion_request(br#"{"prompt":"a","temperature":0}"#, 100, &base)
            .unwrap()
            .common
            .sampling;
        assert_eq!((s.temperature, s.top_k), (0.0, 20));
    }

    #[test]
    fn defaults_follow_openai() {
        let c = chat(br#"{"messages":[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#).unwrap();
        assert_eq!(c.messages[0], ChatMessage::new("system", "be brief"));
        assert_eq!(c.messages[1], ChatMessage::new("user", "a\nb"));
        let s = &c.common.sampling;
        assert_eq!(
            (s.temperature, s.top_p, s.top_k, s.min_p),
            (1.0, 1.0, 0, 0.0)
        );
        assert_eq!(
            (c.common.n, c.common.stream, c.common.max_tokens),
            (1, false, None)
        );
        assert_eq!(c.logprobs, None);
        // max_completion_tokens wins over max_tokens; an explicit seed is kept bit for bit.
        let c = chat(br#"{"messages":[{"role":"user","content":"a"}],"max_tokens":5,"max_completion_tokens":7,"seed":-1,"logprobs":true,"stop":"x"}"#).unwrap();
        assert_eq!(c.common.max_tokens, Some(7));
        assert_eq!(c.common.sampling.seed, u64::MAX);
        assert_eq!(c.logprobs, Some(0));
        assert_eq!(c.common.stop, vec!["x".to_string()]);
    }
}
