"""llama.cpp's logits and greedy continuations on a tiny model, through llama-cpp-python.

Usage: python families.py MODEL.gguf OUT.json [PROMPTS.json]

Runs llama.cpp on MODEL.gguf (one of scripts/families/tiny-gguf.py's files) and writes
OUT.json:

    {"model": "...", "n_vocab": V, "n_gen": 48, "llama_cpp_python": "0.3.36",
     "prompts": [{"tokens": [...],            # the prompt's token ids
                  "logits": [[V floats], ...],  # one row per prompt position
                  "generated": [48 ids],        # greedy continuation
                  "decode_logits": [[V floats], ...],  # 47 rows: after each of
                                                # generated[0..47], one token at a time
                  "min_greedy_margin": m,       # least top-1 - top-2 over the 48 picks
                  "min_prompt_margin": m}, ...]}

The prompts are PROMPTS.json (a list of lists of token ids) when given, else three prompts
of 5, 12 and 20 token ids drawn with a fixed seed below n_vocab: with 48 generated tokens
every sequence but the first outgrows an 8-position sliding window by far.

Each prompt runs on a fresh context: the prompt as one batch (logits for every position),
then the greedy tokens one at a time (each pick is the first largest logit). llama.cpp runs
as the comparison needs it: K and V cached as f32, flash attention off, 2 threads, the
file's own RoPE/YaRN parameters (llama-cpp-python otherwise overrides YaRN's beta and
attention factor with fixed values; -1 means "the model's", as in llama-cli). Floats are
written as the exact f32 values (JSON numbers of their double value).

The interpreter is the venv that `bash bench/vs-llamacpp.sh --install-only` builds;
crates/tuili-models/tests/families.rs calls this script.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import numpy as np

N_GEN = 48
PROMPT_LENGTHS = (5, 12, 20)
PROMPT_SEED = 20240611
GGML_TYPE_F32 = 0


def default_prompts(n_vocab: int) -> list[list[int]]:
    rng = np.random.default_rng(PROMPT_SEED)
    return [rng.integers(0, n_vocab, size=n).tolist() for n in PROMPT_LENGTHS]


def margin(row: np.ndarray) -> float:
    top = np.partition(row, -2)[-2:]
    return float(top[1] - top[0])


def run(model: str, prompts: list[list[int]] | None = None) -> dict:
    from llama_cpp import Llama, __version__

    n_ctx = 256
    llm = Llama(
        model_path=model,
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_ubatch=n_ctx,
        n_threads=2,
        n_threads_batch=2,
        logits_all=True,
        type_k=GGML_TYPE_F32,
        type_v=GGML_TYPE_F32,
        flash_attn=False,
        yarn_attn_factor=-1.0,
        yarn_beta_fast=-1.0,
        yarn_beta_slow=-1.0,
        verbose=False,
    )
    n_vocab = llm.n_vocab()
    if prompts is None:
        prompts = default_prompts(n_vocab)
    out = []
    for ids in prompts:
        assert len(ids) + N_GEN <= n_ctx
        llm.reset()  # eval() then drops every cached position: a fresh context
        llm.eval(ids)  # one batch (n_batch = n_ctx)
        logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
        row = logits[-1]
        generated, decode_logits, margins = [], [], []
        for step in range(N_GEN):
            generated.append(int(np.argmax(row)))
            margins.append(margin(row))
            if step + 1 == N_GEN:
                break
            llm.eval([generated[-1]])
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            decode_logits.append(row)
        out.append(
            {
                "tokens": [int(t) for t in ids],
                "logits": logits.astype(np.float64).tolist(),
                "generated": generated,
                "decode_logits": np.array(decode_logits, dtype=np.float64).tolist(),
                "min_greedy_margin": min(margins),
                "min_prompt_margin": min(margin(r) for r in logits),
            }
        )
    return {
        "model": model,
        "n_vocab": n_vocab,
        "n_gen": N_GEN,
        "llama_cpp_python": __version__,
        "prompts": out,
    }


def main() -> None:
    if len(sys.argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    model, out_path = sys.argv[1], pathlib.Path(sys.argv[2])
    prompts = json.loads(pathlib.Path(sys.argv[3]).read_text()) if len(sys.argv) == 4 else None
    result = run(model, prompts)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")  # whole files only
    tmp.write_text(json.dumps(result, separators=(",", ":")))
    tmp.replace(out_path)
    print(result["n_vocab"])


if __name__ == "__main__":
    main()
