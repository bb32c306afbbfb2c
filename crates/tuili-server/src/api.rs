//! OpenAI wire types: request bodies as they arrive (before validation) and the response
//! objects we send. Fields whose shape varies (`stop`, `messages[].content`, `prompt`) stay
//! `serde_json::Value` here; `validate` turns them into typed values with precise errors.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Fields shared by `/v1/chat/completions` and `/v1/completions`.
#[derive(Debug, Default, Deserialize)]
pub struct CommonRequest {
    /// Model name; may be omitted.
    pub model: Option<String>,
    /// Completion tokens at most.
    pub max_tokens: Option<i64>,
    /// Sampling temperature, 0..=2.
    pub temperature: Option<f64>,
    /// Nucleus sampling, 0..=1.
    pub top_p: Option<f64>,
    /// Seed of the random draw.
    pub seed: Option<i64>,
    /// Stop string or list of them.
    pub stop: Option<Value>,
    /// -2..=2.
    pub presence_penalty: Option<f64>,
    /// -2..=2.
    pub frequency_penalty: Option<f64>,
    /// Completions per prompt.
    pub n: Option<i64>,
    /// Stream the answer as server-sent events.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Extension (llama.cpp, vLLM): keep the `top_k` most likely tokens.
    pub top_k: Option<i64>,
    /// Extension: drop tokens less likely than `min_p` × the best.
    pub min_p: Option<f64>,
    /// Extension: multiplicative repetition penalty.
    pub repetition_penalty: Option<f64>,
    /// Extension: keep generating past end-of-generation tokens.
    pub ignore_eos: Option<bool>,
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` and no choices.
    pub include_usage: Option<bool>,
}

/// Fields only `/v1/chat/completions` has.
#[derive(Debug, Deserialize)]
pub struct ChatOnly {
    /// The conversation (checked by hand for precise errors).
    pub messages: Value,
    /// Newer name of `max_tokens`; wins when both are given.
    pub max_completion_tokens: Option<i64>,
    /// Return log-probabilities of the output tokens.
    pub logprobs: Option<bool>,
    /// Alternatives per token, 0..=20 (needs `logprobs: true`).
    pub top_logprobs: Option<i64>,
}

/// Fields only `/v1/completions` has.
#[derive(Debug, Deserialize)]
pub struct CompletionOnly {
    /// A string, a list of strings, a list of token ids, or a list of such lists.
    pub prompt: Value,
    /// Alternatives per token, 0..=5; also turns logprobs on.
    pub logprobs: Option<i64>,
}

/// Keys `/v1/chat/completions` understands. `store`, `metadata`, `tools`, ... are listed so
/// that `validate` can refuse them by value rather than call them unknown; the grammar
/// forms of vLLM and llama.cpp are read by `structured`.
pub const CHAT_KEYS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "stream",
    "stream_options",
    "logprobs",
    "top_logprobs",
    "top_k",
    "min_p",
    "repetition_penalty",
    "ignore_eos",
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "response_format",
    "logit_bias",
    "audio",
    "modalities",
    "prediction",
    "reasoning_effort",
    "web_search_options",
    "store",
    "metadata",
    "service_tier",
    "structured_outputs",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "json_schema",
    "grammar",
    "chat_template_kwargs",
    // vLLM's and SGLang's extensions, which routers built for them forward (refused
    // unless at a value that matches what tuili does).
    "continue_final_message",
    "add_generation_prompt",
    "skip_special_tokens",
    "no_stop_trim",
    "return_hidden_states",
    "separate_reasoning",
    "stream_reasoning",
    "include_reasoning",
];

/// Keys `/v1/completions` understands.
pub const COMPLETION_KEYS: &[&str] = &[
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "stream",
    "stream_options",
    "logprobs",
    "top_k",
    "min_p",
    "repetition_penalty",
    "ignore_eos",
    "user",
    "echo",
    "suffix",
    "best_of",
    "logit_bias",
    "response_format",
    "structured_outputs",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "json_schema",
    "grammar",
    // vLLM's and SGLang's extensions (see CHAT_KEYS).
    "skip_special_tokens",
    "no_stop_trim",
    "return_hidden_states",
];

/// `usage` of a response.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq, Eq)]
pub struct UsageOut {
    /// Prompt tokens (each prompt counted once, whatever `n`).
    pub prompt_tokens: usize,
    /// Generated tokens over all choices.
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub prompt_tokens_details: PromptTokensDetails,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq, Eq)]
pub struct PromptTokensDetails {
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_tokens: usize,
}

/// One alternative in chat `logprobs.content[].top_logprobs`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatTopLogprob {
    /// Token text.
    pub token: String,
    /// Natural log of its probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
}

/// One entry of chat `logprobs.content`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatLogprob {
    /// Token text.
    pub token: String,
    /// Natural log of its probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
    /// The most likely tokens at this position.
    pub top_logprobs: Vec<ChatTopLogprob>,
}

/// Chat `choices[].logprobs`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ChatLogprobs {
    /// One entry per generated token.
    pub content: Vec<ChatLogprob>,
}

/// Completions `choices[].logprobs` (the legacy layout).
#[derive(Debug, Clone, Serialize, Default)]
pub struct CompletionLogprobs {
    /// Token texts.
    pub tokens: Vec<String>,
    /// Their log-probabilities.
    pub token_logprobs: Vec<f32>,
    /// Per token, the alternatives as `{text: logprob}`.
    pub top_logprobs: Vec<serde_json::Map<String, Value>>,
    /// Character offset of each token in the generated text.
    pub text_offset: Vec<usize>,
}

/// `choices[].message`.
#[derive(Debug, Clone, Serialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: &'static str,
    /// The generated text (null when the answer is only tool calls).
    pub content: Option<String>,
    /// The thought of a reasoning model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Tool calls, when the model made any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallOut>>,
}

/// One tool call of an answer.
#[derive(Debug, Clone, Serialize)]
pub struct ToolCallOut {
    /// `call_...`.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The call.
    pub function: FunctionCall,
}

/// A function call: name and arguments (a JSON string).
#[derive(Debug, Clone, Serialize, Default)]
pub struct FunctionCall {
    /// Function name (streams: on the call's first fragment only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Arguments as JSON text (streams: fragments to concatenate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// One tool call fragment in a stream's `delta.tool_calls`.
#[derive(Debug, Clone, Serialize)]
pub struct ToolCallDelta {
    /// Which call of the choice.
    pub index: usize,
    /// On the call's first fragment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function`, on the call's first fragment.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// Name first, then argument fragments.
    pub function: FunctionCall,
}

