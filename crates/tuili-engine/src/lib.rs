//! Sampling, the serving engine (which `tuili run` and `chat` use too) and perplexity
//! over a loaded model.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod constraint;
pub mod kv_blocks;
pub mod kv_events;
mod line_log;
pub mod metrics;
mod perplexity;
pub mod request;
mod request_trace;
pub mod runner;
mod sampler;
pub mod scheduler;
pub mod serve;
pub mod step_log;
mod stop;

pub use constraint::{Constraint, ConstraintSpec, GrammarCompiler};
pub use kv_events::{kv_event_channel, KvEvent, KvEventReceiver, KvEventSender};
pub use metrics::{EngineMetrics, Histogram};
pub use perplexity::{perplexity, perplexity_with, Perplexity, PPL_STEP};
pub use request::{Event, FinishReason, GenerateRequest, SubmitError, TokenLogprob, Usage};
pub use runner::{CpuRunner, Device, KvLayout, KvType, Runner, DEFAULT_KV_TYPE};
pub use sampler::{argmax, Rng, Sampler, SamplingParams};
pub use scheduler::Scheduler;
pub use serve::{
    kv_bytes_wanted, kv_pool_sizes, panic_message, start_engine, start_engine_with, EngineConfig,
    EngineHandle, RequestStream, MAX_CONSECUTIVE_PANICS,
};

/// Errors from generation.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model failed to run.
    #[error(transparent)]
    Model(#[from] tuili_models::ModelError),
    /// The GPU backend failed (or is absent).
    #[error(transparent)]
    Cuda(#[from] tuili_cuda::CudaError),
    /// A request that cannot be served, with the reason.
    #[error("{0}")]
    Invalid(String),
}
