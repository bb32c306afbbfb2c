#!/usr/bin/env bash
# Side-by-side CPU benchmark: tuili vs llama.cpp (the copy inside llama-cpp-python), same GGUF
# files, same definitions (pp512: one batch of 512 prompt tokens on a fresh context; tg128: 128
# single-token decodes after an empty context), same thread counts, engines alternated per
# repetition, one model at a time. Prints a table of tuili / llama.cpp ratios and the issue's
# targets. Not part of CI: the first run compiles llama.cpp (7+ minutes on 2 cores).
#
# Usage: bench/vs-llamacpp.sh [--install-only] [options of bench/vs_llamacpp.py]
#   e.g. bench/vs-llamacpp.sh -t 1,2 -r 3 --membw
#        bench/vs-llamacpp.sh -m /tmp/models/smol.gguf,/tmp/models/qwen.gguf --synthetic q8_0,f16
#   Options: -m A.gguf,B.gguf|names  -t 1,2  -r 3  -p 512  -n 128  --synthetic q8_0,q4_0,q4_k,f16
#            --synthetic-dir DIR  --membw  -o md|json  --quiet-wait SECONDS
# Environment:
#   TUILI_BENCH_VENV   where llama-cpp-python goes (outside the repository);
#                      default ~/.cache/tuili/llamacpp-venv
#   TUILI_BENCH_DIR    where synthetic models are written; default ~/.cache/tuili/bench
#   TUILI_BIN          a prebuilt tuili binary; default: cargo build --release -p tuili-cli
#   PYTHON             the interpreter that makes the venv; default python3
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36
GGUF_VERSION=0.19.0
SAFETENSORS_VERSION=0.8.0
TOKENIZERS_VERSION=0.23.3
VENV="${TUILI_BENCH_VENV:-$HOME/.cache/tuili/llamacpp-venv}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

# ggml's x86 build flags, enabled only for the features this CPU reports. GGML_NATIVE is off:
# llama.cpp's native build picks its AMX path on some CPUs that then die with SIGILL.
cmake_args() {
    local flags args="-DGGML_NATIVE=OFF"
    flags="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)"
    has() { [[ " $flags " == *" $1 "* ]]; }
    has avx && args+=" -DGGML_AVX=ON"
    has avx2 && args+=" -DGGML_AVX2=ON"
    has fma && args+=" -DGGML_FMA=ON"
    has f16c && args+=" -DGGML_F16C=ON"
    has bmi2 && args+=" -DGGML_BMI2=ON"
    has avx_vnni && args+=" -DGGML_AVX_VNNI=ON"
    if has avx512f; then
        args+=" -DGGML_AVX512=ON"
        has avx512vbmi && args+=" -DGGML_AVX512_VBMI=ON"
        has avx512_vnni && args+=" -DGGML_AVX512_VNNI=ON"
        has avx512_bf16 && args+=" -DGGML_AVX512_BF16=ON"
    fi
    echo "$args"
}

# gguf-py writes the tiny per-family models that crates/tuili-models/tests/families.rs
# compares with llama.cpp (scripts/families/tiny-gguf.py); numpy comes with llama-cpp-python.
# safetensors writes the tiny HF directories of crates/tuili-cli/tests/hf.rs
# (scripts/families/tiny-hf.py); tokenizers gives the reference ids of
# crates/tuili-tokenizer/tests/hf.rs.
install_gguf() {
    if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('gguf') != '$GGUF_VERSION')" 2>/dev/null; then
        nice -n 19 "$VENV/bin/pip" install --no-cache-dir "gguf==$GGUF_VERSION"
    fi
    if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('safetensors') != '$SAFETENSORS_VERSION')" 2>/dev/null; then
        nice -n 19 "$VENV/bin/pip" install --no-cache-dir "safetensors==$SAFETENSORS_VERSION"
    fi
    if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('tokenizers') != '$TOKENIZERS_VERSION')" 2>/dev/null; then
        nice -n 19 "$VENV/bin/pip" install --no-cache-dir "tokenizers==$TOKENIZERS_VERSION"
    fi
    # llama.cpp's OpenAI server, an upstream in tests/router: the package is built above,
    # so pip adds only its `server` extra's dependencies (never a prebuilt wheel).
    if ! "$VENV/bin/python" -c "import llama_cpp.server.app" 2>/dev/null; then
        nice -n 19 "$VENV/bin/pip" install --no-cache-dir --no-binary llama-cpp-python \
            "llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION"
    fi
}

install_llamacpp() {
    if [[ -x "$VENV/bin/python" ]] &&
        "$VENV/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_PYTHON_VERSION')" 2>/dev/null; then
        echo "llama-cpp-python $LLAMA_CPP_PYTHON_VERSION already in $VENV" >&2
        install_gguf
        return
    fi
    case "$VENV" in
        "$ROOT"/*) echo "TUILI_BENCH_VENV must be outside the repository, got $VENV" >&2; exit 2 ;;
    esac
    mkdir -p "$(dirname "$VENV")"
    "${PYTHON:-python3}" -m venv "$VENV"
    local args
    args="$(cmake_args)"
    echo "building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION into $VENV (several minutes)" >&2
    echo "CMAKE_ARGS=$args" >&2
    # --no-binary: compile llama.cpp here with the flags above, never a prebuilt wheel.
    # nice: the machine is shared; the build must not slow down everyone else's work.
    CMAKE_ARGS="$args" nice -n 19 "$VENV/bin/pip" install --no-cache-dir --no-binary llama-cpp-python \
        "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
    install_gguf
}

if [[ "${1:-}" == "--install-only" ]]; then
    install_llamacpp
    exit 0
fi

install_llamacpp

if [[ -z "${TUILI_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build --release -p tuili-cli)
    TUILI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tuili"
fi

exec "$VENV/bin/python" "$HERE/vs_llamacpp.py" --tuili "$TUILI_BIN" "$@"
