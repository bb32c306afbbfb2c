#!/usr/bin/env bash
# The cluster-stack checks (tests/cluster/test_cluster.py): installs the Prometheus client,
# pyzmq, msgpack and msgspec (pinned) in a venv, starts `tuili serve` on the default model
# with a small KV pool and its KV events on ZMQ, runs the checks, then stops the server.
# Needs TUILI_TEST_MODELS_DIR/smol.gguf (scripts/test.sh sets it). A package that cannot be
# installed skips the checks with a visible line.
set -euo pipefail
cd "$(dirname "$0")/../.."

model="${TUILI_TEST_MODELS_DIR:-}/smol.gguf"
if [[ -z "${TUILI_TEST_MODELS_DIR:-}" || ! -f "$model" ]]; then
    echo "skipped: tests/cluster: TUILI_TEST_MODELS_DIR/smol.gguf not found"
    exit 0
fi

tuili="${TUILI_BIN:-${CARGO_TARGET_DIR:-target}/release/tuili}"
if [[ ! -x "$tuili" ]]; then
    cargo build --release --bin tuili
fi

pins=(prometheus_client==0.26.0 pyzmq==27.3.0 msgpack==1.2.4 msgspec==0.23.0)
venv="${TUILI_CLUSTER_VENV:-target/cluster-venv}"
py="$venv/bin/python"
if ! "$py" -c "import prometheus_client, zmq, msgpack, msgspec" 2>/dev/null; then
    python3 -m venv "$venv" 2>/dev/null || true
    if ! "$venv/bin/pip" install -q --disable-pip-version-check "${pins[@]}"; then
        echo "skipped: tests/cluster: could not install ${pins[*]}"
        exit 0
    fi
fi

free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port="$(free_port)"; pub="$(free_port)"; replay="$(free_port)"
log="$(mktemp)"
export TUILI_URL="http://127.0.0.1:$port"
export TUILI_KV_PUB="tcp://127.0.0.1:$pub"
export TUILI_KV_REPLAY="tcp://127.0.0.1:$replay"
export TUILI_KV_TOPIC="kv@smol"
# 8 MiB of KV is 22 blocks of 16 tokens: requests of up to 115 tokens evict each other.
"$tuili" serve -m "$model" --host 127.0.0.1 --port "$port" --ctx 256 --kv-memory 8M \
    --parallel 4 --max-queue 64 --kv-events-endpoint "$TUILI_KV_PUB" \
    --kv-events-replay-endpoint "$TUILI_KV_REPLAY" --kv-events-topic "$TUILI_KV_TOPIC" \
    >"$log" 2>&1 &
server=$!
cleanup() {
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -f "$log"
}
trap cleanup EXIT

ready() {
    "$py" -c "import sys, urllib.request as u; sys.exit(u.urlopen('$TUILI_URL/health', timeout=2).status != 200)" 2>/dev/null
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
"$py" tests/cluster/test_cluster.py || status=$?
if [[ $status -ne 0 ]]; then
    echo "--- tuili serve log (last 40 lines) ---"; tail -40 "$log"
fi
exit $status
