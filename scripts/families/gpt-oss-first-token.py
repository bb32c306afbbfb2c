#!/usr/bin/env python3
"""gpt-oss's logits for one token at position 0, in float64 numpy, from a GGUF file.

Usage: python scripts/families/gpt-oss-first-token.py FILE.gguf TOKEN [--q8]

At position 0 attention sees one key, so RoPE reduces to YaRN's cos/sin factor and the
softmax to the key against the head's sink: this checks the layer math (biases, sinks,
the biased router with a softmax over its top k, the clamped SwiGLU, the experts' biases)
without a KV cache. Prints the logits as a JSON list.

`--q8` rounds the experts' inputs to Q8_0 blocks (scale max|x|/127 stored as f16, values
rounded) the way llama.cpp's CPU does before MXFP4 products. On the tiny gpt-oss file of
`tiny-gguf.py` this takes the difference to llama.cpp's first logits from 0.51 to 8.7e-6
(largest logit 54): the gap between tuili (16-bit activations) and llama.cpp on MXFP4
experts is llama.cpp's 8-bit rounding, not the layer math.
"""
import json
import math
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

ALPHA, LIMIT = 1.702, 7.0


def q8_0(x: np.ndarray) -> np.ndarray:
    b = x.reshape(-1, 32)
    d = np.abs(b).max(axis=1, keepdims=True) / 127.0
    q = np.round(np.divide(b, d, out=np.zeros_like(b), where=d > 0))
    return (q * d.astype(np.float16).astype(np.float64)).reshape(-1)


def main(path: str, token: int, q8: bool) -> list[float]:
    r = GGUFReader(path)
    t = {x.name: dequantize(np.asarray(x.data), x.tensor_type).astype(np.float64)
         .reshape([int(d) for d in reversed(list(x.shape))]) for x in r.tensors}

    def key(name: str):
        f = r.fields[f"gpt-oss.{name}"]
        return f.parts[f.data[0]].tolist()[0]

    n_layer, n_head, n_kv = key("block_count"), key("attention.head_count"), key("attention.head_count_kv")
    eps, hd, top_k = key("attention.layer_norm_rms_epsilon"), key("attention.key_length"), key("expert_used_count")
    mscale = 0.1 * math.log(key("rope.scaling.factor")) + 1.0  # YaRN's cos/sin factor
    acts = q8_0 if q8 else (lambda v: v)

    def rms(v, w):
        return v / np.sqrt(np.mean(v * v) + eps) * w

    x = t["token_embd.weight"][token].copy()
    for i in range(n_layer):
        b = lambda s: t[f"blk.{i}.{s}"]  # noqa: E731
        h = rms(x, b("attn_norm.weight"))
        q = (b("attn_q.weight") @ h + b("attn_q.bias")).reshape(n_head, hd) * mscale
        k = (b("attn_k.weight") @ h + b("attn_k.bias")).reshape(n_kv, hd) * mscale
        v = (b("attn_v.weight") @ h + b("attn_v.bias")).reshape(n_kv, hd)
        sinks, group = b("attn_sinks.weight"), n_head // n_kv
        out = np.zeros((n_head, hd))
        for head in range(n_head):
            s = q[head] @ k[head // group] / math.sqrt(hd)
            m = max(s, sinks[head])
            out[head] = math.exp(s - m) / (math.exp(s - m) + math.exp(sinks[head] - m)) * v[head // group]
        x = x + b("attn_output.weight") @ out.reshape(-1) + b("attn_output.bias")
        h = rms(x, b("post_attention_norm.weight"))
        logits = b("ffn_gate_inp.weight") @ h + b("ffn_gate_inp.bias")
        chosen = np.argsort(-logits, kind="stable")[:top_k]
        w = np.exp(logits[chosen] - logits[chosen].max())
        w /= w.sum()
        y = np.zeros_like(x)
        for e, we in zip(chosen, w):
            gate = np.minimum(b("ffn_gate_exps.weight")[e] @ acts(h) + b("ffn_gate_exps.bias")[e], LIMIT)
            up = np.clip(b("ffn_up_exps.weight")[e] @ acts(h) + b("ffn_up_exps.bias")[e], -LIMIT, LIMIT)
            a = gate / (1 + np.exp(-ALPHA * gate)) * (up + 1)
            y += we * (b("ffn_down_exps.weight")[e] @ acts(a) + b("ffn_down_exps.bias")[e])
        x = x + y
    return (t["output.weight"] @ rms(x, t["output_norm.weight"])).tolist()


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), "--q8" in sys.argv[3:])))
