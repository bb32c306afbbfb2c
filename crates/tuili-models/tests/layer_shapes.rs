//! Layers of different shapes (`deci`: per-layer head counts and feed-forward widths,
//! attention-free layers, linear attention): what loads, what the KV cache holds, and the
//! files that are refused, each naming the key and the values.

use std::sync::Arc;

use tuili_gguf::{GgmlType, GgufFile, GgufWriter, Value};
use tuili_models::synthetic::{deci_layer, write_synthetic, SyntheticSpec};
use tuili_models::{Arch, KvType, Model};

/// The tiny random model of `arch` with the keys of `replace` set to new values.
fn tiny_with(arch: Arch, replace: &[(&str, Value)]) -> Arc<GgufFile> {
    let spec = SyntheticSpec::tiny(arch, GgmlType::F32);
    let base = GgufFile::from_bytes(write_synthetic(&spec).unwrap()).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in base.metadata() {
        let v = replace
            .iter()
            .find(|(rk, _)| rk == k)
            .map_or(v, |(_, rv)| rv);
        w.add(k.clone(), v.clone()).unwrap();
    }
    for t in base.tensors() {
        w.add_tensor(&t.name, &t.dims, t.ty, base.tensor_data(t).to_vec())
            .unwrap();
    }
    Arc::new(GgufFile::from_bytes(w.to_bytes()).unwrap())
}

fn array(v: &[u32]) -> Value {
    Value::Array(v.iter().map(|&x| Value::U32(x)).collect())
}

fn error(file: &Arc<GgufFile>) -> String {
    match Model::load(file) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("the file loaded"),
    }
}

#[test]
fn deci_layers_keep_their_shapes_and_kv_widths() {
    let spec = SyntheticSpec::tiny(Arch::Deci, GgmlType::F32);
    let file = tiny_with(Arch::Deci, &[]);
    let model = Model::load(&file).expect("deci loads");
    let cfg = model.config();
    let hd = cfg.head_dim;
    for (i, s) in cfg.layers.iter().enumerate() {
        let (h, kv, f) = deci_layer(&spec, i);
        assert_eq!((s.n_head, s.n_kv_head, s.ffn_dim), (h, kv, f), "layer {i}");
    }
    // Layers without K/V heads hold nothing: the cache is the sum of the others'.
    let per_position: usize = (0..spec.n_layer).map(|i| deci_layer(&spec, i).1 * hd).sum();
    assert!(per_position < spec.n_layer * cfg.kv_dim());
    assert_eq!(
        cfg.kv_cache_bytes(10, KvType::F32, KvType::F32),
        2 * 10 * per_position * 4
    );
    let spec_layers = &model.spec().layers;
    assert!(spec_layers[1].qkv.is_none() && spec_layers[1].wo.is_none());
    assert!(spec_layers[2].qkv.is_none() && spec_layers[2].wo.is_some());
    // A prompt, then a token at a time, over a cache of the model's own widths.
    let mut cache = model.new_cache(64);
    let prompt: Vec<u32> = (0..20).map(|i| (i * 37 + 5) % 512).collect();
    let logits = model.forward(&prompt, &mut cache, 0).expect("prefill");
    assert!(logits.iter().all(|v| v.is_finite()));
    let next = model.forward(&[7], &mut cache, 0).expect("decode");
    assert!(next.iter().all(|v| v.is_finite()));
}

#[test]
fn per_layer_shapes_outside_deci_are_refused() {
    let file = tiny_with(
        Arch::Llama,
        &[("llama.attention.head_count_kv", array(&[2, 1]))],
    );
    let e = error(&file);
    assert!(
        e.contains("layers of different shapes") && e.contains("llama"),
        "{e}"
    );
    // Zero heads mean "no attention" in deci alone.
    let file = tiny_with(
        Arch::Llama,
        &[("llama.attention.head_count_kv", array(&[2, 0]))],
    );
    let e = error(&file);
    assert!(
        e.contains("llama.attention.head_count_kv") && e.contains("1..="),
        "{e}"
    );
}

#[test]
fn bad_per_layer_arrays_name_the_key_and_values() {
    let e = error(&tiny_with(
        Arch::Deci,
        &[("deci.attention.head_count_kv", array(&[2, 0, 0]))],
    ));
    assert!(
        e.contains("deci.attention.head_count_kv has 3 values for 4 layers"),
        "{e}"
    );
    let e = error(&tiny_with(
        Arch::Deci,
        &[("deci.attention.head_count_kv", array(&[3, 0, 0, 4]))],
    ));
    assert!(
        e.contains("layer 0") && e.contains("head_count 4") && e.contains("head_count_kv 3"),
        "{e}"
    );
    let e = error(&tiny_with(
        Arch::Deci,
        &[("deci.feed_forward_length", array(&[512, 0, 512, 256]))],
    ));
    assert!(e.contains("layer 1 without a feed-forward block"), "{e}");
    // Linear attention maps `dim` to `dim`: its heads must span the width.
    let e = error(&tiny_with(
        Arch::Deci,
        &[("deci.attention.head_count", array(&[4, 0, 2, 4]))],
    ));
    assert!(e.contains("layer 2: linear attention"), "{e}");
}
