//! Turning logits into the next token: penalties, then top-k → top-p → min-p →
//! temperature → a seeded draw (llama.cpp's default chain), or greedy.

use tuili_models::SamplingDefaults;

/// Sampling settings. `temperature <= 0` means greedy.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 picks the most likely token.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p` (1 = all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one (0 = none).
    pub min_p: f32,
    /// Divides positive / multiplies negative logits of recent tokens (1 = off).
    pub repeat_penalty: f32,
    /// Subtracted once from the logit of every recent token (0 = off).
    pub presence_penalty: f32,
    /// Subtracted per occurrence from the logit of recent tokens (0 = off).
    pub frequency_penalty: f32,
    /// How many of the last tokens the penalties look at.
    pub penalty_last_n: usize,
    /// Seed of the random draw; the same seed gives the same run.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// OpenAI's documented defaults (temperature 1, top_p 1, no penalties), with no other
    /// truncation: what a server request gets for a setting it leaves out when the model
    /// recommends nothing. (`Default` is the command line's, llama.cpp's.)
    pub fn openai() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        }
    }

    /// The effective defaults: `self` (the caller's own defaults) with every setting the
    /// model file recommends (`general.sampling.*`) in its place, as llama.cpp applies
    /// them. The one place the CLI and the server compute them; a setting the user or the
    /// request gives then overrides the result.
    pub fn with_model_defaults(self, model: &SamplingDefaults) -> Self {
        SamplingParams {
            temperature: model.temperature.unwrap_or(self.temperature),
            top_k: model.top_k.unwrap_or(self.top_k),
            top_p: model.top_p.unwrap_or(self.top_p),
            min_p: model.min_p.unwrap_or(self.min_p),
            repeat_penalty: model.repeat_penalty.unwrap_or(self.repeat_penalty),
            penalty_last_n: model.penalty_last_n.unwrap_or(self.penalty_last_n),
            ..self
        }
    }
}

/// The sampler's generator: SplitMix64, so runs are reproducible across platforms and
/// dependency versions.
pub use tuili_models::SplitMix64 as Rng;

/// A sampler with its own random state.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    /// A sampler for `params`.
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = Rng::new(params.seed);
        Sampler { params, rng }
    }

    /// The settings.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from `logits` (`[vocab]`, modified in place by the
    /// penalties) given the tokens so far (`history`, prompt included).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.penalize(logits, history);
        self.sample_penalized(logits)
    }

    /// Applies the repetition, presence and frequency penalties to `logits` (`[vocab]`)
    /// given the tokens so far: the distribution that log-probabilities report.
    pub fn penalize(&self, logits: &mut [f32], history: &[u32]) {
        apply_penalties(logits, history, &self.params);
    }

    /// Picks the next token from logits that [`Sampler::penalize`] has already seen:
    /// top-k → top-p → min-p → temperature → the seeded draw, or greedy.
    pub fn sample_penalized(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        if p.temperature <= 0.0 {
            return argmax(logits);
        }
        // Candidates sorted by logit, descending; tokens masked to −∞ (a grammar, a
        // bias of −100 does not) are never candidates.
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, &l)| l > f32::NEG_INFINITY)
            .map(|(i, &l)| (i as u32, l))
            .collect();
        if cand.is_empty() {
            return argmax(logits);
        }
        let k = if p.top_k == 0 {
            cand.len()
        } else {
            p.top_k.min(cand.len())
        };
        if k < cand.len() {
            cand.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
            cand.truncate(k);
        }
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        // Probabilities at temperature 1 for top-p and min-p (as llama.cpp's chain).
        let probs = softmax_of(&cand, 1.0);
        let mut keep = cand.len();
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, &pr) in probs.iter().enumerate() {
                cum += pr;
                if cum >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p as f64;
            keep = keep.min(probs.iter().take_while(|&&pr| pr >= floor).count().max(1));
        }
        cand.truncate(keep.max(1));
        let probs = softmax_of(&cand, p.temperature);
        let r = self.rng.next_f64();
        let mut cum = 0.0;
        for (&(id, _), &pr) in cand.iter().zip(&probs) {
            cum += pr;
            if r < cum {
                return id;
            }
        }
        cand[cand.len() - 1].0
    }
}

/// Index of the largest logit (the lowest index among ties; NaNs never win, and a NaN
/// first logit wins as the start of the scan).
///
/// Eight interleaved running maxima (element `i` in lane `i % 8`, each keeping its first
/// index on ties), so that the scan over a whole vocabulary vectorizes; the lanes then
/// give the largest value's lowest index, as one running maximum from index 0 would.
pub fn argmax(logits: &[f32]) -> u32 {
    let Some(&first) = logits.first() else {
        return 0;
    };
    if first.is_nan() {
        return 0;
    }
    let (mut best, mut at) = ([first; 8], [0usize; 8]);
    let chunks = logits.chunks_exact(8);
    let tail = chunks.remainder();
    for (c, chunk) in chunks.enumerate() {
        for l in 0..8 {
            if chunk[l] > best[l] {
                best[l] = chunk[l];
                at[l] = 8 * c + l;
            }
        }
    }
    let base = logits.len() - tail.len();
    for (l, &v) in tail.iter().enumerate() {
        if v > best[l] {
            best[l] = v;
            at[l] = base + l;
        }
    }
    let mut win = 0;
    for l in 1..8 {
        if best[l] > best[win] || (best[l] == best[win] && at[l] < at[win]) {
            win = l;
        }
    }
    at[win] as u32
}

