//! The CUDA backend: the model's forward pass on an NVIDIA GPU.
//!
//! # Design
//!
//! - **No toolkit to build.** The `cuda` feature compiles this crate against `cudarc` with
//!   dynamic loading: `libcuda`, `libnvrtc` and `libcublas` are opened when a program
//!   first asks for a device, so CI builds and lints the backend on machines with no GPU
//!   and no CUDA toolkit. Without the feature every entry point answers
//!   [`CudaError::NotCompiled`]; with it but without a driver or a device, they answer
//!   [`CudaError::NoDevice`] naming why. Nothing here panics on a missing library: the
//!   libraries are probed before `cudarc` is asked to load them.
//! - **Kernels are CUDA C sources** (`src/kernels/*.cu`), compiled once per process with
//!   NVRTC for the device's compute capability. They read the weights in ggml's block
//!   layouts, byte for byte what `tuili_backend::quant` decodes, and keep activations in
//!   f32, so the reference for every kernel is the CPU's scalar code.
//! - **One slice of 8 elements is the unit of every quantized kernel.** Each weight type
//!   has one device function that decodes 8 consecutive elements of a row (`decode8`);
//!   the matrix-vector kernel (one warp per row, up to 8 tokens at once) and the
//!   dequantizer (for cuBLAS, larger batches, and the embedding lookup) are both built
//!   from it, so a new type is one function.
//! - **Weights upload once**, at [`CudaModel::new`]; the paged KV pool lives on the GPU
//!   with the block semantics of `tuili_models::KvPool`, so the serving engine's block
//!   manager drives it unchanged.
#![deny(missing_docs)]

use tuili_models::{KvType, ModelError};

#[cfg(feature = "cuda")]
mod imp;
#[cfg(not(feature = "cuda"))]
#[path = "stub.rs"]
mod imp;

pub use imp::{compile_kernels, devices, CudaModel, CudaOps};

/// Everything that can go wrong on the CUDA backend.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// This build has no CUDA backend.
    #[error("tuili was built without the `cuda` feature; rebuild with --features cuda")]
    NotCompiled,
    /// The driver library, its initialisation or a device is missing.
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// A device number past the last device.
    #[error("no CUDA device: cuda:{ordinal} asked for, {count} device(s) present")]
    BadOrdinal {
        /// The device asked for.
        ordinal: usize,
        /// Devices present.
        count: usize,
    },
    /// A CUDA library needed after the driver (NVRTC, cuBLAS) cannot be loaded.
    #[error("CUDA library missing: {0}")]
    Library(String),
    /// A driver call failed.
    #[error("CUDA driver error in {what}: {msg}")]
    Driver {
        /// What was being done.
        what: String,
        /// The driver's message.
        msg: String,
    },
    /// NVRTC rejected the kernels.
    #[error("compiling the CUDA kernels: {0}")]
    Compile(String),
    /// The model uses something the CUDA backend does not run.
    #[error("not supported on CUDA: {0}")]
    Unsupported(String),
    /// The model's own checks (block tables, token ids) failed.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// One GPU as the driver reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    /// The `N` of `cuda:N`.
    pub ordinal: usize,
    /// Marketing name, e.g. "NVIDIA H200".
    pub name: String,
    /// Memory on the device, in bytes.
    pub total_bytes: usize,
    /// Memory free now, in bytes.
    pub free_bytes: usize,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
}

/// Whether this build has the CUDA backend (the `cuda` feature).
pub fn is_compiled() -> bool {
    cfg!(feature = "cuda")
}

/// Sizes and element types of a model's paged KV pool (on the CPU or a GPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    /// Blocks in the pool.
    pub n_blocks: usize,
    /// Positions per block.
    pub block_size: usize,
    /// Blocks of the local (sliding-window) layers' own region; 0: none, every layer in
    /// the `n_blocks` region (see `tuili_models::KvPool::new_split`).
    pub n_local_blocks: usize,
    /// How keys are stored.
    pub k_type: KvType,
    /// How values are stored.
    pub v_type: KvType,
}

impl KvLayout {
    /// A layout of `n_blocks` blocks of `block_size` positions, K and V in f32.
    pub fn f32(n_blocks: usize, block_size: usize) -> KvLayout {
        KvLayout {
            n_blocks,
            block_size,
            n_local_blocks: 0,
            k_type: KvType::F32,
            v_type: KvType::F32,
        }
    }
}

/// Bytes the GPU needs for `model`'s weights as uploaded (matrices in their own types,
/// norms and biases in f32), not counting the KV pool and scratch.
pub fn weight_bytes(model: &tuili_models::Model) -> usize {
    let w = model.weights();
    let mats: usize = model.matrices().iter().map(|m| m.bytes().len()).sum();
    mats + w.vecs.iter().map(|v| v.len() * 4).sum::<usize>()
}

/// One attention problem for [`CudaOps::attention`]: one sequence whose K/V at
/// positions `0..n_pos` are given, and queries of tokens at positions `pos` (each
/// attends to positions `0..=pos[t]`, or the last `window` of them).
#[derive(Debug, Clone)]
pub struct AttentionCase<'a> {
    /// Queries: `[n, n_head, head_dim]`.
    pub q: &'a [f32],
    /// Keys: `[n_pos, n_kv_head, head_dim]`.
    pub k: &'a [f32],
    /// Values: `[n_pos, n_kv_head, head_dim]`.
    pub v: &'a [f32],
    /// Position of each query token: `[n]`.
    pub pos: &'a [usize],
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_kv_head: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Positions per KV block (the blocks are placed in the pool in a shuffled order).
    pub block_size: usize,
    /// Positions per split of the sequence (small values test the merge of splits).
    pub split_len: usize,
    /// A sliding window: each token sees its last `window` positions (`None`: all).
    pub window: Option<usize>,
    /// Attention sinks, one logit per query head (`[n_head]`; gpt-oss).
    pub sinks: Option<&'a [f32]>,
    /// Logit soft-capping: scores become `cap · tanh(score / cap)` (Gemma 2).
    pub softcap: Option<f32>,
}
