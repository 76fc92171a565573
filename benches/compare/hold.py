#!/usr/bin/env python3
"""Scale test: as many idle sessions as the descriptor limit allows, held
for a minute through one proxy, then every one of them checked alive.

Run it through benches/compare/hold.sh, which builds wsgate, raises the
descriptor limit to the hard limit and cleans up on exit. It reuses the
process and /proc helpers of compare.py (same proxies, same pinning: the
proxy on core 0; the echo backend, the load and this script on core 1).

A single-process proxy holds two descriptors per session (client and
backend), so SESSIONS defaults to (limit - 100) / 2. The load is spread
over CLIENT_PROCS `wsgate bench --mode idle` processes, so that no process
but the proxy needs more than half of the limit; the echo backend holds
one descriptor per session.

While the sessions are held, every second it samples the proxy's RSS,
descriptors and CPU time (utime + stime, all its processes), and the
kernel's memory (Slab and socket buffers from /proc/meminfo and
/proc/net/sockstat). The figures:

- RSS per session: proxy RSS while holding minus RSS before, / sessions;
- CPU while holding: the proxy's CPU time over the hold window, as a share
  of one core and per session per minute;
- kernel memory per socket: Slab growth / the sockets this host opened for
  the test (4 per session: bench, proxy x2, echo), so a proxy host pays
  twice that per session;
- alive: the sessions whose ping got its pong after the hold, summed over
  every bench process.

From these it projects the memory of a host holding 1,000,000 sessions
(see the README for the arithmetic and the kernel settings it needs).

Environment (all optional):
  PROXIES       comma list of compare.py proxies (default wsgate-frames,wsgate-tunnel)
  SESSIONS      sessions to hold (default: what fits under the descriptor limit)
  HOLD          hold time (default 60s)
  RAMP          time over which the sessions open (default 10s)
  CLIENT_PROCS  bench processes sharing the sessions (default 4)
  OUT           output directory (default reports/hold)
"""

import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import compare as c



def setting(name, default, parse, what):
    """An environment setting, or exit naming it when it does not parse."""
    text = c.env(name, default)
    try:
        value = parse(text)
    except ValueError:
        sys.exit(f"hold: {name}={text!r} is not {what}")
    if value <= 0:
        sys.exit(f"hold: {name}={text!r} must be above zero")
    return value


HOLD = setting("HOLD", "60s", c.parse_secs, "a duration such as 60s or 500ms")
RAMP = setting("RAMP", "10s", c.parse_secs, "a duration such as 10s or 500ms")
CLIENT_PROCS = setting("CLIENT_PROCS", "4", int, "a whole number")
SESSIONS_WANTED = setting("SESSIONS", str(c.IDLE_FIT), int, "a whole number")
SESSIONS = min(SESSIONS_WANTED, c.IDLE_FIT)
PROXIES = [p.strip() for p in c.env("PROXIES", "wsgate-frames,wsgate-tunnel").split(",") if p.strip()]
OUT = os.path.abspath(c.env("OUT", os.path.join(c.ROOT, "reports", "hold")))
# The projection's target: sessions on one host.
PROJECTED_SESSIONS = 1_000_000
# Sockets this host opens per session in the test: the bench's, the
# proxy's two, and the echo backend's.
SOCKETS_PER_SESSION = 4


def meminfo():
    """Slab and MemAvailable in KiB."""
    values = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            key, rest = line.split(":", 1)
            values[key] = int(rest.split()[0])
    return values


def sockstat():
    """TCP sockets in use and their buffer memory (KiB) from /proc/net/sockstat."""
    with open("/proc/net/sockstat") as fh:
        for line in fh:
            if line.startswith("TCP:"):
                fields = line.split()[1:]
                values = dict(zip(fields[::2], map(int, fields[1::2])))
                return values.get("inuse", 0), values.get("mem", 0) * os.sysconf("SC_PAGE_SIZE") // 1024
    return 0, 0


