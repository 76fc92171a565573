#!/usr/bin/env bash
# Local ports towards one backend server: what `source_addresses` buys.
#
# Every backend connection takes a local port, and one source address has
# only ip_local_port_range's worth of them towards one server. This script
# shrinks that range to PORTS ports for the length of the run (it needs root,
# and puts the old range back on exit), then opens SESSIONS idle sessions
# through wsgate twice: without source addresses, and with SOURCES of them
# (127.0.0.2 upwards). The first run can hold PORTS sessions and answers the
# rest with 502; the second holds up to SOURCES × PORTS. The bench spreads
# its own sockets over 8 addresses and, like wsgate, leaves their ports to
# connect(), so that it takes no ports away from wsgate.
#
# Usage: sudo benches/compare/ports.sh      PORTS=1000 SOURCES=4 SESSIONS=3000
#
# While it runs, every process on the host has only PORTS local ports for
# its outgoing connections to any one address and port.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

say() { printf 'ports: %s\n' "$*" >&2; }

PORTS="${PORTS:-1000}"
SOURCES="${SOURCES:-4}"
SESSIONS="${SESSIONS:-3000}"
RANGE_FILE=/proc/sys/net/ipv4/ip_local_port_range

if [ ! -w "$RANGE_FILE" ]; then
  say "needs to write $RANGE_FILE (run as root)"
  exit 1
fi

# shellcheck source=benches/compare/lib.sh
. "$ROOT/benches/compare/lib.sh"

old_range="$(cat "$RANGE_FILE")"
restore_range() { echo "$old_range" >"$RANGE_FILE"; }
# The range goes back first, then lib.sh's cleanup stops the processes
# (with the script's exit status).
trap 'status=$?; restore_range; (exit "$status"); cleanup' EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts a command in its own process group, output to log file $1,
# recorded for lib.sh's cleanup.
start() {
  local log="$1"
  shift
  setsid "$@" >"$log" 2>&1 &
  echo $! >>"$COMPARE_RUN_DIR/pids"
  last_pid=$!
}

# Runs SESSIONS idle sessions through wsgate with the given extra backend
# lines and listening ports, and prints how many were alive after the hold.
run() {
  local label="$1" backend_extra="$2" echo_port="$3" proxy_port="$4"
  local dir="$COMPARE_RUN_DIR/$label"
  mkdir -p "$dir"
  cat >"$dir/wsgate.yaml" <<EOF
listeners:
  - bind: "127.0.0.1:$proxy_port"
routes:
  - path_prefix: /
    backend: echo
backends:
  echo:
    servers:
      - url: "ws://127.0.0.1:$echo_port"
$backend_extra
EOF
  start "$dir/echo.log" taskset -c 1 "$WSGATE" echo --listen "127.0.0.1:$echo_port"
  local echo_pid=$last_pid
  start "$dir/wsgate.log" env WORKER_THREADS=1 taskset -c 0 "$WSGATE" run --config "$dir/wsgate.yaml"
  local proxy_pid=$last_pid
  sleep 1
  # The bench exits non-zero when sessions fail, which is the point here.
  taskset -c 1 "$WSGATE" bench "ws://127.0.0.1:$proxy_port/" --mode idle \
    --connections "$SESSIONS" --ramp 3s --duration 5s --source-ips 8 --json \
    >"$dir/bench.json" 2>"$dir/bench.err" || true
  kill -TERM "$proxy_pid" "$echo_pid" 2>/dev/null || true
  wait "$proxy_pid" "$echo_pid" 2>/dev/null || true
  python3 - "$label" "$dir/bench.json" <<'EOF'
import json, sys
label, path = sys.argv[1], sys.argv[2]
report = json.load(open(path))
print(f"| {label} | {report['connections']} | {report['alive']} | {report['errors']['total']} |")
EOF
  # Let the closed connections leave TIME_WAIT's hold on the ports
  # (the proxy closes its backend connections second, so it has none).
  sleep 2
}

# Listening ports from outside the shrunk range, so that they take none of it.
ports=()
for _ in 1 2 3 4; do ports+=("$(free_port)"); done
last_port=$((40000 + PORTS - 1))
echo "40000 $last_port" >"$RANGE_FILE"
say "local port range 40000-$last_port ($PORTS ports), $SESSIONS sessions"
first=127.0.0.2
last=$(python3 -c "import ipaddress; print(ipaddress.ip_address('$first') + $SOURCES - 1)")

echo "| wsgate backend | sessions | alive after the hold | failed (502) |"
echo "|---|---:|---:|---:|"
run "no source_addresses" "" "${ports[0]}" "${ports[1]}"
run "source_addresses: $first-$last" "    source_addresses: [\"$first-$last\"]" "${ports[2]}" "${ports[3]}"
