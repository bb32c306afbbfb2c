//! `tuili quantize IN OUT TYPE` and quantize-on-load (`--quant TYPE`): a GGUF or a
//! Hugging Face directory to a GGUF of llama.cpp's file type `TYPE`, every metadata key
//! kept, each tensor's type chosen by llama.cpp's mixture rules (`quant_mix`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use tuili_gguf::{GgufFile, GgufWriter, Value};

use crate::load::tracing_line;
use crate::progress::Bar;
use crate::quant_mix::{llama_order, Ftype, Mixer, ModelShape};

/// `tuili quantize`'s arguments.
#[derive(Args)]
pub struct QuantizeArgs {
    /// A GGUF file or a Hugging Face model directory.
    pub input: PathBuf,
    /// The GGUF file to write.
    pub output: PathBuf,
    /// llama.cpp's type name: Q8_0, Q6_K, Q5_K_M, Q5_K_S, Q4_K_M, Q4_K_S, Q3_K_M, Q2_K,
    /// Q4_0, Q4_1, Q5_0, Q5_1, F16, BF16, F32.
    #[arg(value_name = "TYPE")]
    pub ftype: String,
    /// Allow quantizing tensors that are already quantized (their precision is lost).
    #[arg(long = "allow-requantize")]
    pub allow_requantize: bool,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
}

/// What a quantization did.
pub struct Summary {
    /// Tensors written, and how many of them were converted.
    pub tensors: usize,
    pub converted: usize,
    /// Tensors whose row length forced another type than the mixture's.
    pub fallbacks: usize,
    /// Tensor bytes before and after.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// `general.quantization_version`, as ggml's `GGML_QNT_VERSION`.
const QUANTIZATION_VERSION: u32 = 2;

/// Quantizes `src` to `ftype`: its metadata with `general.file_type` and
/// `general.quantization_version` set, and its tensors in llama.cpp's order.
pub fn quantize_gguf(
    src: &GgufFile,
    ftype: Ftype,
    allow_requantize: bool,
) -> Result<(GgufWriter, Summary)> {
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        w.add(k.clone(), v.clone())?;
    }
    w.add(
        "general.quantization_version",
        Value::U32(QUANTIZATION_VERSION),
    )?;
    w.add("general.file_type", Value::U32(ftype.id()))?;

    let mut tensors = src.tensors().to_vec();
    tensors.sort_by(|a, b| llama_order(&a.name, &b.name));
    let mut mixer = Mixer::new(ftype, ModelShape::of(src)?, &tensors);
    let bytes_in: u64 = tensors.iter().map(|t| t.n_bytes).sum();
    let bar = Bar::new("quantizing", bytes_in);
    let (mut done, mut converted, mut bytes_out) = (0u64, 0usize, 0u64);
    for t in &tensors {
        let to = mixer.target(t)?;
        let data = src.tensor_data(t);
        let out = if to == t.ty {
            data.to_vec()
        } else {
            if t.ty.is_quantized() && !allow_requantize {
                bail!(
                    "{} is already {}: requantizing loses precision; pass --allow-requantize to do it anyway",
                    t.name,
                    t.ty
                );
            }
            converted += 1;
            tuili_backend::quant::convert_rows(t.ty, data, to, t.row_len() as usize)
                .with_context(|| format!("converting {} from {} to {to}", t.name, t.ty))?
        };
        bytes_out += out.len() as u64;
        w.add_tensor(t.name.clone(), &t.dims, to, out)?;
        done += t.n_bytes;
        bar.set(done);
    }
    bar.finish();
    let summary = Summary {
        tensors: tensors.len(),
        converted,
        fallbacks: mixer.n_fallback,
        bytes_in,
        bytes_out,
    };
    Ok((w, summary))
}

/// The line that reports a quantization.
fn describe(s: &Summary, ftype: Ftype, secs: f64) -> String {
    format!(
        "quantized to {} in {secs:.2}s: {} of {} tensors converted ({} fell back for their row length), {:.1} MB -> {:.1} MB",
        ftype.name(),
        s.converted,
        s.tensors,
        s.fallbacks,
        s.bytes_in as f64 / 1e6,
        s.bytes_out as f64 / 1e6
    )
}

/// Quantize-on-load: `file` quantized to `quant` in memory (already-quantized tensors
/// are refused, as without `--allow-requantize`).
pub fn quantize_loaded(file: Arc<GgufFile>, quant: &str) -> Result<Arc<GgufFile>> {
    let ftype = Ftype::parse(quant)?;
    let t0 = Instant::now();
    let (w, s) = quantize_gguf(&file, ftype, false).context("quantizing on load (--quant)")?;
    drop(file);
    let out = GgufFile::from_bytes(w.to_bytes())?;
    tracing_line(&describe(&s, ftype, t0.elapsed().as_secs_f64()));
    Ok(Arc::new(out))
}

/// `tuili quantize IN OUT TYPE`. The file is written under a temporary name and renamed,
/// so a failure leaves nothing under `OUT`.
pub fn quantize(a: QuantizeArgs) -> Result<()> {
    crate::load::init_threads(a.threads);
    let ftype = Ftype::parse(&a.ftype)?;
    let t0 = Instant::now();
    let src = crate::load::open_file(&a.input)?;
    let (w, s) = quantize_gguf(&src, ftype, a.allow_requantize)?;
    let secs = t0.elapsed().as_secs_f64();
    let mut tmp = a.output.clone().into_os_string();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let written = w
        .write_file(&tmp)
        .map_err(anyhow::Error::from)
        .and_then(|()| std::fs::rename(&tmp, &a.output).map_err(anyhow::Error::from));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", a.output.display()));
    }
    eprintln!("{}", describe(&s, ftype, secs));
    eprintln!(
        "wrote {} in {:.2}s",
        a.output.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
