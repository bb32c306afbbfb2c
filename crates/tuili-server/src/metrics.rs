//! `/metrics` in the Prometheus text exposition format (version 0.0.4): tuili's own series,
//! then vLLM's ([`crate::metrics_vllm`]) for the tools built around vLLM.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tuili_engine::{EngineMetrics, Histogram};

/// Renders the HTTP counters and, once the model is loaded, the engine's gauges, counters
/// and latency histograms, under tuili's names and vLLM's (labelled with `model_name`).
pub fn render(
    responses: &BTreeMap<u16, u64>,
    engine: Option<&EngineMetrics>,
    model_name: &str,
) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "tuili_requests_total",
        "counter",
        "HTTP responses sent, by status code.",
    );
    for (status, n) in responses {
        let _ = writeln!(out, "tuili_requests_total{{status=\"{status}\"}} {n}");
    }
    header(
        &mut out,
        "tuili_model_loaded",
        "gauge",
        "1 once the model is loaded and requests are served.",
    );
    let _ = writeln!(out, "tuili_model_loaded {}", u8::from(engine.is_some()));
    let Some(m) = engine else {
        return out;
    };
    let gauges: [(&str, &str, f64); 7] = [
        (
            "tuili_queue_depth",
            "Requests waiting to start.",
            m.waiting as f64,
        ),
        (
            "tuili_running_sequences",
            "Sequences holding KV blocks.",
            m.running as f64,
        ),
        (
            "tuili_kv_blocks_used",
            "KV cache blocks held by sequences.",
            m.kv_blocks_used as f64,
        ),
        (
            "tuili_kv_blocks_free",
            "KV cache blocks free or evictable.",
            m.kv_blocks_free as f64,
        ),
        (
            "tuili_kv_blocks_cached",
            "KV cache blocks registered in the prefix cache (held or evictable).",
            m.kv_blocks_cached as f64,
        ),
        (
            "tuili_kv_local_blocks_used",
            "KV cache blocks of the sliding-window layers' own region held by sequences.",
            m.kv_local_blocks_used as f64,
        ),
        (
            "tuili_prefix_cache_hit_rate",
            "Fraction of looked-up prompt tokens found in the prefix cache.",
            m.prefix_hit_rate(),
        ),
    ];
    for (name, help, v) in gauges {
        header(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    }
    let counters: [(&str, &str, u64); 7] = [
        (
            "tuili_prefix_cache_queries_tokens_total",
            "Prompt tokens looked up in the prefix cache.",
            m.prefix_queries_tokens,
        ),
        (
            "tuili_prefix_cache_hits_tokens_total",
            "Prompt tokens found in the prefix cache.",
            m.prefix_hit_tokens,
        ),
        (
            "tuili_prompt_tokens_total",
            "Prompt tokens received.",
            m.prompt_tokens_total,
        ),
        (
            "tuili_generated_tokens_total",
            "Tokens generated.",
            m.generated_tokens_total,
        ),
        (
            "tuili_preemptions_total",
            "Sequences preempted for KV blocks and recomputed later.",
            m.preemptions,
        ),
        ("tuili_engine_steps_total", "Engine steps run.", m.steps),
        (
            "tuili_engine_step_panics_total",
            "Engine steps that panicked (their requests failed; the engine served on).",
            m.step_panics,
        ),
    ];
    for (name, help, v) in counters {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    histogram(
        &mut out,
        "tuili_time_to_first_token_seconds",
        "Time from submission to the first generated token.",
        "",
        &m.ttft,
    );
    histogram(
        &mut out,
        "tuili_inter_token_latency_seconds",
        "Time between consecutive tokens of one request.",
        "",
        &m.itl,
    );
    histogram(
        &mut out,
        "tuili_grammar_mask_seconds",
        "Time to compute one constrained sequence's token mask.",
        "",
        &m.grammar_mask,
    );
    histogram(
        &mut out,
        "tuili_grammar_mask_wait_seconds",
        "Time a step's sampling waited for grammar masks after the forward pass.",
        "",
        &m.grammar_mask_wait,
    );
    crate::metrics_vllm::render(&mut out, m, model_name);
    out
}

pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Prometheus buckets are cumulative; the engine's counts are per bucket. `labels` are
/// `k="v"` pairs joined by commas (or empty), put before `le`.
pub(crate) fn histogram(out: &mut String, name: &str, help: &str, labels: &str, h: &Histogram) {
    header(out, name, "histogram", help);
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cum = 0u64;
    for (i, bound) in h.bounds.iter().enumerate() {
        cum += h.counts.get(i).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cum}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
    let braced = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braced} {}", h.sum);
    let _ = writeln!(out, "{name}_count{braced} {}", h.count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_at_count() {
        let mut m = EngineMetrics {
            ttft: Histogram::new(&[0.1, 1.0]),
            ..Default::default()
        };
        for v in [0.05, 0.5, 0.7, 3.0] {
            m.ttft.observe(v);
        }
        let text = render(&BTreeMap::new(), Some(&m), "m");
        assert!(text.contains("tuili_time_to_first_token_seconds_bucket{le=\"0.1\"} 1\n"));
        assert!(text.contains("tuili_time_to_first_token_seconds_bucket{le=\"1\"} 3\n"));
        assert!(text.contains("tuili_time_to_first_token_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(text.contains("tuili_time_to_first_token_seconds_count 4\n"));
    }

    #[test]
    fn requests_by_status_and_hit_rate() {
        let m = EngineMetrics {
            prefix_queries_tokens: 200,
            prefix_hit_tokens: 150,
            ..Default::default()
        };
        let responses = BTreeMap::from([(200, 7), (429, 2)]);
        let text = render(&responses, Some(&m), "m");
        assert!(text.contains("tuili_requests_total{status=\"200\"} 7\n"));
        assert!(text.contains("tuili_requests_total{status=\"429\"} 2\n"));
        assert!(text.contains("tuili_prefix_cache_hit_rate 0.75\n"));
        // Every sample line belongs to a declared metric family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "no TYPE for {line}"
            );
        }
    }

    #[test]
    fn loading_server_has_no_engine_metrics() {
        let text = render(&BTreeMap::new(), None, "m");
        assert!(text.contains("tuili_model_loaded 0"));
        assert!(!text.contains("tuili_running_sequences"));
    }
}
