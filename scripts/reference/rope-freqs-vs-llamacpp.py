#!/usr/bin/env python3
"""Llama 3.x RoPE frequency factors (`rope_freqs.weight`) against llama.cpp.

Writes a copy of a `llama` GGUF with Llama 3.1's frequency factors added (computed as
llama.cpp's converter does for `rope_scaling.rope_type == "llama3"`: factor 8, low/high
frequency factors 1 and 4, original context 8192), then compares greedy continuations of
tuili (`tuili run --temp 0 -o json`) and llama.cpp (llama-cpp-python) on it, and on the
file without the factors. llama.cpp rounds activations to 8 bits, so on a real model the two
engines' greedy paths part after a few dozen tokens even without factors; a prompt is
decisive where the factors move llama.cpp's answer before that, and there tuili must follow
llama.cpp past the token the factors moved (an engine that ignored them would not).

Measured 2026-12-06 on SmolLM2-135M Q4_1 (48 tokens): "The three primary colors are":
the factors move the answer at token 30, tuili and llama.cpp agree on all 48 (30 without
the factors); "def fibonacci(n):": moved at 13, agree on 25 (13 without); "Once upon a
time": not decisive (the plain runs part at 32, the factors move it at 35).

usage: PY rope-freqs-vs-llamacpp.py MODEL.gguf TUILI_BIN [N_TOKENS]
  PY: a Python with `llama_cpp`, `gguf` and numpy (bench/vs-llamacpp.sh's venv plus
  `pip install gguf`).
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import gguf
import numpy as np
from llama_cpp import Llama

PROMPTS = ["Once upon a time", "The three primary colors are", "def fibonacci(n):"]


def llama3_factors(base, head_dim, factor=8.0, low=1.0, high=4.0, old_ctx=8192):
    out = []
    for i in range(0, head_dim, 2):
        freq = 1.0 / base ** (i / head_dim)
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def with_factors(src, dst):
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    assert arch == "llama", arch
    base = float(r.fields["llama.rope.freq_base"].contents())
    heads = int(r.fields["llama.attention.head_count"].contents())
    head_dim = int(r.fields["llama.embedding_length"].contents()) // heads
    factors = llama3_factors(base, head_dim)
    w = gguf.GGUFWriter(dst, arch)
    for f in r.fields.values():
        if f.name == "general.architecture" or f.name.startswith("GGUF."):
            continue
        t = f.types[0]
        sub = f.types[-1] if t == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(f.name, f.contents(), t, sub_type=sub)
    for t in r.tensors:
        w.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    w.add_tensor_info("rope_freqs.weight", factors.shape, factors.dtype, factors.nbytes,
                      gguf.GGMLQuantizationType.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for t in r.tensors:
        w.write_tensor_data(t.data)
    w.write_tensor_data(factors)
    w.close()
    return factors


def llamacpp_greedy(path, prompt, n):
    llm = Llama(model_path=path, n_ctx=512, n_threads=2, verbose=False)
    ids = llm.tokenize(prompt.encode(), add_bos=True, special=False)
    out = []
    for tok in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):
        if tok == llm.token_eos() or len(out) == n:
            break
        out.append(tok)
    return out[:n]


def tuili_greedy(tuili, path, prompt, n):
    r = subprocess.run([tuili, "run", "-m", path, "-p", prompt, "--temp", "0", "-n", str(n),
                        "-o", "json"], capture_output=True, text=True, check=True,
                       env={**os.environ, "TUILI_QUIET": "1"})
    return json.loads(r.stdout)["tokens"]


def main():
    model, tuili = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 48
    with tempfile.TemporaryDirectory() as d:
        scaled = os.path.join(d, "with-rope-freqs.gguf")
        factors = with_factors(model, scaled)
        print(f"factors: {len(factors)} pairs, from {factors.min():.3f} to {factors.max():.3f}")
        decisive = []
        for p in PROMPTS:
            a, b = tuili_greedy(tuili, scaled, p, n), llamacpp_greedy(scaled, p, n)
            plain = llamacpp_greedy(model, p, n)
            same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            moved = next((i for i, (x, y) in enumerate(zip(b, plain)) if x != y), None)
            t_plain = tuili_greedy(tuili, model, p, n)
            same_plain = next((i for i, (x, y) in enumerate(zip(t_plain, plain)) if x != y),
                              min(len(t_plain), len(plain)))
            print(f"{p!r}: tuili and llama.cpp agree on {same} of {len(b)} tokens with the "
                  f"factors ({same_plain} without); the factors move llama.cpp's answer at "
                  f"token {moved}")
            # Decisive where the factors move llama.cpp's answer before its 8-bit
            # activations make the plain runs part: an engine that ignored the factors
            # would leave llama.cpp's path there.
            if moved is not None and moved <= same_plain:
                decisive.append(same > moved)
        ok = bool(decisive) and all(decisive)
        print(f"{len(decisive)} decisive prompts; tuili follows llama.cpp past the point the "
              f"factors move it in {sum(decisive)}: {'PASS' if ok else 'FAIL'}")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
