#!/usr/bin/env python3
"""Tiny random-weight Hugging Face model directories, one per model family.

Usage:
    python scripts/families/tiny-hf.py OUT_DIR [--dtype f32|f16|bf16] [--vocab N] [FAMILY ...]
    python scripts/families/tiny-hf.py --list

Writes OUT_DIR/FAMILY/ with `config.json`, `generation_config.json` and the weights as
transformers saves them (HF tensor names and layouts: Q/K rows of each head in two halves,
Gemma's norm weights stored as `w - 1`, experts one tensor each, Phi-3's fused projections,
gpt-oss's fused experts as MXFP4 blocks and scales (U8) or, in `gpt-oss-dense`, as the same
values unquantized).
The `llama` family is written as two shards with `model.safetensors.index.json`; the others
as one `model.safetensors`. No tokenizer: tests feed token ids (the GGUF conversion then
has llama.cpp's `tokenizer.ggml.model = "none"` with `vocab_size` dummy tokens).

Shapes follow scripts/families/tiny-gguf.py (GQA ratios 1 to 4, head sizes 64 to 128,
query widths other than the hidden size); the output is scaled for logits of spread ~16,
and with a tied output the layers' outputs are scaled up so that they outweigh it.

F32 and F16 files are written with the PyPI `safetensors` package (numpy API); numpy has
no bfloat16, so BF16 files are written by `save_bf16` below in the same format, and their
headers are read back with `safetensors` to check them. Needs numpy and safetensors (no torch).
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
import zlib

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

CONTEXT = 256
LOGIT_SPREAD = 16.0


class Tiny:
    def __init__(self, family: str, cfg: dict, dtype: str):
        self.cfg = cfg
        seeded = TWIN_OF.get(family, family)
        self.rng = np.random.default_rng(zlib.crc32(seeded.encode()) + SEED_SALT.get(seeded, 0))
        self.tensors: dict[str, np.ndarray] = {}
        self.dtype = dtype
        self.branch = 1.0

    @property
    def dim(self) -> int:
        return self.cfg["hidden_size"]

    @property
    def hd(self) -> int:
        return self.cfg["head_dim"]

    def put(self, name: str, w: np.ndarray) -> None:
        assert name not in self.tensors, name
        # C order whatever the view (astype keeps a transpose's order, which the
        # safetensors package would then write as it lies in memory).
        self.tensors[name] = np.ascontiguousarray(w, dtype=None if w.dtype == np.uint8 else np.float32)

    def matrix(self, name: str, rows: int, cols: int, scale: float = 1.0) -> None:
        self.put(name, self.rng.standard_normal((rows, cols)) * (scale / math.sqrt(cols)))

    def norm(self, name: str, n: int, centre: float = 1.0) -> None:
        self.put(name, centre + 0.1 * self.rng.standard_normal(n))

    def embeddings(self, tied: bool, embd_std: float = 1.0, out_scale: float = 1.0) -> None:
        c = self.cfg
        out_std = LOGIT_SPREAD * out_scale / math.sqrt(self.dim)
        c["tie_word_embeddings"] = tied
        if tied:
            self.branch = 8.0
            self.put("model.embed_tokens.weight", out_std * self.rng.standard_normal((c["vocab_size"], self.dim)))
        else:
            self.put("model.embed_tokens.weight", embd_std * self.rng.standard_normal((c["vocab_size"], self.dim)))
            self.put("lm_head.weight", out_std * self.rng.standard_normal((c["vocab_size"], self.dim)))

    def attention(self, i: int, bias: bool = False, qk_norm: str | None = None, norm_centre: float = 1.0) -> None:
        c, p = self.cfg, f"model.layers.{i}.self_attn."
        q, kv = c["num_attention_heads"] * self.hd, c["num_key_value_heads"] * self.hd
        self.matrix(p + "q_proj.weight", q, self.dim)
        self.matrix(p + "k_proj.weight", kv, self.dim)
        self.matrix(p + "v_proj.weight", kv, self.dim)
        if bias:
            for n, w in (("q", q), ("k", kv), ("v", kv)):
                self.put(p + f"{n}_proj.bias", 0.3 * self.rng.standard_normal(w))
        self.matrix(p + "o_proj.weight", self.dim, q, scale=self.branch)
        if qk_norm == "head":
            self.norm(p + "q_norm.weight", self.hd, norm_centre)
            self.norm(p + "k_norm.weight", self.hd, norm_centre)
        elif qk_norm == "full":
            self.norm(p + "q_norm.weight", q)
            self.norm(p + "k_norm.weight", kv)

    def mlp(self, i: int) -> None:
        c, p = self.cfg, f"model.layers.{i}.mlp."
        self.matrix(p + "gate_proj.weight", c["intermediate_size"], self.dim)
        self.matrix(p + "up_proj.weight", c["intermediate_size"], self.dim)
        self.matrix(p + "down_proj.weight", self.dim, c["intermediate_size"], scale=self.branch)

    def llama_layers(self, bias: bool = False, qk_norm: str | None = None) -> None:
        for i in range(self.cfg["num_hidden_layers"]):
            self.norm(f"model.layers.{i}.input_layernorm.weight", self.dim)
            self.attention(i, bias=bias, qk_norm=qk_norm)
            self.norm(f"model.layers.{i}.post_attention_layernorm.weight", self.dim)
            self.mlp(i)


def config(arch: str, model_type: str, n_layer: int, dim: int, n_head: int, n_kv: int, head_dim: int,
           ffn: int, vocab: int, rope_theta: float, eps: float, **extra) -> dict:
    return dict(architectures=[arch], model_type=model_type, num_hidden_layers=n_layer, hidden_size=dim,
                num_attention_heads=n_head, num_key_value_heads=n_kv, head_dim=head_dim,
                intermediate_size=ffn, vocab_size=vocab, max_position_embeddings=CONTEXT,
                rope_theta=rope_theta, rms_norm_eps=eps, **extra)


def llama(m: Tiny) -> None:
    m.embeddings(tied=True)
    m.llama_layers()


def qwen2(m: Tiny) -> None:
    m.embeddings(tied=False)
    m.llama_layers(bias=True)


def qwen3(m: Tiny) -> None:
    m.embeddings(tied=True)
    m.llama_layers(qk_norm="head")


def qwen3moe(m: Tiny) -> None:
    c = m.cfg
    n_exp, ffn = c["num_experts"], c["moe_intermediate_size"]
    m.embeddings(tied=False)
    for i in range(c["num_hidden_layers"]):
        m.norm(f"model.layers.{i}.input_layernorm.weight", m.dim)
        m.attention(i, qk_norm="head")
        m.norm(f"model.layers.{i}.post_attention_layernorm.weight", m.dim)
        m.matrix(f"model.layers.{i}.mlp.gate.weight", n_exp, m.dim, scale=3.0)
        for e in range(n_exp):
            p = f"model.layers.{i}.mlp.experts.{e}."
            m.matrix(p + "gate_proj.weight", ffn, m.dim)
            m.matrix(p + "up_proj.weight", ffn, m.dim)
            m.matrix(p + "down_proj.weight", m.dim, ffn)


def gemma3(m: Tiny) -> None:
    """Norm weights are stored as transformers keeps them: the model multiplies by 1 + w."""
    m.embeddings(tied=True)
    for i in range(m.cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        m.norm(p + "input_layernorm.weight", m.dim, 0.0)
        m.attention(i, qk_norm="head", norm_centre=0.0)
        m.norm(p + "post_attention_layernorm.weight", m.dim, 63.0)
        m.norm(p + "pre_feedforward_layernorm.weight", m.dim, 0.0)
        m.mlp(i)
        m.norm(p + "post_feedforward_layernorm.weight", m.dim, 63.0)
    m.norm("model.norm.weight", m.dim, 0.0)


def gemma2(m: Tiny) -> None:
    """Gemma 3's layers without QK-norms (norm weights stored as `w`, used as `1 + w`)."""
    m.embeddings(tied=True)
    for i in range(m.cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        m.norm(p + "input_layernorm.weight", m.dim, 0.0)
        m.attention(i)
        m.norm(p + "post_attention_layernorm.weight", m.dim, 63.0)
        m.norm(p + "pre_feedforward_layernorm.weight", m.dim, 0.0)
        m.mlp(i)
        m.norm(p + "post_feedforward_layernorm.weight", m.dim, 63.0)
    m.norm("model.norm.weight", m.dim, 0.0)


def starcoder2(m: Tiny) -> None:
    """LayerNorms with biases, biased projections, and the ungated `c_fc`/`c_proj` block."""
    c = m.cfg
    m.embeddings(tied=False)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for n in ("input_layernorm", "post_attention_layernorm"):
            m.norm(p + n + ".weight", m.dim)
            m.put(p + n + ".bias", 0.1 * m.rng.standard_normal(m.dim))
        m.attention(i, bias=True)
        m.put(p + "self_attn.o_proj.bias", 0.1 * m.rng.standard_normal(m.dim))
        m.matrix(p + "mlp.c_fc.weight", c["intermediate_size"], m.dim)
        m.put(p + "mlp.c_fc.bias", 0.1 * m.rng.standard_normal(c["intermediate_size"]))
        m.matrix(p + "mlp.c_proj.weight", m.dim, c["intermediate_size"])
        m.put(p + "mlp.c_proj.bias", 0.1 * m.rng.standard_normal(m.dim))
    m.norm("model.norm.weight", m.dim)
    m.put("model.norm.bias", 0.1 * m.rng.standard_normal(m.dim))


def phi3(m: Tiny) -> None:
    c = m.cfg
    q, kv = c["num_attention_heads"] * m.hd, c["num_key_value_heads"] * m.hd
    m.embeddings(tied=False)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        m.norm(p + "input_layernorm.weight", m.dim)
        m.matrix(p + "self_attn.qkv_proj.weight", q + 2 * kv, m.dim)
        m.matrix(p + "self_attn.o_proj.weight", m.dim, q)
        m.norm(p + "post_attention_layernorm.weight", m.dim)
        m.matrix(p + "mlp.gate_up_proj.weight", 2 * c["intermediate_size"], m.dim)
        m.matrix(p + "mlp.down_proj.weight", m.dim, c["intermediate_size"])


def granite(m: Tiny) -> None:
    m.embeddings(tied=False, embd_std=0.1, out_scale=m.cfg["logits_scaling"])
    m.llama_layers()


def olmo2(m: Tiny) -> None:
    m.embeddings(tied=False)
    for i in range(m.cfg["num_hidden_layers"]):
        m.attention(i, qk_norm="full")
        m.norm(f"model.layers.{i}.post_attention_layernorm.weight", m.dim)
        m.mlp(i)
        m.norm(f"model.layers.{i}.post_feedforward_layernorm.weight", m.dim)


def smollm3(m: Tiny) -> None:
    m.embeddings(tied=True)
    m.llama_layers()


def mistral3(m: Tiny) -> None:
    """Ministral 3: llama's layers with YaRN (factor 16 over an original context of 16) and the
    Llama-4 attention temperature, which departs from 1 from position 16 on."""
    m.embeddings(tied=False)
    m.llama_layers()


def deci(m: Tiny) -> None:
    """Llama-3.1-Nemotron-51B-like (`DeciLMForCausalLM`): `block_configs` give each layer its
    K/V heads (`n_heads_in_group`), no attention (`no_op`), or a linear map in its place
    (`self_attn.linear_attn`), and its feed-forward width (`ffn_mult`)."""
    c = m.cfg
    for k in ("num_key_value_heads", "intermediate_size"):  # per block in DeciLM configs
        del c[k]
    m.embeddings(tied=False)
    for i, b in enumerate(c["block_configs"]):
        att, p = b["attention"], f"model.layers.{i}."
        if att["n_heads_in_group"] is not None:
            m.norm(p + "input_layernorm.weight", m.dim)
            q, kv = c["num_attention_heads"] * m.hd, c["num_attention_heads"] // att["n_heads_in_group"] * m.hd
            m.matrix(p + "self_attn.q_proj.weight", q, m.dim)
            m.matrix(p + "self_attn.k_proj.weight", kv, m.dim)
            m.matrix(p + "self_attn.v_proj.weight", kv, m.dim)
            m.matrix(p + "self_attn.o_proj.weight", m.dim, q, scale=m.branch)
        elif att["replace_with_linear"]:
            m.norm(p + "input_layernorm.weight", m.dim)
            m.matrix(p + "self_attn.linear_attn.weight", m.dim, m.dim, scale=m.branch)
        ffn = deci_ffn(b["ffn"]["ffn_mult"], m.dim)
        m.norm(p + "post_attention_layernorm.weight", m.dim)
        m.matrix(p + "mlp.gate_proj.weight", ffn, m.dim)
        m.matrix(p + "mlp.up_proj.weight", ffn, m.dim)
        m.matrix(p + "mlp.down_proj.weight", m.dim, ffn, scale=m.branch)


def deci_ffn(mult: float, dim: int) -> int:
    """DeciLM's feed-forward width: 2·mult·dim/3, rounded up to a multiple of 256."""
    n = int(2 * mult * dim / 3)
    return -(-n // 256) * 256


def deci_block(group: int | None, ffn_mult: float, linear: bool = False) -> dict:
    return dict(attention=dict(n_heads_in_group=group, no_op=group is None and not linear,
                               replace_with_linear=linear),
                ffn=dict(ffn_mult=ffn_mult, no_op=False, replace_with_linear=False))


# MXFP4 (OCP microscaling FP4): E2M1 values of the 16 codes, times 2^(scale - 127) per 32.
FP4 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6])
FP4_RMS = math.sqrt(float(np.mean(FP4 ** 2)))


