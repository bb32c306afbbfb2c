//! Fault injection for tests: arm a site, and the next passes through it panic.
//!
//! The hooks exist so that tests can prove what a panic does to the engine (it must
//! never hang it or leave it corrupt). They are compiled in only with the
//! `fault-injection` feature, which the engine's and the server's tests turn on; in a
//! normal build [`hit`] is an empty inline function.

/// A place where a test can make the code panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// Inside a chunk of a matmul's parallel region (on whichever thread runs it).
    KernelRegion = 1,
    /// On a pool worker thread, as it starts its part of a region.
    Worker = 2,
    /// In the serving engine's step, after scheduling and before running the model.
    EngineStep = 3,
    /// In the serving engine's loop outside a step: the engine thread itself ends.
    EngineLoop = 4,
}

#[cfg(feature = "fault-injection")]
mod armed {
    use std::sync::atomic::AtomicUsize;
    /// The armed site (`Site as usize`; 0 for none).
    pub static SITE: AtomicUsize = AtomicUsize::new(0);
    /// Passes through `SITE` that still panic.
    pub static TIMES: AtomicUsize = AtomicUsize::new(0);
}

/// Makes the next `times` passes through `site` panic. Arming replaces what was armed.
#[cfg(feature = "fault-injection")]
pub fn arm(site: Site, times: usize) {
    use std::sync::atomic::Ordering;
    armed::TIMES.store(0, Ordering::SeqCst);
    armed::SITE.store(site as usize, Ordering::SeqCst);
    armed::TIMES.store(times, Ordering::SeqCst);
}

/// Passes through the armed site that will still panic.
#[cfg(feature = "fault-injection")]
pub fn remaining() -> usize {
    armed::TIMES.load(std::sync::atomic::Ordering::SeqCst)
}

/// Panics if `site` is armed, counting the pass.
#[inline(always)]
pub fn hit(site: Site) {
    #[cfg(feature = "fault-injection")]
    {
        use std::sync::atomic::Ordering;
        if armed::SITE.load(Ordering::Relaxed) == site as usize
            && armed::TIMES
                .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |t| t.checked_sub(1))
                .is_ok()
        {
            panic!("injected fault at {site:?}");
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = site;
}
