//! Continuous-batching scheduler over a paged KV cache. Integers only: it decides which
//! sequences run which tokens each step and owns their KV block tables; it never sees a
//! tensor, so it is tested with fake runners (like vLLM's `tests/v1/core/utils.py`).
//!
//! One engine step is `schedule()` -> run the model on the returned tokens -> `update()`.
//!
//! Policy (after vLLM v1 `sched/scheduler.py`, with decodes ahead of prefill chunks):
//! 1. Running sequences first, within the per-step token budget: every decode (1 token) in
//!    admission order, then the next prompt chunk of running sequences whose prompt is not
//!    yet fully computed. Decodes come first so a long prompt never stalls them.
//! 2. If a running sequence's next tokens need a block and none is free, the *newest* running
//!    sequence is preempted: its blocks are freed and it goes back to the front of the waiting
//!    queue, to be recomputed from prompt + generated tokens (nothing is lost). Repeat until
//!    the allocation fits (a sequence may end up preempting itself).
//! 3. Only in a step without preemption, waiting sequences are admitted first come, first
//!    served, while `max_num_seqs` and the budget allow: each checks the prefix cache (cached
//!    tokens are not recomputed) and gets a prefill chunk of at most the remaining budget.
//!    When the head of the queue cannot get blocks, admission stops (no overtaking).
//! 4. With a local region for sliding-window layers (`Scheduler::with_local`), each
//!    scheduled sequence also carries its local table, an allocation needs room in both
//!    regions, and `update` releases the local blocks that left the window (see
//!    `kv_blocks`).

use std::collections::{HashMap, VecDeque};

use crate::kv_blocks::{KvBlockManager, PrefixStats, SeqId};
use crate::kv_events::KvEventSender;
use crate::{EngineError, FinishReason};

/// Limits of one scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most sequences running at once (holding KV blocks).
    pub max_num_seqs: usize,
    /// Most tokens run in one step, over all sequences (decodes count 1 each).
    pub max_batched_tokens: usize,
    /// Token slots per KV block.
    pub block_size: usize,
    /// KV blocks in the pool.
    pub num_blocks: usize,
    /// Most tokens (prompt + generated) in one sequence.
    pub max_model_len: usize,
}

impl SchedulerConfig {
    fn validate(&self) -> Result<(), EngineError> {
        let bad = |what: &str| Err(EngineError::Invalid(what.to_string()));
        if self.max_num_seqs == 0 {
            return bad("max_num_seqs must be at least 1, got 0");
        }
        if self.max_batched_tokens < self.max_num_seqs {
            return Err(EngineError::Invalid(format!(
                "max_batched_tokens must be at least max_num_seqs ({}) so every running \
                 sequence can decode each step, got {}",
                self.max_num_seqs, self.max_batched_tokens
            )));
        }
        if self.max_model_len < 2 {
            return Err(EngineError::Invalid(format!(
                "max_model_len must be at least 2, got {}",
                self.max_model_len
            )));
        }
        Ok(())
    }
}

/// A new sequence to generate for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqRequest {
    /// Caller-chosen id, unique among the sequences in the scheduler.
    pub id: SeqId,
    /// Prompt token ids (at least 1, fewer than `max_model_len`).
    pub prompt: Vec<u32>,
    /// Most tokens to generate (at least 1); generation also ends at `max_model_len`.
    pub max_new_tokens: usize,
}

/// One sequence's work in a step: run `tokens` at positions `start_pos..start_pos + len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledSeq {
    /// The sequence.
    pub id: SeqId,
    /// Tokens already in the KV cache (position of `tokens[0]`).
    pub start_pos: usize,
    /// Token ids to run this step: a prompt chunk, or the last sampled token for a decode.
    pub tokens: Vec<u32>,
    /// KV block ids for positions `0..start_pos + tokens.len()` (and maybe a little more).
    pub block_table: Vec<u32>,
    /// The local layers' block table with a local region (else empty): as long as
    /// `block_table`, entries before the window of `tokens[0]` may be `FREED_BLOCK`.
    pub local_table: Vec<u32>,
    /// Whether the logits of the last token must be sampled: this chunk reaches the end of
    /// the known tokens (a decode, or the final chunk of a prompt).
    pub sample: bool,
    /// Tokens taken from the prefix cache when this sequence was admitted in this step
    /// (already counted in `start_pos`; 0 otherwise).
    pub num_cached_tokens: usize,
}

