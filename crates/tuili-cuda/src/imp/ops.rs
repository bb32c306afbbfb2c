//! Single ops on the GPU with host data in and out: what the cross-backend tests
//! compare with the CPU, one op at a time.

use std::time::Instant;

use tuili_backend::matmul::Weight;
use tuili_backend::ops::{NormKind, RopeMode};

use super::gpu::{attention_scratch, AttnArgs, Gpu, What, GEMM_TILE_ELEMS};
use crate::{AttentionCase, CudaError, DeviceInfo};

/// One GPU for running single ops.
pub struct CudaOps {
    gpu: Gpu,
}

fn check_len(what: &str, got: usize, want: usize) -> Result<(), CudaError> {
    if got == want {
        Ok(())
    } else {
        Err(CudaError::Unsupported(format!(
            "{what} has {got} elements, expected {want}"
        )))
    }
}

impl CudaOps {
    /// Opens device `ordinal` and compiles the kernels.
    pub fn new(ordinal: usize) -> Result<CudaOps, CudaError> {
        Ok(CudaOps {
            gpu: Gpu::open(ordinal)?,
        })
    }

    /// The device.
    pub fn device(&self) -> &DeviceInfo {
        &self.gpu.info
    }

    /// `x: [n, cols]` times `wᵀ` → `[n, rows]`: the matrix-vector kernel for `n <= 8`,
    /// dequantization and cuBLAS above.
    pub fn matmul(&self, w: &Weight, x: &[f32], n: usize) -> Result<Vec<f32>, CudaError> {
        let g = &self.gpu;
        g.bind()?;
        check_len("x", x.len(), n * w.cols())?;
        let gw = g.upload_weight(w)?;
        let dx = g.upload(x)?;
        let y = g.zeros::<f32>(n * w.rows())?;
        // A small tile, so that tests go through more than one cuBLAS tile.
        let tile = g.zeros::<f32>((w.rows() * w.cols() / 3).clamp(w.cols(), GEMM_TILE_ELEMS))?;
        g.matmul(
            &gw,
            g.ptr(&dx, 0),
            n,
            g.ptr(&y, 0),
            &tile,
            super::gpu::MV_MAX_N,
        )?;
        g.download(g.ptr(&y, 0), n * w.rows())
    }

    /// Rows `ids` of `w`, in f32: `[ids.len(), cols]`.
    pub fn embedding(&self, w: &Weight, ids: &[u32]) -> Result<Vec<f32>, CudaError> {
        let g = &self.gpu;
        g.bind()?;
        if let Some(&id) = ids.iter().find(|&&i| i as usize >= w.rows()) {
            return Err(CudaError::Unsupported(format!(
                "row {id} of a {}-row weight",
                w.rows()
            )));
        }
        let gw = g.upload_weight(w)?;
        let d_ids = g.upload(ids)?;
        let out = g.zeros::<f32>(ids.len() * w.cols())?;
        g.dequant(&gw, 0, Some(g.ptr(&d_ids, 0)), ids.len(), g.ptr(&out, 0))?;
        g.download(g.ptr(&out, 0), ids.len() * w.cols())
    }

    /// RMSNorm of each row of `x: [n, dim]` with `w: [dim]`.
    pub fn rms_norm(&self, x: &[f32], w: &[f32], eps: f32) -> Result<Vec<f32>, CudaError> {
        let g = &self.gpu;
        g.bind()?;
        let dim = w.len().max(1);
        let n = x.len() / dim;
        check_len("x", x.len(), n * dim)?;
        let (dx, dw, out) = (g.upload(x)?, g.upload(w)?, g.zeros::<f32>(x.len())?);
        g.norm(
            NormKind::Rms,
            g.ptr(&dx, 0),
            g.ptr(&dw, 0),
            None,
            None,
            n,
            dim,
            eps,
            g.ptr(&out, 0),
        )?;
        g.download(g.ptr(&out, 0), x.len())
    }

    /// RoPE of `x: [n, heads, head_dim]`, token `t` at position `pos[t]`, over the first
    /// `2 * inv_freq.len()` dimensions of each head.
    pub fn rope(
        &self,
        x: &[f32],
        head_dim: usize,
        inv_freq: &[f32],
        pos: &[usize],
        mode: RopeMode,
    ) -> Result<Vec<f32>, CudaError> {
        let g = &self.gpu;
        g.bind()?;
        let n = pos.len();
        let heads = x.len() / (n * head_dim).max(1);
        check_len("x", x.len(), n * heads * head_dim)?;
        if inv_freq.len() > head_dim / 2 {
            check_len("inv_freq", inv_freq.len(), head_dim / 2)?;
        }
        let pos: Vec<u32> = pos.iter().map(|&p| p as u32).collect();
        let (dx, dp, df) = (g.upload(x)?, g.upload(&pos)?, g.upload(inv_freq)?);
        g.rope(
            g.ptr(&dx, 0),
            g.ptr(&dp, 0),
            g.ptr(&df, 0),
            inv_freq.len(),
            n,
            heads,
            head_dim,
            mode == RopeMode::Neox,
            1.0,
        )?;
        g.download(g.ptr(&dx, 0), x.len())
    }

    /// `silu(gate) * up`, element-wise.
    pub fn silu_mul(&self, gate: &[f32], up: &[f32]) -> Result<Vec<f32>, CudaError> {
        let g = &self.gpu;
        g.bind()?;
        check_len("up", up.len(), gate.len())?;
        let (dg, du) = (g.upload(gate)?, g.upload(up)?);
        g.silu_mul(g.ptr(&dg, 0), g.ptr(&du, 0), gate.len())?;
        g.download(g.ptr(&dg, 0), gate.len())
    }

