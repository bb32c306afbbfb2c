#!/usr/bin/env python3
"""Tiny random-weight GGUF files, one per model family, for checks against llama.cpp.

Usage:
    python scripts/families/tiny-gguf.py OUT_DIR [FAMILY ...]    # every family when none named
    python scripts/families/tiny-gguf.py --list
    python scripts/families/tiny-gguf.py --check OUT_DIR [FAMILY ...]

Writes OUT_DIR/FAMILY.gguf. Each file holds what llama.cpp's loader for its
`general.architecture` expects (src/models/<arch>.cpp, src/llama-model.cpp, src/llama-arch.cpp
of the llama.cpp inside llama-cpp-python 0.3.36) and what its converter (conversion/*.py)
writes for the real models: the same tensor names and metadata keys, at small made-up shapes
that differ from the real models and from each other (GQA ratios 1 to 4, head dimensions 64,
96 and 128, query widths other than the hidden size).

- Weights are F32, so llama.cpp's CPU path takes f32 dot products and only the order of float
  operations differs from another engine (gpt-oss's experts are MXFP4, as in the real files).
- Norm weights are near 1, not exactly 1, so that a skipped norm weight shows (Gemma's too:
  its converter stores `w + 1`, and llama.cpp multiplies by the stored value), except
  Gemma 3's post-norms (see `gemma3`).
- The output matrix is scaled so that logits have a spread of about 16: greedy decoding is
  then decided by margins far above float rounding (`--check` measures them).
- The vocabulary is `tokenizer.ggml.model = "none"` with `{arch}.vocab_size` dummy tokens:
  llama.cpp loads it without any tokenizer data and returns n_vocab logits; the tests feed
  token ids, never text.
- Seeds are fixed (per family), so a file is the same on every run of the same numpy.

`--check` also runs every written file through llama.cpp (tests/llamacpp/families.py, in the
same interpreter, which must have llama_cpp) and prints the smallest top-1/top-2 logit margin
at the greedy steps; it fails when a file does not load or a margin is under 0.05.

Needs numpy and the PyPI `gguf` package (no torch).
"""

from __future__ import annotations

import math
import os
import pathlib
import sys
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import gguf
from gguf import GGMLQuantizationType, LlamaFileType, MODEL_TENSOR, TENSOR_NAMES

# The context every tiny model is trained for (tests use up to 20 + 48 positions of it).
CONTEXT = 256
# The spread (standard deviation) of the logits the output matrix is scaled for.
LOGIT_SPREAD = 16.0


@dataclass
class Shape:
    n_layer: int
    dim: int
    n_head: int
    n_kv: int
    head_dim: int
    ffn: int
    vocab: int

    @property
    def q_dim(self) -> int:
        return self.n_head * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv * self.head_dim


def tname(t: MODEL_TENSOR, bid: int | None = None, suffix: str = "weight") -> str:
    """The tensor's name as llama.cpp spells it (gguf-py's table mirrors llama-arch.cpp)."""
    base = TENSOR_NAMES[t].format(bid=bid) if bid is not None else TENSOR_NAMES[t]
    return f"{base}.{suffix}" if suffix else base


