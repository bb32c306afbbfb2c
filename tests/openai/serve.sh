# Sourced by the client suites (tests/{openai,anthropic,ollama}/run.sh): a venv with
# pinned packages, `tuili serve` on a free loopback port, and pytest against it, once per
# test model. Needs: $suite (its name) and $venv; sets TUILI_BASE_URL, TUILI_MODEL,
# TUILI_MODEL_FILE, TUILI_API_KEY_TEST and $status.

if [[ -z "${TUILI_TEST_MODELS_DIR:-}" || ! -f "$TUILI_TEST_MODELS_DIR/smol.gguf" ]]; then
    echo "skipped: $suite: TUILI_TEST_MODELS_DIR/smol.gguf not found"
    exit 0
fi

tuili="${TUILI_BIN:-${CARGO_TARGET_DIR:-target}/release/tuili}"
if [[ ! -x "$tuili" ]]; then
    cargo build --release --bin tuili
fi

# make_venv CHECK PACKAGES...: (re)creates $venv unless python -c CHECK succeeds in it.
make_venv() {
    local check=$1; shift
    if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "$check" 2>/dev/null; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "$@"
    fi
}

export TUILI_API_KEY_TEST="sk-tuili-test"
server=""
log="$(mktemp)"
cleanup() {
    if [[ -n "$server" ]]; then
        kill -TERM "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -f "$log"
}
trap cleanup EXIT

# serve MODEL_FILE NAME: starts the server and waits for /health to answer 200.
serve() {
    local port
    port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    export TUILI_BASE_URL="http://127.0.0.1:$port/v1"
    export TUILI_MODEL="$2" TUILI_MODEL_FILE="$1"
    # Small limits so that the suite can provoke 429 with a handful of clients.
    "$tuili" serve -m "$1" --host 127.0.0.1 --port "$port" --api-key "$TUILI_API_KEY_TEST" \
        --model-name "$2" --parallel 4 --max-queue 2 --ctx 2048 >"$log" 2>&1 &
    server=$!
    ready() {
        "$venv/bin/python" -c "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:$port/health', timeout=2).status != 200)" 2>/dev/null
    }
    for _ in $(seq 1 900); do
        if ready; then return 0; fi
        if ! kill -0 "$server" 2>/dev/null; then
            echo "tuili serve exited:"; cat "$log"; exit 1
        fi
        sleep 0.1
    done
    ready || { echo "server not ready:"; cat "$log"; exit 1; }
}

stop() {
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
}

status=0
run() {
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" || {
        status=$?
        echo "--- tuili serve log ---"; cat "$log"
    }
}

# on_models SMOL_TESTS QWEN_TESTS: the first test files (space-separated) against SmolLM2,
# the second against Qwen2.5-Coder when qwen.gguf is there.
on_models() {
    serve "$TUILI_TEST_MODELS_DIR/smol.gguf" smol
    run $1
    stop
    if [[ -f "$TUILI_TEST_MODELS_DIR/qwen.gguf" ]]; then
        serve "$TUILI_TEST_MODELS_DIR/qwen.gguf" qwen
        run $2
        stop
    else
        echo "skipped: $suite on Qwen2.5-Coder: TUILI_TEST_MODELS_DIR/qwen.gguf not found"
    fi
}
