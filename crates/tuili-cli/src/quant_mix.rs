//! Which type each tensor gets when a model is quantized to a llama.cpp file type
//! (`Q4_K_M`, `Q8_0`, ...): llama.cpp's mixture rules (`llama_tensor_get_type` in
//! `src/llama-quant.cpp`), ported rule for rule for the types tuili reads, so a file
//! quantized here has the tensor types `llama-quantize` gives it. Tensors are visited in
//! llama.cpp's order ([`llama_order`]) because some rules count the tensors seen so far.

use std::cmp::Ordering;

use anyhow::{bail, Result};
use tuili_gguf::{GgmlType, GgufFile, TensorInfo};

/// A llama.cpp file type (`general.file_type`): the default tensor type and the mixture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum Ftype {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q2_K_S,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

/// Every file type with its llama.cpp name and `LLAMA_FTYPE_*` value.
const FTYPES: [(Ftype, &str, u32); 18] = [
    (Ftype::F32, "F32", 0),
    (Ftype::F16, "F16", 1),
    (Ftype::BF16, "BF16", 32),
    (Ftype::Q4_0, "Q4_0", 2),
    (Ftype::Q4_1, "Q4_1", 3),
    (Ftype::Q5_0, "Q5_0", 8),
    (Ftype::Q5_1, "Q5_1", 9),
    (Ftype::Q8_0, "Q8_0", 7),
    (Ftype::Q2_K, "Q2_K", 10),
    (Ftype::Q2_K_S, "Q2_K_S", 21),
    (Ftype::Q3_K_S, "Q3_K_S", 11),
    (Ftype::Q3_K_M, "Q3_K_M", 12),
    (Ftype::Q3_K_L, "Q3_K_L", 13),
    (Ftype::Q4_K_S, "Q4_K_S", 14),
    (Ftype::Q4_K_M, "Q4_K_M", 15),
    (Ftype::Q5_K_S, "Q5_K_S", 16),
    (Ftype::Q5_K_M, "Q5_K_M", 17),
    (Ftype::Q6_K, "Q6_K", 18),
];

impl Ftype {
    /// Parses llama.cpp's name, in any case. As in `llama-quantize`, `Q3_K`, `Q4_K` and
    /// `Q5_K` mean their `_M` mixtures.
    pub fn parse(s: &str) -> Result<Ftype> {
        let up = s.to_ascii_uppercase();
        let up = match up.as_str() {
            "Q3_K" | "Q4_K" | "Q5_K" => format!("{up}_M"),
            _ => up,
        };
        match FTYPES.iter().find(|(_, name, _)| *name == up) {
            Some((f, _, _)) => Ok(*f),
            None => {
                let names: Vec<&str> = FTYPES.iter().map(|(_, n, _)| *n).collect();
                bail!(
                    "unknown quantization type '{s}' (known: {})",
                    names.join(", ")
                )
            }
        }
    }

    /// llama.cpp's name.
    pub fn name(self) -> &'static str {
        FTYPES.iter().find(|e| e.0 == self).map_or("?", |e| e.1)
    }

    /// The `general.file_type` value.
    pub fn id(self) -> u32 {
        FTYPES.iter().find(|e| e.0 == self).map_or(0, |e| e.2)
    }

    /// The type of the tensors no rule singles out (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        use Ftype as F;
        match self {
            F::F32 => GgmlType::F32,
            F::F16 => GgmlType::F16,
            F::BF16 => GgmlType::BF16,
            F::Q4_0 => GgmlType::Q4_0,
            F::Q4_1 => GgmlType::Q4_1,
            F::Q5_0 => GgmlType::Q5_0,
            F::Q5_1 => GgmlType::Q5_1,
            F::Q8_0 => GgmlType::Q8_0,
            F::Q2_K | F::Q2_K_S => GgmlType::Q2_K,
            F::Q3_K_S | F::Q3_K_M | F::Q3_K_L => GgmlType::Q3_K,
            F::Q4_K_S | F::Q4_K_M => GgmlType::Q4_K,
            F::Q5_K_S | F::Q5_K_M => GgmlType::Q5_K,
            F::Q6_K => GgmlType::Q6_K,
        }
    }
}

