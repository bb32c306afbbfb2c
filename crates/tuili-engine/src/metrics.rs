//! Engine counters and latency histograms, shared between the engine thread (writer)
//! and the server (reader of snapshots).

use crate::scheduler::SchedulerStats;

/// A latency histogram with fixed bucket bounds (seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Upper bounds of the buckets, ascending; an implicit last bucket is +Inf.
    pub bounds: Vec<f64>,
    /// Observations per bucket (not cumulative): `bounds.len() + 1` entries.
    pub counts: Vec<u64>,
    /// Sum of all observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// The `q` quantile (0..=1) as the upper bound of the bucket holding it (the last
    /// finite bound for the +Inf bucket); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return self.bounds.get(i).or(self.bounds.last()).copied();
            }
        }
        self.bounds.last().copied()
    }

    /// An empty histogram over `bounds`.
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one observation.
    pub fn observe(&mut self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| v <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

/// Bucket bounds of time-to-first-token (seconds).
pub const TTFT_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Bucket bounds of inter-token latency (seconds).
pub const ITL_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// vLLM's buckets of `vllm:time_to_first_token_seconds` (`vllm/v1/metrics/loggers.py`).
pub const VLLM_TTFT_BOUNDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's buckets of `vllm:inter_token_latency_seconds`.
pub const VLLM_ITL_BOUNDS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// vLLM's buckets of `vllm:e2e_request_latency_seconds` (its request latency buckets).
pub const VLLM_E2E_BOUNDS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
/// Bucket bounds of grammar mask times (seconds): tens of microseconds to tens of
/// milliseconds.
pub const MASK_BOUNDS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,
];

/// A snapshot of the engine's state and counters.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineMetrics {
    /// Requests waiting to start (not yet scheduled once).
    pub waiting: usize,
    /// Sequences holding KV blocks.
    pub running: usize,
    /// Preempted sequences waiting to be recomputed (they hold no blocks).
    pub preempted_waiting: usize,
    /// Token slots per KV block.
    pub block_size: usize,
    /// KV blocks held by sequences.
    pub kv_blocks_used: usize,
    /// KV blocks free or evictable.
    pub kv_blocks_free: usize,
    /// KV blocks registered in the prefix cache (held or evictable).
    pub kv_blocks_cached: usize,
    /// Blocks of the sliding-window layers' own region held by sequences (0 without one).
    pub kv_local_blocks_used: usize,
    /// Prompt tokens looked up in the prefix cache.
    pub prefix_queries_tokens: u64,
    /// Of which found there.
    pub prefix_hit_tokens: u64,
    /// Prompt tokens received.
    pub prompt_tokens_total: u64,
    /// Tokens generated.
    pub generated_tokens_total: u64,
    /// Sequences preempted (and later recomputed).
    pub preemptions: u64,
    /// Engine steps run.
    pub steps: u64,
    /// Engine steps that panicked (their requests failed, the engine served on).
    pub step_panics: u64,
    /// Time from submission to the first generated token.
    pub ttft: Histogram,
    /// Time between consecutive tokens of one request.
    pub itl: Histogram,
    /// `ttft` over vLLM's buckets.
    pub vllm_ttft: Histogram,
    /// `itl` over vLLM's buckets.
    pub vllm_itl: Histogram,
    /// Time from submission to the last token of requests that finished (vLLM's buckets).
    pub e2e: Histogram,
    /// Time to compute one sequence's grammar mask (one per constrained token).
    pub grammar_mask: Histogram,
    /// Time a step's sampling waited for its grammar masks after the forward pass (the
    /// masks are computed while the forward pass runs; this is what is left).
    pub grammar_mask_wait: Histogram,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        EngineMetrics {
            waiting: 0,
            running: 0,
            preempted_waiting: 0,
            block_size: 0,
            kv_blocks_used: 0,
            kv_blocks_free: 0,
            kv_blocks_cached: 0,
            kv_local_blocks_used: 0,
            prefix_queries_tokens: 0,
            prefix_hit_tokens: 0,
            prompt_tokens_total: 0,
            generated_tokens_total: 0,
            preemptions: 0,
            steps: 0,
            step_panics: 0,
            ttft: Histogram::new(TTFT_BOUNDS),
            itl: Histogram::new(ITL_BOUNDS),
            vllm_ttft: Histogram::new(VLLM_TTFT_BOUNDS),
            vllm_itl: Histogram::new(VLLM_ITL_BOUNDS),
            e2e: Histogram::new(VLLM_E2E_BOUNDS),
            grammar_mask: Histogram::new(MASK_BOUNDS),
            grammar_mask_wait: Histogram::new(MASK_BOUNDS),
        }
    }
}

impl EngineMetrics {
    /// Records the time from submission to a request's first token.
    pub fn observe_first_token(&mut self, secs: f64) {
        self.ttft.observe(secs);
        self.vllm_ttft.observe(secs);
    }

    /// Records the time between two consecutive tokens of a request.
    pub fn observe_inter_token(&mut self, secs: f64) {
        self.itl.observe(secs);
        self.vllm_itl.observe(secs);
    }

    /// These counters with the scheduler's gauges and counters (what handles read).
    pub fn with_scheduler(&self, st: &SchedulerStats) -> EngineMetrics {
        EngineMetrics {
            waiting: 0,
            running: st.running,
            preempted_waiting: st.preempted_waiting,
            block_size: st.block_size,
            kv_blocks_used: st.blocks_used,
            kv_blocks_free: st.blocks_free,
            kv_blocks_cached: st.blocks_cached,
            kv_local_blocks_used: st.local_blocks_used,
            prefix_queries_tokens: st.prefix.queries,
            prefix_hit_tokens: st.prefix.hits,
            preemptions: st.preemptions,
            ..self.clone()
        }
    }

    /// Blocks in the KV pool.
    pub fn kv_blocks_total(&self) -> usize {
        self.kv_blocks_used + self.kv_blocks_free
    }

    /// Fraction of the KV pool held by sequences (0 to 1; vLLM's `kv_cache_usage_perc`).
    pub fn kv_usage(&self) -> f64 {
        match self.kv_blocks_total() {
            0 => 0.0,
            n => self.kv_blocks_used as f64 / n as f64,
        }
    }

    /// Fraction of looked-up prompt tokens served from the prefix cache.
    pub fn prefix_hit_rate(&self) -> f64 {
        if self.prefix_queries_tokens == 0 {
            0.0
        } else {
            self.prefix_hit_tokens as f64 / self.prefix_queries_tokens as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 3.0] {
            h.observe(v);
        }
        assert_eq!(h.counts, vec![2, 1, 1]);
        assert_eq!(h.count, 4);
        assert!((h.sum - 3.65).abs() < 1e-12);
        assert_eq!(h.quantile(0.5), Some(0.1));
        assert_eq!(h.quantile(0.75), Some(1.0));
        assert_eq!(h.quantile(0.99), Some(1.0));
        assert_eq!(Histogram::new(&[1.0]).quantile(0.5), None);
    }
}
