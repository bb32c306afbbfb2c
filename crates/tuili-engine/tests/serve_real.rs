//! The serving engine on the real default model: batched greedy output equals a
//! single-sequence run token for token (batch invariance), stop strings, cancellation,
//! queue limits.

mod common;

use std::sync::Arc;

use common::greedy;
use tuili_engine::{
    argmax, start_engine, CpuRunner, EngineConfig, EngineHandle, Event, FinishReason,
    GenerateRequest, KvLayout, KvType, Runner, SamplingParams, SubmitError,
};
use tuili_models::{Model, SeqChunk, SEQ_BLOCK};
use tuili_tokenizer::Tokenizer;

macro_rules! need_model {
    () => {
        match common::load() {
            Some(m) => m,
            None => return,
        }
    };
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

/// Greedy tokens after `prompt` from `Model::forward` over a `KvCache`: one sequence,
/// no engine, no scheduler (the end-of-generation token excluded).
/// Greedy tokens of `prompt` run alone on the CPU with a KV cache of type `kv`, one
/// token at a time after the prompt: the reference the engine's batches must equal.
fn greedy_alone(
    model: &Model,
    tok: &Tokenizer,
    prompt: &[u32],
    max_tokens: usize,
    kv: KvType,
) -> Vec<u32> {
    let layout = KvLayout {
        n_blocks: (prompt.len() + max_tokens).div_ceil(SEQ_BLOCK),
        block_size: SEQ_BLOCK,
        n_local_blocks: 0,
        k_type: kv,
        v_type: kv,
    };
    let blocks: Vec<u32> = (0..layout.n_blocks as u32).collect();
    let mut runner = CpuRunner::new(model, layout).unwrap();
    let mut run = |tokens: &[u32], start: usize| {
        let chunk = SeqChunk {
            tokens,
            start,
            blocks: &blocks,
            local_blocks: &[],
            logits_from: tokens.len() - 1,
        };
        runner.forward_batch(&[chunk]).unwrap()
    };
    let mut logits = run(prompt, 0);
    let mut out = Vec::new();
    while out.len() < max_tokens {
        let id = argmax(&logits);
        if tok.is_eog(id) {
            break;
        }
        out.push(id);
        logits = run(&[id], prompt.len() + out.len() - 1);
    }
    out
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
    // Reference: each prompt alone, through the model's own one-sequence cache.
    let solo: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| greedy_alone(model, tok, &tok.encode(p, true, false), 24, kv))
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
    let h = common::engine(&model, &tok, 256, EngineConfig::default().max_num_seqs);
    let ids = tok.encode("Once upon a time", true, false);
    let (full, _, _) = collect(&h, greedy(ids.clone(), 18));
    // The f32 reference's greedy continuation: ../shared/MODELS.md, "Known outputs of the
    // default model".
    assert!(full.starts_with(", the city of Nova Haven"), "{full}");
    let mut req = greedy(ids, 18);
    req.stop = vec!["Haven".into()];
    let (text, _, reason) = collect(&h, req);
    assert_eq!(text, ", the city of Nova ");
    assert_eq!(reason, FinishReason::Stop);
}

