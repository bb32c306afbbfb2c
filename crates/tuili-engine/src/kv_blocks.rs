//! Paged KV cache bookkeeping: a fixed pool of blocks, per-sequence block tables and a prefix
//! cache. Integers only: a block here is an id; the tensors live in the backend.
//!
//! Design (after vLLM v1 `block_pool.py` / `kv_cache_manager.py`):
//! - The pool has `num_blocks` blocks of `block_size` token slots, each with a ref count.
//! - A sequence owns a block table (`Vec<u32>` of block ids); slot of token `pos` is
//!   `table[pos / block_size]`, offset `pos % block_size`.
//! - A *full* block whose KV has been computed is registered under a hash chained over every
//!   token up to and including it, so a later sequence with the same prefix reuses it.
//! - A block whose ref count drops to 0 stays cached and *evictable* (LRU). Allocation takes
//!   never-cached free blocks first, then evicts the least recently used cached block.
//! - A sequence's blocks are released tail first, so the tail of a prefix (least likely to be
//!   shared) is evicted before its head (without which the tail is useless anyway).
//!
//! Sliding-window layers (after vLLM v1's `SlidingWindowManager`): with a local region
//! ([`KvBlockManager::with_local`]) each sequence has a second table, for the local layers,
//! into a second pool of blocks. It grows with the first (same length) but, once the
//! sequence has `len` positions computed, its blocks whose positions all lie before
//! `len + 1 - window` (the first position the next token sees) are released
//! ([`KvBlockManager::release_outside_window`]) and their entries become
//! [`tuili_models::FREED_BLOCK`]. A sequence then holds at most
//! `local_blocks_needed(window, chunk, block_size)` local blocks.
//!
//! Prefix caching with a local region: a computed full local block is registered under
//! the chained hash of the global block at the same index, and once released (out of the
//! window, or its sequence ended) it stays cached and evictable like a global one (the
//! region is fixed in size, so this costs nothing; LRU eviction makes room). A hit of `k`
//! global blocks is used only as far as the local blocks its next token sees, indices
//! `(k * block_size + 1 - window) / block_size .. k`, are all still cached: the lookup
//! shortens the hit, block by block, until they are (or it is empty). The new sequence's
//! local table then starts with [`FREED_BLOCK`]s and those shared blocks.

use std::collections::{BTreeMap, HashMap};

use tuili_models::FREED_BLOCK;

use crate::kv_events::KvEvent;

/// Id of a sequence (the request id) in the block manager.
pub type SeqId = u64;

/// Hash of the (empty) parent of a sequence's first block.
const ROOT_HASH: u64 = 0xcbf2_9ce4_8422_2325;

/// Not enough free (or evictable) blocks for an allocation; nothing was allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBlocks {
    /// Blocks the allocation needed.
    pub needed: usize,
    /// Blocks that could be handed out (free + evictable).
    pub available: usize,
}

impl std::fmt::Display for OutOfBlocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "out of KV blocks: needed {}, only {} free",
            self.needed, self.available
        )
    }
}

impl std::error::Error for OutOfBlocks {}

impl From<OutOfBlocks> for crate::EngineError {
    fn from(e: OutOfBlocks) -> Self {
        crate::EngineError::Invalid(e.to_string())
    }
}

/// The longest run of cached full blocks that starts a token sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixHit {
    /// Cached block ids, in order; they cover `num_tokens` tokens.
    pub blocks: Vec<u32>,
    /// Tokens whose KV is already in `blocks` (`blocks.len() * block_size`).
    pub num_tokens: usize,
    /// Length of the token sequence that was looked up (for the hit rate).
    pub query_tokens: usize,
    /// Chained hash of each block, in order (same length as `blocks`).
    hashes: Vec<u64>,
    /// With a local region: the cached local blocks of indices `local_first..blocks.len()`
    /// (what the next token's window needs).
    local: Vec<u32>,
    local_first: usize,
}

/// Prefix-cache counters, in tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixStats {
    /// Prompt tokens looked up when sequences were given their first blocks.
    pub queries: u64,
    /// Of those, tokens whose KV came from the cache.
    pub hits: u64,
}

