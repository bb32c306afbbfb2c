//! A persistent thread pool for the forward pass.
//!
//! One `run` dispatches a closure to every thread (the caller is thread 0) and waits
//! until all have finished: one barrier per parallel region. Workers spin briefly
//! between regions — a token's regions follow each other within microseconds — and
//! sleep on a condition variable once idle, so an idle server burns no CPU.
//!
//! A panic never leaves a region half-run: the caller waits for every worker before it
//! unwinds (workers read the job from its stack), a worker's panic is caught and raised
//! again in the caller once all are done, and the pool stays usable afterwards.

use std::any::Any;
use std::cell::Cell;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_millis(2);

/// The job as workers see it: a reference to the caller's closure.
type JobRef<'a> = &'a (dyn Fn(usize, usize) + Sync);

struct Shared {
    n_threads: usize,
    /// Bumped once per `run`; workers wait for it to change.
    generation: AtomicU64,
    /// Points at a `JobRef` on the stack of the thread in `run`; written before
    /// `generation` is bumped, valid until `remaining` reaches zero.
    job: AtomicPtr<()>,
    /// Workers still running the current job.
    remaining: AtomicUsize,
    shutdown: AtomicBool,
    /// Per thread, the next chunk of its share in `chunks` (owner and thieves alike
    /// take a chunk by incrementing it, so each is taken once); reset under `run_lock`.
    next_chunk: Box<[Padded]>,
    /// Workers asleep on `wake` (or about to be): `run` notifies only when there are
    /// some, so a busy pool makes no system call per region.
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
    /// The first panic of a worker in the current region, raised again by the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

thread_local! {
    /// Set while this thread executes a job, so a nested `run` goes serial instead of
    /// deadlocking.
    static IN_JOB: Cell<bool> = const { Cell::new(false) };
}

/// A fixed set of worker threads.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serializes concurrent callers of `run`.
    run_lock: Mutex<()>,
}

impl ThreadPool {
    /// A pool of `n_threads` threads in all (the caller of `run` counts as one).
    pub fn new(n_threads: usize) -> ThreadPool {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            n_threads,
            generation: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            remaining: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            next_chunk: (0..n_threads)
                .map(|_| Padded(AtomicUsize::new(0)))
                .collect(),
            sleepers: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
            panic: Mutex::new(None),
        });
        let workers = (1..n_threads)
            .map(|tid| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("tuili-worker-{tid}"))
                    .spawn(move || worker(s, tid))
                    .expect("spawn a worker thread")
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            run_lock: Mutex::new(()),
        }
    }

    /// Threads in the pool.
    pub fn n_threads(&self) -> usize {
        self.shared.n_threads
    }

    /// Runs `f(thread, n_threads)` on every thread and returns when all are done.
    pub fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        let n = self.shared.n_threads;
        if n == 1 || IN_JOB.with(|c| c.get()) {
            for t in 0..n {
                f(t, n);
            }
            return;
        }
        let _guard = lock(&self.run_lock);
        self.dispatch(f);
    }

    /// `run` on every thread; the caller holds `run_lock`.
    fn dispatch(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        let n = self.shared.n_threads;
        let job: JobRef = f;
        self.shared
            .job
            .store(&job as *const JobRef as *mut (), Ordering::Release);
        self.shared.remaining.store(n - 1, Ordering::Release);
        // SeqCst with the worker's `sleepers` increment and `generation` check: either
        // this sees the sleeper, or the sleeper sees the new generation and stays awake.
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        if self.shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = lock(&self.shared.sleep_lock);
            self.shared.wake.notify_all();
        }
        // Workers read `f` through this frame until `remaining` is zero, so the frame
        // must not be left before that, not even by a panic in the caller's own share:
        // the guard waits in its drop.
        let wait = WaitForWorkers(&self.shared);
        IN_JOB.with(|c| c.set(true));
        f(0, n);
        drop(wait);
        let worker_panic = lock(&self.shared.panic).take();
        if let Some(p) = worker_panic {
            resume_unwind(p);
        }
    }

    /// Runs `f(c, n_chunks)` once for every chunk `c` of a region cut into a few chunks
    /// per thread, so that a thread the OS (or the hypervisor) holds back costs the
    /// region only its unfinished chunk, not its whole share (see `chunks`). What `f`
    /// computes must depend on `c` alone.
    pub fn for_chunks(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        self.for_chunks_per_thread(CHUNKS_PER_THREAD, f)
    }

    /// [`Self::for_chunks`] with `per_thread` chunks per thread (at least 1).
    pub fn for_chunks_per_thread(&self, per_thread: usize, f: &(dyn Fn(usize, usize) + Sync)) {
        let n_chunks = match self.shared.n_threads {
            1 => 1,
            n => n * per_thread.max(1),
        };
        self.chunks(n_chunks, &|c| f(c, n_chunks));
    }

    /// Runs `f(c)` once for every chunk `c` in `0..n_chunks`. Thread `t` owns the
    /// `t`-th contiguous share of the chunks and runs them in order; once done it takes
    /// the chunks the other threads have not started yet. Which thread runs a chunk
    /// changes from call to call.
    fn chunks(&self, n_chunks: usize, f: &(dyn Fn(usize) + Sync)) {
        let n = self.shared.n_threads;
        if n == 1 || IN_JOB.with(|c| c.get()) {
            return (0..n_chunks).for_each(f);
        }
        let _guard = lock(&self.run_lock);
        let next = &self.shared.next_chunk;
        for (t, c) in next.iter().enumerate() {
            // Published to the workers by `dispatch`'s release of the job.
            c.0.store(n_chunks * t / n, Ordering::Relaxed);
        }
        self.dispatch(&|t, n| {
            for v in (t..n).chain(0..t) {
                let end = n_chunks * (v + 1) / n;
                loop {
                    let c = next[v].0.fetch_add(1, Ordering::Relaxed);
                    if c >= end {
                        break;
                    }
                    f(c);
                }
            }
        });
    }

    /// Splits `0..n_items` into contiguous ranges (rounded to `align` items), one per
    /// chunk of `for_chunks`, and runs `f(range)` on each non-empty one.
    pub fn for_ranges(&self, n_items: usize, align: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
        self.for_ranges_per_thread(n_items, align, CHUNKS_PER_THREAD, f)
    }

    /// [`Self::for_ranges`] with `per_thread` chunks per thread (at least 1).
    pub fn for_ranges_per_thread(
        &self,
        n_items: usize,
        align: usize,
        per_thread: usize,
        f: &(dyn Fn(Range<usize>) + Sync),
    ) {
        self.for_chunks_per_thread(per_thread, &|c, n| {
            let r = split(n_items, align, c, n);
            if !r.is_empty() {
                f(r);
            }
        });
    }
}

