#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing *server* as wsgate's backend and drives
# its cases through wsgate with a conformant client library (Python
# `websockets`, tests/conformance/autobahn_client.py), and first with that
# client directly against the fuzzing server, to show what the client itself
# does. This tests the side of the proxy that faces backends. Configurations:
#
#   direct   the client against the fuzzing server       (agent websockets-direct)
#   frames   through wsgate, frames mode, plain TCP      (agent websockets-via-wsgate)
#   tunnel   through wsgate, tunnel mode, plain TCP      (agent websockets-via-wsgate-tunnel)
#
# Each configuration gets its own fuzzing server and its own wsgate (one
# route, path_prefix `/`, 64 MiB frame and message limits, backend
# ws://127.0.0.1:PORT of the fuzzing server; path and query are forwarded
# unchanged).
#
# Which cases (timings on a 2-core machine, per configuration):
#   default                  all but 12.*/13.* (301 cases, ~1 min), plus the
#                            permessage-deflate subset AUTOBAHN_DEFLATE_CASES
#                            (~1 min), whose default is 53 cases: 12.X.1-4
#                            and 12.X.11 (16 B-1 KiB messages, and 8 KiB ones
#                            in 256-byte frames) of all five data sets, and
#                            13.X.1-4 of all seven parameter sets
#   AUTOBAHN_DEFLATE_CASES="12.*,13.*"   everything (517 cases, > 1 h)
#   AUTOBAHN_SKIP_DEFLATE=1  no 12.*/13.* at all (honoured by run.sh server)
#   AUTOBAHN_CASES="..."     exactly these patterns (overrides the above)
#   AUTOBAHN_SKIP_PERF=1, AUTOBAHN_EXCLUDE="..."   as for run.sh
#   AUTOBAHN_CASE_TIMEOUT    seconds allowed per case (default 600)
#   AUTOBAHN_TIMEOUT         seconds allowed per configuration for the cases
#                            (default 10800); then the client stops, the
#                            fuzzing server still writes its report for the
#                            cases that ran, and the script fails
#
# Reports go to reports/autobahn-server/<config>/ (git-ignored); a summary
# table (counts per agent) and a per-case comparison with `direct` (from this
# run, or else from an earlier one) to reports/autobahn-server/summary.md.
# Exits non-zero if a case got worse through wsgate than directly: red in the
# report (FAILED, or close behavior FAILED/UNCLEAN) where it was not red
# directly, no result at all, or any other step down (OK -> NON-STRICT,
# close OK -> WRONG CODE, ...) except OK -> NON-STRICT in the known
# timing-dependent cases 3.2-3.4, 4.1.3-5, 4.2.3-5, which are listed but
# tolerated; also if a configuration did not run all its cases.
#
# Usage: tests/conformance/autobahn-server.sh [config ...]   (default: all three)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
HERE="$ROOT/tests/conformance"
AUTOBAHN="${AUTOBAHN_TOOL:-$ROOT/../shared/tools/autobahn}"
OUT="$ROOT/reports/autobahn-server"
BIN="$ROOT/target/release/wsgate"
CONFIGS=("$@")
[ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=(direct frames tunnel)
for config in "${CONFIGS[@]}"; do
  case "$config" in direct|frames|tunnel) ;; *) echo "autobahn-server.sh: unknown config $config" >&2; exit 2 ;; esac
done

DEFLATE_CASES="${AUTOBAHN_DEFLATE_CASES:-$(echo 12.{1..5}.{1..4} 12.{1..5}.11 13.{1..7}.{1..4} | tr ' ' ,)}"
# Autobahn 0.8.2's sections are 1-7, 9, 10, 12, 13.
CASES="${AUTOBAHN_CASES:-1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*${DEFLATE_CASES:+,$DEFLATE_CASES}}"

[ -x "$AUTOBAHN/run.sh" ] || { echo "autobahn-server.sh: $AUTOBAHN/run.sh not found (set AUTOBAHN_TOOL)" >&2; exit 2; }
if ! python3 -c 'import websockets' 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check -r "$ROOT/tests/requirements.txt"
fi
mkdir -p "$OUT"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

(cd "$ROOT" && cargo build --release --quiet)

# Free ports chosen by the kernel, released just before use.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "autobahn-server.sh: nothing listening on port $1" >&2; return 1
}
# stop PID: TERM, then KILL after 5 s; the pid stays in PIDS (harmless).
stop() {
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}

