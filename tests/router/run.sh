#!/usr/bin/env bash
# `tuili route` with real processes on loopback (tests/router/test_router.py): config checks,
# privacy from the upstreams' ingress logs, reload under load, the latency policy over a slow
# link (userspace: this kernel has no netem), router overhead, a stream cut mid-way,
# escalation SmolLM2 -> Qwen2.5, llama.cpp's server as an upstream, failover under load,
# `tuili serve --route` (one process) with embeddings, Responses and Messages routed.
# Needs TUILI_TEST_MODELS_DIR with smol.gguf and qwen.gguf (scripts/test.sh sets it); only
# the Python standard library (llama.cpp's check uses the llama-cpp-python venv).
set -euo pipefail
cd "$(dirname "$0")/../.."

dir="${TUILI_TEST_MODELS_DIR:-}"
if [[ -z "$dir" || ! -f "$dir/smol.gguf" || ! -f "$dir/qwen.gguf" ]]; then
    echo "skipped: tests/router: TUILI_TEST_MODELS_DIR/{smol,qwen}.gguf not found"
    exit 0
fi
tuili="${TUILI_BIN:-${CARGO_TARGET_DIR:-target}/release/tuili}"
if [[ ! -x "$tuili" ]]; then
    cargo build --release --bin tuili
fi
export TUILI_BIN="$tuili"
exec python3 tests/router/test_router.py
