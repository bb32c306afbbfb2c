//! The model side on real test models (bytes must match the file's exactly) and on
//! random models of the sliding-window and mixture-of-experts families.

use std::sync::Arc;

use tuili_gguf::{GgmlType, GgufFile};
use tuili_models::synthetic::{
    write_synthetic, SyntheticSpec, SYNTHETIC_EXPERTS, SYNTHETIC_EXPERT_FFN, SYNTHETIC_WINDOW,
};
use tuili_models::{Arch, KvType, Model};
use tuili_planner::cost::{KvFormat, ModelCost, WeightFormat};

const F16: KvFormat = KvFormat {
    k: KvType::F16,
    v: KvType::F16,
};

fn cost_of(file: GgufFile) -> (ModelCost, u64) {
    let file = Arc::new(file);
    let model = Model::load(&file).expect("loads");
    let file_bytes = file.tensors().iter().map(|t| t.n_bytes).sum();
    (ModelCost::of(&model, &file), file_bytes)
}

fn real(name: &str) -> Option<(ModelCost, u64)> {
    let path = tuili_testkit::model(name)?;
    Some(cost_of(GgufFile::open(&path).expect("opens")))
}

#[test]
fn real_models_count_every_byte_of_the_file() {
    for name in ["smol.gguf", "qwen.gguf", "gemma.gguf"] {
        let Some((c, file_bytes)) = real(name) else {
            continue;
        };
        assert_eq!(c.weight_bytes(), file_bytes, "{name}");
        let by_format: u64 = c.bytes_by_format().iter().map(|(_, b)| b).sum();
        assert_eq!(by_format, file_bytes, "{name}");
        assert!(c.active_params() <= c.params(), "{name}");
    }
}

#[test]
fn smollm2_kv_and_flops() {
    let Some((c, _)) = real("smol.gguf") else {
        return;
    };
    // 30 layers × (K + V) × 3 heads × 64 × 2 bytes.
    assert_eq!(c.kv_bytes_per_token(F16), 30 * 2 * 192 * 2);
    assert_eq!(c.kv_bytes(1000, F16), 1000 * 23_040);
    // Decode at position 0: 2 FLOPs per weight of the layers and the (tied) output, and
    // attention over one position.
    let layer_macs: u64 = 30 * (576 * 576 * 2 + 576 * 192 * 2 + 3 * 576 * 1536);
    let output = 49_152 * 576;
    let attention = 30.0 * 4.0 * 576.0;
    let want = 2.0 * (layer_macs + output) as f64 + attention;
    assert!(
        (c.decode_flops(0) - want).abs() < 1.0,
        "{} vs {want}",
        c.decode_flops(0)
    );
    // Prefill per token is below decode (the output runs once) but grows with length.
    assert!(c.prefill_flops_per_token(512) < c.decode_flops(0));
    assert!(c.prefill_flops_per_token(4096) > c.prefill_flops_per_token(512));
    // Re-stored as Q8_0, the Q4_1 matrices take 34/20 times their bytes (blocks of 32
    // weights), the Q8_0 embedding the same, the vectors are unchanged.
    let by = |name: &str| {
        let all = c.bytes_by_format();
        all.iter().find(|(n, _)| n == name).map_or(0, |(_, b)| *b)
    };
    let q8 = c.requantized(WeightFormat::Ggml(GgmlType::Q8_0));
    assert_eq!(
        q8.weight_bytes(),
        by("q4_1") / 20 * 34 + by("q8_0") + by("vectors")
    );
}

#[test]
fn gemma_local_layers_keep_only_their_window() {
    let spec = SyntheticSpec::tiny(Arch::Gemma3, GgmlType::F32);
    let (c, file_bytes) = cost_of(GgufFile::from_bytes(write_synthetic(&spec).unwrap()).unwrap());
    assert_eq!(c.weight_bytes(), file_bytes);
    let local = c.layers.iter().filter(|l| l.window.is_some()).count();
    assert!(local > 0 && local < c.n_layer());
    assert!(c
        .layers
        .iter()
        .filter_map(|l| l.window)
        .all(|w| w == SYNTHETIC_WINDOW));
    let per = c.kv_bytes_per_layer_position(&c.layers[0], F16);
    let global = (c.n_layer() - local) as u64;
    assert_eq!(
        c.kv_bytes(100, F16),
        global * 100 * per + local as u64 * SYNTHETIC_WINDOW as u64 * per
    );
    assert_eq!(c.kv_bytes_per_token(F16), global * per);
    // Below the window, local layers cost what global ones do.
    assert_eq!(c.kv_bytes(3, F16), c.n_layer() as u64 * 3 * per);
}

/// deci: each layer's K/V heads count, and layers without K/V heads hold no cache.
#[test]
fn deci_kv_bytes_are_summed_per_layer() {
    let spec = SyntheticSpec::tiny(Arch::Deci, GgmlType::F32);
    let (c, file_bytes) = cost_of(GgufFile::from_bytes(write_synthetic(&spec).unwrap()).unwrap());
    assert_eq!(c.weight_bytes(), file_bytes);
    let hd = spec.dim / spec.n_head;
    let heads: usize = (0..spec.n_layer)
        .map(|i| tuili_models::synthetic::deci_layer(&spec, i).1)
        .sum();
    // f16 K and V: 2 bytes each.
    assert_eq!(c.kv_bytes_per_token(F16), (heads * hd * 2 * 2) as u64);
    assert_eq!(c.kv_bytes(10, F16), 10 * c.kv_bytes_per_token(F16));
    assert!(c.layers.iter().any(|l| l.kv_heads == 0));
}

#[test]
fn moe_counts_all_experts_for_bytes_and_top_k_for_flops() {
    let spec = SyntheticSpec::tiny(Arch::Qwen3Moe, GgmlType::F32);
    let (c, file_bytes) = cost_of(GgufFile::from_bytes(write_synthetic(&spec).unwrap()).unwrap());
    assert_eq!(c.weight_bytes(), file_bytes);
    let e = c.layers[0].moe.as_ref().expect("a mixture of experts");
    assert_eq!(e.n_expert, SYNTHETIC_EXPERTS);
    assert_eq!(e.top_k, 2);
    let expert_macs = (3 * spec.dim * SYNTHETIC_EXPERT_FFN) as u64;
    assert_eq!(e.expert_macs(), expert_macs);
    let unused_experts = spec.n_layer as u64 * (SYNTHETIC_EXPERTS as u64 - 2) * expert_macs;
    let lookup_only = if c.tied { 0 } else { c.embed.macs() };
    assert_eq!(c.params() - c.active_params(), unused_experts + lookup_only);
}