status=0
for config in "${CONFIGS[@]}"; do
  case "$config" in
    direct) agent=websockets-direct ;;
    frames) agent=websockets-via-wsgate ;;
    tunnel) agent=websockets-via-wsgate-tunnel ;;
  esac
  dir="$OUT/$config"
  rm -rf "$dir"; mkdir -p "$dir"
  fuzz_port=$(free_port)
  fuzz_pid=$(AUTOBAHN_BACKGROUND=1 AUTOBAHN_CASES="$CASES" "$AUTOBAHN/run.sh" server "$fuzz_port" "$dir" 2>"$dir/server.stderr")
  PIDS+=("$fuzz_pid")
  url="ws://127.0.0.1:$fuzz_port"
  gate_pid=
  if [ "$config" != direct ]; then
    mode=frames; [ "$config" = tunnel ] && mode=tunnel
    gate_port=$(free_port)
    cat > "$WORK/$config.yaml" <<YAML
listeners:
  - bind: "127.0.0.1:$gate_port"
routes:
  - path_prefix: /
    backend: fuzzingserver
    mode: $mode
    # 9.* sends messages of up to 16 MiB in one frame.
    max_frame_size: 64MiB
    max_message_size: 64MiB
backends:
  fuzzingserver:
    servers:
      - url: "ws://127.0.0.1:$fuzz_port"
YAML
    cp "$WORK/$config.yaml" "$dir/wsgate.yaml"
    RUST_LOG=warn "$BIN" run --config "$WORK/$config.yaml" > "$dir/wsgate.log" 2>&1 &
    gate_pid=$!
    PIDS+=("$gate_pid")
    wait_port "$gate_port"
    url="ws://127.0.0.1:$gate_port"
  fi
  echo "== autobahn-server: $config (agent $agent, $url, cases $CASES$([ "${AUTOBAHN_SKIP_DEFLATE:-0}" = 1 ] && echo ' minus 12.*,13.*'))"
  t0=$(date +%s)
  crc=0
  # The client stops by itself at the deadline and still asks for the report
  # (bounded by 600 s); `timeout` is the backstop.
  deadline="${AUTOBAHN_TIMEOUT:-10800}"
  # (In the background so that a signal to this script is handled at once.)
  timeout -k 10 $(( deadline + 700 )) python3 "$HERE/autobahn_client.py" "$url" "$agent" \
    --deadline "$deadline" --quiet --log "$dir/client.json" 2> "$dir/client.log" &
  client_pid=$!
  PIDS+=("$client_pid")
  wait "$client_pid" || crc=$?
  echo $(( $(date +%s) - t0 )) > "$dir/seconds"
  [ -z "$gate_pid" ] || stop "$gate_pid"
  stop "$fuzz_pid"
  tail -n 1 "$dir/client.log"
  if [ "$crc" != 0 ]; then
    echo "autobahn-server.sh: client exited $crc for $config (see $dir/client.log)" >&2
    status=1
  fi
  "$AUTOBAHN/run.sh" summary "$dir" > "$OUT/$config.summary" || true
  cat "$OUT/$config.summary"
done

# One table over all configurations, then every case whose verdict changed
# relative to `direct`.
python3 - "$OUT" "${CONFIGS[@]}" > "$OUT/summary.md" <<'PY' || status=1
import json, os, sys
out, configs = sys.argv[1], sys.argv[2:]
order = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
# The HTML report shows these red (run.sh counts them as failures).
NOT_RED_CLOSE = ("OK", "INFORMATIONAL", "WRONG CODE", "FAILED BY CLIENT")
PASS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED")

def key(cid):
    return tuple(int(x) for x in cid.split("."))

def load(c):
    path = os.path.join(out, c, "index.json")
    if not os.path.exists(path):
        return None, None
    idx = json.load(open(path))
    agent, cases = next(iter(idx.items())) if idx else (None, {})
    return agent, cases

def red(v):
    return v["behavior"] not in PASS or v["behaviorClose"] not in NOT_RED_CLOSE

