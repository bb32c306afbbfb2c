//! Scheduler tests with a fake model and a fake paged KV cache (no tensors, no GPU).
//!
//! The fake model's next token is a hash of every token before it, so a sequence's output is
//! the same however it is chunked, batched, preempted or served from the prefix cache. The
//! fake KV stores, per slot, the token and the hash of the context up to it; every step
//! checks that the slots a sequence reads through its block table hold exactly its history.

use std::collections::{HashMap, HashSet};

use tuili_engine::scheduler::{
    ScheduledSeq, Scheduler, SchedulerConfig, SchedulerOutput, SeqEvent, SeqRequest,
};
use tuili_engine::FinishReason;
use tuili_models::SplitMix64;

const VOCAB: u64 = 1000;

fn mix(ctx: u64, token: u32) -> u64 {
    SplitMix64::mix(ctx ^ u64::from(token).wrapping_mul(SplitMix64::GAMMA))
}

fn next_token(ctx: u64) -> u32 {
    (ctx % VOCAB) as u32
}

/// What one sequence generates alone, token by token: the ground truth for every test.
fn reference(prompt: &[u32], max_new: usize, max_model_len: usize, eos: &[u32]) -> Vec<u32> {
    let mut ctx = prompt.iter().fold(0, |c, &t| mix(c, t));
    let mut out = Vec::new();
    while out.len() < max_new && prompt.len() + out.len() < max_model_len {
        let t = next_token(ctx);
        out.push(t);
        if eos.contains(&t) {
            break;
        }
        ctx = mix(ctx, t);
    }
    out
}

/// Drives a scheduler with the fake model and checks every step.
struct Sim {
    sched: Scheduler,
    /// block id -> (block_size,) slots of (token, context hash).
    kv: HashMap<u32, Vec<Option<(u32, u64)>>>,
    /// Prompt + generated tokens of every live sequence.
    history: HashMap<u64, Vec<u32>>,
    prompt_len: HashMap<u64, usize>,
    finished: HashMap<u64, (FinishReason, Vec<u32>)>,
    /// Tokens that end a sequence (the caller's stop check).
    eos: Vec<u32>,
    steps: usize,
}

impl Sim {
    fn new(config: SchedulerConfig) -> Self {
        Self {
            sched: Scheduler::new(config).expect("valid config"),
            kv: HashMap::new(),
            history: HashMap::new(),
            prompt_len: HashMap::new(),
            finished: HashMap::new(),
            eos: Vec::new(),
            steps: 0,
        }
    }

    fn add(&mut self, id: u64, prompt: Vec<u32>, max_new_tokens: usize) {
        self.history.insert(id, prompt.clone());
        self.prompt_len.insert(id, prompt.len());
        self.sched
            .add(SeqRequest {
                id,
                prompt,
                max_new_tokens,
            })
            .expect("valid request");
    }

    fn abort(&mut self, id: u64) -> bool {
        self.history.remove(&id);
        self.sched.abort(id)
    }

    /// The fake model: checks what a sequence reads, writes its new slots, samples.
    fn run_one(&mut self, s: &ScheduledSeq) -> Option<u32> {
        let bs = self.sched.config().block_size;
        let hist = &self.history[&s.id];
        let end = s.start_pos + s.tokens.len();
        assert_eq!(
            s.tokens,
            hist[s.start_pos..end],
            "seq {} runs wrong tokens",
            s.id
        );
        assert!(
            s.block_table.len() * bs >= end,
            "seq {}: block table too short",
            s.id
        );
        assert_eq!(s.block_table, self.sched.kv().block_table(s.id));
        let mut ctx = 0;
        for (pos, &t) in hist[..s.start_pos].iter().enumerate() {
            ctx = mix(ctx, t);
            let slot = self
                .kv
                .get(&s.block_table[pos / bs])
                .and_then(|b| b[pos % bs]);
            assert_eq!(
                slot,
                Some((t, ctx)),
                "seq {} reads a wrong KV slot at {pos}",
                s.id
            );
        }
        for (pos, &t) in (s.start_pos..).zip(&s.tokens) {
            ctx = mix(ctx, t);
            let block = s.block_table[pos / bs];
            assert_eq!(
                self.sched.kv().ref_count(block),
                1,
                "write into shared block {block}"
            );
            self.kv.entry(block).or_insert_with(|| vec![None; bs])[pos % bs] = Some((t, ctx));
        }
        s.sample.then(|| next_token(ctx))
    }

