//! `/v1/chat/completions` and `/v1/completions`: tokenize, submit one engine request per
//! choice, then answer with one JSON body or a stream of server-sent events.
//!
//! A response body owns the engine's `RequestStream`s: when a client disconnects, axum drops
//! the body, the streams drop with it, and the engine frees their sequences at its next step.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, BoxStream, SelectAll, StreamExt};
use serde::Serialize;
use tuili_engine::{
    Constraint, EngineHandle, Event, FinishReason, GenerateRequest, RequestStream, SamplingParams,
    TokenLogprob, Usage,
};
use tuili_tokenizer::Tokenizer;

use crate::api::*;
use crate::chat_output::{OutputParser, Piece};
use crate::routes::body;
use crate::state::unix_now;
use crate::structured::{self, Guidance};
use crate::tools::{ToolChoice, ToolFormat, ToolSpec};
use crate::validate::{self, PromptIn, ValidCommon};
use crate::{AppState, ServerError};

/// An SSE comment is sent after this long without news, so that a client that went away
/// while its request waits in the queue is noticed (the write fails) and the request freed.
const KEEPALIVE: Duration = Duration::from_secs(1);

/// Which endpoint, which decides the response layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

/// A checked request, tokenized: what to submit and how to answer.
struct Job {
    kind: Kind,
    /// Token ids of each prompt.
    prompts: Vec<Vec<u32>>,
    common: ValidCommon,
    logprobs: Option<usize>,
    shape: ChatShape,
}

/// How a chat answer's text splits into content, thought and tool calls.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ChatShape {
    /// The tool-call format to parse (tools were shown to the model).
    tools: Option<ToolFormat>,
    /// The template thinks in `<think>` blocks.
    reasoning: bool,
    /// The prompt ends inside an opened thought.
    in_thought: bool,
    /// The template is gpt-oss's harmony: the answer's channel markers (control tokens)
    /// are rendered into its text and split by [`crate::harmony`].
    pub(crate) harmony: bool,
}

impl ChatShape {
    /// Whether the answer's control tokens are rendered into its text: the markers of
    /// harmony and of Mistral v11+ calls, which the parsers split on.
    pub(crate) fn render_special(&self) -> bool {
        self.harmony || self.tools == Some(ToolFormat::MistralV11)
    }

