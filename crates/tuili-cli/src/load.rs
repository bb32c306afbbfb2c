//! Loading a model, its tokenizer and chat template from a model argument.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tuili_gguf::GgufFile;
use tuili_models::Model;
use tuili_tokenizer::{ChatTemplate, Tokenizer};

use crate::{registry, ModelArgs, QuantArgs};

/// Everything needed to run a model.
pub struct Loaded {
    /// The mapped file.
    pub file: Arc<GgufFile>,
    /// Weights and configuration.
    pub model: Model,
    /// The vocabulary.
    pub tokenizer: Tokenizer,
    /// The chat template, when the file has one.
    pub template: Option<ChatTemplate>,
}

/// Sets the worker thread count once for the process.
pub fn init_threads(threads: Option<usize>) {
    if let Some(n) = threads {
        tuili_backend::pool::set_threads(n);
    }
}

/// Opens the GGUF file a model argument names (pulling it if it is a known name); a
/// Hugging Face directory is converted in memory; `--quant` quantizes it in memory.
pub fn open(args: &ModelArgs) -> Result<Arc<GgufFile>> {
    init_threads(args.threads);
    let path = registry::resolve(&args.model)?;
    open_path(&path, &args.quant)
}

/// A GGUF file, or a Hugging Face directory converted in memory.
pub fn open_file(path: &Path) -> Result<GgufFile> {
    if tuili_models::hf::is_hf_dir(path) {
        return crate::convert::open_hf_dir(path);
    }
    GgufFile::open(path).with_context(|| format!("opening {}", path.display()))
}

/// [`open_file`], then quantized in memory when `--quant` asks for it. The kernels'
/// tunables for this CPU are applied first (measured on the first run).
pub fn open_path(path: &Path, quant: &QuantArgs) -> Result<Arc<GgufFile>> {
    crate::tune::ensure();
    let file = Arc::new(open_file(path)?);
    match &quant.quant {
        Some(q) => crate::quantize::quantize_loaded(file, q),
        None => Ok(file),
    }
}

/// Loads model, tokenizer and template.
pub fn load(args: &ModelArgs) -> Result<Loaded> {
    let t0 = Instant::now();
    let file = open(args)?;
    let model = Model::load(&file).context("loading the model")?;
    let tokenizer = Tokenizer::from_gguf(&file).context("loading the tokenizer")?;
    let template = ChatTemplate::from_gguf(&file).context("loading the chat template")?;
    tracing_line(&format!(
        "loaded {} ({} layers, dim {}) in {:.2}s",
        model.config().arch.name(),
        model.config().n_layer,
        model.config().dim,
        t0.elapsed().as_secs_f64()
    ));
    Ok(Loaded {
        file,
        model,
        tokenizer,
        template,
    })
}

/// A status line on stderr, kept apart from generated text on stdout.
pub fn tracing_line(msg: &str) {
    if std::env::var_os("TUILI_QUIET").is_none() {
        eprintln!("{msg}");
    }
}
