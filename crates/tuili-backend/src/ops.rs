//! Element-wise and row-wise ops of a transformer layer, on the CPU.
//!
//! Plain Rust, except `dot` and `axpy` (attention's inner loops), which go to the SIMD
//! kernels of [`crate::kernels`].

use crate::kernels;

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeMode {
    /// ggml's normal mode: rotate adjacent pairs `(2i, 2i+1)` (llama GGUF files, whose Q/K
    /// weights were permuted at conversion).
    Normal,
    /// NEOX mode: rotate `(i, i + head_dim/2)` (qwen2, gemma).
    Neox,
}

/// RMSNorm of one row: `out[i] = x[i] / sqrt(mean(x²) + eps) * weight[i]`.
///
/// `x`, `weight`, `out`: `[dim]`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    debug_assert!(x.len() == weight.len() && x.len() == out.len());
    let sum_sq: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let scale = (1.0 / (sum_sq / x.len() as f64 + eps as f64).sqrt()) as f32;
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

/// [`rms_norm`] of `x` written over itself (the same operations, hence the same bits).
pub fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    debug_assert_eq!(x.len(), weight.len());
    let sum_sq: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let scale = (1.0 / (sum_sq / x.len() as f64 + eps as f64).sqrt()) as f32;
    for (v, &w) in x.iter_mut().zip(weight) {
        *v = *v * scale * w;
    }
}

/// How a norm scales a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// RMSNorm: [`rms_norm`].
    Rms,
    /// LayerNorm: [`layer_norm_in_place`] (the mean removed first).
    Layer,
}

/// LayerNorm of one row in place: `x[i] = (x[i] - mean) / sqrt(var + eps) * weight[i]`, as
/// ggml's `norm` computes it (sums in f64, the mean and the scale in f32), before any bias.
///
/// `x`, `weight`: `[dim]`.
pub fn layer_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    debug_assert_eq!(x.len(), weight.len());
    let n = x.len() as f64;
    let mean = (x.iter().map(|&v| v as f64).sum::<f64>() / n) as f32;
    let mut sum_sq = 0f64;
    for v in x.iter_mut() {
        *v -= mean;
        sum_sq += (*v * *v) as f64;
    }
    let scale = 1.0 / ((sum_sq / n) as f32 + eps).sqrt();
    for (v, &w) in x.iter_mut().zip(weight) {
        *v = *v * scale * w;
    }
}

