#!/usr/bin/env python3
"""The Gemma 3 f32 reference (ref_ppl_gemma3.py, beside this file) against llama.cpp's
logits, and against variants of itself that each break one convention.

    ~/.cache/tuili/llamacpp-venv/bin/python scripts/reference/gemma3-vs-llamacpp.py MODEL.gguf [N]

Runs in the llama-cpp-python venv (llama-cpp-python 0.3.36 = llama.cpp 0c1e57098; it also has
numpy and gguf). Input: BOS then the first N - 1 tokens of /usr/share/common-licenses/GPL-3
(default N = 1024, so the last half of the positions lie beyond the 512-token sliding
window). llama.cpp evaluates them in one batch with its default settings (f16 KV cache) and
returns every position's logits; the reference computes every 4th position's. For each
variant the script prints max and mean |Δlogit| against llama.cpp, split at the window, and
how often the argmax agrees:

    reference         the model as ref_ppl_gemma3.py's docstring describes it
    no-swa            every layer global (no sliding window, global RoPE base everywhere)
    swa-base-1e6      local layers with the global RoPE base 1e6 instead of 10000
    norm-plus-one     norm weights used as 1 + w (the +1 applied twice)
    swa-window-513    a query at p also sees p - 512 (the window one wider)

Then both greedy continuations of "Once upon a time" (BOS first), 32 tokens.
Numpy keeps to 2 threads, llama.cpp to 2. About 1.5 minutes on 2 cores.

Results (gemma3-270m, docs/CORRECTNESS.md), max / mean |Δlogit|, argmax agreement:
    reference       < 512: 5.454 / 0.2012, 124/128   >= 512: 2.543 / 0.2001, 122/128
    no-swa          < 512: 24.632 / 4.4635, 48/128  >= 512: 31.135 / 5.2300, 28/128
    swa-base-1e6    < 512: 24.632 / 4.4635, 48/128  >= 512: 25.973 / 5.3710, 26/128
    norm-plus-one   < 512: 66.576 / 9.4767, 0/128   >= 512: 63.319 / 10.2550, 0/128
    swa-window-513  < 512: 5.454 / 0.2012, 124/128   >= 512: 2.531 / 0.2002, 122/128
    greedy: equal for 22 tokens; then the reference's top two are 0.216 apart and llama.cpp
    picks the other (" dolls" for " her friends").
"""

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "2")

import importlib.util  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
from llama_cpp import Llama  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
sys.dont_write_bytecode = True  # no __pycache__ in the repository
spec = importlib.util.spec_from_file_location("ref_ppl_gemma3", HERE / "ref_ppl_gemma3.py")
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)

GPL3 = "/usr/share/common-licenses/GPL-3"
STORY = [2, 14946, 3324, 496, 990]  # BOS + "Once upon a time"


def figures(a, b, rows, n_swa):
    out = []
    for label, sel in (("< window", rows < n_swa), (">= window", rows >= n_swa), ("all", rows >= 0)):
        if not sel.any():
            continue
        d = np.abs(a[sel] - b[sel])
        agree = int((a[sel].argmax(-1) == b[sel].argmax(-1)).sum())
        out.append(f"{label}: max {d.max():.3f} mean {d.mean():.4f} argmax {agree}/{int(sel.sum())}")
    return "; ".join(out)


def main():
    model = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    llm = Llama(model_path=model, n_ctx=n, n_batch=n, n_ubatch=n, logits_all=True,
                n_threads=2, n_threads_batch=2, verbose=False)
    text = open(GPL3, "rb").read()
    ids = llm.tokenize(text, add_bos=True, special=False)[:n]
    assert ids[0] == 2 and len(ids) == n
    llm.reset()
    llm.eval(ids)
    rows = np.arange(0, n, 4)
    theirs = np.array(llm.scores[:n], dtype=np.float32)[rows]

    m = ref.Gemma3(model)
    print(m.describe())
    norms = {k: w for k, w in m.W.items() if k.endswith("norm.weight")}
    swa0, base0 = list(m.is_swa), m.base_swa

    n_swa = m.n_swa

    def run(label):
        ours = m.forward(ids, rows=rows).astype(np.float32)
        print(f"{label:16s} {figures(ours, theirs, rows, n_swa)}", flush=True)
        return ours

    ours = run("reference")
    worst = np.abs(ours - theirs).max(-1)
    for i in np.argsort(-worst)[:4]:
        top = np.sort(theirs[i])[-2:]
        at = int(np.abs(ours[i] - theirs[i]).argmax())
        rank = int((theirs[i] > theirs[i][at]).sum())
        print(f"  position {rows[i]}: max |Δ| {worst[i]:.3f} at id {at} (llama.cpp {theirs[i][at]:.2f}, "
              f"reference {ours[i][at]:.2f}, rank {rank} in llama.cpp's), llama.cpp's top-2 margin "
              f"{top[1] - top[0]:.3f}, argmax llama.cpp {theirs[i].argmax()} reference {ours[i].argmax()}")
    m.is_swa = [False] * m.n_layer
    run("no-swa")
    m.is_swa = swa0
    m.base_swa = m.base_global
    run("swa-base-1e6")
    m.base_swa = base0
    for k, w in norms.items():
        m.W[k] = w + np.float32(1)
    run("norm-plus-one")
    m.W.update(norms)
    m.n_swa += 1
    run("swa-window-513")
    m.n_swa -= 1

    ours, text_ours, _, margins = ref.greedy(m, STORY, 32, 1)
    theirs_ids = []
    for tok in llm.generate(STORY, top_k=1, top_p=1.0, temp=0.0, reset=True):
        theirs_ids.append(int(tok))
        if len(theirs_ids) == 32:
            break
    same = next((i for i, (a, b) in enumerate(zip(ours, theirs_ids)) if a != b), len(ours))
    print(f"greedy reference: {ours}\n  {text_ours!r}")
    print(f"greedy llama.cpp: {theirs_ids}\n  {llm.detokenize(theirs_ids).decode(errors='replace')!r}")
    print(f"the two agree on the first {same} of 32 tokens", end="")
    print(f"; the reference's top-2 margin there: {margins[same]:.3f}" if same < 32 else "")


if __name__ == "__main__":
    main()