/// A non-streaming chat choice.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    /// Position among the choices.
    pub index: usize,
    /// The answer.
    pub message: AssistantMessage,
    /// Log-probabilities when asked for, else null.
    pub logprobs: Option<ChatLogprobs>,
    /// `stop` or `length`.
    pub finish_reason: &'static str,
}

/// `chat.completion`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletion {
    /// `chatcmpl-...`.
    pub id: String,
    /// `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The served model.
    pub model: String,
    /// One per choice.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: UsageOut,
}

/// `choices[].delta` of a chat chunk.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ChatDelta {
    /// `assistant` on a choice's first chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// Text to append.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Thought to append.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Tool call fragments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// A streaming chat choice.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChunkChoice {
    /// Position among the choices.
    pub index: usize,
    /// What is new.
    pub delta: ChatDelta,
    /// Log-probabilities of this chunk's tokens when asked for.
    pub logprobs: Option<ChatLogprobs>,
    /// Set on the choice's last chunk.
    pub finish_reason: Option<&'static str>,
}

/// `chat.completion.chunk`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChunk {
    /// Same id on every chunk of a response.
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The served model.
    pub model: String,
    /// Choices with news (empty in the usage chunk).
    pub choices: Vec<ChatChunkChoice>,
    /// With `include_usage`: null on every chunk but the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<UsageOut>>,
}

/// A completions choice (streaming and not).
#[derive(Debug, Clone, Serialize)]
pub struct CompletionChoice {
    /// Position among the choices (prompt index × n + sample index).
    pub index: usize,
    /// Generated text (or this chunk of it).
    pub text: String,
    /// Log-probabilities when asked for, else null.
    pub logprobs: Option<CompletionLogprobs>,
    /// `stop` or `length` when done, else null.
    pub finish_reason: Option<&'static str>,
}

/// `text_completion`, the body and each chunk of `/v1/completions`.
#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    /// `cmpl-...`.
    pub id: String,
    /// `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The served model.
    pub model: String,
    /// Choices.
    pub choices: Vec<CompletionChoice>,
    /// Counts; in streams only on the last chunk with `include_usage` (null before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<UsageOut>>,
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    /// Name to put in `model`.
    pub id: String,
    /// `model`.
    pub object: &'static str,
    /// Unix seconds the server started.
    pub created: u64,
    /// `tuili`.
    pub owned_by: &'static str,
}

/// `POST /tokenize` (llama.cpp's shape; `prompt` is accepted for `content`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    /// The text.
    pub content: Option<String>,
    /// Alias of `content`.
    pub prompt: Option<String>,
    /// Add BOS/EOS as the model does for a prompt (default false, as llama.cpp).
    pub add_special: Option<bool>,
    /// Return `{id, piece}` objects instead of bare ids.
    pub with_pieces: Option<bool>,
    /// Accepted and checked like everywhere else.
    pub model: Option<String>,
}

/// `POST /detokenize`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeRequest {
    /// Token ids.
    pub tokens: Vec<i64>,
    /// Accepted and checked like everywhere else.
    pub model: Option<String>,
}