@dataclass
class Model:
    """What one file holds: metadata (in writing order) and tensors."""

    arch: str
    shape: Shape
    rng: np.random.Generator
    kv: list[tuple[str, Callable[[gguf.GGUFWriter], None]]] = field(default_factory=list)
    # name -> (numpy array in row-major order, i.e. ggml's dims reversed; raw ggml type)
    tensors: dict[str, tuple[np.ndarray, GGMLQuantizationType]] = field(default_factory=dict)
    # The RMS of each attention and FFN output (for an input of unit RMS), set by
    # `embeddings`: with a tied output the embedding is scaled for the logits, and the
    # layers must outweigh it in the residual stream, else the logits mostly repeat the
    # current token (its own row scores highest) and greedy decoding locks onto one token.
    branch_scale: float = 1.0
    # Write quantized expert stacks as F32 holding the dequantized values (the same numbers,
    # so llama.cpp takes f32 products for them: `gpt-oss-f32`).
    dequantized_experts: bool = False

    def key(self, what: str, call: Callable[[gguf.GGUFWriter], None]) -> None:
        self.kv.append((what, call))

    # --- weights -------------------------------------------------------------------------
    def put(self, name: str, data: np.ndarray, ty: GGMLQuantizationType = GGMLQuantizationType.F32) -> None:
        assert name not in self.tensors, name
        self.tensors[name] = (data, ty)

    def matrix(self, name: str, rows: int, cols: int, scale: float = 1.0) -> np.ndarray:
        """`rows` outputs of `cols` inputs (ggml dims {cols, rows}), N(0, scale²/cols), so that
        an input of unit RMS gives outputs of RMS `scale`."""
        w = (self.rng.standard_normal((rows, cols)) * (scale / math.sqrt(cols))).astype(np.float32)
        self.put(name, w)
        return w

    def norm(self, name: str, n: int, centre: float = 1.0) -> None:
        self.put(name, (centre + 0.1 * self.rng.standard_normal(n)).astype(np.float32))

    def vector(self, name: str, n: int, scale: float) -> None:
        self.put(name, (scale * self.rng.standard_normal(n)).astype(np.float32))

    def experts(self, name: str, n_expert: int, rows: int, cols: int, ty: GGMLQuantizationType) -> None:
        """A stack of expert matrices, ggml dims {cols, rows, n_expert}."""
        w = (self.rng.standard_normal((n_expert, rows, cols)) / math.sqrt(cols)).astype(np.float32)
        if ty == GGMLQuantizationType.F32:
            self.put(name, w)
        elif self.dequantized_experts:
            q = gguf.quants.quantize(w, ty)
            self.put(name, gguf.quants.dequantize(q, ty).reshape(w.shape).astype(np.float32))
        else:
            self.put(name, gguf.quants.quantize(w, ty), ty)

    # --- metadata shared by every family --------------------------------------------------
    def common(self, *, rope_base: float, eps: float, ffn: int | None = None,
               head_dim_keys: bool = False, rope_dims: bool | int = False) -> None:
        s = self.shape
        self.key("general.name", lambda w: w.add_name(f"tiny-{self.arch}"))
        self.key("context_length", lambda w: w.add_context_length(CONTEXT))
        self.key("embedding_length", lambda w: w.add_embedding_length(s.dim))
        self.key("block_count", lambda w: w.add_block_count(s.n_layer))
        self.key("feed_forward_length", lambda w: w.add_feed_forward_length(ffn if ffn is not None else s.ffn))
        self.key("attention.head_count", lambda w: w.add_head_count(s.n_head))
        self.key("attention.head_count_kv", lambda w: w.add_head_count_kv(s.n_kv))
        self.key("rope.freq_base", lambda w: w.add_rope_freq_base(rope_base))
        self.key("attention.layer_norm_rms_epsilon", lambda w: w.add_layer_norm_rms_eps(eps))
        if head_dim_keys:  # converters write these when the HF config has `head_dim`
            self.key("attention.key_length", lambda w: w.add_key_length(s.head_dim))
            self.key("attention.value_length", lambda w: w.add_value_length(s.head_dim))
        if rope_dims:  # LlamaModel-derived converters and Phi-3 write the rotary width
            rot = s.head_dim if rope_dims is True else rope_dims
            self.key("rope.dimension_count", lambda w: w.add_rope_dimension_count(rot))
        # The dummy vocabulary's size: llama.cpp makes this many tokens for model "none".
        self.key("vocab_size", lambda w: w.add_vocab_size(s.vocab))

    def embeddings(self, *, tied: bool, embd_scale: float | None = None, out_scale: float = 1.0) -> None:
        """token_embd, and output unless tied. Tied: the embedding is the output matrix, so it
        is scaled for the logits' spread; `out_scale` multiplies that spread (to undo a logit
        divisor such as Granite's)."""
        s = self.shape
        out_std = LOGIT_SPREAD * out_scale / math.sqrt(s.dim)
        if tied:
            self.branch_scale = 8.0
            self.put(tname(MODEL_TENSOR.TOKEN_EMBD),
                     (out_std * self.rng.standard_normal((s.vocab, s.dim))).astype(np.float32))
        else:
            std = 1.0 if embd_scale is None else embd_scale
            self.put(tname(MODEL_TENSOR.TOKEN_EMBD),
                     (std * self.rng.standard_normal((s.vocab, s.dim))).astype(np.float32))
            self.put(tname(MODEL_TENSOR.OUTPUT),
                     (out_std * self.rng.standard_normal((s.vocab, s.dim))).astype(np.float32))
        self.norm(tname(MODEL_TENSOR.OUTPUT_NORM), s.dim)

    def attention(self, i: int, *, bias: bool = False, out_bias: bool = False, qk_norm: str | None = None) -> None:
        """Separate Q/K/V (optionally biased) and the output projection; `qk_norm` = "head"
        (per-head, `[head_dim]`) or "full" (across heads, `[q_dim]` and `[kv_dim]`)."""
        s = self.shape
        self.matrix(tname(MODEL_TENSOR.ATTN_Q, i), s.q_dim, s.dim)
        self.matrix(tname(MODEL_TENSOR.ATTN_K, i), s.kv_dim, s.dim)
        self.matrix(tname(MODEL_TENSOR.ATTN_V, i), s.kv_dim, s.dim)
        if bias:
            self.vector(tname(MODEL_TENSOR.ATTN_Q, i, "bias"), s.q_dim, 0.3)
            self.vector(tname(MODEL_TENSOR.ATTN_K, i, "bias"), s.kv_dim, 0.3)
            self.vector(tname(MODEL_TENSOR.ATTN_V, i, "bias"), s.kv_dim, 0.3)
        self.matrix(tname(MODEL_TENSOR.ATTN_OUT, i), s.dim, s.q_dim, scale=self.branch_scale)
        if out_bias:
            self.vector(tname(MODEL_TENSOR.ATTN_OUT, i, "bias"), s.dim, 0.1)
        if qk_norm == "head":
            self.norm(tname(MODEL_TENSOR.ATTN_Q_NORM, i), s.head_dim)
            self.norm(tname(MODEL_TENSOR.ATTN_K_NORM, i), s.head_dim)
        elif qk_norm == "full":
            self.norm(tname(MODEL_TENSOR.ATTN_Q_NORM, i), s.q_dim)
            self.norm(tname(MODEL_TENSOR.ATTN_K_NORM, i), s.kv_dim)

    def mlp(self, i: int) -> None:
        s = self.shape
        self.matrix(tname(MODEL_TENSOR.FFN_GATE, i), s.ffn, s.dim)
        self.matrix(tname(MODEL_TENSOR.FFN_UP, i), s.ffn, s.dim)
        self.matrix(tname(MODEL_TENSOR.FFN_DOWN, i), s.dim, s.ffn, scale=self.branch_scale)

    def write(self, path: pathlib.Path) -> None:
        w = gguf.GGUFWriter(str(path), self.arch)
        for _, call in self.kv:
            call(w)
        w.add_tokenizer_model("none")
        for name, (data, ty) in self.tensors.items():
            if ty == GGMLQuantizationType.F32:
                w.add_tensor(name, data)
            else:
                w.add_tensor(name, data, raw_dtype=ty)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()


