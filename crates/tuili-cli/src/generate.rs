//! `run` and `chat` as clients of the serving engine: an engine with one sequence slot,
//! requests submitted as `tuili serve` submits them, text printed as its deltas arrive.
//! One generation loop and one KV path for every command, so stop strings, logprobs and
//! the prefix cache behave the same here as over HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use tuili_engine::{
    start_engine_with, EngineConfig, EngineHandle, Event, FinishReason, GenerateRequest,
    SamplingParams, TokenLogprob, Usage,
};
use tuili_models::Model;
use tuili_tokenizer::Tokenizer;

use crate::device::{self, DeviceArgs};

/// Starts an engine for `model` on `device` with one sequence slot and a KV pool of
/// exactly one context of `n_ctx` tokens (at most the model's). The full blocks of a
/// finished request stay in the engine's prefix cache, so the next turn of a
/// conversation runs only the tokens it adds.
pub fn start(
    mut model: Model,
    tokenizer: Tokenizer,
    device: &DeviceArgs,
    n_ctx: usize,
) -> Result<EngineHandle> {
    let mcfg = model.config().clone();
    let n_ctx = n_ctx.min(mcfg.ctx_len);
    model.use_context(n_ctx);
    let dev = device.resolve(&model, n_ctx);
    let (k_type, v_type) = device.kv_types(dev);
    let block_size = EngineConfig::default().block_size;
    let mut cfg = EngineConfig {
        n_ctx,
        max_num_seqs: 1,
        max_queue: 1,
        block_size,
        k_type,
        v_type,
        ..EngineConfig::default()
    };
    // Exactly one context (local layers: their window), even beyond the default cap.
    cfg.kv_memory_bytes = Some(tuili_engine::kv_bytes_wanted(&mcfg, &cfg));
    let runner = device::engine_runner(Arc::new(model), dev);
    Ok(start_engine_with(&mcfg, runner, Arc::new(tokenizer), cfg)?)
}

/// What to generate after a prompt.
#[derive(Debug, Clone)]
pub struct Options {
    /// Tokens to generate at most (cut to what the context leaves).
    pub max_tokens: usize,
    /// Sampling settings, seed included.
    pub sampling: SamplingParams,
    /// Stop strings; the output ends before the first one.
    pub stop: Vec<String>,
    /// `Some(n)`: each token's log-probability and the `n` most likely ones.
    pub logprobs: Option<usize>,
}

/// A request that fits the engine's context.
pub struct Request {
    req: GenerateRequest,
    /// `max_tokens` was cut to the room the context leaves.
    cut_by_context: bool,
}

/// The request for `prompt`. A prompt that leaves no room in the context is an error
/// that names the limit.
pub fn request(h: &EngineHandle, prompt: Vec<u32>, opts: &Options) -> Result<Request> {
    let n_ctx = h.n_ctx();
    if opts.max_tokens == 0 {
        bail!("--n-predict must be at least 1, got 0");
    }
    if prompt.is_empty() {
        bail!("the prompt is empty (no tokens)");
    }
    if prompt.len() >= n_ctx {
        bail!(
            "the prompt has {} tokens; the context holds {n_ctx} (set it with -c/--ctx-size)",
            prompt.len()
        );
    }
    let max_tokens = opts.max_tokens.min(n_ctx - prompt.len());
    Ok(Request {
        cut_by_context: max_tokens < opts.max_tokens,
        req: GenerateRequest {
            prompt,
            max_tokens,
            sampling: opts.sampling.clone(),
            stop: opts.stop.clone(),
            ignore_eos: false,
            logprobs: opts.logprobs,
            constraint: None,
            logit_bias: Vec::new(),
            render_special: false,
        },
    })
}

/// Timings measured here, on the client side: the engine sends the first delta in the
/// step that runs the prompt's last chunk and samples the first token.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// From submission to the first delta: the prompt's tokens not in the prefix cache.
    pub prompt: Duration,
    /// From the first delta to the end.
    pub generation: Duration,
    /// Tokens generated after the first delta (those `generation` measures).
    pub generation_tokens: usize,
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The generated text (stop strings excluded).
    pub text: String,
    /// Its tokens.
    pub tokens: Vec<u32>,
    /// One entry per token when logprobs were asked for.
    pub logprobs: Vec<TokenLogprob>,
    /// Why it ended.
    pub finish: FinishReason,
    /// Token counts as the engine reports them.
    pub usage: Usage,
    /// Client-side timings.
    pub timings: Timings,
}

