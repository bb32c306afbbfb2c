//! SmolLM2-135M-shaped models with random weights, written as files so that tuili and
//! llama.cpp can both run them (speed does not depend on the weight values).
//!
//! The models crate writes the weights; this adds what llama.cpp needs on top:
//! - a tokenizer, because llama.cpp refuses a file without `tokenizer.ggml.model` and
//!   checks every token id against the vocabulary. A SentencePiece-style list
//!   (`<unk>`, `<s>`, `</s>`, the 256 byte tokens, then placeholders) is the smallest
//!   that llama.cpp loads without warnings;
//! - llama.cpp's fallback for k-quants on rows that are not whole 256-element blocks
//!   (576 columns here): Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, as `llama-quantize`
//!   writes a real SmolLM2 Q4_K file;
//! - `general.file_type`, so both engines name the file's type.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tuili_backend::quant::{dequantize, quantize};
use tuili_gguf::{GgmlType, GgufFile, GgufWriter, TensorInfo, Value};
use tuili_models::synthetic::{write_synthetic, SyntheticSpec, WEIGHT_TYPES};

/// The weight types `--synthetic` accepts (by their lower-case names): every type a
/// random model can be written with.
pub const TYPES: &[GgmlType] = &WEIGHT_TYPES;

/// Parses a `--synthetic` entry such as `q4_k` or `F16`.
pub fn parse_type(name: &str) -> Result<GgmlType> {
    TYPES
        .iter()
        .copied()
        .find(|t| t.name().eq_ignore_ascii_case(name.trim()))
        .with_context(|| {
            let names: Vec<String> = TYPES.iter().map(|t| t.name().to_lowercase()).collect();
            format!(
                "unknown synthetic weight type '{name}' (known: {})",
                names.join(", ")
            )
        })
}

/// Where the synthetic model of `ty` lives inside `dir`.
pub fn path_for(dir: &Path, ty: GgmlType) -> PathBuf {
    dir.join(format!(
        "smollm2-135m-synthetic-{}.gguf",
        ty.name().to_lowercase()
    ))
}

/// Writes the synthetic model of `ty` into `dir` unless it is already there, and returns
/// its path.
pub fn ensure(dir: &Path, ty: GgmlType) -> Result<PathBuf> {
    let path = path_for(dir, ty);
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("writing {}", path.display());
    let w = build(ty)?;
    // Write aside and rename, so an interrupted run never leaves a truncated model.
    let tmp = path.with_extension("gguf.partial");
    w.write_file(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(path)
}

/// The type llama.cpp stores a `ty` matrix as when its rows are `row_len` long.
pub fn stored_type(ty: GgmlType, row_len: u64) -> GgmlType {
    if row_len.is_multiple_of(ty.block_size() as u64) {
        return ty;
    }
    match ty {
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        // llama.cpp picks IQ4_NL for Q2_K/Q3_K, which tuili does not write; not offered.
        other => other,
    }
}

/// llama.cpp's `general.file_type` (`LLAMA_FTYPE_*`) for a model mostly of `ty`.
fn file_type(ty: GgmlType) -> Option<u32> {
    Some(match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q5_0 => 8,
        GgmlType::Q5_1 => 9,
        // "Q4_K - Small" etc.: k-quants without llama.cpp's per-layer bumps.
        GgmlType::Q4_K => 14,
        GgmlType::Q5_K => 16,
        GgmlType::Q6_K => 18,
        GgmlType::BF16 => 32,
        _ => return None,
    })
}

/// The GGUF of a SmolLM2-shaped model with `ty` matrices, a tokenizer and a file type.
pub fn build(ty: GgmlType) -> Result<GgufWriter> {
    // F16 holds any row length; matrices are re-quantized from it below.
    let spec = SyntheticSpec::smollm2_135m(GgmlType::F16);
    let base = GgufFile::from_bytes(write_synthetic(&spec).context("writing random weights")?)
        .context("reading back the random weights")?;
    let mut w = GgufWriter::new();
    for (k, v) in base.metadata() {
        w.add(k.clone(), v.clone())?;
    }
    w.add(
        "general.name",
        Value::String(format!(
            "smollm2-135m-synthetic-{}",
            ty.name().to_lowercase()
        )),
    )?;
    if let Some(ft) = file_type(ty) {
        w.add("general.file_type", Value::U32(ft))?;
    }
    add_tokenizer(&mut w, spec.vocab)?;
    for t in base.tensors() {
        let data = base.tensor_data(t);
        let (out_ty, bytes) = convert(t, data, ty)?;
        w.add_tensor(t.name.clone(), &t.dims, out_ty, bytes)?;
    }
    Ok(w)
}

