//! One GPU: context, stream, cuBLAS handle and the compiled kernels, with one launch
//! helper per kernel. Buffers are `cudarc` slices (they own the memory); kernels get raw
//! device addresses, so a helper can take any part of any buffer. Everything runs on
//! one stream, in order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::{result as blas_result, sys as blas_sys, CudaBlas};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};
use cudarc::nvrtc::{CompileOptions, Ptx};
use tuili_backend::matmul::Weight;
use tuili_backend::ops::NormKind;
use tuili_gguf::GgmlType;

use super::{guard, DriverResult};
use crate::{CudaError, DeviceInfo};

/// The kernel sources, compiled together as one program.
const SOURCES: [&str; 4] = [
    include_str!("../kernels/common.cuh"),
    include_str!("../kernels/quant.cu"),
    include_str!("../kernels/ops.cu"),
    include_str!("../kernels/attention.cu"),
];

/// Tokens the matrix-vector kernel takes in one launch (`MV_MAX_N` in quant.cu).
pub(crate) const MV_MAX_N: usize = 8;
/// Rows (warps) per block of the matrix-vector kernel (`MV_ROWS`).
const MV_ROWS: usize = 4;
/// Warps per block of `attention_split` (`ATT_WARPS`); head_dim limit (`32 * ATT_MAX_D`).
const ATT_WARPS: usize = 4;
pub(crate) const ATT_MAX_HEAD_DIM: usize = 256;
/// Elements of the f32 buffer a weight is dequantized into before cuBLAS multiplies it;
/// larger weights go through in row tiles.
pub(crate) const GEMM_TILE_ELEMS: usize = 32 << 20;

/// The suffix of a type's kernels (`matvec_q4_0`, `dequant_q4_0`); `None` when the
/// CUDA backend has no decoder for it.
pub(crate) fn kernel_suffix(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::Q4_0 => "q4_0",
        GgmlType::Q4_1 => "q4_1",
        GgmlType::Q5_0 => "q5_0",
        GgmlType::Q5_1 => "q5_1",
        GgmlType::Q8_0 => "q8_0",
        GgmlType::MXFP4 => "mxfp4",
        GgmlType::Q4_K => "q4_k",
        GgmlType::Q5_K => "q5_k",
        GgmlType::Q6_K => "q6_k",
        GgmlType::F32 => "f32",
        GgmlType::F16 => "f16",
        GgmlType::BF16 => "bf16",
        _ => return None,
    })
}

/// Compiles the kernels for `arch` (e.g. `compute_90`) with NVRTC: PTX text.
pub(crate) fn compile(arch: &str) -> Result<String, CudaError> {
    super::check_library(
        "NVRTC",
        // SAFETY: only tries to open the library (dlopen) under its known names; no
        // symbol of it is called.
        unsafe { cudarc::nvrtc::sys::is_culib_present() },
        "nvrtc",
    )?;
    let src: String = SOURCES.join("\n");
    let opts = CompileOptions {
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        ..Default::default()
    };
    let ptx = guard("NVRTC", || cudarc::nvrtc::compile_ptx_with_opts(&src, opts))?.map_err(
        |e| match e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                CudaError::Compile(log.to_string_lossy().into_owned())
            }
            other => CudaError::Compile(format!("{other:?}")),
        },
    )?;
    Ok(ptx.to_src())
}

/// PTX per architecture, compiled once per process.
fn ptx_for(arch: &str) -> Result<String, CudaError> {
    static CACHE: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(p) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(arch) {
        return Ok(p.clone());
    }
    let ptx = compile(arch)?;
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(arch.to_string(), ptx.clone());
    Ok(ptx)
}

