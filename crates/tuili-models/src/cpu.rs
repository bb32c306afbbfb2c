//! The CPU implementation of [`Ops`]: the kernels of `tuili-backend` over buffers kept per
//! thread, and the paged [`KvPool`].

use std::cell::RefCell;

use tuili_backend::matmul::{matmul, matmul_glu, matmul_many, Weight};
use tuili_backend::ops::{
    add, axpy, gelu_tanh, norm_in_place, norm_into, rope_angles, rope_rotate,
};
use tuili_backend::pool::{self, SyncPtr};

use crate::attention::attention;
use crate::batch::Batch;
use crate::moe::{group_by_expert, route};
use crate::ops::{AttnSpec, Buf, Glu, MatId, Norm, Ops, RopeId, RopeSpec, VecId, Widths};
use crate::spec::{MoeSpec, Weights};
use crate::{KvPool, ModelError};

/// Buffers of one forward pass, kept per thread between calls.
#[derive(Default)]
pub(crate) struct Scratch {
    /// One per [`Buf`], indexed by `Buf as usize`.
    bufs: [Vec<f32>; 9],
    /// Per RoPE variant: `(cos, sin)` of each token's angles, `[n, head_dim / 2]`;
    /// computed at its first use in a step.
    angles: Vec<Vec<(f32, f32)>>,
    /// Which of `angles` this step has computed.
    angles_done: Vec<bool>,
    /// A mixture of experts' input `[n, dim]` (a copy: the output may overwrite it),
    /// router logits `[n, n_expert]`, and one expert's gathered tokens `[m, dim]`, gate
    /// and up `[m, ffn]` and output `[m, dim]`.
    moe: [Vec<f32>; 6],
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch (no allocation per step but the logits).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

/// One step of a batch on the CPU.
pub(crate) struct CpuStep<'a, 'b> {
    weights: &'a Weights,
    ropes: &'a [RopeSpec],
    /// The current layer's widths; the buffers are sized for `max`.
    widths: Widths,
    max: Widths,
    pool: &'a mut KvPool,
    batch: &'a Batch<'b>,
    s: &'a mut Scratch,
}

impl<'a, 'b> CpuStep<'a, 'b> {
    /// A step over `batch`, its buffers sized (not cleared: every op writes a buffer in
    /// full before another reads it).
    pub(crate) fn new(
        weights: &'a Weights,
        ropes: &'a [RopeSpec],
        widths: Widths,
        pool: &'a mut KvPool,
        batch: &'a Batch<'b>,
        s: &'a mut Scratch,
    ) -> CpuStep<'a, 'b> {
        for (i, buf) in BUFS.iter().enumerate() {
            let rows = if *buf == Buf::Out {
                batch.logit_rows.len()
            } else {
                batch.len()
            };
            let n = rows * widths.of(*buf);
            if s.bufs[i].len() != n {
                s.bufs[i].resize(n, 0.0);
            }
        }
        s.angles.resize(ropes.len(), Vec::new());
        s.angles_done.clear();
        s.angles_done.resize(ropes.len(), false);
        CpuStep {
            weights,
            ropes,
            widths,
            max: widths,
            pool,
            batch,
            s,
        }
    }

    /// Rows of buffer `b` at the current layer's width.
    fn len_of(&self, b: Buf) -> usize {
        let rows = if b == Buf::Out {
            self.batch.logit_rows.len()
        } else {
            self.batch.len()
        };
        rows * self.widths.of(b)
    }

    fn buf(&self, b: Buf) -> &[f32] {
        &self.s.bufs[b as usize][..self.len_of(b)]
    }

    /// The final hidden states the last step left in `Buf::Out`.
    pub(crate) fn out_rows(&self) -> Vec<f32> {
        self.buf(Buf::Out).to_vec()
    }

