//! The forward pass on the GPU, step for step `tuili_models::Model::forward_batch`.

use cudarc::driver::CudaSlice;
use tuili_backend::ops::RopeMode;
use tuili_models::{Config, KvType, Model, ModelError, SeqChunk};

use super::gpu::{attention_scratch, attention_splits, AttnArgs, Gpu, GpuWeight, What};
use crate::{CudaError, DeviceInfo, KvLayout};

/// One transformer block on the GPU.
struct GpuLayer {
    /// `[dim]`
    attn_norm: CudaSlice<f32>,
    /// `[q_dim, dim]`, `[kv_dim, dim]`, `[kv_dim, dim]`
    wq: GpuWeight,
    wk: GpuWeight,
    wv: GpuWeight,
    /// `[q_dim]`, `[kv_dim]`, `[kv_dim]`
    qkv_bias: Option<(CudaSlice<f32>, CudaSlice<f32>, CudaSlice<f32>)>,
    /// `[dim, q_dim]`
    wo: GpuWeight,
    /// `[dim]`
    ffn_norm: CudaSlice<f32>,
    /// `[ffn_dim, dim]`, `[ffn_dim, dim]`, `[dim, ffn_dim]`
    w_gate: GpuWeight,
    w_up: GpuWeight,
    w_down: GpuWeight,
}