def split(total, parts):
    """`total` as `parts` near-equal positive counts."""
    parts = min(parts, total)
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def hold_one(name):
    tag = f"hold-{name}"
    echo, echo_port = c.start_echo(tag)
    result = dict(proxy=name, sessions=SESSIONS, hold_s=HOLD, client_procs=CLIENT_PROCS)
    proc = None
    benches = []
    try:
        proc, port, _log = c.start_proxy(name, None, echo_port, tag)
        time.sleep(0.5)
        pids = c.cpu_seconds(proc.pid)[1]
        fds_before = c.fd_count(pids)
        rss_before = c.rss_kib(pids)
        mem_before = meminfo()
        result.update(rss_kib_before=rss_before, fds_before=fds_before,
                      slab_kib_before=mem_before["Slab"], tcp_before=sockstat())
        url = c.url_for(port, None)
        timeout = max(10.0, RAMP)
        for i, n in enumerate(split(SESSIONS, CLIENT_PROCS)):
            argv = ["taskset", "-c", str(c.LOAD_CORE), c.WSGATE, "bench", url, "--mode", "idle",
                    "--connections", str(n), "--ramp", c.fmt_secs(RAMP),
                    "--duration", c.fmt_secs(HOLD), "--timeout", c.fmt_secs(timeout), "--json"]
            out = open(os.path.join(c.RUN_DIR, tag, f"bench-{i}.json"), "wb")
            err = open(os.path.join(c.RUN_DIR, tag, f"bench-{i}.err"), "wb")
            b = subprocess.Popen(argv, stdout=out, stderr=err, start_new_session=True)
            c.STARTED.append(b)
            c.note_pid(b.pid)
            benches.append((b, out.name, err.name))
        t0 = time.monotonic()
        # Every session is open once the proxy holds two descriptors for each.
        want_fds = fds_before + 2 * SESSIONS
        held_at = None
        series = []
        deadline = t0 + RAMP + HOLD + 3 * timeout + 60
        while any(b.poll() is None for b, _, _ in benches):
            now = time.monotonic()
            cpu, pids = c.cpu_seconds(proc.pid)
            fds = c.fd_count(pids)
            mem = meminfo()
            inuse, buf_kib = sockstat()
            series.append(dict(t=round(now - t0, 2), rss_kib=c.rss_kib(pids), fds=fds, cpu_s=cpu,
                               slab_kib=mem["Slab"], tcp_inuse=inuse, tcp_buf_kib=buf_kib))
            if held_at is None and fds >= want_fds:
                held_at = now - t0
            if now > deadline:
                for b, _, _ in benches:
                    b.kill()
                result["note"] = "bench killed: ran far beyond its own deadline"
                break
            time.sleep(1.0)
        reports = []
        for b, out_path, err_path in benches:
            b.wait()
            try:
                with open(out_path) as fh:
                    reports.append(json.load(fh))
            except ValueError:
                reports.append(dict(ok=False, failure=c.tail(err_path)))
        result["alive"] = sum(r.get("alive") or 0 for r in reports)
        result["opened"] = sum(r.get("connections_opened") or 0 for r in reports)
        result["errors"] = sum((r.get("errors") or {}).get("total", 0) for r in reports)
        result["failures"] = [r.get("failure") for r in reports if r.get("failure")]
        result["open_time_ms"] = max((r.get("open_time_ms") or 0) for r in reports)
        result["proxy_alive_after"] = proc.poll() is None
        result["held_at_s"] = held_at
        # The hold window: from one second after every session was open
        # until a second before the first bench starts its final pings.
        if held_at is not None:
            window = [s for s in series if held_at + 1 <= s["t"] <= held_at + HOLD - 1]
        else:
            window = []
        result["hold_samples"] = len(window)
        if len(window) >= 2:
            first, last = window[0], window[-1]
            span = last["t"] - first["t"]
            rss_hold = statistics.median(s["rss_kib"] for s in window)
            slab_hold = statistics.median(s["slab_kib"] for s in window)
            result.update(
                window_s=span,
                rss_kib_hold=rss_hold,
                rss_kib_per_session=(rss_hold - rss_before) / SESSIONS,
                fds_hold=max(s["fds"] for s in window),
                cpu_s_hold=last["cpu_s"] - first["cpu_s"],
                cpu_pct_hold=100.0 * (last["cpu_s"] - first["cpu_s"]) / span if span else None,
                slab_kib_hold=slab_hold,
                kernel_kib_per_socket=(slab_hold - mem_before["Slab"]) / (SOCKETS_PER_SESSION * SESSIONS),
                tcp_inuse_hold=max(s["tcp_inuse"] for s in window),
                tcp_buf_kib_hold=max(s["tcp_buf_kib"] for s in window),
            )
        result["series"] = series
    except Exception as e:  # noqa: BLE001 - reported in the results
        result["failure"] = str(e)
    finally:
        for b, _, _ in benches:
            if b.poll() is None:
                b.kill()
        if proc is not None:
            c.stop(proc)
        c.stop(echo)
    return result


def fmt(value, spec, dash="—"):
    return dash if value is None else format(value, spec)


def projection(r):
    """Memory of one host holding PROJECTED_SESSIONS sessions, from the
    measured per-session figures: (user KiB, kernel KiB, total GiB)."""
    per_user = r.get("rss_kib_per_session")
    per_socket = r.get("kernel_kib_per_socket")
    if per_user is None or per_socket is None:
        return None
    user = r["rss_kib_before"] + per_user * PROJECTED_SESSIONS
    kernel = 2 * per_socket * PROJECTED_SESSIONS
    return user, kernel, (user + kernel) / 1024 / 1024


