"""The logits of a tiny Hugging Face model computed from its own layout, as transformers'
modeling code defines each family, in numpy float64: an oracle for tuili's reading of HF
directories that shares nothing with the GGUF path (no Q/K permutation, Gemma norms as
`1 + w`, fused projections split here).

Usage: python tests/hf/reference.py MODEL_DIR TOKENS.json OUT.json

TOKENS.json is a list of token ids (one sequence); OUT.json gets {"logits": [[V floats], ...]},
one row per position. Covers the families of scripts/families/tiny-hf.py (llama, qwen2,
qwen3, qwen3moe, gemma2, gemma3, phi3 with and without partial RoPE, granite, olmo2, smollm3,
mistral3, starcoder2, deci). Needs numpy and safetensors
(F32 and F16 files; BF16 ones are not read here).
"""

from __future__ import annotations

import json
import math
import pathlib
import sys

import numpy as np
from safetensors.numpy import load_file


def load(d: pathlib.Path) -> dict[str, np.ndarray]:
    index = d / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    w: dict[str, np.ndarray] = {}
    for f in files:
        w.update({k: v.astype(np.float64) for k, v in load_file(str(d / f)).items()})
    return w


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    m = x.mean(-1, keepdims=True)
    return (x - m) / np.sqrt(((x - m) ** 2).mean(-1, keepdims=True) + eps) * w + b


def rms(x: np.ndarray, w: np.ndarray, eps: float, gemma: bool = False) -> np.ndarray:
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y * (1.0 + w) if gemma else y * w