/// The plan for one step. Plain data, no tensors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerOutput {
    /// Sequences to run, decodes first.
    pub scheduled: Vec<ScheduledSeq>,
    /// Sequences preempted in this step (their KV is gone; they will be recomputed).
    pub preempted: Vec<SeqId>,
    /// Sum of `tokens.len()` over `scheduled` (at most `max_batched_tokens`).
    pub num_batched_tokens: usize,
}

impl SchedulerOutput {
    /// Nothing to run this step.
    pub fn is_empty(&self) -> bool {
        self.scheduled.is_empty()
    }
}

/// What happened to a sequence in `update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqEvent {
    /// A token was appended to the sequence.
    Token {
        /// The sequence.
        id: SeqId,
        /// The sampled token.
        token: u32,
    },
    /// The sequence ended and its blocks were freed; it is no longer in the scheduler.
    Finished {
        /// The sequence.
        id: SeqId,
        /// `Length` (hit `max_new_tokens`) or `ContextFull` (hit `max_model_len`).
        reason: FinishReason,
        /// Tokens generated in all.
        num_generated: usize,
    },
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerStats {
    /// Sequences waiting for admission (new or preempted).
    pub waiting: usize,
    /// Of those, the preempted ones.
    pub preempted_waiting: usize,
    /// Token slots per KV block.
    pub block_size: usize,
    /// Sequences holding KV blocks.
    pub running: usize,
    /// KV blocks held by sequences.
    pub blocks_used: usize,
    /// KV blocks free or evictable.
    pub blocks_free: usize,
    /// KV blocks registered in the prefix cache (held or evictable).
    pub blocks_cached: usize,
    /// Local-region KV blocks held by sequences (0 without a local region).
    pub local_blocks_used: usize,
    /// Prefix-cache counters (tokens).
    pub prefix: PrefixStats,
    /// Preemptions so far.
    pub preemptions: u64,
    /// Calls to `schedule` so far.
    pub steps: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Waiting,
    Running,
}

#[derive(Debug, Clone)]
struct Seq {
    /// Prompt then generated tokens.
    tokens: Vec<u32>,
    prompt_len: usize,
    max_new_tokens: usize,
    /// Leading tokens whose KV is in the cache.
    num_computed: usize,
    /// Tokens handed out by `schedule` and not yet reported by `update` (0 = idle).
    in_flight: usize,
    status: Status,
    /// Preempted at least once.
    preempted: bool,
}

impl Seq {
    fn remaining(&self) -> usize {
        self.tokens.len() - self.num_computed
    }
}

/// Continuous-batching scheduler; see the module docs for the policy.
#[derive(Debug, Clone)]
pub struct Scheduler {
    config: SchedulerConfig,
    kv: KvBlockManager,
    seqs: HashMap<SeqId, Seq>,
    /// Front is next to admit; preempted sequences are pushed to the front.
    waiting: VecDeque<SeqId>,
    /// Admission order: last is newest (first to preempt).
    running: Vec<SeqId>,
    preemptions: u64,
    steps: u64,
    /// Where each step's prefix-cache events go, once asked for.
    kv_events: Option<KvEventSender>,
}

impl Scheduler {
    /// An empty scheduler with a fresh block pool.
    pub fn new(config: SchedulerConfig) -> Result<Self, EngineError> {
        config.validate()?;
        Ok(Self {
            config,
            kv: KvBlockManager::new(config.num_blocks, config.block_size)?,
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            preemptions: 0,
            steps: 0,
            kv_events: None,
        })
    }

    /// As [`Scheduler::new`], with a local region of `n_local_blocks` KV blocks for the
    /// sliding-window layers (widest window `window`): see `kv_blocks`'s module docs.
    /// It must hold one sequence's local blocks for a step of `max_batched_tokens`.
    pub fn with_local(
        config: SchedulerConfig,
        n_local_blocks: usize,
        window: usize,
    ) -> Result<Self, EngineError> {
        let mut s = Scheduler::new(config)?;
        let per_seq =
            tuili_models::local_blocks_needed(window, config.max_batched_tokens, config.block_size)
                .min(config.max_model_len.div_ceil(config.block_size.max(1)));
        if n_local_blocks < per_seq {
            return Err(EngineError::Invalid(format!(
                "the local KV region has {n_local_blocks} blocks; one sequence's window of \
                 {window} plus a step of {} tokens needs {per_seq}",
                config.max_batched_tokens
            )));
        }
        s.kv = KvBlockManager::with_local(
            config.num_blocks,
            config.block_size,
            n_local_blocks,
            window,
        )?;
        Ok(s)
    }

