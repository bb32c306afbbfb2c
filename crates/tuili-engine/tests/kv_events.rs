//! Prefix-cache events: a listener that applies them knows exactly what the block manager
//! caches, and the prefix hits it predicts are the manager's.

use std::collections::{HashMap, HashSet};

use tuili_engine::kv_blocks::KvBlockManager;
use tuili_engine::scheduler::{SchedulerConfig, SeqRequest};
use tuili_engine::{kv_event_channel, KvEvent, Scheduler};
use tuili_models::SplitMix64;

/// What a router learns from the events: each cached block's parent and tokens.
#[derive(Default)]
struct Listener {
    blocks: HashMap<u64, (Option<u64>, Vec<u32>)>,
    cleared: usize,
}

impl Listener {
    fn apply(&mut self, events: Vec<KvEvent>, bs: usize) {
        for e in events {
            match e {
                KvEvent::BlockStored {
                    block_hashes,
                    parent_block_hash,
                    token_ids,
                    block_size,
                } => {
                    assert_eq!(block_size, bs);
                    assert_eq!(token_ids.len(), block_hashes.len() * bs);
                    let mut parent = parent_block_hash;
                    if let Some(p) = parent {
                        assert!(self.blocks.contains_key(&p), "parent {p:#x} unknown");
                    }
                    for (h, toks) in block_hashes.iter().zip(token_ids.chunks(bs)) {
                        let old = self.blocks.insert(*h, (parent, toks.to_vec()));
                        assert!(old.is_none(), "block {h:#x} stored twice");
                        parent = Some(*h);
                    }
                }
                KvEvent::BlockRemoved { block_hashes } => {
                    for h in block_hashes {
                        assert!(self.blocks.remove(&h).is_some(), "{h:#x} never stored");
                    }
                }
                KvEvent::AllBlocksCleared => {
                    self.blocks.clear();
                    self.cleared += 1;
                }
            }
        }
    }

    /// Cached tokens the listener expects for `tokens` (whole blocks, never the last token).
    fn predicted_hit(&self, tokens: &[u32], bs: usize) -> usize {
        let mut parent = None;
        let mut n = 0;
        for chunk in tokens
            .chunks_exact(bs)
            .take(tokens.len().saturating_sub(1) / bs)
        {
            let next = self
                .blocks
                .iter()
                .find(|(_, (p, t))| *p == parent && t.as_slice() == chunk);
            let Some((&h, _)) = next else { break };
            parent = Some(h);
            n += bs;
        }
        n
    }
}

#[test]
fn events_replayed_give_the_managers_cache_and_its_hits() {
    let bs = 4;
    let mut rng = SplitMix64::new(7);
    let mut kv = KvBlockManager::new(24, bs).unwrap();
    kv.record_events();
    let mut l = Listener::default();
    let bases: Vec<Vec<u32>> = (0..3)
        .map(|_| (0..30).map(|_| rng.below(4) as u32).collect())
        .collect();
    let mut live: Vec<u64> = Vec::new();
    let (mut removed, mut hits) = (0, 0);
    for id in 1..3000u64 {
        if rng.below(3) == 0 || live.len() > 3 {
            if !live.is_empty() {
                kv.free(live.remove(rng.below(live.len())));
            }
            continue;
        }
        let base = &bases[rng.below(bases.len())];
        let mut tokens = base[..rng.below(base.len())].to_vec();
        tokens.extend((0..1 + rng.below(9)).map(|_| rng.below(4) as u32));
        let hit = kv.lookup_prefix(&tokens);
        assert_eq!(hit.num_tokens, l.predicted_hit(&tokens, bs), "{tokens:?}");
        if kv.allocate_with_prefix(id, &hit, tokens.len()).is_ok() {
            hits += usize::from(hit.num_tokens > 0);
            kv.commit_full_blocks(id, &tokens);
            live.push(id);
        }
        let events = kv.take_events();
        removed += events
            .iter()
            .filter(|e| matches!(e, KvEvent::BlockRemoved { .. }))
            .count();
        l.apply(events, bs);
        let known: HashSet<u64> = l.blocks.keys().copied().collect();
        let cached: HashSet<u64> = kv.cached_hashes().collect();
        assert_eq!(known, cached, "after request {id}");
    }
    assert_eq!(l.cleared, 1);
    assert!(
        removed > 50 && hits > 50,
        "{removed} evictions, {hits} hits"
    );
}

#[test]
fn the_scheduler_sends_one_batch_per_step_that_changed_the_cache() {
    let cfg = SchedulerConfig {
        max_num_seqs: 2,
        max_batched_tokens: 64,
        block_size: 4,
        num_blocks: 8,
        max_model_len: 32,
    };
    let mut s = Scheduler::new(cfg).unwrap();
    let (tx, mut rx) = kv_event_channel();
    s.send_kv_events(tx);
    assert_eq!(rx.try_recv().unwrap(), vec![KvEvent::AllBlocksCleared]);
    let prompt: Vec<u32> = (10..20).collect();
    s.add(SeqRequest {
        id: 1,
        prompt: prompt.clone(),
        max_new_tokens: 1,
    })
    .unwrap();
    let plan = s.schedule();
    assert!(
        rx.try_recv().is_err(),
        "scheduling a fresh pool evicts nothing"
    );
    let out: Vec<(u64, Option<u32>)> = plan.scheduled.iter().map(|x| (x.id, Some(7))).collect();
    s.update(&out).unwrap();
    // Ten prompt tokens computed: two full blocks, one chain from the root.
    let batch = rx.try_recv().unwrap();
    let [KvEvent::BlockStored {
        block_hashes,
        parent_block_hash: None,
        token_ids,
        block_size: 4,
    }] = batch.as_slice()
    else {
        panic!("not one store from the root: {batch:?}");
    };
    assert_eq!(token_ids, &prompt[..8]);
    let cached: HashSet<u64> = s.kv().cached_hashes().collect();
    assert_eq!(block_hashes.iter().copied().collect::<HashSet<_>>(), cached);
    assert_eq!(block_hashes.len(), 2);
    assert!(rx.try_recv().is_err());
}
