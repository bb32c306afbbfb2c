#!/usr/bin/env python3
"""An independent f32 reference for Gemma 3 (`general.architecture = gemma3`) GGUF files.

A plain numpy forward pass: weights dequantized exactly by the `gguf` package, every
activation in f32. It follows the approach of the shared llama/qwen2 reference
(../shared/reference/ref_ppl.py; nothing is imported from it) and the math of llama.cpp
0c1e57098 (the copy inside llama-cpp-python 0.3.36): src/models/gemma3.cpp,
src/llama-model.cpp, src/llama-hparams.{h,cpp}, src/llama-graph.cpp. Slow and simple on
purpose: it is what fast code is measured against.

    ppl     MODEL TOKENS.json N_CTX [--chunks K]   perplexity as llama-perplexity computes it:
            chunks of N_CTX tokens, BOS over each chunk's first token when the model adds
            one, the second half of each chunk scored. TOKENS.json: the ids of the whole text
            with BOS (`tuili tokenize --ids -m MODEL -p "$(cat FILE)"`).
    greedy  MODEL PROMPT_IDS_JSON N OUT.json [--positions P]   greedy continuation of N
            tokens (with each step's top-2 margin), and the logits of the first P positions
            (top 40, a fixed set of ids, and summary statistics), dumped for the Rust
            implementation's tests. scripts/reference/gemma3-270m-greedy.json is
            `greedy gemma.gguf '[2, 14946, 3324, 496, 990]' 32 OUT.json` (BOS, "Once upon a time").

Options for checking a convention rather than measuring: --norm-shift S adds S to every
norm weight (S = 1 applies Gemma's `1 + w` a second time: the file already holds `1 + w`,
see below), --no-swa makes every layer global, --swa-base B overrides the local layers' RoPE
base.

The model, as llama.cpp computes it (each point checked in the source named):
- x = token_embd[ids] * sqrt(n_embd), the factor in f32 (gemma3.cpp: ggml_scale by
  sqrtf(n_embd)).
- per layer: h = rms_norm(x) * attn_norm; q, k, v = h Wq, h Wk, h Wv; q and k get a
  per-head RMS norm (attn_q_norm, attn_k_norm, over head_dim) before RoPE; RoPE in NEOX
  layout (halves of each head rotated; llama_model_rope_type: GEMMA3 -> NEOX) over all
  head_dim dimensions; q scaled by f_attention_scale = 1/sqrt(head_dim) (every size but
  27B, which uses 1/sqrt(n_embd/n_head)); softmax(q k^T + mask) v with no further scale;
  o = attn Wo; x += rms_norm(o) * post_attention_norm; h = rms_norm(x) * ffn_norm;
  f = (gelu_tanh(h Wgate) * (h Wup)) Wdown (LLM_FFN_GELU + LLM_FFN_PAR -> ggml_geglu_split:
  GELU of the gate, tanh approximation, times up); x += rms_norm(f) * post_ffw_norm.
- logits = rms_norm(x) * output_norm times token_embd^T (tied: no output.weight); a final
  tanh softcap only when `gemma3.final_logit_softcapping` is present (absent here).
- RMS norm: x / sqrt(mean(x^2) + eps), eps = gemma3.attention.layer_norm_rms_epsilon. The
  weights are used as stored: llama.cpp's converter (conversion/gemma.py, Gemma3Model
  .norm_shift) adds 1 to every tensor whose name ends in `norm.weight` (Gemma3RMSNorm's
  `x * (1 + w)`), q/k norms included, and gemma3.cpp multiplies by them unchanged.
- Sliding window: with `gemma3.attention.sliding_window` = n_swa > 0, layer il is local when
  il % 6 < 5 (load_swa_pattern(ml, 6) -> set_swa_pattern(6, dense_first = false)), unless
  the file has `gemma3.attention.sliding_window_pattern` (an array of per-layer flags, or a
  period). So layers 5, 11, 17 of 18 are global. A local layer masks key position p0 for
  query position p1 when p1 - p0 >= n_swa (is_masked_swa, LLAMA_SWA_TYPE_STANDARD): a query
  at p sees p - n_swa + 1 .. p, n_swa positions including itself.
- RoPE bases: local layers use `gemma3.rope.freq_base_swa`, or 10000 when the key is absent
  (llama_hparams' default rope_freq_base_train_swa; gemma3.cpp reads the key optionally),
  with freq_scale_swa = 1. Global layers use `gemma3.rope.freq_base` (1e6 here) and
  freq_scale = 1/`gemma3.rope.scaling.factor` (linear scaling; 1 when the key is absent, as
  here).

Numpy is limited to 2 threads unless OMP_NUM_THREADS / OPENBLAS_NUM_THREADS say otherwise.
"""

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "2")

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import gguf  # noqa: E402
import numpy as np  # noqa: E402
from gguf import GGUFReader  # noqa: E402
from gguf.quants import dequantize  # noqa: E402


