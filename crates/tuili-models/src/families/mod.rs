//! One loader per family: each reads its tensors and metadata into a [`ModelSpec`]; the
//! forward pass and the backends are shared. Adding a family means a file here, a variant
//! of [`Arch`] and a line in [`load`].

mod gemma;
mod gpt_oss;
mod llama;
mod olmo2;
mod phi3;
mod rope;
mod starcoder2;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

use tuili_backend::matmul::{ByteSource, Weight};

use tuili_gguf::{GgufFile, Value};

use crate::ops::{MatId, Norm, NormKind, VecId, Widths};
use crate::spec::{ModelSpec, Weights};
use crate::{unimplemented, Arch, Config, ModelError};

/// The keys of local sliding-window layers, which the families with them implement.
const SLIDING_WINDOW_KEYS: &[&str] = &[
    "attention.sliding_window",
    "attention.sliding_window_pattern",
    "rope.freq_base_swa",
];

/// Reads `file`'s weights into the forward pass of its family, refusing tensors and
/// metadata that change the math and that the family does not implement.
pub(crate) fn load(file: &Arc<GgufFile>, cfg: &Config) -> Result<(ModelSpec, Weights), ModelError> {
    let ld = Loader {
        file,
        cfg,
        used: RefCell::new(BTreeSet::new()),
        weights: RefCell::new(Weights::default()),
    };
    if cfg.arch != Arch::Deci && !cfg.uniform_layers() {
        return Err(ModelError::Unimplemented(format!(
            "layers of different shapes in a {} file (per-layer {}.attention.head_count, \
             head_count_kv or feed_forward_length): only deci's loader reads them",
            cfg.arch.name(),
            cfg.arch.name()
        )));
    }
    let (spec, handled) = match cfg.arch {
        Arch::Llama
        | Arch::Mistral3
        | Arch::Qwen2
        | Arch::Qwen3
        | Arch::Qwen3Moe
        | Arch::Smollm3
        | Arch::Granite
        | Arch::Deci => (llama::load(&ld)?, llama::handled_keys(cfg.arch)),
        Arch::Gemma2 => (gemma::load(&ld)?, gemma::GEMMA2_HANDLED_KEYS),
        Arch::Gemma3 => (gemma::load(&ld)?, gemma::GEMMA3_HANDLED_KEYS),
        Arch::Olmo2 => (olmo2::load(&ld)?, olmo2::HANDLED_KEYS),
        Arch::Phi3 => (phi3::load(&ld)?, phi3::HANDLED_KEYS),
        Arch::GptOss => (gpt_oss::load(&ld)?, gpt_oss::HANDLED_KEYS),
        Arch::Starcoder2 => (starcoder2::load(&ld)?, starcoder2::HANDLED_KEYS),
    };
    unimplemented::refuse_unimplemented_metadata(file, cfg, handled)?;
    unimplemented::refuse_unused_tensors(file, &ld.used.borrow())?;
    Ok((spec, ld.weights.into_inner()))
}

/// Reads weights out of a GGUF file, checking each tensor's shape, and notes which
/// tensors the forward pass reads.
pub(crate) struct Loader<'a> {
    file: &'a Arc<GgufFile>,
    cfg: &'a Config,
    used: RefCell<BTreeSet<String>>,
    weights: RefCell<Weights>,
}

