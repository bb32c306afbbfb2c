#!/usr/bin/env bash
# The OpenAI-client suite: installs the official `openai` package (pinned) in a venv, starts
# `tuili serve` with the default model on a free loopback port, runs pytest against it,
# then stops the server. Needs TUILI_TEST_MODELS_DIR/smol.gguf (scripts/test.sh sets it).
set -euo pipefail
cd "$(dirname "$0")/../.."

OPENAI_VERSION=3.51.0
PYTEST_VERSION=9.0.3

model="${TUILI_TEST_MODELS_DIR:-}/smol.gguf"
if [[ -z "${TUILI_TEST_MODELS_DIR:-}" || ! -f "$model" ]]; then
    echo "skipped: tests/openai: TUILI_TEST_MODELS_DIR/smol.gguf not found"
    exit 0
fi

tuili="${TUILI_BIN:-${CARGO_TARGET_DIR:-target}/release/tuili}"
if [[ ! -x "$tuili" ]]; then
    cargo build --release --bin tuili
fi

venv="${TUILI_OPENAI_VENV:-target/openai-venv}"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import openai, pytest, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "openai==$OPENAI_VERSION" "pytest==$PYTEST_VERSION"
fi

port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$(mktemp)"
export TUILI_BASE_URL="http://127.0.0.1:$port/v1"
export TUILI_API_KEY_TEST="sk-tuili-test"
export TUILI_MODEL="smol"
# Small limits so that the suite can provoke 429 with a handful of clients.
"$tuili" serve -m "$model" --host 127.0.0.1 --port "$port" --api-key "$TUILI_API_KEY_TEST" \
    --parallel 4 --max-queue 2 --ctx 2048 >"$log" 2>&1 &
server=$!
cleanup() {
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -f "$log"
}
trap cleanup EXIT

# Wait for /health to answer 200 (the model loads after the port opens).
ready() {
    "$venv/bin/python" -c "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:$port/health', timeout=2).status != 200)" 2>/dev/null
}
for _ in $(seq 1 600); do
    if ready; then break; fi
    if ! kill -0 "$server" 2>/dev/null; then
        echo "tuili serve exited:"; cat "$log"; exit 1
    fi
    sleep 0.1
done
ready || { echo "server not ready:"; cat "$log"; exit 1; }

status=0
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/openai/test_openai.py || status=$?
if [[ $status -ne 0 ]]; then
    echo "--- tuili serve log ---"; cat "$log"
fi
exit $status
