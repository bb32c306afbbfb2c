//! gpt-oss's fused experts, as llama.cpp's converter (`GptOssModel`) writes them:
//! `mlp.experts.gate_up_proj*` split into gate (even rows) and up (odd rows), and each
//! projection either MXFP4 (`_blocks` + `_scales`, repacked into ggml's `block_mxfp4`
//! bit for bit, never requantized) or unquantized (stored transposed against
//! `nn.Linear`, as some repositories ship it). Biases become F32.

use std::collections::BTreeMap;

use tuili_gguf::GgmlType;
use tuili_safetensors::{Checkpoint, Dtype, TensorInfo};

use super::config::HfConfig;
use super::tensors::{ggml_type, tensor, GgufTensor};
use crate::ModelError;

/// Elements per MXFP4 block; a block is 16 bytes of nibbles plus one E8M0 scale.
const QK: usize = 32;
const BLOCK_BYTES: usize = QK / 2 + 1;

/// The parts of `mlp.experts.` that a gpt-oss checkpoint holds.
const PARTS: &[&str] = &[
    "gate_up_proj_blocks",
    "gate_up_proj_scales",
    "gate_up_proj_bias",
    "gate_up_proj",
    "down_proj_blocks",
    "down_proj_scales",
    "down_proj_bias",
    "down_proj",
];

/// One projection of all experts as GGUF rows: `E · rows` rows of `row_bytes` each.
struct Rows {
    ty: GgmlType,
    row_bytes: usize,
    data: Vec<u8>,
}

impl Rows {
    /// The rows `pick` selects from each expert's `rows`, in order.
    fn pick(&self, rows: usize, pick: Pick) -> Vec<u8> {
        let (first, step) = match pick {
            Pick::All => (0, 1),
            Pick::Even => (0, 2),
            Pick::Odd => (1, 2),
        };
        self.data
            .chunks_exact(self.row_bytes)
            .enumerate()
            .filter(|(i, _)| (i % rows) % step == first)
            .flat_map(|(_, r)| r.iter().copied())
            .collect()
    }
}

#[derive(Clone, Copy)]
enum Pick {
    All,
    Even,
    Odd,
}

/// Layer `layer`'s expert tensors (`names`: its `mlp.experts.*` checkpoint names) as the
/// GGUF tensors `blk.{layer}.ffn_{gate,up,down}_exps.{weight,bias}`.
pub(crate) fn experts(
    ckpt: &Checkpoint,
    cfg: &HfConfig,
    layer: usize,
    names: &[&str],
) -> Result<Vec<GgufTensor>, ModelError> {
    let (n_exp, ff) = cfg
        .experts
        .ok_or_else(|| ModelError::BadConfig("gpt-oss experts without num_local_experts".into()))?;
    let dim = cfg.dim;
    let mut parts: BTreeMap<&str, &str> = BTreeMap::new();
    for &hf in names {
        let part = hf.rsplit_once("mlp.experts.").map_or(hf, |(_, p)| p);
        if !PARTS.contains(&part) {
            return Err(ModelError::Unimplemented(format!(
                "checkpoint tensor '{hf}', which has no counterpart in tuili's gpt-oss loader"
            )));
        }
        parts.insert(part, hf);
    }
    let blk = |s: &str| format!("blk.{layer}.{s}");
    let t = |name: &str, dims: [usize; 3], ty, data| GgufTensor {
        name: blk(name),
        dims: dims.iter().map(|&d| d as u64).filter(|&d| d > 0).collect(),
        ty,
        data,
    };
    let mut out = Vec::new();
    // gate_up: E · 2·ff rows of dim; gate = even rows, up = odd rows (GGUF [dim, ff, E]).
    let gate_up = rows(ckpt, &parts, layer, "gate_up_proj", [n_exp, 2 * ff, dim])?;
    for (name, pick) in [
        ("ffn_gate_exps.weight", Pick::Even),
        ("ffn_up_exps.weight", Pick::Odd),
    ] {
        out.push(t(
            name,
            [dim, ff, n_exp],
            gate_up.ty,
            gate_up.pick(2 * ff, pick),
        ));
    }
    // down: E · dim rows of ff (GGUF [ff, dim, E]).
    let down = rows(ckpt, &parts, layer, "down_proj", [n_exp, dim, ff])?;
    out.push(t(
        "ffn_down_exps.weight",
        [ff, dim, n_exp],
        down.ty,
        down.pick(dim, Pick::All),
    ));
    if let Some(hf) = parts.get("gate_up_proj_bias") {
        // [E, 2·ff] as F32, split by parity like the weights (GGUF [ff, E] each).
        let b = bias(
            ckpt,
            cfg,
            hf,
            &blk("ffn_gate_up_exps.bias"),
            [n_exp, 2 * ff],
        )?;
        let b = Rows {
            ty: b.ty,
            row_bytes: 4,
            data: b.data,
        };
        for (name, pick) in [
            ("ffn_gate_exps.bias", Pick::Even),
            ("ffn_up_exps.bias", Pick::Odd),
        ] {
            out.push(t(name, [ff, n_exp, 0], b.ty, b.pick(2 * ff, pick)));
        }
    }
    if let Some(hf) = parts.get("down_proj_bias") {
        out.push(bias(
            ckpt,
            cfg,
            hf,
            &blk("ffn_down_exps.bias"),
            [n_exp, dim],
        )?);
    }
    Ok(out)
}

/// A `[E, width]` bias as an F32 GGUF tensor, its shape checked.
fn bias(
    ckpt: &Checkpoint,
    cfg: &HfConfig,
    hf: &str,
    name: &str,
    shape: [usize; 2],
) -> Result<GgufTensor, ModelError> {
    let t = ckpt.tensor(hf).expect("listed name");
    expect_shape(t, &shape, "[num_local_experts, width]")?;
    tensor(cfg, name, t, ckpt.data(hf).expect("listed name"))
}

