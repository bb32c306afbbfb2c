//! The forward pass on the GPU: `tuili_models::forward` over a [`CudaStep`], the CUDA
//! implementation of the op interface.

use cudarc::driver::CudaSlice;
use tuili_backend::ops::RopeMode;
use tuili_models::batch::Batch;
use tuili_models::moe::{group_by_expert, route};
use tuili_models::ops::{AttnSpec, Buf, Glu, MatId, Norm, Ops, RopeId, VecId, Widths};
use tuili_models::spec::{ModelSpec, MoeSpec};
use tuili_models::{Config, KvType, Model, SeqChunk};

use super::gpu::{attention_scratch, attention_splits, AttnArgs, Gpu, GpuWeight, What};
use crate::{CudaError, DeviceInfo, KvLayout};

/// A model whose weights and KV pool live on one GPU.
pub struct CudaModel {
    gpu: Gpu,
    cfg: Config,
    spec: ModelSpec,
    widths: Widths,
    /// The model's matrices by [`MatId`] (`None` for a matrix no layer reads).
    mats: Vec<Option<GpuWeight>>,
    /// The model's vectors by [`VecId`].
    vecs: Vec<CudaSlice<f32>>,
    /// Per RoPE variant: inverse frequencies `[head_dim / 2]`, whether NEOX pairs, and the
    /// factor of cos and sin.
    ropes: Vec<(CudaSlice<f32>, bool, f32)>,
    /// Global layers' K and V: per layer `[n_blocks, block_size, kv_dim(layer)]` each
    /// (every layer when the pool is not split; a layer without K/V heads takes none).
    k_pool: CudaSlice<f32>,
    v_pool: CudaSlice<f32>,
    /// Local (sliding-window) layers' K and V when split: per layer `[n_local_blocks,
    /// block_size, kv_dim(layer)]` each, behind the chunks' `local_blocks` (see
    /// `tuili_models::KvPool::new_split`).
    k_local: CudaSlice<f32>,
    v_local: CudaSlice<f32>,
    /// Per layer: whether it is in the local region, and the element offset of its
    /// first block there.
    slot: Vec<(bool, usize)>,
    kv: KvLayout,
    /// f32 buffer weights are dequantized into for cuBLAS.
    gemm_tile: CudaSlice<f32>,
    /// Largest token count that still takes the matrix-vector kernel.
    mv_max: usize,
    /// Multiprocessors, for sizing attention splits.
    sms: usize,
}

