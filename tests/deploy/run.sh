#!/usr/bin/env bash
# Validates deploy/ offline (tests/deploy/validate.py): installs kubernetes-validate
# (pinned; it brings Kubernetes' JSON schemas, jsonschema and PyYAML) in a venv and checks
# every manifest and the Containerfile. Skips with a visible line when it cannot install.
set -euo pipefail
cd "$(dirname "$0")/../.."

tuili="${TUILI_BIN:-${CARGO_TARGET_DIR:-target}/release/tuili}"
if [[ ! -x "$tuili" ]]; then
    cargo build --release --bin tuili
fi
venv="${TUILI_DEPLOY_VENV:-target/deploy-venv}"
if ! "$venv/bin/python" -c "import kubernetes_validate, jsonschema, yaml" 2>/dev/null; then
    python3 -m venv "$venv" 2>/dev/null || true
    if ! "$venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0; then
        echo "skipped: tests/deploy: kubernetes-validate==1.37.0 could not be installed"
        exit 0
    fi
fi
"$venv/bin/python" tests/deploy/validate.py "$tuili"
