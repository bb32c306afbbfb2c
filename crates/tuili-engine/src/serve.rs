//! The serving engine: one thread owns the model, the KV pool and the scheduler and
//! runs `step()` = schedule → execute → update; everything else holds an
//! [`EngineHandle`] and talks to it over channels.
//!
//! A panic inside a step (a kernel, a worker thread, the engine's own code) fails the
//! requests of that step with an error event, frees their KV blocks and the engine
//! serves on. After [`MAX_CONSECUTIVE_PANICS`] steps in a row panic, or if the engine
//! thread itself ends, the engine is failed: [`EngineHandle::health`] says why, every
//! request still open gets an error event and new ones are refused.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tuili_models::embedding::PoolingType;
use tuili_models::{Config, KvPool, Model, SamplingDefaults, SeqChunk};
use tuili_tokenizer::{StreamDecoder, Tokenizer};

use crate::constraint::{Constraint, GrammarCompiler, TokenMask};
use crate::kv_blocks::SeqId;
use crate::kv_events::KvEventSender;
use crate::metrics::EngineMetrics;
use crate::request::{Event, GenerateRequest, SubmitError, TokenLogprob, Usage};
use crate::request_trace::RequestTrace;
use crate::runner::{CpuRunner, KvLayout, KvType, Runner, DEFAULT_KV_TYPE};
use crate::scheduler::{ScheduledSeq, SchedulerConfig, SeqEvent, SeqRequest};
use crate::step_log::{StepLog, StepTimes};
use crate::stop::{StopCheck, StopMatcher};
use crate::{EngineError, FinishReason, Sampler, Scheduler};

/// Limits and sizes of a serving engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most tokens (prompt + generated) per sequence.
    pub n_ctx: usize,
    /// Most sequences decoding together.
    pub max_num_seqs: usize,
    /// Most requests waiting to start; more are refused with `QueueFull`.
    pub max_queue: usize,
    /// Bytes for the KV pool (default: enough for `max_num_seqs` full contexts, at most 2 GiB).
    pub kv_memory_bytes: Option<usize>,
    /// Token slots per KV block.
    pub block_size: usize,
    /// Most tokens run in one step (prefill chunks + decodes).
    pub max_batched_tokens: usize,
    /// How the KV pool stores keys.
    pub k_type: KvType,
    /// How the KV pool stores values.
    pub v_type: KvType,
    /// Where to send prefix-cache events (none: not recorded).
    pub kv_events: Option<KvEventSender>,
    /// Where to write a line per engine step (none: not recorded); see [`StepLog`].
    pub step_log: Option<PathBuf>,
    /// Where to write a line per request as it ends, the load `tuili plan --simulate
    /// --trace` replays (none: not recorded); see `request_trace`.
    pub request_trace: Option<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            n_ctx: 4096,
            max_num_seqs: 8,
            max_queue: 64,
            kv_memory_bytes: None,
            block_size: 16,
            max_batched_tokens: 512,
            k_type: DEFAULT_KV_TYPE,
            v_type: DEFAULT_KV_TYPE,
            kv_events: None,
            step_log: None,
            request_trace: None,
        }
    }
}

/// A submitted request, on its way to the engine thread.
struct Submission {
    id: SeqId,
    req: GenerateRequest,
    tx: mpsc::UnboundedSender<Event>,
    at: Instant,
}

/// What the engine thread receives.
enum Inbox {
    Generate(Box<Submission>),
    /// Final hidden states of a text, `[tokens, width]`, run between steps.
    Hidden(Vec<u32>, oneshot::Sender<Result<Vec<f32>, String>>),
}

/// State shared by the handles and the engine thread.
struct Shared {
    /// Requests submitted and not yet scheduled once.
    queued: AtomicUsize,
    /// Sequences waiting or running inside the engine.
    active: AtomicUsize,
    shutting_down: AtomicBool,
    metrics: Mutex<EngineMetrics>,
    next_id: AtomicUsize,
    /// Why the engine stopped serving, once it has.
    failed: Mutex<Option<String>>,
}

impl Shared {
    fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn fail(&self, why: String) {
        tracing_stderr(&format!("the engine stopped serving: {why}"));
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(why);
    }
}

/// Steps in a row that may panic before the engine gives up: one panic fails the
/// requests of its step; a run of them means the engine's state is not to be trusted.
pub const MAX_CONSECUTIVE_PANICS: u32 = 3;

/// The message of a caught panic (`catch_unwind`'s payload).
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// One line on stderr (the engine crate does not log through `tracing`).
pub(crate) fn tracing_stderr(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "tuili-engine: {line}");
}

