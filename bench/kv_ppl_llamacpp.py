#!/usr/bin/env python3
"""Perplexity as `tuili perplexity` (and llama.cpp's `llama-perplexity`) computes it, run by
llama.cpp (the copy inside llama-cpp-python, see vs-llamacpp.sh) with a given KV cache
type, to compare tuili's KV types with llama.cpp's on the same file:

    ~/.cache/tuili/llamacpp-venv/bin/python bench/kv_ppl_llamacpp.py MODEL TEXT CTX TYPE_K TYPE_V

Chunks of CTX tokens of the whole text (BOS over each chunk's first token when the model
adds one), scored from CTX/2 on. Types: f32, f16, q8_0. Flash attention is on (llama.cpp needs it
for a quantized V; for every type, so that the runs compare); TUILI_NO_FA=1 turns it off.
"""
import math
import os
import sys

import llama_cpp
import numpy as np

GGML = {"f32": 0, "f16": 1, "q8_0": 8}
# Flash attention (needed for a quantized V); TUILI_NO_FA=1 turns it off.
FLASH = not os.environ.get("TUILI_NO_FA")


def main():
    model, text, n_ctx, tk, tv = sys.argv[1:6]
    n_ctx = int(n_ctx)
    llm = llama_cpp.Llama(
        model_path=model,
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_ubatch=n_ctx,
        logits_all=True,
        type_k=GGML[tk],
        type_v=GGML[tv],
        flash_attn=FLASH,
        verbose=False,
    )
    data = open(text, encoding="utf-8").read().encode("utf-8")
    tokens = llm.tokenize(data, add_bos=True, special=False)
    bos = llm.token_bos() if llm._model.add_bos_token() else None
    first = n_ctx // 2
    nll, count = 0.0, 0
    for i in range(len(tokens) // n_ctx):
        chunk = tokens[i * n_ctx:(i + 1) * n_ctx]
        ids = list(chunk)
        if bos is not None and bos >= 0:
            ids[0] = bos
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[:n_ctx], dtype=np.float64)
        for j in range(first, n_ctx - 1):
            row = logits[j]
            m = row.max()
            lse = m + math.log(np.exp(row - m).sum())
            nll += lse - row[chunk[j + 1]]
            count += 1
    print(f"{model} K {tk} V {tv}: PPL = {math.exp(nll / count):.4f} over {count} tokens")


if __name__ == "__main__":
    main()