/// Control tokens are hidden from the text unless the request renders them (harmony's
/// channel markers are such tokens); the token ids are the same either way.
#[test]
fn control_tokens_show_only_when_rendered() {
    let (model, tok) = need_model!();
    let h = one_slot_engine(model, tok.clone(), 4);
    let start = tok.encode("<|im_start|>", false, true);
    assert_eq!(start.len(), 1, "SmolLM2 has <|im_start|> as one token");
    assert!(tok.is_control(start[0]) && !tok.is_eog(start[0]));
    let forced = |render_special| GenerateRequest {
        // The bias makes it the only likely token.
        logit_bias: vec![(start[0], 100.0)],
        render_special,
        ..greedy(tok.encode("Hi", true, false), 3)
    };
    let (hidden, ids, _) = collect(&h, forced(false));
    assert_eq!(ids, vec![start[0]; 3]);
    assert_eq!(hidden, "");
    let (shown, ids, _) = collect(&h, forced(true));
    assert_eq!(ids, vec![start[0]; 3]);
    assert_eq!(shown, "<|im_start|>".repeat(3));
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

#[test]
fn logprobs_with_penalties_describe_the_distribution_sampled_from() {
    let (model, tok) = need_model!();
    let h = common::engine(&model, &tok, 256, EngineConfig::default().max_num_seqs);
    let prompt = tok.encode("the cat the cat the cat the cat the cat the", true, false);
    for (greedy_run, seed) in [(true, 0), (false, 7)] {
        let mut req = greedy(prompt.clone(), 32);
        req.ignore_eos = true;
        req.logprobs = Some(5);
        req.sampling = SamplingParams {
            temperature: if greedy_run { 0.0 } else { 0.9 },
            repeat_penalty: 1.5,
            presence_penalty: 1.0,
            frequency_penalty: 0.5,
            seed,
            ..SamplingParams::default()
        };
        let mut s = h.submit(req).expect("submit");
        let mut lps = Vec::new();
        while let Some(ev) = s.next_blocking() {
            match ev {
                Event::Delta { logprobs, .. } => lps.extend(logprobs),
                Event::Finished { .. } => break,
                Event::Error(e) => panic!("engine error: {e}"),
            }
        }
        assert_eq!(lps.len(), 32);
        for l in &lps {
            assert!(l.logprob <= 0.0, "{l:?}");
            assert_eq!(l.top.len(), 5);
            assert!(l.top.windows(2).all(|w| w[0].2 >= w[1].2), "{l:?}");
            let mass: f64 = l.top.iter().map(|t| (t.2 as f64).exp()).sum();
            assert!(mass <= 1.0 + 1e-5, "{l:?}");
            if let Some(own) = l.top.iter().find(|t| t.0 == l.token) {
                assert_eq!(own.2, l.logprob, "{l:?}");
            }
            if greedy_run {
                // Greedy picks the most likely token of the penalised distribution.
                assert_eq!((l.top[0].0, l.top[0].2), (l.token, l.logprob), "{l:?}");
            }
        }
    }
}

#[test]
fn the_step_log_records_each_step_as_it_ran() {
    let (model, tok) = need_model!();
    let path = std::env::temp_dir().join(format!("tuili-step-log-{}.jsonl", std::process::id()));
    let h = start_engine(
        model,
        tok.clone(),
        EngineConfig {
            n_ctx: 512,
            max_num_seqs: 2,
            step_log: Some(path.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let prompt = tok.encode("The capital of France is", true, false);
    let (_, tokens, _) = collect(&h, greedy(prompt.clone(), 5));
    // A step's line is written after its tokens are handed on: wait for the last one.
    let t0 = std::time::Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap();
        if text.lines().count() >= tokens.len() || t0.elapsed().as_secs() > 10 {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let _ = std::fs::remove_file(&path);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // One step for the prompt (it fits one chunk), then one per token after the first.
    assert_eq!(lines.len(), tokens.len(), "{text}");
    let chunk = |v: &serde_json::Value| -> (u64, u64, bool) {
        let c = &v["chunks"][0];
        (
            c[0].as_u64().unwrap(),
            c[1].as_u64().unwrap(),
            c[2].as_bool().unwrap(),
        )
    };
    assert_eq!(chunk(&lines[0]), (0, prompt.len() as u64, true), "{text}");
    for (i, l) in lines.iter().enumerate().skip(1) {
        assert_eq!(chunk(l), ((prompt.len() + i - 1) as u64, 1, true), "{text}");
        assert_eq!(l["chunks"].as_array().unwrap().len(), 1, "{text}");
    }
    let mut last_at = -1.0;
    for l in &lines {
        let (at, fwd, step) = (
            l["at_s"].as_f64().unwrap(),
            l["forward_s"].as_f64().unwrap(),
            l["step_s"].as_f64().unwrap(),
        );
        assert!(at > last_at && fwd > 0.0 && step >= fwd, "{text}");
        last_at = at;
    }
}

#[test]
fn the_request_trace_records_each_request_as_it_ended() {
    let (model, tok) = need_model!();
    let path = std::env::temp_dir().join(format!("tuili-trace-{}.jsonl", std::process::id()));
    let h = start_engine(
        model,
        tok.clone(),
        EngineConfig {
            n_ctx: 512,
            request_trace: Some(path.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let first = tok.encode("The capital of France is", true, false);
    let second = tok.encode("Once upon a time, in a land far away,", true, false);
    let (_, a, _) = collect(&h, greedy(first.clone(), 5));
    let (_, b, _) = collect(&h, greedy(second.clone(), 3));
    // The line is written as the request ends, before its client hears of it.
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(u64, u64)> = lines
        .iter()
        .map(|l| {
            (
                l["prompt_tokens"].as_u64().unwrap(),
                l["output_tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [
        (first.len() as u64, a.len() as u64),
        (second.len() as u64, b.len() as u64),
    ];
    assert_eq!(got, want, "{text}");
    let at: Vec<f64> = lines
        .iter()
        .map(|l| l["arrival_s"].as_f64().unwrap())
        .collect();
    assert!(0.0 <= at[0] && at[0] < at[1], "{text}");
}

#[test]
fn unwritable_logs_are_refused_by_name() {
    for (log, trace) in [(true, false), (false, true)] {
        let (model, tok) = need_model!();
        let path = std::path::PathBuf::from("/nonexistent-dir/lines.jsonl");
        let err = start_engine(
            model,
            tok,
            EngineConfig {
                step_log: log.then(|| path.clone()),
                request_trace: trace.then(|| path.clone()),
                ..Default::default()
            },
        )
        .err()
        .expect("refused");
        let what = if log {
            "the step log"
        } else {
            "the request trace"
        };
        let e = err.to_string();
        assert!(
            e.contains(what) && e.contains("/nonexistent-dir/lines.jsonl"),
            "{e}"
        );
    }
}
