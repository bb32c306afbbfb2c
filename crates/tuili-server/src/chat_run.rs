//! One chat answer for the APIs beside chat completions (Anthropic Messages, OpenAI
//! Responses, Ollama). Their requests are rewritten as a chat-completions body, so that one
//! code checks, renders and constrains them; their answers come out of the same output
//! parser as [`Step`]s, which each API lays out in its own shape.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::body::Bytes;
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde_json::Value;
use tuili_engine::{EngineHandle, Event, FinishReason, RequestStream, Usage};

use crate::chat_output::{OutputParser, Piece};
use crate::generate::{add_tool_grammar, chat_prompt, submit};
use crate::{AppState, ServerError};

/// What a running answer produced next.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// Answer text.
    Text(String),
    /// Thought text.
    Reasoning(String),
    /// Tool call `index` begins.
    CallStart { index: usize, name: String },
    /// More of call `index`'s arguments (a JSON text when complete).
    CallArgs { index: usize, text: String },
    /// The end: why, the token counts and the stop string that ended it, if one did.
    Done {
        reason: FinishReason,
        usage: Usage,
        stop: Option<String>,
    },
}

/// A single-choice chat answer running in the engine.
pub(crate) struct ChatRun {
    stream: RequestStream,
    parser: OutputParser,
    engine: EngineHandle,
    /// Tokens of the rendered prompt.
    pub prompt_tokens: usize,
    stops: Vec<String>,
    /// Text and tokens so far, to tell which stop string ended the answer.
    text: String,
    tokens: Vec<u32>,
    done: bool,
}

/// Checks `body` (a chat-completions request), renders it and starts generating.
pub(crate) async fn start(state: &AppState, body: &Value) -> Result<ChatRun, ServerError> {
    let bytes = Bytes::from(serde_json::to_vec(body).expect("a JSON value serializes"));
    let (req, prompt, shape) = chat_prompt(state, Ok(bytes)).await?;
    let mut common = req.common;
    let ready = state.ready()?;
    add_tool_grammar(
        &mut common,
        req.tools.as_ref(),
        shape,
        ready.engine.tokenizer(),
    )?;
    let prompt_tokens = prompt.len();
    let mut streams = submit(
        &ready.engine,
        &[prompt],
        &common,
        None,
        shape.render_special(),
    )
    .await?;
    Ok(ChatRun {
        stream: streams.pop().expect("one choice"),
        parser: shape.parser(),
        engine: ready.engine.clone(),
        prompt_tokens,
        stops: common.stop,
        text: String::new(),
        tokens: Vec::new(),
        done: false,
    })
}

/// A whole answer.
pub(crate) struct Whole {
    pub text: String,
    pub reasoning: String,
    /// Each call's name and arguments.
    pub calls: Vec<(String, String)>,
    pub reason: FinishReason,
    pub usage: Usage,
    pub stop: Option<String>,
}

impl ChatRun {
    /// The next steps; `None` after [`Step::Done`]. An engine failure is an error.
    pub async fn next(&mut self) -> Option<Result<Vec<Step>, ServerError>> {
        if self.done {
            return None;
        }
        loop {
            let ev = self.stream.next().await;
            return Some(match ev {
                Some(Event::Delta { text, tokens, .. }) => {
                    if text.is_empty() && tokens.is_empty() {
                        continue;
                    }
                    self.text.push_str(&text);
                    self.tokens.extend(tokens);
                    let pieces = if self.parser.is_active() {
                        self.parser.push(&text)
                    } else {
                        vec![Piece::Content(text)]
                    };
                    Ok(steps(pieces))
                }
                Some(Event::Finished { reason, usage }) => {
                    self.done = true;
                    let mut out = steps(self.parser.finish());
                    let stop = (reason == FinishReason::Stop)
                        .then(|| self.stop_string())
                        .flatten();
                    out.push(Step::Done {
                        reason,
                        usage,
                        stop,
                    });
                    Ok(out)
                }
                Some(Event::Error(e)) => {
                    self.done = true;
                    Err(ServerError::Engine(e))
                }
                None => {
                    self.done = true;
                    Err(ServerError::Engine(format!(
                        "the engine stopped before the request finished: {}",
                        self.engine.health().err().unwrap_or_default()
                    )))
                }
            });
        }
    }