    pub(crate) fn parser(&self) -> OutputParser {
        if self.harmony {
            return OutputParser::harmony();
        }
        OutputParser::new(self.tools, self.reasoning, self.in_thought)
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ServerError> {
    let (req, prompt, shape) = chat_prompt(&state, b).await?;
    let mut common = req.common;
    let tok = state.ready()?.engine.tokenizer();
    add_tool_grammar(&mut common, req.tools.as_ref(), shape, tok)?;
    let job = Job {
        kind: Kind::Chat,
        prompts: vec![prompt],
        common,
        logprobs: req.logprobs,
        shape,
    };
    run(&state, job).await
}

/// The grammar that `tool_choice` asks for, unless the request has its own: `required` and
/// a named function cannot be combined with one; under `auto` the request's grammar wins.
/// `tok`: the model's vocabulary, whose control tokens some formats' grammars name.
pub(crate) fn add_tool_grammar(
    common: &mut ValidCommon,
    tools: Option<&ToolSpec>,
    shape: ChatShape,
    tok: &Tokenizer,
) -> Result<(), ServerError> {
    let (Some(spec), Some(format)) = (tools, shape.tools) else {
        return Ok(());
    };
    let Some(g) = spec.grammar(format, tok) else {
        return Ok(());
    };
    match &common.guidance.grammar {
        None => common.guidance.grammar = Some(("tool_choice".to_string(), g)),
        Some(_) if spec.choice == ToolChoice::Auto => {}
        Some((other, _)) => {
            return Err(ServerError::field(
                other.clone(),
                format!("{other} cannot be combined with tool_choice required or a named function"),
            ))
        }
    }
    Ok(())
}

/// `POST /v1/completions`.
pub async fn completions(
    State(state): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ServerError> {
    let (req, prompts) = completion_prompts(&state, b).await?;
    let job = Job {
        kind: Kind::Completion,
        prompts,
        common: req.common,
        logprobs: req.logprobs,
        shape: ChatShape::default(),
    };
    run(&state, job).await
}

/// A chat request, checked, and the token ids of its prompt (also what
/// `/v1/chat/completions/render` answers).
pub(crate) async fn chat_prompt(
    state: &AppState,
    b: Result<Bytes, BytesRejection>,
) -> Result<(validate::ValidChat, Vec<u32>, ChatShape), ServerError> {
    let b = body(b, state)?;
    let mut req = validate::chat_request(&b, &sampling_base(state))?;
    state.check_model(req.common.model.as_deref())?;
    state.ready()?;
    let st = state.clone();
    let messages = std::mem::take(&mut req.messages);
    let tools = req.tools.clone();
    let kwargs = req.template_kwargs.clone();
    // Rendering and tokenizing a large prompt is CPU work: keep it off the async workers.
    let (prompt, shape) = blocking(move || {
        let ready = st.ready()?;
        let source = ready.template.source();
        let shown = tools.as_ref().and_then(ToolSpec::shown);
        let format = match (&shown, ToolFormat::of_template(source)) {
            (None, _) => None,
            (Some(_), Some(f)) => Some(f),
            (Some(_), None) => return Err(ServerError::unsupported(
                "tools",
                "tools: the model's chat template has no tool-call format this server can parse",
            )),
        };
        let text = ready
            .template
            .render_with(&messages, true, shown.as_ref(), kwargs.as_ref())
            .map_err(|e| ServerError::field("messages", e.to_string()))?;
        let reasoning = source.contains("<think>");
        let shape = ChatShape {
            tools: format,
            reasoning,
            in_thought: reasoning && text.trim_end().ends_with("<think>"),
            harmony: ToolFormat::of_template(source) == Some(ToolFormat::Harmony),
        };
        Ok((ready.engine.tokenizer().encode(&text, false, true), shape))
    })
    .await?;
    Ok((req, prompt, shape))
}

/// A completion request, checked, and the token ids of each of its prompts (also what
/// `/v1/completions/render` answers).
pub(crate) async fn completion_prompts(
    state: &AppState,
    b: Result<Bytes, BytesRejection>,
) -> Result<(validate::ValidCompletion, Vec<Vec<u32>>), ServerError> {
    let b = body(b, state)?;
    let vocab = state.ready()?.engine.tokenizer().vocab_size();
    let mut req = validate::completion_request(&b, vocab, &sampling_base(state))?;
    state.check_model(req.common.model.as_deref())?;
    let st = state.clone();
    let prompts = std::mem::take(&mut req.prompts);
    let prompts = blocking(move || {
        let tok = st.ready()?.engine.tokenizer();
        Ok(prompts
            .into_iter()
            .map(|p| match p {
                PromptIn::Text(t) => tok.encode(&t, true, false),
                PromptIn::Tokens(ids) => ids,
            })
            .collect())
    })
    .await?;
    Ok((req, prompts))
}

/// What a request's sampling settings default to: OpenAI's, with the served model's
/// recommendations (`general.sampling.*`) in their place. While the model loads, OpenAI's
/// (the request is refused as not ready right after it is checked).
fn sampling_base(state: &AppState) -> SamplingParams {
    let base = SamplingParams::openai();
    match state.ready() {
        Ok(r) => base.with_model_defaults(r.engine.model_sampling()),
        Err(_) => base,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServerError> + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServerError::Engine(format!("tokenizing task failed: {e}")))?
}

/// The request's grammar compiled over the served vocabulary (off the async workers:
/// the first one builds the token trie), after its `logit_bias` ids are checked.
async fn constraint(
    engine: &EngineHandle,
    g: &Guidance,
) -> Result<Option<Constraint>, ServerError> {
    structured::check_bias_ids(&g.logit_bias, engine.tokenizer().vocab_size())?;
    let Some((param, spec)) = g.grammar.clone() else {
        return Ok(None);
    };
    let grammars = engine.grammars().clone();
    blocking(move || {
        grammars.compile(&spec).map(Some).map_err(|e| {
            ServerError::field(param.clone(), format!("{param} does not compile: {e}"))
        })
    })
    .await
}

/// Compiles the request's grammar and submits `n` choices of each prompt; dropping the
/// streams cancels them. `render_special`: control tokens are part of the text
/// ([`ChatShape::render_special`]).
pub(crate) async fn submit(
    engine: &EngineHandle,
    prompts: &[Vec<u32>],
    c: &ValidCommon,
    logprobs: Option<usize>,
    render_special: bool,
) -> Result<Vec<RequestStream>, ServerError> {
    let n_ctx = engine.n_ctx();
    let constraint = constraint(engine, &c.guidance).await?;
    let mut streams = Vec::with_capacity(prompts.len() * c.n);
    for prompt in prompts {
        if prompt.len() >= n_ctx {
            return Err(ServerError::PromptTooLong {
                prompt: prompt.len(),
                ctx: n_ctx,
            });
        }
        let max_tokens = c.max_tokens.unwrap_or(n_ctx - prompt.len());
        if prompt.len() + max_tokens > n_ctx {
            return Err(ServerError::ContextLength {
                prompt: prompt.len(),
                max_tokens,
                ctx: n_ctx,
            });
        }
        for _ in 0..c.n {
            let mut sampling = c.sampling.clone();
            // Choice k samples with seed + k, so `n` choices differ yet are reproducible.
            sampling.seed = sampling.seed.wrapping_add(streams.len() as u64);
            // A refusal drops the streams submitted so far, which cancels them.
            streams.push(engine.submit(GenerateRequest {
                prompt: prompt.clone(),
                max_tokens,
                sampling,
                stop: c.stop.clone(),
                ignore_eos: c.ignore_eos,
                logprobs,
                // Each choice has its own grammar state.
                constraint: constraint.clone(),
                logit_bias: c.guidance.logit_bias.clone(),
                render_special,
            })?);
        }
    }
    Ok(streams)
}

/// Submits every choice, then answers as the request asked.
async fn run(state: &AppState, job: Job) -> Result<Response, ServerError> {
    let ready = state.ready()?;
    let engine = &ready.engine;
    let c = &job.common;
    let streams = submit(
        engine,
        &job.prompts,
        c,
        job.logprobs,
        job.shape.render_special(),
    )
    .await?;
    let ctx = Answer {
        kind: job.kind,
        id: new_id(job.kind),
        created: unix_now(),
        model: state.config().model_name.clone(),
        n: c.n,
        logprobs: job.logprobs.is_some(),
        include_usage: c.include_usage,
        shape: job.shape,
        tokenizer: engine.tokenizer().clone(),
        engine: engine.clone(),
    };
    if c.stream {
        Ok(sse(ctx, streams))
    } else {
        whole(ctx, streams).await
    }
}

/// How to lay out the answer.
struct Answer {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    /// Choices per prompt (usage counts each prompt once).
    n: usize,
    logprobs: bool,
    include_usage: bool,
    shape: ChatShape,
    tokenizer: std::sync::Arc<Tokenizer>,
    engine: EngineHandle,
}

impl Answer {
    /// Why the engine stopped, for a stream that ended without its end.
    fn engine_health(&self) -> String {
        stopped_why(&self.engine)
    }
}

/// What the engine says of itself after a request stream closed without its end.
fn stopped_why(engine: &EngineHandle) -> String {
    match engine.health() {
        Err(why) => why,
        Ok(()) => "the engine thread ended".to_string(),
    }
}

/// One finished choice.
struct Collected {
    text: String,
    logprobs: Vec<TokenLogprob>,
    reason: FinishReason,
    usage: Usage,
}

async fn collect(mut s: RequestStream, engine: &EngineHandle) -> Result<Collected, ServerError> {
    let mut text = String::new();
    let mut logprobs = Vec::new();
    loop {
        match s.next().await {
            Some(Event::Delta {
                text: t,
                logprobs: l,
                ..
            }) => {
                text.push_str(&t);
                logprobs.extend(l);
            }
            Some(Event::Finished { reason, usage }) => {
                return Ok(Collected {
                    text,
                    logprobs,
                    reason,
                    usage,
                })
            }
            Some(Event::Error(e)) => return Err(ServerError::Engine(e)),
            None => {
                return Err(ServerError::Engine(format!(
                    "the engine stopped before the request finished: {}",
                    stopped_why(engine)
                )))
            }
        }
    }
}

async fn whole(a: Answer, streams: Vec<RequestStream>) -> Result<Response, ServerError> {
    // On the first failure the other streams are dropped, which cancels them.
    let done =
        futures_util::future::try_join_all(streams.into_iter().map(|s| collect(s, &a.engine)))
            .await?;
    let usages: Vec<Usage> = done.iter().map(|d| d.usage).collect();
    let usage = total_usage(&usages, a.n);
    let resp = match a.kind {
        Kind::Chat => Json(ChatCompletion {
            id: a.id.clone(),
            object: "chat.completion",
            created: a.created,
            model: a.model.clone(),
            choices: done
                .into_iter()
                .enumerate()
                .map(|(index, d)| {
                    let (message, calls) = assistant_message(a.shape, &d.text);
                    ChatChoice {
                        index,
                        logprobs: a.logprobs.then(|| chat_logprobs(&a.tokenizer, &d.logprobs)),
                        message,
                        finish_reason: chat_finish(d.reason, calls),
                    }
                })
                .collect(),
            usage,
        })
        .into_response(),
        Kind::Completion => Json(Completion {
            id: a.id.clone(),
            object: "text_completion",
            created: a.created,
            model: a.model.clone(),
            choices: done
                .into_iter()
                .enumerate()
                .map(|(index, d)| CompletionChoice {
                    index,
                    logprobs: a.logprobs.then(|| completion_logprobs(&d.logprobs, 0).0),
                    text: d.text,
                    finish_reason: Some(finish_reason(d.reason)),
                })
                .collect(),
            usage: Some(Some(usage)),
        })
        .into_response(),
    };
    Ok(resp)
}

/// Usage over all choices: each prompt counted once, completions summed.
fn total_usage(per_choice: &[Usage], n: usize) -> UsageOut {
    let n = n.max(1);
    let prompt: usize = per_choice.iter().step_by(n).map(|u| u.prompt_tokens).sum();
    let cached: usize = per_choice.iter().step_by(n).map(|u| u.cached_tokens).sum();
    let completion: usize = per_choice.iter().map(|u| u.completion_tokens).sum();
    UsageOut {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        prompt_tokens_details: PromptTokensDetails {
            cached_tokens: cached,
        },
    }
}

/// A whole answer split into content, thought and tool calls; also the number of calls.
fn assistant_message(shape: ChatShape, text: &str) -> (AssistantMessage, usize) {
    let mut p = shape.parser();
    let mut pieces = p.push(text);
    pieces.extend(p.finish());
    let (mut content, mut reasoning) = (String::new(), String::new());
    let mut calls: Vec<ToolCallOut> = Vec::new();
    let new_call = |name| ToolCallOut {
        id: call_id(),
        kind: "function",
        function: FunctionCall {
            name: Some(name),
            arguments: Some(String::new()),
        },
    };
    for piece in pieces {
        match piece {
            Piece::Content(t) => content.push_str(&t),
            Piece::Reasoning(t) => reasoning.push_str(&t),
            Piece::CallStart { name, .. } => calls.push(new_call(name)),
            Piece::CallArgs { index, text } => {
                if let Some(args) = calls
                    .get_mut(index)
                    .and_then(|c| c.function.arguments.as_mut())
                {
                    args.push_str(&text);
                }
            }
            Piece::ToolCall {
                name, arguments, ..
            } => {
                let mut c = new_call(name);
                c.function.arguments = Some(arguments);
                calls.push(c);
            }
        }
    }
    let n = calls.len();
    let message = AssistantMessage {
        role: "assistant",
        // An answer of tool calls alone has null content, as OpenAI's.
        content: (!(n > 0 && content.trim().is_empty())).then_some(content),
        reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
        tool_calls: (n > 0).then_some(calls),
    };
    (message, n)
}

/// A stream's first fragment of call `index`: its id, type and name.
fn call_start(index: usize, name: String) -> ChatDelta {
    call_fragment(ToolCallDelta {
        index,
        id: Some(call_id()),
        kind: Some("function"),
        function: FunctionCall {
            name: Some(name),
            arguments: Some(String::new()),
        },
    })
}

/// A stream's fragment of call `index`'s arguments.
fn call_args(index: usize, text: String) -> ChatDelta {
    call_fragment(ToolCallDelta {
        index,
        id: None,
        kind: None,
        function: FunctionCall {
            name: None,
            arguments: Some(text),
        },
    })
}

fn call_fragment(d: ToolCallDelta) -> ChatDelta {
    ChatDelta {
        tool_calls: Some(vec![d]),
        ..Default::default()
    }
}

/// `tool_calls` when the answer ended by itself after calling tools.
fn chat_finish(r: FinishReason, calls: usize) -> &'static str {
    match r {
        FinishReason::Stop if calls > 0 => "tool_calls",
        r => finish_reason(r),
    }
}

fn call_id() -> String {
    format!("call_{:016x}", validate::random_u64())
}

fn finish_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length | FinishReason::ContextFull => "length",
        // Only on shutdown past the grace period; vLLM's name for it.
        FinishReason::Cancelled => "abort",
    }
}