    fn buf_mut(&mut self, b: Buf) -> &mut [f32] {
        let n = self.len_of(b);
        &mut self.s.bufs[b as usize][..n]
    }
}

/// `b` added to each row of `x` (rows of `b.len()` values): a bias.
fn add_rows(x: &mut [f32], b: &[f32]) {
    for row in x.chunks_exact_mut(b.len()) {
        add(row, b);
    }
}

/// Every buffer, in `Buf as usize` order.
const BUFS: [Buf; 9] = [
    Buf::X,
    Buf::Xn,
    Buf::Q,
    Buf::K,
    Buf::V,
    Buf::Att,
    Buf::Gate,
    Buf::Up,
    Buf::Out,
];

impl Ops for CpuStep<'_, '_> {
    type Error = ModelError;

    fn layer(&mut self, widths: &Widths) -> Result<(), ModelError> {
        if !widths.fits_in(&self.max) {
            return Err(ModelError::BadConfig(format!(
                "a layer's widths {widths:?} exceed the step's {:?}",
                self.max
            )));
        }
        self.widths = *widths;
        Ok(())
    }

    fn embed(&mut self, table: MatId, scale: f32, dst: Buf) -> Result<(), ModelError> {
        let w = self.weights.mat(table);
        let dim = w.cols();
        let batch = self.batch;
        let out = self.buf_mut(dst);
        for (row, &t) in out.chunks_exact_mut(dim).zip(batch.tokens.iter()) {
            w.dequant_row(t as usize, row);
            if scale != 1.0 {
                row.iter_mut().for_each(|v| *v *= scale);
            }
        }
        Ok(())
    }

    fn matmul(&mut self, x: Buf, outs: &[(MatId, Buf)]) -> Result<(), ModelError> {
        let n = self.batch.len();
        let w = self.weights;
        let lens = BUFS.map(|b| self.len_of(b));
        // The input taken out while the outputs are borrowed, each once.
        let bufs = &mut self.s.bufs;
        let xv = std::mem::take(&mut bufs[x as usize]);
        let mut slots: Vec<Option<&mut Vec<f32>>> = bufs.iter_mut().map(Some).collect();
        let mut parts: Vec<(&Weight, &mut [f32])> = outs
            .iter()
            .map(|&(m, b)| {
                let out = slots[b as usize]
                    .take()
                    .expect("outputs are different buffers");
                (w.mat(m), &mut out[..lens[b as usize]])
            })
            .collect();
        let xs = &xv[..lens[x as usize]];
        match parts.as_mut_slice() {
            [(wm, out)] => matmul(wm, xs, n, out),
            parts => matmul_many(parts, xs, n),
        }
        drop(slots);
        self.s.bufs[x as usize] = xv;
        Ok(())
    }

    fn matmul_glu(
        &mut self,
        x: Buf,
        w_gate: MatId,
        w_up: MatId,
        act: Glu,
        gate: Buf,
        up: Buf,
    ) -> Result<(), ModelError> {
        let n = self.batch.len();
        let (wg, wu) = (self.weights.mat(w_gate), self.weights.mat(w_up));
        let (nx, ng, nu) = (self.len_of(x), self.len_of(gate), self.len_of(up));
        let [xv, g, u] = self
            .s
            .bufs
            .get_disjoint_mut([x as usize, gate as usize, up as usize])
            .expect("three different buffers");
        matmul_glu(wg, wu, act, &xv[..nx], n, &mut g[..ng], &mut u[..nu]);
        Ok(())
    }

