#!/usr/bin/env bash
# The Gemma-3-270M perplexity figures of docs/CORRECTNESS.md: the f32 numpy reference
# (scripts/reference/ref_ppl_gemma3.py) and llama.cpp (bench/kv_ppl_llamacpp.py: llama-cpp-python
# 0.3.36, llama.cpp 0c1e57098, computing llama-perplexity's figure from its logits), both on
# /usr/share/common-licenses/GPL-3, at n_ctx 512 (every chunk; the sliding window of 512 never
# masks there) and n_ctx 2048 (3 chunks, where it does).
#
# Tokens: `tuili tokenize --ids` of the whole file (BOS added, as the model's metadata says);
# the tokenizer tests check that these are llama.cpp's own ids
# (crates/tuili-tokenizer/tests/real_models.rs, gemma_gpl3_ids_match_llama_cpp).
#
# Results (numpy 2.4.6, gguf 0.19.0; llama.cpp on 1 thread, f16 KV cache):
#   reference n_ctx 512:  Final estimate: PPL = 13.8291 +/- 0.64442 (14 chunks; first 4: 15.0725)
#   llama.cpp n_ctx 512:  13.9062 (flash attention on, llama-perplexity's default on the CPU),
#                         13.9247 (off)
#   reference n_ctx 2048: Final estimate: PPL = 14.4418 +/- 0.72938 (3 chunks)
#   llama.cpp n_ctx 2048: 14.4818 (flash attention on)
#
# Usage: scripts/reference/gemma3-ppl.sh [MODEL.gguf]   (default $TUILI_TEST_MODELS_DIR/gemma.gguf)
#   About 12 minutes on 2 cores. Numpy and llama.cpp keep to 2 threads or fewer.
# Environment:
#   TUILI_REF_VENV   a venv with numpy and gguf (made when missing); default ~/.cache/tuili/ref-venv
#   TUILI_LLAMACPP_PYTHON  llama-cpp-python's interpreter (bench/vs-llamacpp.sh --install-only
#                    builds it); default ~/.cache/tuili/llamacpp-venv/bin/python
#   TUILI_BIN        a prebuilt tuili binary; default: cargo build --release -p tuili-cli
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TEXT=/usr/share/common-licenses/GPL-3
VENV="${TUILI_REF_VENV:-$HOME/.cache/tuili/ref-venv}"
LLAMACPP="${TUILI_LLAMACPP_PYTHON:-$HOME/.cache/tuili/llamacpp-venv/bin/python}"
MODEL="${1:-${TUILI_TEST_MODELS_DIR:-/work/test-models}/gemma.gguf}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-2}"

[[ -f "$TEXT" ]] || { echo "no $TEXT" >&2; exit 2; }
if ! "$VENV/bin/python" -c "import numpy, gguf" 2>/dev/null; then
    "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/pip" install -q numpy gguf
fi
if [[ -z "${TUILI_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build --release -p tuili-cli >&2)
    TUILI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tuili"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# The whole text with its final newline ($(cat) alone would drop it).
text="$(cat "$TEXT"; printf x)"
TUILI_QUIET=1 "$TUILI_BIN" tokenize -m "$MODEL" --ids -p "${text%x}" >"$tmp/tokens.json"

for n_ctx in 512 2048; do
    echo "== reference, n_ctx $n_ctx"
    "$VENV/bin/python" "$ROOT/scripts/reference/ref_ppl_gemma3.py" ppl "$MODEL" "$tmp/tokens.json" "$n_ctx"
    echo "== llama.cpp, n_ctx $n_ctx, flash attention on"
    "$LLAMACPP" "$ROOT/bench/kv_ppl_llamacpp.py" "$MODEL" "$TEXT" "$n_ctx" f16 f16 2>/dev/null
done
echo "== llama.cpp, n_ctx 512, flash attention off"
TUILI_NO_FA=1 "$LLAMACPP" "$ROOT/bench/kv_ppl_llamacpp.py" "$MODEL" "$TEXT" 512 f16 f16 2>/dev/null