def f32_file(m: Model) -> None:
    m.key("general.file_type", lambda w: w.add_file_type(LlamaFileType.ALL_F32))


# ------------------------------------------------------------------------------------------
# Families. Each function fills a Model as llama.cpp's loader for the architecture expects.
# ------------------------------------------------------------------------------------------


def llama(m: Model) -> None:
    """llama (SmolLM2-like): tied output, MHA (GQA ratio 1), head 64, NORM RoPE."""
    s = m.shape
    m.common(rope_base=10000.0, eps=1e-5, rope_dims=True)
    f32_file(m)
    m.embeddings(tied=True)
    for i in range(s.n_layer):
        m.norm(tname(MODEL_TENSOR.ATTN_NORM, i), s.dim)
        m.attention(i)
        m.norm(tname(MODEL_TENSOR.FFN_NORM, i), s.dim)
        m.mlp(i)


# deci: per layer (query heads, K/V heads, feed-forward width). Layer 2 has no attention,
# layer 3 a linear one (`attn_output` [dim, dim] alone), the others GQA 2, 4 and 1.
DECI_LAYERS = [(4, 2, 384), (4, 1, 256), (0, 0, 448), (4, 0, 320), (4, 4, 384)]


def deci(m: Model) -> None:
    """deci (Llama-3.1-Nemotron-51B-like): llama whose layers differ in shape, given as
    per-layer arrays of `attention.head_count`, `attention.head_count_kv` and
    `feed_forward_length` (conversion/deci.py); Llama 3 `rope_freqs`; untied output."""
    s = m.shape
    assert len(DECI_LAYERS) == s.n_layer and s.n_head * s.head_dim == s.dim
    base = 500000.0
    m.common(rope_base=base, eps=1e-5, head_dim_keys=True, rope_dims=True)
    heads, kv_heads, ffns = (list(c) for c in zip(*DECI_LAYERS))
    # The per-layer arrays replace the scalars `common` wrote (the last write of a key wins
    # nothing in gguf-py: drop them first).
    m.kv = [(k, c) for k, c in m.kv
            if k not in ("attention.head_count", "attention.head_count_kv", "feed_forward_length")]
    m.key("attention.head_count", lambda w: w.add_head_count(heads))
    m.key("attention.head_count_kv", lambda w: w.add_head_count_kv(kv_heads))
    m.key("feed_forward_length", lambda w: w.add_feed_forward_length(ffns))
    f32_file(m)
    m.embeddings(tied=False)
    m.put(tname(MODEL_TENSOR.ROPE_FREQS), llama3_rope_factors(s.head_dim, base))
    for i, (n_head, n_kv, ffn) in enumerate(DECI_LAYERS):
        if n_head > 0:
            m.norm(tname(MODEL_TENSOR.ATTN_NORM, i), s.dim)
        if n_kv > 0:
            m.matrix(tname(MODEL_TENSOR.ATTN_Q, i), n_head * s.head_dim, s.dim)
            m.matrix(tname(MODEL_TENSOR.ATTN_K, i), n_kv * s.head_dim, s.dim)
            m.matrix(tname(MODEL_TENSOR.ATTN_V, i), n_kv * s.head_dim, s.dim)
        if n_head > 0:
            m.matrix(tname(MODEL_TENSOR.ATTN_OUT, i), s.dim, n_head * s.head_dim, scale=m.branch_scale)
        m.norm(tname(MODEL_TENSOR.FFN_NORM, i), s.dim)
        m.matrix(tname(MODEL_TENSOR.FFN_GATE, i), ffn, s.dim)
        m.matrix(tname(MODEL_TENSOR.FFN_UP, i), ffn, s.dim)
        m.matrix(tname(MODEL_TENSOR.FFN_DOWN, i), s.dim, ffn, scale=m.branch_scale)