/// A tensor's header and data.
type Part<'a> = (&'a TensorInfo, &'a [u8]);

/// Projection `stem` of every expert, `[E, rows, cols]` (`shape`), as `E · rows` GGUF rows of
/// `cols` elements: MXFP4 from `{stem}_blocks` `[E, rows, cols/32, 16]` and `{stem}_scales`
/// `[E, rows, cols/32]`, or unquantized from `{stem}` `[E, cols, rows]` (transposed).
fn rows(
    ckpt: &Checkpoint,
    parts: &BTreeMap<&str, &str>,
    layer: usize,
    stem: &str,
    shape: [usize; 3],
) -> Result<Rows, ModelError> {
    let get = |suffix: &str| {
        parts.get(format!("{stem}{suffix}").as_str()).map(|hf| {
            (
                ckpt.tensor(hf).expect("listed name"),
                ckpt.data(hf).expect("listed name"),
            )
        })
    };
    let what = format!("layer {layer}'s mlp.experts.{stem}");
    match (get("_blocks"), get("_scales"), get("")) {
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => Err(ModelError::BadConfig(format!(
            "{what} is there both as MXFP4 blocks and unquantized"
        ))),
        (Some(blocks), Some(scales), None) => mxfp4(blocks, scales, shape),
        (Some(_), None, None) | (None, Some(_), None) => Err(ModelError::BadConfig(format!(
            "{what} has one of _blocks and _scales without the other"
        ))),
        (None, None, Some(t)) => dense(t, shape),
        (None, None, None) => Err(ModelError::MissingTensor(format!(
            "{what}_blocks and _scales (MXFP4), or {stem} (unquantized)"
        ))),
    }
}

fn expect_shape(t: &TensorInfo, want: &[usize], meaning: &str) -> Result<(), ModelError> {
    if !t.shape.iter().map(|&d| d as usize).eq(want.iter().copied()) {
        return Err(ModelError::BadConfig(format!(
            "tensor '{}' has shape {:?}, expected {want:?} ({meaning}, from config.json)",
            t.name, t.shape
        )));
    }
    Ok(())
}

fn mxfp4(
    (blocks, bdata): Part,
    (scales, sdata): Part,
    [n_exp, rows, cols]: [usize; 3],
) -> Result<Rows, ModelError> {
    for t in [blocks, scales] {
        if t.dtype != Dtype::U8 {
            return Err(ModelError::BadConfig(format!(
                "tensor '{}' is {}, but MXFP4 blocks and scales are U8",
                t.name,
                t.dtype.name()
            )));
        }
    }
    if !cols.is_multiple_of(QK) {
        return Err(ModelError::BadConfig(format!(
            "tensor '{}': rows of {cols} elements are not whole MXFP4 blocks of {QK}",
            blocks.name
        )));
    }
    let nb = cols / QK;
    expect_shape(
        blocks,
        &[n_exp, rows, nb, QK / 2],
        "num_local_experts, rows, row length / 32, 16",
    )?;
    expect_shape(
        scales,
        &[n_exp, rows, nb],
        "num_local_experts, rows, row length / 32",
    )?;
    let mut data = Vec::with_capacity(n_exp * rows * nb * BLOCK_BYTES);
    for (q, &e) in bdata.chunks_exact(QK / 2).zip(sdata) {
        data.push(e);
        data.extend_from_slice(&repack_nibbles(q.try_into().expect("16 bytes")));
    }
    Ok(Rows {
        ty: GgmlType::MXFP4,
        row_bytes: nb * BLOCK_BYTES,
        data,
    })
}

/// One block's 32 nibbles from OpenAI's order (byte j holds elements 2j low, 2j+1 high)
/// to ggml's (byte k holds element k low, k+16 high): the converter's
/// `transform_nibble_layout`.
fn repack_nibbles(hf: &[u8; 16]) -> [u8; 16] {
    let nib = |k: usize| (hf[k / 2] >> (4 * (k % 2))) & 0x0f;
    std::array::from_fn(|k| nib(k) | (nib(k + 16) << 4))
}

/// `[E, cols, rows]` (the transpose of nn.Linear's `[rows, cols]`) as rows of `cols`.
fn dense((t, data): Part, [n_exp, rows, cols]: [usize; 3]) -> Result<Rows, ModelError> {
    let ty = ggml_type(t)?;
    expect_shape(
        t,
        &[n_exp, cols, rows],
        "num_local_experts, row length, rows",
    )?;
    let size = t.dtype.size();
    let mut out = Vec::with_capacity(data.len());
    for expert in data.chunks_exact(cols * rows * size) {
        for r in 0..rows {
            for c in 0..cols {
                let at = (c * rows + r) * size;
                out.extend_from_slice(&expert[at..at + size]);
            }
        }
    }
    Ok(Rows {
        ty,
        row_bytes: cols * size,
        data: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibbles_move_to_ggml_order() {
        // Element i holds code (7i + i / 16) mod 16: each differs from its pair neighbour
        // (i ^ 1) and from its other-half twin (i ± 16). OpenAI packs pairs, ggml halves.
        let code = |i: usize| ((7 * i + i / 16) % 16) as u8;
        let hf: [u8; 16] = std::array::from_fn(|j| code(2 * j) | (code(2 * j + 1) << 4));
        for (k, g) in repack_nibbles(&hf).iter().enumerate() {
            assert_eq!(g & 0x0f, code(k), "element {k}");
            assert_eq!(g >> 4, code(k + 16), "element {}", k + 16);
        }
    }
}
