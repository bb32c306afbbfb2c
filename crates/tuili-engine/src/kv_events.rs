//! Prefix-cache events: what enters and leaves the prefix cache, as vLLM's KV events
//! (`vllm/distributed/kv_events.py`) name it, so that a prefix-aware router can index
//! what each replica caches.
//!
//! [`crate::kv_blocks::KvBlockManager`] records them where blocks are registered in the
//! cache and evicted from it (integers only); the scheduler hands each step's events to
//! a [`KvEventSender`] as one batch. The channel is unbounded, so the engine never waits
//! on whoever publishes them (the server's ZMQ publisher, on its own thread).

use tokio::sync::mpsc;

/// One change to the prefix cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvEvent {
    /// Full blocks whose K/V are computed entered the cache, a chain in sequence order.
    BlockStored {
        /// Chained hash of each block.
        block_hashes: Vec<u64>,
        /// Hash of the block before the first one; `None` when it starts its sequence.
        parent_block_hash: Option<u64>,
        /// The blocks' tokens, `block_size` per block.
        token_ids: Vec<u32>,
        /// Tokens per block.
        block_size: usize,
    },
    /// Cached blocks were evicted (their ids were taken for other tokens).
    BlockRemoved {
        /// Hashes of the evicted blocks.
        block_hashes: Vec<u64>,
    },
    /// The cache was emptied: nothing announced before holds any more.
    AllBlocksCleared,
}

/// Where the scheduler sends each step's events (never blocks).
pub type KvEventSender = mpsc::UnboundedSender<Vec<KvEvent>>;

/// The receiving end of a [`KvEventSender`] (async, or `blocking_recv` on a thread).
pub type KvEventReceiver = mpsc::UnboundedReceiver<Vec<KvEvent>>;

/// A channel for the engine's KV events.
pub fn kv_event_channel() -> (KvEventSender, KvEventReceiver) {
    mpsc::unbounded_channel()
}