/// A model whose weights and KV pool live on one GPU.
pub struct CudaModel {
    gpu: Gpu,
    cfg: Config,
    /// `[vocab, dim]`
    tok_embd: GpuWeight,
    layers: Vec<GpuLayer>,
    /// `[dim]`
    out_norm: CudaSlice<f32>,
    /// `[vocab, dim]`; `None` when tied to `tok_embd`.
    output: Option<GpuWeight>,
    /// `[head_dim / 2]`
    inv_freq: CudaSlice<f32>,
    /// `[n_layer, n_blocks, block_size, kv_dim]` each.
    k_pool: CudaSlice<f32>,
    v_pool: CudaSlice<f32>,
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
        let mut up = |w: &tuili_backend::matmul::Weight| -> Result<GpuWeight, CudaError> {
            let g = gpu.upload_weight(w)?;
            done += w.bytes().len();
            progress(done, total);
            Ok(g)
        };
        let tok_embd = up(model.tok_embd())?;
        let tied = std::ptr::eq(
            model.output().bytes().as_ptr(),
            model.tok_embd().bytes().as_ptr(),
        );
        let output = if tied {
            None
        } else {
            Some(up(model.output())?)
        };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for l in model.layers() {
            layers.push(GpuLayer {
                wq: up(&l.wq)?,
                wk: up(&l.wk)?,
                wv: up(&l.wv)?,
                wo: up(&l.wo)?,
                w_gate: up(&l.w_gate)?,
                w_up: up(&l.w_up)?,
                w_down: up(&l.w_down)?,
                attn_norm: gpu.upload(&l.attn_norm)?,
                ffn_norm: gpu.upload(&l.ffn_norm)?,
                qkv_bias: match &l.qkv_bias {
                    Some((q, k, v)) => Some((gpu.upload(q)?, gpu.upload(k)?, gpu.upload(v)?)),
                    None => None,
                },
            });
        }
        progress(total, total);
        let kv = KvLayout {
            n_blocks: kv.n_blocks.max(1),
            block_size: kv.block_size.max(1),
            ..kv
        };
        let pool = cfg.n_layer * kv.n_blocks * kv.block_size * cfg.kv_dim();
        // Read from the host's weights, which have the same shapes as the uploads.
        let largest = model
            .layers()
            .iter()
            .flat_map(|l| l.matrices())
            .chain([model.output(), model.tok_embd()])
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
            out_norm: gpu.upload(model.out_norm())?,
            inv_freq: gpu.upload(model.inv_freq())?,
            k_pool: gpu.zeros(pool)?,
            v_pool: gpu.zeros(pool)?,
            gemm_tile: gpu.zeros(largest.min(super::gpu::GEMM_TILE_ELEMS))?,
            gpu,
            cfg,
            tok_embd,
            layers,
            output,
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
        let cfg = &self.cfg;
        let g = &self.gpu;
        g.bind()?;
        // Per token: id, position, chunk; per chunk: its block table (padded).
        let mut tokens: Vec<u32> = Vec::new();
        let mut pos: Vec<u32> = Vec::new();
        let mut chunk_of: Vec<u32> = Vec::new();
        let mut logit_rows: Vec<u32> = Vec::new();
        let mut max_len = 0;
        for c in chunks {
            self.check_table(c.blocks, c.start + c.tokens.len())?;
            max_len = max_len.max(c.start + c.tokens.len());
        }
        let stride = max_len.div_ceil(self.kv.block_size).max(1);
        let mut tables = vec![0u32; chunks.len().max(1) * stride];
        for (ci, c) in chunks.iter().enumerate() {
            if let Some(&id) = c.tokens.iter().find(|&&t| t as usize >= cfg.vocab) {
                return Err(ModelError::TokenOutOfRange {
                    id,
                    vocab: cfg.vocab,
                }
                .into());
            }
            let need = (c.start + c.tokens.len()).div_ceil(self.kv.block_size);
            tables[ci * stride..ci * stride + need].copy_from_slice(&c.blocks[..need]);
            for (i, &t) in c.tokens.iter().enumerate() {
                if i >= c.logits_from {
                    logit_rows.push(tokens.len() as u32);
                }
                tokens.push(t);
                pos.push((c.start + i) as u32);
                chunk_of.push(ci as u32);
            }
        }
        let n = tokens.len();
        let m = logit_rows.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let (dim, q_dim, kv_dim, ffn) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.ffn_dim);

        let d_tokens = g.upload(&tokens)?;
        let d_pos = g.upload(&pos)?;
        let d_chunk = g.upload(&chunk_of)?;
        let d_tables = g.upload(&tables)?;
        let d_rows = g.upload(&logit_rows)?;
        // Activations: x (residual) [n, dim]; xn [n, dim]; q, att [n, q_dim];
        // k, v [n, kv_dim]; gate, up [n, ffn].
        let x = g.zeros::<f32>(n * dim)?;
        let xn = g.zeros::<f32>(n * dim)?;
        let q = g.zeros::<f32>(n * q_dim)?;
        let k = g.zeros::<f32>(n * kv_dim)?;
        let v = g.zeros::<f32>(n * kv_dim)?;
        let att = g.zeros::<f32>(n * q_dim)?;
        let gate = g.zeros::<f32>(n * ffn)?;
        let up = g.zeros::<f32>(n * ffn)?;
        let (split_len, n_splits) = attention_splits(n * cfg.n_head, max_len, self.sms);
        let part = g.zeros::<f32>(attention_scratch(n * cfg.n_head, n_splits, cfg.head_dim))?;
        let p = |s: &CudaSlice<f32>| g.ptr(s, 0);
        let (x_p, xn_p, q_p, k_p, v_p, att_p) = (p(&x), p(&xn), p(&q), p(&k), p(&v), p(&att));
        let (gate_p, up_p) = (p(&gate), p(&up));
        let tile = &self.gemm_tile;
        let mm = |w: &GpuWeight, x: u64, n: usize, y: u64| g.matmul(w, x, n, y, tile, self.mv_max);

        g.dequant(&self.tok_embd, 0, Some(g.ptr(&d_tokens, 0)), n, x_p)?;
        let mut a = AttnArgs {
            k_pool: g.ptr(&self.k_pool, 0),
            v_pool: g.ptr(&self.v_pool, 0),
            pos: g.ptr(&d_pos, 0),
            chunk: g.ptr(&d_chunk, 0),
            tables: g.ptr(&d_tables, 0),
            table_stride: stride,
            layer: 0,
            n_blocks: self.kv.n_blocks,
            block_size: self.kv.block_size,
            n,
            n_head: cfg.n_head,
            n_kv_head: cfg.n_kv_head,
            head_dim: cfg.head_dim,
        };
        let neox = cfg.rope_mode == RopeMode::Neox;
        let inv_freq = p(&self.inv_freq);
        for (li, l) in self.layers.iter().enumerate() {
            g.rms_norm(x_p, p(&l.attn_norm), None, n, dim, cfg.eps, xn_p)?;
            mm(&l.wq, xn_p, n, q_p)?;
            mm(&l.wk, xn_p, n, k_p)?;
            mm(&l.wv, xn_p, n, v_p)?;
            if let Some((bq, bk, bv)) = &l.qkv_bias {
                g.add_bias(q_p, p(bq), q_dim, n * q_dim)?;
                g.add_bias(k_p, p(bk), kv_dim, n * kv_dim)?;
                g.add_bias(v_p, p(bv), kv_dim, n * kv_dim)?;
            }
            g.rope(q_p, a.pos, inv_freq, n, cfg.n_head, cfg.head_dim, neox)?;
            g.rope(k_p, a.pos, inv_freq, n, cfg.n_kv_head, cfg.head_dim, neox)?;
            a.layer = li;
            g.kv_write(k_p, v_p, &a)?;
            g.attention(q_p, &a, split_len, n_splits, p(&part), att_p)?;
            mm(&l.wo, att_p, n, xn_p)?;
            g.add(x_p, xn_p, n * dim)?;

            g.rms_norm(x_p, p(&l.ffn_norm), None, n, dim, cfg.eps, xn_p)?;
            mm(&l.w_gate, xn_p, n, gate_p)?;
            mm(&l.w_up, xn_p, n, up_p)?;
            g.silu_mul(gate_p, up_p, n * ffn)?;
            mm(&l.w_down, gate_p, n, xn_p)?;
            g.add(x_p, xn_p, n * dim)?;
        }

        // Final norm and logits only for the rows asked for: xo [m, dim] (in xn),
        // logits [m, vocab].
        if m == 0 {
            g.stream.synchronize().what("waiting for the GPU")?;
            return Ok(Vec::new());
        }
        g.rms_norm(
            x_p,
            p(&self.out_norm),
            Some(g.ptr(&d_rows, 0)),
            m,
            dim,
            cfg.eps,
            xn_p,
        )?;
        let logits = g.zeros::<f32>(m * cfg.vocab)?;
        let output = self.output.as_ref().unwrap_or(&self.tok_embd);
        mm(output, xn_p, m, p(&logits))?;
        g.download(p(&logits), m * cfg.vocab)
    }

    /// The checks of `KvPool::check_table`: `blocks` covers `n_pos` positions with
    /// block ids inside the pool.
    fn check_table(&self, blocks: &[u32], n_pos: usize) -> Result<(), CudaError> {
        let need = n_pos.div_ceil(self.kv.block_size);
        if blocks.len() < need {
            return Err(ModelError::BlockTable(format!(
                "{n_pos} positions need {need} blocks of {}, the table has {}",
                self.kv.block_size,
                blocks.len()
            ))
            .into());
        }
        if let Some(&b) = blocks[..need]
            .iter()
            .find(|&&b| b as usize >= self.kv.n_blocks)
        {
            return Err(ModelError::BlockTable(format!(
                "block {b} is outside the pool of {} blocks",
                self.kv.n_blocks
            ))
            .into());
        }
        Ok(())
    }
}
