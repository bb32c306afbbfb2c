//! Sliding-window layers keeping only their window: the scheduler, the block manager and
//! a split KV pool together give the logits of one region, bit for bit, with fewer blocks.

use std::collections::HashMap;
use std::sync::Arc;

use tuili_engine::scheduler::{Scheduler, SchedulerConfig, SeqEvent, SeqRequest};
use tuili_engine::{argmax, kv_pool_sizes, CpuRunner, EngineConfig, KvLayout, KvType, Runner};
use tuili_gguf::{GgmlType, GgufFile};
use tuili_models::synthetic::{write_synthetic, SyntheticSpec, SYNTHETIC_WINDOW};
use tuili_models::{local_blocks_needed, Arch, KvPool, Model, SeqChunk};

/// What a run through the scheduler gave: per sequence the logits of every sampled
/// token (as bits) and the tokens; the most global and local blocks held at once.
struct Run {
    logits: HashMap<u64, Vec<u32>>,
    tokens: HashMap<u64, Vec<u32>>,
    max_global: usize,
    max_local: usize,
    layout: KvLayout,
    /// Prompt tokens taken from the prefix cache.
    prefix_hits: u64,
}

/// Runs `prompts` greedily for `max_new` tokens each through a scheduler over a CPU
/// runner, the pool sized by the engine's `kv_pool_sizes` (`split`: with a local region
/// when the model has local layers; else one region).
fn run(
    model: &Model,
    cfg: &EngineConfig,
    prompts: &[Vec<u32>],
    max_new: usize,
    split: bool,
) -> Run {
    run_with(model, cfg, prompts, max_new, split, false)
}

/// As [`run`]; `staged`: each prompt is submitted when the one before has finished (so a
/// later prompt can hit the prefix cache).
fn run_with(
    model: &Model,
    cfg: &EngineConfig,
    prompts: &[Vec<u32>],
    max_new: usize,
    split: bool,
    staged: bool,
) -> Run {
    let mcfg = model.config();
    let (n_blocks, n_local) = kv_pool_sizes(mcfg, cfg);
    let n_local = if split { n_local } else { 0 };
    let n_blocks = if split {
        n_blocks
    } else {
        cfg.max_num_seqs * cfg.n_ctx.div_ceil(cfg.block_size)
    };
    let sc = SchedulerConfig {
        max_num_seqs: cfg.max_num_seqs,
        max_batched_tokens: cfg.max_batched_tokens,
        block_size: cfg.block_size,
        num_blocks: n_blocks,
        max_model_len: cfg.n_ctx,
    };
    let mut sched = match (n_local, mcfg.max_window()) {
        (n, Some(w)) if n > 0 => Scheduler::with_local(sc, n, w).unwrap(),
        _ => Scheduler::new(sc).unwrap(),
    };
    let layout = KvLayout {
        n_blocks,
        block_size: cfg.block_size,
        n_local_blocks: n_local,
        k_type: cfg.k_type,
        v_type: cfg.v_type,
    };
    let mut runner = CpuRunner::new(model, layout).unwrap();
    let request = |i: usize| SeqRequest {
        id: i as u64,
        prompt: prompts[i].clone(),
        max_new_tokens: max_new,
    };
    let mut submitted = if staged { 1 } else { prompts.len() };
    for i in 0..submitted {
        sched.add(request(i)).unwrap();
    }
    let vocab = mcfg.vocab;
    let mut out = Run {
        logits: HashMap::new(),
        tokens: HashMap::new(),
        max_global: 0,
        max_local: 0,
        layout,
        prefix_hits: 0,
    };
    while sched.has_unfinished() || submitted < prompts.len() {
        if !sched.has_unfinished() {
            sched.add(request(submitted)).unwrap();
            submitted += 1;
        }
        let plan = sched.schedule();
        assert!(
            plan.preempted.is_empty(),
            "the pool is sized for every sequence"
        );
        let chunks: Vec<SeqChunk> = plan
            .scheduled
            .iter()
            .map(|s| SeqChunk {
                tokens: &s.tokens,
                start: s.start_pos,
                blocks: &s.block_table,
                local_blocks: &s.local_table,
                logits_from: s.tokens.len() - usize::from(s.sample),
            })
            .collect();
        let logits = runner.forward_batch(&chunks).unwrap();
        out.max_global = out.max_global.max(sched.kv().num_used());
        out.max_local = out.max_local.max(sched.kv().num_local_used());
        let mut rows = logits.chunks_exact(vocab);
        let mut outputs = Vec::new();
        for s in &plan.scheduled {
            if !s.sample {
                outputs.push((s.id, None));
                continue;
            }
            let row = rows.next().unwrap();
            let l = out.logits.entry(s.id).or_default();
            l.extend(row.iter().map(|v| v.to_bits()));
            outputs.push((s.id, Some(argmax(row))));
        }
        for ev in sched.update(&outputs).unwrap() {
            if let SeqEvent::Token { id, token } = ev {
                out.tokens.entry(id).or_default().push(token);
            }
        }
        sched.kv().audit().unwrap();
    }
    out.prefix_hits = sched.stats().prefix.hits;
    out
}

