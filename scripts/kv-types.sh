#!/usr/bin/env bash
# Perplexity, KV memory and decode speed of each KV cache type, as in docs/BENCHMARKS.md
# (2026-12-06). Usage: scripts/kv-types.sh ppl|bench [models...]
#   ppl:   perplexity over GPL-3 with 512-token chunks, K and V of each type.
#   bench: tg32 at depths 4096 and 16384 (positions filled before the timed runs),
#          3 repetitions after a warm-up, $ROUNDS rounds (default 3) with the types
#          alternated run by run; JSON lines out (median per type: scripts/kv-median.py).
# Default models: $TUILI_TEST_MODELS_DIR/{smol,qwen}.gguf. Needs a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/tuili}
TEXT=${TEXT:-/usr/share/common-licenses/GPL-3}
TYPES=${TYPES:-"f32 f16 bf16 q8_0"}
DEPTHS=${DEPTHS:-"4096 16384"}
ROUNDS=${ROUNDS:-3}
mode=${1:?usage: $0 ppl|bench [models...]}
shift
if [ $# -eq 0 ]; then
    dir=${TUILI_TEST_MODELS_DIR:?set TUILI_TEST_MODELS_DIR or name the models}
    set -- "$dir/smol.gguf" "$dir/qwen.gguf"
fi
for m in "$@"; do
    case $mode in
    ppl)
        for t in $TYPES; do
            ppl=$("$BIN" perplexity -m "$m" -f "$TEXT" -c 512 --cache-type-k "$t" \
                --cache-type-v "$t" 2>&1 | grep 'Final estimate')
            echo "$(basename "$m") $t $ppl"
        done
        ;;
    bench)
        for r in $(seq "$ROUNDS"); do
            for d in $DEPTHS; do
                for t in $TYPES; do
                    "$BIN" bench -m "$m" -p 0 -n 32 -r 3 -d "$d" --cache-type-k "$t" \
                        --cache-type-v "$t" -o json | grep '"test"' | sed 's/,$//'
                done
            done
        done
        ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
    esac
done
