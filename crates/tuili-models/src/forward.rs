//! The one forward pass: a [`ModelSpec`] run as a sequence of [`Ops`], on any device.

use crate::batch::Batch;
use crate::ops::{Buf, Ops};
use crate::spec::{Ffn, LayerSpec, ModelSpec};

/// Runs `batch` through the model described by `spec` on the device behind `ops` (a step
/// made for this batch). Returns the logits of the rows that want them, `[m, vocab]`.
///
/// Per layer: norm (or none) → Q/K/V (+ bias, QK-norm, RoPE) → KV write → attention →
/// output projection (+ post-norm, residual scale) → residual add fused with the
/// feed-forward norm → gated feed-forward (+ post-norm, residual scale). A block's output
/// stays in `Xn` and is added to the residual `X` by the next norm, which fuses the two.
pub fn forward<O: Ops>(spec: &ModelSpec, batch: &Batch, ops: &mut O) -> Result<Vec<f32>, O::Error> {
    if !final_hidden(spec, batch, ops)? {
        return Ok(Vec::new());
    }
    let mut logits = ops.logits(Buf::Out, spec.output)?;
    if spec.logit_scale != 1.0 {
        logits.iter_mut().for_each(|v| *v *= spec.logit_scale);
    }
    if let Some(cap) = spec.final_softcap {
        logits.iter_mut().for_each(|v| *v = cap * (*v / cap).tanh());
    }
    Ok(logits)
}

/// Runs `batch` through the layers and the final norm: `Buf::Out` then holds the final
/// hidden state of the rows that want logits (what llama.cpp's embeddings pool). `false`
/// when no row wants one.
pub fn final_hidden<O: Ops>(
    spec: &ModelSpec,
    batch: &Batch,
    ops: &mut O,
) -> Result<bool, O::Error> {
    if batch.is_empty() {
        return Ok(false);
    }
    let eps = spec.eps;
    ops.embed(spec.embed, spec.embed_scale, Buf::X)?;
    // Whether Xn holds a block output not yet added to X.
    let mut pending = false;
    for (li, l) in spec.layers.iter().enumerate() {
        ops.layer(&l.widths)?;
        if l.qkv.is_some() || l.wo.is_some() {
            attention_block(l, li, pending, eps, ops)?;
            pending = true;
        }
        let ffn_in = match l.ffn_norm {
            Some(w) => {
                ops.norm(Buf::X, pending.then_some(Buf::Xn), &w, eps, Buf::Xn)?;
                Buf::Xn
            }
            None => {
                if pending {
                    ops.add(Buf::X, Buf::Xn)?;
                }
                Buf::X
            }
        };
        match &l.ffn {
            Ffn::Dense(f) => {
                ops.matmul_glu(ffn_in, f.gate, f.up, f.act, Buf::Gate, Buf::Up)?;
                ops.matmul(Buf::Gate, &[(f.down, Buf::Xn)])?;
            }
            Ffn::Plain(f) => {
                ops.matmul(ffn_in, &[(f.up, Buf::Up)])?;
                if let Some(b) = f.up_bias {
                    ops.add_bias(Buf::Up, b)?;
                }
                ops.gelu(Buf::Up)?;
                ops.matmul(Buf::Up, &[(f.down, Buf::Xn)])?;
                if let Some(b) = f.down_bias {
                    ops.add_bias(Buf::Xn, b)?;
                }
            }
            Ffn::Moe(m) => ops.moe(ffn_in, m, Buf::Xn)?,
        }
        if let Some(w) = l.post_ffn_norm {
            ops.norm(Buf::Xn, None, &w, eps, Buf::Xn)?;
        }
        if l.residual_scale != 1.0 {
            ops.scale(Buf::Xn, l.residual_scale)?;
        }
        pending = true;
    }
    if batch.logit_rows.is_empty() {
        return Ok(false);
    }
    // The last residual add and the final norm, for the rows that want logits only.
    ops.norm(
        Buf::X,
        pending.then_some(Buf::Xn),
        &spec.out_norm,
        eps,
        Buf::Out,
    )?;
    Ok(true)
}

/// Layer `li`'s attention block: its output is left in `Xn`, not yet added to `X`.
/// `pending`: whether `Xn` holds the previous block's output, still to be added.
fn attention_block<O: Ops>(
    l: &LayerSpec,
    li: usize,
    pending: bool,
    eps: f32,
    ops: &mut O,
) -> Result<(), O::Error> {
    // The attention input: the normalised residual stream in Xn (in Att for linear
    // attention, whose output goes to Xn; Att is `dim` wide there), or the stream itself.
    let normed = if l.qkv.is_some() { Buf::Xn } else { Buf::Att };
    let attn_in = match l.attn_norm {
        Some(w) => {
            ops.norm(Buf::X, pending.then_some(Buf::Xn), &w, eps, normed)?;
            normed
        }
        None => {
            if pending {
                ops.add(Buf::X, Buf::Xn)?;
            }
            Buf::X
        }
    };
    match (&l.qkv, l.wo) {
        (Some(q), Some(wo)) => {
            ops.matmul(attn_in, &[(q.wq, Buf::Q), (q.wk, Buf::K), (q.wv, Buf::V)])?;
            if let Some([bq, bk, bv]) = q.bias {
                ops.add_bias(Buf::Q, bq)?;
                ops.add_bias(Buf::K, bk)?;
                ops.add_bias(Buf::V, bv)?;
            }
            if let Some([nq, nk]) = q.qk_norm {
                ops.norm(Buf::Q, None, &nq, eps, Buf::Q)?;
                ops.norm(Buf::K, None, &nk, eps, Buf::K)?;
            }
            if let Some(rope) = l.rope {
                ops.rope(rope, Buf::Q, Buf::K)?;
            }
            ops.kv_write(li, Buf::K, Buf::V)?;
            ops.attention(li, Buf::Q, &l.attn, Buf::Att)?;
            ops.matmul(Buf::Att, &[(wo, Buf::Xn)])?;
        }
        // Linear attention (deci): `wo` maps the input on its own.
        (None, Some(wo)) => ops.matmul(attn_in, &[(wo, Buf::Xn)])?,
        _ => unreachable!("a layer without attention has no attention block"),
    }
    if let Some(b) = l.wo_bias {
        ops.add_bias(Buf::Xn, b)?;
    }
    if let Some(w) = l.post_attn_norm {
        ops.norm(Buf::Xn, None, &w, eps, Buf::Xn)?;
    }
    if l.residual_scale != 1.0 {
        ops.scale(Buf::Xn, l.residual_scale)?;
    }
    Ok(())
}
