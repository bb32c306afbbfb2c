"""llama.cpp's logits for given token ids, through llama-cpp-python.

Usage: python logits.py MODEL.gguf PROMPTS.json OUT_DIR

PROMPTS.json is a JSON list of prompts, each a list of token ids, evaluated exactly as given
(no BOS or template is added here), each on a fresh context of n_ctx = its length. For prompt i
the logits of every position go to OUT_DIR/i.f32: raw little-endian f32, row-major
[n_tokens, n_vocab]. llama.cpp runs with its defaults (f16 KV cache, no flash attention) on 2
threads. Prints n_vocab.

The interpreter is the venv that `bash bench/vs-llamacpp.sh --install-only` builds (llama.cpp
compiled from source for this CPU); crates/tuili-cli/tests/llamacpp.rs calls this script.
"""

import json
import pathlib
import sys

import numpy as np
from llama_cpp import Llama


def main() -> None:
    model, prompts_path, out_dir = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
    prompts = json.loads(pathlib.Path(prompts_path).read_text())
    n_ctx = max(len(p) for p in prompts)
    llm = Llama(
        model_path=model,
        n_ctx=n_ctx,
        n_batch=n_ctx,
        logits_all=True,
        n_threads=2,
        verbose=False,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, ids in enumerate(prompts):
        llm.reset()  # eval() then drops every cached position: a fresh context
        llm.eval(ids)  # one batch: n_batch = n_ctx
        # scores: (n_ctx, n_vocab); the first len(ids) rows are this prompt's.
        logits = np.ascontiguousarray(llm.scores[: len(ids)], dtype="<f4")
        logits.tofile(out_dir / f"{i}.f32")
    print(llm.n_vocab())


if __name__ == "__main__":
    main()