    /// One engine step with checks; returns the plan it ran.
    fn step(&mut self) -> SchedulerOutput {
        let cfg = *self.sched.config();
        let out = self.sched.schedule();
        self.steps += 1;
        let sum: usize = out.scheduled.iter().map(|s| s.tokens.len()).sum();
        assert_eq!(out.num_batched_tokens, sum);
        assert!(sum <= cfg.max_batched_tokens, "budget broken: {sum}");
        assert!(self.sched.num_running() <= cfg.max_num_seqs);
        let ids: HashSet<u64> = out.scheduled.iter().map(|s| s.id).collect();
        assert_eq!(ids.len(), out.scheduled.len(), "a sequence scheduled twice");
        for p in &out.preempted {
            assert!(!ids.contains(p), "preempted seq {p} also scheduled");
        }
        let outputs: Vec<(u64, Option<u32>)> = out
            .scheduled
            .iter()
            .map(|s| (s.id, self.run_one(s)))
            .collect();
        for ev in self.sched.update(&outputs).expect("consistent outputs") {
            match ev {
                SeqEvent::Token { id, token } => {
                    self.history.get_mut(&id).expect("live").push(token);
                    // A stop token that is also the last allowed token: `Finished` follows.
                    if self.eos.contains(&token) && self.sched.contains(id) {
                        assert!(self.sched.finish(id, FinishReason::Stop));
                        self.retire(id, FinishReason::Stop);
                    }
                }
                SeqEvent::Finished {
                    id,
                    reason,
                    num_generated,
                } => {
                    assert!(!self.sched.contains(id));
                    self.retire(id, reason);
                    assert_eq!(self.finished[&id].1.len(), num_generated);
                }
            }
        }
        self.sched.kv().audit().expect("block pool consistent");
        out
    }

    fn retire(&mut self, id: u64, reason: FinishReason) {
        let hist = self.history.remove(&id).expect("live");
        let generated = hist[self.prompt_len[&id]..].to_vec();
        self.finished.insert(id, (reason, generated));
    }

    fn run_to_end(&mut self, max_steps: usize) {
        while self.sched.has_unfinished() {
            assert!(
                self.steps < max_steps,
                "no progress after {max_steps} steps"
            );
            self.step();
        }
        assert_eq!(self.sched.kv().num_used(), 0, "blocks leaked");
        assert_eq!(self.sched.kv().num_free(), self.sched.config().num_blocks);
    }
}

fn config(max_num_seqs: usize, budget: usize, num_blocks: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_num_seqs,
        max_batched_tokens: budget,
        block_size: 16,
        num_blocks,
        max_model_len: 4096,
    }
}

fn prompt(seed: u64, len: usize) -> Vec<u32> {
    let mut rng = SplitMix64::new(seed);
    (0..len).map(|_| rng.below(VOCAB as usize) as u32).collect()
}

#[test]
fn config_and_requests_are_checked() {
    let mut c = config(8, 4, 64);
    let e = Scheduler::new(c).expect_err("budget below max_num_seqs");
    assert!(e.to_string().contains("max_batched_tokens"), "{e}");
    c.max_batched_tokens = 64;
    c.num_blocks = 0;
    assert!(Scheduler::new(c).is_err());
    let mut s = Scheduler::new(config(8, 64, 4)).expect("valid");
    let req = |id, prompt: Vec<u32>, max_new_tokens| SeqRequest {
        id,
        prompt,
        max_new_tokens,
    };
    let e = s.add(req(1, vec![], 4)).expect_err("empty prompt");
    assert!(e.to_string().contains("at least 1 token"), "{e}");
    let e = s
        .add(req(1, vec![0; 4096], 4))
        .expect_err("prompt too long");
    assert!(e.to_string().contains("at most 4095"), "{e}");
    assert!(s.add(req(1, vec![1], 0)).is_err(), "max_new_tokens 0");
    let e = s
        .add(req(1, vec![1; 60], 10))
        .expect_err("69 tokens > 4 blocks of 16");
    assert!(e.to_string().contains("the pool has 4"), "{e}");
    s.add(req(1, vec![1; 60], 5))
        .expect("64 KV tokens fit 4 blocks");
    let e = s.add(req(1, vec![2], 1)).expect_err("duplicate id");
    assert!(e.to_string().contains("already"), "{e}");
    assert_eq!(s.num_waiting(), 1);
}