/// The functions of the loaded module.
struct Kernels {
    matvec: HashMap<GgmlType, CudaFunction>,
    dequant: HashMap<GgmlType, CudaFunction>,
    rms_norm: CudaFunction,
    layer_norm: CudaFunction,
    add_bias: CudaFunction,
    add: CudaFunction,
    silu_mul: CudaFunction,
    swiglu_oai_mul: CudaFunction,
    gelu_tanh_mul: CudaFunction,
    scale: CudaFunction,
    fill: CudaFunction,
    gather_rows: CudaFunction,
    scatter_add_rows: CudaFunction,
    rope: CudaFunction,
    kv_write: CudaFunction,
    attention_split: CudaFunction,
    attention_combine: CudaFunction,
}

/// An open GPU.
pub(crate) struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    blas: CudaBlas,
    k: Kernels,
    pub info: DeviceInfo,
}

/// A weight matrix on the GPU, in its file's block layout: `[rows, row_bytes]`.
pub(crate) struct GpuWeight {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub row_bytes: usize,
    pub data: CudaSlice<u8>,
}

/// Launches kernel `$f` on the stream with `$cfg` and the arguments in order (each a
/// reference to a device address or a scalar, as the kernel's signature lists them);
/// an error names `$what`. Evaluates to `Result<(), CudaError>`.
///
/// SAFETY (of each use): the arguments match the kernel's parameters in number, order
/// and type, and every address points into a live allocation of the sizes the kernel
/// reads and writes (checked where the buffers are made).
macro_rules! launch {
    ($gpu:expr, $f:expr, $cfg:expr, $what:expr; $($arg:expr),+ $(,)?) => {
        // SAFETY: see the macro's documentation; each use answers for its arguments.
        unsafe { $gpu.stream.launch_builder($f)$(.arg($arg))+.launch($cfg) }
            .what($what)
            .map(|_| ())
    };
}

/// Threads per block of the element-wise kernels.
const EW: u32 = 256;