/// A norm of kind `kind` of the row `x` written over itself, then `bias` added (LayerNorm's;
/// `None`: none). The row's width is the weight's.
pub fn norm_in_place(
    kind: NormKind,
    x: &mut [f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    eps: f32,
) {
    match kind {
        NormKind::Rms => rms_norm_in_place(x, weight, eps),
        NormKind::Layer => layer_norm_in_place(x, weight, eps),
    }
    if let Some(b) = bias {
        add(x, b);
    }
}

/// [`norm_in_place`] of `x` written to `out` (the same bits).
pub fn norm_into(
    kind: NormKind,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    eps: f32,
    out: &mut [f32],
) {
    match kind {
        NormKind::Rms => rms_norm(x, weight, eps, out),
        NormKind::Layer => {
            out.copy_from_slice(x);
            layer_norm_in_place(out, weight, eps);
        }
    }
    if let Some(b) = bias {
        add(out, b);
    }
}

/// Inverse frequencies of RoPE over the first `rot_dims` dimensions of a head (all of
/// them, or fewer for partial rotary embeddings): `[rot_dims / 2]`,
/// `base^(-2i/rot_dims)`.
pub fn rope_inv_freq(rot_dims: usize, base: f32) -> Vec<f32> {
    (0..rot_dims / 2)
        .map(|i| (base as f64).powf(-2.0 * i as f64 / rot_dims as f64) as f32)
        .collect()
}

/// Rotates every head of one token's Q or K in place.
///
/// `x`: `[n_heads, head_dim]`; `inv_freq`: `[rot_dims / 2]` (see [`rope_rotate`]); `pos`:
/// the token's position.
pub fn rope(x: &mut [f32], head_dim: usize, inv_freq: &[f32], pos: usize, mode: RopeMode) {
    let mut cos_sin = [(0f32, 0f32); 256];
    let cs = &mut cos_sin[..inv_freq.len()];
    rope_angles(inv_freq, pos, cs);
    rope_rotate(x, head_dim, cs, mode);
}

/// `(cos, sin)` of each of a position's RoPE angles: `out`: `[head_dim / 2]`. The same for
/// every head and layer, so a forward pass computes them once per token.
pub fn rope_angles(inv_freq: &[f32], pos: usize, out: &mut [(f32, f32)]) {
    debug_assert_eq!(inv_freq.len(), out.len());
    for (c, &f) in out.iter_mut().zip(inv_freq) {
        // Angles in f64: positions reach 1e5 and f32 would lose the low bits.
        let theta = pos as f64 * f as f64;
        *c = (theta.cos() as f32, theta.sin() as f32);
    }
}

/// Rotates every head of `x` (`[n_heads, head_dim]`) by the angles of [`rope_angles`],
/// `cos_sin`: `[rot_dims / 2]`. Only the first `rot_dims` dimensions of a head turn (as
/// ggml's partial rotary embeddings: Phi-4-mini turns 3/4 of each head); NEOX mode pairs
/// `i` with `i + rot_dims / 2`.
pub fn rope_rotate(x: &mut [f32], head_dim: usize, cos_sin: &[(f32, f32)], mode: RopeMode) {
    let half = cos_sin.len();
    debug_assert!(2 * half <= head_dim);
    debug_assert_eq!(x.len() % head_dim, 0);
    for head in x.chunks_exact_mut(head_dim) {
        for (i, &(cos, sin)) in cos_sin.iter().enumerate() {
            let (a, b) = match mode {
                RopeMode::Normal => (2 * i, 2 * i + 1),
                RopeMode::Neox => (i, i + half),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * cos - x1 * sin;
            head[b] = x0 * sin + x1 * cos;
        }
    }
}

/// SwiGLU gate: `gate[i] = silu(gate[i]) * up[i]`. Both `[ffn_dim]`.
///
/// `silu(g) = g · σ(g)` with `σ(g) = 1 / (1 + e^-g)` for `g >= 0` and `e^g / (1 + e^g)`
/// below, so that the exponential's argument `-|g|` is never positive: the branch-free
/// `exp_nonpositive` serves both, and the loop vectorizes (a library `exp` per element
/// cost ~4 % of a prefill).
#[inline(always)]
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    debug_assert_eq!(gate.len(), up.len());
    for (g, &u) in gate.iter_mut().zip(up) {
        let e = exp_nonpositive(-g.abs());
        let num = if *g >= 0.0 { 1.0 } else { e };
        *g = *g * num / (1.0 + e) * u;
    }
}

/// The activation of a gated feed-forward block: `gate = act(gate) · up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Glu {
    /// SwiGLU: [`silu_mul`].
    Silu,
    /// GeGLU with the tanh form of GELU (Gemma): [`gelu_tanh_mul`].
    GeluTanh,
    /// gpt-oss's clamped SwiGLU: [`swiglu_oai_mul`].
    SwigluOai,
}

impl Glu {
    /// `gate[i] = act(gate[i]) · up[i]`, with the kernels of this CPU (the bits of
    /// [`Glu::apply_plain`]).
    pub fn apply(self, gate: &mut [f32], up: &[f32]) {
        kernels::select().glu(self, gate, up)
    }

    /// [`Glu::apply`]'s specification. `#[inline(always)]`, as the functions it calls, so
    /// that each kernel table compiles it with its instruction set.
    #[inline(always)]
    pub fn apply_plain(self, gate: &mut [f32], up: &[f32]) {
        match self {
            Glu::Silu => silu_mul(gate, up),
            Glu::GeluTanh => gelu_tanh_mul(gate, up),
            Glu::SwigluOai => swiglu_oai_mul(gate, up),
        }
    }
}

