#!/usr/bin/env bash
# The chat page at / in a real browser: Debian's Chromium, headless, driven by
# playwright-core (pinned in package-lock.json; it never downloads a browser of its own),
# against `tuili serve` on SmolLM2. Says `SKIPPED: ...` when Chromium or npm is missing.
# Screenshots go to $TUILI_CHATPAGE_SHOTS (default target/chatpage; docs/ holds the
# committed ones). Needs TUILI_TEST_MODELS_DIR (scripts/test.sh sets it).
set -euo pipefail
cd "$(dirname "$0")/../.."

suite=tests/chatpage
chromium="${TUILI_CHROMIUM:-/usr/bin/chromium}"
if [[ -z "${TUILI_TEST_MODELS_DIR:-}" || ! -f "$TUILI_TEST_MODELS_DIR/smol.gguf" ]]; then
    echo "skipped: $suite: TUILI_TEST_MODELS_DIR/smol.gguf not found"
    exit 0
fi
if [[ -n "${TUILI_CHATPAGE_SKIP:-}" ]]; then
    echo "SKIPPED: $suite: $TUILI_CHATPAGE_SKIP"
    exit 0
fi
if [[ ! -x "$chromium" ]]; then
    echo "SKIPPED: $suite: no Chromium at $chromium (apt-get install chromium)"
    exit 0
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "SKIPPED: $suite: node and npm are needed to drive the browser"
    exit 0
fi

tuili="${TUILI_BIN:-${CARGO_TARGET_DIR:-target}/release/tuili}"
if [[ ! -x "$tuili" ]]; then
    cargo build --release --bin tuili
fi

pinned=$(node -p "require('./$suite/package.json').dependencies['playwright-core']")
installed=$(node -p "require('./$suite/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
if [[ "$installed" != "$pinned" ]]; then
    (cd "$suite" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

shots="${TUILI_CHATPAGE_SHOTS:-${CARGO_TARGET_DIR:-target}/chatpage}"
mkdir -p "$shots"
node --test "$suite/markdown.test.js"
TUILI_BIN="$tuili" TUILI_MODEL_FILE="$TUILI_TEST_MODELS_DIR/smol.gguf" TUILI_CHROMIUM="$chromium" \
    TUILI_CHATPAGE_SHOTS="$shots" node "$suite/browser.js"