/// Re-quantizes an F16 matrix (not the embedding, which stays Q8_0 as in the real
/// SmolLM2 file) to `ty`; everything else is copied.
fn convert(t: &TensorInfo, data: &[u8], ty: GgmlType) -> Result<(GgmlType, Vec<u8>)> {
    if t.ty != GgmlType::F16 || t.dims.len() != 2 || t.name == "token_embd.weight" {
        return Ok((t.ty, data.to_vec()));
    }
    let out = stored_type(ty, t.row_len());
    if out == GgmlType::F16 {
        return Ok((out, data.to_vec()));
    }
    let n = usize::try_from(t.n_elements()).context("tensor too large")?;
    let values = dequantize(GgmlType::F16, data, n)?;
    let bytes = quantize(out, &values).with_context(|| format!("quantizing {}", t.name))?;
    Ok((out, bytes))
}

/// A SentencePiece-style vocabulary of `vocab` tokens: `<unk>`, `<s>`, `</s>`, the byte
/// tokens `<0x00>`..`<0xFF>` (llama.cpp looks up `<0x0A>` for the newline), then
/// `<tN>` placeholders. Every string is distinct, as llama.cpp asserts.
fn add_tokenizer(w: &mut GgufWriter, vocab: usize) -> Result<()> {
    const UNKNOWN: i32 = 2;
    const NORMAL: i32 = 1;
    const CONTROL: i32 = 3;
    const BYTE: i32 = 6;
    if vocab < 3 + 256 {
        bail!("a synthetic vocabulary needs at least 259 tokens, got {vocab}");
    }
    let mut tokens = Vec::with_capacity(vocab);
    let mut types = Vec::with_capacity(vocab);
    for (s, ty) in [("<unk>", UNKNOWN), ("<s>", CONTROL), ("</s>", CONTROL)] {
        tokens.push(Value::String(s.into()));
        types.push(Value::I32(ty));
    }
    for b in 0..=255u8 {
        tokens.push(Value::String(format!("<0x{b:02X}>")));
        types.push(Value::I32(BYTE));
    }
    while tokens.len() < vocab {
        tokens.push(Value::String(format!("<t{}>", tokens.len())));
        types.push(Value::I32(NORMAL));
    }
    let scores = vec![Value::F32(0.0); vocab];
    w.add("tokenizer.ggml.model", Value::String("llama".into()))?;
    w.add("tokenizer.ggml.tokens", Value::Array(tokens))?;
    w.add("tokenizer.ggml.scores", Value::Array(scores))?;
    w.add("tokenizer.ggml.token_type", Value::Array(types))?;
    w.add("tokenizer.ggml.unknown_token_id", Value::U32(0))?;
    w.add("tokenizer.ggml.bos_token_id", Value::U32(1))?;
    w.add("tokenizer.ggml.eos_token_id", Value::U32(2))?;
    w.add("tokenizer.ggml.add_bos_token", Value::Bool(false))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_quants_fall_back_like_llama_quantize() {
        assert_eq!(stored_type(GgmlType::Q4_K, 576), GgmlType::Q5_0);
        assert_eq!(stored_type(GgmlType::Q4_K, 1536), GgmlType::Q4_K);
        assert_eq!(stored_type(GgmlType::Q6_K, 576), GgmlType::Q8_0);
        assert_eq!(stored_type(GgmlType::Q4_0, 576), GgmlType::Q4_0);
    }

    #[test]
    fn type_names_parse_and_unknown_ones_are_named() {
        assert_eq!(parse_type("q4_k").ok(), Some(GgmlType::Q4_K));
        assert_eq!(parse_type(" F16").ok(), Some(GgmlType::F16));
        let e = match parse_type("q9_9") {
            Ok(t) => panic!("parsed {t:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains("q9_9") && e.contains("q8_0"), "{e}");
    }

    #[test]
    fn synthetic_q4_k_has_tokenizer_and_fallback_types() {
        let bytes = build(GgmlType::Q4_K).map(|w| w.to_bytes());
        let file = GgufFile::from_bytes(bytes.expect("build")).expect("read back");
        let toks = file.get_str_array("tokenizer.ggml.tokens").expect("tokens");
        assert_eq!(toks.len(), 49152);
        assert_eq!(toks[3 + 10], "<0x0A>");
        let distinct: std::collections::HashSet<&str> = toks.iter().copied().collect();
        assert_eq!(distinct.len(), toks.len());
        let ty = |n: &str| file.tensor(n).map(|t| t.ty);
        assert_eq!(ty("blk.0.attn_q.weight"), Some(GgmlType::Q5_0));
        assert_eq!(ty("blk.0.ffn_down.weight"), Some(GgmlType::Q4_K));
        assert_eq!(ty("token_embd.weight"), Some(GgmlType::Q8_0));
        assert_eq!(file.get_u64("general.file_type").ok(), Some(14));
        // tuili loads it.
        let model = tuili_models::Model::load(&std::sync::Arc::new(file)).expect("load");
        assert_eq!(model.config().n_layer, 30);
    }
}