print("| configuration | agent | cases | " + " | ".join(order) + " | close not OK | red | client timeouts | seconds |")
print("|---|---|---|" + "---|" * len(order) + "---|---|---|---|")
reports = {}
for c in configs:
    agent, cases = load(c)
    secs = open(os.path.join(out, c, "seconds")).read().strip() if os.path.exists(os.path.join(out, c, "seconds")) else "?"
    timeouts = "?"
    log = os.path.join(out, c, "client.json")
    if os.path.exists(log):
        timeouts = sum(1 for r in json.load(open(log))["cases"] if r["outcome"] not in ("closed", "closed-error"))
    if cases is None:
        print(f"| {c} | | no report |" + " |" * (len(order) + 3) + f" {secs} |"); continue
    reports[c] = cases
    counts = {k: 0 for k in order}
    bad_close = 0
    for v in cases.values():
        counts[v["behavior"]] = counts.get(v["behavior"], 0) + 1
        if v["behaviorClose"] not in ("OK", "INFORMATIONAL"):
            bad_close += 1
    nred = sum(1 for v in cases.values() if red(v))
    print(f"| {c} | {agent} | {len(cases)} | " + " | ".join(str(counts[k]) for k in order)
          + f" | {bad_close} | {nred} | {timeouts} | {secs} |")

# Worse = the verdict or the close verdict moved down this ranking. The OK ->
# NON-STRICT moves of TIMING are tolerated (listed, not counted): whether the
# peer echoes the good message that arrived in the same read as the bad frame
# depends on timing, directly as well (see the Autobahn tool's README).
RANK = {"OK": 0, "NON-STRICT": 1, "INFORMATIONAL": 1, "UNIMPLEMENTED": 2}
CLOSE_RANK = {"OK": 0, "INFORMATIONAL": 0, "WRONG CODE": 1, "FAILED BY CLIENT": 1}
TIMING = {"3.2", "3.3", "3.4", "4.1.3", "4.1.4", "4.1.5", "4.2.3", "4.2.4", "4.2.5"}

def rank(v):
    return RANK.get(v["behavior"], 3), CLOSE_RANK.get(v["behaviorClose"], 3)

def show(v):
    return "—" if v is None else f"{v['behavior']} / {v['behaviorClose']}"

worse = 0
base = reports.get("direct")
earlier = False
if base is None:
    agent, base = load("direct")
    earlier = base is not None
    print("\nNo `direct` configuration in this run: " + (
        "comparing with the `direct` report of an earlier run, on the cases both ran." if earlier else "no comparison."))
for c in configs:
    if c == "direct" or base is None or c not in reports:
        continue
    cases = reports[c]
    ids = set(base) & set(cases) if earlier else set(base) | set(cases)
    changed, got_worse, tolerated = [], [], []
    for cid in sorted(ids, key=key):
        d, v = base.get(cid), cases.get(cid)
        codes = ""
        if v is None:
            verdict = "**worse: no result through wsgate**"
            got_worse.append(cid)
        elif d is None:
            verdict = "not run directly"
        elif (d["behavior"], d["behaviorClose"]) == (v["behavior"], v["behaviorClose"]):
            continue
        else:
            (b0, c0), (b1, c1) = rank(d), rank(v)
            if red(v) and not red(d):
                verdict = "**worse: red through wsgate only**"
                got_worse.append(cid)
            elif (b1 > b0 or c1 > c0) and cid in TIMING and (d["behavior"], v["behavior"]) == ("OK", "NON-STRICT") \
                    and c1 <= c0:
                verdict = "less strict (timing-dependent case, tolerated)"
                tolerated.append(cid)
            elif b1 > b0 or c1 > c0:
                verdict = "**worse**"
                got_worse.append(cid)
            elif b1 < b0 or c1 < c0:
                verdict = "better"
            else:
                verdict = "changed"
            codes = (f"; close codes {d.get('localCloseCode')}/{d.get('remoteCloseCode')}"
                     f" → {v.get('localCloseCode')}/{v.get('remoteCloseCode')}")
        changed.append(f"| {cid} | {show(d)} | {show(v)} | {verdict}{codes} |")
    worse += len(got_worse)
    print(f"\n### {c} vs direct: {len(changed)} case(s) changed, {len(got_worse)} worse"
          + (": " + " ".join(got_worse) if got_worse else "")
          + (f" ({len(tolerated)} timing-dependent OK → NON-STRICT tolerated)" if tolerated else ""))
    if changed:
        print("\n| case | direct (behavior / close) | " + c + " | verdict (close codes sent by fuzzing server/client: direct → " + c + ") |")
        print("|---|---|---|---|")
        print("\n".join(changed))
sys.exit(1 if worse else 0)
PY
cat "$OUT/summary.md"
exit $status
