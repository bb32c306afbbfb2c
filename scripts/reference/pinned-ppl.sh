#!/usr/bin/env bash
# Where the perplexities pinned in crates/tuili-cli/tests/cli.rs
# (`perplexity_matches_the_f32_reference`) come from: the independent f32 numpy reference
# `ref_ppl.py` of the shared reference (../shared/reference/, next to the repository; read, never
# copied), run on the first 4 chunks of n_ctx 512 tokens of /usr/share/common-licenses/GPL-3, the
# tokens being what `tuili tokenize --ids` gives for the file's text (special tokens added as the
# model's metadata says; neither model adds a BOS).
#
# Results (gguf 0.19.0, numpy 2.4.6, Python 3.11):
#   smol.gguf (SmolLM2-135M-Instruct Q4_1)       Final estimate: PPL = 18.1994 +/- 1.54000
#   qwen.gguf (Qwen2.5-Coder-0.5B, mixed quants)  Final estimate: PPL = 6.2022 +/- 0.42488
#
# Usage: scripts/reference/pinned-ppl.sh [MODEL.gguf ...]
#   default: smol.gguf and qwen.gguf of $TUILI_TEST_MODELS_DIR (default /work/test-models).
#   Slow on purpose (plain numpy, f32): about 2 minutes for both models on 2 cores.
# Environment:
#   TUILI_REF_VENV   a venv with numpy and gguf, made when missing (outside the repository);
#                    default ~/.cache/tuili/ref-venv
#   TUILI_BIN        a prebuilt tuili binary; default: cargo build --release -p tuili-cli
#   PYTHON           the interpreter that makes the venv; default python3
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
REF="$ROOT/../shared/reference/ref_ppl.py"
TEXT=/usr/share/common-licenses/GPL-3
N_CTX=512
CHUNKS=4
VENV="${TUILI_REF_VENV:-$HOME/.cache/tuili/ref-venv}"
MODELS_DIR="${TUILI_TEST_MODELS_DIR:-/work/test-models}"

[[ -f "$REF" ]] || { echo "no reference at $REF" >&2; exit 2; }
[[ -f "$TEXT" ]] || { echo "no $TEXT" >&2; exit 2; }
if ! "$VENV/bin/python" -c "import numpy, gguf" 2>/dev/null; then
    "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/pip" install -q numpy gguf
fi
if [[ -z "${TUILI_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build --release -p tuili-cli >&2)
    TUILI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tuili"
fi

models=("$@")
[[ ${#models[@]} -gt 0 ]] || models=("$MODELS_DIR/smol.gguf" "$MODELS_DIR/qwen.gguf")

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for model in "${models[@]}"; do
    # The whole text, as `tuili perplexity -f` reads it: $(cat) would drop the final newline,
    # which lies far beyond the first 4 x 512 tokens anyway.
    TUILI_QUIET=1 "$TUILI_BIN" tokenize -m "$model" --ids -p "$(cat "$TEXT")" >"$tmp/all.json"
    "$VENV/bin/python" - "$tmp/all.json" "$tmp/tokens.json" $((CHUNKS * N_CTX)) <<'PY'
import json, sys
ids = json.load(open(sys.argv[1]))
n = int(sys.argv[3])
assert len(ids) >= n, f"only {len(ids)} tokens"
json.dump(ids[:n], open(sys.argv[2], "w"))
PY
    echo "== $model" >&2
    "$VENV/bin/python" "$REF" "$model" "$tmp/tokens.json" "$N_CTX"
done