impl CudaModel {
    /// Uploads `model`'s weights to device `ordinal` and allocates a KV pool of
    /// `kv.n_blocks` blocks of `kv.block_size` positions. `progress(done, total)` is
    /// called as bytes go up.
    pub fn new(
        model: &Model,
        ordinal: usize,
        kv: KvLayout,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<CudaModel, CudaError> {
        let cfg = model.config().clone();
        if (kv.k_type, kv.v_type) != (KvType::F32, KvType::F32) {
            return Err(CudaError::Unsupported(format!(
                "KV cache types K {}, V {}: the GPU's KV pool is f32 (use --cache-type-k f32 \
                 --cache-type-v f32, or --device cpu)",
                kv.k_type, kv.v_type
            )));
        }
        if cfg.head_dim > super::gpu::ATT_MAX_HEAD_DIM {
            return Err(CudaError::Unsupported(format!(
                "head dimension {} (at most {})",
                cfg.head_dim,
                super::gpu::ATT_MAX_HEAD_DIM
            )));
        }
        let gpu = Gpu::open(ordinal)?;
        gpu.bind()?;
        let total = crate::weight_bytes(model);
        let mut done = 0usize;
        progress(0, total);
        let spec = model.spec().clone();
        let weights = model.weights();
        // Upload each matrix the forward pass reads, once (a tied output is the embedding).
        let mut mats: Vec<Option<GpuWeight>> = (0..weights.mats.len()).map(|_| None).collect();
        for id in model.matrix_ids() {
            let w = weights.mat(id);
            mats[id.0 as usize] = Some(gpu.upload_weight(w)?);
            done += w.bytes().len();
            progress(done, total);
        }
        let vecs = weights
            .vecs
            .iter()
            .map(|v| gpu.upload(v))
            .collect::<Result<Vec<_>, _>>()?;
        let ropes = spec
            .ropes
            .iter()
            .map(|r| Ok((gpu.upload(&r.inv_freq)?, r.mode == RopeMode::Neox, r.mscale)))
            .collect::<Result<Vec<_>, CudaError>>()?;
        progress(total, total);
        let kv = KvLayout {
            n_blocks: kv.n_blocks.max(1),
            block_size: kv.block_size.max(1),
            n_local_blocks: if cfg.max_window().is_some() {
                kv.n_local_blocks
            } else {
                0
            },
            ..kv
        };
        // Each region holds its layers one after another, each `[blocks, block_size,
        // kv_dim(layer)]`: the kernels address layer 0 of a pool that starts at the layer.
        let (mut pool, mut local_pool) = (0, 0);
        let slot: Vec<(bool, usize)> = cfg
            .layer_windows
            .iter()
            .zip(&cfg.layers)
            .map(|(w, shape)| {
                let local = kv.n_local_blocks > 0 && w.is_some();
                let (end, blocks) = match local {
                    true => (&mut local_pool, kv.n_local_blocks),
                    false => (&mut pool, kv.n_blocks),
                };
                let at = *end;
                *end += blocks * kv.block_size * shape.kv_dim();
                (local, at)
            })
            .collect();
        let (pool, local_pool) = (pool.max(1), local_pool.max(1));
        // Read from the host's weights, which have the same shapes as the uploads.
        let largest = model
            .matrices()
            .iter()
            .map(|w| w.rows() * w.cols())
            .max()
            .unwrap_or(1);
        let sms = gpu
            .ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .what("reading the multiprocessor count")? as usize;
        let mv_max = std::env::var("TUILI_CUDA_MATVEC_MAX_TOKENS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(super::gpu::MV_MAX_N);
        Ok(CudaModel {
            k_pool: gpu.zeros(pool)?,
            v_pool: gpu.zeros(pool)?,
            k_local: gpu.zeros(local_pool)?,
            v_local: gpu.zeros(local_pool)?,
            slot,
            gemm_tile: gpu.zeros(largest.min(super::gpu::GEMM_TILE_ELEMS))?,
            gpu,
            cfg,
            spec,
            widths: model.widths(),
            mats,
            vecs,
            ropes,
            kv,
            mv_max,
            sms,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The device the model lives on.
    pub fn device(&self) -> &DeviceInfo {
        &self.gpu.info
    }

    /// Sizes of the KV pool.
    pub fn kv_layout(&self) -> KvLayout {
        self.kv
    }

    /// Runs a ragged batch, exactly as `Model::forward_batch` does on the CPU: each
    /// chunk's tokens continue its own sequence, whose K/V live in this model's pool
    /// behind its block table. Returns the logits each chunk asked for, chunk after
    /// chunk: `[Σ (tokens.len() - logits_from), vocab]`.
    pub fn forward_batch(&mut self, chunks: &[SeqChunk]) -> Result<Vec<f32>, CudaError> {
        let local = match (self.kv.n_local_blocks, self.cfg.max_window()) {
            (n, Some(w)) if n > 0 => Some((n, w)),
            _ => None,
        };
        let batch = Batch::new(
            chunks,
            self.cfg.vocab,
            self.kv.n_blocks,
            self.kv.block_size,
            local,
        )?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.gpu.bind()?;
        let mut step = CudaStep::new(self, &batch)?;
        let logits = tuili_models::forward::forward(&self.spec, &batch, &mut step)?;
        // `logits` synchronizes; a step without logits still waits for its K/V.
        self.gpu.stream.synchronize().what("waiting for the GPU")?;
        Ok(logits)
    }
}

/// One step of a batch on the GPU: the batch's indices and the activation buffers.
struct CudaStep<'a> {
    m: &'a CudaModel,
    /// One per [`Buf`], indexed by `Buf as usize`.
    bufs: Vec<CudaSlice<f32>>,
    /// Token ids `[n]` and the rows that want logits `[m]` (u32).
    d_tokens: CudaSlice<u32>,
    d_rows: CudaSlice<u32>,
    /// Positions, chunk indices and block tables, which `attn` points into.
    _d_pos: CudaSlice<u32>,
    _d_chunk: CudaSlice<u32>,
    _d_tables: CudaSlice<u32>,
    _d_local_tables: CudaSlice<u32>,
    /// The global region's arguments, and the local region's (the same when unsplit).
    attn: AttnArgs,
    attn_local: AttnArgs,
    split_len: usize,
    n_splits: usize,
    /// Scratch of the attention splits.
    part: CudaSlice<f32>,
    /// The current layer's widths (the buffers are sized for the model's widest).
    widths: Widths,
    n: usize,
    n_logits: usize,
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

impl<'a> CudaStep<'a> {
    fn new(m: &'a CudaModel, batch: &Batch) -> Result<CudaStep<'a>, CudaError> {
        let g = &m.gpu;
        let (n, n_logits) = (batch.len(), batch.logit_rows.len());
        // Block tables padded to the longest sequence's.
        let stride = batch.max_len.div_ceil(m.kv.block_size).max(1);
        let mut tables = vec![0u32; batch.chunks.len().max(1) * stride];
        // Local tables alike; their entries before each window (maybe `FREED_BLOCK`)
        // are never read.
        let split = m.kv.n_local_blocks > 0;
        let mut local_tables = vec![0u32; if split { tables.len() } else { 1 }];
        for (ci, c) in batch.chunks.iter().enumerate() {
            let need = (c.start + c.tokens.len()).div_ceil(m.kv.block_size);
            tables[ci * stride..ci * stride + need].copy_from_slice(&c.blocks[..need]);
            if split {
                local_tables[ci * stride..ci * stride + need]
                    .copy_from_slice(&c.local_blocks[..need]);
            }
        }
        let pos: Vec<u32> = batch.place.iter().map(|&(_, p)| p as u32).collect();
        let chunk: Vec<u32> = batch.place.iter().map(|&(c, _)| c as u32).collect();
        let rows: Vec<u32> = batch.logit_rows.iter().map(|&r| r as u32).collect();
        let d_pos = g.upload(&pos)?;
        let d_chunk = g.upload(&chunk)?;
        let d_tables = g.upload(&tables)?;
        let d_local_tables = g.upload(&local_tables)?;
        let mut bufs = Vec::with_capacity(BUFS.len());
        for b in BUFS {
            let rows = if b == Buf::Out { n_logits } else { n };
            bufs.push(g.zeros::<f32>((rows * m.widths.of(b)).max(1))?);
        }
        let w = &m.widths;
        let (split_len, n_splits) = attention_splits(n * w.n_head, batch.max_len, m.sms);
        let attn = AttnArgs {
            k_pool: g.ptr(&m.k_pool, 0),
            v_pool: g.ptr(&m.v_pool, 0),
            pos: g.ptr(&d_pos, 0),
            chunk: g.ptr(&d_chunk, 0),
            tables: g.ptr(&d_tables, 0),
            table_stride: stride,
            layer: 0,
            n_blocks: m.kv.n_blocks,
            block_size: m.kv.block_size,
            n,
            n_head: w.n_head,
            n_kv_head: w.n_kv_head,
            head_dim: w.head_dim,
        };
        let attn_local = if split {
            AttnArgs {
                k_pool: g.ptr(&m.k_local, 0),
                v_pool: g.ptr(&m.v_local, 0),
                tables: g.ptr(&d_local_tables, 0),
                n_blocks: m.kv.n_local_blocks,
                ..attn
            }
        } else {
            attn
        };
        Ok(CudaStep {
            m,
            bufs,
            d_tokens: g.upload(&batch.tokens)?,
            d_rows: g.upload(&rows)?,
            _d_pos: d_pos,
            _d_chunk: d_chunk,
            _d_tables: d_tables,
            _d_local_tables: d_local_tables,
            attn,
            attn_local,
            split_len,
            n_splits,
            part: g.zeros(attention_scratch(n * w.n_head, n_splits, w.head_dim))?,
            widths: m.widths,
            n,
            n_logits,
        })
    }

    /// The pool arguments of `layer`: its region, pools that start at its first block,
    /// and the current layer's heads.
    fn args(&self, layer: usize) -> AttnArgs {
        let (local, at) = self.m.slot[layer];
        let base = if local { &self.attn_local } else { &self.attn };
        let bytes = (at * std::mem::size_of::<f32>()) as u64;
        AttnArgs {
            k_pool: base.k_pool + bytes,
            v_pool: base.v_pool + bytes,
            layer: 0,
            n_head: self.widths.n_head,
            n_kv_head: self.widths.n_kv_head,
            head_dim: self.widths.head_dim,
            ..*base
        }
    }

    /// Device address of buffer `b`.
    fn p(&self, b: Buf) -> u64 {
        self.m.gpu.ptr(&self.bufs[b as usize], 0)
    }

    fn mat(&self, id: MatId) -> &GpuWeight {
        self.m.mats[id.0 as usize]
            .as_ref()
            .expect("the forward pass reads only uploaded matrices")
    }

    fn vec(&self, id: VecId) -> (u64, usize) {
        let v = &self.m.vecs[id.0 as usize];
        (self.m.gpu.ptr(v, 0), v.len())
    }

    /// `x · wᵀ` for the rows of `x`.
    fn mm(&self, w: MatId, x: u64, n: usize, y: u64) -> Result<(), CudaError> {
        let m = self.m;
        m.gpu.matmul(self.mat(w), x, n, y, &m.gemm_tile, m.mv_max)
    }
}

impl Ops for CudaStep<'_> {
    type Error = CudaError;

    fn layer(&mut self, widths: &Widths) -> Result<(), CudaError> {
        if !widths.fits_in(&self.m.widths) {
            return Err(CudaError::Unsupported(format!(
                "a layer's widths {widths:?} exceed the model's {:?}",
                self.m.widths
            )));
        }
        self.widths = *widths;
        Ok(())
    }

    fn embed(&mut self, table: MatId, scale: f32, dst: Buf) -> Result<(), CudaError> {
        let g = &self.m.gpu;
        let out = self.p(dst);
        g.dequant(
            self.mat(table),
            0,
            Some(g.ptr(&self.d_tokens, 0)),
            self.n,
            out,
        )?;
        if scale != 1.0 {
            g.scale(out, scale, self.n * self.widths.of(dst))?;
        }
        Ok(())
    }

    fn matmul(&mut self, x: Buf, outs: &[(MatId, Buf)]) -> Result<(), CudaError> {
        for &(w, y) in outs {
            self.mm(w, self.p(x), self.n, self.p(y))?;
        }
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
    ) -> Result<(), CudaError> {
        let (xp, gp, up_p) = (self.p(x), self.p(gate), self.p(up));
        self.mm(w_gate, xp, self.n, gp)?;
        self.mm(w_up, xp, self.n, up_p)?;
        let total = self.n * self.widths.of(gate);
        match act {
            Glu::Silu => self.m.gpu.silu_mul(gp, up_p, total),
            Glu::GeluTanh => self.m.gpu.gelu_tanh_mul(gp, up_p, total),
            Glu::SwigluOai => self.m.gpu.swiglu_oai_mul(gp, up_p, total),
        }
    }

    fn moe(&mut self, x: Buf, moe: &MoeSpec, out: Buf) -> Result<(), CudaError> {
        let g = &self.m.gpu;
        let n = self.n;
        let router = self.mat(moe.router);
        let (n_expert, dim) = (router.rows, router.cols);
        // The input, kept: `out` may be `x`.
        let x_in = g.zeros::<f32>(n * dim)?;
        g.add(g.ptr(&x_in, 0), self.p(x), n * dim)?;
        // Routing on the host, as on the CPU (`tuili_models::moe`).
        let logits = g.zeros::<f32>(n * n_expert)?;
        self.mm(moe.router, g.ptr(&x_in, 0), n, g.ptr(&logits, 0))?;
        if let Some(b) = moe.router_bias {
            let (bp, _) = self.vec(b);
            g.add_bias(g.ptr(&logits, 0), bp, n_expert, n * n_expert)?;
        }
        let logits = g.download(g.ptr(&logits, 0), n * n_expert)?;
        let routes = route(&logits, n_expert, moe);
        let groups = group_by_expert(&routes, moe.top_k, n_expert);
        let (tokens, weights): (Vec<u32>, Vec<f32>) = groups.groups.iter().copied().unzip();
        let (d_tok, d_w) = (g.upload(&tokens)?, g.upload(&weights)?);
        let most = (0..n_expert)
            .map(|e| groups.starts[e + 1] - groups.starts[e])
            .max()
            .unwrap_or(0);
        let ffn = moe
            .experts
            .iter()
            .map(|f| self.mat(f.gate).rows)
            .max()
            .unwrap_or(1);
        // One expert's tokens [m, dim], gate and up [m, ffn], output [m, dim].
        let xs = g.zeros::<f32>(most * dim)?;
        let (gs, us) = (g.zeros::<f32>(most * ffn)?, g.zeros::<f32>(most * ffn)?);
        let ys = g.zeros::<f32>(most * dim)?;
        let (xs_p, gs_p, us_p, ys_p) = (g.ptr(&xs, 0), g.ptr(&gs, 0), g.ptr(&us, 0), g.ptr(&ys, 0));
        let out_p = self.p(out);
        g.fill(out_p, 0.0, n * dim)?;
        // Expert by expert, in order, as the CPU sums them.
        for (e, f) in moe.experts.iter().enumerate() {
            let (s, m) = (groups.starts[e], groups.starts[e + 1] - groups.starts[e]);
            if m == 0 {
                continue;
            }
            let (tok_p, w_p) = (g.ptr(&d_tok, s), g.ptr(&d_w, s));
            g.gather_rows(g.ptr(&x_in, 0), tok_p, m, dim, xs_p)?;
            self.mm(f.gate, xs_p, m, gs_p)?;
            self.mm(f.up, xs_p, m, us_p)?;
            let width = self.mat(f.gate).rows;
            let bias = moe.expert_bias.get(e).map(|b| b.map(|id| self.vec(id).0));
            if let Some([bg, bu, _]) = bias {
                g.add_bias(gs_p, bg, width, m * width)?;
                g.add_bias(us_p, bu, width, m * width)?;
            }
            match f.act {
                Glu::Silu => g.silu_mul(gs_p, us_p, m * width)?,
                Glu::GeluTanh => g.gelu_tanh_mul(gs_p, us_p, m * width)?,
                Glu::SwigluOai => g.swiglu_oai_mul(gs_p, us_p, m * width)?,
            }
            self.mm(f.down, gs_p, m, ys_p)?;
            if let Some([_, _, bd]) = bias {
                g.add_bias(ys_p, bd, dim, m * dim)?;
            }
            g.scatter_add_rows(ys_p, tok_p, w_p, m, dim, out_p)?;
        }
        // The scratch above is freed when this returns: finish with it first.
        g.stream.synchronize().what("waiting for the GPU")
    }

    fn add_bias(&mut self, x: Buf, bias: VecId) -> Result<(), CudaError> {
        let (b, d) = self.vec(bias);
        let total = self.n * self.widths.of(x);
        self.m.gpu.add_bias(self.p(x), b, d, total)
    }

    fn norm(
        &mut self,
        x: Buf,
        delta: Option<Buf>,
        norm: &Norm,
        eps: f32,
        dst: Buf,
    ) -> Result<(), CudaError> {
        let g = &self.m.gpu;
        let (wp, width) = self.vec(norm.w);
        let bp = norm.b.map(|b| self.vec(b).0);
        let row = self.widths.of(x);
        if let Some(d) = delta {
            g.add(self.p(x), self.p(d), self.n * row)?;
        }
        if dst == Buf::Out {
            let rows = g.ptr(&self.d_rows, 0);
            return g.norm(
                norm.kind,
                self.p(x),
                wp,
                bp,
                Some(rows),
                self.n_logits,
                width,
                eps,
                self.p(dst),
            );
        }
        // Rows of the weight's width: a `[head_dim]` weight normalises each head.
        g.norm(
            norm.kind,
            self.p(x),
            wp,
            bp,
            None,
            self.n * row / width,
            width,
            eps,
            self.p(dst),
        )
    }

    fn add(&mut self, x: Buf, delta: Buf) -> Result<(), CudaError> {
        let total = self.n * self.widths.of(x);
        self.m.gpu.add(self.p(x), self.p(delta), total)
    }

    fn gelu(&mut self, x: Buf) -> Result<(), CudaError> {
        self.m.gpu.gelu(self.p(x), self.n * self.widths.of(x))
    }

    fn scale(&mut self, x: Buf, s: f32) -> Result<(), CudaError> {
        self.m.gpu.scale(self.p(x), s, self.n * self.widths.of(x))
    }

    fn rope(&mut self, rope: RopeId, q: Buf, k: Buf) -> Result<(), CudaError> {
        let (inv_freq, neox, ms) = &self.m.ropes[rope.0 as usize];
        let g = &self.m.gpu;
        let w = &self.widths;
        let (f, np, pos, n) = (g.ptr(inv_freq, 0), inv_freq.len(), self.attn.pos, self.n);
        g.rope(self.p(q), pos, f, np, n, w.n_head, w.head_dim, *neox, *ms)?;
        g.rope(
            self.p(k),
            pos,
            f,
            np,
            n,
            w.n_kv_head,
            w.head_dim,
            *neox,
            *ms,
        )
    }

    fn kv_write(&mut self, layer: usize, k: Buf, v: Buf) -> Result<(), CudaError> {
        let a = self.args(layer);
        self.m.gpu.kv_write(self.p(k), self.p(v), &a)
    }

    fn attention(
        &mut self,
        layer: usize,
        q: Buf,
        spec: &AttnSpec,
        dst: Buf,
    ) -> Result<(), CudaError> {
        let a = self.args(layer);
        let part = self.m.gpu.ptr(&self.part, 0);
        self.m.gpu.attention(
            self.p(q),
            &a,
            spec.scale,
            spec.window,
            spec.temperature,
            spec.softcap,
            spec.sinks.map(|s| self.vec(s).0),
            self.split_len,
            self.n_splits,
            part,
            self.p(dst),
        )
    }

    fn logits(&mut self, x: Buf, output: MatId) -> Result<Vec<f32>, CudaError> {
        let g = &self.m.gpu;
        let vocab = self.mat(output).rows;
        let logits = g.zeros::<f32>(self.n_logits * vocab)?;
        self.mm(output, self.p(x), self.n_logits, g.ptr(&logits, 0))?;
        g.download(g.ptr(&logits, 0), self.n_logits * vocab)
    }
}
