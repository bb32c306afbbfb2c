//! Sentence embeddings from a causal model's final hidden states, pooled as llama.cpp's
//! `--embeddings` pools them, then scaled to unit length.

/// How the per-token hidden states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over all tokens (llama.cpp's `--pooling mean`).
    Mean,
    /// The last token's state (llama.cpp's `--pooling last`), what a causal model has seen
    /// the whole text by.
    Last,
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
        Pooling::Last => {
            if rows > 0 {
                let last = &hidden[(rows - 1) * width..rows * width];
                v.iter_mut().zip(last).for_each(|(a, &x)| *a = f64::from(x));
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
        let m = pool(&h, 2, Pooling::Mean);
        // The mean of (1, 0) and (3, 4) is (2, 2).
        assert!(m
            .iter()
            .all(|x| (x - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6));
        assert_eq!(pool(&[0.0, 0.0], 2, Pooling::Mean), vec![0.0, 0.0]);
        assert_eq!(pool(&[], 2, Pooling::Last), vec![0.0, 0.0]);
    }
}