def yarn(hd: int, base: float, p: dict) -> tuple[np.ndarray, float]:
    """transformers' `_compute_yarn_parameters`: inverse frequencies and attention factor."""
    factor = p["factor"]
    orig = p["original_max_position_embeddings"]

    def get_mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    att = p.get("attention_factor")
    if att is None:
        if p.get("mscale") and p.get("mscale_all_dim"):
            att = get_mscale(factor, p["mscale"]) / get_mscale(factor, p["mscale_all_dim"])
        else:
            att = get_mscale(factor)

    def corr(rot):
        return hd * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(corr(p.get("beta_fast", 32.0))), 0)
    high = min(math.ceil(corr(p.get("beta_slow", 1.0))), hd - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(hd // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    pos_freqs = base ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    extra = 1 - ramp
    inv = (1.0 / (factor * pos_freqs)) * (1 - extra) + (1.0 / pos_freqs) * extra
    return inv, att


def rope(x: np.ndarray, pos: np.ndarray, base: float, scaling: dict | None = None,
         rot: int | None = None) -> np.ndarray:
    """transformers' rotate_half RoPE: x [T, heads, hd]; YaRN when `scaling` says so; over
    the first `rot` dimensions only when given (partial rotary embeddings)."""
    if rot is not None and rot < x.shape[-1]:
        return np.concatenate([rope(x[..., :rot], pos, base, scaling), x[..., rot:]], axis=-1)
    hd = x.shape[-1]
    inv, att = 1.0 / base ** (np.arange(0, hd, 2, dtype=np.float64) / hd), 1.0
    if scaling and scaling.get("rope_type") == "yarn":
        inv, att = yarn(hd, base, scaling)
    f = np.outer(pos, inv)
    emb = np.concatenate([f, f], axis=-1)[:, None, :]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * np.cos(emb) * att + np.concatenate([-x2, x1], axis=-1) * np.sin(emb) * att


def attention(q, k, v, scale: float, window: int | None, softcap: float | None = None) -> np.ndarray:
    t, nh, hd = q.shape
    rep = nh // k.shape[1]
    k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    s = np.einsum("ihd,jhd->hij", q, k) * scale
    if softcap:
        s = softcap * np.tanh(s / softcap)
    i, j = np.arange(t)[:, None], np.arange(t)[None, :]
    mask = j > i
    if window is not None:
        mask |= (i - j) >= window
    s = np.where(mask[None], -np.inf, s)
    s = np.exp(s - s.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    return np.einsum("hij,jhd->ihd", s, v).reshape(t, nh * hd)


def silu(x):
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def deci_forward(c: dict, w: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """DeciLM (transformers' `modeling_decilm`): per block, attention with its own K/V heads,
    none (`no_op`), or one linear map (`replace_with_linear`); then the SwiGLU block."""
    nh, eps, dim = c["num_attention_heads"], c["rms_norm_eps"], c["hidden_size"]
    hd = c.get("head_dim") or dim // nh
    t = len(ids)
    pos = np.arange(t, dtype=np.float64)
    x = w["model.embed_tokens.weight"][ids]
    for i, b in enumerate(c["block_configs"]):
        p, att = f"model.layers.{i}.", b["attention"]
        g = lambda n: w[p + n]  # noqa: E731
        if att["n_heads_in_group"] is not None:
            h = rms(x, g("input_layernorm.weight"), eps)
            nkv = nh // att["n_heads_in_group"]
            q, k, v = (h @ g(f"self_attn.{n}_proj.weight").T for n in "qkv")
            q, k, v = q.reshape(t, nh, hd), k.reshape(t, nkv, hd), v.reshape(t, nkv, hd)
            q, k = rope(q, pos, c["rope_theta"]), rope(k, pos, c["rope_theta"])
            x = x + attention(q, k, v, hd ** -0.5, None) @ g("self_attn.o_proj.weight").T
        elif att["replace_with_linear"]:
            x = x + rms(x, g("input_layernorm.weight"), eps) @ g("self_attn.linear_attn.weight").T
        h = rms(x, g("post_attention_layernorm.weight"), eps)
        x = x + (silu(h @ g("mlp.gate_proj.weight").T) * (h @ g("mlp.up_proj.weight").T)) @ g("mlp.down_proj.weight").T
    x = rms(x, w["model.norm.weight"], eps)
    return x @ w["lm_head.weight"].T


def forward(d: pathlib.Path, ids: list[int]) -> np.ndarray:
    c = json.loads((d / "config.json").read_text())
    w = load(d)
    arch = c["architectures"][0]
    if arch == "DeciLMForCausalLM":
        return deci_forward(c, w, ids)
    gemma2, starcoder = arch.startswith("Gemma2"), arch.startswith("Starcoder2")
    gemma = arch.startswith("Gemma3") or gemma2
    olmo, phi, granite = arch.startswith("Olmo2"), arch.startswith("Phi3"), arch.startswith("Granite")
    nh, nkv, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    eps = c["norm_epsilon"] if starcoder else c["rms_norm_eps"]
    rot = int(hd * c.get("partial_rotary_factor", 1.0))
    # StarCoder2's LayerNorms (weight and bias) where the others have RMSNorms.
    norm = (lambda x, n: layer_norm(x, w[n + ".weight"], w[n + ".bias"], eps)) if starcoder else (  # noqa: E731
        lambda x, n: rms(x, w[n + ".weight"], eps, gemma))
    t = len(ids)
    pos = np.arange(t, dtype=np.float64)
    x = w["model.embed_tokens.weight"][ids]
    if gemma:
        x = x * math.sqrt(c["hidden_size"])
    if granite:
        x = x * c["embedding_multiplier"]
    res_mul = c.get("residual_multiplier", 1.0)
    scale = c["query_pre_attn_scalar"] ** -0.5 if gemma else c.get("attention_multiplier", hd ** -0.5)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        g = lambda n: w[p + n]  # noqa: E731
        h = x if olmo else norm(x, p + "input_layernorm")
        if phi:
            qkv = h @ g("self_attn.qkv_proj.weight").T
            q, k, v = np.split(qkv, [nh * hd, nh * hd + nkv * hd], axis=-1)
        else:
            q, k, v = (h @ g(f"self_attn.{n}_proj.weight").T for n in "qkv")
            if p + "self_attn.q_proj.bias" in w:
                q, k, v = q + g("self_attn.q_proj.bias"), k + g("self_attn.k_proj.bias"), v + g("self_attn.v_proj.bias")
        if olmo:  # over the whole projection, before the split into heads
            q, k = rms(q, g("self_attn.q_norm.weight"), eps), rms(k, g("self_attn.k_norm.weight"), eps)
        q, k, v = q.reshape(t, nh, hd), k.reshape(t, nkv, hd), v.reshape(t, nkv, hd)
        if p + "self_attn.q_norm.weight" in w and not olmo:
            q, k = rms(q, g("self_attn.q_norm.weight"), eps, gemma), rms(k, g("self_attn.k_norm.weight"), eps, gemma)
        rp = c.get("rope_parameters")
        window, base = None, c.get("rope_theta") or rp["rope_theta"]
        if gemma2 and i % 2 == 0:  # transformers' default layer_types: sliding, full, ...
            window = c["sliding_window"]
        elif gemma and not gemma2 and c["layer_types"][i] == "sliding_attention":
            window, base = c["sliding_window"], c["rope_local_base_freq"]
        if c.get("no_rope_layers", [1] * (i + 1))[i]:
            q, k = rope(q, pos, base, rp, rot), rope(k, pos, base, rp, rot)
        if rp and "llama_4_scaling_beta" in rp:  # Ministral 3's attention temperature
            orig = rp["original_max_position_embeddings"]
            q = q * (1 + rp["llama_4_scaling_beta"] * np.log(1 + np.floor(pos / orig)))[:, None, None]
        a = attention(q, k, v, scale, window, c.get("attn_logit_softcapping")) @ g("self_attn.o_proj.weight").T
        if starcoder:
            a = a + g("self_attn.o_proj.bias")
        if gemma:
            a = rms(a, g("post_attention_layernorm.weight"), eps, True)
        if olmo:
            a = rms(a, g("post_attention_layernorm.weight"), eps)
        x = x + a * res_mul
        if olmo:
            h = x
        elif gemma:
            h = rms(x, g("pre_feedforward_layernorm.weight"), eps, True)
        else:
            h = norm(x, p + "post_attention_layernorm")
        if p + "mlp.gate.weight" in w:  # Qwen3-MoE: softmax router, top-k renormalised
            logits = h @ g("mlp.gate.weight").T
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            m = np.zeros_like(h)
            for r in range(t):
                top = np.argsort(-probs[r], kind="stable")[: c["num_experts_per_tok"]]
                wt = probs[r, top] / probs[r, top].sum()
                for e, we in zip(top, wt):
                    ep = f"mlp.experts.{e}."
                    y = silu(h[r] @ g(ep + "gate_proj.weight").T) * (h[r] @ g(ep + "up_proj.weight").T)
                    m[r] += we * (y @ g(ep + "down_proj.weight").T)
        elif starcoder:
            m = gelu_tanh(h @ g("mlp.c_fc.weight").T + g("mlp.c_fc.bias")) @ g("mlp.c_proj.weight").T
            m = m + g("mlp.c_proj.bias")
        else:
            if phi:
                gate, up = np.split(h @ g("mlp.gate_up_proj.weight").T, 2, axis=-1)
            else:
                gate, up = h @ g("mlp.gate_proj.weight").T, h @ g("mlp.up_proj.weight").T
            m = ((gelu_tanh(gate) if gemma else silu(gate)) * up) @ g("mlp.down_proj.weight").T
        if gemma:
            m = rms(m, g("post_feedforward_layernorm.weight"), eps, True)
        if olmo:
            m = rms(m, g("post_feedforward_layernorm.weight"), eps)
        x = x + m * res_mul
    x = norm(x, "model.norm")
    out = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]
    logits = x @ out.T
    if c.get("final_logit_softcapping"):
        cap = c["final_logit_softcapping"]
        logits = cap * np.tanh(logits / cap)
    return logits / c["logits_scaling"] if granite else logits


if __name__ == "__main__":
    d, toks, out = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    logits = forward(d, json.loads(pathlib.Path(toks).read_text()))
    pathlib.Path(out).write_text(json.dumps({"logits": logits.astype(np.float32).tolist()}))