/// gpt-oss's SwiGLU constants (llama.cpp's `LLM_FFN_SWIGLU_OAI_MOE` fixes them too).
pub const SWIGLU_OAI_ALPHA: f32 = 1.702;
/// The clamp of gate (above) and up (both sides).
pub const SWIGLU_OAI_LIMIT: f32 = 7.0;

/// gpt-oss's gate: `x = min(gate, 7)`, `y = clamp(up, -7, 7)`,
/// `gate = x · sigmoid(1.702 x) · (y + 1)`, as ggml's `swiglu_oai`.
#[inline(always)]
pub fn swiglu_oai_mul(gate: &mut [f32], up: &[f32]) {
    debug_assert_eq!(gate.len(), up.len());
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = g.min(SWIGLU_OAI_LIMIT);
        let y = u.clamp(-SWIGLU_OAI_LIMIT, SWIGLU_OAI_LIMIT);
        *g = x / (1.0 + (SWIGLU_OAI_ALPHA * -x).exp()) * (y + 1.0);
    }
}

/// GELU's tanh form `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`, in f32 (llama.cpp looks
/// it up in an f16 table, which rounds it to about 3 decimal digits).
///
/// Computed as `x σ(z)` with `z = 2√(2/π) (x + 0.044715 x³)`, since `(1 + tanh u) / 2 =
/// σ(2u)`, and `σ` from `e^-|z|` as in [`silu_mul`]: branch-free, so the loops vectorize (a
/// library `tanh` per element cost a fifth of a Gemma prefill).
#[inline(always)]
fn gelu_tanh_of(x: f32) -> f32 {
    const TWO_SQRT_2_OVER_PI: f32 = 1.595_769_2;
    let z = TWO_SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x);
    let e = exp_nonpositive(-z.abs());
    let num = if z >= 0.0 { 1.0 } else { e };
    x * num / (1.0 + e)
}

/// GeGLU gate: `gate[i] = gelu(gate[i]) * up[i]`, GELU's tanh form ([`gelu_tanh`]).
#[inline(always)]
pub fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
    debug_assert_eq!(gate.len(), up.len());
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = gelu_tanh_of(*g) * u;
    }
}

/// GELU in place, tanh form (the activation of an ungated feed-forward block:
/// StarCoder2, Phi-2).
pub fn gelu_tanh(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = gelu_tanh_of(*v));
}

/// Residual add: `x[i] += y[i]`.
pub fn add(x: &mut [f32], y: &[f32]) {
    debug_assert_eq!(x.len(), y.len());
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Dot product of two f32 rows (attention scores), with the SIMD kernels of this CPU.
///
/// The summation order is fixed (element `i` in accumulator `(i / 8) % 4`, lane
/// `i % 8`, fused multiply-adds), so the result is the same bits on every instruction
/// set and does not depend on what else is in the batch.
///
/// # Panics
/// If the lengths differ.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    kernels::select().dot(a, b)
}

/// `y[i] += a * x[i]` (one fused multiply-add per element).
///
/// # Panics
/// If the lengths differ.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    kernels::select().axpy(a, x, y)
}

/// Softmax in place over the whole slice (max-subtracted for stability).
///
/// Plain additions and multiplications only (no fused multiply-add, no library `exp`),
/// so that every CPU gives the same bits and the loops vectorize: see [`exp_nonpositive`].
/// The sum is kept in 8 interleaved partial sums, added as `kernels::reduce8`.
pub fn softmax(x: &mut [f32]) {
    softmax_scaled(x, 1.0)
}