fn softmax_of(cand: &[(u32, f32)], temperature: f32) -> Vec<f64> {
    let max = cand[0].1 as f64;
    let t = temperature as f64;
    let e: Vec<f64> = cand
        .iter()
        .map(|&(_, l)| ((l as f64 - max) / t).exp())
        .collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

fn apply_penalties(logits: &mut [f32], history: &[u32], p: &SamplingParams) {
    if p.repeat_penalty == 1.0 && p.presence_penalty == 0.0 && p.frequency_penalty == 0.0 {
        return;
    }
    let recent = &history[history.len().saturating_sub(p.penalty_last_n)..];
    let mut counts: Vec<(u32, u32)> = Vec::new();
    for &t in recent {
        match counts.iter_mut().find(|(id, _)| *id == t) {
            Some((_, c)) => *c += 1,
            None => counts.push((t, 1)),
        }
    }
    for (id, count) in counts {
        let Some(l) = logits.get_mut(id as usize) else {
            continue;
        };
        if *l > 0.0 {
            *l /= p.repeat_penalty;
        } else {
            *l *= p.repeat_penalty;
        }
        *l -= count as f32 * p.frequency_penalty + p.presence_penalty;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.5, -1.0, 0.5, 2.9]
    }

    #[test]
    fn the_model_recommends_and_the_rest_stays() {
        let model = SamplingDefaults {
            temperature: Some(0.6),
            top_k: Some(20),
            repeat_penalty: Some(1.1),
            ..Default::default()
        };
        let got = SamplingParams::openai().with_model_defaults(&model);
        let want = SamplingParams {
            temperature: 0.6,
            top_k: 20,
            repeat_penalty: 1.1,
            ..SamplingParams::openai()
        };
        assert_eq!(got, want);
        // Nothing recommended: the caller's defaults, unchanged.
        let cli = SamplingParams::default();
        assert_eq!(
            cli.clone()
                .with_model_defaults(&SamplingDefaults::default()),
            cli
        );
    }

    #[test]
    fn argmax_equals_one_running_maximum() {
        let reference = |v: &[f32]| {
            let mut best = 0;
            for (i, &l) in v.iter().enumerate() {
                if l > v[best] {
                    best = i;
                }
            }
            best as u32
        };
        let mut rng = Rng::new(3);
        for n in (1..40).chain([49152, 151936]) {
            for case in 0..6 {
                let mut v: Vec<f32> = (0..n)
                    .map(|_| (rng.next_f64() * 8.0).floor() as f32 - 4.0)
                    .collect();
                match case {
                    1 => v[rng.next_u64() as usize % n] = f32::NAN,
                    2 => v[0] = f32::NAN,
                    3 => v.iter_mut().for_each(|x| *x = f32::NEG_INFINITY),
                    4 => v
                        .iter_mut()
                        .for_each(|x| *x = if *x < 0.0 { -0.0 } else { 0.0 }),
                    _ => {}
                }
                assert_eq!(argmax(&v), reference(&v), "n={n} case={case}");
            }
        }
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn greedy_takes_argmax() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&mut logits(), &[]), 1);
    }

    #[test]
    fn same_seed_same_tokens_other_seed_differs() {
        let params = SamplingParams {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 42,
            ..Default::default()
        };
        let run = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed,
                ..params.clone()
            });
            (0..64)
                .map(|_| s.sample(&mut logits(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        // Every token is reachable at a high temperature with no filters.
        let toks = run(42);
        assert!(toks.contains(&0) && toks.contains(&4));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(SamplingParams {
            top_k: 1,
            ..Default::default()
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&mut logits(), &[]), 1);
        }
    }

    #[test]
    fn top_p_and_min_p_restrict_candidates() {
        // Probabilities of 1 and 5 are close (3.0, 2.9); the rest are far below.
        let mut s = Sampler::new(SamplingParams {
            top_k: 0,
            top_p: 0.5,
            min_p: 0.0,
            ..Default::default()
        });
        for _ in 0..50 {
            assert!([1, 5].contains(&s.sample(&mut logits(), &[])));
        }
        let mut s = Sampler::new(SamplingParams {
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            ..Default::default()
        });
        for _ in 0..50 {
            assert!([1, 2, 5].contains(&s.sample(&mut logits(), &[])));
        }
    }

    #[test]
    fn masked_tokens_are_never_drawn() {
        // Only tokens 0 and 3 allowed: even at a high temperature with no filters the
        // draw stays among them.
        let mut l = logits();
        for i in [1, 2, 4, 5] {
            l[i] = f32::NEG_INFINITY;
        }
        let mut s = Sampler::new(SamplingParams {
            temperature: 5.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 7,
            ..Default::default()
        });
        let mut seen = [false; 6];
        for _ in 0..200 {
            seen[s.sample(&mut l.clone(), &[]) as usize] = true;
        }
        assert_eq!(seen, [true, false, false, true, false, false]);
    }

    #[test]
    fn penalties_change_the_choice() {
        let mut s = Sampler::new(SamplingParams {
            repeat_penalty: 2.0,
            ..SamplingParams::greedy()
        });
        // 3.0 / 2 = 1.5 < 2.9, so token 5 wins once token 1 was seen.
        assert_eq!(s.sample(&mut logits(), &[1]), 5);
        let mut s = Sampler::new(SamplingParams {
            frequency_penalty: 0.06,
            presence_penalty: 0.0,
            ..SamplingParams::greedy()
        });
        // One occurrence: 3.0 - 0.06 = 2.94 still beats 2.9.
        assert_eq!(s.sample(&mut logits(), &[1]), 1);
        // Two occurrences: 2.88 < 2.9.
        assert_eq!(s.sample(&mut logits(), &[1, 1]), 5);
        let mut s = Sampler::new(SamplingParams {
            presence_penalty: 0.6,
            ..SamplingParams::greedy()
        });
        assert_eq!(s.sample(&mut logits(), &[1, 5]), 2);
    }
}