impl PrefixStats {
    /// `hits / queries`, 0 when nothing was queried.
    pub fn hit_rate(&self) -> f64 {
        if self.queries == 0 {
            0.0
        } else {
            self.hits as f64 / self.queries as f64
        }
    }
}

/// What a cached block holds, kept to rule out hash collisions on lookup.
#[derive(Debug, Clone)]
struct CachedKey {
    hash: u64,
    parent: u64,
    /// (block_size,) the tokens of the block.
    tokens: Vec<u32>,
}

#[derive(Debug, Clone, Default)]
struct BlockMeta {
    ref_count: u32,
    /// Set while the block is registered in the prefix cache.
    key: Option<CachedKey>,
    /// LRU stamp while the block is cached with ref count 0 (evictable).
    lru_stamp: Option<u64>,
}

#[derive(Debug, Clone)]
struct SeqBlocks {
    /// (ceil(tokens / block_size),) block ids.
    table: Vec<u32>,
    /// Leading blocks whose chained hash is known (registered or taken from the cache).
    num_hashed: usize,
    /// Chained hash of block `num_hashed - 1` (ROOT_HASH when none).
    last_hash: u64,
    /// (table.len(),) the local layers' block ids with a local region (else empty); the
    /// first `local_released` are [`FREED_BLOCK`].
    local: Vec<u32>,
    local_released: usize,
}

impl SeqBlocks {
    fn empty() -> SeqBlocks {
        SeqBlocks {
            table: Vec::new(),
            num_hashed: 0,
            last_hash: ROOT_HASH,
            local: Vec::new(),
            local_released: 0,
        }
    }
}

/// The local layers' blocks: a second pool with ref counts and a cache keyed by the
/// global blocks' chained hashes (see the module docs).
#[derive(Debug, Clone)]
struct LocalRegion {
    n_blocks: usize,
    /// The widest window of the local layers.
    window: usize,
    /// (n_blocks,) holders of each block.
    refs: Vec<u32>,
    /// (n_blocks,) the chained hash each block is cached under.
    key: Vec<Option<u64>>,
    /// (n_blocks,) LRU stamp while cached with no holder (evictable).
    lru: Vec<Option<u64>>,
    /// Blocks with no holder and no cache entry; popped from the end.
    free: Vec<u32>,
    /// Cached blocks with no holder, oldest stamp first.
    evictable: BTreeMap<u64, u32>,
    next_stamp: u64,
    /// Chained hash -> cached block.
    cached: HashMap<u64, u32>,
}

impl LocalRegion {
    fn new(n_blocks: usize, window: usize) -> LocalRegion {
        LocalRegion {
            n_blocks,
            window,
            refs: vec![0; n_blocks],
            key: vec![None; n_blocks],
            lru: vec![None; n_blocks],
            free: (0..n_blocks as u32).rev().collect(),
            evictable: BTreeMap::new(),
            next_stamp: 0,
            cached: HashMap::new(),
        }
    }

    /// Blocks an allocation can take.
    fn available(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    /// `n` blocks (at most `available()`), never-cached first, then least recently used.
    fn take(&mut self, n: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let b = if let Some(b) = self.free.pop() {
                b
            } else if let Some((_, b)) = self.evictable.pop_first() {
                self.lru[b as usize] = None;
                if let Some(h) = self.key[b as usize].take() {
                    if self.cached.get(&h) == Some(&b) {
                        self.cached.remove(&h);
                    }
                }
                b
            } else {
                break; // unreachable: callers check `available()`
            };
            self.refs[b as usize] = 1;
            out.push(b);
        }
        out
    }

    /// One more holder of a cached block (out of the LRU if it had none).
    fn revive(&mut self, b: u32) {
        if let Some(stamp) = self.lru[b as usize].take() {
            self.evictable.remove(&stamp);
        }
        self.refs[b as usize] += 1;
    }

    /// One holder fewer; with none left the block is free, or evictable when cached.
    fn release(&mut self, b: u32) {
        let i = b as usize;
        self.refs[i] -= 1;
        if self.refs[i] > 0 {
            return;
        }
        if self.key[i].is_some() {
            let stamp = self.next_stamp;
            self.next_stamp += 1;
            self.lru[i] = Some(stamp);
            self.evictable.insert(stamp, b);
        } else {
            self.free.push(b);
        }
    }