    /// Sends the prefix-cache events of every later step to `tx`, one batch per
    /// `schedule` or `update` that changed the cache, starting with
    /// [`crate::kv_events::KvEvent::AllBlocksCleared`]. Call it before the first request.
    pub fn send_kv_events(&mut self, tx: KvEventSender) {
        self.kv.record_events();
        self.kv_events = Some(tx);
        self.flush_kv_events();
    }

    fn flush_kv_events(&mut self) {
        let Some(tx) = &self.kv_events else {
            return;
        };
        let events = self.kv.take_events();
        // A receiver gone (the publisher stopped) is no reason to stop serving.
        if !events.is_empty() && tx.send(events).is_err() {
            self.kv_events = None;
            self.kv.stop_events();
        }
    }

    /// The limits this scheduler was built with.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The block pool (read-only: block tables, free counts, prefix stats).
    pub fn kv(&self) -> &KvBlockManager {
        &self.kv
    }

    /// Sequences waiting for admission.
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Sequences holding KV blocks.
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Whether any sequence is waiting or running.
    pub fn has_unfinished(&self) -> bool {
        !self.seqs.is_empty()
    }

    /// Whether `id` is in the scheduler (waiting or running).
    pub fn contains(&self, id: SeqId) -> bool {
        self.seqs.contains_key(&id)
    }

    /// Tokens generated so far for `id`.
    pub fn generated(&self, id: SeqId) -> Option<&[u32]> {
        self.seqs.get(&id).map(|s| &s.tokens[s.prompt_len..])
    }