    fn moe(&mut self, x: Buf, moe: &MoeSpec, out: Buf) -> Result<(), ModelError> {
        let n = self.batch.len();
        let w = self.weights;
        let router = w.mat(moe.router);
        let (n_expert, dim) = (router.rows(), router.cols());
        let (nx, no) = (self.len_of(x), self.len_of(out));
        let [xb, logits, xs, g, u, ys] = &mut self.s.moe;
        xb.clear();
        xb.extend_from_slice(&self.s.bufs[x as usize][..nx]);
        let ob = &mut self.s.bufs[out as usize][..no];
        logits.resize(n * n_expert, 0.0);
        matmul(router, xb, n, logits);
        if let Some(b) = moe.router_bias {
            add_rows(logits, w.vec(b));
        }
        let routes = route(logits, n_expert, moe);
        let groups = group_by_expert(&routes, moe.top_k, n_expert);
        ob.fill(0.0);
        // Expert by expert, each over all of its tokens: its weights are read once. Each
        // token's sum runs over its experts in expert order, whatever the batch.
        for (e, f) in moe.experts.iter().enumerate() {
            let mine = &groups.groups[groups.starts[e]..groups.starts[e + 1]];
            if mine.is_empty() {
                continue;
            }
            let m = mine.len();
            let ffn = w.mat(f.gate).rows();
            xs.clear();
            for &(t, _) in mine {
                xs.extend_from_slice(&xb[t as usize * dim..(t as usize + 1) * dim]);
            }
            g.resize(m * ffn, 0.0);
            u.resize(m * ffn, 0.0);
            ys.resize(m * dim, 0.0);
            let bias = moe.expert_bias.get(e);
            match bias {
                None => matmul_glu(w.mat(f.gate), w.mat(f.up), f.act, xs, m, g, u),
                // The biases go in before the activation: no fused product.
                Some(&[bg, bu, _]) => {
                    matmul_many(
                        &mut [(w.mat(f.gate), &mut g[..]), (w.mat(f.up), &mut u[..])],
                        xs,
                        m,
                    );
                    add_rows(g, w.vec(bg));
                    add_rows(u, w.vec(bu));
                    f.act.apply(g, u);
                }
            }
            matmul(w.mat(f.down), g, m, ys);
            if let Some(&[_, _, bd]) = bias {
                add_rows(ys, w.vec(bd));
            }
            for (&(t, wt), y) in mine.iter().zip(ys.chunks_exact(dim)) {
                axpy(wt, y, &mut ob[t as usize * dim..(t as usize + 1) * dim]);
            }
        }
        Ok(())
    }

    fn add_bias(&mut self, x: Buf, bias: VecId) -> Result<(), ModelError> {
        let bias = self.weights.vec(bias);
        add_rows(self.buf_mut(x), bias);
        Ok(())
    }

    fn norm(
        &mut self,
        x: Buf,
        delta: Option<Buf>,
        norm: &Norm,
        eps: f32,
        dst: Buf,
    ) -> Result<(), ModelError> {
        let wv = self.weights.vec(norm.w);
        let bv = norm.b.map(|b| self.weights.vec(b));
        let kind = norm.kind;
        let width = wv.len();
        if dst == Buf::Out {
            // The last residual add and the final norm, for the rows that want logits.
            let rows = &self.batch.logit_rows;
            let dim = self.widths.dim;
            let bufs = &mut self.s.bufs;
            let (xb, db, ob): (&mut [f32], Option<&[f32]>, &mut [f32]) = match delta {
                Some(d) => {
                    let [xb, db, ob] = bufs
                        .get_disjoint_mut([x as usize, d as usize, Buf::Out as usize])
                        .expect("three different buffers");
                    (xb, Some(db), ob)
                }
                None => {
                    let [xb, ob] = bufs
                        .get_disjoint_mut([x as usize, Buf::Out as usize])
                        .expect("two different buffers");
                    (xb, None, ob)
                }
            };
            for (o, &r) in ob.chunks_exact_mut(dim).zip(rows.iter()) {
                let xr = &mut xb[r * dim..(r + 1) * dim];
                if let Some(d) = db {
                    add(xr, &d[r * dim..(r + 1) * dim]);
                }
                norm_into(kind, xr, wv, bv, eps, o);
            }
            return Ok(());
        }
        let n = self.batch.len();
        let row_width = self.widths.of(x);
        let s = &mut self.s;
        let px = SyncPtr::new(&mut s.bufs[x as usize]);
        let pd = delta.map(|d| SyncPtr::new(&mut s.bufs[d as usize]));
        let pdst = SyncPtr::new(&mut s.bufs[dst as usize]);
        let token = |t: usize| {
            let r = t * row_width..(t + 1) * row_width;
            // SAFETY: token t's rows of each buffer belong to this call alone; `x`,
            // `delta` and `dst` are used one at a time where they may be the same buffer.
            unsafe {
                let xr = px.slice(r.clone());
                if let Some(pd) = &pd {
                    add(xr, pd.slice(r.clone()));
                }
                if dst == x {
                    for xh in xr.chunks_exact_mut(width) {
                        norm_in_place(kind, xh, wv, bv, eps);
                    }
                } else {
                    let out = pdst.slice(r);
                    for (xh, oh) in xr.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
                        norm_into(kind, xh, wv, bv, eps, oh);
                    }
                }
            }
        };
        if n < 2 {
            (0..n).for_each(token);
        } else {
            pool::global().for_ranges(n, 1, &|tokens| tokens.for_each(token));
        }
        Ok(())
    }

