//! Latency prediction per upstream: time to first token (TTFT) and time per output token
//! (TPOT) from what the router saw (EWMAs of its own observations, the health probe's round
//! trip) and, where the upstream exposes them, its live `/metrics` (vLLM's names, which
//! tuili serves too).

/// Weight of a new observation in the EWMAs.
const ALPHA: f64 = 0.2;

/// What is known about one upstream's speed and load.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// EWMA of TTFT in ms as the router measured it (network included).
    pub ttft_ms: Option<f64>,
    /// EWMA of time per output token in ms.
    pub tpot_ms: Option<f64>,
    /// EWMA of the health probe's round trip in ms.
    pub rtt_ms: Option<f64>,
    /// `vllm:num_requests_waiting`, from the last scrape.
    pub waiting: Option<f64>,
    /// `vllm:num_requests_running`, from the last scrape.
    pub running: Option<f64>,
    /// `vllm:kv_cache_usage_perc` (0..1), from the last scrape.
    pub kv_usage: Option<f64>,
    /// Requests this router has in flight there now.
    pub in_flight: usize,
}

fn ewma(old: Option<f64>, x: f64) -> Option<f64> {
    Some(match old {
        Some(o) => o + ALPHA * (x - o),
        None => x,
    })
}

impl Observed {
    /// A measured time to first token.
    pub fn observe_ttft(&mut self, ms: f64) {
        self.ttft_ms = ewma(self.ttft_ms, ms);
    }

    /// A measured time per output token.
    pub fn observe_tpot(&mut self, ms: f64) {
        self.tpot_ms = ewma(self.tpot_ms, ms);
    }

    /// A health probe's round trip.
    pub fn observe_rtt(&mut self, ms: f64) {
        self.rtt_ms = ewma(self.rtt_ms, ms);
    }

    /// The predicted TTFT in ms for a request arriving now; `prior_ms` stands in for an
    /// upstream never measured.
    ///
    /// The base is the observed TTFT (else the prior, else the probe round trip). Queueing
    /// adds: each request waiting ahead costs about one TTFT divided among the running
    /// sequences; a KV cache over 90% full means preemption is near, one more base.
    /// Without scraped metrics the router's own in-flight count stands for the queue.
    pub fn predict_ttft(&self, prior_ms: f64) -> f64 {
        let base = self
            .ttft_ms
            .or((prior_ms > 0.0).then_some(prior_ms))
            .or(self.rtt_ms)
            .unwrap_or(0.0);
        let queue = match (self.waiting, self.running) {
            (Some(w), r) => w.max(self.in_flight as f64 - r.unwrap_or(0.0)).max(0.0),
            (None, _) => self.in_flight as f64 * 0.5,
        };
        let running = self.running.unwrap_or(1.0).max(1.0);
        let kv = if self.kv_usage.unwrap_or(0.0) > 0.9 {
            base
        } else {
            0.0
        };
        base + queue * base / running + kv
    }

    /// The predicted TPOT in ms (0 when never measured).
    pub fn predict_tpot(&self) -> f64 {
        self.tpot_ms.unwrap_or(0.0)
    }

    /// Takes a `/metrics` scrape's vLLM gauges (summed over models).
    pub fn take_scrape(&mut self, text: &str) {
        let sum = |name: &str| -> Option<f64> {
            let mut found = None;
            for line in text.lines() {
                let Some(rest) = line.strip_prefix(name) else {
                    continue;
                };
                if !(rest.starts_with('{') || rest.starts_with(' ')) {
                    continue;
                }
                let v: Option<f64> = rest.rsplit(' ').next().and_then(|v| v.trim().parse().ok());
                if let Some(v) = v {
                    found = Some(found.unwrap_or(0.0) + v);
                }
            }
            found
        };
        self.waiting = sum("vllm:num_requests_waiting");
        self.running = sum("vllm:num_requests_running");
        self.kv_usage = sum("vllm:kv_cache_usage_perc");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewma_and_prior() {
        let mut o = Observed::default();
        assert_eq!(o.predict_ttft(40.0), 40.0);
        o.observe_rtt(50.0);
        assert_eq!(
            o.predict_ttft(0.0),
            50.0,
            "the probe's round trip until a TTFT is seen"
        );
        o.observe_ttft(100.0);
        o.observe_ttft(200.0);
        assert!((o.predict_ttft(40.0) - 120.0).abs() < 1e-9);
    }

    #[test]
    fn queue_and_kv_from_scrape_raise_the_prediction() {
        let mut o = Observed::default();
        o.observe_ttft(100.0);
        o.take_scrape(
            "# HELP vllm:num_requests_waiting x\nvllm:num_requests_waiting{model_name=\"a\"} 4\n\
             vllm:num_requests_running{model_name=\"a\"} 2\nvllm:kv_cache_usage_perc{model_name=\"a\"} 0.5\n\
             vllm:num_requests_waiting_other 99\n",
        );
        assert_eq!(
            (o.waiting, o.running, o.kv_usage),
            (Some(4.0), Some(2.0), Some(0.5))
        );
        assert_eq!(o.predict_ttft(0.0), 100.0 + 4.0 * 100.0 / 2.0);
        o.kv_usage = Some(0.95);
        assert_eq!(o.predict_ttft(0.0), 400.0);
        // Without metrics, the router's own in-flight requests stand for the queue.
        let mut p = Observed::default();
        p.observe_ttft(100.0);
        p.in_flight = 4;
        assert_eq!(p.predict_ttft(0.0), 300.0);
    }
}
