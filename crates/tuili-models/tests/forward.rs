//! The forward pass on small random models of every weight type: a batched prompt and
//! the same tokens fed one at a time must give the same logits (the GEMM path, the
//! dot-product path and the KV cache agree), and bad input gives clear errors.

use std::sync::Arc;

use tuili_gguf::{GgmlType, GgufFile};
use tuili_models::synthetic::{write_synthetic, SyntheticSpec, WEIGHT_TYPES};
use tuili_models::{Arch, KvType, Model, ModelError};

fn load(spec: &SyntheticSpec) -> Model {
    let bytes = write_synthetic(spec).expect("write model");
    let file = Arc::new(GgufFile::from_bytes(bytes).expect("read model"));
    Model::load(&file).expect("load model")
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn batched_prefill_equals_token_by_token_for_every_type() {
    let tokens: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % 512).collect();
    for arch in Arch::ALL {
        // gpt-oss's experts come as MXFP4.
        let mxfp4 = (arch == Arch::GptOss).then_some(GgmlType::MXFP4);
        for ty in WEIGHT_TYPES.into_iter().chain(mxfp4) {
            let model = load(&SyntheticSpec::tiny(arch, ty));
            let vocab = model.config().vocab;
            let mut cache = model.new_cache(64);
            let batched = model.forward(&tokens, &mut cache, 0).unwrap();
            assert_eq!(batched.len(), tokens.len() * vocab);
            assert!(batched.iter().all(|v| v.is_finite()));

            let mut cache = model.new_cache(64);
            for (i, &t) in tokens.iter().enumerate() {
                let one = model.forward(&[t], &mut cache, 0).unwrap();
                let want = &batched[i * vocab..(i + 1) * vocab];
                let d = max_rel_diff(want, &one);
                assert!(d < 1e-4, "{arch:?} {ty}: token {i} differs by {d}");
            }
            // Logits are not degenerate: different positions differ.
            assert!(max_rel_diff(&batched[..vocab], &batched[vocab..2 * vocab]) > 1e-3);
        }
    }
}

#[test]
fn context_overflow_and_bad_tokens_are_errors() {
    let model = load(&SyntheticSpec::tiny(Arch::Llama, GgmlType::Q8_0));
    let mut cache = model.new_cache(8);
    let err = model.forward(&[1; 9], &mut cache, 0).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::ContextFull {
                capacity: 8,
                adding: 9,
                ..
            }
        ),
        "{err}"
    );
    let err = model.forward(&[1, 512], &mut cache, 0).unwrap_err();
    assert!(
        err.to_string().contains("512") && err.to_string().contains("vocabulary"),
        "{err}"
    );
    assert_eq!(cache.len(), 0, "a failed call must not advance the cache");
}

#[test]
fn wrong_tensor_shape_names_the_tensor() {
    let mut spec = SyntheticSpec::tiny(Arch::Llama, GgmlType::Q8_0);
    spec.n_kv_head = 4; // K/V written with 4 heads...
    let bytes = write_synthetic(&spec).unwrap();
    let file = GgufFile::from_bytes(bytes).unwrap();
    // ...but a file claiming 2 KV heads must be refused by shape, not read out of bounds.
    let mut w = tuili_gguf::GgufWriter::new();
    for (k, v) in file.metadata() {
        let v = if k == "llama.attention.head_count_kv" {
            tuili_gguf::Value::U32(2)
        } else {
            v.clone()
        };
        w.add(k.clone(), v).unwrap();
    }
    for t in file.tensors() {
        w.add_tensor(t.name.clone(), &t.dims, t.ty, file.tensor_data(t).to_vec())
            .unwrap();
    }
    let file = Arc::new(GgufFile::from_bytes(w.to_bytes()).unwrap());
    let err = Model::load(&file).err().expect("must fail");
    assert!(err.to_string().contains("blk.0.attn_k.weight"), "{err}");
}

