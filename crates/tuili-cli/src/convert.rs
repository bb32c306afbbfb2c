//! A Hugging Face model directory as a GGUF: in memory for every command that loads a
//! model, and written to a file by `tuili convert`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use tuili_gguf::{GgufFile, GgufWriter};

/// `tuili convert`'s arguments.
#[derive(Args)]
pub struct ConvertArgs {
    /// A Hugging Face model directory (config.json, *.safetensors, tokenizer.json, ...).
    pub input: PathBuf,
    /// The GGUF file to write (weights kept as F32, F16 or BF16).
    pub output: PathBuf,
}

/// The model, tokenizer, chat template and sampling defaults of `dir`, as GGUF metadata and
/// tensors.
pub fn hf_to_gguf(dir: &Path) -> Result<GgufWriter> {
    let mut w = tuili_models::hf::to_gguf(dir)
        .with_context(|| format!("reading the model in {}", dir.display()))?;
    let keys = tuili_tokenizer::hf_tokenizer_keys(dir)
        .with_context(|| format!("reading the tokenizer in {}", dir.display()))?;
    for (k, v) in keys {
        w.add(k, v)?;
    }
    Ok(w)
}

/// `dir` as an in-memory GGUF file.
pub fn open_hf_dir(dir: &Path) -> Result<GgufFile> {
    let bytes = hf_to_gguf(dir)?.to_bytes();
    Ok(GgufFile::from_bytes(bytes)?)
}

/// `tuili convert HF_DIR OUT.gguf`.
pub fn convert(a: ConvertArgs) -> Result<()> {
    let t0 = Instant::now();
    let w = hf_to_gguf(&a.input)?;
    w.write_file(&a.output)
        .with_context(|| format!("writing {}", a.output.display()))?;
    let size = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "wrote {} ({:.1} MB) in {:.2}s",
        a.output.display(),
        size as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