#[test]
fn update_rejects_outputs_that_do_not_match_the_plan() {
    let mut s = Scheduler::new(config(4, 8, 64)).expect("valid");
    s.add(SeqRequest {
        id: 7,
        prompt: vec![1; 20],
        max_new_tokens: 3,
    })
    .expect("valid");
    let out = s.schedule();
    assert!(!out.scheduled[0].sample, "8 of 20 prompt tokens: not final");
    assert!(
        s.update(&[(7, Some(3))]).is_err(),
        "token for a non-final chunk"
    );
    // The failed update changed nothing: the same chunk is still in flight.
    assert!(
        s.schedule().is_empty(),
        "an in-flight sequence is not scheduled again"
    );
    s.update(&[(7, None)]).expect("chunk done");
    let out = s.schedule();
    assert_eq!(out.scheduled[0].start_pos, 8);
    s.update(&[(7, None)]).expect("chunk done");
    let out = s.schedule();
    assert_eq!(
        (out.scheduled[0].start_pos, out.scheduled[0].tokens.len()),
        (16, 4)
    );
    assert!(out.scheduled[0].sample);
    assert!(s.update(&[(7, None)]).is_err(), "final chunk needs a token");
    let ev = s.update(&[(7, Some(5))]).expect("valid");
    assert_eq!(ev, vec![SeqEvent::Token { id: 7, token: 5 }]);
    assert_eq!(s.generated(7), Some(&[5][..]));
    assert_eq!(
        s.update(&[(7, Some(5))]).expect("ignored"),
        vec![],
        "not in flight"
    );
}

#[test]
fn budget_is_respected_and_a_long_prompt_never_stalls_decodes() {
    let budget = 32;
    let mut sim = Sim::new(config(8, budget, 512));
    for id in 0..4 {
        sim.add(id, prompt(id, 10), 200);
    }
    // Get the 4 short sequences decoding.
    sim.step();
    sim.step();
    sim.add(100, prompt(100, 1000), 5);
    let mut chunks = 0;
    while sim.history[&100].len() == 1000 {
        let out = sim.step();
        let decodes: HashSet<u64> = out
            .scheduled
            .iter()
            .filter(|s| s.tokens.len() == 1 && s.sample)
            .map(|s| s.id)
            .collect();
        assert_eq!(
            decodes,
            (0..4).collect(),
            "every running decode gets its token"
        );
        let long = out.scheduled.iter().find(|s| s.id == 100).expect("chunk");
        assert_eq!(long.tokens.len(), (budget - 4).min(1000 - long.start_pos));
        assert_eq!(out.num_batched_tokens, 4 + long.tokens.len());
        chunks += 1;
    }
    assert_eq!(chunks, 1000usize.div_ceil(budget - 4));
    for id in 0..4 {
        sim.abort(id);
    }
    sim.run_to_end(1000);
    assert_eq!(
        sim.finished[&100].1,
        reference(&prompt(100, 1000), 5, 4096, &[])
    );
}

#[test]
fn continuous_batching_requests_join_and_leave_at_any_step() {
    let mut sim = Sim::new(config(4, 64, 256));
    let mut expected = HashMap::new();
    let mut next = 0u64;
    let mut max_batch = 0;
    let (mut joined_while_decoding, mut left_while_running) = (false, false);
    for step in 0..200 {
        if step % 3 == 0 && next < 30 {
            let p = prompt(next + 1000, 5 + (next as usize * 7) % 40);
            let max_new = 3 + (next as usize * 5) % 17;
            expected.insert(next, reference(&p, max_new, 4096, &[]));
            sim.add(next, p, max_new);
            next += 1;
        }
        if !sim.sched.has_unfinished() {
            continue;
        }
        let done_before = sim.finished.len();
        let out = sim.step();
        max_batch = max_batch.max(out.scheduled.len());
        let new = out.scheduled.iter().any(|s| s.start_pos == 0);
        let decoding = out
            .scheduled
            .iter()
            .any(|s| s.start_pos > 0 && s.tokens.len() == 1);
        joined_while_decoding |= new && decoding;
        left_while_running |= sim.finished.len() > done_before && sim.sched.num_running() > 0;
    }
    assert!(
        joined_while_decoding,
        "a new prompt ran in the same step as decodes"
    );
    assert!(
        left_while_running,
        "a sequence finished while others kept running"
    );
    sim.run_to_end(1000);
    assert_eq!(max_batch, 4, "max_num_seqs sequences ran together");
    assert_eq!(sim.finished.len(), 30);
    for (id, want) in &expected {
        assert_eq!(&sim.finished[id].1, want, "seq {id}");
        assert_eq!(sim.finished[id].0, FinishReason::Length);
    }
}

