//! Perplexity as llama.cpp's `llama-perplexity` computes it, so figures compare
//! directly: chunks of `n_ctx` tokens, a fresh context per chunk, BOS written over
//! the first token when the model adds one, and the second half of each chunk scored.

use tuili_models::{Model, SeqChunk, SEQ_BLOCK};

use crate::runner::{seq_layout, seq_tables, CpuRunner, Runner, DEFAULT_KV_TYPE};
use crate::EngineError;

/// Result of a perplexity run.
#[derive(Debug, Clone, PartialEq)]
pub struct Perplexity {
    /// exp(mean negative log-likelihood).
    pub ppl: f64,
    /// Standard error of `ppl` (llama.cpp's estimate).
    pub stderr: f64,
    /// Chunks evaluated.
    pub chunks: usize,
    /// Tokens scored.
    pub scored: usize,
}

/// Running sums of negative log-likelihoods.
#[derive(Debug, Default, Clone)]
struct Nll {
    sum: f64,
    sum_sq: f64,
    count: usize,
}

impl Nll {
    fn push(&mut self, v: f64) {
        self.sum += v;
        self.sum_sq += v * v;
        self.count += 1;
    }

    fn ppl(&self) -> f64 {
        (self.sum / self.count as f64).exp()
    }

    fn stderr(&self) -> f64 {
        let n = self.count as f64;
        let mean = self.sum / n;
        let var = self.sum_sq / n - mean * mean;
        if var > 0.0 && self.count > 1 {
            (var / (n - 1.0)).sqrt() * self.ppl()
        } else {
            0.0
        }
    }
}

/// Negative log-probability of `target` under `logits` (`[vocab]`), in f64.
fn nll_of(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + logits
            .iter()
            .map(|&l| (l as f64 - max).exp())
            .sum::<f64>()
            .ln();
    lse - logits[target as usize] as f64
}

/// Computes perplexity of `tokens` (the whole text, special tokens added as the
/// model's metadata says) on the CPU. `bos` is written over each chunk's first token
/// when set. `on_chunk(i, ppl_so_far)` is called after each chunk.
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    on_chunk: impl FnMut(usize, f64),
) -> Result<Perplexity, EngineError> {
    let kv = seq_layout(
        model.config(),
        n_ctx,
        PPL_STEP,
        SEQ_BLOCK,
        DEFAULT_KV_TYPE,
        DEFAULT_KV_TYPE,
    );
    perplexity_with(
        &mut CpuRunner::new(model, kv)?,
        tokens,
        n_ctx,
        bos,
        on_chunk,
    )
}

/// Most tokens of a context run in one step: the logits of a step stay small (a 262k
/// vocabulary makes 4096 rows 4 GiB), and a local region of the KV pool holds the
/// window plus one step. Logits do not depend on the split (batch invariance).
pub const PPL_STEP: usize = 512;

/// [`perplexity`] on any runner; its KV pool must hold `n_ctx` positions (with a local
/// region, one from [`seq_layout`]: a ring of blocks for the local layers).
pub fn perplexity_with(
    runner: &mut dyn Runner,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<Perplexity, EngineError> {
    let model_ctx = runner.config().ctx_len;
    if n_ctx < 4 {
        return Err(EngineError::Invalid(format!(
            "perplexity context must be at least 4 tokens, got {n_ctx}"
        )));
    }
    if n_ctx > model_ctx {
        return Err(EngineError::Invalid(format!(
            "perplexity context {n_ctx} exceeds the model's context length {model_ctx}"
        )));
    }
    let kv = runner.kv_layout();
    if kv.n_blocks * kv.block_size < n_ctx {
        return Err(EngineError::Invalid(format!(
            "the KV pool holds {} positions, fewer than the context of {n_ctx}",
            kv.n_blocks * kv.block_size
        )));
    }
    // Each chunk starts a fresh sequence over the same blocks; the step is what the
    // local ring holds (see `seq_tables`).
    let (blocks, local) = seq_tables(&kv);
    let step = match (kv.n_local_blocks, runner.config().max_window()) {
        (0, _) | (_, None) => PPL_STEP,
        (n, Some(w)) => {
            let fits = ((n.saturating_sub(1)) * kv.block_size + 1).saturating_sub(w);
            if fits == 0 {
                return Err(EngineError::Invalid(format!(
                    "the local KV region of {n} blocks of {} does not hold a window of {w}",
                    kv.block_size
                )));
            }
            fits.min(PPL_STEP)
        }
    };
    let n_chunk = tokens.len() / n_ctx;
    if n_chunk == 0 {
        return Err(EngineError::Invalid(format!(
            "the text has {} tokens, fewer than one chunk of {n_ctx}",
            tokens.len()
        )));
    }
    let vocab = runner.config().vocab;
    let first = n_ctx / 2;
    let mut nll = Nll::default();
    for i in 0..n_chunk {
        let chunk = &tokens[i * n_ctx..(i + 1) * n_ctx];
        let mut ids = chunk.to_vec();
        if let Some(b) = bos {
            ids[0] = b;
        }
        for start in (0..n_ctx).step_by(step) {
            let end = (start + step).min(n_ctx);
            let from = first.clamp(start, end);
            let seq = SeqChunk {
                tokens: &ids[start..end],
                start,
                blocks: &blocks,
                local_blocks: &local,
                logits_from: from - start,
            };
            // logits: [end - from, vocab]; the row of token t predicts chunk[t + 1].
            let logits = runner.forward_batch(&[seq])?;
            for (t, row) in (from..end.min(n_ctx - 1)).zip(logits.chunks_exact(vocab)) {
                nll.push(nll_of(row, chunk[t + 1]));
            }
        }
        on_chunk(i, nll.ppl());
    }
    Ok(Perplexity {
        ppl: nll.ppl(),
        stderr: nll.stderr(),
        chunks: n_chunk,
        scored: nll.count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_of_uniform_is_log_vocab() {
        let logits = [0.5f32; 8];
        assert!((nll_of(&logits, 3) - (8f64).ln()).abs() < 1e-12);
    }

    #[test]
    fn stderr_matches_llama_cpp_formula() {
        let mut n = Nll::default();
        for v in [1.0, 2.0, 3.0, 4.0] {
            n.push(v);
        }
        let mean = 2.5f64;
        let var = (1.0 + 4.0 + 9.0 + 16.0) / 4.0 - mean * mean;
        assert!((n.ppl() - mean.exp()).abs() < 1e-12);
        assert!((n.stderr() - (var / 3.0).sqrt() * mean.exp()).abs() < 1e-12);
    }
}
