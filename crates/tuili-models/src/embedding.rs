//! Sentence embeddings from a causal model's final hidden states, pooled as llama.cpp's
//! `--embeddings` pools them, then scaled to unit length; and the pooling a model file
//! asks for (`{arch}.pooling_type`).

use tuili_gguf::GgufFile;

use crate::ModelError;

/// How the per-token hidden states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over all tokens (llama.cpp's `--pooling mean`).
    Mean,
    /// The last token's state (llama.cpp's `--pooling last`), what a causal model has seen
    /// the whole text by.
    Last,
    /// The first token's state (llama.cpp's `--pooling cls`), as BERT-style encoders
    /// are trained to be read.
    Cls,
}

/// The pooling a model is made for: llama.cpp's `llama_pooling_type`, as its converter
/// writes it to `{arch}.pooling_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingType {
    /// One vector per token (0): llama.cpp's default when the key is absent.
    None,
    /// 1.
    Mean,
    /// 2.
    Cls,
    /// 3.
    Last,
    /// A reranker's score from a classification head (4); no sentence vector.
    Rank,
}

impl PoolingType {
    /// Every type, in llama.cpp's order (its value is the position).
    pub const ALL: [PoolingType; 5] = [
        PoolingType::None,
        PoolingType::Mean,
        PoolingType::Cls,
        PoolingType::Last,
        PoolingType::Rank,
    ];

    /// llama.cpp's name (`--pooling NAME`).
    pub fn name(self) -> &'static str {
        match self {
            PoolingType::None => "none",
            PoolingType::Mean => "mean",
            PoolingType::Cls => "cls",
            PoolingType::Last => "last",
            PoolingType::Rank => "rank",
        }
    }

    /// The type called `name`.
    pub fn from_name(name: &str) -> Option<PoolingType> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// How to pool one sentence vector, where this type makes one.
    pub fn pooling(self) -> Option<Pooling> {
        match self {
            PoolingType::Mean => Some(Pooling::Mean),
            PoolingType::Cls => Some(Pooling::Cls),
            PoolingType::Last => Some(Pooling::Last),
            PoolingType::None | PoolingType::Rank => None,
        }
    }

    /// `{arch}.pooling_type` of `file`: `None` when absent or -1 (llama.cpp's
    /// "unspecified"); a value outside -1..=4 is an error naming the key. Read for every
    /// architecture (llama.cpp reads it for the families that ship embedding models).
    pub fn from_gguf(file: &GgufFile) -> Result<Option<PoolingType>, ModelError> {
        let arch = file.get_str("general.architecture")?;
        let key = format!("{arch}.pooling_type");
        let Some(v) = file.get(&key) else {
            return Ok(None);
        };
        match v.as_i64() {
            Some(-1) => Ok(None),
            Some(n) if (0..Self::ALL.len() as i64).contains(&n) => Ok(Some(Self::ALL[n as usize])),
            _ => Err(ModelError::BadConfig(format!(
                "{key} = {v:?} is not a pooling type (-1 unspecified, 0 none, 1 mean, 2 cls, 3 last, 4 rank)"
            ))),
        }
    }
}

/// `hidden` (`[tokens, width]`, from `Model::hidden_states`) pooled and normalized to unit
/// Euclidean length (a zero vector stays zero).
pub fn pool(hidden: &[f32], width: usize, pooling: Pooling) -> Vec<f32> {
    let rows = hidden.len() / width.max(1);
    let mut v = vec![0f64; width];
    match pooling {
        Pooling::Mean => {
            for row in hidden.chunks_exact(width) {
                v.iter_mut().zip(row).for_each(|(a, &x)| *a += f64::from(x));
            }
        }
        Pooling::Last | Pooling::Cls => {
            if rows > 0 {
                let row = if pooling == Pooling::Last {
                    rows - 1
                } else {
                    0
                };
                let state = &hidden[row * width..(row + 1) * width];
                v.iter_mut()
                    .zip(state)
                    .for_each(|(a, &x)| *a = f64::from(x));
            }
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    v.iter().map(|x| (x * scale) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_vectors_have_unit_length() {
        let h = [1.0, 0.0, 3.0, 4.0];
        assert_eq!(pool(&h, 2, Pooling::Last), vec![0.6, 0.8]);
        assert_eq!(pool(&h, 2, Pooling::Cls), vec![1.0, 0.0]);
        let m = pool(&h, 2, Pooling::Mean);
        // The mean of (1, 0) and (3, 4) is (2, 2).
        assert!(m
            .iter()
            .all(|x| (x - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6));
        assert_eq!(pool(&[0.0, 0.0], 2, Pooling::Mean), vec![0.0, 0.0]);
        assert_eq!(pool(&[], 2, Pooling::Last), vec![0.0, 0.0]);
    }
}