    /// The cached block of chained hash `h`, if any.
    fn lookup(&self, h: u64) -> Option<u32> {
        self.cached
            .get(&h)
            .copied()
            .filter(|&b| self.key[b as usize] == Some(h))
    }
}

/// Fixed pool of KV blocks with per-sequence block tables and a prefix cache.
#[derive(Debug, Clone)]
pub struct KvBlockManager {
    block_size: usize,
    /// (num_blocks,) per-block state.
    blocks: Vec<BlockMeta>,
    /// Blocks with ref count 0 and no cached content; popped from the end.
    free: Vec<u32>,
    /// Cached blocks with ref count 0, oldest stamp first (next to evict).
    evictable: BTreeMap<u64, u32>,
    next_stamp: u64,
    /// Chained hash -> block id of every registered full block.
    cached: HashMap<u64, u32>,
    seqs: HashMap<SeqId, SeqBlocks>,
    stats: PrefixStats,
    evictions: u64,
    local: Option<LocalRegion>,
    /// Prefix-cache events not yet taken, while recording ([`KvBlockManager::record_events`]).
    events: Option<Vec<KvEvent>>,
}

/// FNV-1a over the parent hash and the block tokens, then a final mix so that nearby inputs
/// spread over the whole 64 bits. Deterministic across runs and platforms.
fn chain_hash(parent: u64, tokens: &[u32]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = ROOT_HASH;
    for b in parent.to_le_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    for t in tokens {
        for b in t.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(PRIME);
        }
    }
    tuili_models::SplitMix64::mix(h)
}

impl KvBlockManager {
    /// A pool of `num_blocks` blocks of `block_size` token slots, all free.
    pub fn new(num_blocks: usize, block_size: usize) -> Result<Self, crate::EngineError> {
        if num_blocks == 0 || num_blocks > u32::MAX as usize {
            return Err(crate::EngineError::Invalid(format!(
                "num_blocks must be between 1 and {}, got {num_blocks}",
                u32::MAX
            )));
        }
        if block_size == 0 || block_size > 1 << 20 {
            return Err(crate::EngineError::Invalid(format!(
                "block_size must be between 1 and {}, got {block_size}",
                1 << 20
            )));
        }
        Ok(Self {
            block_size,
            blocks: vec![BlockMeta::default(); num_blocks],
            // Reversed so that blocks are handed out as 0, 1, 2, ...
            free: (0..num_blocks as u32).rev().collect(),
            evictable: BTreeMap::new(),
            next_stamp: 0,
            cached: HashMap::new(),
            seqs: HashMap::new(),
            stats: PrefixStats::default(),
            evictions: 0,
            local: None,
            events: None,
        })
    }

    /// As [`KvBlockManager::new`], plus a local region of `n_local` blocks for layers with
    /// a sliding window of `window` positions (see the module docs).
    pub fn with_local(
        num_blocks: usize,
        block_size: usize,
        n_local: usize,
        window: usize,
    ) -> Result<Self, crate::EngineError> {
        if n_local == 0 || n_local > u32::MAX as usize || window == 0 {
            return Err(crate::EngineError::Invalid(format!(
                "a local region needs 1 to {} blocks and a window of at least 1, got {n_local} \
                 blocks and a window of {window}",
                u32::MAX
            )));
        }
        let mut m = Self::new(num_blocks, block_size)?;
        m.local = Some(LocalRegion::new(n_local, window));
        Ok(m)
    }

    /// Starts recording prefix-cache events (see [`crate::kv_events`]), the first one
    /// [`KvEvent::AllBlocksCleared`]: whatever a listener knew of this pool no longer holds.
    /// The engine calls it on its fresh pool, before any block is cached.
    pub fn record_events(&mut self) {
        debug_assert!(self.cached.is_empty(), "record events from a fresh pool");
        self.events = Some(vec![KvEvent::AllBlocksCleared]);
    }

    /// Stops recording prefix-cache events.
    pub fn stop_events(&mut self) {
        self.events = None;
    }