def mxfp4(m: Tiny, n_exp: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random experts `[n_exp, rows, cols]` as OpenAI stores them: blocks `[.., cols/32, 16]`
    (byte j: element 2j in the low nibble, 2j+1 in the high one), E8M0 scales `[.., cols/32]`
    of the power of two nearest an RMS of 1/sqrt(cols) or half that; and their values."""
    codes = m.rng.integers(0, 16, (n_exp, rows, cols // 32, 32), dtype=np.uint8)
    e0 = 127 + round(math.log2(1 / (FP4_RMS * math.sqrt(cols))))
    scales = (e0 - m.rng.integers(0, 2, (n_exp, rows, cols // 32))).astype(np.uint8)
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)
    values = FP4[codes] * np.exp2(scales.astype(np.float64) - 127)[..., None]
    return blocks, scales, values.reshape(n_exp, rows, cols)


def gpt_oss(m: Tiny, dense: bool = False) -> None:
    """Q/K/V and output biases, attention sinks, a biased router, and fused experts: gate and
    up interleaved in `gate_up_proj` (gate = even rows), MXFP4 as in the released files or
    (`dense`) the same values as `gate_up_proj` `[E, hidden, 2·ff]` and `down_proj`
    `[E, ff, hidden]`, transposed against nn.Linear as transformers keeps them."""
    c = m.cfg
    n_exp, ffn = c["num_local_experts"], c["intermediate_size"]
    m.embeddings(tied=False)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        m.norm(p + "input_layernorm.weight", m.dim)
        m.attention(i, bias=True)
        m.put(p + "self_attn.o_proj.bias", 0.1 * m.rng.standard_normal(m.dim))
        m.put(p + "self_attn.sinks", m.rng.standard_normal(c["num_attention_heads"]))
        m.norm(p + "post_attention_layernorm.weight", m.dim)
        m.matrix(p + "mlp.router.weight", n_exp, m.dim, scale=3.0)
        m.put(p + "mlp.router.bias", 0.5 * m.rng.standard_normal(n_exp))
        for proj, rows, cols in (("gate_up_proj", 2 * ffn, m.dim), ("down_proj", m.dim, ffn)):
            blocks, scales, values = mxfp4(m, n_exp, rows, cols)
            if dense:
                m.put(p + f"mlp.experts.{proj}", values.transpose(0, 2, 1))
            else:
                m.put(p + f"mlp.experts.{proj}_blocks", blocks)
                m.put(p + f"mlp.experts.{proj}_scales", scales)
            m.put(p + f"mlp.experts.{proj}_bias", 0.1 * m.rng.standard_normal((n_exp, rows)))


def gpt_oss_config(**extra) -> dict:
    """8 experts, top 2; a window of 8 on even layers; YaRN (factor 4 over 64, as
    OpenAI's files: `truncate` false) on all."""
    return config("GptOssForCausalLM", "gpt_oss", 3, 256, 4, 1, 64, 192, 304, 150000.0, 1e-5,
                  num_local_experts=8, num_experts_per_tok=2, experts_per_token=2, sliding_window=8,
                  layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(3)],
                  rope_scaling=dict(rope_type="yarn", factor=4.0, beta_fast=32.0, beta_slow=1.0,
                                    original_max_position_embeddings=64, truncate=False),
                  swiglu_limit=7.0, attention_bias=True, hidden_act="silu", **extra)


FAMILIES = {
    "llama": (llama, config("LlamaForCausalLM", "llama", 3, 256, 4, 4, 64, 512, 320, 10000.0, 1e-5)),
    "qwen2": (qwen2, config("Qwen2ForCausalLM", "qwen2", 2, 384, 6, 2, 64, 320, 448, 1e6, 1e-6)),
    "qwen3": (qwen3, config("Qwen3ForCausalLM", "qwen3", 3, 256, 4, 2, 128, 384, 352, 1e6, 1e-6)),
    "qwen3moe": (qwen3moe, config("Qwen3MoeForCausalLM", "qwen3_moe", 2, 192, 6, 2, 64, 384, 288, 1e6, 1e-6,
                                  num_experts=8, num_experts_per_tok=2, moe_intermediate_size=128,
                                  norm_topk_prob=True)),
    "gemma3": (gemma3, config("Gemma3ForCausalLM", "gemma3_text", 7, 320, 3, 1, 96, 384, 400, 1e6, 1e-6,
                              rope_local_base_freq=10000.0, sliding_window=8, query_pre_attn_scalar=96,
                              layer_types=["sliding_attention" if i % 6 < 5 else "full_attention"
                                           for i in range(7)])),
    "phi3": (phi3, config("Phi3ForCausalLM", "phi3", 3, 256, 4, 4, 64, 384, 416, 10000.0, 1e-5,
                          original_max_position_embeddings=CONTEXT)),
    # Phi-4-mini's partial rotary embeddings: 3/4 of each head (96 of 128) turns.
    "phi3-partial": (phi3, config("Phi3ForCausalLM", "phi3", 3, 384, 3, 1, 128, 320, 352, 10000.0, 1e-5,
                                  original_max_position_embeddings=CONTEXT, partial_rotary_factor=0.75)),
    "gemma2": (gemma2, config("Gemma2ForCausalLM", "gemma2", 4, 256, 3, 1, 128, 384, 368, 10000.0, 1e-6,
                              sliding_window=8, query_pre_attn_scalar=128, attn_logit_softcapping=6.0,
                              final_logit_softcapping=64.0, hidden_activation="gelu_pytorch_tanh")),
    "starcoder2": (starcoder2, config("Starcoder2ForCausalLM", "starcoder2", 3, 288, 3, 1, 96, 448, 400,
                                      100000.0, 1e-5, norm_epsilon=1e-5, use_bias=True,
                                      hidden_act="gelu_pytorch_tanh")),
    "granite": (granite, config("GraniteForCausalLM", "granite", 3, 384, 3, 1, 128, 448, 480, 10000.0, 1e-5,
                                embedding_multiplier=12.0, residual_multiplier=0.22,
                                attention_multiplier=0.015625, logits_scaling=8.0)),
    "olmo2": (olmo2, config("Olmo2ForCausalLM", "olmo2", 3, 320, 5, 5, 64, 448, 336, 500000.0, 1e-6)),
    "mistral3": (mistral3, config("Ministral3ForCausalLM", "ministral3", 3, 384, 4, 2, 96, 512, 512, 1e6, 1e-5,
                                  rope_parameters=dict(rope_type="yarn", rope_theta=1e6, factor=16.0,
                                                       original_max_position_embeddings=16, beta_fast=32.0,
                                                       beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0,
                                                       llama_4_scaling_beta=0.1))),
    "smollm3": (smollm3, config("SmolLM3ForCausalLM", "smollm3", 5, 256, 4, 1, 64, 320, 368, 5e6, 1e-6,
                                no_rope_layers=[int((i + 1) % 4 != 0) for i in range(5)])),
    # Widths 512, 256, 768, 512 (ffn_mult 3, 1.5, 4.5, 3 of 256); GQA 2, 4, none, linear, MHA.
    "deci": (deci, config("DeciLMForCausalLM", "nemotron-nas", 5, 256, 4, 4, 64, 512, 336, 500000.0, 1e-5,
                          block_configs=[deci_block(2, 3.0), deci_block(4, 1.5), deci_block(None, 4.5),
                                         deci_block(None, 3.0, linear=True), deci_block(1, 3.0)])),
    "gpt-oss": (gpt_oss, gpt_oss_config(quantization_config=dict(
        quant_method="mxfp4", modules_to_not_convert=["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                      "model.embed_tokens", "lm_head"]))),
    # gpt-oss's twin: the same weights, the experts as the values their MXFP4 codes stand for.
    "gpt-oss-dense": (lambda m: gpt_oss(m, dense=True), gpt_oss_config()),
}

# Families that are another's weights stored otherwise: same seed, same numbers.
TWIN_OF = {"gpt-oss-dense": "gpt-oss"}
# Added to a family's seed, chosen among 0..9 for the widest least greedy margin in llama.cpp
# on gpt-oss-dense: 0.064 (logits spread ~16); others down to 0.008, within reach of the
# MXFP4 products' rounding.
SEED_SALT = {"gpt-oss": 6}

TORCH_DTYPE = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def to_bf16(w: np.ndarray) -> np.ndarray:
    """f32 → bfloat16 bits, rounding to nearest even (as torch does)."""
    bits = np.ascontiguousarray(w, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def save_bf16(tensors: dict[str, np.ndarray], path: pathlib.Path) -> None:
    """The safetensors layout (8-byte header length, JSON header, data) with BF16 tensors."""
    header, blobs, at = {}, [], 0
    for name, w in tensors.items():
        raw = w.dtype == np.uint8
        b = (np.ascontiguousarray(w) if raw else to_bf16(w)).tobytes()
        header[name] = {"dtype": "U8" if raw else "BF16", "shape": list(w.shape), "data_offsets": [at, at + len(b)]}
        blobs.append(b)
        at += len(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def save(tensors: dict[str, np.ndarray], path: pathlib.Path, dtype: str) -> None:
    if dtype == "bf16":
        save_bf16(tensors, path)
        with safe_open(str(path), framework="numpy") as f:  # the package checks the header
            assert set(f.keys()) == set(tensors)
    else:
        float_type = np.float16 if dtype == "f16" else np.float32
        save_file({n: w if w.dtype == np.uint8 else w.astype(float_type) for n, w in tensors.items()},
                  str(path), metadata={"format": "pt"})


def write(family: str, out: pathlib.Path, dtype: str, vocab: int | None = None) -> pathlib.Path:
    """`vocab` overrides the family's vocabulary size (to match a real tokenizer)."""
    fill, base = FAMILIES[family]
    cfg = json.loads(json.dumps(base))
    if vocab is not None:
        cfg["vocab_size"] = vocab
    cfg["torch_dtype"] = TORCH_DTYPE[dtype]
    m = Tiny(family, cfg, dtype)
    fill(m)
    if "model.norm.weight" not in m.tensors:
        m.norm("model.norm.weight", m.dim)
    d = out / family
    d.mkdir(parents=True, exist_ok=True)
    for f in d.glob("*.safetensors*"):
        f.unlink()
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    (d / "generation_config.json").write_text(json.dumps({"temperature": 0.7, "top_p": 0.9, "top_k": 20}))
    names = list(m.tensors)
    if family == "llama":  # sharded, as large checkpoints are
        half = len(names) // 2
        shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
        for file, part in shards.items():
            save({n: m.tensors[n] for n in part}, d / file, dtype)
        index = {"metadata": {}, "weight_map": {n: f for f, part in shards.items() for n in part}}
        (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    else:
        save(m.tensors, d / "model.safetensors", dtype)
    return d


def main(argv: list[str]) -> int:
    if argv[:1] == ["--list"]:
        print("\n".join(FAMILIES))
        return 0
    dtype, vocab = "f32", None
    if "--dtype" in argv:
        i = argv.index("--dtype")
        dtype = argv[i + 1]
        del argv[i:i + 2]
    if "--vocab" in argv:
        i = argv.index("--vocab")
        vocab = int(argv[i + 1])
        del argv[i:i + 2]
    if not argv or dtype not in TORCH_DTYPE:
        print(__doc__, file=sys.stderr)
        return 2
    out, names = pathlib.Path(argv[0]), argv[1:] or list(FAMILIES)
    for n in names:
        if n not in FAMILIES:
            print(f"unknown family {n}; known: {', '.join(FAMILIES)}", file=sys.stderr)
            return 2
        print(f"{n}: {write(n, out, dtype, vocab)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