    /// Counters for metrics.
    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            waiting: self.waiting.len(),
            preempted_waiting: (self.waiting.iter())
                .filter(|id| self.seqs.get(id).is_some_and(|s| s.preempted))
                .count(),
            block_size: self.config.block_size,
            running: self.running.len(),
            blocks_used: self.kv.num_used(),
            blocks_free: self.kv.num_free(),
            blocks_cached: self.kv.num_cached(),
            local_blocks_used: self.kv.num_local_used(),
            prefix: self.kv.prefix_stats(),
            preemptions: self.preemptions,
            steps: self.steps,
        }
    }

    /// Queues a new sequence. Errors name the limit that the request breaks.
    pub fn add(&mut self, req: SeqRequest) -> Result<(), EngineError> {
        let c = &self.config;
        if self.seqs.contains_key(&req.id) {
            return Err(EngineError::Invalid(format!(
                "sequence id {} is already in the scheduler",
                req.id
            )));
        }
        if req.prompt.is_empty() {
            return Err(EngineError::Invalid(
                "prompt must have at least 1 token, got 0".into(),
            ));
        }
        if req.prompt.len() >= c.max_model_len {
            return Err(EngineError::Invalid(format!(
                "prompt must have at most {} tokens (max_model_len - 1), got {}",
                c.max_model_len - 1,
                req.prompt.len()
            )));
        }
        if req.max_new_tokens == 0 {
            return Err(EngineError::Invalid(
                "max_new_tokens must be at least 1, got 0".into(),
            ));
        }
        // The last sampled token is never run, so the KV holds at most len - 1 tokens.
        let max_kv = (req.prompt.len() + (req.max_new_tokens - 1).min(c.max_model_len))
            .min(c.max_model_len - 1);
        let needed = self.kv.blocks_for(max_kv);
        if needed > c.num_blocks {
            return Err(EngineError::Invalid(format!(
                "sequence {} may need {needed} KV blocks ({max_kv} tokens), the pool has {}",
                req.id, c.num_blocks
            )));
        }
        self.seqs.insert(
            req.id,
            Seq {
                prompt_len: req.prompt.len(),
                tokens: req.prompt,
                max_new_tokens: req.max_new_tokens,
                num_computed: 0,
                in_flight: 0,
                status: Status::Waiting,
                preempted: false,
            },
        );
        self.waiting.push_back(req.id);
        Ok(())
    }

    /// Drops `id` whether waiting or running and frees its blocks now. False if unknown.
    pub fn abort(&mut self, id: SeqId) -> bool {
        self.remove(id)
    }

    /// Ends `id` for a reason the caller detected (`Stop` on an end-of-generation token or a
    /// stop string, `Cancelled`, ...) and frees its blocks now. False if unknown.
    pub fn finish(&mut self, id: SeqId, reason: FinishReason) -> bool {
        let _ = reason; // The caller reports the reason; the bookkeeping is the same.
        self.remove(id)
    }

    fn remove(&mut self, id: SeqId) -> bool {
        let Some(seq) = self.seqs.remove(&id) else {
            return false;
        };
        match seq.status {
            Status::Waiting => self.waiting.retain(|&w| w != id),
            Status::Running => self.running.retain(|&r| r != id),
        }
        self.kv.free(id);
        true
    }

    /// Plans one step; see the module docs for the policy. Sequences handed out by an
    /// earlier `schedule` and not yet reported to `update` are left alone.
    pub fn schedule(&mut self) -> SchedulerOutput {
        self.steps += 1;
        let mut out = SchedulerOutput::default();
        let mut budget = self.config.max_batched_tokens;

        // Decodes first, then prompt chunks of running sequences, each in admission order.
        let idle = |id: &SeqId| self.seqs.get(id).is_some_and(|s| s.in_flight == 0);
        let is_decode = |id: &SeqId| self.seqs.get(id).is_some_and(|s| s.remaining() == 1);
        let order: Vec<SeqId> = (self.running.iter().filter(|id| idle(id) && is_decode(id)))
            .chain(self.running.iter().filter(|id| idle(id) && !is_decode(id)))
            .copied()
            .collect();
        for id in order {
            if budget == 0 {
                break;
            }
            // Preempted earlier in this pass?
            if self.seqs.get(&id).map(|s| s.status) != Some(Status::Running) {
                continue;
            }
            self.schedule_running(id, &mut budget, &mut out);
        }

        if out.preempted.is_empty() {
            self.admit_waiting(&mut budget, &mut out);
        }

        for s in &out.scheduled {
            if let Some(seq) = self.seqs.get_mut(&s.id) {
                seq.in_flight = s.tokens.len();
            }
        }
        out.num_batched_tokens = self.config.max_batched_tokens - budget;
        self.flush_kv_events();
        out
    }

    /// Schedules the next tokens of running sequence `id`, preempting newer sequences
    /// until its blocks fit.
    fn schedule_running(&mut self, id: SeqId, budget: &mut usize, out: &mut SchedulerOutput) {
        let Some(seq) = self.seqs.get(&id) else {
            return;
        };
        let start = seq.num_computed;
        let n = seq.remaining().min(*budget);
        while self.kv.allocate_for(id, start + n).is_err() {
            // Newest running sequence that is not waiting on an earlier step's results.
            let victim = self
                .running
                .iter()
                .rev()
                .copied()
                .find(|v| *v == id || self.seqs.get(v).is_some_and(|s| s.in_flight == 0));
            let Some(victim) = victim else {
                return;
            };
            self.preempt(victim, budget, out);
            if victim == id {
                return;
            }
        }
        self.push_scheduled(id, n, 0, budget, out);
    }

    /// Frees `id`'s blocks and puts it at the front of the waiting queue; if it was already
    /// scheduled in this step, takes it back out and refunds its tokens.
    fn preempt(&mut self, id: SeqId, budget: &mut usize, out: &mut SchedulerOutput) {
        if let Some(pos) = out.scheduled.iter().position(|s| s.id == id) {
            *budget += out.scheduled.remove(pos).tokens.len();
        }
        self.kv.free(id);
        self.running.retain(|&r| r != id);
        self.waiting.push_front(id);
        if let Some(seq) = self.seqs.get_mut(&id) {
            seq.num_computed = 0;
            seq.status = Status::Waiting;
            seq.preempted = true;
        }
        self.preemptions += 1;
        out.preempted.push(id);
    }

    /// Admits waiting sequences first come, first served (see the module docs).
    fn admit_waiting(&mut self, budget: &mut usize, out: &mut SchedulerOutput) {
        while *budget > 0 && self.running.len() < self.config.max_num_seqs {
            let Some(&id) = self.waiting.front() else {
                break;
            };
            let Some(seq) = self.seqs.get(&id) else {
                self.waiting.pop_front(); // cannot happen: removal keeps both in step
                continue;
            };
            let hit = self.kv.lookup_prefix(&seq.tokens);
            let len = seq.tokens.len();
            let n = (len - hit.num_tokens).min(*budget);
            let Ok(cached) = self.kv.allocate_with_prefix(id, &hit, hit.num_tokens + n) else {
                break; // the head waits for blocks; later ones do not overtake it
            };
            // `cached == hit.num_tokens` here (nothing ran between lookup and allocation);
            // if it were less, the blocks for `hit.num_tokens + n` still cover this chunk.
            let n = (len - cached).min(*budget);
            self.waiting.pop_front();
            self.running.push(id);
            if let Some(seq) = self.seqs.get_mut(&id) {
                seq.num_computed = cached;
                seq.status = Status::Running;
            }
            self.push_scheduled(id, n, cached, budget, out);
        }
    }

    fn push_scheduled(
        &self,
        id: SeqId,
        n: usize,
        num_cached_tokens: usize,
        budget: &mut usize,
        out: &mut SchedulerOutput,
    ) {
        let Some(seq) = self.seqs.get(&id) else {
            return;
        };
        let start = seq.num_computed;
        *budget -= n;
        out.scheduled.push(ScheduledSeq {
            id,
            start_pos: start,
            tokens: seq.tokens[start..start + n].to_vec(),
            block_table: self.kv.block_table(id).to_vec(),
            local_table: self.kv.local_table(id).to_vec(),
            sample: start + n == seq.tokens.len(),
            num_cached_tokens,
        });
    }

    /// Applies the results of the last step: `outputs` has one `(id, sampled)` per scheduled
    /// sequence, with `Some(token)` exactly for those whose `sample` was true. Advances the
    /// computed tokens, appends sampled tokens, registers newly full blocks in the prefix
    /// cache, and finishes (and frees) sequences that reached `max_new_tokens` or
    /// `max_model_len`. Outputs for sequences no longer in flight (aborted, finished or
    /// preempted since) are ignored; scheduled sequences left out stay in flight.
    /// Checks everything before changing anything.
    pub fn update(
        &mut self,
        outputs: &[(SeqId, Option<u32>)],
    ) -> Result<Vec<SeqEvent>, EngineError> {
        let mut seen = std::collections::HashSet::new();
        for &(id, token) in outputs {
            let Some(seq) = self.seqs.get(&id).filter(|s| s.in_flight > 0) else {
                continue;
            };
            if !seen.insert(id) {
                return Err(EngineError::Invalid(format!(
                    "sequence {id} appears twice in one update"
                )));
            }
            let wants = seq.num_computed + seq.in_flight == seq.tokens.len();
            match (wants, token) {
                (true, None) => {
                    return Err(EngineError::Invalid(format!(
                        "sequence {id} ran its last known token and needs a sampled token"
                    )))
                }
                (false, Some(t)) => {
                    return Err(EngineError::Invalid(format!(
                        "sequence {id} ran a non-final prompt chunk but got sampled token {t}"
                    )))
                }
                _ => {}
            }
        }

        let mut events = Vec::new();
        for &(id, token) in outputs {
            let Some(seq) = self.seqs.get_mut(&id).filter(|s| s.in_flight > 0) else {
                continue;
            };
            seq.num_computed += seq.in_flight;
            seq.in_flight = 0;
            if let Some(t) = token {
                seq.tokens.push(t);
                events.push(SeqEvent::Token { id, token: t });
            }
            self.kv
                .commit_full_blocks(id, &seq.tokens[..seq.num_computed]);
            // Local blocks no later token can see go back to the pool.
            self.kv.release_outside_window(id, seq.num_computed);
            let num_generated = seq.tokens.len() - seq.prompt_len;
            let reason = if num_generated >= seq.max_new_tokens {
                Some(FinishReason::Length)
            } else if seq.tokens.len() >= self.config.max_model_len {
                Some(FinishReason::ContextFull)
            } else {
                None
            };
            if let Some(reason) = reason {
                self.remove(id);
                events.push(SeqEvent::Finished {
                    id,
                    reason,
                    num_generated,
                });
            }
        }
        self.flush_kv_events();
        Ok(events)
    }
}
