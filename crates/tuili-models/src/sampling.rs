//! The sampling settings a model file recommends: llama.cpp's `general.sampling.*` keys
//! (which `tuili convert` writes from `generation_config.json`). llama.cpp makes them the
//! defaults of every setting its user did not give (`common_init_sampler_from_model`);
//! tuili does the same, through `SamplingParams::with_model_defaults` in the engine.
//!
//! Read: `temp`, `top_k`, `top_p`, `min_p`, `penalty_repeat`, `penalty_last_n`. Not read,
//! for want of those samplers: `sequence`, `xtc_*`, `mirostat*`.

use tuili_gguf::GgufFile;

use crate::ModelError;

/// What `general.sampling.*` recommends; `None` where the file says nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SamplingDefaults {
    /// `general.sampling.temp`, in 0..=2.
    pub temperature: Option<f32>,
    /// `general.sampling.top_k`; 0 (or any value below 1 in the file) is off.
    pub top_k: Option<usize>,
    /// `general.sampling.top_p`, in 0..=1.
    pub top_p: Option<f32>,
    /// `general.sampling.min_p`, in 0..=1.
    pub min_p: Option<f32>,
    /// `general.sampling.penalty_repeat`, in (0, 10].
    pub repeat_penalty: Option<f32>,
    /// `general.sampling.penalty_last_n`; -1 in the file (the whole context) is
    /// `usize::MAX`.
    pub penalty_last_n: Option<usize>,
}

/// A float key in `lo..=hi` (`open_lo`: above `lo`), or `None` when absent.
fn float(
    file: &GgufFile,
    key: &str,
    lo: f32,
    hi: f32,
    open_lo: bool,
) -> Result<Option<f32>, ModelError> {
    let Some(v) = file.get(key) else {
        return Ok(None);
    };
    let x = v.as_f32().ok_or_else(|| {
        ModelError::BadConfig(format!("{key} must be a number, got {}", v.type_name()))
    })?;
    // Written so that NaN fails too.
    let above = if open_lo { x > lo } else { x >= lo };
    if !(above && x <= hi) {
        let open = if open_lo { "(" } else { "[" };
        return Err(ModelError::BadConfig(format!(
            "{key} = {x} is outside {open}{lo}, {hi}]"
        )));
    }
    Ok(Some(x))
}

/// An integer key, or `None` when absent.
fn int(file: &GgufFile, key: &str) -> Result<Option<i64>, ModelError> {
    let Some(v) = file.get(key) else {
        return Ok(None);
    };
    v.as_i64().map(Some).ok_or_else(|| {
        ModelError::BadConfig(format!("{key} must be an integer, got {}", v.describe()))
    })
}

impl SamplingDefaults {
    /// Reads the `general.sampling.*` keys of `file`; a value of the wrong type or out of
    /// range is an error naming the key and the range.
    pub fn from_gguf(file: &GgufFile) -> Result<SamplingDefaults, ModelError> {
        let k = |name: &str| format!("general.sampling.{name}");
        let penalty_last_n = match int(file, &k("penalty_last_n"))? {
            None => None,
            Some(-1) => Some(usize::MAX),
            Some(n) if n >= 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            Some(n) => {
                return Err(ModelError::BadConfig(format!(
                    "{} = {n}: must be at least 0, or -1 for the whole context",
                    k("penalty_last_n")
                )))
            }
        };
        Ok(SamplingDefaults {
            temperature: float(file, &k("temp"), 0.0, 2.0, false)?,
            top_k: int(file, &k("top_k"))?.map(|n| usize::try_from(n).unwrap_or(0)),
            top_p: float(file, &k("top_p"), 0.0, 1.0, false)?,
            min_p: float(file, &k("min_p"), 0.0, 1.0, false)?,
            repeat_penalty: float(file, &k("penalty_repeat"), 0.0, 10.0, true)?,
            penalty_last_n,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tuili_gguf::{GgufWriter, Value};

    fn file(keys: &[(&str, Value)]) -> GgufFile {
        let mut w = GgufWriter::new();
        for (k, v) in keys {
            w.add(format!("general.sampling.{k}"), v.clone()).unwrap();
        }
        GgufFile::from_bytes(w.to_bytes()).unwrap()
    }

    #[test]
    fn keys_are_read_with_llama_cpp_meanings() {
        let d = SamplingDefaults::from_gguf(&file(&[
            ("temp", Value::F32(0.6)),
            ("top_k", Value::I32(20)),
            ("top_p", Value::F64(0.95)),
            ("min_p", Value::F32(0.0)),
            ("penalty_repeat", Value::F32(1.1)),
            ("penalty_last_n", Value::I32(-1)),
            ("mirostat", Value::I32(2)),
        ]))
        .unwrap();
        assert_eq!(
            d,
            SamplingDefaults {
                temperature: Some(0.6),
                top_k: Some(20),
                top_p: Some(0.95),
                min_p: Some(0.0),
                repeat_penalty: Some(1.1),
                penalty_last_n: Some(usize::MAX),
            }
        );
        assert_eq!(
            SamplingDefaults::from_gguf(&file(&[])).unwrap(),
            SamplingDefaults::default()
        );
        // A top_k below 1 is off, as in llama.cpp.
        let d = SamplingDefaults::from_gguf(&file(&[("top_k", Value::I32(-5))])).unwrap();
        assert_eq!(d.top_k, Some(0));
    }

    #[test]
    fn bad_values_name_the_key_and_the_range() {
        let err = |k: &str, v: Value| {
            SamplingDefaults::from_gguf(&file(&[(k, v)]))
                .unwrap_err()
                .to_string()
        };
        assert!(
            err("temp", Value::F32(5.0)).contains("general.sampling.temp = 5 is outside [0, 2]")
        );
        assert!(err("temp", Value::F32(f32::NAN)).contains("general.sampling.temp"));
        assert!(err("top_p", Value::F32(1.5)).contains("outside [0, 1]"));
        assert!(err("penalty_repeat", Value::F32(0.0)).contains("outside (0, 10]"));
        assert!(err("temp", Value::String("hot".into())).contains("must be a number"));
        assert!(err("top_k", Value::F32(2.5)).contains("general.sampling.top_k must be an integer"));
        assert!(err("penalty_last_n", Value::I32(-2)).contains("-1 for the whole context"));
    }
}