fn ew_cfg(total: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((total as u32).div_ceil(EW).max(1), 1, 1),
        block_dim: (EW, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// An `i32` kernel argument (sizes are checked to fit when weights are uploaded).
fn i(v: usize) -> i32 {
    v as i32
}

impl Gpu {
    /// Opens device `ordinal`: context, stream, kernels (compiled for its compute
    /// capability) and cuBLAS.
    pub fn open(ordinal: usize) -> Result<Gpu, CudaError> {
        let count = super::device_count()?;
        if ordinal >= count {
            return Err(CudaError::BadOrdinal { ordinal, count });
        }
        let ctx =
            guard("the CUDA driver", || CudaContext::new(ordinal))?.what("creating the context")?;
        // SAFETY: every buffer is made, used and freed on the one stream below, so the
        // order of launches is the only synchronization needed (no cross-stream use for
        // events to guard).
        unsafe { ctx.disable_event_tracking() };
        let info = super::device_info(&ctx, ordinal)?;
        let (major, minor) = info.compute_capability;
        let ptx = ptx_for(&format!("compute_{major}{minor}"))?;
        let module = ctx
            .load_module(Ptx::from_src(ptx))
            .what("loading the kernels")?;
        let f = |name: &str| module.load_function(name).what(name);
        let mut matvec = HashMap::new();
        let mut dequant = HashMap::new();
        // Every weight type the backend has kernels for: those with a kernel suffix.
        for (ty, suffix) in GgmlType::ALL
            .into_iter()
            .filter_map(|t| kernel_suffix(t).map(|s| (t, s)))
        {
            matvec.insert(ty, f(&format!("matvec_{suffix}"))?);
            dequant.insert(ty, f(&format!("dequant_{suffix}"))?);
        }
        let k = Kernels {
            matvec,
            dequant,
            rms_norm: f("rms_norm")?,
            layer_norm: f("layer_norm")?,
            add_bias: f("add_bias")?,
            add: f("add")?,
            silu_mul: f("silu_mul")?,
            swiglu_oai_mul: f("swiglu_oai_mul")?,
            gelu_tanh_mul: f("gelu_tanh_mul")?,
            scale: f("scale")?,
            fill: f("fill")?,
            gather_rows: f("gather_rows")?,
            scatter_add_rows: f("scatter_add_rows")?,
            rope: f("rope")?,
            kv_write: f("kv_write")?,
            attention_split: f("attention_split")?,
            attention_combine: f("attention_combine")?,
        };
        let stream = ctx.default_stream();
        // SAFETY: only tries to open the library (dlopen) under its known names.
        let blas_present = unsafe { blas_sys::is_culib_present() };
        super::check_library("cuBLAS", blas_present, "cublas")?;
        let blas = guard("cuBLAS", || CudaBlas::new(stream.clone()))?
            .map_err(|e| CudaError::Library(format!("cuBLAS: {e:?}")))?;
        Ok(Gpu {
            ctx,
            stream,
            blas,
            k,
            info,
        })
    }

    /// Makes this GPU's context current on the calling thread.
    pub fn bind(&self) -> Result<(), CudaError> {
        self.ctx.bind_to_thread().what("binding the context")
    }

    /// A zeroed buffer of `n` elements.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>, CudaError> {
        self.stream
            .alloc_zeros::<T>(n.max(1))
            .what("allocating device memory")
    }

    /// A copy of `data` on the device.
    pub fn upload<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        data: &[T],
    ) -> Result<CudaSlice<T>, CudaError> {
        if data.is_empty() {
            return self.zeros(1);
        }
        self.stream.clone_htod(data).what("copying to the device")
    }

    /// Copies `n` elements from device address `src` to the host (waits for the stream).
    pub fn download(&self, src: u64, n: usize) -> Result<Vec<f32>, CudaError> {
        let mut out = vec![0f32; n];
        if n > 0 {
            // SAFETY: callers pass the address of at least `n` f32s of a live buffer of
            // this stream (`ptr` of a `CudaSlice<f32>`); `out` holds `n`, and the stream
            // is synchronized below, before `out` is read or returned.
            unsafe {
                cudarc::driver::result::memcpy_dtoh_async(&mut out, src, self.stream.cu_stream())
            }
            .what("copying to the host")?;
        }
        self.stream.synchronize().what("waiting for the GPU")?;
        Ok(out)
    }

    /// Device address of element `offset` of `s`.
    pub fn ptr<T>(&self, s: &CudaSlice<T>, offset: usize) -> u64 {
        let (p, _sync) = s.device_ptr(&self.stream);
        p + (offset * std::mem::size_of::<T>()) as u64
    }

    /// Uploads a weight, checking that the backend has its kernels and that its sizes fit
    /// the kernels' 32-bit arguments.
    pub fn upload_weight(&self, w: &Weight) -> Result<GpuWeight, CudaError> {
        if kernel_suffix(w.ty()).is_none() {
            return Err(CudaError::Unsupported(format!(
                "weights of type {} (supported: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, MXFP4, Q4_K, Q5_K, Q6_K, F32, F16, BF16)",
                w.ty()
            )));
        }
        if !w.cols().is_multiple_of(8) || w.rows() * w.cols() >= i32::MAX as usize * 8 {
            return Err(CudaError::Unsupported(format!(
                "a {} x {} weight (rows of a multiple of 8 elements and under 2^34 elements are)",
                w.rows(),
                w.cols()
            )));
        }
        Ok(GpuWeight {
            ty: w.ty(),
            rows: w.rows(),
            cols: w.cols(),
            row_bytes: w.row_bytes(),
            data: self.upload(w.bytes())?,
        })
    }

    /// `y[n, rows] = x[n, cols] · wᵀ`: the matrix-vector kernel for up to `MV_MAX_N`
    /// tokens at a time while `n <= mv_max`, else dequantized tiles through cuBLAS.
    /// `tile`: an f32 buffer of at least `GEMM_TILE_ELEMS` (or the whole weight).
    pub fn matmul(
        &self,
        w: &GpuWeight,
        x: u64,
        n: usize,
        y: u64,
        tile: &CudaSlice<f32>,
        mv_max: usize,
    ) -> Result<(), CudaError> {
        if n == 0 {
            return Ok(());
        }
        if n <= mv_max {
            let mut j = 0;
            while j < n {
                let nj = (n - j).min(MV_MAX_N);
                let xj = x + (j * w.cols * 4) as u64;
                let yj = y + (j * w.rows * 4) as u64;
                self.matvec(w, xj, nj, yj)?;
                j += nj;
            }
            return Ok(());
        }
        let tile_rows = (tile.len() / w.cols).clamp(1, w.rows);
        let tp = self.ptr(tile, 0);
        let mut r0 = 0;
        while r0 < w.rows {
            let nr = (w.rows - r0).min(tile_rows);
            self.dequant(w, r0, None, nr, tp)?;
            // In cuBLAS's column-major terms: the tile (row-major [nr, cols]) is Wc
            // [cols, nr], X (row-major [n, cols]) is Xc [cols, n] and Y (row-major
            // [n, rows]) is Yc [rows, n]; rows r0..r0+nr of Yc = Wcᵀ · Xc.
            let (alpha, beta) = (1f32, 0f32);
            // SAFETY: the tile holds `nr * cols` f32s (`tile_rows` is its length over
            // `cols`, and callers pass at least one row: `GEMM_TILE_ELEMS` or the whole
            // weight); `x` (`[n, cols]`) and `y` (`[n, rows]`) are the caller's f32
            // buffers on this stream, which cuBLAS runs on; the leading dimensions are
            // the row lengths; alpha and beta outlive the call, which reads them at once.
            unsafe {
                blas_result::sgemm(
                    *self.blas.handle(),
                    blas_sys::cublasOperation_t::CUBLAS_OP_T,
                    blas_sys::cublasOperation_t::CUBLAS_OP_N,
                    i(nr),
                    i(n),
                    i(w.cols),
                    &alpha,
                    tp as *const f32,
                    i(w.cols),
                    x as *const f32,
                    i(w.cols),
                    &beta,
                    (y + (r0 * 4) as u64) as *mut f32,
                    i(w.rows),
                )
            }
            .map_err(|e| CudaError::Driver {
                what: "cuBLAS sgemm".into(),
                msg: format!("{e:?}"),
            })?;
            r0 += nr;
        }
        Ok(())
    }

    /// `y[n, rows] = x[n, cols] · wᵀ` for `n <= MV_MAX_N`, one warp per row.
    pub fn matvec(&self, w: &GpuWeight, x: u64, n: usize, y: u64) -> Result<(), CudaError> {
        let f = &self.k.matvec[&w.ty];
        let cfg = LaunchConfig {
            grid_dim: (w.rows.div_ceil(MV_ROWS) as u32, 1, 1),
            block_dim: ((32 * MV_ROWS) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let wp = self.ptr(&w.data, 0);
        let (rows, row_bytes, slices, cols, n) =
            (i(w.rows), i(w.row_bytes), i(w.cols / 8), i(w.cols), i(n));
        launch!(self, f, cfg, "matvec"; &wp, &rows, &row_bytes, &slices, &x, &cols, &n, &y)
    }

    /// `out[i, :] = w[ids[i], :]` in f32 for `i < n_rows` (`ids = None`: rows
    /// `first..first + n_rows`). `ids`: device address of `[n_rows]` u32.
    pub fn dequant(
        &self,
        w: &GpuWeight,
        first: usize,
        ids: Option<u64>,
        n_rows: usize,
        out: u64,
    ) -> Result<(), CudaError> {
        let f = &self.k.dequant[&w.ty];
        let slices = w.cols / 8;
        let wp = self.ptr(&w.data, 0) + (first * w.row_bytes) as u64;
        let ids = ids.unwrap_or(0);
        let (row_bytes, slices_i, n) = (i(w.row_bytes), i(slices), i(n_rows));
        launch!(self, f, ew_cfg(n_rows * slices), "dequant";
            &wp, &row_bytes, &slices_i, &ids, &n, &out
        )
    }

    /// A norm of `kind` (weight `w`, bias `b` added after it) of `n` rows of `[dim]`, rows
    /// taken at `rows` (device `[n]` u32) or in order.
    #[allow(clippy::too_many_arguments)]
    pub fn norm(
        &self,
        kind: NormKind,
        x: u64,
        w: u64,
        b: Option<u64>,
        rows: Option<u64>,
        n: usize,
        dim: usize,
        eps: f32,
        out: u64,
    ) -> Result<(), CudaError> {
        if n == 0 {
            return Ok(());
        }
        let cfg = LaunchConfig {
            grid_dim: (n as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let rows = rows.unwrap_or(0);
        let dim = i(dim);
        match (kind, b) {
            (NormKind::Rms, None) => {
                launch!(self, &self.k.rms_norm, cfg, "rms_norm"; &x, &w, &rows, &dim, &eps, &out)
            }
            (NormKind::Rms, Some(_)) => Err(CudaError::Unsupported(
                "an RMSNorm with a bias (no family has one)".into(),
            )),
            (NormKind::Layer, b) => {
                // A null pointer: no bias.
                let b = b.unwrap_or(0);
                launch!(self, &self.k.layer_norm, cfg, "layer_norm";
                    &x, &w, &b, &rows, &dim, &eps, &out
                )
            }
        }
    }

    /// `x[n, d] += bias[d]` on every row.
    pub fn add_bias(&self, x: u64, bias: u64, d: usize, total: usize) -> Result<(), CudaError> {
        let (d, t) = (i(d), i(total));
        launch!(self, &self.k.add_bias, ew_cfg(total), "add_bias"; &x, &bias, &d, &t)
    }

    /// `x += y` over `total` elements.
    pub fn add(&self, x: u64, y: u64, total: usize) -> Result<(), CudaError> {
        let t = i(total);
        launch!(self, &self.k.add, ew_cfg(total), "add"; &x, &y, &t)
    }

    /// `g = silu(g) * u` over `total` elements.
    pub fn silu_mul(&self, g: u64, u: u64, total: usize) -> Result<(), CudaError> {
        let t = i(total);
        launch!(self, &self.k.silu_mul, ew_cfg(total), "silu_mul"; &g, &u, &t)
    }

    /// gpt-oss's clamped SwiGLU, `g = swiglu_oai(g, u)`, over `total` elements.
    pub fn swiglu_oai_mul(&self, g: u64, u: u64, total: usize) -> Result<(), CudaError> {
        let t = i(total);
        launch!(self, &self.k.swiglu_oai_mul, ew_cfg(total), "swiglu_oai_mul"; &g, &u, &t)
    }

    /// `g = gelu(g)` (tanh form) over `total` elements.
    pub fn gelu(&self, g: u64, total: usize) -> Result<(), CudaError> {
        // A null pointer for `u`: no gate.
        self.gelu_tanh_mul(g, 0, total)
    }

    /// `g = gelu(g) * u` (tanh form) over `total` elements.
    pub fn gelu_tanh_mul(&self, g: u64, u: u64, total: usize) -> Result<(), CudaError> {
        let t = i(total);
        launch!(self, &self.k.gelu_tanh_mul, ew_cfg(total), "gelu_tanh_mul"; &g, &u, &t)
    }

    /// `x *= s` over `total` elements.
    pub fn scale(&self, x: u64, s: f32, total: usize) -> Result<(), CudaError> {
        let t = i(total);
        launch!(self, &self.k.scale, ew_cfg(total), "scale"; &x, &s, &t)
    }

    /// `x = v` over `total` elements.
    pub fn fill(&self, x: u64, v: f32, total: usize) -> Result<(), CudaError> {
        let t = i(total);
        launch!(self, &self.k.fill, ew_cfg(total), "fill"; &x, &v, &t)
    }

    /// `dst[r] = src[idx[r]]` for `n` rows of `dim` (`idx`: device `[n]` u32).
    pub fn gather_rows(
        &self,
        src: u64,
        idx: u64,
        n: usize,
        dim: usize,
        dst: u64,
    ) -> Result<(), CudaError> {
        let (d, t) = (i(dim), i(n * dim));
        launch!(self, &self.k.gather_rows, ew_cfg(n * dim), "gather_rows"; &src, &idx, &d, &t, &dst)
    }

    /// `dst[idx[r]] += w[r] · y[r]` for `n` rows of `dim` (distinct `idx`).
    #[allow(clippy::too_many_arguments)]
    pub fn scatter_add_rows(
        &self,
        y: u64,
        idx: u64,
        w: u64,
        n: usize,
        dim: usize,
        dst: u64,
    ) -> Result<(), CudaError> {
        let (d, t) = (i(dim), i(n * dim));
        launch!(self, &self.k.scatter_add_rows, ew_cfg(n * dim), "scatter_add_rows";
            &y, &idx, &w, &d, &t, &dst
        )
    }

    /// RoPE in place on `x: [n, n_heads, head_dim]` at positions `pos: [n]` u32, turning
    /// the first `2 * n_pairs` dimensions of each head (`inv_freq: [n_pairs]`), cos and sin
    /// multiplied by `mscale`.
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &self,
        x: u64,
        pos: u64,
        inv_freq: u64,
        n_pairs: usize,
        n: usize,
        n_heads: usize,
        head_dim: usize,
        neox: bool,
        mscale: f32,
    ) -> Result<(), CudaError> {
        let total = n * n_heads * n_pairs;
        let (n, nh, hd, np, nx) = (i(n), i(n_heads), i(head_dim), i(n_pairs), neox as i32);
        launch!(self, &self.k.rope, ew_cfg(total), "rope";
            &x, &pos, &inv_freq, &n, &nh, &hd, &np, &nx, &mscale
        )
    }

    /// Writes K and V of `n` tokens into layer `args.layer` of the pools.
    pub fn kv_write(&self, k: u64, v: u64, a: &AttnArgs) -> Result<(), CudaError> {
        let total = a.n * a.kv_dim();
        let (tab_stride, layer, n_blocks, bs, kv_dim, n) = (
            i(a.table_stride),
            i(a.layer),
            i(a.n_blocks),
            i(a.block_size),
            i(a.kv_dim()),
            i(a.n),
        );
        launch!(self, &self.k.kv_write, ew_cfg(total), "kv_write";
            &k, &v, &a.k_pool, &a.v_pool, &a.pos, &a.chunk, &a.tables, &tab_stride, &layer,
            &n_blocks, &bs, &kv_dim, &n
        )
    }

    /// Attention of `q: [n, n_head, head_dim]` over the pools into `out` (same shape),
    /// scores multiplied by `scale` (and the temperature `(scale, floor)` of the token's
    /// position), each token seeing its last `window` positions (all for `None`). `part`:
    /// scratch of at least `attention_scratch(n * n_head, n_splits, head_dim)`.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        q: u64,
        a: &AttnArgs,
        scale: f32,
        window: Option<usize>,
        temperature: Option<(f32, f32)>,
        softcap: Option<f32>,
        sinks: Option<u64>,
        split_len: usize,
        n_splits: usize,
        part: u64,
        out: u64,
    ) -> Result<(), CudaError> {
        let pairs = a.n * a.n_head;
        if pairs == 0 {
            return Ok(());
        }
        let part_o = part;
        let part_ml = part + (pairs * n_splits * a.head_dim * 4) as u64;
        let window = i(window.unwrap_or(0));
        let (temp_scale, temp_floor) = temperature.unwrap_or((0.0, 0.0));
        let softcap = softcap.unwrap_or(0.0);
        let (tab_stride, layer, n_blocks, bs, nh, nkv, hd, sl, ns) = (
            i(a.table_stride),
            i(a.layer),
            i(a.n_blocks),
            i(a.block_size),
            i(a.n_head),
            i(a.n_kv_head),
            i(a.head_dim),
            i(split_len),
            i(n_splits),
        );
        let cfg = LaunchConfig {
            grid_dim: (pairs as u32, n_splits as u32, 1),
            block_dim: ((32 * ATT_WARPS) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(self, &self.k.attention_split, cfg, "attention_split";
            &q, &a.k_pool, &a.v_pool, &a.pos, &a.chunk, &a.tables, &tab_stride, &layer, &n_blocks,
            &bs, &nh, &nkv, &hd, &scale, &window, &temp_scale, &temp_floor, &softcap, &sl, &part_o,
            &part_ml
        )?;
        let cfg = LaunchConfig {
            grid_dim: (pairs as u32, 1, 1),
            block_dim: (a.head_dim.next_power_of_two().clamp(32, 256) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // A null pointer: no sinks.
        let sinks = sinks.unwrap_or(0);
        launch!(self, &self.k.attention_combine, cfg, "attention_combine";
            &part_o, &part_ml, &ns, &hd, &sinks, &nh, &out
        )
    }
}

/// f32 elements of scratch `attention` needs.
pub(crate) fn attention_scratch(pairs: usize, n_splits: usize, head_dim: usize) -> usize {
    pairs * n_splits * (head_dim + 2)
}

/// How to cut each sequence for attention: (positions per split, splits), enough blocks
/// to fill the GPU (`sms` multiprocessors) when there are few (token, head) pairs.
pub(crate) fn attention_splits(pairs: usize, max_len: usize, sms: usize) -> (usize, usize) {
    let max_len = max_len.max(1);
    let want = (2 * sms).div_ceil(pairs.max(1)).max(1);
    // No split shorter than 64 positions: below that the merge costs more than it saves.
    let n_splits = want.min(max_len.div_ceil(64)).max(1);
    let split_len = max_len.div_ceil(n_splits);
    (split_len, max_len.div_ceil(split_len))
}

/// Where the K/V of a batch live, for `kv_write` and `attention`.
#[derive(Clone, Copy)]
pub(crate) struct AttnArgs {
    /// Pools `[n_layer, n_blocks, block_size, kv_dim]`.
    pub k_pool: u64,
    pub v_pool: u64,
    /// Per token: position `[n]` and chunk index `[n]` (u32).
    pub pos: u64,
    pub chunk: u64,
    /// Block tables `[n_chunks, table_stride]` (u32).
    pub tables: u64,
    pub table_stride: usize,
    pub layer: usize,
    pub n_blocks: usize,
    pub block_size: usize,
    pub n: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

impl AttnArgs {
    fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }
}

/// `.what("doing x")` on driver results: the error names what was being done.
pub(crate) trait What<T> {
    fn what(self, what: &str) -> Result<T, CudaError>;
}

impl<T> What<T> for DriverResult<T> {
    fn what(self, what: &str) -> Result<T, CudaError> {
        self.map_err(|e| CudaError::Driver {
            what: what.to_string(),
            msg: format!("{e:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_fill_the_gpu_and_cover_every_position() {
        for (pairs, len, sms) in [
            (14, 4096, 132),
            (14 * 512, 512, 132),
            (1, 1, 132),
            (9, 100, 8),
        ] {
            let (split_len, n) = attention_splits(pairs, len, sms);
            assert!(split_len * n >= len, "{pairs} {len}");
            assert!(split_len * (n - 1) < len, "{pairs} {len}: an empty split");
        }
        // Decode on a long context is split; a long prefill is not.
        assert!(attention_splits(14, 4096, 132).1 > 1);
        assert_eq!(attention_splits(14 * 512, 512, 132).1, 1);
    }
}
