#!/usr/bin/env bash
# The cluster-stack checks, on the default model:
# 1. tests/cluster/test_cluster.py: the Prometheus client, pyzmq, msgpack and msgspec
#    (pinned, in a venv) read `tuili serve`'s metrics and KV events (a small KV pool that
#    evicts);
# 2. tests/cluster/router.py: two replicas behind the real `vllm-router` (PyPI, pinned),
#    with its kv_aware (fed by tuili's KV events), cache_aware and power_of_two policies.
# Needs TUILI_TEST_MODELS_DIR/smol.gguf (scripts/test.sh sets it). A package that cannot be
# installed skips its checks with a visible line.
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
log="$(mktemp)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -f "$log" "$log".*
}
trap cleanup EXIT
stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# Waits for URL/health to answer 200 while process $2 lives (its log: $3).
wait_ready() {
    for _ in $(seq 1 600); do
        if "$py" -c "import sys, urllib.request as u; sys.exit(u.urlopen('$1/health', timeout=2).status != 200)" 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$2" 2>/dev/null; then
            echo "$1 exited:"; cat "$3"; exit 1
        fi
        sleep 0.1
    done
    echo "$1 not ready:"; cat "$3"; exit 1
}

# vLLM's current event layout (maps) live; the earlier one (arrays) is checked byte for byte
# against msgspec in kv_wire.rs's tests. TUILI_CLUSTER_LAYOUTS="map array" runs both here.
for layout in ${TUILI_CLUSTER_LAYOUTS:-map}; do
    port="$(free_port)"; pub="$(free_port)"; replay="$(free_port)"
    export TUILI_URL="http://127.0.0.1:$port"
    export TUILI_KV_PUB="tcp://127.0.0.1:$pub"
    export TUILI_KV_REPLAY="tcp://127.0.0.1:$replay"
    export TUILI_KV_TOPIC="kv@smol"
    export TUILI_KV_LAYOUT="$layout"
    # 8 MiB of KV is 22 blocks of 16 tokens: requests of up to 115 tokens evict each other.
    "$tuili" serve -m "$model" --host 127.0.0.1 --port "$port" --ctx 256 --kv-memory 8M \
        --parallel 4 --max-queue 64 --kv-events-endpoint "$TUILI_KV_PUB" \
        --kv-events-replay-endpoint "$TUILI_KV_REPLAY" --kv-events-topic "$TUILI_KV_TOPIC" \
        --kv-events-layout "$layout" >"$log" 2>&1 &
    server=$!
    pids+=("$server")
    wait_ready "$TUILI_URL" "$server" "$log"

    status=0
    "$py" tests/cluster/test_cluster.py || status=$?
    if [[ $status -ne 0 ]]; then
        echo "--- tuili serve log (last 40 lines) ---"; tail -40 "$log"
        exit $status
    fi
    stop "$server"
done

# Two replicas behind vllm-router, one run per policy.
if ! "$py" -c "import importlib.metadata as m; assert m.version('vllm-router') == '0.1.17'" 2>/dev/null \
    && ! "$venv/bin/pip" install -q --disable-pip-version-check vllm-router==0.1.17; then
    echo "skipped: tests/cluster/router.py: vllm-router==0.1.17 could not be installed"
    exit 0
fi
replicas=()
sources=()
for k in 1 2; do
    port="$(free_port)"; pub="$(free_port)"; replay="$(free_port)"
    "$tuili" serve -m "$model" --host 127.0.0.1 --port "$port" --ctx 1024 --parallel 8 \
        --kv-events-endpoint "tcp://127.0.0.1:$pub" \
        --kv-events-replay-endpoint "tcp://127.0.0.1:$replay" >"$log.$k" 2>&1 &
    pids+=($!)
    wait_ready "http://127.0.0.1:$port" "$!" "$log.$k"
    replicas+=("http://127.0.0.1:$port")
    sources+=(--kv-event-source "http://127.0.0.1:$port=tcp://127.0.0.1:$pub"
              --kv-event-replay-source "http://127.0.0.1:$port=tcp://127.0.0.1:$replay")
done
for policy in kv_aware cache_aware power_of_two; do
    rport="$(free_port)"
    extra=()
    [[ $policy == kv_aware ]] && extra=("${sources[@]}" --kv-event-model smol)
    "$venv/bin/vllm-router" --host 127.0.0.1 --port "$rport" --prometheus-port "$(free_port)" \
        --worker-urls "${replicas[@]}" --policy "$policy" "${extra[@]}" \
        --log-level warning >"$log.router" 2>&1 &
    router=$!
    pids+=("$router")
    wait_ready "http://127.0.0.1:$rport" "$router" "$log.router"
    status=0
    "$py" tests/cluster/router.py "$policy" "http://127.0.0.1:$rport" "${replicas[@]}" || status=$?
    if [[ $status -ne 0 ]]; then
        echo "--- vllm-router log (last 40 lines) ---"; tail -40 "$log.router"
        exit $status
    fi
    stop "$router"
done
