//! Model architectures over the backend ops: configuration from GGUF metadata,
//! weights, a KV cache and the forward pass.
#![deny(missing_docs)]

mod attention;
pub mod batch;
mod config;
mod cpu;
pub mod embedding;
mod families;
pub mod forward;
pub mod hf;
mod kv_cache;
mod model;
pub mod moe;
pub mod ops;
mod rng;
mod sampling;
pub mod spec;
pub mod synthetic;
mod unimplemented;

pub use batch::SeqChunk;
pub use config::{Arch, Config, LayerShape};
pub use kv_cache::{local_blocks_needed, KvCache, KvPool, FREED_BLOCK, SEQ_BLOCK};
pub use model::Model;
pub use rng::SplitMix64;
pub use sampling::SamplingDefaults;
pub use tuili_backend::KvType;

/// Errors from loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file's metadata is missing or malformed.
    #[error(transparent)]
    Gguf(#[from] tuili_gguf::GgufError),
    /// A safetensors file of a Hugging Face directory is malformed.
    #[error(transparent)]
    Safetensors(#[from] tuili_safetensors::SafetensorsError),
    /// A weight cannot be used by the backend.
    #[error(transparent)]
    Backend(#[from] tuili_backend::BackendError),
    /// `general.architecture` names an architecture tuili does not run.
    #[error("architecture '{0}' is not supported (supported: {supported})", supported = Arch::supported())]
    UnsupportedArch(String),
    /// The file asks for math that tuili does not implement (a tensor or a metadata key
    /// that changes the forward pass): refused rather than run differently.
    #[error("the model file asks for {0}, which tuili does not implement yet; it is refused rather than run with different math")]
    Unimplemented(String),
    /// A required tensor is absent.
    #[error("tensor '{0}' is missing from the model file")]
    MissingTensor(String),
    /// A tensor's shape does not match the configuration.
    #[error("tensor '{name}' has shape {found:?}, expected {expected:?}")]
    TensorShape {
        /// Tensor name.
        name: String,
        /// Dimensions in the file (GGUF order).
        found: Vec<u64>,
        /// Dimensions the configuration implies.
        expected: Vec<u64>,
    },
    /// The metadata describes an impossible model.
    #[error("bad model configuration: {0}")]
    BadConfig(String),
    /// The KV cache cannot hold more positions.
    #[error("context full: {have} positions used + {adding} new > capacity {capacity}")]
    ContextFull {
        /// Positions already in the cache.
        have: usize,
        /// Positions being added.
        adding: usize,
        /// Capacity of the cache.
        capacity: usize,
    },
    /// A block table does not fit the KV pool or the positions.
    #[error("bad block table: {0}")]
    BlockTable(String),
    /// A token id is outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab: usize,
    },
}
