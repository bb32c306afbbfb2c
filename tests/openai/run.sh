#!/usr/bin/env bash
# The OpenAI-client suite: installs the official `openai` package (pinned) and `jsonschema`
# in a venv, starts `tuili serve` on a free loopback port and runs pytest against it, once
# per model: SmolLM2 (smol.gguf) runs the whole API suite, the structured-output, Responses
# API and embeddings tests (the last against llama-cpp-python when it is installed, see
# tuili_testkit::llamacpp_python); Qwen2.5-Coder (qwen.gguf, when present) the
# structured-output, tool-call and Responses API tests (with function calls). Needs
# TUILI_TEST_MODELS_DIR (scripts/test.sh sets it).
set -euo pipefail
cd "$(dirname "$0")/../.."

OPENAI_VERSION=3.51.0
PYTEST_VERSION=9.0.3
JSONSCHEMA_VERSION=4.25.1

suite=tests/openai
venv="${TUILI_OPENAI_VENV:-target/openai-venv}"
source tests/openai/serve.sh
make_venv "import openai, pytest, jsonschema, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" \
    "openai==$OPENAI_VERSION" "pytest==$PYTEST_VERSION" "jsonschema==$JSONSCHEMA_VERSION"

on_models "tests/openai/test_openai.py tests/openai/test_structured.py tests/openai/test_responses.py tests/openai/test_embeddings.py" \
    "tests/openai/test_structured.py tests/openai/test_tools.py tests/openai/test_responses.py"
exit $status
