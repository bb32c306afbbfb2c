//! Grammar-constrained sampling and `logit_bias` on the real default model: sequences
//! with and without a grammar batched together, sampled and greedy, with logprobs and
//! stop strings; the grammar's mask shows in the logprobs and the metrics.

mod common;

use common::greedy;
use tuili_engine::{
    ConstraintSpec, Event, FinishReason, GrammarCompiler, RequestStream, SamplingParams, Usage,
};

/// Text, finish reason, every logprob entry's alternatives and the usage of one request.
fn collect(mut s: RequestStream) -> (String, FinishReason, Vec<Vec<u32>>, Usage) {
    let (mut text, mut alts) = (String::new(), Vec::new());
    while let Some(ev) = s.next_blocking() {
        match ev {
            Event::Delta {
                text: t, logprobs, ..
            } => {
                text.push_str(&t);
                alts.extend(logprobs.into_iter().map(|l| {
                    assert!(l.logprob.is_finite() && l.logprob <= 0.0, "{l:?}");
                    l.top.iter().map(|t| t.0).collect()
                }));
            }
            Event::Finished { reason, usage } => return (text, reason, alts, usage),
            Event::Error(e) => panic!("request failed: {e}"),
        }
    }
    panic!("the stream ended without Finished");
}

#[test]
fn json_schema_requests_batched_with_free_ones_give_valid_json() {
    let Some((model, tok)) = common::load() else {
        return;
    };
    let engine = common::engine(&model, &tok, 512, 4);
    let grammars = GrammarCompiler::new(tok.clone());
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "tags": {"type": "array", "items": {"enum": ["red", "blue"]}, "maxItems": 3}
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": false
    });
    let constraint = grammars
        .compile(&ConstraintSpec::JsonSchema(schema))
        .unwrap();
    // Longer than two KV blocks, so that a repeat finds it in the prefix cache.
    let prompt = tok.encode(
        "You are a careful assistant that writes data records. Each record describes one \
         person: their name, their age in years and a few colour tags. Describe a person \
         as JSON:",
        true,
        false,
    );
    assert!(prompt.len() > 32, "{}", prompt.len());
    let mut streams = Vec::new();
    for k in 0..3u64 {
        let mut req = greedy(prompt.clone(), 120);
        if k > 0 {
            req.sampling = SamplingParams {
                seed: k,
                ..Default::default()
            };
        }
        req.constraint = Some(constraint.clone());
        req.logprobs = Some(3);
        // A stop string that valid JSON here never contains.
        req.stop = vec!["@@".into()];
        streams.push(engine.submit(req).unwrap());
    }
    let free = engine.submit(greedy(prompt.clone(), 16)).unwrap();
    for s in streams {
        let (text, reason, alts, _) = collect(s);
        assert_eq!(reason, FinishReason::Stop, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect(&text);
        assert!(v["name"].is_string() && v["name"].as_str().unwrap().chars().count() <= 12);
        assert!((0..=120).contains(&v["age"].as_i64().unwrap()), "{text}");
        assert!(v["tags"].as_array().unwrap().len() <= 3, "{text}");
        // The first token must be `{`: no alternative may start otherwise.
        let first_alts = &alts[0];
        assert!(!first_alts.is_empty());
        for &t in first_alts {
            let b = tok.token_bytes(t);
            assert!(
                b.trim_ascii_start().starts_with(b"{"),
                "{:?}",
                tok.token_text(t)
            );
        }
    }
    let _ = common::drain(free).unwrap();
    // Again, now from the prefix cache: the grammar starts afresh all the same.
    let mut again = greedy(prompt.clone(), 120);
    again.constraint = Some(constraint.clone());
    let (text, reason, _, usage) = collect(engine.submit(again).unwrap());
    assert!(usage.cached_tokens > 0, "{usage:?}");
    assert_eq!(reason, FinishReason::Stop);
    serde_json::from_str::<serde_json::Value>(&text).expect(&text);
    let m = engine.metrics();
    assert!(m.grammar_mask.count >= 3, "{:?}", m.grammar_mask);
    assert!(m.grammar_mask_wait.count >= 1);
}

#[test]
fn logit_bias_forces_and_forbids_tokens() {
    let Some((model, tok)) = common::load() else {
        return;
    };
    let engine = common::engine(&model, &tok, 256, 2);
    let prompt = tok.encode("The capital of France is", true, false);
    let plain = common::drain(engine.submit(greedy(prompt.clone(), 4)).unwrap()).unwrap();
    // Forbid the greedy first token: another one comes first.
    let mut req = greedy(prompt.clone(), 4);
    req.logit_bias = vec![(plain[0], -100.0)];
    let banned = common::drain(engine.submit(req).unwrap()).unwrap();
    assert_ne!(banned[0], plain[0]);
    // A large positive bias makes a token win every step.
    let x = tok.encode(" x", false, false)[0];
    let mut req = greedy(prompt, 3);
    req.logit_bias = vec![(x, 100.0)];
    assert_eq!(
        common::drain(engine.submit(req).unwrap()).unwrap(),
        vec![x; 3]
    );
}