/// A cheap, cloneable handle to the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    inbox: std_mpsc::Sender<Inbox>,
    shared: Arc<Shared>,
    tokenizer: Arc<Tokenizer>,
    /// What the model file recommends for sampling (`general.sampling.*`).
    model_sampling: SamplingDefaults,
    cfg: Arc<EngineConfig>,
    grammars: Arc<GrammarCompiler>,
    /// The model's embedding pooling, from its file (`None`: unspecified).
    pooling: Option<PoolingType>,
}

/// The events of one request. Dropping it cancels the request: the engine frees its
/// sequence and KV blocks at its next step.
pub struct RequestStream {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl RequestStream {
    /// The next event; `None` after `Finished` or `Error`.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event, blocking the thread (for use outside an async runtime).
    pub fn next_blocking(&mut self) -> Option<Event> {
        self.rx.blocking_recv()
    }
}

impl EngineHandle {
    /// Queues a request. Never blocks; refuses when the queue is full, the prompt does
    /// not fit the context, or the engine is stopping.
    pub fn submit(&self, req: GenerateRequest) -> Result<RequestStream, SubmitError> {
        if let Some(why) = self.shared.failure() {
            return Err(SubmitError::Failed(why));
        }
        if self.shared.shutting_down.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        if req.prompt.is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        let total = req.prompt.len() + req.max_tokens;
        if total > self.cfg.n_ctx {
            return Err(SubmitError::TooLong {
                prompt: req.prompt.len(),
                max_tokens: req.max_tokens,
                total,
                ctx: self.cfg.n_ctx,
            });
        }
        // Reserve a queue slot atomically so concurrent submits cannot overshoot.
        let max_queue = self.cfg.max_queue;
        let reserved = self
            .shared
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < max_queue || self.idle_slots() > 0).then_some(q + 1)
            });
        if let Err(waiting) = reserved {
            return Err(SubmitError::QueueFull { waiting, max_queue });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed) as SeqId;
        let sub = Submission {
            id,
            req,
            tx,
            at: Instant::now(),
        };
        if self.inbox.send(Inbox::Generate(Box::new(sub))).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(match self.shared.failure() {
                Some(why) => SubmitError::Failed(why),
                None => SubmitError::ShuttingDown,
            });
        }
        Ok(RequestStream { rx })
    }

    /// The final hidden states of `tokens` as a new sequence (`[tokens, width]`, see
    /// `Model::hidden_states`), computed on the engine thread between two steps.
    pub async fn hidden_states(&self, tokens: Vec<u32>) -> Result<Vec<f32>, String> {
        if let Some(why) = self.shared.failure() {
            return Err(why);
        }
        if tokens.is_empty() || tokens.len() > self.cfg.n_ctx {
            return Err(format!(
                "the text has {} tokens; it must have 1 to {} (the context length)",
                tokens.len(),
                self.cfg.n_ctx
            ));
        }
        let (tx, rx) = oneshot::channel();
        if self.inbox.send(Inbox::Hidden(tokens, tx)).is_err() {
            return Err("the engine thread ended".into());
        }
        rx.await
            .unwrap_or_else(|_| Err("the engine thread ended".into()))
    }

    /// Free decode slots: a request that fits one starts at the next step, so it is
    /// never refused as queued.
    fn idle_slots(&self) -> usize {
        let busy =
            self.shared.active.load(Ordering::Acquire) + self.shared.queued.load(Ordering::Acquire);
        self.cfg.max_num_seqs.saturating_sub(busy)
    }

    /// A snapshot of counters and gauges.
    pub fn metrics(&self) -> EngineMetrics {
        let mut m = self
            .shared
            .metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        m.waiting = self.shared.queued.load(Ordering::Acquire);
        m
    }

    /// Most tokens per sequence.
    pub fn n_ctx(&self) -> usize {
        self.cfg.n_ctx
    }

    /// The pooling the served model's file asks embeddings for (`{arch}.pooling_type`);
    /// `None` when the file does not say.
    pub fn pooling(&self) -> Option<PoolingType> {
        self.pooling
    }

    /// The tokenizer of the served model.
    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    /// The sampling settings the served model's file recommends.
    pub fn model_sampling(&self) -> &SamplingDefaults {
        &self.model_sampling
    }

    /// Compiles grammars over the served model's vocabulary (for
    /// [`GenerateRequest::constraint`]).
    pub fn grammars(&self) -> &Arc<GrammarCompiler> {
        &self.grammars
    }

    /// `Ok` while the engine serves; once it has failed, why.
    pub fn health(&self) -> Result<(), String> {
        match self.shared.failure() {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// Stops accepting requests; those already submitted run to their end.
    pub fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::Release);
    }

    /// Whether nothing is queued or running.
    pub fn is_idle(&self) -> bool {
        self.shared.queued.load(Ordering::Acquire) == 0
            && self.shared.active.load(Ordering::Acquire) == 0
    }
}

