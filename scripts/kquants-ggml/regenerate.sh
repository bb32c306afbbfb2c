#!/usr/bin/env bash
# Regenerates crates/tuili-backend/tests/data/quant/kquants-ggml.bin, the bytes that ggml's
# reference K-quant quantizers write for kquant_input() (tests/quant_fixtures.rs), and compares
# them with the committed file (`cmp`); with --write, replaces it instead.
#
# ggml comes from the llama-cpp-python 0.3.36 sdist on PyPI: its vendor/llama.cpp is
# ggml-org/llama.cpp@0c1e57098 (the sdist's CHANGELOG.md, "[0.3.36]"). harness.c holds a C
# port of kquant_input() and is linked with ggml/src/ggml-quants.c alone, compiled for plain
# x86-64 (no -march) with -ffp-contract=off.
#
# Result (gcc 12.2, Debian 12): identical to the committed file, which ggml at llama.cpp commit
# 01243c5 wrote. The bytes also stay the same with -march=native -ffp-contract=fast (FMA
# contraction) at -O2 and -O3 here; only -ffast-math changes them (70 bytes).
#
# Usage: scripts/kquants-ggml/regenerate.sh [--write]
# Environment:
#   TUILI_LLAMACPP_SRC  an unpacked llama-cpp-python-0.3.36 sdist; default: downloaded with pip
#                       into ~/.cache/tuili/llama-cpp-python-0.3.36 (outside the repository)
#   CC                  the C compiler; default cc
set -euo pipefail

VERSION=0.3.36
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
FIXTURE="$ROOT/crates/tuili-backend/tests/data/quant/kquants-ggml.bin"
SRC="${TUILI_LLAMACPP_SRC:-$HOME/.cache/tuili/llama-cpp-python-$VERSION}"

if [[ ! -f "$SRC/vendor/llama.cpp/ggml/src/ggml-quants.c" ]]; then
    dl="$(mktemp -d)"
    trap 'rm -rf "$dl"' EXIT
    # Only the sdist of llama-cpp-python itself is wanted (--no-binary for it alone); its
    # build tools come as wheels, for pip's metadata step. Nothing is built or installed.
    pip download -q --no-deps --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -d "$dl"
    mkdir -p "$SRC"
    tar -xzf "$dl/llama_cpp_python-$VERSION.tar.gz" -C "$SRC" --strip-components=1
fi
grep -m1 -A2 "^## \[$VERSION\]" "$SRC/CHANGELOG.md" | grep -o 'llama.cpp@[0-9a-f]*' >&2 || true

G="$SRC/vendor/llama.cpp/ggml"
out="$(mktemp -d)"
trap 'rm -rf "$out" ${dl:+"$dl"}' EXIT
"${CC:-cc}" -std=c11 -O2 -ffp-contract=off -w \
    -I"$G/include" -I"$G/src" -I"$G/src/ggml-cpu" \
    "$G/src/ggml-quants.c" "$HERE/harness.c" -lm -o "$out/harness"
"$out/harness" "$out/kquants-ggml.bin"

if [[ "${1:-}" == "--write" ]]; then
    cp "$out/kquants-ggml.bin" "$FIXTURE"
    echo "wrote $FIXTURE" >&2
else
    cmp "$out/kquants-ggml.bin" "$FIXTURE"
    echo "ggml writes the same bytes as $FIXTURE" >&2
fi
