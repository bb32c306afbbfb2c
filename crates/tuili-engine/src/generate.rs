//! Generation for one sequence: prefill the prompt, then sample token by token.

use std::time::{Duration, Instant};

use tuili_models::{Model, ModelError, SeqChunk};
use tuili_tokenizer::{StreamDecoder, Tokenizer};

use crate::runner::{blocks_for, CpuRunner, KvLayout, Runner, DEFAULT_KV_TYPE};
use crate::sampler::Sampler;
use crate::EngineError;

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-generation token.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The context window is full.
    ContextFull,
    /// The caller asked to stop.
    Cancelled,
}

/// Counts and timings of one generation.
#[derive(Debug, Clone)]
pub struct GenerationStats {
    /// Prompt tokens run through the model (those reused from the cache excluded).
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Time to process the prompt.
    pub prompt_time: Duration,
    /// Time spent generating after the prompt.
    pub generation_time: Duration,
    /// Why it stopped.
    pub finish: FinishReason,
}

impl GenerationStats {
    /// Prompt tokens per second.
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }
    /// Generated tokens per second.
    pub fn generation_tps(&self) -> f64 {
        self.generated_tokens as f64 / self.generation_time.as_secs_f64().max(1e-9)
    }
}

/// A model, its tokenizer and one KV cache: a conversation that keeps its context
/// between calls, reusing the cached prefix a new prompt shares with it.
pub struct Session<'m> {
    /// The model and its KV pool, whose blocks this one sequence uses in order.
    runner: Box<dyn Runner + 'm>,
    tokenizer: &'m Tokenizer,
    /// `0..n_blocks`: the sequence owns the whole pool.
    blocks: Vec<u32>,
    /// Positions the pool can hold.
    capacity: usize,
    /// Tokens whose K/V are in the pool: `[len]`.
    tokens: Vec<u32>,
}

/// Block size of a one-sequence CPU cache (as `KvCache`'s).
const SEQ_BLOCK: usize = 64;

impl<'m> Session<'m> {
    /// A session on the CPU with a context of `n_ctx` tokens, K/V stored as
    /// [`DEFAULT_KV_TYPE`].
    pub fn new(
        model: &'m Model,
        tokenizer: &'m Tokenizer,
        n_ctx: usize,
    ) -> Result<Session<'m>, EngineError> {
        let n_ctx = n_ctx.min(model.config().ctx_len);
        let kv = KvLayout {
            n_blocks: blocks_for(n_ctx, SEQ_BLOCK),
            block_size: SEQ_BLOCK,
            k_type: DEFAULT_KV_TYPE,
            v_type: DEFAULT_KV_TYPE,
        };
        let runner = CpuRunner::new(model, kv)?;
        Ok(Session::with_runner(Box::new(runner), tokenizer, n_ctx))
    }

    /// A session on `runner`, whose KV pool it uses alone, with a context of `n_ctx`
    /// tokens (at most what the pool and the model hold).
    pub fn with_runner(
        runner: Box<dyn Runner + 'm>,
        tokenizer: &'m Tokenizer,
        n_ctx: usize,
    ) -> Session<'m> {
        let kv = runner.kv_layout();
        let capacity = n_ctx
            .min(runner.config().ctx_len)
            .min(kv.n_blocks * kv.block_size);
        Session {
            blocks: (0..kv.n_blocks as u32).collect(),
            runner,
            tokenizer,
            capacity,
            tokens: Vec::new(),
        }
    }

    /// Context capacity in tokens.
    pub fn n_ctx(&self) -> usize {
        self.capacity
    }

    /// Where the model runs (`cpu`, `cuda:0 (...)`).
    pub fn device(&self) -> String {
        self.runner.device()
    }

    /// Runs `new` after the tokens in the cache and appends them; logits of
    /// `new[logits_from..]`.
    fn forward(&mut self, new: &[u32], logits_from: usize) -> Result<Vec<f32>, EngineError> {
        let have = self.tokens.len();
        if have + new.len() > self.capacity {
            return Err(ModelError::ContextFull {
                have,
                adding: new.len(),
                capacity: self.capacity,
            }
            .into());
        }
        let chunk = SeqChunk {
            tokens: new,
            start: have,
            blocks: &self.blocks,
            logits_from,
        };
        let logits = self.runner.forward_batch(&[chunk])?;
        self.tokens.extend_from_slice(new);
        Ok(logits)
    }

    /// Generates after `prompt` (the full token sequence of the conversation so far).
    /// The cached prefix shared with the previous call is reused. `on_text` receives
    /// each piece of decoded text as it completes and returns `false` to stop.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        max_tokens: usize,
        sampler: &mut Sampler,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<(Vec<u32>, GenerationStats), EngineError> {
        if prompt.is_empty() {
            return Err(EngineError::Invalid("the prompt is empty".into()));
        }
        if prompt.len() >= self.n_ctx() {
            return Err(EngineError::Invalid(format!(
                "the prompt has {} tokens; the context holds {}",
                prompt.len(),
                self.n_ctx()
            )));
        }
        // Reuse the shared prefix, but always run at least the last prompt token.
        let shared = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        self.tokens.truncate(shared);

        let t0 = Instant::now();
        let new = &prompt[shared..];
        let mut logits = self.forward(new, new.len() - 1)?;
        let prompt_time = t0.elapsed();

        let t1 = Instant::now();
        let mut out = Vec::new();
        let mut decoder = StreamDecoder::new(self.tokenizer);
        let mut finish = FinishReason::Length;
        while out.len() < max_tokens {
            let id = sampler.sample(&mut logits, &self.tokens);
            if self.tokenizer.is_eog(id) {
                finish = FinishReason::Stop;
                break;
            }
            out.push(id);
            let text = decoder.push(id);
            if !text.is_empty() && !on_text(&text) {
                finish = FinishReason::Cancelled;
                break;
            }
            if out.len() == max_tokens {
                break;
            }
            if self.tokens.len() + 1 > self.capacity {
                finish = FinishReason::ContextFull;
                break;
            }
            logits = self.forward(&[id], 0)?;
        }
        let rest = decoder.finish();
        if !rest.is_empty() {
            on_text(&rest);
        }
        let stats = GenerationStats {
            prompt_tokens: new.len(),
            generated_tokens: out.len(),
            prompt_time,
            generation_time: t1.elapsed(),
            finish,
        };
        Ok((out, stats))
    }
}
