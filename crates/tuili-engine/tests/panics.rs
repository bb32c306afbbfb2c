//! A panic never hangs or corrupts the serving engine: a panic in a kernel region, on a
//! pool worker or in the engine's step fails the requests of that step with an error
//! event, frees their KV blocks, and the next request is answered exactly as before.
//! A run of panicking steps fails the engine, which then says why and refuses work.
//!
//! Faults are armed through the backend's test-only hooks (`fault-injection`), which are
//! process-wide: every case runs in the one test below, in order.

mod common;

use std::time::{Duration, Instant};

use common::{drain, engine, greedy};
use tuili_backend::fault::{self, Site};
use tuili_engine::{EngineHandle, GenerateRequest, SubmitError, MAX_CONSECUTIVE_PANICS};

/// The request's tokens, or the text of its error event.
fn outcome(h: &EngineHandle, req: GenerateRequest) -> Result<Vec<u32>, String> {
    drain(h.submit(req).map_err(|e| format!("refused: {e}"))?)
}

/// Waits (10 s at most) until nothing is queued or running and no block is held.
fn wait_all_free(h: &EngineHandle) {
    let t0 = Instant::now();
    loop {
        let m = h.metrics();
        if h.is_idle() && m.running == 0 && m.kv_blocks_used == 0 {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "blocks not freed: {m:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_panic_fails_its_step_and_the_engine_serves_on() {
    // Two threads, so that regions have a worker to panic on.
    tuili_backend::pool::set_threads(2);
    let Some((model, tok)) = common::load() else {
        return;
    };
    assert!(tuili_backend::pool::global().n_threads() >= 2);

    let h = engine(&model, &tok, 256, 4);
    let prompt = tok.encode("Once upon a time", true, false);
    let want = outcome(&h, greedy(prompt.clone(), 8)).expect("a clean run");
    assert_eq!(want.len(), 8);

    for site in [Site::KernelRegion, Site::Worker, Site::EngineStep] {
        fault::arm(site, 1);
        let err = outcome(&h, greedy(prompt.clone(), 8)).expect_err("the armed fault");
        assert!(
            err.contains("panicked") && err.contains(&format!("injected fault at {site:?}")),
            "{site:?}: {err}"
        );
        assert_eq!(fault::remaining(), 0, "{site:?} was never reached");
        wait_all_free(&h);
        assert_eq!(h.health(), Ok(()), "{site:?}");
        // The next request is answered exactly as before the panic.
        let again = outcome(&h, greedy(prompt.clone(), 8)).expect("after the panic");
        assert_eq!(again, want, "{site:?}");
    }
    assert_eq!(h.metrics().step_panics, 3);

    // Only the requests of the panicking step fail: with one decode slot, the second
    // request waits outside the step and then runs normally.
    let h1 = engine(&model, &tok, 256, 1);
    fault::arm(Site::EngineStep, 1);
    let (a, b) = (
        h1.submit(greedy(prompt.clone(), 8)).unwrap(),
        h1.submit(greedy(prompt.clone(), 8)).unwrap(),
    );
    assert!(drain(a).is_err());
    assert_eq!(drain(b).as_ref(), Ok(&want));
    wait_all_free(&h1);

    // A run of panicking steps fails the engine: every open request hears why, health
    // says why, and new requests are refused with the reason.
    let h2 = engine(&model, &tok, 256, 1);
    fault::arm(Site::EngineStep, MAX_CONSECUTIVE_PANICS as usize);
    let streams: Vec<_> = (0..MAX_CONSECUTIVE_PANICS + 1)
        .map(|_| h2.submit(greedy(prompt.clone(), 8)).unwrap())
        .collect();
    for s in streams {
        let err = drain(s).expect_err("a failed engine answers no request");
        assert!(err.contains("panicked"), "{err}");
    }
    let why = h2.health().expect_err("a failed engine is unhealthy");
    assert!(why.contains("steps in a row panicked"), "{why}");
    match h2.submit(greedy(prompt.clone(), 8)) {
        Err(SubmitError::Failed(w)) => assert_eq!(w, why),
        other => panic!("expected Failed, got {:?}", other.err()),
    }
    // The other engines are unaffected.
    assert_eq!(outcome(&h, greedy(prompt, 8)).as_ref(), Ok(&want));
}