/// Chunks per thread of a parallel region (see `ThreadPool::for_chunks`). Measured on the
/// 2-core VM, 8-stream decode of SmolLM2: threads waited 17 % of the time with one
/// chunk each (a static split), 9 % with 4, 6 % with 16.
pub const CHUNKS_PER_THREAD: usize = 16;

/// Ends the caller's part of a region, on return or unwind: clears `IN_JOB` and waits
/// until every worker has finished the job.
struct WaitForWorkers<'a>(&'a Shared);

impl Drop for WaitForWorkers<'_> {
    fn drop(&mut self) {
        IN_JOB.with(|c| c.set(false));
        let mut spins = 0u32;
        while self.0.remaining.load(Ordering::Acquire) != 0 {
            spins = spins.wrapping_add(1);
            relax(spins);
        }
        if std::thread::panicking() {
            // The caller's own panic is the one that propagates.
            lock(&self.0.panic).take();
        }
    }
}

/// A mutex's guard, whether or not a panic poisoned it (what it guards stays valid).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An atomic on a cache line of its own.
#[repr(align(128))]
struct Padded(AtomicUsize);

/// The `t`-th of `n` near-equal ranges of `0..n_items`, boundaries multiples of `align`.
pub fn split(n_items: usize, align: usize, t: usize, n: usize) -> Range<usize> {
    let align = align.max(1);
    let units = n_items.div_ceil(align);
    let start = (units * t / n * align).min(n_items);
    let end = (units * (t + 1) / n * align).min(n_items);
    start..end
}

