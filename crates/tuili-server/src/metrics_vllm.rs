//! The engine's metrics under vLLM's names, types, labels and buckets
//! (`vllm/v1/metrics/loggers.py`), so that autoscalers, gateways and dashboards built
//! around vLLM read tuili unchanged. Every series has `model_name` and `engine="0"` (one
//! engine per process, as vLLM without data parallelism).

use std::fmt::Write as _;

use tuili_engine::EngineMetrics;

use crate::metrics::{header, histogram};

/// Appends the `vllm:` families for `m` to `out`.
pub fn render(out: &mut String, m: &EngineMetrics, model_name: &str) {
    let labels = format!("model_name=\"{}\",engine=\"0\"", escape(model_name));
    let gauges: [(&str, &str, f64); 4] = [
        (
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            m.running as f64,
        ),
        (
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            (m.waiting + m.preempted_waiting) as f64,
        ),
        (
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            m.kv_usage(),
        ),
        (
            "vllm:gpu_cache_usage_perc",
            "GPU KV-cache usage. 1 means 100 percent usage. DEPRECATED: Use vllm:kv_cache_usage_perc instead.",
            m.kv_usage(),
        ),
    ];
    families(out, "gauge", &gauges, &labels);
    // An info metric as vLLM writes it: a gauge set to 1, the configuration in labels.
    header(
        out,
        "vllm:cache_config_info",
        "gauge",
        "Information of the LLMEngine CacheConfig",
    );
    let _ = writeln!(
        out,
        "vllm:cache_config_info{{{labels},block_size=\"{}\",num_gpu_blocks=\"{}\",enable_prefix_caching=\"True\"}} 1",
        m.block_size,
        m.kv_blocks_total()
    );
    let counters: [(&str, &str, u64); 5] = [
        (
            "vllm:prefix_cache_queries_total",
            "Prefix cache queries, in terms of number of queried tokens.",
            m.prefix_queries_tokens,
        ),
        (
            "vllm:prefix_cache_hits_total",
            "Prefix cache hits, in terms of number of cached tokens.",
            m.prefix_hit_tokens,
        ),
        (
            "vllm:num_preemptions_total",
            "Cumulative number of preemption from the engine.",
            m.preemptions,
        ),
        (
            "vllm:prompt_tokens_total",
            "Number of prefill tokens processed.",
            m.prompt_tokens_total,
        ),
        (
            "vllm:generation_tokens_total",
            "Number of generation tokens processed.",
            m.generated_tokens_total,
        ),
    ];
    families(out, "counter", &counters, &labels);
    histogram(
        out,
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        &labels,
        &m.vllm_ttft,
    );
    histogram(
        out,
        "vllm:inter_token_latency_seconds",
        "Histogram of inter-token latency in seconds.",
        &labels,
        &m.vllm_itl,
    );
    histogram(
        out,
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        &labels,
        &m.e2e,
    );
    // vLLM sets this gauge to the time of its last update; tuili serves no adapters, so
    // the adapter lists are empty and at most 0 run at once.
    header(
        out,
        "vllm:lora_requests_info",
        "gauge",
        "Running stats on lora requests.",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let _ = writeln!(
        out,
        "vllm:lora_requests_info{{{labels},max_lora=\"0\",running_lora_adapters=\"\",waiting_lora_adapters=\"\"}} {now}"
    );
}

/// One family of `kind` per `(name, help, value)`, each a single series with `labels`.
fn families<T: std::fmt::Display>(
    out: &mut String,
    kind: &str,
    fs: &[(&str, &str, T)],
    labels: &str,
) {
    for (name, help, v) in fs {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
    }
}

/// A label value in the text format: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn sample(text: &str, series: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no sample {series} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn vllm_series_follow_the_engine() {
        let mut m = EngineMetrics {
            waiting: 2,
            preempted_waiting: 1,
            running: 3,
            block_size: 16,
            kv_blocks_used: 25,
            kv_blocks_free: 75,
            prefix_queries_tokens: 400,
            prefix_hit_tokens: 96,
            prompt_tokens_total: 400,
            generated_tokens_total: 37,
            ..Default::default()
        };
        m.observe_first_token(0.03);
        m.observe_inter_token(0.02);
        m.e2e.observe(0.9);
        let text = crate::metrics::render(&BTreeMap::new(), Some(&m), "smol \"v2\"");
        let l = "{model_name=\"smol \\\"v2\\\"\",engine=\"0\"}";
        assert_eq!(sample(&text, &format!("vllm:num_requests_running{l}")), 3.0);
        assert_eq!(sample(&text, &format!("vllm:num_requests_waiting{l}")), 3.0);
        assert_eq!(sample(&text, &format!("vllm:kv_cache_usage_perc{l}")), 0.25);
        assert_eq!(
            sample(&text, &format!("vllm:gpu_cache_usage_perc{l}")),
            0.25
        );
        assert_eq!(
            sample(&text, &format!("vllm:prefix_cache_queries_total{l}")),
            400.0
        );
        assert_eq!(
            sample(&text, &format!("vllm:prefix_cache_hits_total{l}")),
            96.0
        );
        assert_eq!(
            sample(&text, &format!("vllm:generation_tokens_total{l}")),
            37.0
        );
        assert!(text.contains("block_size=\"16\",num_gpu_blocks=\"100\""));
        // 0.03 s falls in vLLM's 0.04 bucket, not its 0.02 one.
        let ttft = "vllm:time_to_first_token_seconds_bucket{model_name=\"smol \\\"v2\\\"\",engine=\"0\",le=";
        assert_eq!(sample(&text, &format!("{ttft}\"0.02\"}}")), 0.0);
        assert_eq!(sample(&text, &format!("{ttft}\"0.04\"}}")), 1.0);
        assert_eq!(
            sample(&text, &format!("vllm:e2e_request_latency_seconds_count{l}")),
            1.0
        );
        assert!(text.contains("vllm:lora_requests_info{"));
    }

    #[test]
    fn no_vllm_series_while_loading() {
        let text = crate::metrics::render(&BTreeMap::new(), None, "m");
        assert!(!text.contains("vllm:"));
    }
}