def llama3_rope_factors(head_dim: int, base: float, factor: float = 8.0, low: float = 1.0,
                        high: float = 4.0, old_ctx: int = 8192) -> np.ndarray:
    """Llama 3.1's per-pair frequency divisors, as conversion/llama.py computes them."""
    freqs = 1.0 / (np.float32(base) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / float(f)
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def llama_ropefreqs(m: Model) -> None:
    """llama (Llama 3.1-like): `rope_freqs.weight` [head_dim/2], untied, GQA 3, head 96.
    No rope.scaling keys: the Llama 3 converter writes only the tensor."""
    s = m.shape
    base = 500000.0
    m.common(rope_base=base, eps=1e-5, head_dim_keys=True, rope_dims=True)
    f32_file(m)
    m.embeddings(tied=False)
    factors = llama3_rope_factors(s.head_dim, base)
    # The file must exercise all three regions: unscaled, smoothed, and divided by 8.
    assert (factors == 1.0).any() and (factors == 8.0).any() and ((factors > 1) & (factors < 8)).any()
    m.put(tname(MODEL_TENSOR.ROPE_FREQS), factors)
    for i in range(s.n_layer):
        m.norm(tname(MODEL_TENSOR.ATTN_NORM, i), s.dim)
        m.attention(i)
        m.norm(tname(MODEL_TENSOR.FFN_NORM, i), s.dim)
        m.mlp(i)


def qwen2(m: Model) -> None:
    """qwen2: Q/K/V biases, NEOX RoPE, untied, GQA 3, head 64."""
    s = m.shape
    m.common(rope_base=1000000.0, eps=1e-6)
    f32_file(m)
    m.embeddings(tied=False)
    for i in range(s.n_layer):
        m.norm(tname(MODEL_TENSOR.ATTN_NORM, i), s.dim)
        m.attention(i, bias=True)
        m.norm(tname(MODEL_TENSOR.FFN_NORM, i), s.dim)
        m.mlp(i)


def qwen3(m: Model) -> None:
    """qwen3: per-head RMS q/k norm (`[head_dim]`) before NEOX RoPE, tied, GQA 2, head 128
    (query width 512 against a hidden size of 256)."""
    s = m.shape
    m.common(rope_base=1000000.0, eps=1e-6, head_dim_keys=True)
    f32_file(m)
    m.embeddings(tied=True)
    for i in range(s.n_layer):
        m.norm(tname(MODEL_TENSOR.ATTN_NORM, i), s.dim)
        m.attention(i, qk_norm="head")
        m.norm(tname(MODEL_TENSOR.FFN_NORM, i), s.dim)
        m.mlp(i)


QWEN3MOE_EXPERTS, QWEN3MOE_USED, QWEN3MOE_EXPERT_FFN = 8, 2, 128


def qwen3moe(m: Model) -> None:
    """qwen3moe: qwen3's attention; 8 experts, top 2 by softmax over the router's logits,
    the two weights renormalised to sum 1, SiLU-gated experts; untied, GQA 3, head 64."""
    s = m.shape
    m.common(rope_base=1000000.0, eps=1e-6, head_dim_keys=True)
    m.key("expert_count", lambda w: w.add_expert_count(QWEN3MOE_EXPERTS))
    m.key("expert_used_count", lambda w: w.add_expert_used_count(QWEN3MOE_USED))
    m.key("expert_feed_forward_length", lambda w: w.add_expert_feed_forward_length(QWEN3MOE_EXPERT_FFN))
    f32_file(m)
    m.embeddings(tied=False)
    for i in range(s.n_layer):
        m.norm(tname(MODEL_TENSOR.ATTN_NORM, i), s.dim)
        m.attention(i, qk_norm="head")
        m.norm(tname(MODEL_TENSOR.FFN_NORM, i), s.dim)
        # Router logits of spread ~3: the second and third experts are rarely within rounding.
        m.matrix(tname(MODEL_TENSOR.FFN_GATE_INP, i), QWEN3MOE_EXPERTS, s.dim, scale=3.0)
        f32 = GGMLQuantizationType.F32
        m.experts(tname(MODEL_TENSOR.FFN_GATE_EXP, i), QWEN3MOE_EXPERTS, QWEN3MOE_EXPERT_FFN, s.dim, f32)
        m.experts(tname(MODEL_TENSOR.FFN_DOWN_EXP, i), QWEN3MOE_EXPERTS, s.dim, QWEN3MOE_EXPERT_FFN, f32)
        m.experts(tname(MODEL_TENSOR.FFN_UP_EXP, i), QWEN3MOE_EXPERTS, QWEN3MOE_EXPERT_FFN, s.dim, f32)


GEMMA3_WINDOW = 8
GEMMA3_POST_NORM = 64.0


def gemma3(m: Model) -> None:
    """gemma3: sliding window of 8 positions on 5 of every 6 layers (llama.cpp's default
    pattern, which real files rely on: no pattern key), so with 7 layers layers 0-4 and 6
    are local (RoPE base 10000 from `rope.freq_base_swa`) and layer 5 global (base 1e6);
    embeddings scaled by sqrt(dim); per-head q/k norms; post-attention and post-FFN norms;
    GELU (tanh) gating; Q scaled by 1/sqrt(head_dim); tied, GQA 3, head 96.

    llama.cpp's CPU GELU (GGML_GELU_FP16) rounds its input to f16 and looks the result up
    in a table of f16 values, so an exact f32 GELU differs from it by up to ~1e-3 relative
    per activation."""
    s = m.shape
    m.common(rope_base=1000000.0, eps=1e-6, head_dim_keys=True)
    m.key("rope.freq_base_swa", lambda w: w.add_rope_freq_base_swa(10000.0))
    m.key("attention.sliding_window", lambda w: w.add_sliding_window(GEMMA3_WINDOW))
    f32_file(m)
    m.embeddings(tied=True)
    for i in range(s.n_layer):
        m.norm(tname(MODEL_TENSOR.ATTN_NORM, i), s.dim)
        m.attention(i, qk_norm="head")
        # Post-norms of ~64 let the layers' outputs outweigh the tied embedding (scaled for
        # the logits, then by sqrt(dim) = 17.9) in the residual stream; at 1 to 32 greedy
        # decoding repeats the current token. Trained Gemma post-norms are large too.
        m.norm(tname(MODEL_TENSOR.ATTN_POST_NORM, i), s.dim, centre=GEMMA3_POST_NORM)
        m.norm(tname(MODEL_TENSOR.FFN_NORM, i), s.dim)
        m.mlp(i)
        m.norm(tname(MODEL_TENSOR.FFN_POST_NORM, i), s.dim, centre=GEMMA3_POST_NORM)


def phi3(m: Model, original_ctx: int = CONTEXT, rot_dims: int | None = None) -> None:
    """phi3: fused `attn_qkv` ([dim + 2 kv_dim] rows: Q, then K, then V) and fused
    `ffn_up` (2 ffn rows: the gate half first, SiLU(gate) * up), NEOX RoPE, untied, MHA,
    head 64. Real Phi-3-mini-4k files carry `attention.sliding_window` (2047), which
    llama.cpp ignores for phi3; here it is 16, inside the tests' sequences, so an engine
    that applies it gives different logits. `rot_dims`: RoPE over that many dimensions of
    each head only (Phi-4-mini: 96 of 128)."""
    s = m.shape
    assert s.q_dim == s.dim, "phi3's Q width is the hidden size"
    m.common(rope_base=10000.0, eps=1e-5, rope_dims=rot_dims or True)
    m.key("rope.scaling.original_context_length", lambda w: w.add_rope_scaling_orig_ctx_len(original_ctx))
    m.key("attention.sliding_window", lambda w: w.add_sliding_window(16))
    f32_file(m)
    m.embeddings(tied=False)
    for i in range(s.n_layer):
        m.norm(tname(MODEL_TENSOR.ATTN_NORM, i), s.dim)
        m.matrix(tname(MODEL_TENSOR.ATTN_QKV, i), s.q_dim + 2 * s.kv_dim, s.dim)
        m.matrix(tname(MODEL_TENSOR.ATTN_OUT, i), s.dim, s.q_dim)
        m.norm(tname(MODEL_TENSOR.FFN_NORM, i), s.dim)
        m.matrix(tname(MODEL_TENSOR.FFN_UP, i), 2 * s.ffn, s.dim)
        m.matrix(tname(MODEL_TENSOR.FFN_DOWN, i), s.dim, s.ffn)


def phi3_longrope(m: Model, original_ctx: int, rot_dims: int | None = None) -> None:
    """phi3 with LongRoPE (Phi-3.5, Phi-4-mini): per-pair frequency factors for long and
    short contexts (`rope_factors_long`, `rope_factors_short`, `[rot_dims / 2]`) and an
    attention factor on cos and sin. llama.cpp takes the long factors when its context
    (256 in the tests) exceeds `original_ctx`, else the short ones."""
    phi3(m, original_ctx, rot_dims)
    half = (rot_dims or m.shape.head_dim) // 2
    m.key("rope.scaling.attn_factor", lambda w: w.add_rope_scaling_attn_factors(1.19))
    m.put("rope_factors_long.weight", np.linspace(1.0, 40.0, half, dtype=np.float32))
    m.put("rope_factors_short.weight", (1.0 + 0.2 * m.rng.random(half)).astype(np.float32))


GEMMA2 = dict(window=8, attn_softcap=6.0, final_softcap=64.0)


def gemma2(m: Model) -> None:
    """gemma2: gemma3's graph without QK-norm, a sliding window of 8 positions on even
    layers (llama.cpp's pattern 2, no key), one RoPE base for every layer, attention scores
    soft-capped (`attn_logit_softcapping`, 6 here: 50 in the real models, whose scores
    rarely reach it; random weights give scores of a few units) and logits soft-capped
    (`final_logit_softcapping`, 64 here against a logit spread of 16, so that the top
    logits, 2 to 3 spreads up, are compressed but keep their order; 30 in the real
    models); GELU (tanh) gating; post-norms of ~64 as in `gemma3`; tied, GQA 3, head 128
    with Q wider than the hidden size. llama.cpp's CPU GELU rounds as for gemma3."""
    s = m.shape
    g = GEMMA2
    m.common(rope_base=10000.0, eps=1e-6, head_dim_keys=True)
    m.key("attention.sliding_window", lambda w: w.add_sliding_window(g["window"]))
    m.key("attn_logit_softcapping", lambda w: w.add_attn_logit_softcapping(g["attn_softcap"]))
    m.key("final_logit_softcapping", lambda w: w.add_final_logit_softcapping(g["final_softcap"]))
    f32_file(m)
    m.embeddings(tied=True)  # llama.cpp's gemma2 always reads the output from token_embd
    for i in range(s.n_layer):
        m.norm(tname(MODEL_TENSOR.ATTN_NORM, i), s.dim)
        m.attention(i)
        m.norm(tname(MODEL_TENSOR.ATTN_POST_NORM, i), s.dim, centre=GEMMA3_POST_NORM)
        m.norm(tname(MODEL_TENSOR.FFN_NORM, i), s.dim)
        m.mlp(i)
        m.norm(tname(MODEL_TENSOR.FFN_POST_NORM, i), s.dim, centre=GEMMA3_POST_NORM)


GRANITE_SCALES = dict(embedding=12.0, residual=0.22, attention=0.015625, logit=8.0)


def granite(m: Model) -> None:
    """granite: embeddings × embedding_scale, each attention and FFN output × residual_scale
    before its residual add, attention scores × attention.scale (here 1/64, not
    1/sqrt(128)), logits ÷ logit_scale; NORM RoPE; GQA 3, head 128. Untied here (the real
    3.x models are tied): a tied embedding scaled for the logits, times 12, would drown
    every layer's output."""
    s = m.shape
    g = GRANITE_SCALES
    m.common(rope_base=10000.0, eps=1e-5, rope_dims=True)
    m.key("attention.scale", lambda w: w.add_attention_scale(g["attention"]))
    m.key("embedding_scale", lambda w: w.add_embedding_scale(g["embedding"]))
    m.key("residual_scale", lambda w: w.add_residual_scale(g["residual"]))
    m.key("logit_scale", lambda w: w.add_logit_scale(g["logit"]))
    f32_file(m)
    m.embeddings(tied=False, embd_scale=0.1, out_scale=g["logit"])
    for i in range(s.n_layer):
        m.norm(tname(MODEL_TENSOR.ATTN_NORM, i), s.dim)
        m.attention(i)
        m.norm(tname(MODEL_TENSOR.FFN_NORM, i), s.dim)
        m.mlp(i)


def olmo2(m: Model) -> None:
    """olmo2: no pre-norms; RMS q/k norms over the whole projection (`[q_dim]`, `[kv_dim]`,
    before splitting into heads); post-attention and post-FFN norms on the branch before
    its residual add; NEOX RoPE; output required (untied); MHA, head 64."""
    s = m.shape
    m.common(rope_base=500000.0, eps=1e-6)
    f32_file(m)
    m.embeddings(tied=False)
    for i in range(s.n_layer):
        m.attention(i, qk_norm="full")
        m.norm(tname(MODEL_TENSOR.ATTN_POST_NORM, i), s.dim)
        m.mlp(i)
        m.norm(tname(MODEL_TENSOR.FFN_POST_NORM, i), s.dim)


def smollm3(m: Model) -> None:
    """smollm3: llama's graph without RoPE on every 4th layer, (il + 1) % 4 == 0: hard-coded
    in llama.cpp (`n_no_rope_layer_step = 4`), no metadata key; 5 layers, so layer 3 is
    NoPE and is not the last; tied, GQA 4, head 64."""
    s = m.shape
    m.common(rope_base=5000000.0, eps=1e-6, rope_dims=True)
    f32_file(m)
    m.embeddings(tied=True)
    for i in range(s.n_layer):
        m.norm(tname(MODEL_TENSOR.ATTN_NORM, i), s.dim)
        m.attention(i)
        m.norm(tname(MODEL_TENSOR.FFN_NORM, i), s.dim)
        m.mlp(i)


MISTRAL3_YARN = dict(factor=16.0, orig_ctx=16, beta_fast=32.0, beta_slow=1.0, log_mul=1.0, temp_scale=0.1)


def mistral3(m: Model) -> None:
    """mistral3 (Ministral 3): llama's graph with YaRN RoPE (factor 16 over an original
    context of 16, so 256 = the context length) and Llama-4 attention temperature: Q ×
    (1 + temperature_scale · ln(1 + floor(pos / original_context))), which departs from 1
    from position 16 on; NORM RoPE; untied, GQA 2, head 96."""
    s = m.shape
    y = MISTRAL3_YARN
    m.common(rope_base=1000000.0, eps=1e-5, head_dim_keys=True, rope_dims=True)
    m.key("rope.scaling.type", lambda w: w.add_rope_scaling_type(gguf.RopeScalingType.YARN))
    m.key("rope.scaling.factor", lambda w: w.add_rope_scaling_factor(y["factor"]))
    m.key("rope.scaling.original_context_length", lambda w: w.add_rope_scaling_orig_ctx_len(y["orig_ctx"]))
    m.key("rope.scaling.yarn_beta_fast", lambda w: w.add_rope_scaling_yarn_beta_fast(y["beta_fast"]))
    m.key("rope.scaling.yarn_beta_slow", lambda w: w.add_rope_scaling_yarn_beta_slow(y["beta_slow"]))
    m.key("rope.scaling.yarn_log_multiplier", lambda w: w.add_rope_scaling_yarn_log_mul(y["log_mul"]))
    m.key("attention.temperature_scale", lambda w: w.add_attn_temperature_scale(y["temp_scale"]))
    f32_file(m)
    m.embeddings(tied=False)
    for i in range(s.n_layer):
        m.norm(tname(MODEL_TENSOR.ATTN_NORM, i), s.dim)
        m.attention(i)
        m.norm(tname(MODEL_TENSOR.FFN_NORM, i), s.dim)
        m.mlp(i)


def starcoder2(m: Model) -> None:
    """starcoder2: LayerNorms (`attention.layer_norm_epsilon`) with biases before attention,
    before the FFN and at the end; Q/K/V, output, up and down projections with biases; an
    ungated FFN, down(gelu(up(x))); NEOX RoPE; Q as wide as the hidden size (llama.cpp
    requires it); untied, GQA 3, head 96. llama.cpp's CPU GELU rounds as for gemma3."""
    s = m.shape
    assert s.q_dim == s.dim, "starcoder2's Q width is the hidden size"
    m.common(rope_base=100000.0, eps=1e-5)
    # LayerNorm's epsilon instead of RMSNorm's: replace the key `common` wrote.
    m.kv = [(k, c) for k, c in m.kv if k != "attention.layer_norm_rms_epsilon"]
    m.key("attention.layer_norm_epsilon", lambda w: w.add_layer_norm_eps(1e-5))
    f32_file(m)
    m.embeddings(tied=False)
    m.vector(tname(MODEL_TENSOR.OUTPUT_NORM, suffix="bias"), s.dim, 0.1)
    for i in range(s.n_layer):
        m.norm(tname(MODEL_TENSOR.ATTN_NORM, i), s.dim)
        m.vector(tname(MODEL_TENSOR.ATTN_NORM, i, "bias"), s.dim, 0.1)
        m.attention(i, bias=True, out_bias=True)
        m.norm(tname(MODEL_TENSOR.FFN_NORM, i), s.dim)
        m.vector(tname(MODEL_TENSOR.FFN_NORM, i, "bias"), s.dim, 0.1)
        m.matrix(tname(MODEL_TENSOR.FFN_UP, i), s.ffn, s.dim)
        m.vector(tname(MODEL_TENSOR.FFN_UP, i, "bias"), s.ffn, 0.1)
        m.matrix(tname(MODEL_TENSOR.FFN_DOWN, i), s.dim, s.ffn, scale=m.branch_scale)
        m.vector(tname(MODEL_TENSOR.FFN_DOWN, i, "bias"), s.dim, 0.1)


GPTOSS = dict(experts=4, used=2, expert_ffn=192, window=8, factor=4.0, orig_ctx=64)


def gpt_oss(m: Model) -> None:
    """gpt-oss: Q/K/V and output biases; attention sinks (`[n_head]`, one extra softmax
    logit per head); sliding window of 8 on even layers (llama.cpp's pattern 2, no key);
    YaRN (factor 4 over 64; beta 32/1) on every layer; `post_attention_norm` is the FFN's
    pre-norm; router with bias, top 2 of 4 experts by logit, softmax over the two; experts
    gate/up/down with biases, MXFP4 weights as in the real files, and the clamped SwiGLU
    (alpha 1.702, limit 7: x·sigmoid(1.702·x)·(up + 1)); untied, GQA 4, head 64."""
    s = m.shape
    g = GPTOSS
    m.common(rope_base=150000.0, eps=1e-5, ffn=g["expert_ffn"], head_dim_keys=True)
    m.key("expert_count", lambda w: w.add_expert_count(g["experts"]))
    m.key("expert_used_count", lambda w: w.add_expert_used_count(g["used"]))
    m.key("expert_feed_forward_length", lambda w: w.add_expert_feed_forward_length(g["expert_ffn"]))
    m.key("attention.sliding_window", lambda w: w.add_sliding_window(g["window"]))
    m.key("rope.scaling.type", lambda w: w.add_rope_scaling_type(gguf.RopeScalingType.YARN))
    m.key("rope.scaling.factor", lambda w: w.add_rope_scaling_factor(g["factor"]))
    m.key("rope.scaling.original_context_length", lambda w: w.add_rope_scaling_orig_ctx_len(g["orig_ctx"]))
    m.key("rope.scaling.yarn_beta_fast", lambda w: w.add_rope_scaling_yarn_beta_fast(32.0))
    m.key("rope.scaling.yarn_beta_slow", lambda w: w.add_rope_scaling_yarn_beta_slow(1.0))
    m.key("general.file_type", lambda w: w.add_file_type(LlamaFileType.MOSTLY_MXFP4_MOE))
    m.embeddings(tied=False)
    mx = GGMLQuantizationType.MXFP4
    n_exp, ffn = g["experts"], g["expert_ffn"]
    for i in range(s.n_layer):
        m.norm(tname(MODEL_TENSOR.ATTN_NORM, i), s.dim)
        m.attention(i, bias=True, out_bias=True)
        m.vector(tname(MODEL_TENSOR.ATTN_SINKS, i), s.n_head, 1.0)
        m.norm(tname(MODEL_TENSOR.ATTN_POST_NORM, i), s.dim)
        m.matrix(tname(MODEL_TENSOR.FFN_GATE_INP, i), n_exp, s.dim, scale=3.0)
        m.vector(tname(MODEL_TENSOR.FFN_GATE_INP, i, "bias"), n_exp, 0.5)
        m.experts(tname(MODEL_TENSOR.FFN_GATE_EXP, i), n_exp, ffn, s.dim, mx)
        m.experts(tname(MODEL_TENSOR.FFN_UP_EXP, i), n_exp, ffn, s.dim, mx)
        m.experts(tname(MODEL_TENSOR.FFN_DOWN_EXP, i), n_exp, s.dim, ffn, mx)
        # Expert biases: ggml dims {width, n_expert}.
        for t, width in ((MODEL_TENSOR.FFN_GATE_EXP, ffn), (MODEL_TENSOR.FFN_UP_EXP, ffn),
                         (MODEL_TENSOR.FFN_DOWN_EXP, s.dim)):
            m.put(tname(t, i, "bias"), (0.1 * m.rng.standard_normal((n_exp, width))).astype(np.float32))


# name -> (general.architecture, builder, shape)
FAMILIES: dict[str, tuple[str, Callable[[Model], None], Shape]] = {
    "llama": ("llama", llama, Shape(n_layer=3, dim=256, n_head=4, n_kv=4, head_dim=64, ffn=512, vocab=320)),
    "llama-ropefreqs": ("llama", llama_ropefreqs,
                        Shape(n_layer=3, dim=288, n_head=3, n_kv=1, head_dim=96, ffn=416, vocab=384)),
    "qwen2": ("qwen2", qwen2, Shape(n_layer=2, dim=384, n_head=6, n_kv=2, head_dim=64, ffn=320, vocab=448)),
    "qwen3": ("qwen3", qwen3, Shape(n_layer=3, dim=256, n_head=4, n_kv=2, head_dim=128, ffn=384, vocab=352)),
    "qwen3moe": ("qwen3moe", qwen3moe,
                 Shape(n_layer=2, dim=192, n_head=6, n_kv=2, head_dim=64, ffn=384, vocab=288)),
    "gemma2": ("gemma2", gemma2, Shape(n_layer=4, dim=256, n_head=3, n_kv=1, head_dim=128, ffn=384, vocab=368)),
    "gemma3": ("gemma3", gemma3, Shape(n_layer=7, dim=320, n_head=3, n_kv=1, head_dim=96, ffn=384, vocab=400)),
    "phi3": ("phi3", phi3, Shape(n_layer=3, dim=256, n_head=4, n_kv=4, head_dim=64, ffn=384, vocab=416)),
    # LongRoPE with the long factors (an original context of 64, under the tests' 256) and
    # with the short ones (256, not under it).
    "phi3-longrope": ("phi3", lambda m: phi3_longrope(m, 64),
                      Shape(n_layer=3, dim=256, n_head=4, n_kv=4, head_dim=64, ffn=384, vocab=416)),
    "phi3-longrope-short": ("phi3", lambda m: phi3_longrope(m, CONTEXT),
                            Shape(n_layer=3, dim=256, n_head=4, n_kv=4, head_dim=64, ffn=384, vocab=416)),
    # Phi-4-mini's shape of RoPE: 3/4 of each head turns (96 of 128), with LongRoPE
    # factors for those 48 pairs.
    "phi3-partial": ("phi3", lambda m: phi3_longrope(m, 64, rot_dims=96),
                     Shape(n_layer=3, dim=384, n_head=3, n_kv=1, head_dim=128, ffn=320, vocab=352)),
    "granite": ("granite", granite, Shape(n_layer=3, dim=384, n_head=3, n_kv=1, head_dim=128, ffn=448, vocab=480)),
    "olmo2": ("olmo2", olmo2, Shape(n_layer=3, dim=320, n_head=5, n_kv=5, head_dim=64, ffn=448, vocab=336)),
    "smollm3": ("smollm3", smollm3, Shape(n_layer=5, dim=256, n_head=4, n_kv=1, head_dim=64, ffn=320, vocab=368)),
    "mistral3": ("mistral3", mistral3,
                 Shape(n_layer=3, dim=384, n_head=4, n_kv=2, head_dim=96, ffn=512, vocab=512)),
    "starcoder2": ("starcoder2", starcoder2,
                   Shape(n_layer=3, dim=288, n_head=3, n_kv=1, head_dim=96, ffn=448, vocab=400)),
    "gpt-oss": ("gpt-oss", gpt_oss, Shape(n_layer=3, dim=256, n_head=4, n_kv=1, head_dim=64, ffn=192, vocab=304)),
    # n_head, n_kv and ffn are per layer: DECI_LAYERS.
    "deci": ("deci", deci, Shape(n_layer=5, dim=256, n_head=4, n_kv=2, head_dim=64, ffn=384, vocab=336)),
    # gpt-oss's twin: the same weights, its MXFP4 experts stored as the F32 values they
    # decode to. llama.cpp quantizes activations to Q8_0 for MXFP4 products, which moves its
    # logits by ~1e-2 (relative); on this file it takes exact f32 products, the oracle
    # tuili's MXFP4 products are held to.
    "gpt-oss-f32": ("gpt-oss", gpt_oss, Shape(n_layer=3, dim=256, n_head=4, n_kv=1, head_dim=64, ffn=192, vocab=304)),
}

# Families that are another's weights stored otherwise: same seed, same numbers.
TWIN_OF: dict[str, str] = {"gpt-oss-f32": "gpt-oss"}


# Added to a family's seed, chosen (among 0..39, measured with `--check`) for a wide least
# greedy margin: one draw of random weights in two puts two logits within 0.05 of each
# other at one of the 3 x 48 greedy steps, where an engine's rounding may pick either.
# With these every family's least margin is 0.099 to 0.35 (logits spread ~16).
SEED_SALT: dict[str, int] = {
    "llama": 6,
    "llama-ropefreqs": 4,
    "qwen2": 11,
    "qwen3": 7,
    "qwen3moe": 2,
    "gemma2": 9,
    "gemma3": 12,
    "phi3": 8,
    "phi3-longrope-short": 9,
    "phi3-partial": 2,
    "granite": 0,
    "olmo2": 11,
    "smollm3": 7,
    "mistral3": 16,
    "starcoder2": 5,
    "gpt-oss": 10,
}


def build(family: str) -> Model:
    arch, fill, shape = FAMILIES[family]
    # A seed of the family's name: fixed, and different for two families of one arch.
    seeded = TWIN_OF.get(family, family)
    seed = zlib.crc32(seeded.encode()) + SEED_SALT.get(seeded, 0)
    m = Model(arch=arch, shape=shape, rng=np.random.default_rng(seed),
              dequantized_experts=family in TWIN_OF)
    fill(m)
    return m


def write(family: str, out_dir: pathlib.Path) -> pathlib.Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{family}.gguf"
    # Whole files only, under their final name: another process may read the directory.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    build(family).write(tmp)
    tmp.replace(path)
    return path


def check(paths: list[tuple[str, pathlib.Path]]) -> int:
    """Runs each file through llama.cpp; prints and checks the greedy margins."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "llamacpp"))
    sys.dont_write_bytecode = True  # no __pycache__ in the source tree
    import families as runner  # noqa: E402  (needs llama_cpp)

    bad = 0
    for family, path in paths:
        try:
            result = runner.run(str(path))
        except Exception as e:  # a file llama.cpp refuses
            print(f"{family:16} FAILED to run in llama.cpp: {e}")
            bad += 1
            continue
        margins = [p["min_greedy_margin"] for p in result["prompts"]]
        prompt_margins = [p["min_prompt_margin"] for p in result["prompts"]]
        gens = [len(set(p["generated"])) for p in result["prompts"]]
        ok = min(margins) >= 0.05
        bad += not ok
        print(f"{family:16} n_vocab {result['n_vocab']:4}  min greedy margin {min(margins):7.3f}  "
              f"min prompt-position margin {min(prompt_margins):7.4f}  "
              f"distinct generated tokens {gens}  {'ok' if ok else 'MARGIN TOO SMALL'}")
    return bad


def main(argv: list[str]) -> int:
    if argv[:1] == ["--list"]:
        print("\n".join(FAMILIES))
        return 0
    do_check = argv[:1] == ["--check"]
    if do_check:
        argv = argv[1:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir, names = pathlib.Path(argv[0]), argv[1:] or list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        print(f"unknown families {unknown}; known: {', '.join(FAMILIES)}", file=sys.stderr)
        return 2
    paths = [(n, write(n, out_dir)) for n in names]
    for n, p in paths:
        print(f"{n}: {p}", file=sys.stderr)
    return 1 if do_check and check(paths) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