def main():
    c.RUN_DIR = os.environ.get("COMPARE_RUN_DIR") or c.tempfile.mkdtemp(prefix="wsgate-hold-")
    os.makedirs(OUT, exist_ok=True)
    os.sched_setaffinity(0, {c.LOAD_CORE})
    for p in PROXIES:
        if p not in c.ALL_PROXIES or p == "direct":
            sys.exit(f"hold: unknown proxy {p!r} (known: {', '.join(x for x in c.ALL_PROXIES if x != 'direct')})")
    began = time.monotonic()
    info = c.machine()
    info["started"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    if SESSIONS < SESSIONS_WANTED:
        print(f"hold: lowered from {SESSIONS_WANTED} to {SESSIONS} sessions: the proxy holds 2 "
              f"descriptors per session and the limit is {c.NOFILE_SOFT}", flush=True)
    print(f"hold: {SESSIONS} sessions for {c.fmt_secs(HOLD)} through {', '.join(PROXIES)}; "
          f"descriptors {c.NOFILE_SOFT} (hard {c.NOFILE_HARD}); {CLIENT_PROCS} bench processes", flush=True)
    results = []
    for p in PROXIES:
        r = hold_one(p)
        results.append(r)
        print(f"   {p:14} alive {r.get('alive')}/{SESSIONS}  RSS/session {fmt(r.get('rss_kib_per_session'), '.2f')} KiB  "
              f"CPU while holding {fmt(r.get('cpu_s_hold'), '.2f')} s over {fmt(r.get('window_s'), '.0f')} s  "
              f"errors {r.get('errors')}{'  FAILED: ' + r['failure'] if r.get('failure') else ''}", flush=True)
    info["runtime_s"] = round(time.monotonic() - began)
    with open(os.path.join(OUT, "results.json"), "w") as fh:
        json.dump(dict(machine=info, results=results), fh, indent=2)

    md = [f"# {SESSIONS} idle sessions held for {c.fmt_secs(HOLD)} — {info['started']}", "",
          f"- machine: {info['cpu']}, {info['memory_gib']} GiB, kernel {info['kernel']}; "
          f"wsgate {info['wsgate_commit']} (WORKER_THREADS=1) on core 0; "
          f"`wsgate echo` and {CLIENT_PROCS} × `wsgate bench --mode idle` on core 1",
          f"- descriptors {c.NOFILE_SOFT} (hard {c.NOFILE_HARD}); sessions opened over {c.fmt_secs(RAMP)}; "
          f"runtime {info['runtime_s']} s", "",
          "| proxy | alive after hold | RSS before → holding (MiB) | RSS per session (KiB) | proxy fds | "
          "CPU while holding | kernel slab per socket (KiB) | socket buffers (KiB) | errors |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        rss = (f"{r['rss_kib_before'] / 1024:.1f} → {r['rss_kib_hold'] / 1024:.1f}"
               if r.get("rss_kib_hold") else "—")
        cpu = (f"{r['cpu_s_hold']:.2f} s in {r['window_s']:.0f} s ({r['cpu_pct_hold']:.2f} %)"
               if r.get("cpu_pct_hold") is not None else "—")
        md.append(f"| {r['proxy']} | {r.get('alive')}/{SESSIONS} | {rss} | {fmt(r.get('rss_kib_per_session'), '.2f')} | "
                  f"{fmt(r.get('fds_hold'), 'd')} | {cpu} | {fmt(r.get('kernel_kib_per_socket'), '.2f')} | "
                  f"{fmt(r.get('tcp_buf_kib_hold'), 'd')} | {r.get('errors')} |")
    md += ["", f"Projection to {PROJECTED_SESSIONS:,} sessions on one host (proxy RSS before + RSS per "
           f"session × sessions; kernel: 2 sockets per session × slab per socket):", ""]
    for r in results:
        proj = projection(r)
        if proj:
            user, kernel, total = proj
            md.append(f"- {r['proxy']}: proxy RSS {user / 1024 / 1024:.2f} GiB + kernel "
                      f"{kernel / 1024 / 1024:.2f} GiB = {total:.2f} GiB")
    text = "\n".join(md)
    with open(os.path.join(OUT, "results.md"), "w") as fh:
        fh.write(text + "\n")
    print("\n" + text)
    ok = all(r.get("alive") == SESSIONS and not r.get("errors") and not r.get("failure")
             and r.get("proxy_alive_after") for r in results)
    if not ok:
        sys.exit("hold: not every session stayed alive (see above)")


if __name__ == "__main__":
    for sig in (c.signal.SIGTERM, c.signal.SIGINT, c.signal.SIGHUP):
        c.signal.signal(sig, c.on_signal)
    try:
        main()
    finally:
        c.stop_all()
