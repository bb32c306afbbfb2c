//! The serving engine on the real default model: batched greedy output equals a
//! single-sequence run token for token (batch invariance), stop strings, cancellation,
//! queue limits.

use std::path::PathBuf;
use std::sync::Arc;

use tuili_engine::{
    start_engine, CpuRunner, EngineConfig, EngineHandle, Event, FinishReason, GenerateRequest,
    KvLayout, KvType, Sampler, SamplingParams, Session, SubmitError,
};
use tuili_gguf::GgufFile;
use tuili_models::Model;
use tuili_tokenizer::Tokenizer;

fn load() -> Option<(Arc<Model>, Arc<Tokenizer>)> {
    let dir = std::env::var_os("TUILI_TEST_MODELS_DIR")?;
    let path = PathBuf::from(dir).join("smol.gguf");
    if !path.exists() {
        return None;
    }
    let file = Arc::new(GgufFile::open(&path).expect("open model"));
    let model = Model::load(&file).expect("load model");
    let tok = Tokenizer::from_gguf(&file).expect("load tokenizer");
    Some((Arc::new(model), Arc::new(tok)))
}

macro_rules! need_model {
    () => {
        match load() {
            Some(m) => m,
            None => {
                eprintln!("skipped: smol.gguf not found (set TUILI_TEST_MODELS_DIR)");
                return;
            }
        }
    };
}

fn greedy(prompt: Vec<u32>, max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        prompt,
        max_tokens,
        sampling: SamplingParams::greedy(),
        stop: Vec::new(),
        ignore_eos: false,
        logprobs: None,
    }
}

