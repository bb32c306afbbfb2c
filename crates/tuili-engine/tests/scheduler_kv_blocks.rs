//! KV block pool and prefix cache, tested with plain integers.

use std::collections::{HashMap, HashSet};

use tuili_engine::kv_blocks::{KvBlockManager, OutOfBlocks};
use tuili_models::SplitMix64;

fn pool(num_blocks: usize, block_size: usize) -> KvBlockManager {
    KvBlockManager::new(num_blocks, block_size).expect("valid pool")
}

/// Gives `seq` blocks for all of `tokens` (using the prefix cache) and registers them as
/// computed; returns the tokens that came from the cache.
fn prefill(kv: &mut KvBlockManager, seq: u64, tokens: &[u32]) -> Result<usize, OutOfBlocks> {
    let hit = kv.lookup_prefix(tokens);
    let cached = kv.allocate_with_prefix(seq, &hit, tokens.len())?;
    kv.commit_full_blocks(seq, tokens);
    Ok(cached)
}

#[test]
fn new_rejects_empty_pool_and_block() {
    let e = KvBlockManager::new(0, 16).expect_err("0 blocks");
    assert!(e.to_string().contains("num_blocks"), "{e}");
    let e = KvBlockManager::new(8, 0).expect_err("0 block size");
    assert!(e.to_string().contains("block_size"), "{e}");
}

#[test]
fn allocation_grows_tables_and_free_returns_blocks() {
    let mut kv = pool(8, 4);
    kv.allocate_for(1, 5).expect("fits");
    assert_eq!(kv.block_table(1), &[0, 1]);
    kv.allocate_for(1, 8).expect("same blocks");
    assert_eq!(kv.block_table(1).len(), 2);
    kv.allocate_for(1, 9).expect("one more");
    assert_eq!(kv.block_table(1).len(), 3);
    kv.allocate_for(2, 4).expect("fits");
    assert_eq!((kv.num_used(), kv.num_free()), (4, 4));
    assert!(kv.free(1));
    assert!(!kv.free(1), "second free of the same sequence");
    assert_eq!((kv.num_used(), kv.num_free()), (1, 7));
    assert!(kv.block_table(1).is_empty());
    kv.audit().expect("consistent");
}

#[test]
fn allocation_is_all_or_nothing() {
    let mut kv = pool(4, 4);
    kv.allocate_for(1, 12).expect("3 blocks");
    let err = kv.allocate_for(2, 8).expect_err("needs 2, 1 free");
    assert_eq!(
        err,
        OutOfBlocks {
            needed: 2,
            available: 1
        }
    );
    assert!(
        !kv.contains(2),
        "a failed allocation must not leave an empty table"
    );
    assert_eq!(kv.num_free(), 1);
    let err = kv.allocate_for(1, 20).expect_err("grow by 2, 1 free");
    assert_eq!(err.needed, 2);
    assert_eq!(
        kv.block_table(1).len(),
        3,
        "a failed grow keeps the old table"
    );
    assert!(kv.can_allocate(1, 16));
    assert!(!kv.can_allocate(1, 17));
    kv.audit().expect("consistent");
}

#[test]
fn prefix_hit_on_shared_system_prompt() {
    let mut kv = pool(32, 4);
    let system: Vec<u32> = (100..110).collect(); // 10 tokens: 2 full blocks + 2
    let a: Vec<u32> = system.iter().copied().chain([1, 2, 3]).collect();
    let b: Vec<u32> = system.iter().copied().chain([7, 8, 9, 10, 11]).collect();
    assert_eq!(prefill(&mut kv, 1, &a), Ok(0));
    assert_eq!(kv.num_cached(), 3, "13 tokens fill 3 blocks");
    let hit = kv.lookup_prefix(&b);
    assert_eq!(hit.num_tokens, 8);
    assert_eq!(hit.blocks, kv.block_table(1)[..2].to_vec());
    assert_eq!(prefill(&mut kv, 2, &b), Ok(8));
    assert_eq!(kv.block_table(2)[..2], kv.block_table(1)[..2]);
    assert_ne!(kv.block_table(2)[2], kv.block_table(1)[2]);
    let stats = kv.prefix_stats();
    assert_eq!((stats.queries, stats.hits), (13 + 15, 8));
    assert!((stats.hit_rate() - 8.0 / 28.0).abs() < 1e-12);
    kv.audit().expect("consistent");
}