/// Starts the engine thread for `model` on the CPU and returns a handle to it.
pub fn start_engine(
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    cfg: EngineConfig,
) -> Result<EngineHandle, EngineError> {
    let mcfg = model.config().clone();
    let cpu = move |kv: KvLayout| -> Result<Box<dyn Runner + Send>, EngineError> {
        Ok(Box::new(CpuRunner::new(model, kv)?))
    };
    start_engine_with(&mcfg, cpu, tokenizer, cfg)
}

/// Bytes of one block of each region, (global, local), of a pool with `n_local` local
/// blocks (0: one region, every layer in the first).
fn region_bytes(mcfg: &Config, cfg: &EngineConfig, n_local: usize) -> (usize, usize) {
    let (bs, kt, vt) = (cfg.block_size, cfg.k_type, cfg.v_type);
    match n_local {
        0 => (KvPool::block_bytes(mcfg, bs, kt, vt), 0),
        _ => KvPool::region_block_bytes(mcfg, bs, kt, vt),
    }
}

/// The engine's KV pool for `mcfg` under `cfg`: (blocks, local-region blocks). Without
/// local layers (or with windows as long as the context), one region of
/// `max_num_seqs` full contexts (at most `kv_memory_bytes`, default 2 GiB; all of it when
/// given). With them, the local region holds every sequence slot's window plus one step
/// (`local_blocks_needed`) and the global region the rest; if the memory cannot hold
/// that, both get as many blocks (a sequence never holds more local blocks than global).
pub fn kv_pool_sizes(mcfg: &Config, cfg: &EngineConfig) -> (usize, usize) {
    let bs = cfg.block_size.max(1);
    let n_seqs = cfg.max_num_seqs.max(1);
    let want = n_seqs * cfg.n_ctx.div_ceil(bs);
    let want_local = crate::runner::local_blocks_for(
        mcfg,
        cfg.n_ctx,
        cfg.max_batched_tokens.max(n_seqs),
        bs,
        n_seqs,
    );
    let (gb, lb) = region_bytes(mcfg, cfg, want_local);
    let mem = cfg.kv_memory_bytes.unwrap_or(2 << 30);
    let capped = |n: usize| match cfg.kv_memory_bytes {
        Some(_) => n,
        None => n.min(want),
    };
    if want_local == 0 {
        return (capped(mem / gb.max(1)), 0);
    }
    // All layers local (no global bytes): global block ids cost nothing.
    let global = match gb {
        0 => want,
        _ => capped(mem.saturating_sub(want_local * lb) / gb),
    };
    if global >= want_local {
        (global, want_local)
    } else {
        let n = mem / (gb + lb);
        (n, n)
    }
}

/// Bytes of the KV pool [`kv_pool_sizes`] gives `cfg` with unlimited memory:
/// `max_num_seqs` full contexts, local layers holding their windows.
pub fn kv_bytes_wanted(mcfg: &Config, cfg: &EngineConfig) -> usize {
    let cfg = EngineConfig {
        kv_memory_bytes: None,
        ..cfg.clone()
    };
    let want = cfg.max_num_seqs.max(1) * cfg.n_ctx.div_ceil(cfg.block_size.max(1));
    let local = crate::runner::local_blocks_for(
        mcfg,
        cfg.n_ctx,
        cfg.max_batched_tokens.max(cfg.max_num_seqs),
        cfg.block_size.max(1),
        cfg.max_num_seqs.max(1),
    );
    let (gb, lb) = region_bytes(mcfg, &cfg, local);
    want * gb + local * lb
}

