#!/usr/bin/env bash
# The whole test suite, in one command:
#   1. cargo test: unit tests and the Rust integration tests (tokio-tungstenite
#      on both sides of wsgate, over real sockets on 127.0.0.1);
#   2. interop: Python `websockets` and Node `ws`, each as client and as
#      backend, through wsgate over TLS with a test CA (pytest);
#   3. a real browser: headless Chromium opens wss:// through wsgate from an
#      https:// page (Node's test runner + playwright-core).
#
# It installs what it needs when missing: the pip packages in
# tests/requirements.txt, the npm packages locked under tests/interop and
# tests/browser, and Debian's chromium (apt-get, needs root).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "dependencies"
if ! python3 -c 'import websockets, pytest' 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check -r tests/requirements.txt
fi
for dir in tests/interop tests/browser; do
  if [ -f "$dir/package-lock.json" ] && [ ! -d "$dir/node_modules" ]; then
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  fi
done
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
  else
    echo "tests/run.sh: Debian's chromium is needed for the browser test: sudo apt-get install chromium" >&2
    exit 1
  fi
fi
command -v openssl >/dev/null || { echo "tests/run.sh: openssl is needed for the test CA" >&2; exit 1; }

step "cargo test"
cargo test

step "interop: Python websockets <-> Node ws through wsgate (TLS)"
cargo build --release --quiet
export WSGATE_BIN="$ROOT/target/release/wsgate"
python3 -m pytest -q tests/interop

step "browser: headless Chromium through wsgate (wss)"
node --test tests/browser/
