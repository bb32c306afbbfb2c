//! `POST /v1/embeddings`: each input's final hidden states (the served model's, after its
//! output norm), pooled as llama.cpp pools them and scaled to unit length;
//! `encoding_format` `float` or `base64` (little-endian f32).
//!
//! The pooling is the model file's `{arch}.pooling_type`, as llama.cpp reads it. A file
//! without one gets llama.cpp's default, `none` (a vector per token), which an OpenAI
//! embedding cannot be: like llama.cpp's server, that is a 400, unless the request names a
//! pooling itself (`"pooling": "mean"`, tuili's per-request `--pooling`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tuili_models::embedding::{pool, Pooling, PoolingType};

use crate::routes::body;
use crate::validate::{kind, parse_object, token_ids};
use crate::{AppState, ServerError};

/// Most inputs one request may embed.
pub const MAX_INPUTS: usize = 256;

const KNOWN: &[&str] = &[
    "model",
    "input",
    "encoding_format",
    "dimensions",
    "user",
    "pooling",
];

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(state): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ServerError> {
    let b = body(b, &state)?;
    let req = parse_object(&b, KNOWN)?;
    state.check_model(req.get("model").and_then(Value::as_str))?;
    let base64 = match req.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "float" => false,
        Some(Value::String(s)) if s == "base64" => true,
        Some(other) => {
            return Err(ServerError::field(
                "encoding_format",
                format!("encoding_format must be 'float' or 'base64', got {other}"),
            ))
        }
    };
    if req.get("dimensions").is_some_and(|d| !d.is_null()) {
        return Err(ServerError::unsupported(
            "dimensions",
            "dimensions is not supported: the embedding has the model's hidden size",
        ));
    }
    let ready = state.ready()?;
    let engine = ready.engine.clone();
    let pooling = pooling(req.get("pooling"), engine.pooling())?;
    let tok = engine.tokenizer().clone();
    let vocab = tok.vocab_size();
    let inputs: Vec<Vec<u32>> = match req.get("input") {
        Some(Value::String(s)) => vec![tok.encode(s, true, false)],
        Some(Value::Array(items)) if !items.is_empty() => {
            if items.len() > MAX_INPUTS {
                return Err(ServerError::field(
                    "input",
                    format!(
                        "input may hold at most {MAX_INPUTS} items, got {}",
                        items.len()
                    ),
                ));
            }
            if items.iter().all(Value::is_number) {
                vec![token_ids("input", items, vocab)?]
            } else {
                let mut out = Vec::with_capacity(items.len());
                for (i, it) in items.iter().enumerate() {
                    out.push(match it {
                        Value::String(s) => tok.encode(s, true, false),
                        Value::Array(ids) => token_ids(&format!("input[{i}]"), ids, vocab)?,
                        other => {
                            return Err(ServerError::field(
                                format!("input[{i}]"),
                                format!(
                                    "input[{i}] must be a string or a list of token ids, got {}",
                                    kind(other)
                                ),
                            ))
                        }
                    });
                }
                out
            }
        }
        _ => {
            return Err(ServerError::field(
                "input",
                "input must be a string, a list of strings, or token ids (one list or a list of lists), and not empty",
            ))
        }
    };
    let n_ctx = engine.n_ctx();
    for (i, ids) in inputs.iter().enumerate() {
        if ids.is_empty() || ids.len() > n_ctx {
            return Err(ServerError::field(
                format!("input[{i}]"),
                format!(
                    "input[{i}] has {} tokens; it must have 1 to {n_ctx} (the context length)",
                    ids.len()
                ),
            ));
        }
    }
    let mut data = Vec::with_capacity(inputs.len());
    let mut tokens = 0;
    for (index, ids) in inputs.into_iter().enumerate() {
        let n = ids.len();
        tokens += n;
        let hidden = engine
            .hidden_states(ids)
            .await
            .map_err(ServerError::Engine)?;
        let v = pool(&hidden, hidden.len() / n, pooling);
        let embedding = if base64 {
            json!(encode_base64(
                &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()
            ))
        } else {
            json!(v)
        };
        data.push(json!({"object": "embedding", "index": index, "embedding": embedding}));
    }
    Ok(Json(json!({
        "object": "list", "data": data, "model": state.config().model_name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response())
}

/// The pooling to use: the request's `pooling`, else the model's (`from_file`), else mean
/// for a file that names none (a decoder's file usually does not; llama.cpp then defaults
/// to `none` and its server refuses `/v1/embeddings`, which would leave every OpenAI client
/// of a chat model without embeddings); `none` and `rank` make no sentence vector and are a
/// 400 saying what to send instead.
fn pooling(asked: Option<&Value>, from_file: Option<PoolingType>) -> Result<Pooling, ServerError> {
    const USABLE: &str = "'mean', 'last' or 'cls'";
    let (kind, source) = match asked {
        None | Some(Value::Null) => match from_file {
            Some(t) => (t, "the model's file sets pooling_type"),
            None => (
                PoolingType::Mean,
                "the model's file sets no pooling_type, so it is",
            ),
        },
        Some(Value::String(name)) => match PoolingType::from_name(name) {
            Some(t) => (t, "pooling is"),
            None => {
                return Err(ServerError::field(
                    "pooling",
                    format!("pooling must be {USABLE}, got '{name}'"),
                ))
            }
        },
        Some(other) => {
            return Err(ServerError::field(
                "pooling",
                format!("pooling must be a string ({USABLE}), got {}", kind(other)),
            ))
        }
    };
    kind.pooling().ok_or_else(|| {
        let why = match kind {
            PoolingType::Rank => "a reranker's scores, not a sentence vector",
            _ => "a vector per token, not one per input as /v1/embeddings returns",
        };
        ServerError::field(
            "pooling",
            format!(
                "{source} '{}': {why}; send \"pooling\": {USABLE} to pool the final hidden states",
                kind.name()
            ),
        )
    })
}

/// Standard base64 with padding.
fn encode_base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(ABC[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_comes_from_the_request_then_the_file_then_none() {
        let name = |v: Value| Some(v);
        // The file decides, unless the request names one.
        assert_eq!(
            pooling(None, Some(PoolingType::Last)).unwrap(),
            Pooling::Last
        );
        assert_eq!(pooling(None, Some(PoolingType::Cls)).unwrap(), Pooling::Cls);
        assert_eq!(
            pooling(name(json!("mean")).as_ref(), Some(PoolingType::Last)).unwrap(),
            Pooling::Mean
        );
        assert_eq!(
            pooling(name(json!(null)).as_ref(), Some(PoolingType::Mean)).unwrap(),
            Pooling::Mean
        );
        // No pooling_type: mean, as before files named one.
        assert_eq!(pooling(None, None).unwrap(), Pooling::Mean);
        // A file asking for none (a vector per token) is refused, saying what to send.
        let e = pooling(None, Some(PoolingType::None)).unwrap_err();
        assert_eq!(e.body().param.as_deref(), Some("pooling"));
        assert_eq!(
            e.to_string(),
            "the model's file sets pooling_type 'none': a vector per token, not one per input as /v1/embeddings returns; send \"pooling\": 'mean', 'last' or 'cls' to pool the final hidden states"
        );
        let e = pooling(None, Some(PoolingType::Rank)).unwrap_err();
        assert!(e
            .to_string()
            .contains("sets pooling_type 'rank': a reranker's scores"));
        let e = pooling(name(json!("max")).as_ref(), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pooling must be 'mean', 'last' or 'cls', got 'max'"
        );
        assert!(pooling(name(json!(1)).as_ref(), None).is_err());
        assert!(pooling(name(json!("none")).as_ref(), Some(PoolingType::Mean)).is_err());
    }

    #[test]
    fn base64_is_standard() {
        assert_eq!(encode_base64(b""), "");
        assert_eq!(encode_base64(b"f"), "Zg==");
        assert_eq!(encode_base64(b"fo"), "Zm8=");
        assert_eq!(encode_base64(b"foo"), "Zm9v");
        assert_eq!(encode_base64(&[0xff, 0xfe, 0x00, 0x01]), "//4AAQ==");
    }
}
