#!/usr/bin/env bash
# The test suite: fetches the real models (pinned, checksummed) on first use, then
# runs every test of the workspace with optimized code (tests run real models).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bin tuili
tuili="${CARGO_TARGET_DIR:-target}/release/tuili"

# Real models for the integration tests, linked under fixed names.
models="${TUILI_TEST_MODELS_DIR:-$(pwd)/target/test-models}"
mkdir -p "$models"
ln -sf "$("$tuili" pull smollm2-135m)" "$models/smol.gguf"
ln -sf "$("$tuili" pull qwen2.5-coder-0.5b)" "$models/qwen.gguf"
ln -sf "$("$tuili" pull gemma3-270m)" "$models/gemma.gguf"
for f in smol.gguf qwen.gguf gemma.gguf; do
  [ -s "$models/$f" ] || { echo "test model $models/$f is missing" >&2; exit 1; }
done
export TUILI_TEST_MODELS_DIR="$models"
# A test that cannot find its model fails instead of skipping.
export TUILI_REQUIRE_MODELS=1

cargo test --release --workspace "$@"
bash tests/openai/run.sh  # the official openai client against `tuili serve`
bash tests/anthropic/run.sh  # the official anthropic client against /v1/messages
bash tests/ollama/run.sh  # the official ollama client against /api/*
bash tests/cluster/run.sh  # vLLM's metrics and KV events, read by their Python consumers
bash tests/deploy/run.sh   # deploy/'s manifests and Containerfile against their schemas
bash tests/router/run.sh   # `tuili route` over real upstreams: privacy, failover, latency, escalation, llama.cpp
bash tests/chatpage/run.sh # the chat page at / in headless Chromium (SKIPPED without Chromium)