    /// The stop string that ended the answer: the engine sends the tokens that spelled it
    /// but holds back its text, so it is the first one in what the tokens say beyond the
    /// text sent. `None` when the answer ended with an end-of-generation token.
    fn stop_string(&self) -> Option<String> {
        if self.stops.is_empty() {
            return None;
        }
        let all = self.engine.tokenizer().decode(&self.tokens, false);
        let tail = all.get(self.text.len()..).unwrap_or(&all);
        self.stops
            .iter()
            .filter_map(|s| tail.find(s.as_str()).map(|at| (at, s)))
            .min()
            .map(|(_, s)| s.clone())
    }

    /// Runs the answer to its end.
    pub async fn whole(mut self) -> Result<Whole, ServerError> {
        let mut w = Whole {
            text: String::new(),
            reasoning: String::new(),
            calls: Vec::new(),
            reason: FinishReason::Stop,
            usage: Usage::default(),
            stop: None,
        };
        while let Some(steps) = self.next().await {
            for step in steps? {
                match step {
                    Step::Text(t) => w.text.push_str(&t),
                    Step::Reasoning(t) => w.reasoning.push_str(&t),
                    Step::CallStart { name, .. } => w.calls.push((name, String::new())),
                    Step::CallArgs { index, text } => {
                        if let Some(c) = w.calls.get_mut(index) {
                            c.1.push_str(&text);
                        }
                    }
                    Step::Done {
                        reason,
                        usage,
                        stop,
                    } => {
                        w.reason = reason;
                        w.usage = usage;
                        w.stop = stop;
                    }
                }
            }
        }
        Ok(w)
    }
}

/// How an API lays a streamed answer out as server-sent events.
pub(crate) trait EventLayout: Send + 'static {
    /// The events ready to send.
    fn queue(&mut self) -> &mut VecDeque<sse::Event>;
    /// Queues the events of the next step.
    fn step(&mut self, s: Step);
    /// Queues the event of an engine failure; nothing follows it.
    fn error(&mut self, e: ServerError);
}

/// `run` streamed as server-sent events laid out by `layout` (with what it has queued
/// already first).
pub(crate) fn sse_answer<L: EventLayout>(run: ChatRun, layout: L) -> Response {
    let events = stream::unfold((Some(run), layout), |(mut run, mut l)| async move {
        loop {
            if let Some(e) = l.queue().pop_front() {
                return Some((Ok::<_, Infallible>(e), (run, l)));
            }
            match run.as_mut()?.next().await {
                Some(Ok(steps)) => steps.into_iter().for_each(|s| l.step(s)),
                Some(Err(e)) => {
                    tracing::error!("engine error on a streamed answer: {e:?}");
                    l.error(e);
                    run = None;
                }
                None => run = None,
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().text("keep-alive"))
        .into_response()
}

/// The parser's pieces as steps; a whole call becomes its start and its arguments.
fn steps(pieces: Vec<Piece>) -> Vec<Step> {
    let mut out = Vec::with_capacity(pieces.len());
    for p in pieces {
        match p {
            Piece::Content(t) => out.push(Step::Text(t)),
            Piece::Reasoning(t) => out.push(Step::Reasoning(t)),
            Piece::CallStart { index, name } => out.push(Step::CallStart { index, name }),
            Piece::CallArgs { index, text } => out.push(Step::CallArgs { index, text }),
            Piece::ToolCall {
                index,
                name,
                arguments,
            } => {
                out.push(Step::CallStart { index, name });
                out.push(Step::CallArgs {
                    index,
                    text: arguments,
                });
            }
        }
    }
    out
}

/// The arguments of a call as a JSON value (an object); text that does not parse, such as
/// arguments cut by `max_tokens`, is kept as a string.
pub(crate) fn arguments_value(args: &str) -> Value {
    serde_json::from_str(args).unwrap_or_else(|_| Value::String(args.to_string()))
}
