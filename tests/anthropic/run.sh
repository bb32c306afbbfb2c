#!/usr/bin/env bash
# The Anthropic-client suite: installs the official `anthropic` package (pinned) in a venv,
# starts `tuili serve` and runs pytest against `/v1/messages`, on SmolLM2 (smol.gguf) and,
# with tool use, on Qwen2.5-Coder (qwen.gguf, when present). Needs TUILI_TEST_MODELS_DIR
# (scripts/test.sh sets it).
set -euo pipefail
cd "$(dirname "$0")/../.."

ANTHROPIC_VERSION=2.17.0
PYTEST_VERSION=9.0.3
JSONSCHEMA_VERSION=4.25.1

suite=tests/anthropic
venv="${TUILI_ANTHROPIC_VENV:-target/anthropic-venv}"
source tests/openai/serve.sh
make_venv "import anthropic, pytest, jsonschema, sys; sys.exit(anthropic.__version__ != '$ANTHROPIC_VERSION')" \
    "anthropic==$ANTHROPIC_VERSION" "pytest==$PYTEST_VERSION" "jsonschema==$JSONSCHEMA_VERSION"

on_models "tests/anthropic/test_anthropic.py" \
    "tests/anthropic/test_anthropic.py"
exit $status
