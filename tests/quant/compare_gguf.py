#!/usr/bin/env python3
"""Compare two GGUF files tensor by tensor: the same names, shapes, types and bytes.

Usage: compare_gguf.py A.gguf B.gguf
Prints one JSON object: tensors, same_type, same_bytes, and the first differences.
"""

import json
import sys

import numpy as np
from gguf import GGUFReader


def tensors(path):
    r = GGUFReader(path)
    return {t.name: t for t in r.tensors}


def main() -> int:
    a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
    out = {"tensors": len(a), "only_in_a": sorted(set(a) - set(b)),
           "only_in_b": sorted(set(b) - set(a)), "same_type": 0, "same_bytes": 0,
           "type_diffs": [], "byte_diffs": []}
    for name in sorted(set(a) & set(b)):
        ta, tb = a[name], b[name]
        if ta.tensor_type != tb.tensor_type or list(ta.shape) != list(tb.shape):
            out["type_diffs"].append([name, ta.tensor_type.name, tb.tensor_type.name])
            continue
        out["same_type"] += 1
        da = np.asarray(ta.data).view(np.uint8).reshape(-1)
        db = np.asarray(tb.data).view(np.uint8).reshape(-1)
        if da.shape == db.shape and np.array_equal(da, db):
            out["same_bytes"] += 1
        else:
            n = int((da != db).sum()) if da.shape == db.shape else -1
            out["byte_diffs"].append([name, ta.tensor_type.name, n, int(da.size)])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
