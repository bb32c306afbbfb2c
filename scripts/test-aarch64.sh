#!/usr/bin/env bash
# Runs the tuili-backend tests (the NEON kernels against their scalar twins, among
# others) for aarch64 under QEMU user-mode emulation, on an x86-64 Debian/Ubuntu host.
#
#   scripts/test-aarch64.sh [--install | --install-only] [cargo test args...]
#
# --install first gets what it needs (--install-only gets it and stops): the Rust target (rustup) and Debian's
# gcc-aarch64-linux-gnu (the linker, with the aarch64 C library under
# /usr/aarch64-linux-gnu) and qemu-user (apt-get; needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--install" || "${1:-}" == "--install-only" ]]; then
    only="$1"
    shift
    rustup target add aarch64-unknown-linux-gnu
    sudo=""
    [[ "$(id -u)" == 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq gcc-aarch64-linux-gnu qemu-user
    [[ "$only" == "--install-only" ]] && exit 0
fi

for tool in aarch64-linux-gnu-gcc qemu-aarch64; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool not found; run $0 --install" >&2
        exit 1
    }
done

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
# QEMU's `max` CPU has the dot-product extension, so the tests run the `neon_dotprod`
# table beside the `neon` one (and check that they do).
export QEMU_CPU=max TUILI_TEST_DOTPROD=1
# Tests that need real models are skipped (and say so) without TUILI_TEST_MODELS_DIR;
# under emulation they would be slow anyway.
unset TUILI_TEST_MODELS_DIR
cargo test --release -p tuili-backend --target aarch64-unknown-linux-gnu "$@"