/// An engine with one decode slot and `max_queue` waiting places.
fn one_slot_engine(model: Arc<Model>, tok: Arc<Tokenizer>, max_queue: usize) -> EngineHandle {
    start_engine(
        model,
        tok,
        EngineConfig {
            n_ctx: 512,
            max_num_seqs: 1,
            max_queue,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Waits (10 s at most) until nothing is queued or running.
fn wait_idle(h: &EngineHandle) {
    let t0 = std::time::Instant::now();
    while !h.is_idle() {
        assert!(
            t0.elapsed().as_secs() < 10,
            "engine did not free its requests"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Collects a request's text, tokens and finish reason.
fn collect(h: &EngineHandle, req: GenerateRequest) -> (String, Vec<u32>, FinishReason) {
    let mut s = h.submit(req).expect("submit");
    let (mut text, mut toks) = (String::new(), Vec::new());
    while let Some(ev) = s.next_blocking() {
        match ev {
            Event::Delta {
                text: t, tokens, ..
            } => {
                text.push_str(&t);
                toks.extend(tokens);
            }
            Event::Finished { reason, .. } => return (text, toks, reason),
            Event::Error(e) => panic!("engine error: {e}"),
        }
    }
    panic!("stream ended without Finished");
}

/// For every KV cache type (K and V alike): batch invariance holds per type.
#[test]
fn batched_greedy_equals_single_sequence_run() {
    let (model, tok) = need_model!();
    for kv in KvType::ALL {
        batched_greedy_equals_single_sequence_run_with(&model, &tok, kv);
    }
}

fn batched_greedy_equals_single_sequence_run_with(
    model: &Arc<Model>,
    tok: &Arc<Tokenizer>,
    kv: KvType,
) {
    let prompts = [
        "Once upon a time",
        "The three primary colors are",
        "def fibonacci(n):",
        "In 1969, the first humans",
        "My favourite food is",
    ];
    // Reference: the single-sequence session.
    let solo: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let layout = KvLayout {
                n_blocks: 4,
                block_size: 64,
                k_type: kv,
                v_type: kv,
            };
            let runner = CpuRunner::new(&**model, layout).unwrap();
            let mut s = Session::with_runner(Box::new(runner), tok, 256);
            let ids = tok.encode(p, true, false);
            let mut sampler = Sampler::new(SamplingParams::greedy());
            s.generate(&ids, 24, &mut sampler, |_| true).unwrap().0
        })
        .collect();
    let h = start_engine(
        model.clone(),
        tok.clone(),
        EngineConfig {
            n_ctx: 256,
            max_num_seqs: 8,
            max_batched_tokens: 16,
            k_type: kv,
            v_type: kv,
            ..Default::default()
        },
    )
    .unwrap();
    // All at once: they prefill in chunks and decode together.
    let threads: Vec<_> = prompts
        .iter()
        .map(|p| {
            let (h, ids) = (h.clone(), tok.encode(p, true, false));
            std::thread::spawn(move || collect(&h, greedy(ids, 24)))
        })
        .collect();
    for (t, want) in threads.into_iter().zip(&solo) {
        let (_, got, _) = t.join().unwrap();
        assert_eq!(&got, want, "KV {kv}");
    }
    let m = h.metrics();
    assert_eq!((m.running, m.kv_blocks_used), (0, 0));
    // A sequence that stopped before 24 tokens generated an end-of-generation token too,
    // which the engine counts and neither output holds.
    let eog = solo.iter().filter(|s| s.len() < 24).count();
    assert_eq!(
        m.generated_tokens_total as usize,
        solo.iter().map(|s| s.len()).sum::<usize>() + eog,
        "KV {kv}"
    );
}

#[test]
fn stop_strings_end_generation_and_are_not_emitted() {
    let (model, tok) = need_model!();
    let h = start_engine(
        model,
        tok.clone(),
        EngineConfig {
            n_ctx: 256,
            ..Default::default()
        },
    )
    .unwrap();
    let ids = tok.encode("Once upon a time", true, false);
    let (full, _, _) = collect(&h, greedy(ids.clone(), 18));
    assert!(full.starts_with(", the city of Nova Haven"), "{full}");
    let mut req = greedy(ids, 18);
    req.stop = vec!["Haven".into()];
    let (text, _, reason) = collect(&h, req);
    assert_eq!(text, ", the city of Nova ");
    assert_eq!(reason, FinishReason::Stop);
}

#[test]
fn dropped_stream_frees_its_blocks_and_full_queue_refuses() {
    let (model, tok) = need_model!();
    let h = one_slot_engine(model, tok.clone(), 1);
    let ids = tok.encode("Once upon a time", true, false);
    let mut long = h.submit(greedy(ids.clone(), 400)).unwrap();
    // Wait until it is running.
    assert!(matches!(long.next_blocking(), Some(Event::Delta { .. })));
    let _queued = h.submit(greedy(ids.clone(), 4)).unwrap();
    match h.submit(greedy(ids.clone(), 4)) {
        Err(SubmitError::QueueFull { max_queue: 1, .. }) => {}
        other => panic!("expected QueueFull, got {:?}", other.err()),
    }
    drop(long);
    drop(_queued);
    wait_idle(&h);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let m = h.metrics();
    assert_eq!((m.running, m.kv_blocks_used, m.waiting), (0, 0, 0));
    // Serves normally afterwards.
    let (text, _, _) = collect(&h, greedy(ids, 6));
    assert!(text.starts_with(", the city"), "{text}");
}

#[test]
fn zero_queue_admits_only_what_free_slots_take() {
    let (model, tok) = need_model!();
    let h = one_slot_engine(model, tok.clone(), 0);
    // The pool's gauges are published before any request arrives.
    let t0 = std::time::Instant::now();
    while h.metrics().kv_blocks_free == 0 {
        assert!(t0.elapsed().as_secs() < 5, "free KV blocks never published");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let ids = tok.encode("Once upon a time", true, false);
    let mut long = h.submit(greedy(ids.clone(), 400)).unwrap();
    assert!(matches!(long.next_blocking(), Some(Event::Delta { .. })));
    match h.submit(greedy(ids.clone(), 4)) {
        Err(SubmitError::QueueFull { max_queue: 0, .. }) => {}
        other => panic!("expected QueueFull, got {:?}", other.err()),
    }
    drop(long);
    wait_idle(&h);
    let (text, _, _) = collect(&h, greedy(ids, 6));
    assert!(text.starts_with(", the city"), "{text}");
}

#[test]
fn too_long_prompt_is_refused_with_both_numbers() {
    let (model, tok) = need_model!();
    let h = start_engine(
        model,
        tok,
        EngineConfig {
            n_ctx: 64,
            ..Default::default()
        },
    )
    .unwrap();
    let err = h.submit(greedy(vec![1; 60], 10)).err().expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("60") && msg.contains("10") && msg.contains("64"),
        "{msg}"
    );
}
