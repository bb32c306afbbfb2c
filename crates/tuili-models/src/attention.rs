//! Causal attention of a ragged batch over the paged KV cache, on the CPU, optionally
//! within a sliding window.

use std::cell::RefCell;

use tuili_backend::kernels;
use tuili_backend::pool::{self, SyncPtr};

use crate::batch::Batch;
use crate::ops::{AttnSpec, Widths};
use crate::KvPool;

thread_local! {
    /// Each thread's scores (`[group, positions]`), the positions' offsets in the pool, and
    /// one row with its sink.
    static SCRATCH: RefCell<(Vec<f32>, Vec<usize>, Vec<f32>)> =
        const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// `row = cap · tanh(row · scale / cap)`: logit soft-capping (Gemma 2), after which the
/// softmax takes a scale of 1.
fn softcap(row: &mut [f32], scale: f32, cap: f32) {
    let k = scale / cap;
    row.iter_mut().for_each(|s| *s = cap * (*s * k).tanh());
}

/// `row = softmax([row · scale, sink])` without the sink's own share: the sink joins the
/// maximum and the denominator (ggml's `soft_max_ext` with sinks). `ext`: scratch.
fn softmax_with_sink(row: &mut [f32], scale: f32, sink: f32, ext: &mut Vec<f32>) {
    ext.clear();
    ext.extend(row.iter().map(|s| s * scale));
    ext.push(sink);
    tuili_backend::ops::softmax_scaled(ext, 1.0);
    row.copy_from_slice(&ext[..row.len()]);
}

/// Every new token's query heads over its own sequence's K/V, positions `0..=pos`, or the
/// last `window` of them.
///
/// `q`, `out`: `[n, n_head, head_dim]`; `batch.place[t]` = (chunk, position) of token t.
/// The work unit is one token and one K/V head with the query heads that share it
/// (GQA), so each K/V row is read once per group; units are split into chunks by
/// their cost (positions), not their count, because causal rows grow along a prompt.
/// Per query head the operations are those of one `dot` per position, a softmax and
/// one `axpy` per position in order, whatever the batch (batch invariance).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    widths: &Widths,
    spec: &AttnSpec,
    sinks: Option<&[f32]>,
    layer: usize,
    q: &[f32],
    batch: &Batch,
    kv: &KvPool,
    out: &mut [f32],
) {
    let k = kernels::select();
    let (hd, n_kv, n_head) = (widths.head_dim, widths.n_kv_head, widths.n_head);
    let group = n_head / n_kv;
    let (chunks, where_) = (batch.chunks, &batch.place);
    // The first position a token at `pos` sees.
    let first = |pos: usize| match spec.window {
        Some(w) => (pos + 1).saturating_sub(w),
        None => 0,
    };
    // Cost of a unit (token t, any K/V head): its positions.
    let total: usize = where_
        .iter()
        .map(|&(_, pos)| (pos + 1 - first(pos)) * n_kv)
        .sum();
    let out_ptr = SyncPtr::new(out);
    pool::global().for_chunks(&|c, n_chunks| {
        let (lo, hi) = (total * c / n_chunks, total * (c + 1) / n_chunks);
        SCRATCH.with(|s| {
            let (scores, rows, ext) = &mut *s.borrow_mut();
            // The token whose row offsets `rows` holds (the same for all its K/V heads).
            let mut rows_of = None;
            let mut cost = 0;
            for (t, &(ci, pos)) in where_.iter().enumerate() {
                let p0 = first(pos);
                let np = pos + 1 - p0;
                for g in 0..n_kv {
                    // A unit belongs to the chunk whose share holds its first cost unit.
                    let mine = cost >= lo && cost < hi;
                    cost += np;
                    if !mine {
                        continue;
                    }
                    if rows_of != Some(t) {
                        // Element offsets of the token's K/V rows, positions p0..=pos (K and
                        // V alike); head g's slice starts g * hd values further on.
                        let blocks = kv.table(layer, &chunks[ci]);
                        rows.clear();
                        rows.extend((p0..=pos).map(|p| kv.offset(layer, blocks, p)));
                        rows_of = Some(t);
                    }
                    let kvh = g * hd;
                    let head0 = t * n_head + g * group;
                    // qg: [group, hd]; scores: [group, np].
                    let qg = &q[head0 * hd..(head0 + group) * hd];
                    scores.resize(group * np, 0.0);
                    let (kt, vt) = (kv.k_type(), kv.v_type());
                    k.scores_kv(kt, qg, hd, &kv.keys()[kt.bytes(kvh)..], rows, scores);
                    let mut scale = spec.scale_at(pos);
                    if let Some(cap) = spec.softcap {
                        softcap(scores, scale, cap);
                        scale = 1.0;
                    }
                    match sinks {
                        None => {
                            for row in scores.chunks_exact_mut(np) {
                                k.softmax(row, scale);
                            }
                        }
                        Some(sinks) => {
                            let heads = &sinks[g * group..(g + 1) * group];
                            for (row, &sink) in scores.chunks_exact_mut(np).zip(heads) {
                                softmax_with_sink(row, scale, sink, ext);
                            }
                        }
                    }
                    // SAFETY: the heads of unit (t, g) are written by this chunk alone.
                    let o = unsafe { out_ptr.slice(head0 * hd..(head0 + group) * hd) };
                    k.mix_kv(vt, scores, &kv.values()[vt.bytes(kvh)..], rows, o);
                }
            }
        })
    });
}