#[test]
fn ragged_batch_over_scattered_blocks_equals_each_sequence_alone() {
    use tuili_models::{KvPool, SeqChunk};
    let model = load(&SyntheticSpec::tiny(Arch::Qwen2, GgmlType::Q4_K));
    let vocab = model.config().vocab;
    let a: Vec<u32> = (0..11).map(|i| (i * 31 + 2) % 512).collect();
    let b: Vec<u32> = (0..6).map(|i| (i * 17 + 9) % 512).collect();
    // Each alone, through a private cache.
    let alone = |toks: &[u32]| {
        let mut c = model.new_cache(32);
        model.forward(toks, &mut c, 0).unwrap()
    };
    let (la, lb) = (alone(&a), alone(&b));

    // Together: blocks of 4 positions, interleaved and out of order in one pool.
    let mut pool = KvPool::new(model.config(), 16, 4, KvType::F32, KvType::F32).unwrap();
    let (ta, tb) = ([9u32, 2, 14], [7u32, 0]);
    // Step 1: prefill a[..7] and b[..4] in one batch; step 2: the rest of both.
    let step1 = [
        SeqChunk {
            tokens: &a[..7],
            start: 0,
            blocks: &ta,
            local_blocks: &[],
            logits_from: 0,
        },
        SeqChunk {
            tokens: &b[..4],
            start: 0,
            blocks: &tb,
            local_blocks: &[],
            logits_from: 0,
        },
    ];
    let l1 = model.forward_batch(&step1, &mut pool).unwrap();
    let step2 = [
        SeqChunk {
            tokens: &b[4..],
            start: 4,
            blocks: &tb,
            local_blocks: &[],
            logits_from: 0,
        },
        SeqChunk {
            tokens: &a[7..],
            start: 7,
            blocks: &ta,
            local_blocks: &[],
            logits_from: 0,
        },
    ];
    let l2 = model.forward_batch(&step2, &mut pool).unwrap();
    let rows = |l: &[f32], r: std::ops::Range<usize>| l[r.start * vocab..r.end * vocab].to_vec();
    let got_a = [rows(&l1, 0..7), rows(&l2, 2..6)].concat();
    let got_b = [rows(&l1, 7..11), rows(&l2, 0..2)].concat();
    assert!(max_rel_diff(&la, &got_a) < 1e-4);
    assert!(max_rel_diff(&lb, &got_b) < 1e-4);

    // A table too short for the positions is an error, not an out-of-bounds write.
    let bad = [SeqChunk {
        tokens: &a,
        start: 0,
        blocks: &[1, 2],
        local_blocks: &[],
        logits_from: 0,
    }];
    let err = model.forward_batch(&bad, &mut pool).unwrap_err();
    assert!(err.to_string().contains("need 3 blocks"), "{err}");
}

/// Batch invariance for every family and every KV cache type (K and V chosen
/// independently): a prompt run alone, in prefill chunks, or beside another sequence in
/// scattered blocks gives bit-identical logits.
#[test]
fn logits_are_bit_identical_alone_chunked_and_batched_for_every_kv_type() {
    for arch in Arch::ALL {
        batch_invariance(&load(&SyntheticSpec::tiny(arch, GgmlType::Q4_0)), arch);
    }
}

fn batch_invariance(model: &Model, arch: Arch) {
    use tuili_models::{KvPool, KvType, SeqChunk};
    let vocab = model.config().vocab;
    let a: Vec<u32> = (0..13).map(|i| (i * 31 + 2) % 512).collect();
    let b: Vec<u32> = (0..9).map(|i| (i * 17 + 9) % 512).collect();
    // Block tables: in order (alone, chunked), and scattered (batched).
    let (seq, ta, tb) = ([0u32, 1, 2, 3], [9u32, 2, 14, 5], [7u32, 0, 11]);
    let chunk = |tokens, start, blocks| SeqChunk {
        tokens,
        start,
        blocks,
        local_blocks: &[],
        logits_from: 0,
    };
    let bits = |l: &[f32]| l.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
    let mut pairs: Vec<(KvType, KvType)> = KvType::ALL.iter().map(|&t| (t, t)).collect();
    pairs.extend([(KvType::Q8_0, KvType::F16), (KvType::F16, KvType::BF16)]);
    for (kt, vt) in pairs {
        let pool = || KvPool::new(model.config(), 16, 4, kt, vt).unwrap();
        // Alone, one call, blocks in order.
        let alone = model
            .forward_batch(&[chunk(&a, 0, &seq)], &mut pool())
            .unwrap();
        // In three prefill chunks.
        let mut p = pool();
        let chunked = [
            model
                .forward_batch(&[chunk(&a[..5], 0, &seq)], &mut p)
                .unwrap(),
            model
                .forward_batch(&[chunk(&a[5..6], 5, &seq)], &mut p)
                .unwrap(),
            model
                .forward_batch(&[chunk(&a[6..], 6, &seq)], &mut p)
                .unwrap(),
        ]
        .concat();
        assert_eq!(
            bits(&chunked),
            bits(&alone),
            "{arch:?} K {kt}, V {vt}: chunked"
        );
        // Beside another sequence, blocks scattered, in two steps.
        let mut p = pool();
        let l1 = model
            .forward_batch(&[chunk(&b[..4], 0, &tb), chunk(&a[..7], 0, &ta)], &mut p)
            .unwrap();
        let l2 = model
            .forward_batch(&[chunk(&a[7..], 7, &ta), chunk(&b[4..], 4, &tb)], &mut p)
            .unwrap();
        let batched = [&l1[4 * vocab..], &l2[..6 * vocab]].concat();
        assert_eq!(
            bits(&batched),
            bits(&alone),
            "{arch:?} K {kt}, V {vt}: batched"
        );
    }
}