class Gemma3:
    def __init__(self, path, norm_shift=0.0, no_swa=False, swa_base=None):
        r = GGUFReader(path)
        self.reader = r
        arch = self.field("general.architecture")
        assert arch == "gemma3", f"{path}: architecture {arch}, not gemma3"
        a = arch + "."
        self.n_layer = int(self.field(a + "block_count"))
        self.n_embd = int(self.field(a + "embedding_length"))
        self.n_head = int(self.field(a + "attention.head_count"))
        self.n_head_kv = int(self.field(a + "attention.head_count_kv"))
        self.head_dim = int(self.field(a + "attention.key_length", self.n_embd // self.n_head))
        assert int(self.field(a + "attention.value_length", self.head_dim)) == self.head_dim
        self.eps = float(self.field(a + "attention.layer_norm_rms_epsilon"))
        self.base_global = float(self.field(a + "rope.freq_base", 10000.0))
        scaling = self.field(a + "rope.scaling.type", "linear")
        assert scaling in ("linear", "none"), f"rope scaling {scaling} not implemented"
        factor = float(self.field(a + "rope.scaling.factor", self.field(a + "rope.scale_linear", 0.0)))
        self.scale_global = 1.0 if factor == 0.0 or scaling == "none" else 1.0 / factor
        self.base_swa = float(self.field(a + "rope.freq_base_swa", 10000.0))
        if swa_base is not None:
            self.base_swa = swa_base
        self.n_swa = int(self.field(a + "attention.sliding_window", 0))
        pattern = self.field(a + "attention.sliding_window_pattern", 6)
        if self.n_swa <= 0 or no_swa:
            self.is_swa = [False] * self.n_layer
        elif isinstance(pattern, list):
            self.is_swa = [bool(p) for p in pattern]
        else:
            n = int(pattern)
            self.is_swa = [n == 0 or il % n < n - 1 for il in range(self.n_layer)]
        self.softcap = float(self.field(a + "final_logit_softcapping", 0.0))
        # gemma3.cpp: 1/sqrt(n_embd / n_head) for the 27B (62 layers), else 1/sqrt(head_dim)
        d = self.n_embd / self.n_head if self.n_layer == 62 else self.head_dim
        self.attn_scale = np.float32(1.0 / np.sqrt(np.float32(d)))
        self.add_bos = bool(self.field("tokenizer.ggml.add_bos_token", True))
        self.bos = int(self.field("tokenizer.ggml.bos_token_id", 2))
        self.tokens = self.strings("tokenizer.ggml.tokens")

        self.W = {}
        for t in r.tensors:
            w = dequantize(t.data, t.tensor_type).astype(np.float32)
            shape = [int(x) for x in reversed(t.shape)]
            w = w.reshape(shape) if len(shape) > 1 else w.reshape(-1)
            if t.name.endswith("norm.weight") and norm_shift:
                w = w + np.float32(norm_shift)
            self.W[t.name] = w
        self.emb = self.W["token_embd.weight"]
        self.out = self.W.get("output.weight", self.emb)
        self.emb_scale = np.float32(np.sqrt(np.float32(self.n_embd)))

    def field(self, key, default=None):
        f = self.reader.fields.get(key)
        if f is None:
            return default
        t = f.types[0]
        if t == gguf.GGUFValueType.STRING:
            return bytes(f.parts[f.data[0]]).decode()
        if t == gguf.GGUFValueType.ARRAY:
            return [f.parts[i].tolist()[0] for i in f.data]
        return f.parts[f.data[0]].tolist()[0]

    def strings(self, key):
        f = self.reader.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def describe(self):
        kinds = "".join("L" if s else "G" for s in self.is_swa)
        return (
            f"n_layer {self.n_layer}, n_embd {self.n_embd}, heads {self.n_head}/{self.n_head_kv} x "
            f"{self.head_dim}, eps {self.eps:g}, n_swa {self.n_swa}, layers (L local, G global) "
            f"{kinds}, rope base global {self.base_global:g} (scale {self.scale_global:g}), "
            f"local {self.base_swa:g}, attn scale {float(self.attn_scale):.6g}, softcap "
            f"{self.softcap:g}, add_bos {self.add_bos} (bos {self.bos})"
        )

    def rms(self, x, w):
        # mean of squares in f64 (ggml sums in double), the rest in f32
        ms = (x.astype(np.float64) ** 2).mean(-1, keepdims=True)
        return (x / np.sqrt(ms + self.eps).astype(np.float32)) * w

    def rope(self, x, pos, base, scale):
        """NEOX layout: element i of a head pairs with i + head_dim/2. x: [T, heads, hd]."""
        hd = self.head_dim
        inv = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
        ang = (pos[:, None].astype(np.float64) * scale) * inv[None, :]
        c = np.cos(ang).astype(np.float32)[:, None, :]
        s = np.sin(ang).astype(np.float32)[:, None, :]
        a, b = x[..., : hd // 2], x[..., hd // 2 :]
        return np.concatenate([a * c - b * s, a * s + b * c], -1)

    @staticmethod
    def gelu_tanh(x):
        return np.float32(0.5) * x * (
            np.float32(1.0)
            + np.tanh(np.float32(0.7978845608028654) * x * (np.float32(1.0) + np.float32(0.044715) * x * x))
        )

    def forward(self, ids, rows=None):
        """Logits [len(rows), vocab] for positions `rows` (default: all) of `ids` at 0..T-1."""
        ids = np.asarray(ids)
        T = len(ids)
        pos = np.arange(T)
        H, KV, hd, D = self.n_head, self.n_head_kv, self.head_dim, self.n_embd
        x = self.emb[ids] * self.emb_scale
        diff = pos[:, None] - pos[None, :]  # query minus key position
        causal = np.where(diff >= 0, 0.0, -np.inf).astype(np.float32)
        local = np.where((diff >= 0) & (diff < self.n_swa), 0.0, -np.inf).astype(np.float32)
        for il in range(self.n_layer):
            p = f"blk.{il}."
            W = self.W
            swa = self.is_swa[il]
            base, scale = (self.base_swa, 1.0) if swa else (self.base_global, self.scale_global)
            h = self.rms(x, W[p + "attn_norm.weight"])
            q = (h @ W[p + "attn_q.weight"].T).reshape(T, H, hd)
            k = (h @ W[p + "attn_k.weight"].T).reshape(T, KV, hd)
            v = (h @ W[p + "attn_v.weight"].T).reshape(T, KV, hd)
            q = self.rms(q, W[p + "attn_q_norm.weight"])
            k = self.rms(k, W[p + "attn_k_norm.weight"])
            q = self.rope(q, pos, base, scale) * self.attn_scale
            k = self.rope(k, pos, base, scale)
            mask = local if swa else causal
            g = H // KV
            o = np.empty((T, H, hd), np.float32)
            for i in range(H):
                sc = q[:, i, :] @ k[:, i // g, :].T + mask
                sc = np.exp(sc - sc.max(-1, keepdims=True))
                sc /= sc.sum(-1, keepdims=True)
                o[:, i, :] = sc @ v[:, i // g, :]
            a = o.reshape(T, H * hd) @ W[p + "attn_output.weight"].T
            x = x + self.rms(a, W[p + "post_attention_norm.weight"])
            h = self.rms(x, W[p + "ffn_norm.weight"])
            f = self.gelu_tanh(h @ W[p + "ffn_gate.weight"].T) * (h @ W[p + "ffn_up.weight"].T)
            f = f @ W[p + "ffn_down.weight"].T
            x = x + self.rms(f, W[p + "post_ffw_norm.weight"])
        if rows is not None:
            x = x[rows]
        logits = self.rms(x, self.W["output_norm.weight"]) @ self.out.T
        if self.softcap:
            logits = np.tanh(logits / self.softcap) * self.softcap
        return logits

    def piece(self, tid):
        """The bytes token `tid` decodes to (specials shown)."""
        t = self.tokens[tid]
        if len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            return bytes([int(t[3:5], 16)])
        return t.replace("\u2581", " ").encode("utf-8")


def ppl(m, tokens, n_ctx, chunks=None):
    n_chunk = len(tokens) // n_ctx
    if chunks is not None:
        n_chunk = min(n_chunk, chunks)
    first = n_ctx // 2
    nll = nll2 = 0.0
    count = 0
    for i in range(n_chunk):
        ids = list(tokens[i * n_ctx : (i + 1) * n_ctx])
        if m.add_bos:
            ids[0] = m.bos
        lg = m.forward(ids, rows=slice(first, n_ctx - 1)).astype(np.float64)
        tgt = np.array(tokens[i * n_ctx + first + 1 : (i + 1) * n_ctx])
        mx = lg.max(-1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(lg - mx).sum(-1))
        v = lse - lg[np.arange(len(tgt)), tgt]
        nll += v.sum()
        nll2 += (v * v).sum()
        count += len(tgt)
        print(f"[{i + 1}]{np.exp(nll / count):.4f},", end="", flush=True)
    nll /= count
    nll2 = nll2 / count - nll * nll
    err = np.sqrt(nll2 / (count - 1)) * np.exp(nll)
    print(f"\nFinal estimate: PPL = {np.exp(nll):.4f} +/- {err:.5f}  ({n_chunk} chunks of {n_ctx}, {count} tokens scored)")


def greedy(m, prompt, n, positions):
    ids = list(prompt)
    margins = []
    for step in range(n):
        # every position's logits once (for the dump), then only the last one's
        lg = m.forward(ids, rows=None if step == 0 else slice(len(ids) - 1, len(ids)))
        if step == 0:
            first_logits = lg[:positions].copy()
        top2 = np.sort(lg[-1])[-2:]
        margins.append(float(top2[1] - top2[0]))
        ids.append(int(lg[-1].argmax()))
    out = ids[len(prompt) :]
    fixed = sorted(set(range(16)) | set(prompt) | set(out))
    pos = []
    for p, row in enumerate(first_logits):
        r64 = row.astype(np.float64)
        mx = r64.max()
        top = np.argsort(-row, kind="stable")[:40]
        pos.append(
            {
                "position": p,
                "input_id": int(prompt[p]),
                "top": [[int(t), float(row[t])] for t in top],
                "fixed": [[int(t), float(row[t])] for t in fixed],
                "max": float(mx),
                "mean": float(r64.mean()),
                "std": float(r64.std()),
                "logsumexp": float(mx + np.log(np.exp(r64 - mx).sum())),
            }
        )
    text = b"".join(m.piece(t) for t in out).decode("utf-8", errors="replace")
    return out, text, pos, margins


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("ppl")
    a.add_argument("model")
    a.add_argument("tokens")
    a.add_argument("n_ctx", type=int)
    a.add_argument("--chunks", type=int)
    b = sub.add_parser("greedy")
    b.add_argument("model")
    b.add_argument("prompt_ids", help="JSON list of ids, BOS included if the model adds one")
    b.add_argument("n", type=int)
    b.add_argument("out")
    b.add_argument("--positions", type=int, default=5)
    for s in (a, b):
        s.add_argument("--norm-shift", type=float, default=0.0)
        s.add_argument("--no-swa", action="store_true")
        s.add_argument("--swa-base", type=float)
    args = ap.parse_args()
    m = Gemma3(args.model, norm_shift=args.norm_shift, no_swa=args.no_swa, swa_base=args.swa_base)
    print(m.describe(), file=sys.stderr)
    if args.cmd == "ppl":
        ppl(m, json.load(open(args.tokens)), args.n_ctx, args.chunks)
    else:
        prompt = json.loads(args.prompt_ids)
        out, text, pos, margins = greedy(m, prompt, args.n, min(args.positions, len(prompt)))
        print(json.dumps(out))
        print(repr(text))
        res = {
            "model": os.path.basename(args.model),
            "source": "scripts/reference/ref_ppl_gemma3.py greedy (f32 numpy, weights dequantized by gguf "
            + importlib.metadata.version("gguf")
            + ", numpy "
            + np.__version__
            + ")",
            "config": m.describe(),
            "prompt_ids": prompt,
            "greedy_ids": out,
            "greedy_text": text,
            # top-1 minus top-2 logit at each step: a small one is a near tie that another
            # engine's rounding may decide the other way
            "greedy_margins": margins,
            "logits": pos,
        }
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(res, f, ensure_ascii=False, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
