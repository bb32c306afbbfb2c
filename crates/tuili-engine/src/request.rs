//! What a client hands the serving engine, and what comes back on the request's stream.

use crate::{Constraint, SamplingParams};

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-generation token, or the output reached a stop string.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The context window is full.
    ContextFull,
    /// The caller asked to stop.
    Cancelled,
}

/// One completion to generate (an OpenAI `n > 1` request is `n` of these).
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// Prompt token ids (chat template already applied, special tokens added).
    pub prompt: Vec<u32>,
    /// Tokens to generate at most.
    pub max_tokens: usize,
    /// Sampling settings (seed included).
    pub sampling: SamplingParams,
    /// Stop strings: generation ends before the first occurrence of any, which is not
    /// part of the output. Text that might begin a stop string is held back, so a stop
    /// string is never split across two deltas.
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    pub ignore_eos: bool,
    /// `Some(k)`: report the chosen token's log-probability and the `k` most likely
    /// alternatives (k may be 0) for every generated token.
    pub logprobs: Option<usize>,
    /// A grammar the output must match (JSON schema, regex, choice, Lark), compiled by
    /// [`GrammarCompiler`](crate::GrammarCompiler). Tokens it forbids are never sampled,
    /// and generation stops with [`FinishReason::Stop`] once it is complete.
    pub constraint: Option<Constraint>,
    /// Added to the logits of these token ids before sampling (OpenAI `logit_bias`),
    /// after the penalties and before the grammar's mask.
    pub logit_bias: Vec<(u32, f32)>,
    /// Control tokens appear in the text (as `<|channel|>`, say) instead of being hidden:
    /// formats such as gpt-oss's harmony mark their channels with them, and stop strings
    /// then see them too. End-of-generation tokens still end the output unseen.
    pub render_special: bool,
}

/// Log-probability of one generated token.
///
/// Every figure here (the chosen token's and the top alternatives') comes from one
/// distribution: the softmax of the model's logits after the repetition, presence and
/// frequency penalties, `logit_bias` and the grammar's mask (forbidden tokens never
/// appear), before temperature and top-k/top-p/min-p. So the chosen token's
/// log-probability is never above 0 and equals its own entry in `top`; with greedy
/// decoding it is `top[0]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The chosen token.
    pub token: u32,
    /// Its text (lossy UTF-8 of its bytes).
    pub text: String,
    /// Its raw bytes.
    pub bytes: Vec<u8>,
    /// Natural log of its probability (after penalties, before temperature).
    pub logprob: f32,
    /// The most likely tokens at this step: (id, text, logprob), most likely first.
    pub top: Vec<(u32, String, f32)>,
}

/// Usage counts of a finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Of which served from the prefix cache.
    pub cached_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
}

/// What the engine sends on a request's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// New output: text (whole UTF-8 characters, never a partial stop string) and the
    /// tokens it came from, with their log-probabilities if asked for.
    Delta {
        /// Text to append.
        text: String,
        /// Token ids covered by this delta.
        tokens: Vec<u32>,
        /// One entry per token when logprobs were requested.
        logprobs: Vec<TokenLogprob>,
    },
    /// The request is done; nothing follows.
    Finished {
        /// Why it ended.
        reason: FinishReason,
        /// Token counts.
        usage: Usage,
    },
    /// The request failed inside the engine; nothing follows.
    Error(String),
}

/// Why a request was refused at submission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Too many requests are waiting.
    #[error("the server is busy: {waiting} requests are queued (limit {max_queue}); retry later")]
    QueueFull {
        /// Requests queued now.
        waiting: usize,
        /// The configured limit.
        max_queue: usize,
    },
    /// Prompt plus `max_tokens` exceed the context.
    #[error("the prompt has {prompt} tokens and max_tokens is {max_tokens}: {total} exceeds the context length of {ctx} tokens")]
    TooLong {
        /// Prompt tokens.
        prompt: usize,
        /// Requested completion tokens.
        max_tokens: usize,
        /// Their sum.
        total: usize,
        /// Context length.
        ctx: usize,
    },
    /// The prompt is empty.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The engine is shutting down or has stopped.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The engine has failed and serves no more requests.
    #[error("the engine has stopped serving: {0}")]
    Failed(String),
}
