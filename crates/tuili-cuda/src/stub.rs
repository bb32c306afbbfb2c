//! The CUDA backend compiled out: every entry point answers `NotCompiled`.

use tuili_backend::matmul::Weight;
use tuili_backend::ops::RopeMode;
use tuili_models::{Config, Model, SeqChunk};

use crate::{AttentionCase, CudaError, DeviceInfo, KvLayout};

/// The GPUs the driver sees (this build: none, it has no CUDA backend).
pub fn devices() -> Result<Vec<DeviceInfo>, CudaError> {
    Err(CudaError::NotCompiled)
}

/// A model on a GPU (this build has no CUDA backend; it cannot be made).
pub struct CudaModel {
    cfg: Config,
    device: DeviceInfo,
    kv: KvLayout,
}

impl CudaModel {
    /// Answers `NotCompiled`.
    pub fn new(
        _model: &Model,
        _ordinal: usize,
        _kv: KvLayout,
        _progress: &mut dyn FnMut(usize, usize),
    ) -> Result<CudaModel, CudaError> {
        Err(CudaError::NotCompiled)
    }

    /// The model's configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The device the model lives on.
    pub fn device(&self) -> &DeviceInfo {
        &self.device
    }

    /// Sizes of the KV pool.
    pub fn kv_layout(&self) -> KvLayout {
        self.kv
    }

    /// Answers `NotCompiled`.
    pub fn forward_batch(&mut self, _chunks: &[SeqChunk]) -> Result<Vec<f32>, CudaError> {
        Err(CudaError::NotCompiled)
    }
}

/// Single ops on a GPU, host data in and out (this build: none).
pub struct CudaOps {
    device: DeviceInfo,
}

impl CudaOps {
    /// Answers `NotCompiled`.
    pub fn new(_ordinal: usize) -> Result<CudaOps, CudaError> {
        Err(CudaError::NotCompiled)
    }

    /// The device.
    pub fn device(&self) -> &DeviceInfo {
        &self.device
    }

    /// Answers `NotCompiled`.
    pub fn matmul(&self, _w: &Weight, _x: &[f32], _n: usize) -> Result<Vec<f32>, CudaError> {
        Err(CudaError::NotCompiled)
    }

    /// Answers `NotCompiled`.
    pub fn embedding(&self, _w: &Weight, _ids: &[u32]) -> Result<Vec<f32>, CudaError> {
        Err(CudaError::NotCompiled)
    }

    /// Answers `NotCompiled`.
    pub fn rms_norm(&self, _x: &[f32], _w: &[f32], _eps: f32) -> Result<Vec<f32>, CudaError> {
        Err(CudaError::NotCompiled)
    }

    /// Answers `NotCompiled`.
    pub fn rope(
        &self,
        _x: &[f32],
        _head_dim: usize,
        _inv_freq: &[f32],
        _pos: &[usize],
        _mode: RopeMode,
    ) -> Result<Vec<f32>, CudaError> {
        Err(CudaError::NotCompiled)
    }

    /// Answers `NotCompiled`.
    pub fn silu_mul(&self, _gate: &[f32], _up: &[f32]) -> Result<Vec<f32>, CudaError> {
        Err(CudaError::NotCompiled)
    }

    /// Answers `NotCompiled`.
    pub fn add(&self, _x: &[f32], _y: &[f32]) -> Result<Vec<f32>, CudaError> {
        Err(CudaError::NotCompiled)
    }

    /// Answers `NotCompiled`.
    pub fn attention(&self, _case: &AttentionCase) -> Result<Vec<f32>, CudaError> {
        Err(CudaError::NotCompiled)
    }

    /// Answers `NotCompiled`.
    pub fn copy_bandwidth(&self, _bytes: usize, _reps: usize) -> Result<Vec<f64>, CudaError> {
        Err(CudaError::NotCompiled)
    }
}

/// Answers `NotCompiled`.
pub fn compile_kernels(_arch: &str) -> Result<usize, CudaError> {
    Err(CudaError::NotCompiled)
}
