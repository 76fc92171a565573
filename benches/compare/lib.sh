# Shared by compare.sh and hold.sh (sourced, not run): build wsgate, raise
# the descriptor limit, make a run directory, and stop everything a run
# started when the script exits. Expects ROOT and say() from the caller.

# --- the machine ---------------------------------------------------------------
for tool in taskset python3; do
  command -v "$tool" >/dev/null 2>&1 || { say "$tool is required"; exit 1; }
done
if [ "$(nproc)" -lt 2 ]; then
  say "needs 2 cores (proxy on core 0, load on core 1); this machine has $(nproc)"
  exit 1
fi

# --- wsgate -------------------------------------------------------------------
if [ -z "${WSGATE:-}" ]; then
  cargo build --release --quiet
  export WSGATE="$ROOT/target/release/wsgate"
fi

# --- descriptors: as many as the hard limit allows ----------------------------
ulimit -n "$(ulimit -Hn)"

# --- run, and stop everything on the way out ----------------------------------
COMPARE_RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/wsgate-compare.XXXXXX")"
export COMPARE_RUN_DIR
chmod 755 "$COMPARE_RUN_DIR"
driver=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM HUP
  if [ -n "$driver" ] && kill -0 "$driver" 2>/dev/null; then
    kill -TERM "$driver" 2>/dev/null || true
    wait "$driver" 2>/dev/null || true
  fi
  # Whatever the driver started and did not stop: each in its own process
  # group, recorded by id.
  if [ -f "$COMPARE_RUN_DIR/pids" ]; then
    while read -r pid; do
      if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        sleep 0.5
        kill -KILL -- "-$pid" 2>/dev/null || true
      fi
    done <"$COMPARE_RUN_DIR/pids"
  fi
  if [ -z "${KEEP_RUN_DIR:-}" ]; then rm -rf "$COMPARE_RUN_DIR"; else say "kept $COMPARE_RUN_DIR"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Runs one driver script (python3 FILE) in the background, so that a
# signal reaches the cleanup above, and exits with its status.
run_driver() {
  local start status=0
  start=$(date +%s)
  python3 "$1" &
  driver=$!
  wait "$driver" || status=$?
  driver=""
  say "done in $(($(date +%s) - start)) s"
  exit "$status"
}