/// llama.cpp's broad tensor categories (`tensor_get_category`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Category {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    use Category as C;
    if name == "output.weight" {
        return C::Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return C::TokenEmbd;
    }
    let table = [
        ("attn_qkv.weight", C::AttnQkv),
        ("attn_kv_b.weight", C::AttnKvB),
        ("attn_v.weight", C::AttnV),
        ("attn_k.weight", C::AttnK),
        ("attn_q.weight", C::AttnQ),
        ("attn_output.weight", C::AttnOutput),
        ("ffn_up", C::FfnUp),
        ("ffn_gate", C::FfnGate),
        ("ffn_down", C::FfnDown),
    ];
    table
        .iter()
        .find(|(pat, _)| name.contains(pat))
        .map_or(C::Other, |(_, c)| *c)
}

/// Dimensions as ggml counts them: trailing 1s do not count (`ggml_n_dims`).
fn n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// `tensor_allows_quantization`: 2-D and 3-D weights, less norms, routers and the
/// small tables llama.cpp keeps as they are.
fn allows_quantization(t: &TensorInfo) -> bool {
    let name = t.name.as_str();
    if n_dims(&t.dims) < 2 || !name.ends_with("weight") {
        return false;
    }
    const KEEP: [&str; 27] = [
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
    ];
    !KEEP.iter().any(|k| name.contains(k))
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

/// The `blk.N.` layer of a tensor name.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// llama.cpp's tensor order (`weight_name_comparer`): tensors outside the blocks first,
/// then block by block, by name within each.
pub fn llama_order(a: &str, b: &str) -> Ordering {
    let layer = |n: &str| layer_of(n).map_or(-1, |l| l as i64);
    layer(a).cmp(&layer(b)).then_with(|| a.cmp(b))
}

/// What the rules need to know of the model.
#[derive(Clone, Debug)]
pub struct ModelShape {
    /// `general.architecture`.
    pub arch: String,
    /// Blocks.
    pub n_layer: usize,
    /// Query heads per key/value head (1 without grouped-query attention).
    pub n_gqa: usize,
    /// Experts (0 for a dense model).
    pub n_expert: usize,
}

impl ModelShape {
    /// Reads the shape from the file's metadata.
    pub fn of(file: &GgufFile) -> Result<ModelShape> {
        let arch = file.get_str("general.architecture")?.to_string();
        let first = |key: &str| -> Option<u64> {
            let v = file.get(&format!("{arch}.{key}"))?;
            v.as_u64().or_else(|| match v {
                tuili_gguf::Value::Array(items) => items.iter().find_map(|x| x.as_u64()),
                _ => None,
            })
        };
        let n_layer = first("block_count").unwrap_or(0) as usize;
        let n_head = first("attention.head_count").unwrap_or(1);
        let n_head_kv = first("attention.head_count_kv").unwrap_or(n_head);
        let n_gqa = n_head.checked_div(n_head_kv).unwrap_or(1) as usize;
        let n_expert = first("expert_count").unwrap_or(0) as usize;
        Ok(ModelShape {
            arch,
            n_layer,
            n_gqa,
            n_expert,
        })
    }

    /// llama.cpp's `LLM_TYPE_70B`: an 80-block Llama with grouped-query attention.
    fn is_70b(&self) -> bool {
        self.arch == "llama" && self.n_layer == 80 && self.n_gqa > 1
    }
}

/// The running state of one quantization (`quantize_state_impl`).
pub struct Mixer {
    ftype: Ftype,
    shape: ModelShape,
    tied_embeddings: bool,
    n_attention_wv: usize,
    i_attention_wv: usize,
    i_ffn_down: usize,
    /// Tensors whose row length forced a wider type.
    pub n_fallback: usize,
}

/// `use_more_bits`: the first and last eighth of the layers and every third between.
fn use_more_bits(i: usize, n: usize) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

impl Mixer {
    /// A mixer for the tensors of `file`.
    pub fn new(ftype: Ftype, shape: ModelShape, tensors: &[TensorInfo]) -> Mixer {
        let cats = tensors.iter().map(|t| category(&t.name));
        let n_attention_wv = cats
            .clone()
            .filter(|c| matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB))
            .count();
        let tied_embeddings = !cats.clone().any(|c| c == Category::Output);
        Mixer {
            ftype,
            shape,
            tied_embeddings,
            n_attention_wv,
            i_attention_wv: 0,
            i_ffn_down: 0,
            n_fallback: 0,
        }
    }

    /// The type tensor `t` is written as. Call once per tensor, in [`llama_order`].
    pub fn target(&mut self, t: &TensorInfo) -> Result<GgmlType> {
        if !allows_quantization(t) {
            return Ok(t.ty);
        }
        let default = self.ftype.default_type();
        if !default.is_quantized() {
            return Ok(default);
        }
        let ty = self.mixture(t, default)?;
        Ok(self.fallback(t, ty))
    }

    /// `llama_tensor_get_type_impl` for the non-IQ file types.
    fn mixture(&mut self, t: &TensorInfo, mut ty: GgmlType) -> Result<GgmlType> {
        use Ftype as F;
        use GgmlType as G;
        let f = self.ftype;
        let s = &self.shape;
        let falcon = s.arch == "falcon";
        let cat = category(&t.name);
        match cat {
            _ if cat == Category::Output
                || (self.tied_embeddings && cat == Category::TokenEmbd) =>
            {
                let nx = t.row_len() as usize;
                if falcon || !nx.is_multiple_of(ty.block_size()) {
                    ty = G::Q8_0;
                } else if ty != G::Q8_0 {
                    ty = G::Q6_K;
                }
            }
            Category::TokenEmbd => {}
            Category::AttnV | Category::AttnQkv | Category::AttnKvB => {
                let (i, n) = (self.i_attention_wv, self.n_attention_wv);
                match f {
                    F::Q2_K => ty = if s.n_gqa >= 4 { G::Q4_K } else { G::Q3_K },
                    F::Q2_K_S if s.n_gqa >= 4 => ty = G::Q4_K,
                    F::Q3_K_M => ty = if i < 2 { G::Q5_K } else { G::Q4_K },
                    F::Q3_K_L => ty = G::Q5_K,
                    F::Q4_K_M | F::Q5_K_M if use_more_bits(i, n) => ty = G::Q6_K,
                    F::Q4_K_S if i < 4 => ty = G::Q5_K,
                    _ => {}
                }
                if s.is_70b() && matches!(ty, G::Q3_K | G::Q4_K) {
                    ty = G::Q5_K;
                }
                if s.n_expert == 8 {
                    ty = G::Q8_0;
                }
                self.i_attention_wv += 1;
            }
            Category::AttnK if s.n_expert == 8 => ty = G::Q8_0,
            Category::FfnDown => {
                let (i, n) = self.ffn_layer(t, self.i_ffn_down)?;
                match f {
                    F::Q2_K => ty = G::Q3_K,
                    F::Q2_K_S if i < n / 8 => ty = G::Q4_K,
                    F::Q3_K_M => {
                        ty = if i < n / 16 {
                            G::Q5_K
                        } else if !falcon || use_more_bits(i, n) {
                            G::Q4_K
                        } else {
                            G::Q3_K
                        }
                    }
                    F::Q3_K_L => ty = if falcon { G::Q4_K } else { G::Q5_K },
                    F::Q4_K_M if falcon => {
                        ty = if i < n / 16 {
                            G::Q6_K
                        } else if use_more_bits(i, n) {
                            G::Q5_K
                        } else {
                            G::Q4_K
                        }
                    }
                    F::Q4_K_M | F::Q5_K_M if use_more_bits(i, n) => ty = G::Q6_K,
                    F::Q4_K_S if !falcon && i < n / 8 => ty = G::Q5_K,
                    _ => {}
                }
                self.i_ffn_down += 1;
            }
            Category::AttnOutput if !falcon => {
                if s.n_expert == 8 {
                    if matches!(f, F::Q2_K | F::Q3_K_S | F::Q3_K_M | F::Q4_K_S | F::Q4_K_M) {
                        ty = G::Q5_K;
                    }
                } else {
                    match f {
                        F::Q2_K => ty = G::Q3_K,
                        F::Q3_K_M => ty = G::Q4_K,
                        F::Q3_K_L => ty = G::Q5_K,
                        _ => {}
                    }
                }
            }
            Category::AttnOutput if f == F::Q3_K_L => ty = G::Q4_K,
            _ => {}
        }
        Ok(ty)
    }

    /// The layer of an FFN tensor and the layer count: the running count for a dense
    /// model, the name's `blk.N` for a mixture of experts (whose tensors interleave).
    fn ffn_layer(&self, t: &TensorInfo, counter: usize) -> Result<(usize, usize)> {
        let n = self.shape.n_layer;
        if self.shape.n_expert <= 1 {
            return Ok((counter, n));
        }
        match layer_of(&t.name) {
            Some(i) if i < n => Ok((i, n)),
            Some(i) => bail!("tensor {}: layer {i} is not below the {n} blocks", t.name),
            None => bail!("tensor {}: no blk.N. layer in its name", t.name),
        }
    }

    /// `tensor_type_fallback`: a row length that is not whole blocks of `ty` takes the
    /// next type with 32-element blocks, or F16 if even that does not fit.
    fn fallback(&mut self, t: &TensorInfo, ty: GgmlType) -> GgmlType {
        use GgmlType as G;
        let ncols = t.row_len() as usize;
        if ncols.is_multiple_of(ty.block_size()) {
            return ty;
        }
        self.n_fallback += 1;
        let to = match ty {
            G::Q2_K | G::Q3_K => G::Q4_0,
            G::Q4_K => G::Q5_0,
            G::Q5_K => G::Q5_1,
            G::Q6_K => G::Q8_0,
            other => other,
        };
        if ncols.is_multiple_of(to.block_size()) {
            to
        } else {
            G::F16
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, dims: &[u64]) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            dims: dims.to_vec(),
            ty: GgmlType::F16,
            offset: 0,
            n_bytes: 0,
        }
    }

    /// A dense 24-block model as Qwen2.5-0.5B: 896 wide, GQA 7, tied embeddings.
    fn qwen_like() -> (ModelShape, Vec<TensorInfo>) {
        let mut ts = vec![tensor("token_embd.weight", &[896, 151936])];
        for l in 0..24 {
            for (n, d) in [
                ("attn_norm.weight", vec![896]),
                ("attn_q.weight", vec![896, 896]),
                ("attn_k.weight", vec![896, 128]),
                ("attn_v.weight", vec![896, 128]),
                ("attn_output.weight", vec![896, 896]),
                ("ffn_gate.weight", vec![896, 4864]),
                ("ffn_up.weight", vec![896, 4864]),
                ("ffn_down.weight", vec![4864, 896]),
            ] {
                ts.push(tensor(&format!("blk.{l}.{n}"), &d));
            }
        }
        ts.sort_by(|a, b| llama_order(&a.name, &b.name));
        let shape = ModelShape {
            arch: "qwen2".into(),
            n_layer: 24,
            n_gqa: 7,
            n_expert: 0,
        };
        (shape, ts)
    }

    fn plan(f: Ftype) -> Vec<(String, GgmlType)> {
        let (shape, ts) = qwen_like();
        let mut m = Mixer::new(f, shape, &ts);
        ts.iter()
            .map(|t| (t.name.clone(), m.target(t).unwrap()))
            .collect()
    }

    fn ty_of(p: &[(String, GgmlType)], name: &str) -> GgmlType {
        p.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn q4_k_m_gives_more_bits_to_a_third_of_v_and_ffn_down() {
        let p = plan(Ftype::Q4_K_M);
        // Tied, so as the output: Q6_K, which rows of 896 turn into Q8_0.
        assert_eq!(ty_of(&p, "token_embd.weight"), GgmlType::Q8_0);
        assert_eq!(ty_of(&p, "blk.0.attn_norm.weight"), GgmlType::F16); // 1-D: kept
                                                                        // use_more_bits over 24 layers: 0..3, 21..24 and 5, 8, 11, 14, 17, 20.
        let more: Vec<usize> = (0..24).filter(|&i| use_more_bits(i, 24)).collect();
        assert_eq!(more, [0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
        for l in 0..24 {
            let more = more.contains(&l);
            // 4864 is 19 blocks of 256, so ffn_down takes the mixture as it is; attn_v's
            // rows of 896 are not whole blocks, so Q6_K and Q4_K fall back.
            let want = if more { GgmlType::Q6_K } else { GgmlType::Q4_K };
            assert_eq!(ty_of(&p, &format!("blk.{l}.ffn_down.weight")), want, "{l}");
            let want = if more { GgmlType::Q8_0 } else { GgmlType::Q5_0 };
            assert_eq!(ty_of(&p, &format!("blk.{l}.attn_v.weight")), want, "{l}");
            assert_eq!(ty_of(&p, &format!("blk.{l}.attn_q.weight")), GgmlType::Q5_0);
        }
    }

    #[test]
    fn rows_that_are_not_whole_blocks_fall_back() {
        // 896 = 3.5 blocks of 256: Q4_K falls back to Q5_0, Q6_K to Q8_0, Q5_K to Q5_1.
        let p = plan(Ftype::Q4_K_M);
        assert_eq!(ty_of(&p, "blk.3.ffn_up.weight"), GgmlType::Q5_0);
        let p = plan(Ftype::Q6_K);
        assert_eq!(ty_of(&p, "blk.3.ffn_up.weight"), GgmlType::Q8_0);
        let p = plan(Ftype::Q5_K_S);
        assert_eq!(ty_of(&p, "blk.3.attn_k.weight"), GgmlType::Q5_1);
        // The tied embedding of a row length that is not whole blocks is Q8_0.
        assert_eq!(ty_of(&p, "token_embd.weight"), GgmlType::Q8_0);
    }

    #[test]
    fn q4_0_keeps_q6_k_for_the_output_only_when_rows_fit() {
        let p = plan(Ftype::Q4_0);
        // 896 % 32 == 0, so the tied embedding becomes Q6_K, which falls back to Q8_0.
        assert_eq!(ty_of(&p, "token_embd.weight"), GgmlType::Q8_0);
        assert_eq!(ty_of(&p, "blk.0.ffn_down.weight"), GgmlType::Q4_0);
        let p = plan(Ftype::F16);
        assert_eq!(ty_of(&p, "blk.0.ffn_down.weight"), GgmlType::F16);
    }

    #[test]
    fn names_parse_as_llama_cpp_spells_them() {
        assert_eq!(Ftype::parse("q4_k_m").unwrap(), Ftype::Q4_K_M);
        assert_eq!(Ftype::parse("Q5_K").unwrap(), Ftype::Q5_K_M);
        assert_eq!(Ftype::parse("Q8_0").unwrap().id(), 7);
        let e = Ftype::parse("IQ2_XXS").unwrap_err().to_string();
        assert!(e.contains("IQ2_XXS") && e.contains("Q4_K_M"), "{e}");
    }

    #[test]
    fn order_is_outside_tensors_then_layer_by_layer() {
        let mut v = [
            "blk.10.a",
            "output.weight",
            "blk.2.b",
            "blk.2.a",
            "token_embd.weight",
        ];
        v.sort_by(|a, b| llama_order(a, b));
        assert_eq!(
            v,
            [
                "output.weight",
                "token_embd.weight",
                "blk.2.a",
                "blk.2.b",
                "blk.10.a"
            ]
        );
    }
}
