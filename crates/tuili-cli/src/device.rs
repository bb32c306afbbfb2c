//! `--device cpu|cuda|cuda:N|auto`: where a model runs, and the runner that puts it there;
//! `--cache-type-k`/`--cache-type-v`: how its KV cache stores keys and values.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use tuili_cuda::{CudaModel, DeviceInfo};
pub use tuili_engine::Device;
use tuili_engine::{CpuRunner, EngineError, KvLayout, KvType, Runner};
use tuili_models::Model;

use crate::load::tracing_line;
use crate::progress::Bar;

/// The `--device` option, and the KV cache types that go with the device.
#[derive(Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Where the model runs: cpu, cuda (= cuda:0), cuda:N, or auto (the first GPU the
    /// model fits on, else the CPU).
    #[arg(long = "device", default_value = "cpu")]
    pub device: Device,
    /// How the KV cache stores keys: f32, f16, bf16 or q8_0 (default: f16 on the CPU,
    /// f32 on CUDA, whose KV pool is f32 only).
    #[arg(long = "cache-type-k", value_name = "TYPE")]
    pub cache_type_k: Option<KvType>,
    /// How the KV cache stores values (as --cache-type-k).
    #[arg(long = "cache-type-v", value_name = "TYPE")]
    pub cache_type_v: Option<KvType>,
}

impl DeviceArgs {
    /// The (K, V) cache types on `dev`: those asked for, else the device's default.
    pub fn kv_types(&self, dev: Device) -> (KvType, KvType) {
        let default = dev.default_kv_type();
        (
            self.cache_type_k.unwrap_or(default),
            self.cache_type_v.unwrap_or(default),
        )
    }

    /// `--device`, with `auto` resolved for a KV cache of `n_ctx` positions (sized with
    /// the types a GPU would store).
    pub fn resolve(&self, model: &Model, n_ctx: usize) -> Device {
        let (k, v) = self.kv_types(Device::Cuda(0));
        let kv_bytes = model.config().kv_cache_bytes(n_ctx, k, v);
        resolve(self.device, model, kv_bytes)
    }
}

/// Memory kept free on a GPU beyond weights and KV pool (activations, the cuBLAS tile,
/// the CUDA context).
const GPU_MARGIN: usize = 1 << 30;

fn gib(b: usize) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// Resolves `auto`: the first GPU with room for the weights, `kv_bytes` of KV pool
/// and a margin, else the CPU; says which on stderr. Other devices are returned as they are.
pub fn resolve(device: Device, model: &Model, kv_bytes: usize) -> Device {
    if device != Device::Auto {
        return device;
    }
    let need = tuili_cuda::weight_bytes(model) + kv_bytes + GPU_MARGIN;
    match tuili_cuda::devices() {
        Ok(devs) => match devs.iter().find(|d| d.free_bytes >= need) {
            Some(d) => {
                tracing_line(&format!(
                    "device auto: cuda:{} ({}, {:.1} GiB free, the model needs {:.1} GiB)",
                    d.ordinal,
                    d.name,
                    gib(d.free_bytes),
                    gib(need)
                ));
                Device::Cuda(d.ordinal)
            }
            None => {
                let free: Vec<String> = devs
                    .iter()
                    .map(|d| format!("cuda:{} has {:.1}", d.ordinal, gib(d.free_bytes)))
                    .collect();
                tracing_line(&format!(
                    "device auto: cpu (the model needs {:.1} GiB; {} GiB free)",
                    gib(need),
                    free.join(", ")
                ));
                Device::Cpu
            }
        },
        Err(e) => {
            tracing_line(&format!("device auto: cpu ({e})"));
            Device::Cpu
        }
    }
}

/// The model on `device` (resolved: not `auto`) with a KV pool of `kv`. Uploads the
/// weights to a GPU with a progress bar.
pub fn runner<'m>(model: &'m Model, device: Device, kv: KvLayout) -> Result<Box<dyn Runner + 'm>> {
    match device {
        Device::Cpu | Device::Auto => Ok(Box::new(CpuRunner::new(model, kv)?)),
        Device::Cuda(n) => Ok(Box::new(upload(model, n, kv)?)),
    }
}

/// What `start_engine_with` calls to put `model` on `device` (resolved: not `auto`) with
/// the KV pool the engine sizes.
pub fn engine_runner(
    model: Arc<Model>,
    device: Device,
) -> impl FnOnce(KvLayout) -> Result<Box<dyn Runner + Send>, EngineError> {
    move |kv: KvLayout| -> Result<Box<dyn Runner + Send>, EngineError> {
        match device {
            Device::Cuda(n) => Ok(Box::new(
                upload(&model, n, kv).map_err(|e| EngineError::Invalid(format!("{e:#}")))?,
            )),
            Device::Cpu | Device::Auto => Ok(Box::new(CpuRunner::new(model, kv)?)),
        }
    }
}

/// Uploads `model` to GPU `ordinal`, with a progress bar on stderr.
pub fn upload(model: &Model, ordinal: usize, kv: KvLayout) -> Result<CudaModel> {
    let t0 = Instant::now();
    let total = tuili_cuda::weight_bytes(model);
    let bar = Bar::new("uploading weights", total as u64);
    let gpu = CudaModel::new(model, ordinal, kv, &mut |done, _| bar.set(done as u64))
        .with_context(|| format!("putting the model on cuda:{ordinal}"))?;
    bar.finish();
    tracing_line(&format!(
        "{}: {:.1} MiB of weights uploaded in {:.2}s, KV pool {} blocks of {}",
        describe(gpu.device()),
        total as f64 / (1 << 20) as f64,
        t0.elapsed().as_secs_f64(),
        kv.n_blocks,
        kv.block_size
    ));
    Ok(gpu)
}

/// `cuda:0: NVIDIA H200, 139.8 GiB (139.1 GiB free), compute 9.0`.
pub fn describe(d: &DeviceInfo) -> String {
    format!(
        "cuda:{}: {}, {:.1} GiB ({:.1} GiB free), compute {}.{}",
        d.ordinal,
        d.name,
        gib(d.total_bytes),
        gib(d.free_bytes),
        d.compute_capability.0,
        d.compute_capability.1
    )
}

/// The lines of `tuili info`'s device list: the CPU, then each GPU or why there is none.
pub fn device_lines() -> Vec<String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut lines = vec![format!(
        "cpu: {}, {threads} threads, {}",
        cpu_name(),
        mem_total().map_or("memory unknown".into(), |b| format!("{:.1} GiB", gib(b)))
    )];
    match tuili_cuda::devices() {
        Ok(devs) => lines.extend(devs.iter().map(describe)),
        Err(tuili_cuda::CudaError::NoDevice(why)) => {
            lines.push(format!("cuda: none (no CUDA device: {why})"))
        }
        Err(e) => lines.push(format!("cuda: none ({e})")),
    }
    lines
}

/// The CPU's model name from /proc/cpuinfo.
pub(crate) fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Total memory from /proc/meminfo, in bytes.
fn mem_total() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
