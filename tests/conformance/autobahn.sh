#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client through wsgate, in front of
# `wsgate echo`, and first against `wsgate echo` directly (to show the
# backend itself is conformant). Configurations:
#
#   direct   the echo server alone                       (all but 12.*/13.*)
#   frames   wsgate, frames mode, plain TCP              (all but 12.*/13.*, 9.* included)
#   tls      wsgate, frames mode, TLS (wss://)           (9.* skipped for time)
#   tunnel   wsgate, tunnel mode, plain TCP              (9.* skipped for time)
#
# 12.*/13.* (permessage-deflate) are excluded there: the echo backend does not
# negotiate compression, so wsgate offers none either. Two more configurations
# run them against tests/conformance/deflate_echo.py, a Python `websockets`
# echo server that negotiates permessage-deflate (needs tests/requirements.txt):
#
#   deflate-direct  deflate_echo.py alone                 (AUTOBAHN_DEFLATE_CASES)
#   deflate         wsgate, frames mode, plain TCP, in front of deflate_echo.py
#
# AUTOBAHN_DEFLATE_CASES picks the permessage-deflate cases. Its default is
# 53 cases: 12.X.1-4 and 12.X.11 (16 B-1 KiB messages, and 8 KiB ones in
# 256-byte frames) of all five data sets, and 13.X.1-4 of all seven parameter
# sets (about 75-105 s per configuration on a 2-core machine). All 216:
#   AUTOBAHN_DEFLATE_CASES="12.*,13.*" tests/conformance/autobahn.sh deflate-direct deflate
# (about 20-25 min per configuration, CPU-bound in wstest).
#
# Reports go to reports/autobahn/<config>/ (git-ignored); a summary table to
# reports/autobahn/summary.md. Exits non-zero if any case FAILED.
#
# Usage: tests/conformance/autobahn.sh [config ...]   (default: all six)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
AUTOBAHN="${AUTOBAHN_TOOL:-$ROOT/../shared/tools/autobahn}"
OUT="$ROOT/reports/autobahn"
BIN="$ROOT/target/release/wsgate"
CONFIGS=("$@")
[ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=(direct frames tls tunnel deflate-direct deflate)
DEFLATE_CASES="${AUTOBAHN_DEFLATE_CASES:-$(echo 12.{1..5}.{1..4} 12.{1..5}.11 13.{1..7}.{1..4} | tr ' ' ,)}"
need_deflate=0
for config in "${CONFIGS[@]}"; do
  case "$config" in deflate|deflate-direct) need_deflate=1 ;; esac
done
if [ "$need_deflate" = 1 ] && ! python3 -c 'import websockets' 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check -r "$ROOT/tests/requirements.txt"
fi

[ -x "$AUTOBAHN/run.sh" ] || { echo "autobahn.sh: $AUTOBAHN/run.sh not found (set AUTOBAHN_TOOL)" >&2; exit 2; }
mkdir -p "$OUT"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

(cd "$ROOT" && cargo build --release --quiet)

# Free ports chosen by the kernel, released just before use.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "autobahn.sh: nothing listening on port $1" >&2; return 1
}

ECHO_PORT=$(free_port)
PLAIN_PORT=$(free_port)
TLS_PORT=$(free_port)
DEFLATE_PORT=$(free_port)
"$BIN" echo --listen "127.0.0.1:$ECHO_PORT" > "$OUT/echo.log" 2>&1 &
PIDS+=($!)

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/key.pem" -out "$WORK/cert.pem" \
  -days 2 -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
cat > "$WORK/wsgate.yaml" <<YAML
listeners:
  - bind: "127.0.0.1:$PLAIN_PORT"
  - bind: "127.0.0.1:$TLS_PORT"
    tls:
      cert: $WORK/cert.pem
      key: $WORK/key.pem
routes:
  - path_prefix: /tunnel
    backend: echo
    mode: tunnel
  - path_prefix: /deflate
    backend: deflate
    max_frame_size: 64MiB
    max_message_size: 64MiB
  - path_prefix: /
    backend: echo
    # 9.* sends messages of up to 16 MiB in one frame.
    max_frame_size: 64MiB
    max_message_size: 64MiB