/// Starts the engine thread on the runner that `make_runner` builds for the KV pool the
/// configuration sizes (a GPU model allocates its pool on the device), and returns a
/// handle to it. `mcfg` is the model's configuration.
pub fn start_engine_with(
    mcfg: &Config,
    make_runner: impl FnOnce(KvLayout) -> Result<Box<dyn Runner + Send>, EngineError>,
    tokenizer: Arc<Tokenizer>,
    mut cfg: EngineConfig,
) -> Result<EngineHandle, EngineError> {
    cfg.n_ctx = cfg.n_ctx.min(mcfg.ctx_len);
    if cfg.n_ctx < 2 {
        return Err(EngineError::Invalid(format!(
            "context must be at least 2 tokens, got {}",
            cfg.n_ctx
        )));
    }
    cfg.block_size = cfg.block_size.max(1);
    cfg.max_num_seqs = cfg.max_num_seqs.max(1);
    cfg.max_batched_tokens = cfg.max_batched_tokens.max(cfg.max_num_seqs);
    let (num_blocks, n_local_blocks) = kv_pool_sizes(mcfg, &cfg);
    let one_seq = cfg.n_ctx.div_ceil(cfg.block_size);
    if num_blocks < one_seq {
        let (gb, _) = region_bytes(mcfg, &cfg, n_local_blocks);
        return Err(EngineError::Invalid(format!(
            "the KV memory holds {num_blocks} blocks of {} tokens ({gb} bytes each); one full context of {} tokens needs {one_seq}",
            cfg.block_size, cfg.n_ctx
        )));
    }
    let sched_cfg = SchedulerConfig {
        max_num_seqs: cfg.max_num_seqs,
        max_batched_tokens: cfg.max_batched_tokens,
        block_size: cfg.block_size,
        num_blocks,
        max_model_len: cfg.n_ctx,
    };
    let mut scheduler = match (n_local_blocks, mcfg.max_window()) {
        (n, Some(w)) if n > 0 => Scheduler::with_local(sched_cfg, n, w)?,
        _ => Scheduler::new(sched_cfg)?,
    };
    if let Some(tx) = cfg.kv_events.clone() {
        scheduler.send_kv_events(tx);
    }
    let step_log = cfg
        .step_log
        .as_deref()
        .map(StepLog::create)
        .transpose()
        .map_err(EngineError::Invalid)?;
    let request_trace = cfg
        .request_trace
        .as_deref()
        .map(RequestTrace::create)
        .transpose()
        .map_err(EngineError::Invalid)?;
    let runner = make_runner(KvLayout {
        n_blocks: num_blocks,
        block_size: cfg.block_size,
        n_local_blocks,
        k_type: cfg.k_type,
        v_type: cfg.v_type,
    })?;
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        active: AtomicUsize::new(0),
        shutting_down: AtomicBool::new(false),
        // Gauges are right from the start, before the engine thread publishes.
        metrics: Mutex::new(EngineMetrics::default().with_scheduler(&scheduler.stats())),
        next_id: AtomicUsize::new(1),
        failed: Mutex::new(None),
    });
    let (inbox, rx) = std_mpsc::channel();
    let core = EngineCore {
        runner,
        tokenizer: tokenizer.clone(),
        scheduler,
        shared: shared.clone(),
        inbox: rx,
        metrics: EngineMetrics::default(),
        in_step: Vec::new(),
        step_log,
        request_trace,
        forward_span: None,
    };
    let thread_shared = shared.clone();
    std::thread::Builder::new()
        .name("tuili-engine".into())
        .spawn(move || {
            // `run` returns only when every handle is gone, or after failing the engine.
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| core.run())) {
                thread_shared.fail(format!(
                    "the engine thread panicked: {}",
                    panic_message(p.as_ref())
                ));
            }
        })
        .map_err(|e| EngineError::Invalid(format!("cannot start the engine thread: {e}")))?;
    Ok(EngineHandle {
        inbox,
        shared,
        grammars: Arc::new(GrammarCompiler::new(tokenizer.clone())),
        tokenizer,
        model_sampling: mcfg.sampling,
        cfg: Arc::new(cfg),
        pooling: mcfg.pooling,
    })
}

/// Per-request state kept by the engine thread.
struct Active<'t> {
    req: GenerateRequest,
    tx: mpsc::UnboundedSender<Event>,
    sampler: Sampler,
    /// Prompt then generated tokens (the penalties' history).
    tokens: Vec<u32>,
    decoder: StreamDecoder<'t>,
    stop: StopMatcher,
    submitted: Instant,
    last_token: Option<Instant>,
    started: bool,
    cached_tokens: usize,
    /// Tokens and logprobs not yet sent (their text is held back by the stop matcher).
    pending_tokens: Vec<u32>,
    pending_logprobs: Vec<TokenLogprob>,
    /// Generation ended at a stop string.
    stopped_by_string: bool,
}