    fn add(&mut self, x: Buf, delta: Buf) -> Result<(), ModelError> {
        let [xb, db] = self
            .s
            .bufs
            .get_disjoint_mut([x as usize, delta as usize])
            .expect("two different buffers");
        add(xb, db);
        Ok(())
    }

    fn gelu(&mut self, x: Buf) -> Result<(), ModelError> {
        gelu_tanh(self.buf_mut(x));
        Ok(())
    }

    fn scale(&mut self, x: Buf, s: f32) -> Result<(), ModelError> {
        self.buf_mut(x).iter_mut().for_each(|v| *v *= s);
        Ok(())
    }

    fn rope(&mut self, rope: RopeId, q: Buf, k: Buf) -> Result<(), ModelError> {
        let r = rope.0 as usize;
        let spec = &self.ropes[r];
        let half = spec.inv_freq.len();
        let hd = self.widths.head_dim;
        if !self.s.angles_done[r] {
            // (cos, sin) of each token's position: [n, head_dim / 2], shared by the layers.
            let a = &mut self.s.angles[r];
            a.clear();
            a.resize(self.batch.len() * half, (0.0, 0.0));
            for (cs, &(_, pos)) in a.chunks_exact_mut(half).zip(self.batch.place.iter()) {
                rope_angles(&spec.inv_freq, pos, cs);
                if spec.mscale != 1.0 {
                    cs.iter_mut()
                        .for_each(|(c, s)| (*c, *s) = (*c * spec.mscale, *s * spec.mscale));
                }
            }
            self.s.angles_done[r] = true;
        }
        let [qb, kb] = self
            .s
            .bufs
            .get_disjoint_mut([q as usize, k as usize])
            .expect("two different buffers");
        let angles = &self.s.angles[r];
        let (qw, kw) = (self.widths.of(q), self.widths.of(k));
        for (t, cs) in angles.chunks_exact(half).enumerate() {
            rope_rotate(&mut qb[t * qw..(t + 1) * qw], hd, cs, spec.mode);
            rope_rotate(&mut kb[t * kw..(t + 1) * kw], hd, cs, spec.mode);
        }
        Ok(())
    }

    fn kv_write(&mut self, layer: usize, k: Buf, v: Buf) -> Result<(), ModelError> {
        let kv_dim = self.widths.of(k);
        let batch = self.batch;
        let (kb, vb) = (&self.s.bufs[k as usize], &self.s.bufs[v as usize]);
        for (t, &(ci, pos)) in batch.place.iter().enumerate() {
            let r = t * kv_dim..(t + 1) * kv_dim;
            let blocks = self.pool.table(layer, &batch.chunks[ci]);
            self.pool.write(layer, blocks, pos, &kb[r.clone()], &vb[r]);
        }
        Ok(())
    }

    fn attention(
        &mut self,
        layer: usize,
        q: Buf,
        spec: &AttnSpec,
        dst: Buf,
    ) -> Result<(), ModelError> {
        let (qb, out) = {
            let [qb, out] = self
                .s
                .bufs
                .get_disjoint_mut([q as usize, dst as usize])
                .expect("two different buffers");
            (&*qb, out)
        };
        let sinks = spec.sinks.map(|s| self.weights.vec(s));
        attention(
            &self.widths,
            spec,
            sinks,
            layer,
            qb,
            self.batch,
            self.pool,
            out,
        );
        Ok(())
    }

    fn logits(&mut self, x: Buf, output: MatId) -> Result<Vec<f32>, ModelError> {
        let m = self.batch.logit_rows.len();
        let w = self.weights.mat(output);
        let mut logits = vec![0f32; m * w.rows()];
        if m > 0 {
            matmul(w, self.buf(x), m, &mut logits);
        }
        Ok(logits)
    }
}