/// [`softmax`] of `scale · x`: each value multiplied by `scale` first (attention's
/// `1 / √head_dim`). `#[inline(always)]` so that the kernel tables compile it with their
/// instruction sets (`Kernels::softmax`); the operations, hence the bits, are the same.
#[inline(always)]
pub fn softmax_scaled(x: &mut [f32], scale: f32) {
    if scale != 1.0 {
        for v in x.iter_mut() {
            *v *= scale;
        }
    }
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut part = [0f32; 8];
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        for (v, s) in c.iter_mut().zip(part.iter_mut()) {
            *v = exp_nonpositive(*v - max);
            *s += *v;
        }
    }
    for (v, s) in chunks.into_remainder().iter_mut().zip(part.iter_mut()) {
        *v = exp_nonpositive(*v - max);
        *s += *v;
    }
    let sum = crate::kernels::reduce8(&part);
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// The constants of [`exp_nonpositive`], shared with its SIMD copies (which must do the
/// same operations with the same numbers).
pub(crate) mod exp_consts {
    pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;
    /// ln 2 split so that n * LN2_HI is exact for |n| < 2^9.
    pub(crate) const LN2_HI: f32 = 0.693_359_4;
    pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
    /// Adding 1.5 * 2^23 rounds to the nearest integer (ties to even).
    pub(crate) const ROUND: f32 = 12_582_912.0;
    /// Below this `e^x` < 2^-126: the result is 0.
    pub(crate) const FLOOR: f32 = -87.3;
    /// Cephes' polynomial for `(e^r - 1 - r) / r^2`, highest degree first.
    pub(crate) const POLY: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
}

