"""tuili's and llama.cpp's logits, each against the independent f32 reference.

Usage:
    TUILI_LOGITS_DUMP=/tmp/logits cargo test --release -p tuili-cli --test llamacpp
    python scripts/reference/logits-vs-reference.py /tmp/logits/smol.gguf MODEL.gguf

Run it with the reference's venv (numpy and gguf; scripts/reference/pinned-ppl.sh makes one in
~/.cache/tuili/ref-venv). The forward pass is `../shared/reference/ref_ppl.py`'s (next to the
repository; executed up to its perplexity loop, never copied). For each prompt the test dumped,
prints max and mean |Δlogit| and argmax agreement for tuili vs llama.cpp, llama.cpp vs the
reference and tuili vs the reference, then the positions where tuili and llama.cpp pick
different tokens, with llama.cpp's and the reference's top-2 margins there.
Takes a minute or two per model on 2 cores.
"""

import json
import pathlib
import sys

import numpy as np

REF = pathlib.Path(__file__).resolve().parents[3] / "shared/reference/ref_ppl.py"


def reference_forward(model: str):
    """ref_ppl.py's `forward(ids) -> logits [T, vocab]` for `model`."""
    source = REF.read_text()
    marker = "tokens = json.load"
    assert marker in source, f"{REF} changed: no '{marker}'"
    sys.argv = [str(REF), model, "-", "0"]
    scope: dict = {}
    exec(compile(source[: source.index(marker)], str(REF), "exec"), scope)
    return scope["forward"]


def figures(a: np.ndarray, b: np.ndarray) -> str:
    d = np.abs(a - b)
    agree = int((a.argmax(-1) == b.argmax(-1)).sum())
    return f"max {d.max():.4f}  mean {d.mean():.5f}  argmax {agree}/{len(a)}"


def margin(row: np.ndarray) -> float:
    top = np.partition(row, -2)[-2:]
    return float(top[1] - top[0])


def main() -> None:
    dump, model = pathlib.Path(sys.argv[1]), sys.argv[2]
    forward = reference_forward(model)
    pairs = {"tuili vs llama.cpp": [], "llama.cpp vs ref": [], "tuili vs ref": []}
    ties = []
    for ids_path in sorted(dump.glob("*.ids.json")):
        label = ids_path.name[: -len(".ids.json")]
        ids = json.loads(ids_path.read_text())
        ref = forward(np.array(ids)).astype(np.float32)
        ours = np.fromfile(dump / f"{label}.tuili.f32", "<f4").reshape(len(ids), -1)
        theirs = np.fromfile(dump / f"{label}.llamacpp.f32", "<f4").reshape(len(ids), -1)
        pairs["tuili vs llama.cpp"].append((ours, theirs))
        pairs["llama.cpp vs ref"].append((theirs, ref))
        pairs["tuili vs ref"].append((ours, ref))
        for p in np.nonzero(ours.argmax(-1) != theirs.argmax(-1))[0]:
            ties.append(
                f"  {label} position {p}: llama.cpp margin {margin(theirs[p]):.3f}, "
                f"reference margin {margin(ref[p]):.3f}; the reference picks "
                f"{'tuili' if ours[p].argmax() == ref[p].argmax() else 'neither/llama.cpp'}'s token"
            )
    for name, ab in pairs.items():
        a = np.concatenate([x for x, _ in ab])
        b = np.concatenate([y for _, y in ab])
        print(f"{name:20} {figures(a, b)}")
    print("\n".join(ties) or "  tuili and llama.cpp pick the same token everywhere")


if __name__ == "__main__":
    main()