/// `q8_0` needs heads of whole 32-value blocks: other head sizes are an error that names
/// both numbers, never a panic.
#[test]
fn q8_0_kv_with_heads_of_48_is_an_error() {
    use tuili_models::{KvPool, KvType};
    let spec = SyntheticSpec {
        dim: 192,
        ..SyntheticSpec::tiny(Arch::Llama, GgmlType::Q4_0)
    };
    let model = load(&spec);
    assert_eq!(model.config().head_dim, 48);
    let err = KvPool::new(model.config(), 4, 4, KvType::F16, KvType::Q8_0)
        .err()
        .expect("must fail");
    assert!(
        err.to_string().contains("32") && err.to_string().contains("48"),
        "{err}"
    );
    assert!(KvPool::new(model.config(), 4, 4, KvType::BF16, KvType::F16).is_ok());
}

/// A copy of GGUF `bytes` with metadata `key` set to `value`.
fn with_key(bytes: Vec<u8>, key: &str, value: tuili_gguf::Value) -> Arc<GgufFile> {
    let file = GgufFile::from_bytes(bytes).unwrap();
    let mut w = tuili_gguf::GgufWriter::new();
    for (k, v) in file.metadata() {
        w.add(k.clone(), if k == key { value.clone() } else { v.clone() })
            .unwrap();
    }
    for t in file.tensors() {
        w.add_tensor(t.name.clone(), &t.dims, t.ty, file.tensor_data(t).to_vec())
            .unwrap();
    }
    Arc::new(GgufFile::from_bytes(w.to_bytes()).unwrap())
}

/// Gemma 3's local layers see only the last `window` positions: with a window wider than
/// the prompt the logits are those of a window of 5 up to position 4 (bit for bit), and
/// differ from position 5 on, where the window starts to drop positions.
#[test]
fn the_sliding_window_hides_exactly_the_positions_before_it() {
    use tuili_gguf::Value;
    use tuili_models::synthetic::SYNTHETIC_WINDOW;
    let spec = SyntheticSpec::tiny(Arch::Gemma3, GgmlType::F32);
    let tokens: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % 512).collect();
    let run = |file: &Arc<GgufFile>| {
        let model = Model::load(file).expect("load");
        let mut cache = model.new_cache(64);
        model.forward(&tokens, &mut cache, 0).unwrap()
    };
    let bytes = write_synthetic(&spec).unwrap();
    let narrow = run(&Arc::new(GgufFile::from_bytes(bytes.clone()).unwrap()));
    let wide = run(&with_key(
        bytes,
        "gemma3.attention.sliding_window",
        Value::U32(1000),
    ));
    let vocab = 512;
    for t in 0..tokens.len() {
        let (a, b) = (
            &narrow[t * vocab..(t + 1) * vocab],
            &wide[t * vocab..(t + 1) * vocab],
        );
        if t < SYNTHETIC_WINDOW {
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "position {t}"
            );
        } else {
            assert!(max_rel_diff(a, b) > 1e-4, "position {t} did not change");
        }
    }
}

/// A sliding-window pattern longer than the layers, or flags for the wrong number of
/// layers, is refused with the key and the values.
#[test]
fn a_window_pattern_that_contradicts_the_layers_is_refused() {
    use tuili_gguf::Value;
    let bytes = write_synthetic(&SyntheticSpec::tiny(Arch::Gemma3, GgmlType::F32)).unwrap();
    let key = "gemma3.attention.sliding_window_pattern";
    let err = Model::load(&with_key(bytes.clone(), key, Value::U32(6)))
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        err.contains(key) && err.contains('6') && err.contains('2'),
        "{err}"
    );
    let flags = Value::Array(vec![Value::Bool(true); 3]);
    let err = Model::load(&with_key(bytes, key, flags))
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains(key) && err.contains("3 flags"), "{err}");
}

/// A head count that does not divide the width (with no explicit head size) is refused
/// with both keys and values, never a panic.
#[test]
fn a_head_count_that_does_not_divide_the_width_is_refused() {
    let bytes = write_synthetic(&SyntheticSpec::tiny(Arch::Qwen3, GgmlType::F32)).unwrap();
    let file = with_key(
        bytes,
        "qwen3.attention.head_count",
        tuili_gguf::Value::U32(3),
    );
    let err = Model::load(&file).err().expect("must fail").to_string();
    assert!(
        err.contains("qwen3.attention.head_count 3") && err.contains("256"),
        "{err}"
    );
}