    /// `x + y`, element-wise.
    pub fn add(&self, x: &[f32], y: &[f32]) -> Result<Vec<f32>, CudaError> {
        let g = &self.gpu;
        g.bind()?;
        check_len("y", y.len(), x.len())?;
        let (dx, dy) = (g.upload(x)?, g.upload(y)?);
        g.add(g.ptr(&dx, 0), g.ptr(&dy, 0), x.len())?;
        g.download(g.ptr(&dx, 0), x.len())
    }

    /// Causal attention of one sequence (see [`AttentionCase`]): `[n, n_head, head_dim]`.
    /// The K/V go into a one-layer pool through a shuffled block table, as the serving
    /// engine's block manager would place them.
    pub fn attention(&self, c: &AttentionCase) -> Result<Vec<f32>, CudaError> {
        let g = &self.gpu;
        g.bind()?;
        let (hd, bs) = (c.head_dim, c.block_size.max(1));
        let kv_dim = c.n_kv_head * hd;
        let n = c.pos.len();
        let n_pos = c.k.len() / kv_dim.max(1);
        check_len("q", c.q.len(), n * c.n_head * hd)?;
        check_len("v", c.v.len(), c.k.len())?;
        if c.pos.iter().any(|&p| p >= n_pos)
            || c.n_kv_head == 0
            || !c.n_head.is_multiple_of(c.n_kv_head)
        {
            return Err(CudaError::Unsupported(
                "an attention case whose positions or heads do not fit".into(),
            ));
        }
        // Blocks in reverse order, with one unused block first: block b of the sequence
        // is pool block n_blocks - 1 - b.
        let n_seq_blocks = n_pos.div_ceil(bs);
        let n_blocks = n_seq_blocks + 1;
        let table: Vec<u32> = (0..n_seq_blocks)
            .map(|b| (n_blocks - 1 - b) as u32)
            .collect();
        let k_pool = g.zeros::<f32>(n_blocks * bs * kv_dim)?;
        let v_pool = g.zeros::<f32>(n_blocks * bs * kv_dim)?;
        let all_pos: Vec<u32> = (0..n_pos as u32).collect();
        let zeros = vec![0u32; n_pos.max(n)];
        let (dk, dv) = (g.upload(c.k)?, g.upload(c.v)?);
        let d_table = g.upload(&table)?;
        let d_all = g.upload(&all_pos)?;
        let d_chunk = g.upload(&zeros)?;
        let mut a = AttnArgs {
            k_pool: g.ptr(&k_pool, 0),
            v_pool: g.ptr(&v_pool, 0),
            pos: g.ptr(&d_all, 0),
            chunk: g.ptr(&d_chunk, 0),
            tables: g.ptr(&d_table, 0),
            table_stride: n_seq_blocks,
            layer: 0,
            n_blocks,
            block_size: bs,
            n: n_pos,
            n_head: c.n_head,
            n_kv_head: c.n_kv_head,
            head_dim: hd,
        };
        g.kv_write(g.ptr(&dk, 0), g.ptr(&dv, 0), &a)?;
        let pos: Vec<u32> = c.pos.iter().map(|&p| p as u32).collect();
        let d_pos = g.upload(&pos)?;
        a.pos = g.ptr(&d_pos, 0);
        a.n = n;
        let max_len = c.pos.iter().max().map_or(1, |&p| p + 1);
        let split_len = c.split_len.max(1);
        let n_splits = max_len.div_ceil(split_len);
        let part = g.zeros::<f32>(attention_scratch(n * c.n_head, n_splits, hd))?;
        let dq = g.upload(c.q)?;
        let out = g.zeros::<f32>(c.q.len())?;
        let sinks = c.sinks.map(|s| g.upload(s)).transpose()?;
        g.attention(
            g.ptr(&dq, 0),
            &a,
            1.0 / (hd as f32).sqrt(),
            c.window,
            None,
            c.softcap,
            sinks.as_ref().map(|s| g.ptr(s, 0)),
            split_len,
            n_splits,
            g.ptr(&part, 0),
            g.ptr(&out, 0),
        )?;
        g.download(g.ptr(&out, 0), c.q.len())
    }

    /// Device-to-device copy rates in bytes per second (bytes read plus bytes written)
    /// of `reps` copies of a `bytes` buffer, after one warm-up copy.
    pub fn copy_bandwidth(&self, bytes: usize, reps: usize) -> Result<Vec<f64>, CudaError> {
        let g = &self.gpu;
        g.bind()?;
        let src = g.zeros::<u8>(bytes)?;
        let dst = g.zeros::<u8>(bytes)?;
        let mut rates = Vec::with_capacity(reps);
        for rep in 0..=reps {
            g.stream.synchronize().what("waiting for the GPU")?;
            let t0 = Instant::now();
            // SAFETY: both addresses are the starts of byte buffers of `bytes` bytes made
            // above on this stream and alive until the end of the function; the stream is
            // synchronized before they drop.
            unsafe {
                cudarc::driver::result::memcpy_dtod_async(
                    g.ptr(&dst, 0),
                    g.ptr(&src, 0),
                    bytes,
                    g.stream.cu_stream(),
                )
            }
            .what("device-to-device copy")?;
            g.stream.synchronize().what("waiting for the GPU")?;
            if rep > 0 {
                rates.push(2.0 * bytes as f64 / t0.elapsed().as_secs_f64());
            }
        }
        Ok(rates)
    }
}
