#!/usr/bin/env bash
# Scale test: as many idle sessions as the descriptor limit allows (about
# 9 900 under a limit of 20 000), held for a minute through wsgate in
# `frames` and `tunnel` mode, then each one checked alive. Reports RSS and
# CPU while holding, kernel memory per socket, and a projection to
# 1 000 000 sessions; see hold.py for what is measured.
#
# Usage: benches/compare/hold.sh
#   HOLD=60s SESSIONS=9950 CLIENT_PROCS=4 PROXIES=wsgate-frames,nginx
#
# Writes reports/hold/results.md and results.json.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

say() { printf 'hold: %s\n' "$*" >&2; }

export PATH="$PATH:/usr/sbin:/sbin"

# shellcheck source=benches/compare/lib.sh
. "$ROOT/benches/compare/lib.sh"
run_driver "$ROOT/benches/compare/hold.py"
