//! The CUDA backend proper (the `cuda` feature).
//!
//! Every first touch of a CUDA library goes through [`check_library`] and [`guard`]:
//! `cudarc` panics when it cannot open a library it is asked to use, so the library is
//! probed first, and any panic left is caught and turned into an error.

mod gpu;
mod model;
mod ops;

use std::sync::Arc;

use cudarc::driver::{CudaContext, DriverError};

pub use model::CudaModel;
pub use ops::CudaOps;

use crate::{CudaError, DeviceInfo};

type DriverResult<T> = Result<T, DriverError>;

/// Runs `f`, turning a panic inside `cudarc` into an error naming `what`.
fn guard<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, CudaError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        CudaError::Library(format!("{what}: {msg}"))
    })
}

/// Library names `cudarc` looks for, for error messages.
fn candidates(lib: &str) -> String {
    let mut names: Vec<String> = Vec::new();
    for n in cudarc::get_lib_name_candidates(lib) {
        if n.starts_with("lib") && !n.contains("64_") && !names.contains(&n) {
            names.push(n);
        }
    }
    names.join(", ")
}

/// An error naming the library and where it was looked for when `present` is false.
fn check_library(what: &str, present: bool, lib: &str) -> Result<(), CudaError> {
    if present {
        return Ok(());
    }
    Err(CudaError::Library(format!(
        "{what} could not be opened (looked for {}); put the directory that holds it on LD_LIBRARY_PATH",
        candidates(lib)
    )))
}

/// Devices the driver reports, or `NoDevice` naming why there are none.
fn device_count() -> Result<usize, CudaError> {
    // SAFETY: only tries to open the library (dlopen) under its known names; no symbol
    // of it is called before it is known to be there.
    let present = unsafe { cudarc::driver::sys::is_culib_present() };
    if !present {
        return Err(CudaError::NoDevice(format!(
            "the CUDA driver library is not installed or not on the library path (looked for {})",
            candidates("cuda")
        )));
    }
    let count = guard("the CUDA driver", CudaContext::device_count)?
        .map_err(|e| CudaError::NoDevice(format!("the driver did not initialise: {e:?}")))?;
    if count <= 0 {
        return Err(CudaError::NoDevice("the driver reports 0 devices".into()));
    }
    Ok(count as usize)
}

fn device_info(ctx: &Arc<CudaContext>, ordinal: usize) -> Result<DeviceInfo, CudaError> {
    use gpu::What;
    let name = ctx.name().what("reading the device name")?;
    let total_bytes = ctx.total_mem().what("reading the device memory")?;
    let (free_bytes, _) = ctx.mem_get_info().what("reading the free memory")?;
    let compute_capability = ctx
        .compute_capability()
        .what("reading the compute capability")?;
    Ok(DeviceInfo {
        ordinal,
        name,
        total_bytes,
        free_bytes,
        compute_capability,
    })
}

/// The GPUs the driver sees, with their memory; `NoDevice` naming why when there are
/// none (no driver library, the driver does not initialise, zero devices).
pub fn devices() -> Result<Vec<DeviceInfo>, CudaError> {
    let count = device_count()?;
    (0..count)
        .map(|ordinal| {
            let ctx = guard("the CUDA driver", || CudaContext::new(ordinal))?
                .map_err(|e| CudaError::NoDevice(format!("cannot open device {ordinal}: {e:?}")))?;
            device_info(&ctx, ordinal)
        })
        .collect()
}

/// Compiles the kernels with NVRTC for `arch` (e.g. `compute_90`) without touching a
/// device, and returns the size of the PTX: checks the sources where NVRTC is
/// installed but no GPU is.
pub fn compile_kernels(arch: &str) -> Result<usize, CudaError> {
    gpu::compile(arch).map(|p| p.len())
}
