#!/usr/bin/env python3
"""Quantize a GGUF with llama.cpp's own `llama_model_quantize` (the engine of
`llama-quantize`), reached through llama-cpp-python's bindings, which ship no
`llama-quantize` binary.

Usage: llamacpp_quantize.py IN.gguf OUT.gguf FTYPE [--allow-requantize] [--threads N]
FTYPE is llama.cpp's name (Q4_K_M, Q8_0, F16, ...). Prints the seconds it took.
"""

import argparse
import sys
import time

import llama_cpp

# llama.h's LLAMA_FTYPE_* values of the types tuili writes.
FTYPES = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9,
    "Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15,
    "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18, "Q2_K_S": 21, "BF16": 32,
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("ftype", choices=sorted(FTYPES))
    ap.add_argument("--allow-requantize", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    llama_cpp.llama_backend_init()
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = FTYPES[a.ftype]
    p.nthread = a.threads
    p.allow_requantize = a.allow_requantize
    t0 = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(a.input.encode(), a.output.encode(), p)
    secs = time.perf_counter() - t0
    if rc != 0:
        print(f"llama_model_quantize failed ({rc})", file=sys.stderr)
        return 1
    print(f"{secs:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