/// The engine's state; lives on its own thread.
struct EngineCore {
    /// The model and its KV pool (CPU or GPU).
    runner: Box<dyn Runner + Send>,
    tokenizer: Arc<Tokenizer>,
    scheduler: Scheduler,
    shared: Arc<Shared>,
    inbox: std_mpsc::Receiver<Inbox>,
    metrics: EngineMetrics,
    /// The sequences of the step being run (what a panic in it fails).
    in_step: Vec<SeqId>,
    /// Where each step is recorded, if anywhere.
    step_log: Option<StepLog>,
    /// Where each request is recorded as it ends, if anywhere.
    request_trace: Option<RequestTrace>,
    /// When the last forward pass began and ended.
    forward_span: Option<(Instant, Instant)>,
}

impl EngineCore {
    fn run(mut self) {
        let tokenizer = self.tokenizer.clone();
        let mut active: HashMap<SeqId, Active> = HashMap::new();
        // Gauges (free KV blocks) are right before the first request, not zeros.
        self.publish();
        let mut panics_in_a_row = 0;
        loop {
            // Idle: block until a request arrives (or every handle is gone).
            if active.is_empty() {
                match self.inbox.recv_timeout(Duration::from_millis(200)) {
                    Ok(msg) => self.receive(msg, &tokenizer, &mut active),
                    Err(std_mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
            while let Ok(msg) = self.inbox.try_recv() {
                self.receive(msg, &tokenizer, &mut active);
            }
            tuili_backend::fault::hit(tuili_backend::fault::Site::EngineLoop);
            match catch_unwind(AssertUnwindSafe(|| self.step(&mut active))) {
                Ok(()) => panics_in_a_row = 0,
                Err(p) => {
                    panics_in_a_row += 1;
                    let msg = panic_message(p.as_ref());
                    self.metrics.step_panics += 1;
                    if panics_in_a_row >= MAX_CONSECUTIVE_PANICS {
                        let why = format!(
                            "{panics_in_a_row} engine steps in a row panicked, the last with: {msg}"
                        );
                        self.shared.fail(why.clone());
                        let all: Vec<SeqId> = active.keys().copied().collect();
                        self.fail_requests(&all, &why, &mut active);
                        self.publish();
                        return;
                    }
                    self.recover_from_panic(&msg, &mut active);
                }
            }
            self.publish();
        }
    }

    /// After a step panicked: fails the requests it ran (all of them if it panicked
    /// before its plan was made) and frees their blocks. What other requests hold is
    /// untouched, and a block enters the prefix cache only after its K/V are computed,
    /// so the engine serves on.
    fn recover_from_panic(&mut self, msg: &str, active: &mut HashMap<SeqId, Active>) {
        let mut ids = std::mem::take(&mut self.in_step);
        if ids.is_empty() {
            ids = active.keys().copied().collect();
        }
        tracing_stderr(&format!(
            "a step panicked ({msg}); failing the {} request(s) of that step and serving on",
            ids.len()
        ));
        let why = format!("internal error: the engine panicked while running this request ({msg}); other requests are unaffected");
        self.fail_requests(&ids, &why, active);
    }

    /// Sends `why` as the error event of each of `ids` and ends them.
    fn fail_requests(&mut self, ids: &[SeqId], why: &str, active: &mut HashMap<SeqId, Active>) {
        for &id in ids {
            if let Some(a) = active.get(&id) {
                let _ = a.tx.send(Event::Error(why.to_string()));
            }
            self.end(id, active);
        }
    }

    fn receive<'t>(
        &mut self,
        msg: Inbox,
        tok: &'t Tokenizer,
        active: &mut HashMap<SeqId, Active<'t>>,
    ) {
        match msg {
            Inbox::Generate(sub) => self.admit(*sub, tok, active),
            Inbox::Hidden(tokens, reply) => {
                // On its own scratch cache: the pool and the running sequences are untouched.
                let r = catch_unwind(AssertUnwindSafe(|| self.runner.hidden_states(&tokens)));
                let r = match r {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(p) => Err(format!(
                        "the engine panicked: {}",
                        panic_message(p.as_ref())
                    )),
                };
                let _ = reply.send(r);
            }
        }
    }

    fn admit<'t>(
        &mut self,
        sub: Submission,
        tok: &'t Tokenizer,
        active: &mut HashMap<SeqId, Active<'t>>,
    ) {
        let max_new = sub.req.max_tokens.min(
            self.scheduler
                .config()
                .max_model_len
                .saturating_sub(sub.req.prompt.len()),
        );
        let added = self.scheduler.add(SeqRequest {
            id: sub.id,
            prompt: sub.req.prompt.clone(),
            max_new_tokens: max_new.max(1),
        });
        if let Err(e) = added {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            let _ = sub.tx.send(Event::Error(e.to_string()));
            return;
        }
        self.metrics.prompt_tokens_total += sub.req.prompt.len() as u64;
        self.shared.active.fetch_add(1, Ordering::AcqRel);
        active.insert(
            sub.id,
            Active {
                sampler: Sampler::new(sub.req.sampling.clone()),
                tokens: sub.req.prompt.clone(),
                decoder: StreamDecoder::with_special(tok, !sub.req.render_special),
                stop: StopMatcher::new(&sub.req.stop),
                submitted: sub.at,
                last_token: None,
                started: false,
                cached_tokens: 0,
                pending_tokens: Vec::new(),
                pending_logprobs: Vec::new(),
                stopped_by_string: false,
                req: sub.req,
                tx: sub.tx,
            },
        );
    }

    /// Ends `id`: frees its blocks, drops its state, and returns it.
    fn end<'t>(
        &mut self,
        id: SeqId,
        active: &mut HashMap<SeqId, Active<'t>>,
    ) -> Option<Active<'t>> {
        self.scheduler.abort(id);
        let a = active.remove(&id)?;
        if !a.started {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
        }
        self.shared.active.fetch_sub(1, Ordering::AcqRel);
        if let Some(trace) = &mut self.request_trace {
            let prompt = a.req.prompt.len();
            trace.record(a.submitted, prompt, a.tokens.len().saturating_sub(prompt));
        }
        // Gauges are current before the client hears that its request ended.
        self.publish();
        Some(a)
    }

    /// One engine step: drop cancelled requests, schedule, run the model, sample, update.
    fn step(&mut self, active: &mut HashMap<SeqId, Active>) {
        let begin = Instant::now();
        let cancelled: Vec<SeqId> = active
            .iter()
            .filter(|(_, a)| a.tx.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in cancelled {
            self.end(id, active);
        }
        self.in_step.clear();
        let plan = self.scheduler.schedule();
        self.in_step.extend(plan.scheduled.iter().map(|s| s.id));
        tuili_backend::fault::hit(tuili_backend::fault::Site::EngineStep);
        if plan.is_empty() {
            if !active.is_empty() {
                // Everything is waiting for blocks held by nobody running: cannot happen
                // with a pool that fits one context, but never spin hot.
                std::thread::sleep(Duration::from_millis(1));
            }
            return;
        }
        for s in &plan.scheduled {
            if let Some(a) = active.get_mut(&s.id) {
                if !a.started {
                    a.started = true;
                    a.cached_tokens = s.num_cached_tokens;
                    self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        let outputs = match self.execute(&plan.scheduled, active) {
            Ok(o) => {
                // A grammar that cannot go on fails its request only.
                for (id, why) in o.failed {
                    if let Some(a) = active.get(&id) {
                        let _ = a.tx.send(Event::Error(why));
                    }
                    self.end(id, active);
                }
                o.tokens
            }
            Err(e) => {
                // A model error fails the requests of this step, never the engine.
                for s in &plan.scheduled {
                    if let Some(a) = active.get(&s.id) {
                        let _ = a.tx.send(Event::Error(format!("model error: {e}")));
                    }
                    self.end(s.id, active);
                }
                return;
            }
        };
        let events = match self.scheduler.update(&outputs) {
            Ok(ev) => ev,
            Err(e) => {
                for (id, _) in &outputs {
                    if let Some(a) = active.get(id) {
                        let _ = a.tx.send(Event::Error(format!("engine error: {e}")));
                    }
                    self.end(*id, active);
                }
                return;
            }
        };
        for ev in events {
            match ev {
                SeqEvent::Token { id, token } => self.on_token(id, token, active),
                SeqEvent::Finished { id, reason, .. } => self.finish(id, reason, active),
            }
        }
        if let (Some(log), Some(forward)) = (&mut self.step_log, self.forward_span) {
            let end = Instant::now();
            log.record(
                &StepTimes {
                    begin,
                    forward,
                    end,
                },
                &plan.scheduled,
            );
        }
    }

    /// Runs the planned chunks as one batch and samples where asked.
    fn execute(
        &mut self,
        plan: &[ScheduledSeq],
        active: &mut HashMap<SeqId, Active>,
    ) -> Result<Outputs, EngineError> {
        let chunks: Vec<SeqChunk> = plan
            .iter()
            .map(|s| SeqChunk {
                tokens: &s.tokens,
                start: s.start_pos,
                blocks: &s.block_table,
                local_blocks: &s.local_table,
                logits_from: if s.sample {
                    s.tokens.len() - 1
                } else {
                    s.tokens.len()
                },
            })
            .collect();
        let t = Instant::now();
        let (logits, mut masks) = self.forward_with_masks(&chunks, plan, active);
        self.forward_span = Some((t, Instant::now()));
        let mut logits = logits?;
        self.metrics.steps += 1;
        let vocab = self.runner.config().vocab;
        let mut row = 0;
        let mut outputs = Vec::with_capacity(plan.len());
        let mut failed = Vec::new();
        for s in plan {
            if !s.sample {
                outputs.push((s.id, None));
                continue;
            }
            let l = &mut logits[row * vocab..(row + 1) * vocab];
            row += 1;
            let Some(a) = active.get_mut(&s.id) else {
                outputs.push((s.id, Some(0)));
                continue;
            };
            // Log-probabilities describe the penalised, biased and masked distribution,
            // the one the sampler draws from (before temperature and truncation): see
            // `TokenLogprob`.
            a.sampler.penalize(l, &a.tokens);
            for &(id, bias) in &a.req.logit_bias {
                if let Some(x) = l.get_mut(id as usize) {
                    *x += bias;
                }
            }
            match masks.remove(&s.id) {
                Some(Ok(mask)) => {
                    self.metrics.grammar_mask.observe(mask.took.as_secs_f64());
                    mask.apply(l);
                }
                Some(Err(e)) => {
                    failed.push((s.id, e));
                    continue;
                }
                None => {}
            }
            let lp = a.req.logprobs.map(|k| log_softmax_top(l, k));
            let token = a.sampler.sample_penalized(l);
            if let Some((lse, top)) = lp {
                a.pending_logprobs
                    .push(self.logprob_entry(token, l, lse, top));
            }
            outputs.push((s.id, Some(token)));
        }
        Ok(Outputs {
            tokens: outputs,
            failed,
        })
    }

    /// Runs the forward pass while another thread computes the grammar masks of the
    /// constrained sequences that sample this step (their last token is already
    /// accepted), so that a mask costs the step only what outlasts the forward pass.
    fn forward_with_masks(
        &mut self,
        chunks: &[SeqChunk],
        plan: &[ScheduledSeq],
        active: &mut HashMap<SeqId, Active>,
    ) -> (Result<Vec<f32>, EngineError>, MaskResults) {
        let sampling: HashSet<SeqId> = plan.iter().filter(|s| s.sample).map(|s| s.id).collect();
        let constrained: Vec<(SeqId, &mut Constraint)> = active
            .iter_mut()
            .filter(|(id, _)| sampling.contains(id))
            .filter_map(|(&id, a)| a.req.constraint.as_mut().map(|c| (id, c)))
            .collect();
        if constrained.is_empty() {
            return (self.runner.forward_batch(chunks), HashMap::new());
        }
        let runner = &mut self.runner;
        let (logits, masks, waited) = std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("tuili-grammar".into())
                .spawn_scoped(scope, move || {
                    constrained
                        .into_iter()
                        .map(|(id, c)| (id, c.mask()))
                        .collect::<MaskResults>()
                });
            let logits = runner.forward_batch(chunks);
            let t = Instant::now();
            let masks = match worker {
                Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                Err(e) => panic!("cannot start the grammar thread: {e}"),
            };
            (logits, masks, t.elapsed())
        });
        self.metrics.grammar_mask_wait.observe(waited.as_secs_f64());
        (logits, masks)
    }

    fn logprob_entry(
        &self,
        token: u32,
        logits: &[f32],
        lse: f32,
        top: Vec<(u32, f32)>,
    ) -> TokenLogprob {
        let text = |id: u32| String::from_utf8_lossy(self.tokenizer.token_bytes(id)).into_owned();
        TokenLogprob {
            token,
            text: text(token),
            bytes: self.tokenizer.token_bytes(token).to_vec(),
            logprob: logits[token as usize] - lse,
            top: top.into_iter().map(|(id, lp)| (id, text(id), lp)).collect(),
        }
    }

    fn on_token<'t>(&mut self, id: SeqId, token: u32, active: &mut HashMap<SeqId, Active<'t>>) {
        let now = Instant::now();
        let Some(a) = active.get_mut(&id) else { return };
        self.metrics.generated_tokens_total += 1;
        match a.last_token {
            None => self
                .metrics
                .observe_first_token((now - a.submitted).as_secs_f64()),
            Some(t) => self.metrics.observe_inter_token((now - t).as_secs_f64()),
        }
        a.last_token = Some(now);
        a.tokens.push(token);
        if !a.req.ignore_eos && self.tokenizer.is_eog(token) {
            // The end-of-generation token is not part of the output.
            a.pending_logprobs.pop();
            self.finish(id, FinishReason::Stop, active);
            return;
        }
        if let Some(c) = a.req.constraint.as_mut() {
            if let Err(e) = c.accept(token) {
                let _ = a.tx.send(Event::Error(e));
                self.end(id, active);
                return;
            }
        }
        a.pending_tokens.push(token);
        let text = a.decoder.push(token);
        match a.stop.push(&text) {
            StopCheck::Emit(t) => {
                if !t.is_empty() {
                    let ev = Event::Delta {
                        text: t,
                        tokens: std::mem::take(&mut a.pending_tokens),
                        logprobs: std::mem::take(&mut a.pending_logprobs),
                    };
                    let _ = a.tx.send(ev);
                }
            }
            StopCheck::Stopped(t) => {
                let ev = Event::Delta {
                    text: t,
                    tokens: std::mem::take(&mut a.pending_tokens),
                    logprobs: std::mem::take(&mut a.pending_logprobs),
                };
                let _ = a.tx.send(ev);
                a.stop = StopMatcher::new(&[]);
                a.stopped_by_string = true;
                self.finish(id, FinishReason::Stop, active);
                return;
            }
        }
        if a.req
            .constraint
            .as_ref()
            .is_some_and(Constraint::is_finished)
        {
            self.finish(id, FinishReason::Stop, active);
        }
    }

    /// Frees the sequence, then sends what is held back and the final event.
    fn finish<'t>(
        &mut self,
        id: SeqId,
        reason: FinishReason,
        active: &mut HashMap<SeqId, Active<'t>>,
    ) {
        // Counted before `end` publishes, so a client that has its answer sees it counted.
        if let Some(a) = active.get(&id) {
            self.metrics
                .e2e
                .observe(a.submitted.elapsed().as_secs_f64());
        }
        let Some(mut a) = self.end(id, active) else {
            return;
        };
        // Bytes of an unfinished UTF-8 character, then text held for stop strings;
        // after a stop string nothing more is sent.
        let mut rest = String::new();
        if !a.stopped_by_string {
            rest = match a.stop.push(&a.decoder.finish()) {
                StopCheck::Emit(t) | StopCheck::Stopped(t) => t,
            };
            rest.push_str(&a.stop.flush());
        }
        if !rest.is_empty() || !a.pending_tokens.is_empty() {
            let _ = a.tx.send(Event::Delta {
                text: rest,
                tokens: std::mem::take(&mut a.pending_tokens),
                logprobs: std::mem::take(&mut a.pending_logprobs),
            });
        }
        let usage = Usage {
            prompt_tokens: a.req.prompt.len(),
            cached_tokens: a.cached_tokens,
            completion_tokens: a.tokens.len() - a.req.prompt.len(),
        };
        let _ = a.tx.send(Event::Finished { reason, usage });
    }

    /// Copies counters and gauges where handles can read them.
    fn publish(&self) {
        let st = self.scheduler.stats();
        let mut m = self
            .shared
            .metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *m = self.metrics.with_scheduler(&st);
    }
}

/// What one step's sampling gives: a token (or none, mid-prompt) per sequence, and the
/// sequences whose grammar failed, with why.
struct Outputs {
    tokens: Vec<(SeqId, Option<u32>)>,
    failed: Vec<(SeqId, String)>,
}

/// Each constrained sequence's mask for this step, or why its grammar cannot go on.
type MaskResults = HashMap<SeqId, Result<TokenMask, String>>;

/// Log-sum-exp of `logits` and the `k` most likely tokens with their log-probabilities.
fn log_softmax_top(logits: &[f32], k: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let lse = max + sum.ln() as f32;
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let k = k.min(idx.len());
    if k > 0 {
        idx.select_nth_unstable_by(k - 1, |&a, &b| {
            logits[b as usize].total_cmp(&logits[a as usize])
        });
    }
    idx.truncate(k);
    idx.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    // Tokens a grammar forbids (−∞) are never alternatives.
    (
        lse,
        idx.into_iter()
            .filter(|&i| logits[i as usize] > f32::NEG_INFINITY)
            .map(|i| (i, logits[i as usize] - lse))
            .collect(),
    )
}