#[test]
fn prefix_hit_never_covers_the_whole_prompt() {
    let mut kv = pool(16, 4);
    let p: Vec<u32> = (0..8).collect();
    prefill(&mut kv, 1, &p).expect("fits");
    assert_eq!(kv.num_cached(), 2);
    // Same 8 tokens: the last one must be computed, so only the first block is a hit.
    assert_eq!(kv.lookup_prefix(&p).num_tokens, 4);
    assert_eq!(kv.lookup_prefix(&p[..5]).num_tokens, 4);
    assert_eq!(kv.lookup_prefix(&p[..4]).num_tokens, 0);
    assert_eq!(kv.lookup_prefix(&[]).num_tokens, 0);
    let longer: Vec<u32> = (0..9).collect();
    assert_eq!(kv.lookup_prefix(&longer).num_tokens, 8);
}

#[test]
fn hash_is_chained_over_the_whole_prefix() {
    let mut kv = pool(16, 2);
    prefill(&mut kv, 1, &[1, 2, 3, 4, 5]).expect("fits");
    // Block [3, 4] is cached, but after [1, 2]; it must not match at the start.
    assert_eq!(kv.lookup_prefix(&[3, 4, 5]).num_tokens, 0);
    assert_eq!(kv.lookup_prefix(&[1, 2, 3, 4, 9]).num_tokens, 4);
    assert_eq!(kv.lookup_prefix(&[1, 9, 3, 4, 5]).num_tokens, 0);
}

#[test]
fn shared_blocks_are_ref_counted_and_free_in_either_order() {
    for first in [1u64, 2] {
        let mut kv = pool(16, 4);
        let p: Vec<u32> = (0..9).collect();
        prefill(&mut kv, 1, &p).expect("fits");
        assert_eq!(prefill(&mut kv, 2, &p), Ok(8));
        let shared = kv.block_table(1)[..2].to_vec();
        for &b in &shared {
            assert_eq!(kv.ref_count(b), 2);
        }
        assert_eq!(kv.num_used(), 4, "2 shared + 1 tail each");
        kv.free(first);
        for &b in &shared {
            assert_eq!(kv.ref_count(b), 1);
        }
        assert_eq!(kv.num_used(), 3);
        kv.audit().expect("consistent");
        kv.free(3 - first);
        assert_eq!((kv.num_used(), kv.num_free()), (0, 16));
        // The full blocks stay cached after everyone left.
        assert_eq!(kv.lookup_prefix(&p).num_tokens, 8);
        kv.audit().expect("consistent");
    }
}

#[test]
fn free_blocks_go_first_then_lru_eviction() {
    let mut kv = pool(4, 2);
    prefill(&mut kv, 1, &[1, 2, 9]).expect("2 blocks"); // block [1,2] cached
    prefill(&mut kv, 2, &[3, 4, 9]).expect("2 blocks"); // block [3,4] cached
    kv.free(1);
    kv.free(2);
    assert_eq!((kv.num_free(), kv.num_cached()), (4, 2));
    // Two never-cached blocks are free: taking them evicts nothing.
    kv.allocate_for(3, 4).expect("2 free blocks");
    assert_eq!((kv.num_evictions(), kv.num_cached()), (0, 2));
    // The next allocation evicts the least recently released cached block: seq 1's.
    kv.allocate_for(4, 2).expect("evicts one");
    assert_eq!(kv.num_evictions(), 1);
    assert_eq!(
        kv.lookup_prefix(&[1, 2, 9]).num_tokens,
        0,
        "seq 1's block evicted"
    );
    assert_eq!(
        kv.lookup_prefix(&[3, 4, 9]).num_tokens,
        2,
        "seq 2's block kept"
    );
    kv.audit().expect("consistent");
}

#[test]
fn a_hit_revives_an_evictable_block() {
    let mut kv = pool(3, 2);
    prefill(&mut kv, 1, &[1, 2, 9]).expect("fits");
    kv.free(1);
    prefill(&mut kv, 2, &[3, 4, 9]).expect("takes the 2 never-cached blocks");
    kv.free(2);
    assert_eq!(kv.num_evictions(), 0);
    // LRU now: [1,2] (oldest), [3,4]. A hit on [1,2] makes it used again...
    assert_eq!(prefill(&mut kv, 3, &[1, 2, 7]), Ok(2));
    assert_eq!(kv.ref_count(kv.block_table(3)[0]), 1);
    assert_eq!(kv.num_free(), 1);
    // ...so the next eviction takes [3,4] instead.
    kv.allocate_for(4, 2).expect("one block left");
    assert_eq!(kv.num_evictions(), 1);
    assert_eq!(kv.lookup_prefix(&[3, 4, 9]).num_tokens, 0);
    assert_eq!(kv.lookup_prefix(&[1, 2, 9]).num_tokens, 2);
    kv.audit().expect("consistent");
}

