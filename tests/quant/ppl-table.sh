#!/usr/bin/env bash
# The quantization table of docs/MODELS.md: Qwen2.5-0.5B quantized by `tuili quantize` and by
# llama.cpp's own quantizer (`llama_model_quantize`, through llama-cpp-python, which ships no
# llama-quantize binary), from one F16 file, for each type: size, time on 2 threads, whether
# the tensors are byte-identical, and the perplexity on GPL-3 (-c 512, f16 KV) in tuili and in
# llama.cpp (bench/kv_ppl_llamacpp.py).
#
# The F16 source is llama.cpp's requantization of the Q4_K_M-ish test model (as the issue
# asks: `--allow-requantize` to F16), so its figures bound what any type can reach here.
#
# Usage: tests/quant/ppl-table.sh [WORKDIR]   (slow: about 40 minutes on 2 busy cores;
#   SKIP_F16=1 leaves out the F16 row, TYPES="Q8_0 Q4_0" picks the types)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
W="${1:-/tmp/tuili-quant-table}"
PY="${TUILI_LLAMACPP_PYTHON:-$HOME/.cache/tuili/llamacpp-venv/bin/python}"
T="${TUILI_BIN:-$ROOT/target/release/tuili}"
SRC="${TUILI_TEST_MODELS_DIR:-/work/test-models}/qwen.gguf"
TEXT=/usr/share/common-licenses/GPL-3
TYPES="${TYPES:-Q8_0 Q6_K Q5_K_M Q4_K_M Q4_0}"
mkdir -p "$W"
[[ -f "$W/f16.gguf" ]] || "$PY" "$ROOT/tests/quant/llamacpp_quantize.py" "$SRC" "$W/f16.gguf" F16 \
    --allow-requantize --threads 2 >/dev/null 2>&1
ppl_tuili() { "$T" perplexity -m "$1" -f "$TEXT" -c 512 -t 2 2>&1 | sed -n 's/.*PPL = \([0-9.]*\).*/\1/p'; }
ppl_llama() { "$PY" "$ROOT/bench/kv_ppl_llamacpp.py" "$1" "$TEXT" 512 f16 f16 2>/dev/null | sed -n 's/.*PPL = \([0-9.]*\).*/\1/p'; }
echo "| type | size (MB) | tuili quantize (s) | llama.cpp (s) | tensors identical | PPL tuili | PPL llama.cpp |"
echo "|---|---|---|---|---|---|---|"
[[ -n "${SKIP_F16:-}" ]] || echo "| F16 | $(( $(stat -c %s "$W/f16.gguf") / 1000000 )) | | | | $(ppl_tuili "$W/f16.gguf") | $(ppl_llama "$W/f16.gguf") |"
for ty in $TYPES; do
    s=$(date +%s.%N)
    "$T" quantize "$W/f16.gguf" "$W/tuili-$ty.gguf" "$ty" -t 2 2>/dev/null
    tt=$(echo "$(date +%s.%N) - $s" | bc)
    lt=$("$PY" "$ROOT/tests/quant/llamacpp_quantize.py" "$W/f16.gguf" "$W/llama-$ty.gguf" "$ty" --threads 2 2>/dev/null)
    same=$("$PY" "$ROOT/tests/quant/compare_gguf.py" "$W/tuili-$ty.gguf" "$W/llama-$ty.gguf" \
        | "$PY" -c "import json,sys; d=json.load(sys.stdin); print(str(d['same_bytes']) + '/' + str(d['tensors']))")
    size=$(( $(stat -c %s "$W/tuili-$ty.gguf") / 1000000 ))
    printf '| %s | %s | %.1f | %.1f | %s | %s | %s |\n' "$ty" "$size" "$tt" "$lt" "$same" \
        "$(ppl_tuili "$W/tuili-$ty.gguf")" "$(ppl_llama "$W/tuili-$ty.gguf")"
done
