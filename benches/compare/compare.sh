#!/usr/bin/env bash
# Side by side with nginx and HAProxy: wsgate in `frames` and `tunnel` mode,
# nginx, HAProxy and a direct connection, each in front of the same
# `wsgate echo` backend, loaded by `wsgate bench`. The proxy runs pinned to
# core 0, the bench and the echo backend to core 1. The deciding figure is
# the proxy's CPU time per message; see compare.py for what is measured.
#
# Usage: benches/compare/compare.sh
#   DURATION=10s WARMUP=2s  the measured window and warm-up of every run
#   PROXIES=nginx,wsgate-frames  SCENARIOS=small,churn  to run a subset
#   (more settings in the header of compare.py)
#
# Writes reports/compare/results.md (tables), results.json, raw/*.json (one
# per run) and one SVG chart per scenario. nginx and HAProxy are installed
# with apt-get when missing; none of them runs as a system service: each
# gets its own config, pid file and logs in a temporary directory, and
# everything started is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

say() { printf 'compare: %s\n' "$*" >&2; }

# --- nginx and HAProxy -------------------------------------------------------
export PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
if ((${#missing[@]})); then
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { say "need root (or sudo) to install ${missing[*]}"; exit 1; }
    SUDO=(sudo)
  fi
  pkgs=()
  for m in "${missing[@]}"; do
    if [ "$m" = nginx ]; then
      # nginx-light is enough (http, ssl, upstream); fall back to nginx.
      if apt-cache show nginx-light >/dev/null 2>&1; then pkgs+=(nginx-light); else pkgs+=(nginx); fi
    else
      pkgs+=("$m")
    fi
  done
  say "installing ${pkgs[*]}"
  # Keep the packages' init scripts from starting system services.
  policy_added=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${SUDO[@]}" chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
  if [ "$policy_added" = 1 ]; then "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d; fi
fi
command -v openssl >/dev/null 2>&1 || { say "openssl is required"; exit 1; }

# shellcheck source=benches/compare/lib.sh
. "$ROOT/benches/compare/lib.sh"
run_driver "$ROOT/benches/compare/compare.py"