#[test]
fn preemption_under_block_pressure_then_every_sequence_completes() {
    // 6 sequences may each need 30 + 40 - 1 KV tokens = 5 blocks; the pool has 12.
    let mut sim = Sim::new(config(6, 64, 12));
    let mut expected = HashMap::new();
    for id in 0..6 {
        let p = prompt(id + 50, 30);
        expected.insert(id, reference(&p, 40, 4096, &[]));
        sim.add(id, p, 40);
    }
    let mut saw_preemption = false;
    while sim.sched.has_unfinished() {
        assert!(sim.steps < 2000, "no progress");
        let running: Vec<u64> = sim.history.keys().copied().collect();
        let out = sim.step();
        for p in &out.preempted {
            saw_preemption = true;
            assert!(running.contains(p));
            assert!(
                sim.sched.contains(*p),
                "a preempted sequence is kept, not dropped"
            );
        }
    }
    assert!(saw_preemption);
    assert!(sim.sched.stats().preemptions > 0);
    assert_eq!(sim.finished.len(), 6);
    for (id, want) in &expected {
        assert_eq!(sim.finished[id].1.len(), 40);
        assert_eq!(&sim.finished[id].1, want, "seq {id} changed by preemption");
    }
    assert_eq!(sim.sched.kv().num_used(), 0);
}

#[test]
fn preemption_takes_the_newest_sequence() {
    // 2 blocks of 4 slots: seq 0 (older) and seq 1 each hold one block.
    let c = SchedulerConfig {
        max_num_seqs: 2,
        max_batched_tokens: 8,
        block_size: 4,
        num_blocks: 2,
        max_model_len: 64,
    };
    let mut sim = Sim::new(c);
    sim.add(0, vec![1, 2, 3], 4);
    sim.add(1, vec![4, 5, 6], 4);
    let out = sim.step();
    assert_eq!(out.scheduled.len(), 2);
    // Both decode at position 3 (fits), then seq 0 needs a second block at position 4.
    sim.step();
    let out = sim.step();
    assert_eq!(out.preempted, vec![1]);
    assert_eq!(
        out.scheduled.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![0]
    );
    assert_eq!(sim.sched.num_waiting(), 1);
    sim.run_to_end(100);
    assert_eq!(sim.finished[&1].1, reference(&[4, 5, 6], 4, 64, &[]));
}

#[test]
fn abort_frees_everything_waiting_or_running() {
    let mut sim = Sim::new(config(3, 256, 64));
    for id in 0..6 {
        sim.add(id, prompt(id, 40), 50);
    }
    sim.step();
    sim.step();
    assert_eq!((sim.sched.num_running(), sim.sched.num_waiting()), (3, 3));
    assert!(sim.sched.kv().num_used() > 0);
    // Abort between schedule and update: its output is ignored.
    let out = sim.sched.schedule();
    let victim = out.scheduled[0].id;
    assert!(sim.sched.abort(victim));
    let outputs: Vec<(u64, Option<u32>)> = out
        .scheduled
        .iter()
        .map(|s| (s.id, s.sample.then_some(1)))
        .collect();
    sim.sched.update(&outputs).expect("aborted output ignored");
    assert!(!sim.sched.abort(victim), "already gone");
    for id in 0..6 {
        sim.sched.abort(id);
    }
    assert!(!sim.sched.has_unfinished());
    assert_eq!((sim.sched.num_running(), sim.sched.num_waiting()), (0, 0));
    assert_eq!(sim.sched.kv().num_used(), 0);
    assert_eq!(sim.sched.kv().num_seqs(), 0);
    assert!(sim.sched.schedule().is_empty());
}

#[test]
fn twenty_requests_share_a_500_token_prefix_through_the_cache() {
    let mut sim = Sim::new(config(8, 256, 1024));
    let system = prompt(9, 500);
    let with_tail = |i: u64| -> Vec<u32> {
        let mut p = system.clone();
        p.extend(prompt(1000 + i, 10));
        p
    };
    sim.add(0, with_tail(0), 4);
    sim.run_to_end(100);
    let first = sim.sched.stats().prefix;
    assert_eq!(first.hits, 0);
    let mut expected = HashMap::new();
    for i in 1..20 {
        expected.insert(i, reference(&with_tail(i), 4, 4096, &[]));
        sim.add(i, with_tail(i), 4);
    }
    let mut cached_per_seq = HashMap::new();
    let mut computed = 0;
    while sim.sched.has_unfinished() {
        let out = sim.step();
        for s in &out.scheduled {
            if s.num_cached_tokens > 0 {
                cached_per_seq.insert(s.id, s.num_cached_tokens);
            }
            computed += s.tokens.len();
        }
    }
    let stats = sim.sched.stats().prefix;
    let (queries, hits) = (stats.queries - first.queries, stats.hits - first.hits);
    assert_eq!(queries, 19 * 510);
    // 31 full blocks of 16 = 496 of the 500 shared tokens, per request.
    assert_eq!(hits, 19 * 496);
    assert!(hits as f64 / 500.0 / 19.0 > 0.9);
    assert_eq!(cached_per_seq.len(), 19);
    assert!(cached_per_seq.values().all(|&c| c == 496));
    assert_eq!(
        computed,
        19 * (14 + 3),
        "only the uncached tail and decodes ran"
    );
    for (id, want) in &expected {
        assert_eq!(&sim.finished[id].1, want);
    }
}