backends:
  echo:
    servers:
      - url: "ws://127.0.0.1:$ECHO_PORT"
  deflate:
    servers:
      - url: "ws://127.0.0.1:$DEFLATE_PORT"
YAML
if [ "$need_deflate" = 1 ]; then
  python3 "$ROOT/tests/conformance/deflate_echo.py" --listen "127.0.0.1:$DEFLATE_PORT" > "$OUT/deflate_echo.log" 2>&1 &
  PIDS+=($!)
  wait_port "$DEFLATE_PORT"
fi
RUST_LOG=warn "$BIN" run --config "$WORK/wsgate.yaml" > "$OUT/wsgate.log" 2>&1 &
PIDS+=($!)
wait_port "$ECHO_PORT"
wait_port "$PLAIN_PORT"

status=0
for config in "${CONFIGS[@]}"; do
  skip_perf=0
  cases="*"
  skip_deflate=1
  case "$config" in
    direct) url="ws://127.0.0.1:$ECHO_PORT/" ;;
    frames) url="ws://127.0.0.1:$PLAIN_PORT/" ;;
    tls)    url="wss://127.0.0.1:$TLS_PORT/"; skip_perf=1 ;;
    tunnel) url="ws://127.0.0.1:$PLAIN_PORT/tunnel"; skip_perf=1 ;;
    deflate-direct) url="ws://127.0.0.1:$DEFLATE_PORT/"; cases="$DEFLATE_CASES"; skip_deflate=0 ;;
    deflate) url="ws://127.0.0.1:$PLAIN_PORT/deflate"; cases="$DEFLATE_CASES"; skip_deflate=0 ;;
    *) echo "autobahn.sh: unknown config $config" >&2; exit 2 ;;
  esac
  echo "== autobahn: $config ($url)"
  if AUTOBAHN_SKIP_DEFLATE=$skip_deflate AUTOBAHN_SKIP_PERF=$skip_perf AUTOBAHN_AGENT="wsgate-$config" \
      "$AUTOBAHN/run.sh" client "$url" "$cases" "$OUT/$config" > "$OUT/$config.summary" 2>"$OUT/$config.stderr"; then
    :
  else
    status=1
  fi
  cat "$OUT/$config.summary"
done

# One table over all configurations run.
python3 - "$OUT" "${CONFIGS[@]}" > "$OUT/summary.md" <<'PY'
import json, sys, os
out, configs = sys.argv[1], sys.argv[2:]
order = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
print("| configuration | cases | " + " | ".join(order) + " | close not OK |")
print("|---|---|" + "---|" * len(order) + "---|")
for c in configs:
    path = os.path.join(out, c, "index.json")
    if not os.path.exists(path):
        print(f"| {c} | no report |" + " |" * (len(order) + 1)); continue
    cases = next(iter(json.load(open(path)).values()))
    counts = {k: 0 for k in order}
    bad_close = 0
    for v in cases.values():
        counts[v["behavior"]] = counts.get(v["behavior"], 0) + 1
        if v["behaviorClose"] not in ("OK", "INFORMATIONAL"):
            bad_close += 1
    print(f"| {c} | {len(cases)} | " + " | ".join(str(counts[k]) for k in order) + f" | {bad_close} |")

# Does the proxy add failures? Compare each wsgate configuration with the
# backend alone, case by case (red = FAILED, or a close behavior run.sh fails on).
def red(v):
    return v["behavior"] == "FAILED" or v["behaviorClose"] not in ("OK", "INFORMATIONAL", "WRONG CODE", "FAILED BY CLIENT")
def load(c):
    path = os.path.join(out, c, "index.json")
    return next(iter(json.load(open(path)).values())) if os.path.exists(path) else None
for via, alone in (("deflate", "deflate-direct"),):
    if via in configs and alone in configs and load(via) is not None and load(alone) is not None:
        a, b = load(alone), load(via)
        worse = sorted((k for k in b if red(b[k]) and not (k in a and red(a[k]))),
                       key=lambda k: tuple(map(int, k.split("."))))
        print(f"\n{via} vs {alone}: {len(worse)} case(s) red through wsgate only" + (": " + " ".join(worse) if worse else ""))
PY
cat "$OUT/summary.md"
exit $status
