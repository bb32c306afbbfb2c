//! A Hugging Face model directory (`config.json`, safetensors weights,
//! `generation_config.json`) as the GGUF metadata and tensors that llama.cpp's converter
//! would write for it. Every family loader then serves both formats, and `tuili convert`
//! writes the same data to a file. The tokenizer files are read by `tuili-tokenizer`.
//!
//! The weights are copied into the GGUF buffer (some must change: permuted Q/K rows,
//! Gemma's norms, F32 vectors, stacked experts), so loading a directory holds the model
//! in memory once, where a GGUF file is only mapped.

mod config;
mod gpt_oss;
mod tensors;

use std::path::Path;

use serde_json::Value as Json;
use tuili_gguf::{GgufWriter, Value};
use tuili_safetensors::Checkpoint;

use crate::{Arch, ModelError};

/// The largest JSON file of a model directory read (configs are a few KiB).
const MAX_JSON_BYTES: u64 = 16 << 20;

/// Whether `path` is a Hugging Face model directory (a directory with `config.json`).
pub fn is_hf_dir(path: &Path) -> bool {
    path.is_dir() && path.join("config.json").is_file()
}

/// Reads `dir/name` as JSON; `Ok(None)` when the file is absent.
pub fn read_json(dir: &Path, name: &str) -> Result<Option<Json>, ModelError> {
    Ok(tuili_safetensors::read_json(
        &dir.join(name),
        MAX_JSON_BYTES,
    )?)
}

/// The architecture `dir`'s `config.json` names.
pub fn hf_arch(dir: &Path) -> Result<Arch, ModelError> {
    Ok(config::read(&config_json(dir)?, "")?.arch)
}

fn config_json(dir: &Path) -> Result<Json, ModelError> {
    read_json(dir, "config.json")?
        .ok_or_else(|| ModelError::BadConfig(format!("{} has no config.json", dir.display())))
}

/// The model in `dir` as GGUF metadata and tensors: the architecture's keys, the default
/// sampling settings of `generation_config.json` (`general.sampling.*`, as llama.cpp's
/// converter writes them) and every weight.
pub fn to_gguf(dir: &Path) -> Result<GgufWriter, ModelError> {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let cfg = config::read(&config_json(dir)?, &name)?;
    let ckpt = Checkpoint::open_dir(dir)?;
    let mut w = GgufWriter::new();
    for (k, v) in cfg.keys.iter().cloned().chain(sampling_keys(dir)?) {
        w.add(k, v)?;
    }
    for t in tensors::convert(&ckpt, &cfg)? {
        w.add_tensor(t.name, &t.dims, t.ty, t.data)?;
    }
    Ok(w)
}

/// `generation_config.json`'s sampling defaults as `general.sampling.*` keys.
fn sampling_keys(dir: &Path) -> Result<Vec<(String, Value)>, ModelError> {
    let Some(Json::Object(g)) = read_json(dir, "generation_config.json")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (hf, key) in [
        ("temperature", "temp"),
        ("top_p", "top_p"),
        ("min_p", "min_p"),
        ("repetition_penalty", "penalty_repeat"),
    ] {
        if let Some(v) = g.get(hf).and_then(Json::as_f64) {
            out.push((format!("general.sampling.{key}"), Value::F32(v as f32)));
        }
    }
    if let Some(k) = g.get("top_k").and_then(Json::as_i64) {
        out.push((
            "general.sampling.top_k".into(),
            Value::I32(k.clamp(0, i32::MAX as i64) as i32),
        ));
    }
    Ok(out)
}
