#!/usr/bin/env python3
"""llama.cpp's converter against `tuili convert`, tensor by tensor, on one HF directory.

Usage:
    python scripts/families/compare-hf-conversion.py LLAMA_CPP_SRC HF_DIR TUILI.gguf [OUTTYPE]

LLAMA_CPP_SRC is a llama.cpp source tree (convert_hf_to_gguf.py, conversion/, gguf-py/; the
one llama-cpp-python 0.3.36 vendors). Its converter runs on HF_DIR with `--outtype OUTTYPE`
(default f32; the checkpoint's own type, so that weights stay as tuili keeps them) into a
temporary file, and the script
prints, for every tensor of either file, whether name, type, shape and bytes are equal,
and the `{arch}.*` keys that differ. The tiny directories of scripts/families/tiny-hf.py
have no tokenizer, so the converter's `set_vocab` is skipped: the `tokenizer.*` keys are
not compared. Exit status 0 when every tensor and key matches (tuili's extra
`{arch}.vocab_size`, which llama.cpp's converter writes only with some vocabularies, aside).

Needs torch (the converter's), numpy and safetensors.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    src, hf_dir, ours = (pathlib.Path(a) for a in argv[:3])
    outtype = argv[3] if len(argv) == 4 else "f32"
    sys.path[:0] = [str(src), str(src / "gguf-py")]
    import gguf
    import numpy as np
    import json

    import convert_hf_to_gguf
    from conversion import get_model_class

    arch_name = json.loads((hf_dir / "config.json").read_text())["architectures"][0]
    get_model_class(arch_name).set_vocab = lambda self: None  # the tiny directories have no tokenizer
    out = pathlib.Path(tempfile.mkdtemp()) / "llamacpp.gguf"
    sys.argv = ["convert_hf_to_gguf.py", str(hf_dir), "--outtype", outtype, "--outfile", str(out)]
    convert_hf_to_gguf.main()

    theirs, mine = gguf.GGUFReader(str(out)), gguf.GGUFReader(str(ours))
    arch = mine.fields["general.architecture"].contents()

    def keys(r: gguf.GGUFReader) -> dict:
        return {k: f.contents() for k, f in r.fields.items() if k.startswith(arch + ".")}

    def tensors(r: gguf.GGUFReader) -> dict:
        return {t.name: t for t in r.tensors}

    ok = True
    k_theirs, k_mine = keys(theirs), keys(mine)
    for k in sorted(set(k_theirs) | set(k_mine)):
        a, b = k_theirs.get(k), k_mine.get(k)
        same = a == b or (isinstance(a, float) and isinstance(b, float) and np.float32(a) == np.float32(b))
        if not same:
            # tuili writes config.json's vocab_size for every family; llama.cpp's loader
            # takes it when present, else the token list's length.
            known = k == f"{arch}.vocab_size" and a is None
            ok = ok and known
            print(f"key {k}: llama.cpp {a!r}, tuili {b!r}" + (" (known: an extra key)" if known else ""))
    print(f"{len(k_theirs)} {arch}.* keys in llama.cpp's file, {len(k_mine)} in tuili's")
    t_theirs, t_mine = tensors(theirs), tensors(mine)
    same_count = 0
    for name in sorted(set(t_theirs) | set(t_mine)):
        a, b = t_theirs.get(name), t_mine.get(name)
        if a is None or b is None:
            ok = False
            print(f"tensor {name}: only in {'tuili' if a is None else 'llama.cpp'}'s file")
            continue
        what = []
        if a.tensor_type != b.tensor_type:
            what.append(f"type {a.tensor_type.name} vs {b.tensor_type.name}")
        if list(a.shape) != list(b.shape):
            what.append(f"shape {list(a.shape)} vs {list(b.shape)}")
        elif a.data.tobytes() != b.data.tobytes():
            what.append("bytes differ")
        if what:
            ok = False
            print(f"tensor {name}: " + ", ".join(what))
        else:
            same_count += 1
    print(f"{same_count} of {len(t_theirs)} llama.cpp tensors identical to tuili's "
          f"({len(t_mine)} in tuili's file): name, type, shape and bytes")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