fn chat_logprobs(tok: &Tokenizer, lps: &[TokenLogprob]) -> ChatLogprobs {
    ChatLogprobs {
        content: lps
            .iter()
            .map(|l| ChatLogprob {
                token: l.text.clone(),
                logprob: l.logprob,
                bytes: l.bytes.clone(),
                top_logprobs: l
                    .top
                    .iter()
                    .map(|(id, text, lp)| ChatTopLogprob {
                        token: text.clone(),
                        logprob: *lp,
                        bytes: tok.token_bytes(*id).to_vec(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The legacy layout; offsets count characters from `offset`. Returns the offset after.
fn completion_logprobs(lps: &[TokenLogprob], mut offset: usize) -> (CompletionLogprobs, usize) {
    let mut out = CompletionLogprobs::default();
    for l in lps {
        out.tokens.push(l.text.clone());
        out.token_logprobs.push(l.logprob);
        out.top_logprobs.push(
            l.top
                .iter()
                .map(|(_, text, lp)| (text.clone(), serde_json::json!(lp)))
                .collect(),
        );
        out.text_offset.push(offset);
        offset += l.text.chars().count();
    }
    (out, offset)
}

fn new_id(kind: Kind) -> String {
    let prefix = match kind {
        Kind::Chat => "chatcmpl",
        Kind::Completion => "cmpl",
    };
    format!(
        "{prefix}-{:016x}{:08x}",
        validate::random_u64(),
        validate::random_u64() as u32
    )
}

/// The server-sent-event answer.
fn sse(a: Answer, streams: Vec<RequestStream>) -> Response {
    let mut merged: SelectAll<BoxStream<'static, (usize, Event)>> = SelectAll::new();
    for (i, rs) in streams.into_iter().enumerate() {
        merged.push(
            stream::unfold(rs, move |mut rs| async move {
                rs.next().await.map(|ev| ((i, ev), rs))
            })
            .boxed(),
        );
    }
    let choices = merged.len();
    let mut st = SseState {
        parsers: (0..choices).map(|_| a.shape.parser()).collect(),
        pending: VecDeque::new(),
        merged: Some(merged),
        finished: vec![false; choices],
        usages: vec![Usage::default(); choices],
        offsets: vec![0; choices],
        a,
    };
    if st.a.kind == Kind::Chat {
        // Each choice opens with the assistant role, as OpenAI's streams do.
        for index in 0..choices {
            let delta = ChatDelta {
                role: Some("assistant"),
                content: Some(String::new()),
                ..Default::default()
            };
            let frame = st.chat_chunk(index, delta, None, None);
            st.pending.push_back(frame);
        }
    }
    let events = stream::unfold(st, |mut st| async move {
        loop {
            if let Some(frame) = st.pending.pop_front() {
                return Some((Ok::<_, Infallible>(frame), st));
            }
            let merged = st.merged.as_mut()?;
            match merged.next().await {
                Some((i, ev)) => st.on_event(i, ev),
                None => st.finish(),
            }
        }
    });
    let keep_alive = KeepAlive::new().interval(KEEPALIVE).text("keep-alive");
    let mut resp = Sse::new(events).keep_alive(keep_alive).into_response();
    // Proxies must pass each event on as it comes.
    resp.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    resp
}

/// State of one SSE answer: frames ready to send and the streams still running.
struct SseState {
    pending: VecDeque<sse::Event>,
    /// `None` once `[DONE]` is queued.
    merged: Option<SelectAll<BoxStream<'static, (usize, Event)>>>,
    /// Per choice: its `Finished` event has come.
    finished: Vec<bool>,
    usages: Vec<Usage>,
    /// Completions: character offset of the next token in each choice's text.
    offsets: Vec<usize>,
    /// Chat: each choice's split into content, thought and tool calls.
    parsers: Vec<OutputParser>,
    a: Answer,
}

fn frame<T: Serialize>(v: &T) -> sse::Event {
    let json = serde_json::to_string(v)
        .unwrap_or_else(|e| ServerError::Engine(format!("serializing a chunk: {e}")).to_json());
    sse::Event::default().data(json)
}

/// The stream's last event.
fn done() -> sse::Event {
    sse::Event::default().data("[DONE]")
}

impl SseState {
    fn usage_field(&self) -> Option<Option<UsageOut>> {
        self.a.include_usage.then_some(None)
    }

    fn chat_chunk(
        &self,
        index: usize,
        delta: ChatDelta,
        logprobs: Option<ChatLogprobs>,
        finish: Option<&'static str>,
    ) -> sse::Event {
        frame(&ChatChunk {
            id: self.a.id.clone(),
            object: "chat.completion.chunk",
            created: self.a.created,
            model: self.a.model.clone(),
            choices: vec![ChatChunkChoice {
                index,
                delta,
                logprobs,
                finish_reason: finish,
            }],
            usage: self.usage_field(),
        })
    }

    fn completion_chunk(&self, choice: CompletionChoice) -> sse::Event {
        frame(&Completion {
            id: self.a.id.clone(),
            object: "text_completion",
            created: self.a.created,
            model: self.a.model.clone(),
            choices: vec![choice],
            usage: self.usage_field(),
        })
    }

    fn on_event(&mut self, index: usize, ev: Event) {
        match ev {
            Event::Delta { text, logprobs, .. } => {
                if text.is_empty() && logprobs.is_empty() {
                    return;
                }
                let f = match self.a.kind {
                    Kind::Chat => {
                        let lp = self
                            .a
                            .logprobs
                            .then(|| chat_logprobs(&self.a.tokenizer, &logprobs));
                        if self.parsers[index].is_active() {
                            let pieces = self.parsers[index].push(&text);
                            return self.send_pieces(index, pieces, lp);
                        }
                        let delta = ChatDelta {
                            content: Some(text),
                            ..Default::default()
                        };
                        self.chat_chunk(index, delta, lp, None)
                    }
                    Kind::Completion => {
                        let lp = if self.a.logprobs {
                            let (lp, next) = completion_logprobs(&logprobs, self.offsets[index]);
                            self.offsets[index] = next;
                            Some(lp)
                        } else {
                            None
                        };
                        self.completion_chunk(CompletionChoice {
                            index,
                            text,
                            logprobs: lp,
                            finish_reason: None,
                        })
                    }
                };
                self.pending.push_back(f);
            }
            Event::Finished { reason, usage } => {
                self.finished[index] = true;
                self.usages[index] = usage;
                let reason = Some(match self.a.kind {
                    Kind::Chat => {
                        let pieces = self.parsers[index].finish();
                        self.send_pieces(index, pieces, None);
                        chat_finish(reason, self.parsers[index].calls())
                    }
                    Kind::Completion => finish_reason(reason),
                });
                let f = match self.a.kind {
                    Kind::Chat => self.chat_chunk(index, ChatDelta::default(), None, reason),
                    Kind::Completion => self.completion_chunk(CompletionChoice {
                        index,
                        text: String::new(),
                        logprobs: None,
                        finish_reason: reason,
                    }),
                };
                self.pending.push_back(f);
            }
            Event::Error(e) => self.fail(e),
        }
    }

    /// Chat chunks for a delta's parsed pieces: text as `content` or `reasoning_content`;
    /// a tool call as its id, type and name, then its arguments. Logprobs go with the
    /// first chunk (alone, if the text is all held back).
    fn send_pieces(&mut self, index: usize, pieces: Vec<Piece>, mut lp: Option<ChatLogprobs>) {
        if pieces.is_empty() {
            if let Some(lp) = lp.filter(|l| !l.content.is_empty()) {
                let f = self.chat_chunk(index, ChatDelta::default(), Some(lp), None);
                self.pending.push_back(f);
            }
            return;
        }
        for piece in pieces {
            let deltas = match piece {
                Piece::Content(t) => vec![ChatDelta {
                    content: Some(t),
                    ..Default::default()
                }],
                Piece::Reasoning(t) => vec![ChatDelta {
                    reasoning_content: Some(t),
                    ..Default::default()
                }],
                Piece::CallStart { index, name } => vec![call_start(index, name)],
                Piece::CallArgs { index, text } => vec![call_args(index, text)],
                Piece::ToolCall {
                    index,
                    name,
                    arguments,
                } => {
                    vec![call_start(index, name), call_args(index, arguments)]
                }
            };
            for d in deltas {
                let f = self.chat_chunk(index, d, lp.take(), None);
                self.pending.push_back(f);
            }
        }
    }

    /// Ends the stream with an error event: the status line is long gone, so the error
    /// is reported in-band (dropping the other choices' streams cancels them).
    fn fail(&mut self, detail: String) {
        tracing::error!("engine error on a streamed request: {detail}");
        let e = sse::Event::default().data(ServerError::Engine(detail).to_json());
        self.pending.push_back(e);
        self.pending.push_back(done());
        self.merged = None;
    }

    fn finish(&mut self) {
        if let Some(i) = self.finished.iter().position(|f| !f) {
            // A request stream closed without its end: the engine is gone.
            return self.fail(format!(
                "the engine stopped before choice {i} finished: {}",
                self.a.engine_health()
            ));
        }
        if self.a.include_usage {
            let usage = Some(Some(total_usage(&self.usages, self.a.n)));
            let f = match self.a.kind {
                Kind::Chat => frame(&ChatChunk {
                    id: self.a.id.clone(),
                    object: "chat.completion.chunk",
                    created: self.a.created,
                    model: self.a.model.clone(),
                    choices: Vec::new(),
                    usage,
                }),
                Kind::Completion => frame(&Completion {
                    id: self.a.id.clone(),
                    object: "text_completion",
                    created: self.a.created,
                    model: self.a.model.clone(),
                    choices: Vec::new(),
                    usage,
                }),
            };
            self.pending.push_back(f);
        }
        self.pending.push_back(done());
        self.merged = None;
    }
}