/// A split pool whose local layers keep only their window gives the logits of the
/// one-region pool bit for bit: two sequences side by side in chunks of every size,
/// local blocks released (their entries `FREED_BLOCK`) as positions leave the window and
/// handed out again, in scattered order, to whichever sequence needs one next.
#[test]
fn local_layers_keeping_only_their_window_give_bit_identical_logits() {
    use tuili_models::synthetic::SYNTHETIC_WINDOW;
    use tuili_models::{local_blocks_needed, KvPool, SeqChunk, FREED_BLOCK};
    let bits = |l: &[f32]| l.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
    for (kt, vt) in [(KvType::F32, KvType::F32), (KvType::F16, KvType::Q8_0)] {
        let model = load(&SyntheticSpec::tiny(Arch::Gemma3, GgmlType::Q4_0));
        let cfg = model.config();
        assert_eq!(cfg.max_window(), Some(SYNTHETIC_WINDOW));
        assert!(cfg.n_local_layers() > 0 && cfg.n_local_layers() < cfg.n_layer);
        let vocab = cfg.vocab;
        let (bs, max_chunk) = (4, 7);
        let seqs: [Vec<u32>; 2] = [
            (0..41).map(|i| (i * 31 + 2) % 512).collect(),
            (0..30).map(|i| (i * 17 + 9) % 512).collect(),
        ];
        // Reference: each sequence alone in a one-region pool, one call.
        let alone: Vec<Vec<u32>> = seqs
            .iter()
            .map(|s| {
                let table: Vec<u32> = (0..s.len().div_ceil(bs) as u32).collect();
                let mut pool = KvPool::new(cfg, table.len(), bs, kt, vt).unwrap();
                let c = SeqChunk {
                    tokens: s,
                    start: 0,
                    blocks: &table,
                    local_blocks: &[],
                    logits_from: 0,
                };
                bits(&model.forward_batch(&[c], &mut pool).unwrap())
            })
            .collect();
        // Split: the local region holds what two chunks in flight need, no more.
        let n_local = 2 * local_blocks_needed(SYNTHETIC_WINDOW, max_chunk, bs);
        let mut pool = KvPool::new_split(cfg, 32, n_local, bs, kt, vt).unwrap();
        assert_eq!(pool.n_local_blocks(), n_local);
        let one_region = KvPool::new(cfg, 32, bs, kt, vt).unwrap().bytes();
        assert!(pool.bytes() < one_region);
        // Global blocks interleaved; local blocks from a free list, released ones reused.
        let global: [Vec<u32>; 2] = [
            (0..16).map(|i| 2 * i).collect(),
            (0..16).map(|i| 2 * i + 1).collect(),
        ];
        let mut free: Vec<u32> = (0..n_local as u32).rev().collect();
        free.swap(0, 3);
        let mut local: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        let mut done = [0usize; 2];
        let mut got: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        let sizes = [7, 1, 3, 6, 2, 7, 5, 1, 4, 7, 2];
        let mut step = 0;
        while done[0] < seqs[0].len() || done[1] < seqs[1].len() {
            let mut order = Vec::new();
            for s in 0..2 {
                let n = sizes[(step + 3 * s) % sizes.len()].min(seqs[s].len() - done[s]);
                if n == 0 {
                    continue;
                }
                // Release what the chunk's first token no longer sees, then grow.
                let keep_from = (done[s] + 1).saturating_sub(SYNTHETIC_WINDOW) / bs;
                for e in local[s][..keep_from].iter_mut() {
                    if *e != FREED_BLOCK {
                        free.push(std::mem::replace(e, FREED_BLOCK));
                    }
                }
                while local[s].len() < (done[s] + n).div_ceil(bs) {
                    local[s].push(free.pop().expect("the local region is large enough"));
                }
                order.push((s, n));
            }
            order.reverse(); // the second sequence first in this batch
            let chunks: Vec<SeqChunk> = order
                .iter()
                .map(|&(s, n)| SeqChunk {
                    tokens: &seqs[s][done[s]..done[s] + n],
                    start: done[s],
                    blocks: &global[s],
                    local_blocks: &local[s],
                    logits_from: 0,
                })
                .collect();
            let logits = model.forward_batch(&chunks, &mut pool).unwrap();
            let mut row = 0;
            for &(s, n) in &order {
                got[s].extend(bits(&logits[row * vocab..(row + n) * vocab]));
                row += n;
                done[s] += n;
            }
            step += 1;
        }
        assert_eq!(got[0], alone[0], "K {kt}, V {vt}: first sequence");
        assert_eq!(got[1], alone[1], "K {kt}, V {vt}: second sequence");

        // A released entry the window still needs is an error, not a read of garbage.
        let toks = [1u32, 2];
        let mut table = local[0].clone();
        let last = table.len() - 1;
        table[last] = FREED_BLOCK;
        let bad = [SeqChunk {
            tokens: &toks,
            start: seqs[0].len() - 2,
            blocks: &global[0],
            local_blocks: &table,
            logits_from: 0,
        }];
        let err = model.forward_batch(&bad, &mut pool).unwrap_err();
        assert!(err.to_string().contains("outside the pool"), "{err}");
    }
}