/// A synthetic model of `arch`, with metadata `key` set to `value` when given.
fn synthetic(arch: Arch, key_value: Option<(&str, tuili_gguf::Value)>) -> Model {
    let bytes = write_synthetic(&SyntheticSpec::tiny(arch, GgmlType::Q4_0)).unwrap();
    let file = GgufFile::from_bytes(bytes).unwrap();
    let Some((key, value)) = key_value else {
        return Model::load(&Arc::new(file)).unwrap();
    };
    let mut out = tuili_gguf::GgufWriter::copy_of(&file).unwrap();
    out.add(key, value).unwrap();
    let file = GgufFile::from_bytes(out.to_bytes()).unwrap();
    Model::load(&Arc::new(file)).unwrap()
}

/// Synthetic gemma3 (window 5 on every other layer) and gemma3 with a window on every
/// layer (pattern 0: no global layer at all): three sequences, prompts in chunks of up to 8 tokens beside each other's
/// decodes; the split pool gives the logits of one region bit for bit and never holds
/// more local blocks than the windows need.
#[test]
fn split_pool_through_the_scheduler_gives_bit_identical_logits() {
    let gemma = synthetic(Arch::Gemma3, None);
    let pattern = "gemma3.attention.sliding_window_pattern";
    let all_local = synthetic(Arch::Gemma3, Some((pattern, tuili_gguf::Value::U32(0))));
    assert_eq!(
        all_local.config().n_local_layers(),
        all_local.config().n_layer
    );
    for model in [&gemma, &all_local] {
        check_split(model);
    }
}

fn check_split(model: &Model) {
    let arch = model.config().arch;
    let cfg = EngineConfig {
        n_ctx: 64,
        max_num_seqs: 3,
        block_size: 4,
        max_batched_tokens: 8,
        k_type: KvType::F16,
        v_type: KvType::F16,
        ..EngineConfig::default()
    };
    let prompts: Vec<Vec<u32>> = [23usize, 37, 9]
        .iter()
        .enumerate()
        .map(|(s, &n)| {
            (0..n as u32)
                .map(|i| (i * 31 + 7 * s as u32 + 2) % 512)
                .collect()
        })
        .collect();
    let split = run(model, &cfg, &prompts, 12, true);
    let whole = run(model, &cfg, &prompts, 12, false);
    assert!(split.layout.n_local_blocks > 0);
    for id in 0..3 {
        assert_eq!(split.tokens[&id].len(), 12);
        assert_eq!(
            split.tokens[&id], whole.tokens[&id],
            "{arch:?} {id}: tokens"
        );
        assert_eq!(
            split.logits[&id], whole.logits[&id],
            "{arch:?} {id}: logits"
        );
    }
    let per_seq = local_blocks_needed(SYNTHETIC_WINDOW, cfg.max_batched_tokens, cfg.block_size);
    assert!(split.max_local <= 3 * per_seq, "{}", split.max_local);
    // A conversation's second turn: the first prompt, its answer and more, submitted
    // after the first has finished, hits the prefix cache in both layouts (the split one
    // only with the window's local blocks still cached) with the same logits.
    let mut second = prompts[1].clone();
    second.extend(&whole.tokens[&1]);
    second.extend([5, 6, 7]);
    let turns = [prompts[1].clone(), second];
    let split = run_with(model, &cfg, &turns, 6, true, true);
    let whole = run_with(model, &cfg, &turns, 6, false, true);
    assert!(split.prefix_hits > 0 && whole.prefix_hits > 0);
    assert_eq!(split.tokens, whole.tokens, "{arch:?}: turns");
    assert_eq!(split.logits, whole.logits, "{arch:?}: turns");
    assert_eq!(whole.max_local, 0);
    // 49 positions of the longest sequence: 13 global blocks, at most `per_seq` local.
    assert!(split.max_local < split.max_global);
}

