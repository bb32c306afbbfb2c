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

suite=tests/ollama
venv="${TUILI_OLLAMA_VENV:-target/ollama-venv}"
source tests/openai/serve.sh
make_venv "import ollama, pytest, jsonschema, sys; from importlib.metadata import version; sys.exit(version('ollama') != '$OLLAMA_VERSION')" \
    "ollama==$OLLAMA_VERSION" "pytest==$PYTEST_VERSION" "jsonschema==$JSONSCHEMA_VERSION"

on_models "tests/ollama/test_ollama.py" \
    "tests/ollama/test_ollama.py"
exit $status