/// `e^x` for `x <= 0` (NaN stays NaN), within 2 ulp of the exact value for
/// `x >= -87.3`, 0 below (where `e^x` < 2^-126 is negligible next to the softmax's
/// largest term, 1). Cody-Waite reduction `x = n ln2 + r`, `|r| <= ln2 / 2`, and
/// Cephes' degree-6 polynomial for `e^r`.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    use exp_consts::*;
    // Branch-free (selects only), so that loops over slices vectorize.
    let below = x < FLOOR;
    let xc = if below { FLOOR } else { x };
    let k = xc * LOG2E + ROUND;
    let n = k - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = ((((POLY[0] * r + POLY[1]) * r + POLY[2]) * r + POLY[3]) * r + POLY[4]) * r + POLY[5];
    let e = p * (r * r) + r + 1.0;
    let ni = k.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(ni.wrapping_add(127) << 23);
    // `x * 0` is ±0 for finite x and NaN for NaN, which it carries into the result.
    let y = e * scale + x * 0.0;
    if below {
        0.0
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_unit_rms() {
        let x = [3.0f32, -4.0, 0.0, 5.0];
        let w = [1.0f32; 4];
        let mut out = [0f32; 4];
        rms_norm(&x, &w, 0.0, &mut out);
        let rms: f32 = (out.iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-6);
        assert!((out[0] / out[1] - x[0] / x[1]).abs() < 1e-6);
    }

    #[test]
    fn rope_modes_pair_different_dims_and_keep_norm() {
        let head_dim = 8;
        let inv = rope_inv_freq(head_dim, 10000.0);
        let orig: Vec<f32> = (0..16).map(|i| i as f32 * 0.37 - 2.0).collect();
        for mode in [RopeMode::Normal, RopeMode::Neox] {
            let mut x = orig.clone();
            rope(&mut x, head_dim, &inv, 7, mode);
            for (h0, h1) in orig.chunks(head_dim).zip(x.chunks(head_dim)) {
                let n0: f32 = h0.iter().map(|v| v * v).sum();
                let n1: f32 = h1.iter().map(|v| v * v).sum();
                assert!((n0 - n1).abs() < 1e-4);
            }
            // Position 0 is the identity.
            let mut y = orig.clone();
            rope(&mut y, head_dim, &inv, 0, mode);
            assert_eq!(y, orig);
        }
        // Pair (0,1) in normal mode: first dimension rotates by pos * 1.0.
        let mut x = vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        rope(&mut x, head_dim, &inv, 1, RopeMode::Normal);
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[1] - 1f32.sin()).abs() < 1e-6);
        let mut x = vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        rope(&mut x, head_dim, &inv, 1, RopeMode::Neox);
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[4] - 1f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn layer_norm_centres_and_scales_then_adds_the_bias() {
        let x = [3.0f32, -4.0, 0.0, 5.0, 1.0];
        let (w, b) = ([2.0f32; 5], [0.5f32; 5]);
        let mut y = x;
        norm_in_place(NormKind::Layer, &mut y, &w, Some(&b), 1e-5);
        let mean = x.iter().sum::<f32>() as f64 / 5.0;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 5.0;
        for (yi, &xi) in y.iter().zip(&x) {
            let want = (xi as f64 - mean) / (var + 1e-5).sqrt() * 2.0 + 0.5;
            assert!((*yi as f64 - want).abs() < 1e-5, "{yi} {want}");
        }
        let mut out = [0f32; 5];
        norm_into(NormKind::Layer, &x, &w, Some(&b), 1e-5, &mut out);
        assert_eq!(out, y);
        // RMS without a bias is rms_norm itself.
        let (mut a, mut c) = (x, [0f32; 5]);
        norm_in_place(NormKind::Rms, &mut a, &w, None, 1e-5);
        rms_norm(&x, &w, 1e-5, &mut c);
        assert_eq!(a, c);
    }

    #[test]
    fn gelu_is_the_gated_form_with_a_unit_gate() {
        let x: Vec<f32> = (0..40).map(|i| i as f32 * 0.3 - 6.0).collect();
        let (mut a, mut b) = (x.clone(), x.clone());
        gelu_tanh(&mut a);
        gelu_tanh_mul(&mut b, &[1.0; 40]);
        assert_eq!(a, b);
        assert!(a[0].abs() < 1e-6 && (a[39] - x[39]).abs() < 1e-4);
    }

    #[test]
    fn partial_rope_turns_the_first_dims_only() {
        // Head of 8, rotary over 4 (Phi-4-mini turns 96 of 128): pairs (0,2) and (1,3) in
        // NEOX mode, (0,1) and (2,3) in normal mode; dimensions 4..8 stay as they are.
        let (head_dim, rot) = (8, 4);
        let inv = rope_inv_freq(rot, 10000.0);
        assert_eq!(inv, [1.0, 0.01]);
        let orig: Vec<f32> = (0..16).map(|i| i as f32 * 0.37 - 2.0).collect();
        for (mode, pairs) in [
            (RopeMode::Neox, [(0, 2), (1, 3)]),
            (RopeMode::Normal, [(0, 1), (2, 3)]),
        ] {
            let mut x = orig.clone();
            rope(&mut x, head_dim, &inv, 5, mode);
            for (h0, h1) in orig.chunks(head_dim).zip(x.chunks(head_dim)) {
                assert_eq!(h0[rot..], h1[rot..]);
                for (i, &(a, b)) in pairs.iter().enumerate() {
                    let (c, s) = ((5.0 * inv[i] as f64).cos(), (5.0 * inv[i] as f64).sin());
                    let want_a = h0[a] as f64 * c - h0[b] as f64 * s;
                    let want_b = h0[a] as f64 * s + h0[b] as f64 * c;
                    assert!((h1[a] as f64 - want_a).abs() < 1e-5, "{mode:?} pair {i}");
                    assert!((h1[b] as f64 - want_b).abs() < 1e-5, "{mode:?} pair {i}");
                }
            }
        }
    }

    #[test]
    fn dot_matches_f64_sum_for_all_lengths() {
        for n in [0usize, 1, 7, 8, 9, 64, 67] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 1.3).cos()).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - want).abs() < 1e-5, "n={n}");
        }
        let mut y = vec![1.0f32; 3];
        axpy(2.0, &[1.0, 2.0, 3.0], &mut y);
        assert_eq!(y, [3.0, 5.0, 7.0]);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = [1.0f32, 2.0, 3.0, 1000.0];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[3] > 0.99);
    }

    #[test]
    fn silu_mul_matches_formula() {
        let mut g = [0.0f32, 1.0, -2.0];
        silu_mul(&mut g, &[2.0, 3.0, 1.0]);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 3.0 / (1.0 + (-1f32).exp())).abs() < 1e-6);
        assert!((g[2] - (-2.0 / (1.0 + 2f32.exp()))).abs() < 1e-6);
        // Against f64 over both signs and far tails, and the non-finite cases.
        let xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.05).collect();
        let mut got = xs.clone();
        silu_mul(&mut got, &vec![1.0; xs.len()]);
        for (&x, &y) in xs.iter().zip(&got) {
            let want = x as f64 / (1.0 + (-(x as f64)).exp());
            // Below e^-87.3 the exponential is flushed to 0 (outputs under 1e-35).
            assert!(
                (y as f64 - want).abs() <= 1e-6 * want.abs() + 1e-35,
                "{x}: {y} vs {want}"
            );
        }
        let mut odd = [f32::NAN, f32::INFINITY, -100.0];
        silu_mul(&mut odd, &[1.0; 3]);
        assert!(
            odd[0].is_nan()
                && odd[1] == f32::INFINITY
                && odd[2] == 0.0
                && odd[2].is_sign_negative()
        );
    }

    /// GELU's tanh form against the formula in f64, and the in-place norm against the
    /// out-of-place one, bit for bit.
    #[test]
    fn gelu_tanh_and_in_place_norm() {
        let xs: Vec<f32> = (-400..=400).map(|i| i as f32 * 0.05).collect();
        let mut got = xs.clone();
        gelu_tanh_mul(&mut got, &vec![2.0; xs.len()]);
        for (&x, &y) in xs.iter().zip(&got) {
            let x = x as f64;
            let want = x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh());
            assert!(
                (y as f64 - want).abs() <= 1e-6 * want.abs() + 1e-6,
                "{x}: {y} vs {want}"
            );
        }
        let w: Vec<f32> = (0..xs.len()).map(|i| 0.5 + i as f32 * 1e-3).collect();
        let mut out = vec![0f32; xs.len()];
        rms_norm(&xs, &w, 1e-6, &mut out);
        let mut inplace = xs.clone();
        rms_norm_in_place(&mut inplace, &w, 1e-6);
        assert_eq!(out, inplace);
    }

    /// The polynomial exp stays within 2 ulp of the f64 exponential over its range, is
    /// exactly 1 at 0, and goes to 0 (not NaN) far below.
    #[test]
    fn exp_nonpositive_is_within_two_ulp() {
        let mut worst = 0i64;
        let mut x = 0f32;
        while x > -87.3 {
            let want = (x as f64).exp() as f32;
            let got = exp_nonpositive(x);
            let ulp = (got.to_bits() as i64 - want.to_bits() as i64).abs();
            worst = worst.max(ulp);
            x -= 0.000_731;
        }
        assert!(worst <= 2, "worst error {worst} ulp");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-100.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert!(exp_nonpositive(f32::NAN).is_nan());
    }

    #[test]
    fn softmax_sums_to_one_and_orders_like_its_inputs() {
        let mut x: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 23) as f32 * 0.37 - 4.0)
            .collect();
        let orig = x.clone();
        softmax(&mut x);
        let sum: f64 = x.iter().map(|&v| v as f64).sum();
        assert!((sum - 1.0).abs() < 1e-6, "{sum}");
        let m = orig.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let z: f64 = orig.iter().map(|&v| ((v - m) as f64).exp()).sum();
        for (a, b) in x.iter().zip(&orig) {
            let want = ((b - m) as f64).exp() / z;
            assert!(
                (*a as f64 - want).abs() <= 1e-6 * want + 1e-12,
                "{a} vs {want}"
            );
        }
    }

    #[test]
    fn swiglu_oai_clamps_gate_above_and_up_both_ways() {
        let mut g = [1.0, 9.0, -3.0, 2.0];
        let u = [0.5, 0.0, 1.0, -9.0];
        swiglu_oai_mul(&mut g, &u);
        let f = |x: f32, y: f32| x / (1.0 + (-1.702 * x).exp()) * (y + 1.0);
        // Gate 9 acts as 7; up -9 as -7; a negative gate is not clamped below.
        let want = [f(1.0, 0.5), f(7.0, 0.0), f(-3.0, 1.0), f(2.0, -7.0)];
        for (a, b) in g.iter().zip(want) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}