/// The real Gemma 3 270M (window 512 on 5 of every 6 layers): a prompt of 2000 tokens
/// holds 126 global blocks but at most `local_blocks_needed(512, 512, 16)` = 65 local
/// ones, the pool is smaller, and the tokens and logits are those of one region.
#[test]
fn real_gemma3_holds_fewer_blocks_on_its_local_layers() {
    let Some(path) = tuili_testkit::model("gemma.gguf") else {
        return;
    };
    let model = Model::load(&Arc::new(GgufFile::open(&path).unwrap())).unwrap();
    let mcfg = model.config();
    assert_eq!(mcfg.max_window(), Some(512));
    assert!(mcfg.n_local_layers() > 0 && mcfg.n_local_layers() < mcfg.n_layer);
    let cfg = EngineConfig {
        n_ctx: 2048,
        max_num_seqs: 1,
        ..EngineConfig::default()
    };
    let prompt: Vec<u32> = (0..2000u32)
        .map(|i| 1000 + (i * 7919) % (mcfg.vocab as u32 - 2000))
        .collect();
    let split = run(&model, &cfg, std::slice::from_ref(&prompt), 4, true);
    let whole = run(&model, &cfg, std::slice::from_ref(&prompt), 4, false);
    assert_eq!(split.tokens, whole.tokens);
    assert_eq!(split.logits, whole.logits);
    let per_seq = local_blocks_needed(512, cfg.max_batched_tokens, cfg.block_size);
    assert_eq!(per_seq, 65);
    assert!(split.max_local <= per_seq, "{}", split.max_local);
    assert_eq!(split.max_global, 2003usize.div_ceil(16));
    // Bytes of the two pools: the local layers' region is a window, not the context.
    let bytes = |l: &KvLayout| {
        let (g, lb) = KvPool::region_block_bytes(mcfg, l.block_size, l.k_type, l.v_type);
        match l.n_local_blocks {
            0 => l.n_blocks * KvPool::block_bytes(mcfg, l.block_size, l.k_type, l.v_type),
            n => l.n_blocks * g + n * lb,
        }
    };
    let (s, w) = (bytes(&split.layout), bytes(&whole.layout));
    eprintln!("gemma3 KV pool at 2048: split {s} bytes, one region {w} bytes");
    assert!(s * 10 < w * 6, "split {s}, one region {w}");
}

/// Perplexity over a ring of local blocks (steps of what the ring holds, blocks reused
/// many times over a context) equals perplexity over one region, exactly.
#[test]
fn perplexity_over_a_local_ring_equals_one_region() {
    use tuili_engine::perplexity_with;
    let model = synthetic(Arch::Gemma3, None);
    let tokens: Vec<u32> = (0..150u32).map(|i| (i * 37 + 11) % 512).collect();
    let n_ctx = 48;
    let layout = |n_local_blocks| KvLayout {
        n_blocks: n_ctx / 4,
        block_size: 4,
        n_local_blocks,
        k_type: KvType::F16,
        v_type: KvType::F16,
    };
    let ppl = |kv: KvLayout| {
        let mut runner = CpuRunner::new(&model, kv).unwrap();
        perplexity_with(&mut runner, &tokens, n_ctx, Some(1), |_, _| {}).unwrap()
    };
    let whole = ppl(layout(0));
    // 4 local blocks of 4 with a window of 5: steps of 8 tokens, the ring wraps 3 times.
    let ring = ppl(layout(4));
    assert_eq!(whole.chunks, 3);
    assert_eq!(ring, whole);
    // A ring too small for the window is an error that says so.
    let mut runner = CpuRunner::new(&model, layout(2)).unwrap();
    let err = perplexity_with(&mut runner, &tokens, n_ctx, None, |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("does not hold a window"), "{err}");
}
