//! One loader per family: each reads its tensors and metadata into a [`ModelSpec`]; the
//! forward pass and the backends are shared. Adding a family means a file here, a variant
//! of [`Arch`] and a line in [`load`].

mod gemma3;
mod llama;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

use tuili_backend::matmul::{ByteSource, Weight};
use tuili_backend::ops::{rope_inv_freq, RopeMode};
use tuili_gguf::GgufFile;

use crate::ops::{MatId, RopeSpec, VecId};
use crate::spec::{ModelSpec, Weights};
use crate::{unimplemented, Arch, Config, ModelError};

/// Reads `file`'s weights into the forward pass of its family, refusing tensors and
/// metadata that change the math and that the family does not implement.
pub(crate) fn load(file: &Arc<GgufFile>, cfg: &Config) -> Result<(ModelSpec, Weights), ModelError> {
    let ld = Loader {
        file,
        cfg,
        used: RefCell::new(BTreeSet::new()),
        weights: RefCell::new(Weights::default()),
    };
    let (spec, handled) = match cfg.arch {
        Arch::Llama | Arch::Qwen2 | Arch::Qwen3 => (llama::load(&ld)?, llama::HANDLED_KEYS),
        Arch::Gemma3 => (gemma3::load(&ld)?, gemma3::HANDLED_KEYS),
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

    /// A vector of `n` values, kept as a weight of the model.
    fn vector(&self, name: &str, n: usize) -> Result<VecId, ModelError> {
        let v = self.vector_values(name, n)?;
        Ok(self.weights.borrow_mut().add_vec(v))
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

    /// A metadata number of this architecture (`{arch}.{key}`), if present.
    fn num(&self, key: &str) -> Option<f32> {
        self.file
            .get(&format!("{}.{key}", self.cfg.arch.name()))
            .and_then(|v| v.as_f32())
    }

    /// RoPE of base `base` over the whole head, its frequencies divided by the linear
    /// scaling factor of the file (`rope.scaling.factor`, llama.cpp's default scaling
    /// type) when `scaled`.
    fn rope(&self, base: f32, mode: RopeMode, scaled: bool) -> Result<RopeSpec, ModelError> {
        let mut inv_freq = rope_inv_freq(self.cfg.head_dim, base);
        if scaled {
            if let Some(f) = self.linear_rope_factor()? {
                inv_freq.iter_mut().for_each(|v| *v /= f);
            }
        }
        Ok(RopeSpec { inv_freq, mode })
    }

    /// The factor of linear RoPE scaling (positions divided by it), if the file asks for
    /// one. Other scaling types are refused by `unimplemented`.
    fn linear_rope_factor(&self) -> Result<Option<f32>, ModelError> {
        let f = self
            .num("rope.scaling.factor")
            .or_else(|| self.num("rope.scale_linear"));
        match f {
            None => Ok(None),
            Some(f) if f == 0.0 || f == 1.0 => Ok(None),
            Some(f) if f.is_finite() && f > 0.0 => Ok(Some(f)),
            Some(f) => Err(ModelError::BadConfig(format!(
                "{}.rope.scaling.factor is {f}; it must be positive",
                self.cfg.arch.name()
            ))),
        }
    }
}
