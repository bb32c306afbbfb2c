#!/usr/bin/env bash
# The Ollama-client suite: installs the official `ollama` package (pinned) in a venv, starts
# `tuili serve` and runs pytest against its Ollama API, on SmolLM2 (smol.gguf) and, with a
# tool result round trip, on Qwen2.5-Coder (qwen.gguf, when present). Needs
# TUILI_TEST_MODELS_DIR (scripts/test.sh sets it).
set -euo pipefail
cd "$(dirname "$0")/../.."

OLLAMA_VERSION=0.6.3
PYTEST_VERSION=9.0.3
JSONSCHEMA_VERSION=4.25.1

if [[ -z "${TUILI_TEST_MODELS_DIR:-}" || ! -f "$TUILI_TEST_MODELS_DIR/smol.gguf" ]]; then
    echo "skipped: tests/ollama: TUILI_TEST_MODELS_DIR/smol.gguf not found"
    exit 0
fi

tuili="${TUILI_BIN:-${CARGO_TARGET_DIR:-target}/release/tuili}"
if [[ ! -x "$tuili" ]]; then
    cargo build --release --bin tuili
fi

venv="${TUILI_OLLAMA_VENV:-target/ollama-venv}"
source tests/openai/serve.sh
make_venv "import ollama, pytest, jsonschema, sys; from importlib.metadata import version; sys.exit(version('ollama') != '$OLLAMA_VERSION')" \
    "ollama==$OLLAMA_VERSION" "pytest==$PYTEST_VERSION" "jsonschema==$JSONSCHEMA_VERSION"

serve "$TUILI_TEST_MODELS_DIR/smol.gguf" smol
run tests/ollama/test_ollama.py
stop

if [[ -f "$TUILI_TEST_MODELS_DIR/qwen.gguf" ]]; then
    serve "$TUILI_TEST_MODELS_DIR/qwen.gguf" qwen
    run tests/ollama/test_ollama.py
    stop
else
    echo "skipped: tests/ollama on Qwen2.5-Coder: TUILI_TEST_MODELS_DIR/qwen.gguf not found"
fi
exit $status
