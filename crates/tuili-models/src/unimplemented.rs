//! What a model file may ask for that the forward pass does not do.
//!
//! A file that carries a tensor or a metadata key that changes the math (RoPE scaling, a
//! sliding window, soft-capping, experts, QK-norm, ...) and
//! that tuili does not implement is refused with the name of what it asks for, instead
//! of running with plain math and giving different answers without a word.

use std::collections::BTreeSet;

use tuili_gguf::GgufFile;

use crate::{Config, ModelError};

/// Tensors that files carry and that change nothing: llama.cpp ignores them too.
fn is_inert_tensor(name: &str) -> bool {
    // Old conversions stored RoPE's inverse frequencies per layer; they equal what the
    // base frequency gives.
    name.starts_with("blk.") && name.ends_with(".attn_rot_embd")
}

/// What an unused tensor is for, when it is a known one.
fn tensor_meaning(name: &str) -> &'static str {
    let suffix = name
        .rsplit_once("blk.")
        .map_or(name, |(_, s)| s.split_once('.').map_or(s, |(_, rest)| rest));
    match suffix {
        "rope_freqs.weight" => "RoPE frequency factors, applied for `llama` and `mistral3` only",
        "attn_qkv.weight" => "a fused Q/K/V projection",
        "attn_q_norm.weight" | "attn_k_norm.weight" => "QK-norm",
        "attn_post_norm.weight"
        | "ffn_post_norm.weight"
        | "post_attention_norm.weight"
        | "post_ffw_norm.weight" => "post-norms",
        "attn_sinks.weight" | "attn_sinks" => "attention sinks",
        "ffn_gate_inp.weight" => "a mixture-of-experts router",
        "attn_output.bias" | "ffn_down.bias" | "ffn_up.bias" | "ffn_gate.bias" => "biases",
        _ => "a weight the forward pass does not use",
    }
}

/// Refuses a file with a tensor that the forward pass did not read (`used`), unless it is
/// inert.
pub(crate) fn refuse_unused_tensors(
    file: &GgufFile,
    used: &BTreeSet<String>,
) -> Result<(), ModelError> {
    let unused = file
        .tensors()
        .iter()
        .map(|t| t.name.as_str())
        .find(|n| !used.contains(*n) && !is_inert_tensor(n));
    match unused {
        Some(name) => Err(ModelError::Unimplemented(format!(
            "tensor '{name}' ({})",
            tensor_meaning(name)
        ))),
        None => Ok(()),
    }
}

/// Refuses a file whose metadata asks for math the forward pass does not do. `handled`:
/// keys (without the `{arch}.` prefix) whose math the family's loader implements.
pub(crate) fn refuse_unimplemented_metadata(
    file: &GgufFile,
    cfg: &Config,
    handled: &[&str],
) -> Result<(), ModelError> {
    let a = cfg.arch.name();
    let key = |k: &str| format!("{a}.{k}");
    let present = |k: &str| !handled.contains(&k);
    let num = |k: &str| {
        file.get(&key(k))
            .filter(|_| present(k))
            .and_then(|v| v.as_f32())
    };
    let get = |k: &str| file.get(&key(k)).filter(|_| present(k));
    let refuse =
        |k: &str, what: String| Err(ModelError::Unimplemented(format!("{}: {what}", key(k))));

    // Linear scaling (llama.cpp's default type) and YaRN are applied by every loader.
    if let Some(v) = get("rope.scaling.type") {
        let t = v.as_str().unwrap_or("?");
        if !matches!(t, "none" | "linear" | "yarn") {
            return refuse("rope.scaling.type", format!("RoPE scaling '{t}'"));
        }
    }
    if num("attention.temperature_scale").is_some_and(|v| v != 0.0) {
        return refuse(
            "attention.temperature_scale",
            "an attention temperature".to_string(),
        );
    }
    if let Some(n) = get("attention.value_length").and_then(|v| v.as_u64()) {
        if n != cfg.head_dim as u64 {
            return refuse(
                "attention.value_length",
                format!("value heads of {n} against key heads of {}", cfg.head_dim),
            );
        }
    }
    // A head size of their own on sliding-window layers (Gemma 4).
    for k in ["attention.key_length_swa", "attention.value_length_swa"] {
        if let Some(n) = get(k).and_then(|v| v.as_u64()) {
            if n != cfg.head_dim as u64 {
                return refuse(
                    k,
                    format!("local layers' heads of {n} against {}", cfg.head_dim),
                );
            }
        }
    }
    if let Some(n) = get("rope.dimension_count_swa").and_then(|v| v.as_u64()) {
        let global = get("rope.dimension_count").and_then(|v| v.as_u64());
        if n != global.unwrap_or(cfg.head_dim as u64) {
            return refuse(
                "rope.dimension_count_swa",
                format!("local layers rotating {n} dimensions"),
            );
        }
    }
    if let Some(w) = get("attention.sliding_window").and_then(|v| v.as_u64()) {
        if w > 0 && w < cfg.ctx_len as u64 {
            return refuse(
                "attention.sliding_window",
                format!("a sliding window of {w} tokens (context {})", cfg.ctx_len),
            );
        }
    }
    for k in ["attn_logit_softcapping", "final_logit_softcapping"] {
        if num(k).is_some_and(|v| v != 0.0) {
            return refuse(k, "logit soft-capping".to_string());
        }
    }
    if let Some(n) = get("expert_count").and_then(|v| v.as_u64()) {
        if n > 0 {
            return refuse("expert_count", format!("a mixture of {n} experts"));
        }
    }
    if get("attention.layer_norm_epsilon").is_some() {
        return refuse("attention.layer_norm_epsilon", "LayerNorm".to_string());
    }
    for k in ["embedding_scale", "residual_scale", "logit_scale"] {
        if num(k).is_some_and(|v| v != 1.0) {
            return refuse(k, format!("a multiplier of {}", num(k).unwrap_or(0.0)));
        }
    }
    if let Some(s) = num("attention.scale") {
        let default = 1.0 / (cfg.head_dim as f32).sqrt();
        if s != 0.0 && (s - default).abs() > 1e-6 * default {
            return refuse("attention.scale", format!("an attention scale of {s}"));
        }
    }
    if num("attention.clamp_kqv").is_some_and(|v| v != 0.0) {
        return refuse("attention.clamp_kqv", "clamped Q/K/V".to_string());
    }
    if get("use_parallel_residual")
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
    {
        return refuse("use_parallel_residual", "a parallel residual".to_string());
    }
    Ok(())
}