/// Submits `r`, hands each piece of text to `on_text` as it arrives, and returns the
/// whole generation when it ends.
pub fn stream(h: &EngineHandle, r: Request, mut on_text: impl FnMut(&str)) -> Result<Generation> {
    let t0 = Instant::now();
    let mut events = h.submit(r.req)?;
    // When the first delta came, and how many tokens it carried.
    let mut first: Option<(Instant, usize)> = None;
    let (mut text, mut tokens, mut logprobs) = (String::new(), Vec::new(), Vec::new());
    while let Some(ev) = events.next_blocking() {
        match ev {
            Event::Delta {
                text: t,
                tokens: ids,
                logprobs: lp,
            } => {
                first.get_or_insert((Instant::now(), ids.len()));
                if !t.is_empty() {
                    on_text(&t);
                }
                text.push_str(&t);
                tokens.extend(ids);
                logprobs.extend(lp);
            }
            Event::Finished { reason, usage } => {
                let end = Instant::now();
                let (t1, in_first) = first.unwrap_or((end, usage.completion_tokens));
                // The scheduler ends a sequence at `max_tokens` with `Length`; when the
                // context set that limit, say so.
                let finish = match reason {
                    FinishReason::Length if r.cut_by_context => FinishReason::ContextFull,
                    other => other,
                };
                return Ok(Generation {
                    text,
                    tokens,
                    logprobs,
                    finish,
                    usage,
                    timings: Timings {
                        prompt: t1 - t0,
                        generation: end - t1,
                        generation_tokens: usage.completion_tokens.saturating_sub(in_first),
                    },
                });
            }
            Event::Error(e) => bail!("generation failed: {e}"),
        }
    }
    bail!("the engine stopped before the request ended")
}

fn per_second(n: usize, d: Duration) -> f64 {
    if n == 0 {
        0.0
    } else {
        n as f64 / d.as_secs_f64().max(1e-9)
    }
}

/// How a finish reason reads in JSON.
fn finish_name(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ContextFull => "context_full",
        FinishReason::Cancelled => "cancelled",
    }
}

impl Generation {
    /// Prompt tokens the model ran (those served from the prefix cache excluded).
    pub fn prompt_tokens_run(&self) -> usize {
        self.usage.prompt_tokens - self.usage.cached_tokens
    }

    /// Prompt tokens run per second.
    pub fn prompt_tps(&self) -> f64 {
        per_second(self.prompt_tokens_run(), self.timings.prompt)
    }

    /// Generated tokens per second after the first.
    pub fn generation_tps(&self) -> f64 {
        per_second(self.timings.generation_tokens, self.timings.generation)
    }

    /// `prompt: 7 tokens, 210.4 t/s | generated: 20 tokens, 61.0 t/s | finish: Length`,
    /// with `, N cached` after the prompt's speed when the prefix cache served some.
    pub fn stats_line(&self) -> String {
        let cached = match self.usage.cached_tokens {
            0 => String::new(),
            n => format!(", {n} cached"),
        };
        format!(
            "prompt: {} tokens, {:.1} t/s{cached} | generated: {} tokens, {:.1} t/s | finish: {:?}",
            self.prompt_tokens_run(),
            self.prompt_tps(),
            self.usage.completion_tokens,
            self.generation_tps(),
            self.finish
        )
    }

    /// One line per generated token: its text, its logprob, then the most likely tokens
    /// with theirs.
    pub fn logprob_lines(&self) -> Vec<String> {
        self.logprobs
            .iter()
            .map(|lp| {
                let top: Vec<String> = lp
                    .top
                    .iter()
                    .map(|(_, t, l)| format!("{t:?} {l:.4}"))
                    .collect();
                format!(
                    "{:<20} {:>9.4} | {}",
                    format!("{:?}", lp.text),
                    lp.logprob,
                    top.join(", ")
                )
            })
            .collect()
    }

    /// The whole generation as one JSON object (`logprobs` only when asked for).
    pub fn to_json(&self, with_logprobs: bool) -> Value {
        let t = &self.timings;
        let mut o = json!({
            "text": self.text,
            "tokens": self.tokens,
            "finish_reason": finish_name(self.finish),
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "cached_tokens": self.usage.cached_tokens,
                "completion_tokens": self.usage.completion_tokens,
            },
            "timings": {
                "prompt_ms": t.prompt.as_secs_f64() * 1e3,
                "prompt_tokens_per_second": self.prompt_tps(),
                "generation_ms": t.generation.as_secs_f64() * 1e3,
                "generation_tokens_per_second": self.generation_tps(),
            },
        });
        if with_logprobs {
            let entry =
                |id: u32, text: &str, lp: f32| json!({"token": id, "text": text, "logprob": lp});
            o["logprobs"] = self
                .logprobs
                .iter()
                .map(|lp| {
                    let mut e = entry(lp.token, &lp.text, lp.logprob);
                    e["top_logprobs"] = lp.top.iter().map(|(id, t, l)| entry(*id, t, *l)).collect();
                    e
                })
                .collect();
        }
        o
    }
}
