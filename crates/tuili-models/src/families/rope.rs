//! RoPE variants from metadata: plain, linear scaling and YaRN, as llama.cpp computes
//! them (`llama-context.cpp` for the factors, ggml's `rope_yarn` for the angles).

use tuili_backend::ops::{rope_inv_freq, RopeMode};

use super::Loader;
use crate::ops::RopeSpec;
use crate::ModelError;

/// YaRN's defaults in llama.cpp (`llama-hparams.h`).
const YARN_BETA_FAST: f32 = 32.0;
const YARN_BETA_SLOW: f32 = 1.0;

impl Loader<'_> {
    /// RoPE of base `base` over the head's first [`Self::rot_dims`] dimensions, scaled as
    /// the file's `rope.scaling.*` keys say when `scaled` (local sliding-window layers are
    /// not). Linear scaling divides every frequency by the factor; YaRN mixes the scaled
    /// and unscaled frequency per pair and multiplies cos and sin by its attention factor.
    pub(super) fn rope(
        &self,
        base: f32,
        mode: RopeMode,
        scaled: bool,
    ) -> Result<RopeSpec, ModelError> {
        let hd = self.rot_dims()?;
        let mut inv_freq = rope_inv_freq(hd, base);
        let mut mscale = 1.0;
        let ty = self
            .file
            .get(&format!("{}.rope.scaling.type", self.cfg.arch.name()))
            .and_then(|v| v.as_str())
            .unwrap_or("linear");
        match (scaled, ty, self.rope_factor()?) {
            (false, _, _) | (_, "none", _) | (_, _, None) => {}
            (true, "yarn", Some(factor)) => {
                let orig = self
                    .num("rope.scaling.original_context_length")
                    .unwrap_or(self.cfg.ctx_len as f32);
                let fast = self
                    .num("rope.scaling.yarn_beta_fast")
                    .unwrap_or(YARN_BETA_FAST);
                let slow = self
                    .num("rope.scaling.yarn_beta_slow")
                    .unwrap_or(YARN_BETA_SLOW);
                let [low, high] = yarn_corr_dims(hd, orig, base, fast, slow);
                let freq_scale = 1.0 / factor;
                for (i, f) in inv_freq.iter_mut().enumerate() {
                    // ggml's `rope_yarn_ramp(low, high, 2i)`: 1 below `low` (extrapolate),
                    // 0 above `high` (interpolate).
                    let y = (i as f32 - low) / (high - low).max(0.001);
                    let ramp = 1.0 - y.clamp(0.0, 1.0);
                    *f *= freq_scale * (1.0 - ramp) + ramp;
                }
                // llama.cpp's attention factor: get_mscale(factor, 1) (over
                // get_mscale(factor, log_mul) when the file gives one), times
                // `rope.scaling.attn_factor` (below); ggml's `1 + 0.1 ln(factor)` inside the rotation
                // cancels the division llama.cpp makes for it.
                let get_mscale = |m: f32| {
                    if factor <= 1.0 {
                        1.0
                    } else {
                        0.1 * m * factor.ln() + 1.0
                    }
                };
                mscale = match self.num("rope.scaling.yarn_log_multiplier") {
                    Some(log_mul) if log_mul != 0.0 => get_mscale(1.0) / get_mscale(log_mul),
                    _ => get_mscale(1.0),
                };
            }
            (true, "linear", Some(factor)) => inv_freq.iter_mut().for_each(|v| *v /= factor),
            (true, other, Some(_)) => {
                return Err(ModelError::Unimplemented(format!(
                    "{}.rope.scaling.type: RoPE scaling '{other}'",
                    self.cfg.arch.name()
                )))
            }
        }
        // llama.cpp multiplies every rotation by `rope.scaling.attn_factor` (phi3's
        // LongRoPE files carry one), whatever the scaling.
        mscale *= self.attn_factor()?;
        Ok(RopeSpec {
            inv_freq,
            mode,
            mscale,
        })
    }

    /// The dimensions of a head that RoPE turns: `{arch}.rope.dimension_count` (partial
    /// rotary embeddings: Phi-4-mini turns 96 of 128), else the whole head.
    pub(super) fn rot_dims(&self) -> Result<usize, ModelError> {
        let hd = self.cfg.head_dim;
        let key = format!("{}.rope.dimension_count", self.cfg.arch.name());
        match self.file.get(&key).map(|v| v.as_u64()) {
            None => Ok(hd),
            Some(Some(n)) if n >= 2 && n <= hd as u64 && n % 2 == 0 => Ok(n as usize),
            Some(Some(n)) => Err(ModelError::BadConfig(format!(
                "{key} = {n}; RoPE turns an even number of dimensions, 2..={hd} (the head size)"
            ))),
            Some(None) => Err(ModelError::BadConfig(format!("{key} is not a number"))),
        }
    }

    /// `rope` with each pair's frequency divided by its factor in the tensor `name`
    /// (`[rot_dims / 2]`), as llama.cpp's `rope_ext` does with `freq_factors`: Llama 3.x's
    /// `rope_freqs`, phi3's LongRoPE `rope_factors_long` and `rope_factors_short`.
    pub(super) fn with_factors(&self, rope: &RopeSpec, name: &str) -> Result<RopeSpec, ModelError> {
        let factors = self.vector_values(name, rope.inv_freq.len())?;
        if let Some((i, f)) = factors
            .iter()
            .enumerate()
            .find(|(_, f)| !(f.is_finite() && **f > 0.0))
        {
            return Err(ModelError::BadConfig(format!(
                "{name}[{i}] is {f}; RoPE frequency factors must be positive"
            )));
        }
        let mut out = rope.clone();
        for (f, k) in out.inv_freq.iter_mut().zip(&factors) {
            *f /= k;
        }
        Ok(out)
    }

    /// `rope.scaling.attn_factor`: a factor of cos and sin (1 when absent).
    fn attn_factor(&self) -> Result<f32, ModelError> {
        match self.num("rope.scaling.attn_factor") {
            None => Ok(1.0),
            Some(f) if f.is_finite() && f > 0.0 => Ok(f),
            Some(f) => Err(ModelError::BadConfig(format!(
                "{}.rope.scaling.attn_factor is {f}; it must be positive",
                self.cfg.arch.name()
            ))),
        }
    }

    /// The RoPE scaling factor (positions divided by it), if the file gives one other
    /// than 1.
    fn rope_factor(&self) -> Result<Option<f32>, ModelError> {
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

/// ggml's `ggml_rope_yarn_corr_dims`: the pair indices where YaRN's ramp starts and ends
/// (`head_dim`: the rotated dimensions).
fn yarn_corr_dims(head_dim: usize, orig_ctx: f32, base: f32, fast: f32, slow: f32) -> [f32; 2] {
    let n = head_dim as f32;
    let dim =
        |rot: f32| n * (orig_ctx / (rot * 2.0 * std::f32::consts::PI)).ln() / (2.0 * base.ln());
    [dim(fast).floor().max(0.0), dim(slow).ceil().min(n - 1.0)]
}