    /// The events recorded since the last call (none when not recording).
    pub fn take_events(&mut self) -> Vec<KvEvent> {
        self.events.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// One `BlockStored` for a chain of `(hash, parent, tokens)` blocks.
    fn stored(&self, chain: &[(u64, u64, &Vec<u32>)]) -> KvEvent {
        let parent = chain.first().map_or(ROOT_HASH, |c| c.1);
        KvEvent::BlockStored {
            block_hashes: chain.iter().map(|c| c.0).collect(),
            parent_block_hash: (parent != ROOT_HASH).then_some(parent),
            token_ids: chain.iter().flat_map(|c| c.2.iter().copied()).collect(),
            block_size: self.block_size,
        }
    }

    /// Blocks of the local region (0 without one).
    pub fn num_local_blocks(&self) -> usize {
        self.local.as_ref().map_or(0, |l| l.n_blocks)
    }

    /// Local blocks no sequence holds, free or cached (0 without a local region).
    pub fn num_local_free(&self) -> usize {
        self.local.as_ref().map_or(0, |l| l.available())
    }

    /// Local blocks held by sequences.
    pub fn num_local_used(&self) -> usize {
        self.num_local_blocks() - self.num_local_free()
    }

    /// The local layers' block table of `seq` (empty without a local region or table).
    pub fn local_table(&self, seq: SeqId) -> &[u32] {
        self.seqs.get(&seq).map_or(&[], |s| s.local.as_slice())
    }

    /// Releases the local blocks of `seq` that no token after its first `computed`
    /// positions can see (all positions before `computed + 1 - window`); their entries
    /// become [`FREED_BLOCK`]. Returns how many were released.
    pub fn release_outside_window(&mut self, seq: SeqId, computed: usize) -> usize {
        let (Some(local), Some(s)) = (self.local.as_mut(), self.seqs.get_mut(&seq)) else {
            return 0;
        };
        // Never below what is already released (a range start past its end).
        let keep_from = ((computed + 1).saturating_sub(local.window) / self.block_size)
            .min(s.local.len())
            .max(s.local_released);
        let mut n = 0;
        for e in &mut s.local[s.local_released..keep_from] {
            local.release(std::mem::replace(e, FREED_BLOCK));
            n += 1;
        }
        s.local_released = s.local_released.max(keep_from);
        n
    }

    /// Token slots per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in the pool.
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks that an allocation can take: never-cached free ones plus evictable cached ones.
    pub fn num_free(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    /// Blocks held by at least one sequence.
    pub fn num_used(&self) -> usize {
        self.blocks.len() - self.num_free()
    }

    /// Blocks registered in the prefix cache (in use or evictable).
    pub fn num_cached(&self) -> usize {
        self.cached.len()
    }

    /// Hashes of the blocks registered in the prefix cache, in no order.
    pub fn cached_hashes(&self) -> impl Iterator<Item = u64> + '_ {
        self.cached.keys().copied()
    }

    /// Cached blocks evicted so far to make room.
    pub fn num_evictions(&self) -> u64 {
        self.evictions
    }

    /// Prefix-cache counters.
    pub fn prefix_stats(&self) -> PrefixStats {
        self.stats
    }

    /// Blocks needed to hold `tokens` token slots.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    /// Whether `seq` has a block table.
    pub fn contains(&self, seq: SeqId) -> bool {
        self.seqs.contains_key(&seq)
    }

    /// Number of sequences with a block table.
    pub fn num_seqs(&self) -> usize {
        self.seqs.len()
    }

    /// The block table of `seq` (empty when it has none).
    pub fn block_table(&self, seq: SeqId) -> &[u32] {
        self.seqs.get(&seq).map_or(&[], |s| s.table.as_slice())
    }

    /// Ref count of one block (0 for an unknown id).
    pub fn ref_count(&self, block: u32) -> u32 {
        self.blocks.get(block as usize).map_or(0, |b| b.ref_count)
    }

    /// Blocks a sequence would still need to hold `total_tokens` slots.
    fn missing_blocks(&self, seq: SeqId, total_tokens: usize) -> usize {
        let have = self.seqs.get(&seq).map_or(0, |s| s.table.len());
        self.blocks_for(total_tokens).saturating_sub(have)
    }

    /// Whether `allocate_for(seq, total_tokens)` would succeed now.
    pub fn can_allocate(&self, seq: SeqId, total_tokens: usize) -> bool {
        let missing = self.missing_blocks(seq, total_tokens);
        missing <= self.num_free() && (self.local.is_none() || missing <= self.num_local_free())
    }

    /// The longest run of cached full blocks that starts `tokens`. Never the whole sequence:
    /// the last token must be computed to get logits, so the hit is capped at
    /// `len - 1` tokens rounded down to whole blocks. Takes no references. With a local
    /// region, cut to where the local blocks of the window are cached (module docs).
    pub fn lookup_prefix(&self, tokens: &[u32]) -> PrefixHit {
        let max_blocks = tokens.len().saturating_sub(1) / self.block_size;
        let mut hit = PrefixHit {
            query_tokens: tokens.len(),
            ..PrefixHit::default()
        };
        let mut parent = ROOT_HASH;
        for chunk in tokens.chunks_exact(self.block_size).take(max_blocks) {
            let hash = chain_hash(parent, chunk);
            let Some(&block) = self.cached.get(&hash) else {
                break;
            };
            if !self.block_matches(block, hash, parent, chunk) {
                break;
            }
            hit.blocks.push(block);
            hit.hashes.push(hash);
            parent = hash;
        }
        if let Some(local) = &self.local {
            // The longest hit whose next token finds its whole window of local K/V.
            let bs = self.block_size;
            let mut k = hit.blocks.len();
            while k > 0 {
                let first = (k * bs + 1).saturating_sub(local.window) / bs;
                let blocks: Option<Vec<u32>> = hit.hashes[first..k]
                    .iter()
                    .map(|&h| local.lookup(h))
                    .collect();
                if let Some(b) = blocks {
                    hit.local = b;
                    hit.local_first = first;
                    break;
                }
                k -= 1;
            }
            hit.blocks.truncate(k);
            hit.hashes.truncate(k);
        }
        hit.num_tokens = hit.blocks.len() * self.block_size;
        hit
    }

    fn block_matches(&self, block: u32, hash: u64, parent: u64, tokens: &[u32]) -> bool {
        self.blocks[block as usize]
            .key
            .as_ref()
            .is_some_and(|k| k.hash == hash && k.parent == parent && k.tokens == tokens)
    }

    /// Gives a new sequence its first blocks: the cached blocks of `hit` (shared, ref count
    /// up; evictable ones are revived) and fresh blocks up to `total_tokens` slots.
    /// All-or-nothing. `hit` must come from `lookup_prefix` with no allocation in between;
    /// cached blocks that have changed since are not used. Returns the tokens taken from the
    /// cache, which the sequence must treat as already computed. For a sequence that already
    /// has blocks the hit is ignored and this is `allocate_for` (returns 0).
    pub fn allocate_with_prefix(
        &mut self,
        seq: SeqId,
        hit: &PrefixHit,
        total_tokens: usize,
    ) -> Result<usize, OutOfBlocks> {
        // Keep only the leading blocks that are still what the lookup saw.
        if self.seqs.contains_key(&seq) {
            // Not a new sequence: its own blocks already hold its prefix.
            self.allocate_for(seq, total_tokens)?;
            return Ok(0);
        }
        let mut parent = ROOT_HASH;
        let mut valid = 0;
        for (&block, &hash) in hit.blocks.iter().zip(&hit.hashes) {
            let still = self.blocks.get(block as usize).is_some_and(|b| {
                b.key
                    .as_ref()
                    .is_some_and(|k| k.hash == hash && k.parent == parent)
            });
            if !still {
                break;
            }
            parent = hash;
            valid += 1;
        }
        // With a local region the hit is all or nothing: its window's local blocks must
        // still be the cached ones the lookup saw.
        if let Some(local) = &self.local {
            let k = hit.blocks.len();
            let first = hit.local_first.min(k);
            let local_ok = valid == k
                && hit.local.len() == k - first
                && (hit.local.iter().zip(&hit.hashes[first..]))
                    .all(|(&b, &h)| local.key.get(b as usize) == Some(&Some(h)));
            if !local_ok {
                valid = 0;
                parent = ROOT_HASH;
            }
        }
        let reuse = &hit.blocks[..valid];
        let cached_tokens = valid * self.block_size;
        let total_tokens = total_tokens.max(cached_tokens);
        let fresh = self.blocks_for(total_tokens) - valid;
        // Reviving an evictable block takes it out of the free count.
        let revived = reuse
            .iter()
            .filter(|&&b| self.blocks[b as usize].ref_count == 0)
            .count();
        let available = self.num_free() - revived;
        if fresh > available {
            return Err(OutOfBlocks {
                needed: fresh,
                available,
            });
        }
        let local_reuse: &[u32] = if valid > 0 { &hit.local } else { &[] };
        if let Some(local) = &self.local {
            let revived = local_reuse
                .iter()
                .filter(|&&b| local.refs[b as usize] == 0)
                .count();
            let available = local.available() - revived;
            if fresh > available {
                return Err(OutOfBlocks {
                    needed: fresh,
                    available,
                });
            }
        }
        let mut table = Vec::with_capacity(valid + fresh);
        for &b in reuse {
            let meta = &mut self.blocks[b as usize];
            if let Some(stamp) = meta.lru_stamp.take() {
                self.evictable.remove(&stamp);
            }
            meta.ref_count += 1;
            table.push(b);
        }
        // Cannot fail: `fresh <= available` and the revived blocks are out of the LRU now.
        table.extend(self.take_blocks(fresh)?);
        // Local: released entries before the window, the window's cached blocks, fresh.
        let (mut local_table, mut local_released) = (Vec::new(), 0);
        if let Some(local) = &mut self.local {
            local_released = if valid > 0 { hit.local_first } else { 0 };
            local_table = vec![FREED_BLOCK; local_released];
            for &b in local_reuse {
                local.revive(b);
                local_table.push(b);
            }
            local_table.extend(local.take(fresh));
        }
        self.seqs.insert(
            seq,
            SeqBlocks {
                table,
                num_hashed: valid,
                last_hash: parent,
                local: local_table,
                local_released,
            },
        );
        self.stats.queries += hit.query_tokens as u64;
        self.stats.hits += cached_tokens as u64;
        Ok(cached_tokens)
    }

    /// Grows `seq`'s block table (creating it if needed) to hold `total_tokens` slots,
    /// and its local table alike with a local region. All-or-nothing: on error nothing
    /// changes.
    pub fn allocate_for(&mut self, seq: SeqId, total_tokens: usize) -> Result<(), OutOfBlocks> {
        let needed = self.missing_blocks(seq, total_tokens);
        if let Some(local) = &self.local {
            if needed > local.available() {
                return Err(OutOfBlocks {
                    needed,
                    available: local.available(),
                });
            }
        }
        let new_blocks = self.take_blocks(needed)?;
        let entry = self.seqs.entry(seq).or_insert_with(SeqBlocks::empty);
        entry.table.extend(new_blocks);
        if let Some(local) = &mut self.local {
            // Cannot run dry: checked above.
            entry.local.extend(local.take(needed));
        }
        Ok(())
    }

    /// Takes `n` blocks with ref count 0 (never-cached ones first, then the least recently
    /// used cached ones, dropping their cache entries) and gives each ref count 1.
    fn take_blocks(&mut self, n: usize) -> Result<Vec<u32>, OutOfBlocks> {
        if n > self.num_free() {
            return Err(OutOfBlocks {
                needed: n,
                available: self.num_free(),
            });
        }
        let mut out = Vec::with_capacity(n);
        let mut removed = Vec::new();
        while out.len() < n {
            let block = if let Some(b) = self.free.pop() {
                b
            } else if let Some((_, b)) = self.evictable.pop_first() {
                let meta = &mut self.blocks[b as usize];
                meta.lru_stamp = None;
                if let Some(key) = meta.key.take() {
                    if self.cached.get(&key.hash) == Some(&b) {
                        self.cached.remove(&key.hash);
                        removed.push(key.hash);
                    }
                }
                self.evictions += 1;
                b
            } else {
                break; // unreachable: n <= num_free() was checked above
            };
            self.blocks[block as usize].ref_count = 1;
            out.push(block);
        }
        if let (Some(ev), false) = (&mut self.events, removed.is_empty()) {
            ev.push(KvEvent::BlockRemoved {
                block_hashes: removed,
            });
        }
        Ok(out)
    }

    /// Registers the full blocks of `seq` whose KV is now computed. `tokens` are the
    /// sequence's tokens whose KV is in the cache (positions `0..tokens.len()`); blocks
    /// already registered are skipped. When an identical block is already cached (two
    /// sequences computed the same prefix at once) the existing one stays the cached copy.
    pub fn commit_full_blocks(&mut self, seq: SeqId, tokens: &[u32]) {
        let Some(s) = self.seqs.get_mut(&seq) else {
            return;
        };
        let full = (tokens.len() / self.block_size).min(s.table.len());
        // Runs of blocks that entered the cache here: (first index, last index + 1).
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for i in s.num_hashed..full {
            let chunk = &tokens[i * self.block_size..(i + 1) * self.block_size];
            let parent = s.last_hash;
            let hash = chain_hash(parent, chunk);
            let block = s.table[i];
            let meta = &mut self.blocks[block as usize];
            if meta.key.is_none() && !self.cached.contains_key(&hash) {
                meta.key = Some(CachedKey {
                    hash,
                    parent,
                    tokens: chunk.to_vec(),
                });
                self.cached.insert(hash, block);
                match runs.last_mut() {
                    Some(r) if r.1 == i => r.1 = i + 1,
                    _ => runs.push((i, i + 1)),
                }
            }
            // The local block at the same index, if still held, under the same hash.
            if let Some(local) = &mut self.local {
                let lb = s.local.get(i).copied().unwrap_or(FREED_BLOCK);
                if lb != FREED_BLOCK
                    && local.key[lb as usize].is_none()
                    && !local.cached.contains_key(&hash)
                {
                    local.key[lb as usize] = Some(hash);
                    local.cached.insert(hash, lb);
                }
            }
            s.last_hash = hash;
            s.num_hashed = i + 1;
        }
        if self.events.is_some() && !runs.is_empty() {
            let table = s.table.clone();
            for (a, b) in runs {
                let keys: Vec<&CachedKey> = table[a..b]
                    .iter()
                    .filter_map(|&blk| self.blocks[blk as usize].key.as_ref())
                    .collect();
                let chain: Vec<(u64, u64, &Vec<u32>)> =
                    keys.iter().map(|k| (k.hash, k.parent, &k.tokens)).collect();
                let ev = self.stored(&chain);
                if let Some(v) = &mut self.events {
                    v.push(ev);
                }
            }
        }
    }

    /// Releases every block of `seq`; returns false when it had none. Blocks whose ref count
    /// drops to 0 become free, or evictable when cached (tail blocks evicted first).
    pub fn free(&mut self, seq: SeqId) -> bool {
        let Some(s) = self.seqs.remove(&seq) else {
            return false;
        };
        if let Some(local) = &mut self.local {
            for &b in s.local[s.local_released..].iter().rev() {
                local.release(b);
            }
        }
        for &b in s.table.iter().rev() {
            let meta = &mut self.blocks[b as usize];
            meta.ref_count -= 1;
            if meta.ref_count > 0 {
                continue;
            }
            if meta.key.is_some() {
                let stamp = self.next_stamp;
                self.next_stamp += 1;
                meta.lru_stamp = Some(stamp);
                self.evictable.insert(stamp, b);
            } else {
                self.free.push(b);
            }
        }
        true
    }

    /// Checks every internal invariant (ref counts match block tables, free/evictable/cached
    /// sets agree with block state). A debugging and testing aid; O(num_blocks).
    pub fn audit(&self) -> Result<(), String> {
        let mut refs = vec![0u32; self.blocks.len()];
        for (id, s) in &self.seqs {
            for &b in &s.table {
                let r = refs
                    .get_mut(b as usize)
                    .ok_or_else(|| format!("seq {id} holds block {b} out of range"))?;
                *r += 1;
            }
            if s.num_hashed > s.table.len() {
                return Err(format!("seq {id} has more hashed blocks than blocks"));
            }
        }
        let mut in_free = vec![false; self.blocks.len()];
        for &b in &self.free {
            if std::mem::replace(&mut in_free[b as usize], true) {
                return Err(format!("block {b} is twice in the free list"));
            }
        }
        for (&stamp, &b) in &self.evictable {
            if self.blocks[b as usize].lru_stamp != Some(stamp) {
                return Err(format!("evictable block {b} has a stale stamp"));
            }
        }
        for (&hash, &b) in &self.cached {
            let ok = self.blocks[b as usize]
                .key
                .as_ref()
                .is_some_and(|k| k.hash == hash);
            if !ok {
                return Err(format!(
                    "cache entry {hash:#x} points at block {b} of other content"
                ));
            }
        }
        for (b, meta) in self.blocks.iter().enumerate() {
            if meta.ref_count != refs[b] {
                return Err(format!(
                    "block {b} has ref count {} but {} holders",
                    meta.ref_count, refs[b]
                ));
            }
            let evictable = meta.lru_stamp.is_some();
            let idle = meta.ref_count == 0;
            if idle != (in_free[b] || evictable) {
                return Err(format!(
                    "block {b}: ref count {} but free={} evictable={evictable}",
                    meta.ref_count, in_free[b]
                ));
            }
            if in_free[b] && meta.key.is_some() || evictable && meta.key.is_none() {
                return Err(format!("block {b}: cache state disagrees with its list"));
            }
        }
        if self.free.len() + self.evictable.len() + refs.iter().filter(|&&r| r > 0).count()
            != self.blocks.len()
        {
            return Err("used + free != num_blocks".to_string());
        }
        self.audit_local()
    }

    /// The local region's invariants: ref counts match the tables' entries; a block with
    /// no holder is free (uncached) or evictable (cached), never both; cache entries point
    /// at blocks keyed so; tables as long as the main ones, [`FREED_BLOCK`] exactly before
    /// `local_released`.
    fn audit_local(&self) -> Result<(), String> {
        let Some(local) = &self.local else {
            return match self.seqs.values().any(|s| !s.local.is_empty()) {
                true => Err("a local table without a local region".to_string()),
                false => Ok(()),
            };
        };
        let mut refs = vec![0u32; local.n_blocks];
        for (id, s) in &self.seqs {
            if s.local.len() != s.table.len() {
                return Err(format!("seq {id}: local table length differs"));
            }
            for (i, &b) in s.local.iter().enumerate() {
                match (i < s.local_released, b == FREED_BLOCK) {
                    (true, true) => {}
                    (false, false) => {
                        *refs
                            .get_mut(b as usize)
                            .ok_or_else(|| format!("seq {id}: local block {b} out of range"))? += 1
                    }
                    _ => return Err(format!("seq {id}: local entry {i} released wrongly")),
                }
            }
        }
        let mut in_free = vec![false; local.n_blocks];
        for &b in &local.free {
            let f = in_free
                .get_mut(b as usize)
                .ok_or_else(|| format!("free local block {b} out of range"))?;
            if std::mem::replace(f, true) {
                return Err(format!("local block {b} is twice in the free list"));
            }
        }
        for (&stamp, &b) in &local.evictable {
            if local.lru[b as usize] != Some(stamp) {
                return Err(format!("evictable local block {b} has a stale stamp"));
            }
        }
        for (&h, &b) in &local.cached {
            if local.key[b as usize] != Some(h) {
                return Err(format!("local cache entry {h:#x} points at block {b}"));
            }
        }
        for b in 0..local.n_blocks {
            if local.refs[b] != refs[b] {
                return Err(format!(
                    "local block {b} has ref count {} but {} holders",
                    local.refs[b], refs[b]
                ));
            }
            let evictable = local.lru[b].is_some();
            if (refs[b] == 0) != (in_free[b] || evictable) || (in_free[b] && evictable) {
                return Err(format!("local block {b}: holders and lists disagree"));
            }
            if in_free[b] && local.key[b].is_some() || evictable && local.key[b].is_none() {
                return Err(format!(
                    "local block {b}: cache state disagrees with its list"
                ));
            }
        }
        Ok(())
    }
}