impl Loader<'_> {
    fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    /// A `[rows, cols]` matrix (GGUF dims `[cols, rows]`).
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<MatId, ModelError> {
        self.used.borrow_mut().insert(name.to_string());
        let t = self
            .file
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        if t.dims != [cols as u64, rows as u64] {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                found: t.dims.clone(),
                expected: vec![cols as u64, rows as u64],
            });
        }
        // Absolute position of the tensor's bytes in the file.
        let offset =
            self.file.tensor_data(t).as_ptr() as usize - self.file.data().as_ptr() as usize;
        let src: Arc<dyn ByteSource> = self.file.clone();
        let w = Weight::new(t.ty, rows, cols, src, offset)?;
        Ok(self.weights.borrow_mut().add_mat(name, w))
    }

    /// A fused matrix (GGUF dims `[cols, Σ parts]`) as one view per part of `parts[i]`
    /// consecutive rows: fused Q/K/V, or gate and up.
    fn split_matrix(
        &self,
        name: &str,
        cols: usize,
        parts: &[usize],
    ) -> Result<Vec<MatId>, ModelError> {
        self.used.borrow_mut().insert(name.to_string());
        let t = self
            .file
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let rows: usize = parts.iter().sum();
        if t.dims != [cols as u64, rows as u64] {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                found: t.dims.clone(),
                expected: vec![cols as u64, rows as u64],
            });
        }
        let mut at =
            self.file.tensor_data(t).as_ptr() as usize - self.file.data().as_ptr() as usize;
        let row_bytes = self.file.tensor_data(t).len() / rows;
        let mut ids = Vec::with_capacity(parts.len());
        for (i, &r) in parts.iter().enumerate() {
            let src: Arc<dyn ByteSource> = self.file.clone();
            let w = Weight::new(t.ty, r, cols, src, at)?;
            ids.push(
                self.weights
                    .borrow_mut()
                    .add_mat(&format!("{name}[{i}]"), w),
            );
            at += r * row_bytes;
        }
        Ok(ids)
    }

    /// `n` stacked `[rows, cols]` matrices (GGUF dims `[cols, rows, n]`, one expert after
    /// another), as one view each.
    fn experts(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        n: usize,
    ) -> Result<Vec<MatId>, ModelError> {
        self.used.borrow_mut().insert(name.to_string());
        let t = self
            .file
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let want = [cols as u64, rows as u64, n as u64];
        if t.dims != want {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                found: t.dims.clone(),
                expected: want.to_vec(),
            });
        }
        let start = self.file.tensor_data(t).as_ptr() as usize - self.file.data().as_ptr() as usize;
        let bytes = self.file.tensor_data(t).len() / n;
        (0..n)
            .map(|e| {
                let src: Arc<dyn ByteSource> = self.file.clone();
                let w = Weight::new(t.ty, rows, cols, src, start + e * bytes)?;
                Ok(self
                    .weights
                    .borrow_mut()
                    .add_mat(&format!("{name}[{e}]"), w))
            })
            .collect()
    }

    /// The widths of layer `i`'s buffers.
    fn layer_widths(&self, i: usize) -> Widths {
        Widths::of_layer(self.cfg.dim, &self.cfg.layers[i])
    }

    /// A vector of `n` values, dequantized to f32.
    fn vector_values(&self, name: &str, n: usize) -> Result<Vec<f32>, ModelError> {
        self.used.borrow_mut().insert(name.to_string());
        let t = self
            .file
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        if t.dims != [n as u64] {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                found: t.dims.clone(),
                expected: vec![n as u64],
            });
        }
        Ok(tuili_backend::quant::dequantize(
            t.ty,
            self.file.tensor_data(t),
            n,
        )?)
    }

    /// `n` stacked vectors of `width` values (GGUF dims `[width, n]`: per-expert biases),
    /// kept as weights of the model, one each.
    fn expert_vectors(&self, name: &str, width: usize, n: usize) -> Result<Vec<VecId>, ModelError> {
        self.used.borrow_mut().insert(name.to_string());
        let t = self
            .file
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        if t.dims != [width as u64, n as u64] {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                found: t.dims.clone(),
                expected: vec![width as u64, n as u64],
            });
        }
        let all = tuili_backend::quant::dequantize(t.ty, self.file.tensor_data(t), width * n)?;
        let mut weights = self.weights.borrow_mut();
        Ok(all
            .chunks_exact(width)
            .map(|v| weights.add_vec(v.to_vec()))
            .collect())
    }

    /// A vector of `n` values, kept as a weight of the model.
    fn vector(&self, name: &str, n: usize) -> Result<VecId, ModelError> {
        let v = self.vector_values(name, n)?;
        Ok(self.weights.borrow_mut().add_vec(v))
    }

    /// Layer `i`'s Q, K and V biases (`[q_dim]`, `[kv_dim]`, `[kv_dim]`): required when
    /// `required`, else read when the file has them.
    fn qkv_biases(&self, i: usize, required: bool) -> Result<Option<[VecId; 3]>, ModelError> {
        let n = |s: &str| format!("blk.{i}.{s}.bias");
        if !required && !self.has(&n("attn_q")) {
            return Ok(None);
        }
        let (q_dim, kv_dim) = (self.cfg.q_dim(), self.cfg.kv_dim());
        Ok(Some([
            self.vector(&n("attn_q"), q_dim)?,
            self.vector(&n("attn_k"), kv_dim)?,
            self.vector(&n("attn_v"), kv_dim)?,
        ]))
    }

    /// An RMSNorm of weight `name` (`[n]`).
    fn rms(&self, name: &str, n: usize) -> Result<Norm, ModelError> {
        Ok(self.vector(name, n)?.into())
    }

    /// A LayerNorm of weight `{name}.weight` and bias `{name}.bias` (`[n]` each).
    fn layer_norm(&self, name: &str, n: usize) -> Result<Norm, ModelError> {
        Ok(Norm {
            kind: NormKind::Layer,
            w: self.vector(&format!("{name}.weight"), n)?,
            b: Some(self.vector(&format!("{name}.bias"), n)?),
        })
    }

    /// The output projection: `output.weight`, else the embedding (tied).
    fn output(&self, embed: MatId) -> Result<MatId, ModelError> {
        let cfg = self.cfg;
        if self.has("output.weight") {
            self.matrix("output.weight", cfg.vocab, cfg.dim)
        } else {
            Ok(embed)
        }
    }

    /// A required count of this architecture (`{arch}.{key}`), within `1..=max`.
    fn count(&self, key: &str, max: usize) -> Result<usize, ModelError> {
        let key = format!("{}.{key}", self.cfg.arch.name());
        let v = self.file.get_u64(&key)?;
        if v == 0 || v > max as u64 {
            return Err(ModelError::BadConfig(format!(
                "{key} = {v} is outside 1..={max}"
            )));
        }
        Ok(v as usize)
    }

    /// A metadata number of this architecture (`{arch}.{key}`), if present.
    fn num(&self, key: &str) -> Option<f32> {
        self.file
            .get(&format!("{}.{key}", self.cfg.arch.name()))
            .and_then(|v| v.as_f32())
    }

    /// A soft-cap (`{arch}.{key}`, e.g. `attn_logit_softcapping`), `default` when the file
    /// names none; 0 is none.
    fn softcap(&self, key: &str, default: Option<f32>) -> Result<Option<f32>, ModelError> {
        match self.num(key) {
            None => Ok(default),
            Some(0.0) => Ok(None),
            Some(c) if c.is_finite() && c > 0.0 => Ok(Some(c)),
            Some(c) => Err(ModelError::BadConfig(format!(
                "{}.{key} is {c}; a soft-cap must be a positive number",
                self.cfg.arch.name()
            ))),
        }
    }

    /// The sliding window of local layers (`{arch}.attention.sliding_window`; 0 or absent:
    /// none).
    fn sliding_window(&self) -> Option<usize> {
        let key = format!("{}.attention.sliding_window", self.cfg.arch.name());
        match self.file.get(&key).and_then(|v| v.as_u64()) {
            Some(0) | None => None,
            Some(w) => Some(w as usize),
        }
    }

    /// The RoPE base of local layers: `{arch}.rope.freq_base_swa`, else `default`.
    fn local_rope_base(&self, default: f32) -> Result<f32, ModelError> {
        let base = self.num("rope.freq_base_swa").unwrap_or(default);
        if base.is_finite() && base > 0.0 {
            Ok(base)
        } else {
            Err(ModelError::BadConfig(format!(
                "{}.rope.freq_base_swa is {base}; it must be positive",
                self.cfg.arch.name()
            )))
        }
    }

    /// Which layers are local (sliding window): `attention.sliding_window_pattern` as one
    /// flag per layer, or as a period `p` (layer `i` is local unless `i % p == p - 1`;
    /// 0 makes every layer local), `default_period` when absent.
    fn local_layers(&self, default_period: usize) -> Result<Vec<bool>, ModelError> {
        let n_layer = self.cfg.n_layer;
        let key = &format!("{}.attention.sliding_window_pattern", self.cfg.arch.name());
        match self.file.get(key) {
            Some(Value::Array(flags)) => {
                if flags.len() != n_layer {
                    return Err(ModelError::BadConfig(format!(
                        "{key} has {} flags for {n_layer} layers",
                        flags.len()
                    )));
                }
                flags
                    .iter()
                    .map(|f| {
                        f.as_bool().ok_or_else(|| {
                            ModelError::BadConfig(format!(
                                "{key} holds a {}, not flags",
                                f.type_name()
                            ))
                        })
                    })
                    .collect()
            }
            other => {
                let p = match other {
                    None => default_period,
                    Some(v) => v.as_u64().ok_or_else(|| {
                        ModelError::BadConfig(format!("{key} is a {}, not a number", v.type_name()))
                    })? as usize,
                };
                if p > n_layer {
                    return Err(ModelError::BadConfig(format!(
                        "{key} = {p} is longer than the {n_layer} layers"
                    )));
                }
                Ok((0..n_layer).map(|i| p == 0 || i % p < p - 1).collect())
            }
        }
    }
}