#[test]
fn a_sequence_is_evicted_tail_first() {
    let mut kv = pool(4, 2);
    let p = [1, 2, 3, 4, 5, 6, 9];
    prefill(&mut kv, 1, &p).expect("4 blocks, 3 of them full");
    kv.free(1);
    assert_eq!(kv.lookup_prefix(&p).num_tokens, 6);
    // The partial block [9] is free, not cached: it goes first.
    kv.allocate_for(2, 2).expect("the free block");
    assert_eq!(kv.lookup_prefix(&p).num_tokens, 6);
    // Then the tail of the prefix goes; its head still hits.
    kv.allocate_for(2, 4).expect("evicts one cached block");
    assert_eq!(kv.lookup_prefix(&p).num_tokens, 4);
    kv.allocate_for(2, 6).expect("evicts another");
    assert_eq!(kv.lookup_prefix(&p).num_tokens, 2);
}

#[test]
fn failed_prefix_allocation_changes_nothing() {
    let mut kv = pool(4, 2);
    prefill(&mut kv, 1, &[1, 2, 3]).expect("2 blocks");
    kv.free(1);
    kv.allocate_for(9, 4)
        .expect("takes the 2 never-cached blocks");
    let before = (kv.num_free(), kv.num_cached(), kv.prefix_stats());
    let hit = kv.lookup_prefix(&[1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(hit.num_tokens, 2);
    // 1 cached + 3 fresh blocks needed, but only 1 other block is free.
    let err = kv.allocate_with_prefix(2, &hit, 7).expect_err("too big");
    assert_eq!(
        err,
        OutOfBlocks {
            needed: 3,
            available: 1
        }
    );
    assert_eq!((kv.num_free(), kv.num_cached(), kv.prefix_stats()), before);
    assert!(!kv.contains(2));
    kv.audit().expect("consistent");
}

/// A seeded sequence of ~10k random operations checked against a simple model: block
/// accounting never leaks, failed allocations change nothing, and every prefix hit points at
/// blocks that really hold the looked-up tokens.
#[test]
fn random_operations_match_a_simple_model() {
    for seed in [1u64, 2, 3] {
        let mut rng = SplitMix64::new(seed);
        let (num_blocks, bs) = (48usize, 4usize);
        let mut kv = pool(num_blocks, bs);
        // What each block holds: written slots, like the real KV tensors.
        let mut content: Vec<Vec<Option<u32>>> = vec![vec![None; bs]; num_blocks];
        // Per live sequence: its tokens and how many are computed (written).
        let mut seqs: HashMap<u64, (Vec<u32>, usize)> = HashMap::new();
        let bases: Vec<Vec<u32>> = (0..3)
            .map(|_| (0..40).map(|_| rng.below(5) as u32).collect())
            .collect();
        let mut next_id = 0u64;
        let mut hits = 0;
        for _ in 0..10_000 {
            let free_before = kv.num_free();
            match rng.below(10) {
                0..=2 => {
                    // New sequence: a shared base prefix plus a random tail.
                    let base = &bases[rng.below(bases.len())];
                    let mut tokens = base[..rng.below(base.len())].to_vec();
                    tokens.extend((0..1 + rng.below(12)).map(|_| rng.below(5) as u32));
                    let hit = kv.lookup_prefix(&tokens);
                    assert!(hit.num_tokens < tokens.len());
                    for (i, &b) in hit.blocks.iter().enumerate() {
                        let want: Vec<Option<u32>> = tokens[i * bs..(i + 1) * bs]
                            .iter()
                            .map(|&t| Some(t))
                            .collect();
                        assert_eq!(
                            content[b as usize], want,
                            "hit block {b} holds other tokens"
                        );
                    }
                    let total = hit.num_tokens + 1 + rng.below(tokens.len() - hit.num_tokens);
                    let revived = hit.blocks.iter().filter(|&&b| kv.ref_count(b) == 0).count();
                    let fresh = total.div_ceil(bs) - hit.blocks.len();
                    let fits = fresh + revived <= free_before;
                    next_id += 1;
                    match kv.allocate_with_prefix(next_id, &hit, total) {
                        Ok(cached) => {
                            assert!(fits, "allocation succeeded beyond the model's free count");
                            assert_eq!(cached, hit.num_tokens);
                            hits += usize::from(cached > 0);
                            assert_eq!(kv.block_table(next_id).len(), total.div_ceil(bs));
                            assert_eq!(kv.num_free(), free_before - fresh - revived);
                            for &b in &kv.block_table(next_id)[hit.blocks.len()..] {
                                content[b as usize] = vec![None; bs]; // fresh: stale data
                            }
                            seqs.insert(next_id, (tokens, cached));
                        }
                        Err(e) => {
                            assert!(!fits, "allocation failed with room: {e}");
                            assert_eq!(kv.num_free(), free_before);
                            assert!(!kv.contains(next_id));
                        }
                    }
                }
                3..=6 if !seqs.is_empty() => {
                    // Compute more tokens of a live sequence (growing its table if needed).
                    let mut ids: Vec<u64> = seqs.keys().copied().collect();
                    ids.sort_unstable();
                    let id = ids[rng.below(ids.len())];
                    let (tokens, done) = seqs.get_mut(&id).expect("live");
                    if *done == tokens.len() {
                        tokens.push(rng.below(5) as u32);
                    }
                    let upto = *done + 1 + rng.below(tokens.len() - *done);
                    let old_len = kv.block_table(id).len();
                    let need = upto.div_ceil(bs).saturating_sub(old_len);
                    match kv.allocate_for(id, upto) {
                        Ok(()) => {
                            assert!(need <= free_before);
                            for &b in &kv.block_table(id)[old_len..] {
                                content[b as usize] = vec![None; bs];
                            }
                            let table = kv.block_table(id).to_vec();
                            for pos in *done..upto {
                                let b = table[pos / bs];
                                assert_eq!(kv.ref_count(b), 1, "writing into a shared block");
                                content[b as usize][pos % bs] = Some(tokens[pos]);
                            }
                            *done = upto;
                            kv.commit_full_blocks(id, &tokens[..upto]);
                        }
                        Err(_) => {
                            assert!(need > free_before);
                            assert_eq!(kv.block_table(id).len(), old_len);
                        }
                    }
                }
                _ if !seqs.is_empty() => {
                    let mut ids: Vec<u64> = seqs.keys().copied().collect();
                    ids.sort_unstable();
                    let id = ids[rng.below(ids.len())];
                    seqs.remove(&id);
                    assert!(kv.free(id));
                }
                _ => {}
            }
            let held: HashSet<u32> = seqs
                .keys()
                .flat_map(|&id| kv.block_table(id).to_vec())
                .collect();
            assert_eq!(kv.num_used(), held.len());
            assert_eq!(kv.num_used() + kv.num_free(), num_blocks);
            assert_eq!(kv.num_seqs(), seqs.len());
            kv.audit().expect("consistent");
        }
        assert!(
            hits > 100,
            "seed {seed}: only {hits} prefix hits, the test exercises too little"
        );
        assert!(kv.num_evictions() > 100, "seed {seed}: too few evictions");
        for id in seqs.keys() {
            kv.free(*id);
        }
        assert_eq!((kv.num_used(), kv.num_free()), (0, num_blocks));
    }
}

/// A local region: as a sequence grows, local blocks whose positions all lie before the
/// window of the next token are released (entries `FREED_BLOCK`) and reused; a block any
/// later token can still see is never released; the global table keeps everything.
#[test]
fn local_blocks_leave_with_the_window_and_never_before() {
    use tuili_models::{local_blocks_needed, FREED_BLOCK};
    let (bs, window, chunk) = (4, 6, 3);
    let per_seq = local_blocks_needed(window, chunk, bs);
    let mut kv = KvBlockManager::with_local(64, bs, 2 * per_seq, window).expect("valid");
    assert!(KvBlockManager::with_local(64, bs, 0, window).is_err());
    let mut computed = [0usize; 2];
    let mut held_max = 0;
    for step in 0..40 {
        for (s, done) in computed.iter_mut().enumerate() {
            let seq = s as u64;
            // Chunks of 1 to `chunk` tokens, as a scheduler hands them out.
            let n = 1 + (step + s) % chunk;
            kv.allocate_for(seq, *done + n)
                .expect("the region holds the windows");
            let local = kv.local_table(seq).to_vec();
            assert_eq!(local.len(), kv.block_table(seq).len());
            // Every position this chunk's tokens see or write has a live local block.
            let first_seen = (*done + 1).saturating_sub(window);
            for p in first_seen..*done + n {
                assert_ne!(
                    local[p / bs],
                    FREED_BLOCK,
                    "step {step}: position {p} freed"
                );
            }
            *done += n;
            let released = kv.release_outside_window(seq, *done);
            let after = kv.local_table(seq);
            // Exactly the blocks wholly before the next token's window are gone.
            let keep_from = (*done + 1).saturating_sub(window) / bs;
            for (i, &b) in after.iter().enumerate() {
                assert_eq!(b == FREED_BLOCK, i < keep_from, "step {step}: entry {i}");
            }
            assert!(released <= local.len());
            assert!(kv.block_table(seq).iter().all(|&b| b != FREED_BLOCK));
            kv.audit().expect("consistent");
        }
        held_max = held_max.max(kv.num_local_used());
    }
    // 40 steps of up to 3 tokens: far more positions than the local region has slots.
    assert!(computed[0] > 2 * per_seq * bs);
    assert!(held_max <= 2 * per_seq);
    assert_eq!(
        kv.num_used(),
        kv.blocks_for(computed[0]) + kv.blocks_for(computed[1])
    );
    // Nothing was committed, so nothing is cached; freeing returns every local block.
    let toks: Vec<u32> = (0..16).collect();
    assert_eq!(kv.lookup_prefix(&toks).num_tokens, 0);
    assert!(kv.free(0) && kv.free(1));
    assert_eq!(kv.num_local_free(), 2 * per_seq);
    assert_eq!(kv.num_cached(), 0);
    kv.audit().expect("consistent");
}

/// With a local region an allocation needs room in both pools, all or nothing.
#[test]
fn local_allocation_is_all_or_nothing() {
    let mut kv = KvBlockManager::with_local(16, 4, 3, 4).expect("valid");
    kv.allocate_for(1, 12).expect("3 blocks in each");
    assert!(!kv.can_allocate(2, 1));
    let e = kv.allocate_for(2, 1).expect_err("no local block left");
    assert_eq!((e.needed, e.available), (1, 0));
    assert_eq!((kv.num_used(), kv.block_table(2).len()), (3, 0));
    // 12 positions computed: the next token sees 9..=12, so blocks 0 and 1 go.
    assert_eq!(kv.release_outside_window(1, 12), 2);
    assert!(kv.can_allocate(2, 8));
    kv.allocate_for(2, 8).expect("the released blocks");
    kv.audit().expect("consistent");
}

/// Prefix caching with a local region: a finished sequence's local blocks stay cached
/// (released ones too), a later sequence with the same prefix gets the hit with the
/// window's local blocks shared and the entries before it `FREED_BLOCK`; once those
/// local blocks are evicted, the hit shrinks to where they are still cached.
#[test]
fn a_prefix_hit_with_a_local_region_needs_the_windows_local_blocks() {
    use tuili_models::FREED_BLOCK;
    let (bs, window) = (4, 6);
    let mut kv = KvBlockManager::with_local(64, bs, 16, window).expect("valid");
    let tokens: Vec<u32> = (0..48).map(|i| i * 7 + 1).collect();
    // Sequence 1 computes 40 tokens in steps of 8, the scheduler's way.
    for end in (8..=40).step_by(8) {
        kv.allocate_for(1, end).expect("fits");
        kv.commit_full_blocks(1, &tokens[..end]);
        kv.release_outside_window(1, end);
        kv.audit().expect("consistent");
    }
    assert!(kv.free(1));
    assert_eq!(kv.num_local_used(), 0);
    // Sequence 2: the 40 tokens and 8 more. The next token (40) sees 35..=40: local
    // blocks 8 and 9, both cached.
    let hit = kv.lookup_prefix(&tokens);
    assert_eq!(hit.num_tokens, 40);
    assert_eq!(kv.allocate_with_prefix(2, &hit, 48), Ok(40));
    let local = kv.local_table(2).to_vec();
    assert_eq!(local.len(), 12);
    assert!(local[..8].iter().all(|&b| b == FREED_BLOCK));
    assert!(local[8..].iter().all(|&b| b != FREED_BLOCK));
    kv.audit().expect("consistent");
    assert!(kv.free(2));
    // Another sequence takes every local block: the cached ones are evicted, and so the
    // hit is gone although the global blocks are still cached.
    kv.allocate_for(3, 64).expect("16 local blocks");
    kv.audit().expect("consistent");
    assert_eq!(kv.lookup_prefix(&tokens).num_tokens, 0);
    assert!(kv.free(3));
    // Cached local blocks count as free for allocations, as global ones do.
    assert_eq!(kv.num_local_free(), 16);
    kv.audit().expect("consistent");
}

/// Random operations on a manager with a local region, its local blocks' slots tracked
/// as the real K/V would be (each slot: the identity of the prefix written there): every
/// computed chunk finds its window's positions in its local blocks, holding its own
/// prefix, whether they were computed by it or came from the prefix cache; every
/// invariant holds after every operation.
#[test]
fn random_operations_with_a_local_region_keep_every_window() {
    use tuili_models::FREED_BLOCK;
    // Identity of `tokens[..=p]`.
    let ident = |tokens: &[u32], p: usize| {
        tokens[..=p]
            .iter()
            .fold(17u64, |h, &t| SplitMix64::mix(h ^ u64::from(t)))
    };
    for seed in [1u64, 2, 3] {
        let mut rng = SplitMix64::new(seed);
        let (bs, window, n_local) = (4usize, 7usize, 24usize);
        let mut kv = KvBlockManager::with_local(64, bs, n_local, window).expect("valid");
        let mut content: Vec<Vec<Option<u64>>> = vec![vec![None; bs]; n_local];
        let mut seqs: HashMap<u64, (Vec<u32>, usize)> = HashMap::new();
        let bases: Vec<Vec<u32>> = (0..3)
            .map(|_| (0..40).map(|_| rng.below(5) as u32).collect())
            .collect();
        let (mut next_id, mut hits) = (0u64, 0);
        for _ in 0..6000 {
            match rng.below(10) {
                0..=2 => {
                    let base = &bases[rng.below(bases.len())];
                    let mut tokens = base[..rng.below(base.len())].to_vec();
                    tokens.extend((0..1 + rng.below(12)).map(|_| rng.below(5) as u32));
                    let hit = kv.lookup_prefix(&tokens);
                    let total = hit.num_tokens + 1 + rng.below(tokens.len() - hit.num_tokens);
                    next_id += 1;
                    if let Ok(cached) = kv.allocate_with_prefix(next_id, &hit, total) {
                        hits += usize::from(cached > 0);
                        let local = kv.local_table(next_id);
                        // The cached window holds this sequence's prefix.
                        for p in (cached + 1).saturating_sub(window)..cached {
                            let b = local[p / bs];
                            assert_ne!(b, FREED_BLOCK);
                            assert_eq!(content[b as usize][p % bs], Some(ident(&tokens, p)));
                        }
                        seqs.insert(next_id, (tokens, cached));
                    }
                }
                3..=6 if !seqs.is_empty() => {
                    let mut ids: Vec<u64> = seqs.keys().copied().collect();
                    ids.sort_unstable();
                    let id = ids[rng.below(ids.len())];
                    let (tokens, done) = seqs[&id].clone();
                    if done == tokens.len() {
                        continue;
                    }
                    let n = 1 + rng.below((tokens.len() - done).min(5));
                    if kv.allocate_for(id, done + n).is_err() {
                        continue;
                    }
                    let local = kv.local_table(id).to_vec();
                    // Every position the chunk's tokens see is there, and is its own.
                    for p in (done + 1).saturating_sub(window)..done {
                        let b = local[p / bs];
                        assert_ne!(b, FREED_BLOCK, "position {p} of {done} released");
                        assert_eq!(content[b as usize][p % bs], Some(ident(&tokens, p)));
                    }
                    for p in done..done + n {
                        let b = local[p / bs];
                        content[b as usize][p % bs] = Some(ident(&tokens, p));
                    }
                    kv.commit_full_blocks(id, &tokens[..done + n]);
                    kv.release_outside_window(id, done + n);
                    seqs.insert(id, (tokens, done + n));
                }
                _ if !seqs.is_empty() => {
                    let mut ids: Vec<u64> = seqs.keys().copied().collect();
                    ids.sort_unstable();
                    let id = ids[rng.below(ids.len())];
                    seqs.remove(&id);
                    assert!(kv.free(id));
                }
                _ => {}
            }
            kv.audit().expect("consistent");
        }
        assert!(
            hits > 0,
            "seed {seed}: no prefix hit exercised the local cache"
        );
    }
}