#[test]
fn finish_reasons_length_context_and_stop() {
    let c = SchedulerConfig {
        max_model_len: 20,
        ..config(4, 64, 64)
    };
    let mut sim = Sim::new(c);
    let p = prompt(3, 12);
    let want = reference(&p, 100, 4096, &[]);
    // The 3rd generated token ends the sequence that watches for it.
    sim.eos = vec![want[2]];
    sim.add(0, p.clone(), 100); // ends at eos (Stop)
    sim.run_to_end(100);
    assert_eq!(sim.finished[&0], (FinishReason::Stop, want[..3].to_vec()));
    sim.eos.clear();
    sim.add(1, p.clone(), 100); // 12 + 8 = max_model_len
    sim.add(2, p, 5);
    sim.run_to_end(200);
    assert_eq!(
        sim.finished[&1],
        (FinishReason::ContextFull, want[..8].to_vec())
    );
    assert_eq!(sim.finished[&2], (FinishReason::Length, want[..5].to_vec()));
}

/// Many requests with random lengths, arrivals, shared prefixes, stop tokens and aborts on a
/// small pool: every request ends with exactly the tokens it would get alone, and the pool
/// ends fully free.
#[test]
fn random_simulation_every_request_finishes_and_the_pool_ends_free() {
    let mut preemptions = 0;
    for (seed, block_size) in [(11u64, 1), (12, 4), (13, 16), (14, 4), (15, 16)] {
        let mut rng = SplitMix64::new(seed);
        let c = SchedulerConfig {
            max_num_seqs: 1 + rng.below(16),
            max_batched_tokens: 16 + rng.below(200),
            block_size,
            num_blocks: 0,
            max_model_len: 400,
        };
        let c = SchedulerConfig {
            max_batched_tokens: c.max_batched_tokens.max(c.max_num_seqs),
            num_blocks: 400usize.div_ceil(c.block_size) + rng.below(40),
            ..c
        };
        let mut sim = Sim::new(c);
        // 2% of tokens are stop tokens.
        sim.eos = (0..VOCAB as u32).step_by(50).collect();
        let shared: Vec<Vec<u32>> = (0..3).map(|i| prompt(seed * 10 + i, 120)).collect();
        let mut expected = HashMap::new();
        let mut aborted = HashSet::new();
        let n = 150u64;
        let mut next = 0u64;
        while next < n || sim.sched.has_unfinished() {
            assert!(sim.steps < 20_000, "seed {seed}: no progress");
            while next < n && rng.below(3) == 0 {
                let mut p = if rng.below(2) == 0 {
                    shared[rng.below(3)][..1 + rng.below(120)].to_vec()
                } else {
                    Vec::new()
                };
                p.extend(prompt(rng.next_u64(), 1 + rng.below(150)));
                let max_new = 1 + rng.below(80);
                expected.insert(next, reference(&p, max_new, c.max_model_len, &sim.eos));
                sim.add(next, p, max_new);
                next += 1;
            }
            if rng.below(50) == 0 {
                let mut live: Vec<u64> = sim.history.keys().copied().collect();
                live.sort_unstable();
                if let Some(&id) = live.get(rng.below(live.len().max(1))) {
                    assert!(sim.abort(id));
                    aborted.insert(id);
                }
            }
            if sim.sched.has_unfinished() {
                sim.step();
            }
        }
        assert_eq!(sim.sched.kv().num_used(), 0, "seed {seed}: blocks leaked");
        assert_eq!(sim.finished.len() + aborted.len(), n as usize);
        for (id, want) in &expected {
            if aborted.contains(id) {
                continue;
            }
            let (reason, got) = &sim.finished[id];
            assert_eq!(got, want, "seed {seed} seq {id} ({reason:?})");
        }
        let stats = sim.sched.stats();
        assert!(
            stats.prefix.hits > 0,
            "seed {seed}: the shared prefixes never hit"
        );
        preemptions += stats.preemptions;
        eprintln!(
            "seed {seed}: {:?} steps {} preemptions {} prefix hit rate {:.2}",
            c,
            stats.steps,
            stats.preemptions,
            stats.prefix.hit_rate()
        );
    }
    assert!(preemptions > 50, "the small pools should force preemptions");
}
