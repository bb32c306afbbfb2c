//! Routing of a mixture of experts, shared by every backend: router logits to the chosen
//! experts and their weights, and the tokens grouped by expert.

use crate::spec::{Gating, MoeSpec};

/// Per token, its `top_k` experts and their weights, from the router logits
/// `[n_tokens, n_expert]`: `[n_tokens * top_k]` pairs (expert, weight), each token's in
/// order of decreasing probability (ties: the lower expert first), as llama.cpp's
/// `build_moe_ffn` picks them: gate probabilities (or the raw logits, whose chosen k get
/// a softmax of their own), top-k, weights divided by their sum (clamped below at 2^-14
/// as there) when asked, then scaled.
pub fn route(logits: &[f32], n_expert: usize, moe: &MoeSpec) -> Vec<(u32, f32)> {
    let k = moe.top_k;
    let mut out = Vec::with_capacity(logits.len() / n_expert * k);
    let mut probs = vec![0f32; n_expert];
    let mut order: Vec<u32> = Vec::with_capacity(n_expert);
    for row in logits.chunks_exact(n_expert) {
        match moe.gating {
            Gating::Softmax => {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f64;
                for (p, &l) in probs.iter_mut().zip(row) {
                    *p = (l - max).exp();
                    sum += *p as f64;
                }
                let inv = (1.0 / sum) as f32;
                probs.iter_mut().for_each(|p| *p *= inv);
            }
            Gating::Sigmoid => {
                for (p, &l) in probs.iter_mut().zip(row) {
                    *p = 1.0 / (1.0 + (-l).exp());
                }
            }
            Gating::SoftmaxWeight => probs.copy_from_slice(row),
        }
        order.clear();
        order.extend(0..n_expert as u32);
        // Stable: equal probabilities keep the lower expert first. NaN sorts last.
        order.sort_by(|&a, &b| {
            probs[b as usize]
                .partial_cmp(&probs[a as usize])
                .unwrap_or(std::cmp::Ordering::Less)
        });
        let chosen = &order[..k];
        if moe.gating == Gating::SoftmaxWeight {
            // A softmax over the chosen logits alone (in order, the largest first).
            let max = probs[chosen[0] as usize];
            let mut sum = 0f32;
            for &e in chosen {
                let p = &mut probs[e as usize];
                *p = (*p - max).exp();
                sum += *p;
            }
            for &e in chosen {
                probs[e as usize] /= sum;
            }
        }
        let sum: f32 = chosen.iter().map(|&e| probs[e as usize]).sum();
        let norm = if moe.norm_weights {
            1.0 / sum.max(6.103_515_6e-5)
        } else {
            1.0
        };
        for &e in chosen {
            out.push((e, probs[e as usize] * norm * moe.weight_scale));
        }
    }
    out
}

/// The tokens of each expert, in token order: for expert `e`,
/// `groups[starts[e]..starts[e + 1]]` holds (token, weight) pairs.
pub struct ExpertGroups {
    /// Offsets into `groups`: `[n_expert + 1]`.
    pub starts: Vec<usize>,
    /// (token, weight), grouped by expert.
    pub groups: Vec<(u32, f32)>,
}

/// Groups the routes of [`route`] (`top_k` per token) by expert.
pub fn group_by_expert(routes: &[(u32, f32)], top_k: usize, n_expert: usize) -> ExpertGroups {
    let mut starts = vec![0usize; n_expert + 1];
    for &(e, _) in routes {
        starts[e as usize + 1] += 1;
    }
    for e in 0..n_expert {
        starts[e + 1] += starts[e];
    }
    let mut fill = starts.clone();
    let mut groups = vec![(0u32, 0f32); routes.len()];
    for (i, &(e, w)) in routes.iter().enumerate() {
        groups[fill[e as usize]] = ((i / top_k) as u32, w);
        fill[e as usize] += 1;
    }
    ExpertGroups { starts, groups }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Glu, MatId};
    use crate::spec::FfnSpec;

    fn spec(top_k: usize, gating: Gating, norm_weights: bool) -> MoeSpec {
        let f = FfnSpec {
            gate: MatId(0),
            up: MatId(0),
            down: MatId(0),
            act: Glu::Silu,
        };
        MoeSpec {
            router: MatId(0),
            experts: vec![f; 4],
            top_k,
            gating,
            norm_weights,
            weight_scale: 1.0,
            router_bias: None,
            expert_bias: Vec::new(),
        }
    }

    #[test]
    fn softmax_top_k_normalised_and_grouped() {
        // Two tokens over 4 experts.
        let logits = [0.0, 2.0, 1.0, -1.0, 3.0, 3.0, 0.0, 5.0];
        let r = route(&logits, 4, &spec(2, Gating::Softmax, true));
        let (e, w): (Vec<u32>, Vec<f32>) = r.iter().copied().unzip();
        assert_eq!(e, [1, 2, 3, 0]);
        // Normalised over the two chosen: e^2 / (e^2 + e^1), e^5 / (e^5 + e^3).
        let want = [
            1.0 / (1.0 + (-1f32).exp()),
            (-1f32).exp() / (1.0 + (-1f32).exp()),
            1.0 / (1.0 + (-2f32).exp()),
            (-2f32).exp() / (1.0 + (-2f32).exp()),
        ];
        for (g, w) in w.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
        let g = group_by_expert(&r, 2, 4);
        assert_eq!(g.starts, [0, 1, 2, 3, 4]);
        assert_eq!(
            g.groups.iter().map(|p| p.0).collect::<Vec<_>>(),
            [1, 0, 0, 1]
        );
        // Ties keep the lower expert first; unnormalised weights are the probabilities.
        let r = route(&[1.0, 1.0, 1.0, 1.0], 4, &spec(2, Gating::Softmax, false));
        assert_eq!(r, [(0, 0.25), (1, 0.25)]);
        let r = route(&[0.0, 0.0, 0.0, 9.0], 4, &spec(1, Gating::Sigmoid, false));
        assert_eq!(r[0].0, 3);
        assert!((r[0].1 - 1.0 / (1.0 + (-9f32).exp())).abs() < 1e-7);
    }

    #[test]
    fn softmax_weight_is_a_softmax_over_the_chosen_logits() {
        // Top 2 of 4 by raw logit (3.0 and 1.0), then a softmax over those two alone.
        let r = route(
            &[1.0, -2.0, 3.0, 0.5],
            4,
            &spec(2, Gating::SoftmaxWeight, false),
        );
        let (e, w): (Vec<u32>, Vec<f32>) = r.iter().copied().unzip();
        assert_eq!(e, [2, 0]);
        let p = 1.0 / (1.0 + (-2f32).exp());
        assert!(
            (w[0] - p).abs() < 1e-7 && (w[1] - (1.0 - p)).abs() < 1e-7,
            "{w:?}"
        );
    }
}