/// One step of a wait loop: spin a little, then give the core away each time, so a
/// waiting thread never starves the thread it waits for when cores are shared.
fn relax(spins: u32) {
    if spins < 256 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

fn worker(s: Arc<Shared>, tid: usize) {
    let mut seen = 0u64;
    loop {
        let mut since = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            let g = s.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) && since.elapsed() > SPIN_BEFORE_SLEEP {
                let guard = lock(&s.sleep_lock);
                s.sleepers.fetch_add(1, Ordering::SeqCst);
                if s.generation.load(Ordering::SeqCst) == seen
                    && !s.shutdown.load(Ordering::Acquire)
                {
                    drop(s.wake.wait(guard));
                } else {
                    drop(guard);
                }
                s.sleepers.fetch_sub(1, Ordering::SeqCst);
                since = Instant::now();
            } else {
                relax(spins);
            }
        }
        let ptr = s.job.load(Ordering::Acquire) as *const JobRef;
        // SAFETY: `run` stored a pointer to a live `JobRef` before bumping `generation`
        // and keeps it alive until `remaining` reaches zero.
        let job: JobRef = unsafe { *ptr };
        IN_JOB.with(|c| c.set(true));
        let ran = catch_unwind(AssertUnwindSafe(|| {
            crate::fault::hit(crate::fault::Site::Worker);
            job(tid, s.n_threads)
        }));
        IN_JOB.with(|c| c.set(false));
        if let Err(p) = ran {
            lock(&s.panic).get_or_insert(p);
        }
        s.remaining.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        {
            let _l = lock(&self.shared.sleep_lock);
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

static GLOBAL: OnceLock<ThreadPool> = OnceLock::new();
static REQUESTED: AtomicUsize = AtomicUsize::new(0);

/// Asks for `n` threads in the global pool; effective only before its first use.
pub fn set_threads(n: usize) {
    REQUESTED.store(n, Ordering::Relaxed);
}

/// The process-wide pool (all cores unless `set_threads` said otherwise).
pub fn global() -> &'static ThreadPool {
    GLOBAL.get_or_init(|| {
        let n = match REQUESTED.load(Ordering::Relaxed) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        ThreadPool::new(n)
    })
}

/// A raw pointer that may cross threads, for writing disjoint parts of one buffer
/// from several threads.
/// `T: Send`, since the pointer hands `T`s to other threads.
#[derive(Clone, Copy)]
pub struct SyncPtr<T: Send>(pub *mut T);
// SAFETY: `T` may move between threads (`T: Send`); users write disjoint index ranges
// only, and `run` joins before the buffer is read.
unsafe impl<T: Send> Send for SyncPtr<T> {}
// SAFETY: as for `Send`: shared `SyncPtr`s only give out disjoint ranges (see `slice`).
unsafe impl<T: Send> Sync for SyncPtr<T> {}

impl<T: Send> SyncPtr<T> {
    /// Wraps a mutable slice.
    pub fn new(s: &mut [T]) -> SyncPtr<T> {
        SyncPtr(s.as_mut_ptr())
    }

    /// The raw pointer (a method, so closures capture the whole `Sync` wrapper).
    pub fn ptr(&self) -> *mut T {
        self.0
    }

    /// The sub-slice `range`.
    ///
    /// # Safety
    /// No two threads may hold overlapping ranges at once, and the range must lie within
    /// the slice given to `new`, which must outlive the use.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, range: Range<usize>) -> &mut [T] {
        // SAFETY: this fn's contract: the range lies within the slice given to `new`, which
        // outlives the use, and no other thread holds an overlapping range
        unsafe { std::slice::from_raw_parts_mut(self.0.add(range.start), range.end - range.start) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_runs_once_per_call() {
        let pool = ThreadPool::new(4);
        for _ in 0..200 {
            let hits: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
            pool.run(&|t, n| {
                assert_eq!(n, 4);
                hits[t].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn ranges_cover_everything_once() {
        for (n_items, align, n) in [
            (100, 1, 3),
            (100, 16, 4),
            (7, 32, 2),
            (0, 1, 2),
            (1000, 64, 7),
        ] {
            let mut covered = vec![0u8; n_items];
            for t in 0..n {
                let r = split(n_items, align, t, n);
                if r.end < n_items {
                    assert_eq!(r.end % align, 0);
                }
                for i in r {
                    covered[i] += 1;
                }
            }
            assert!(covered.iter().all(|&c| c == 1), "{n_items} {align} {n}");
        }
    }

    #[test]
    fn disjoint_writes_and_sleep_wake() {
        let pool = ThreadPool::new(3);
        let mut out = vec![0usize; 1000];
        let p = SyncPtr::new(&mut out);
        pool.for_ranges(1000, 8, &|r| {
            // SAFETY: ranges from `split` are disjoint and within `out`.
            let s = unsafe { p.slice(r.clone()) };
            for (v, i) in s.iter_mut().zip(r) {
                *v = i * 2;
            }
        });
        assert!(out.iter().enumerate().all(|(i, &v)| v == i * 2));
        // Workers fall asleep (or are about to, around the spin limit), then wake for
        // the next job; a lost wake-up would hang here.
        let count = AtomicUsize::new(0);
        for i in 0..12u32 {
            std::thread::sleep(SPIN_BEFORE_SLEEP * (i % 4) / 2 + SPIN_BEFORE_SLEEP / 2);
            pool.run(&|_, _| {
                count.fetch_add(1, Ordering::Relaxed);
            });
        }
        assert_eq!(count.load(Ordering::Relaxed), 3 * 12);
    }

    #[test]
    fn every_chunk_runs_once_and_idle_threads_take_a_held_back_ones() {
        let pool = ThreadPool::new(3);
        IS_CALLER.with(|t| t.set(true));
        for n_chunks in [0, 1, 2, 7, 3 * CHUNKS_PER_THREAD, 200] {
            let hits: Vec<AtomicUsize> = (0..n_chunks).map(|_| AtomicUsize::new(0)).collect();
            let (done, by_caller) = (AtomicUsize::new(0), AtomicUsize::new(0));
            pool.chunks(n_chunks, &|c| {
                hits[c].fetch_add(1, Ordering::Relaxed);
                if IS_CALLER.with(|t| t.get()) && by_caller.fetch_add(1, Ordering::Relaxed) == 0 {
                    // The caller is held back in its first chunk until the workers have
                    // run every other chunk, its own share included.
                    let t0 = Instant::now();
                    while done.load(Ordering::Acquire) + 1 < n_chunks
                        && t0.elapsed() < Duration::from_secs(10)
                    {
                        std::thread::yield_now();
                    }
                }
                done.fetch_add(1, Ordering::Release);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "{n_chunks}"
            );
            // Held back in its first chunk, the caller ran no other: the rest of its
            // share (two chunks or more from 6 on) was taken by the workers.
            assert!(by_caller.load(Ordering::Relaxed) <= 1, "{n_chunks}");
        }
    }

    #[test]
    fn ranges_cover_the_items_once_in_the_chunks_asked() {
        let pool = ThreadPool::new(3);
        for (items, per_thread) in [(100, 1), (100, 2), (1000, 16), (5, 4), (0, 3)] {
            let hits: Vec<AtomicUsize> = (0..items).map(|_| AtomicUsize::new(0)).collect();
            let calls = AtomicUsize::new(0);
            pool.for_ranges_per_thread(items, 1, per_thread, &|r| {
                calls.fetch_add(1, Ordering::Relaxed);
                r.for_each(|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                })
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            // Every non-empty range of the 3 · per_thread chunks is one call.
            assert_eq!(
                calls.load(Ordering::Relaxed),
                (3 * per_thread).min(items),
                "{items} items, {per_thread} per thread"
            );
        }
    }

    thread_local! {
        static IS_CALLER: Cell<bool> = const { Cell::new(false) };
    }

    /// Distinct threads that ran one region of `pool` (all of them, unless the region
    /// went serial).
    fn threads_in_a_region(pool: &ThreadPool) -> usize {
        let ids = Mutex::new(Vec::new());
        pool.run(&|_, _| {
            // Long enough that no thread runs two parts.
            std::thread::sleep(Duration::from_millis(5));
            lock(&ids).push(std::thread::current().id());
        });
        let mut ids = ids.into_inner().unwrap();
        ids.sort_by_key(|id| format!("{id:?}"));
        ids.dedup();
        ids.len()
    }

    #[test]
    fn a_panic_in_the_callers_share_waits_for_the_workers() {
        let pool = ThreadPool::new(3);
        let finished = AtomicUsize::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|t, _| {
                if t == 0 {
                    panic!("caller's share");
                }
                // Workers are still reading the job when the caller panics.
                std::thread::sleep(Duration::from_millis(50));
                finished.fetch_add(1, Ordering::Release);
            })
        }));
        assert!(r.is_err());
        assert_eq!(
            finished.load(Ordering::Acquire),
            2,
            "run returned before its workers"
        );
        // The pool is still parallel: the caller's flag was reset.
        assert_eq!(threads_in_a_region(&pool), 3);
    }

    #[test]
    fn a_workers_panic_is_raised_in_the_caller() {
        let pool = ThreadPool::new(3);
        for round in 0..3 {
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.for_chunks(&|c, _| {
                    if c == 47 {
                        panic!("chunk {c} of round {round}");
                    }
                })
            }));
            let payload = r.expect_err("the panic must reach the caller");
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default();
            assert_eq!(msg, format!("chunk 47 of round {round}"));
            // Neither hung nor left the pool serial.
            assert_eq!(threads_in_a_region(&pool), 3);
        }
        // A panic on a worker thread itself, not in a stolen chunk.
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|t, _| assert_ne!(t, 2, "worker 2"));
        }));
        assert!(r.is_err());
        assert_eq!(threads_in_a_region(&pool), 3);
    }

    #[test]
    fn nested_run_does_not_deadlock() {
        let pool = ThreadPool::new(2);
        let count = AtomicUsize::new(0);
        pool.run(&|_, _| {
            pool.run(&|_, _| {
                count.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(count.load(Ordering::Relaxed), 4);
    }
}
