//! The router's Prometheus metrics: requests, tokens and errors per upstream and tier; TTFT
//! and end-to-end histograms per tier; failovers, escalations, hedges, privacy refusals;
//! dollars spent against what the same tokens would have cost all-cloud.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Histogram bucket upper bounds in seconds.
const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    n: u64,
}

impl Histogram {
    fn observe(&mut self, s: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += s;
        self.n += 1;
    }
}

#[derive(Default)]
struct Data {
    // (upstream, tier, outcome) -> n
    requests: BTreeMap<(String, String, String), u64>,
    // (upstream, tier, kind) -> n
    tokens: BTreeMap<(String, String, &'static str), u64>,
    // (upstream, tier, kind) -> n
    errors: BTreeMap<(String, String, String), u64>,
    ttft: BTreeMap<String, Histogram>,
    e2e: BTreeMap<String, Histogram>,
    counters: BTreeMap<&'static str, u64>,
    privacy_refusals: BTreeMap<String, u64>,
    spent: f64,
    all_cloud: f64,
}

/// Everything the router counts; cheap to share behind an `Arc`.
#[derive(Default)]
pub struct Metrics(Mutex<Data>);

/// A gauge line per upstream, given at render time (in flight, breaker, predicted TTFT).
pub struct UpstreamGauge {
    /// Name.
    pub name: String,
    /// Tier.
    pub tier: &'static str,
    /// Requests in flight there.
    pub in_flight: usize,
    /// 0 closed, 1 half-open, 2 open.
    pub breaker: u8,
    /// Last probe succeeded.
    pub up: bool,
    /// Predicted TTFT, ms.
    pub ttft_ms: f64,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Data) -> R) -> R {
        let mut d = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut d)
    }

    /// A request answered (outcome `ok`) or failed (`error`) by `upstream`.
    pub fn request(&self, upstream: &str, tier: &str, outcome: &str) {
        self.with(|d| {
            *d.requests
                .entry((upstream.into(), tier.into(), outcome.into()))
                .or_default() += 1
        });
    }

    /// Tokens processed there, and what they cost against the all-cloud reference.
    pub fn tokens(
        &self,
        upstream: &str,
        tier: &str,
        prompt: u64,
        completion: u64,
        spent: f64,
        all_cloud: f64,
    ) {
        self.with(|d| {
            *d.tokens
                .entry((upstream.into(), tier.into(), "prompt"))
                .or_default() += prompt;
            *d.tokens
                .entry((upstream.into(), tier.into(), "completion"))
                .or_default() += completion;
            d.spent += spent;
            d.all_cloud += all_cloud;
        });
    }

    /// A failed attempt at `upstream` (`kind`: transport, timeout, status_5xx, stream, ...).
    pub fn error(&self, upstream: &str, tier: &str, kind: &str) {
        self.with(|d| {
            *d.errors
                .entry((upstream.into(), tier.into(), kind.into()))
                .or_default() += 1
        });
    }

    /// Time to first byte of the answer, seconds.
    pub fn ttft(&self, tier: &str, s: f64) {
        self.with(|d| d.ttft.entry(tier.into()).or_default().observe(s));
    }

    /// Whole-request time, seconds.
    pub fn e2e(&self, tier: &str, s: f64) {
        self.with(|d| d.e2e.entry(tier.into()).or_default().observe(s));
    }

    /// Adds one to a plain counter (`failovers`, `escalations`, `hedges`, ...).
    pub fn count(&self, name: &'static str) {
        self.with(|d| *d.counters.entry(name).or_default() += 1);
    }

    /// A request refused for privacy, by class.
    pub fn privacy_refusal(&self, class: &str) {
        self.with(|d| *d.privacy_refusals.entry(class.into()).or_default() += 1);
    }

    /// The Prometheus text.
    pub fn render(&self, gauges: &[UpstreamGauge]) -> String {
        let d = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = String::new();
        let head = |s: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut s,
            "tuili_router_requests_total",
            "counter",
            "Requests answered by each upstream (outcome ok) or failed there (error).",
        );
        for ((u, t, o), n) in &d.requests {
            let _ = writeln!(
                s,
                "tuili_router_requests_total{{upstream=\"{u}\",tier=\"{t}\",outcome=\"{o}\"}} {n}"
            );
        }
        head(
            &mut s,
            "tuili_router_tokens_total",
            "counter",
            "Prompt and completion tokens per upstream, from the upstream's usage.",
        );
        for ((u, t, k), n) in &d.tokens {
            let _ = writeln!(
                s,
                "tuili_router_tokens_total{{upstream=\"{u}\",tier=\"{t}\",kind=\"{k}\"}} {n}"
            );
        }
        head(
            &mut s,
            "tuili_router_errors_total",
            "counter",
            "Failed attempts per upstream and kind.",
        );
        for ((u, t, k), n) in &d.errors {
            let _ = writeln!(
                s,
                "tuili_router_errors_total{{upstream=\"{u}\",tier=\"{t}\",kind=\"{k}\"}} {n}"
            );
        }
        for (name, help, map) in [
            (
                "tuili_router_ttft_seconds",
                "Time to the first byte of the answer, per tier of the answering upstream.",
                &d.ttft,
            ),
            (
                "tuili_router_e2e_seconds",
                "Whole-request time, per tier of the answering upstream.",
                &d.e2e,
            ),
        ] {
            head(&mut s, name, "histogram", help);
            for (tier, h) in map {
                for (b, c) in BUCKETS.iter().zip(h.counts) {
                    let _ = writeln!(s, "{name}_bucket{{tier=\"{tier}\",le=\"{b}\"}} {c}");
                }
                let _ = writeln!(s, "{name}_bucket{{tier=\"{tier}\",le=\"+Inf\"}} {}", h.n);
                let _ = writeln!(
                    s,
                    "{name}_sum{{tier=\"{tier}\"}} {}\n{name}_count{{tier=\"{tier}\"}} {}",
                    h.sum, h.n
                );
            }
        }
        for (key, help) in [
            (
                "failovers",
                "Attempts moved to another upstream after a failure.",
            ),
            (
                "escalations",
                "Answers re-asked of a larger model for low confidence.",
            ),
            ("hedges", "Second requests sent because the first was slow."),
            (
                "verifications",
                "Answers the escalation verifier was asked to judge.",
            ),
            (
                "unavailable",
                "Requests failed because every candidate failed or none was up.",
            ),
            ("deadline_exceeded", "Requests failed at their deadline."),
            (
                "stream_breaks",
                "Streams that broke after their first byte (ended with an error event).",
            ),
            ("reloads", "Successful config reloads."),
            (
                "reload_failures",
                "Config reloads refused (the old config stays).",
            ),
        ] {
            let name = format!("tuili_router_{key}_total");
            head(&mut s, &name, "counter", help);
            let _ = writeln!(s, "{name} {}", d.counters.get(key).copied().unwrap_or(0));
        }
        head(
            &mut s,
            "tuili_router_privacy_refusals_total",
            "counter",
            "Requests refused because no upstream allowed for their privacy class was up.",
        );
        for (c, n) in &d.privacy_refusals {
            let _ = writeln!(
                s,
                "tuili_router_privacy_refusals_total{{class=\"{c}\"}} {n}"
            );
        }
        head(
            &mut s,
            "tuili_router_spent_dollars_total",
            "counter",
            "Dollars spent at the upstreams' prices.",
        );
        let _ = writeln!(s, "tuili_router_spent_dollars_total {}", d.spent);
        head(
            &mut s,
            "tuili_router_all_cloud_dollars_total",
            "counter",
            "What the same tokens would have cost at the all-cloud reference price.",
        );
        let _ = writeln!(s, "tuili_router_all_cloud_dollars_total {}", d.all_cloud);
        head(
            &mut s,
            "tuili_router_upstream_in_flight",
            "gauge",
            "Requests in flight per upstream.",
        );
        for g in gauges {
            let _ = writeln!(
                s,
                "tuili_router_upstream_in_flight{{upstream=\"{}\",tier=\"{}\"}} {}",
                g.name, g.tier, g.in_flight
            );
        }
        head(
            &mut s,
            "tuili_router_upstream_breaker",
            "gauge",
            "Circuit breaker: 0 closed, 1 half-open, 2 open.",
        );
        for g in gauges {
            let _ = writeln!(
                s,
                "tuili_router_upstream_breaker{{upstream=\"{}\",tier=\"{}\"}} {}",
                g.name, g.tier, g.breaker
            );
        }
        head(
            &mut s,
            "tuili_router_upstream_up",
            "gauge",
            "1 when the last health probe succeeded.",
        );
        for g in gauges {
            let _ = writeln!(
                s,
                "tuili_router_upstream_up{{upstream=\"{}\",tier=\"{}\"}} {}",
                g.name,
                g.tier,
                u8::from(g.up)
            );
        }
        head(
            &mut s,
            "tuili_router_upstream_predicted_ttft_seconds",
            "gauge",
            "The latency policy's TTFT prediction per upstream.",
        );
        for g in gauges {
            let _ = writeln!(
                s,
                "tuili_router_upstream_predicted_ttft_seconds{{upstream=\"{}\",tier=\"{}\"}} {}",
                g.name,
                g.tier,
                g.ttft_ms / 1e3
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.ttft("edge", 0.004);
        m.ttft("edge", 0.2);
        let t = m.render(&[]);
        assert!(
            t.contains("tuili_router_ttft_seconds_bucket{tier=\"edge\",le=\"0.005\"} 1"),
            "{t}"
        );
        assert!(t.contains("tuili_router_ttft_seconds_bucket{tier=\"edge\",le=\"0.25\"} 2"));
        assert!(t.contains("tuili_router_ttft_seconds_count{tier=\"edge\"} 2"));
    }
}
