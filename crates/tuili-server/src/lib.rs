//! An OpenAI-compatible HTTP server over the tuili engine.
//!
//! - [`app`] builds the axum router from an [`AppState`]; [`run_blocking`] is the whole life
//!   of `tuili serve` (bind, load in the background, serve, drain on SIGINT/SIGTERM).
//! - Requests are parsed into `Valid*` values by [`validate`]; every failure is a
//!   [`ServerError`], which alone decides the HTTP status and the OpenAI error body.
//! - A response owns its engine streams: a client that disconnects drops them, which cancels
//!   its requests in the engine.
//! - Routes: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`,
//!   `GET /health`, `GET /metrics` (Prometheus text, tuili's and vLLM's names),
//!   `POST /tokenize`, `POST /detokenize`, and vLLM's `POST /v1/completions/render` and
//!   `POST /v1/chat/completions/render` (the token ids a request would run on).
//! - Other APIs over the same engine: Anthropic's `POST /v1/messages`, OpenAI's
//!   `POST /v1/responses`, `POST /v1/embeddings`; Ollama's `/api/chat`, `/api/generate`, `/api/tags`, `/api/show`
//!   and `/api/version`.
//!   With an API key, all but `/health`, `/metrics` and `/api/version` need `Authorization: Bearer KEY`
//!   (or Anthropic's `x-api-key: KEY`).
//! - `GET /`: a chat page for a person trying the model (`assets/`, compiled in; public, as
//!   it asks for the key itself).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod anthropic;
pub mod api;
mod chat_output;
mod chat_run;
mod chatpage;
mod embeddings;
mod error;
mod gbnf;
mod generate;
mod harmony;
mod harmony_grammar;
mod kv_publish;
pub mod kv_wire;
pub mod metrics;
mod metrics_vllm;
mod mistral;
mod mistral_grammar;
mod ollama;
mod render;
mod response_store;
mod responses;
mod responses_stream;
mod routes;
mod serve;
mod state;
pub mod structured;
mod tool_xml;
pub mod tools;
pub mod validate;

pub use error::{ErrorBody, ServerError};
pub use kv_publish::{start_kv_publisher, KvEventsOptions, REPLAY_BATCHES};
pub use kv_wire::KvWireLayout;
pub use routes::{app, constant_time_eq};
pub use serve::{init_logging, run_blocking, serve, shutdown_signal, Loaded, ServeOptions};
pub use state::{AppState, Ready, ServerConfig, DEFAULT_MAX_BODY_BYTES};

/// Parses a size such as `512M`, `2GiB`, `1.5g` or `1048576` into bytes (powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (examples: 512M, 2G, 1073741824)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{s}' (use K, M, G or T)"
            ))
        }
    };
    let bytes = num * mult as f64;
    if !(bytes >= 1.0 && bytes < usize::MAX as f64) {
        return Err(format!("size '{s}' must be at least 1 byte"));
    }
    Ok(bytes as usize)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("G").is_err());
    }
}
