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
# 12.*/13.* (permessage-deflate) are excluded: the echo backend does not
# negotiate compression, so wsgate offers none either.
#
# Reports go to reports/autobahn/<config>/ (git-ignored); a summary table to
# reports/autobahn/summary.md. Exits non-zero if any case FAILED.
#
# Usage: tests/conformance/autobahn.sh [config ...]   (default: all four)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
AUTOBAHN="${AUTOBAHN_TOOL:-$ROOT/../shared/tools/autobahn}"
OUT="$ROOT/reports/autobahn"
BIN="$ROOT/target/release/wsgate"
CONFIGS=("$@")
[ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=(direct frames tls tunnel)

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
  - path_prefix: /
    backend: echo
    # 9.* sends messages of up to 16 MiB in one frame.
    max_frame_size: 64MiB
    max_message_size: 64MiB
backends:
  echo:
    servers:
      - url: "ws://127.0.0.1:$ECHO_PORT"
YAML
RUST_LOG=warn "$BIN" run --config "$WORK/wsgate.yaml" > "$OUT/wsgate.log" 2>&1 &
PIDS+=($!)
wait_port "$ECHO_PORT"
wait_port "$PLAIN_PORT"

status=0
for config in "${CONFIGS[@]}"; do
  skip_perf=0
  case "$config" in
    direct) url="ws://127.0.0.1:$ECHO_PORT/" ;;
    frames) url="ws://127.0.0.1:$PLAIN_PORT/" ;;
    tls)    url="wss://127.0.0.1:$TLS_PORT/"; skip_perf=1 ;;
    tunnel) url="ws://127.0.0.1:$PLAIN_PORT/tunnel"; skip_perf=1 ;;
    *) echo "autobahn.sh: unknown config $config" >&2; exit 2 ;;
  esac
  echo "== autobahn: $config ($url)"
  if AUTOBAHN_SKIP_DEFLATE=1 AUTOBAHN_SKIP_PERF=$skip_perf AUTOBAHN_AGENT="wsgate-$config" \
      "$AUTOBAHN/run.sh" client "$url" "*" "$OUT/$config" > "$OUT/$config.summary" 2>"$OUT/$config.stderr"; then
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
PY
cat "$OUT/summary.md"
exit $status
