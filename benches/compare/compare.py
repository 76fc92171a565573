#!/usr/bin/env python3
"""Side-by-side load test: wsgate (frames and tunnel), nginx, HAProxy and a
direct connection, all in front of the same echo backend.

Run it through benches/compare/compare.sh, which installs what is missing,
builds wsgate, raises the descriptor limit and cleans up on exit. Only the
standard library is used.

Layout of one run:
  core 0   the proxy under test (taskset -c 0; one worker / thread)
  core 1   `wsgate bench` (the load), `wsgate echo` (the backend) and this
           script

For every (proxy, scenario) a fresh echo backend and a fresh proxy are
started. The proxy's CPU time is utime + stime from /proc/PID/stat, summed
over every process of the proxy (nginx: master and worker), sampled at the
start and at the end of the bench's measured window (after its warm-up),
and divided by the messages (or sessions) the bench counted in that window.

Environment (all optional):
  DURATION    measured window per run (default 10s)
  WARMUP      warm-up before it (default 2s)
  PROXIES     comma list (default nginx,haproxy,wsgate-frames,wsgate-tunnel,direct)
  SCENARIOS   comma list (default small,large,rate,idle,churn,tls-small,tls-churn)
  IDLE_CONNECTIONS   idle connections (default 10000, lowered to what fits
                     into the descriptor limit of a single-process proxy)
  IDLE_RAMP   time over which the idle connections open (default 5s)
  CHURN_CONNECTIONS  churn slots (default 10)
  RATE        open-loop rate of the `rate` scenario (default 10000)
  ROUNDS      runs per (proxy, scenario), in rotating order (default 1); the
              tables then give medians, with the range of the deciding figure
  PROXY_LOGS  1 (default): every proxy writes one log line per session to
              a file, as in production; 0: no per-session logging anywhere
  NGINX_SSL_PROTOCOLS  nginx's ssl_protocols (default "TLSv1.2 TLSv1.3"; the
              1.22 default "TLSv1 TLSv1.1 TLSv1.2" makes it answer with 1.2)
  OUT         output directory (default reports/compare)
  WSGATE      the wsgate binary (default target/release/wsgate)
  COMPARE_RUN_DIR    scratch directory for configs, pid files and logs
"""

import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROXY_CORE = 0
LOAD_CORE = 1

ALL_PROXIES = ["nginx", "haproxy", "wsgate-frames", "wsgate-tunnel", "direct"]


def parse_secs(text):
    """`10s`, `500ms`, `2m` or a bare number of seconds."""
    t = text.strip()
    for suffix, mult in (("ms", 1e-3), ("s", 1.0), ("m", 60.0)):
        if t.endswith(suffix):
            return float(t[: -len(suffix)]) * mult
    return float(t)


def fmt_secs(secs):
    ms = int(round(secs * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def env(name, default):
    value = os.environ.get(name, "").strip()
    return value if value else default


# --------------------------------------------------------------------------
# Settings

DURATION = parse_secs(env("DURATION", "10s"))
WARMUP = parse_secs(env("WARMUP", "2s"))
IDLE_RAMP = parse_secs(env("IDLE_RAMP", "5s"))
CHURN_CONNECTIONS = int(env("CHURN_CONNECTIONS", "10"))
ROUNDS = max(1, int(env("ROUNDS", "1")))
RATE = int(env("RATE", "10000"))
PROXY_LOGS = env("PROXY_LOGS", "1") != "0"
# nginx 1.22 enables only up to TLS 1.2 by default (1.23.4 added 1.3);
# HAProxy and wsgate offer 1.3, so nginx gets the same for a fair match.
NGINX_SSL_PROTOCOLS = env("NGINX_SSL_PROTOCOLS", "TLSv1.2 TLSv1.3")
OUT = os.path.abspath(env("OUT", os.path.join(ROOT, "reports", "compare")))
WSGATE = os.path.abspath(env("WSGATE", os.path.join(ROOT, "target", "release", "wsgate")))
# The bench counts from its own start, which is a few ms after the process
# is spawned (runtime start, option parsing, then `now + 10ms`).
BENCH_START_OFFSET = float(env("BENCH_START_OFFSET", "0.015"))

import resource  # noqa: E402

NOFILE_SOFT, NOFILE_HARD = resource.getrlimit(resource.RLIMIT_NOFILE)
# A single-process proxy holds two sockets per session plus a few of its
# own (listener, epoll, logs, std streams): that is what has to fit.
PROXY_FD_RESERVE = 100
IDLE_WANTED = int(env("IDLE_CONNECTIONS", "10000"))
IDLE_FIT = max(1, (NOFILE_SOFT - PROXY_FD_RESERVE) // 2)
IDLE_CONNECTIONS = min(IDLE_WANTED, IDLE_FIT)


def scenarios():
    d = ["--duration", fmt_secs(DURATION), "--warmup", fmt_secs(WARMUP)]
    small = ["--connections", "50", "--inflight", "4", "--size", "64"] + d
    churn = ["--mode", "churn", "--connections", str(CHURN_CONNECTIONS), "--size", "64"] + d
    return [
        dict(id="small", kind="echo", tls=False, args=small,
             title="64 B echo, closed loop: 50 connections × 4 in flight"),
        dict(id="large", kind="echo", tls=False,
             args=["--connections", "10", "--inflight", "2", "--size", "64KiB"] + d,
             title="64 KiB echo, closed loop: 10 connections × 2 in flight"),
        dict(id="rate", kind="echo", tls=False,
             args=["--connections", "100", "--rate", str(RATE), "--size", "256"] + d,
             title=f"256 B echo, open loop: {RATE} msgs/s over 100 connections"),
        dict(id="idle", kind="idle", tls=False,
             args=["--mode", "idle", "--connections", str(IDLE_CONNECTIONS),
                   "--ramp", fmt_secs(IDLE_RAMP), "--duration", fmt_secs(DURATION)],
             title=f"{IDLE_CONNECTIONS} idle connections"),
        dict(id="churn", kind="churn", tls=False, args=churn,
             title=f"Connection churn: {CHURN_CONNECTIONS} slots of connect, upgrade, one 64 B echo, close"),
        dict(id="tls-small", kind="echo", tls=True, args=small,
             title="TLS: 64 B echo, closed loop: 50 connections × 4 in flight"),
        dict(id="tls-churn", kind="churn", tls=True, args=churn,
             title=f"TLS: connection churn, {CHURN_CONNECTIONS} slots (full TLS handshake or resumption, as each proxy does by default)"),
    ]


# --------------------------------------------------------------------------
# Processes

RUN_DIR = None
RESUMES = {}  # proxy -> TLS version, cipher and resumption seen by a probe
STARTED = []  # every Popen we started, killed on exit


def note_pid(pid):
    with open(os.path.join(RUN_DIR, "pids"), "a") as f:
        f.write(f"{pid}\n")


def spawn(argv, log_path, env_extra=None, core=None):
    """Starts a process in its own session (so its whole group can be
    stopped), optionally pinned to one core."""
    full_env = dict(os.environ)
    full_env.update(env_extra or {})
    if core is not None:
        argv = ["taskset", "-c", str(core)] + argv
    log = open(log_path, "ab")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            env=full_env, start_new_session=True)
    log.close()
    STARTED.append(proc)
    note_pid(proc.pid)
    return proc


def stop(proc, grace=3.0):
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    # nginx workers may outlive a killed master by a moment.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all():
    for proc in STARTED:
        try:
            stop(proc, grace=2.0)
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, log_path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening:\n{tail(log_path)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"not listening on {port} after {timeout}s:\n{tail(log_path)}")


def tail(path, lines=15):
    try:
        with open(path, "rb") as f:
            data = f.read()[-8000:].decode("utf-8", "replace")
        return "\n".join(data.splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------
# /proc sampling


def proc_table():
    """pid -> (ppid, cpu ticks) for every process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                text = f.read()
        except OSError:
            continue
        rest = text[text.rfind(")") + 2:].split()
        table[int(name)] = (int(rest[1]), int(rest[11]) + int(rest[12]))
    return table


def tree(root, table):
    pids = [root] if root in table else []
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _) in table.items():
            if ppid in pids and pid not in pids:
                pids.append(pid)
                changed = True
    return pids


def cpu_seconds(root):
    """utime + stime of `root` and all its descendants, in seconds, and
    the pids counted."""
    table = proc_table()
    pids = tree(root, table)
    return sum(table[p][1] for p in pids) / CLK_TCK, pids


def sched_seconds(pids):
    """Run time from schedstat (ns precision), summed over all threads."""
    total = 0
    for pid in pids:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
        except OSError:
            pass
    return total / 1e9


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def fd_count(pids):
    n = 0
    for pid in pids:
        try:
            n += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return n


def core_times(core):
    """(busy, total) jiffies of one core from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]
                total = sum(v[:8])
                return total - idle, total
    return 0, 0


class Sample:
    def __init__(self, root, echo_root):
        self.t = time.monotonic()
        self.cpu, self.pids = cpu_seconds(root) if root else (0.0, [])
        self.sched = sched_seconds(self.pids)
        self.echo_cpu = cpu_seconds(echo_root)[0] if echo_root else 0.0
        self.core0 = core_times(PROXY_CORE)


# --------------------------------------------------------------------------
# Configs and proxies


def render(template, values):
    with open(os.path.join(HERE, template)) as f:
        text = f.read()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
    left = [w for w in code.split() if w.startswith("@") and w.rstrip(";").endswith("@")]
    if left:
        raise RuntimeError(f"{template}: unfilled placeholders {left}")
    return text


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


class Tls:
    def __init__(self, run_dir):
        self.dir = os.path.join(run_dir, "tls")
        subprocess.run([os.path.join(ROOT, "tests", "support", "test-ca.sh"), self.dir],
                       check=True)
        self.ca = os.path.join(self.dir, "ca.pem")
        self.cert = os.path.join(self.dir, "cert.pem")
        self.key = os.path.join(self.dir, "key.pem")
        # HAProxy wants the chain and the key in one file.
        self.combined = os.path.join(self.dir, "haproxy.pem")
        with open(self.combined, "w") as out:
            for p in (self.cert, self.key):
                with open(p) as f:
                    out.write(f.read())
        os.chmod(self.dir, 0o755)


def start_proxy(name, tls, echo_port, tag):
    """Starts one proxy pinned to core 0. Returns (proc or None, port, log)."""
    d = os.path.join(RUN_DIR, tag)
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)  # the nginx worker runs as nobody
    port = free_port()
    log = os.path.join(d, "proxy.log")
    nofile = NOFILE_SOFT
    # Connection caps high enough not to be the limit, low enough that
    # HAProxy (which checks 2 descriptors per connection up front) starts.
    maxconn = max(IDLE_CONNECTIONS, (nofile - 60) // 2)
    if name == "direct":
        return None, echo_port, log
    if name == "nginx":
        conf = render("nginx.conf.in", {
            "DIR": d, "PORT": port, "ECHO_PORT": echo_port, "NOFILE": nofile,
            # nginx starts closing connections that have not sent their
            # request yet once fewer than 1/16 of its connection slots are
            # free: give it slots for two per session plus that margin. The
            # descriptors themselves are bounded by worker_rlimit_nofile.
            "CONNECTIONS": max(nofile, (2 * IDLE_CONNECTIONS + 50) * 17 // 15),
            "SSL": "ssl" if tls else "",
            "SSL_CERT": (f"ssl_certificate {tls.cert};\n        "
                         f"ssl_protocols {NGINX_SSL_PROTOCOLS};") if tls else "",
            "SSL_KEY": f"ssl_certificate_key {tls.key};" if tls else "",
            "ACCESS_LOG": f"access_log {d}/nginx-access.log;" if PROXY_LOGS else "access_log off;",
        })
        path = write(os.path.join(d, "nginx.conf"), conf)
        argv = ["nginx", "-p", d + "/", "-e", os.path.join(d, "nginx-error.log"), "-c", path]
        env_extra = {}
    elif name == "haproxy":
        conf = render("haproxy.cfg.in", {
            "DIR": d, "PORT": port, "ECHO_PORT": echo_port, "MAXCONN": maxconn,
            "SSL": f"ssl crt {tls.combined} alpn http/1.1" if tls else "",
            # HAProxy logs to stdout here, which goes to proxy.log.
            "LOG_GLOBAL": "log stdout format raw local0 info" if PROXY_LOGS else "",
            "LOG_DEFAULTS": "log global\n    option httplog" if PROXY_LOGS else "",
        })
        path = write(os.path.join(d, "haproxy.cfg"), conf)
        argv = ["haproxy", "-db", "-f", path]
        env_extra = {}
    else:
        mode = name.split("-", 1)[1]
        tls_block = (f"    tls:\n      cert: {tls.cert}\n      key: {tls.key}" if tls else "")
        conf = render("wsgate.yaml.in", {
            "PORT": port, "ECHO_PORT": echo_port, "MODE": mode, "MAXCONN": maxconn,
            "TLS": tls_block,
        })
        path = write(os.path.join(d, "wsgate.yaml"), conf)
        argv = [WSGATE, "run", "--config", path]
        # wsgate logs one INFO line per session; without logs only warnings.
        env_extra = {"WORKER_THREADS": "1", "RUST_LOG": "info" if PROXY_LOGS else "warn"}
    proc = spawn(argv, log, env_extra, core=PROXY_CORE)
    wait_port(port, proc, log)
    if name == "nginx":
        # Wait for the worker, which is what accepts.
        deadline = time.monotonic() + 5
        while len(cpu_seconds(proc.pid)[1]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    return proc, port, log


def start_echo(tag):
    d = os.path.join(RUN_DIR, tag)
    os.makedirs(d, exist_ok=True)
    port = free_port()
    log = os.path.join(d, "echo.log")
    proc = spawn([WSGATE, "echo", "--listen", f"127.0.0.1:{port}"], log,
                 {"WORKER_THREADS": "1", "RUST_LOG": "warn"}, core=LOAD_CORE)
    wait_port(port, proc, log)
    return proc, port


def url_for(port, tls):
    return f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/echo"


def bench_argv(url, args, tls):
    argv = ["taskset", "-c", str(LOAD_CORE), WSGATE, "bench", url] + args + ["--json"]
    if tls:
        argv += ["--ca", tls.ca]
    return argv


def tls_probe(port, ca):
    """The TLS version and cipher the proxy picks for a client offering
    TLS 1.2 and 1.3, and whether it resumes a session (a second connection
    with the first one's ticket), as the bench's client does in churn."""
    import ssl
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["http/1.1"])
    session = None
    reused = []
    picked = None
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as s:
                s.sendall(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
                s.recv(4096)  # the 101; TLS 1.3 tickets arrive with or before it
                reused.append(s.session_reused)
                picked = picked or f"{s.version()} {s.cipher()[0]}"
                session = s.session
                s.sendall(b"\x88\x82\x00\x00\x00\x00\x03\xe8")  # close 1000, masked
    return f"{picked}, resumption {'yes' if any(reused[1:]) else 'no'}"


# --------------------------------------------------------------------------
# One run


def verify(name, tls_obj, tag):
    """Short echo runs of every kind of message through the proxy; every
    echo is checked byte for byte by the bench. Returns a list of failures."""
    echo, echo_port = start_echo(tag)
    failures = []
    proc = None
    try:
        proc, port, log = start_proxy(name, tls_obj, echo_port, tag)
        url = url_for(port, tls_obj)
        for extra in (["--size", "64"], ["--size", "64KiB"], ["--size", "1000", "--text"],
                      ["--size", "0"]):
            args = ["--connections", "4", "--inflight", "2", "--duration", "500ms",
                    "--warmup", "0", "--ramp", "0"] + extra
            r = subprocess.run(bench_argv(url, args, tls_obj), capture_output=True, text=True,
                               timeout=60)
            try:
                rep = json.loads(r.stdout)
            except ValueError:
                failures.append(f"{' '.join(extra)}: no JSON (exit {r.returncode}): {r.stderr.strip()[-500:]}")
                continue
            if not rep.get("ok") or rep["errors"]["total"] or rep["messages"] == 0:
                failures.append(f"{' '.join(extra)}: {rep.get('failure')} errors={rep['errors']} "
                                f"first={rep.get('first_errors')}")
        if tls_obj is not None and name != "direct":
            try:
                RESUMES[name] = tls_probe(port, tls_obj.ca)
            except Exception as e:  # noqa: BLE001 - informational only
                RESUMES[name] = f"probe failed: {e}"
        if proc is not None and proc.poll() is not None:
            failures.append(f"proxy exited with {proc.returncode}: {tail(log)}")
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        failures.append(str(e))
    finally:
        if proc is not None:
            stop(proc)
        stop(echo)
    return failures


def run_one(name, sc, tls_obj, rnd=0):
    tag = f"{sc['id']}-{name}" + (f"-{rnd + 1}" if ROUNDS > 1 else "")
    raw_path = os.path.join(OUT, "raw", f"{tag}.json")
    echo, echo_port = start_echo(tag)
    result = dict(proxy=name, scenario=sc["id"], round=rnd + 1, started=datetime.datetime.now().isoformat(timespec="seconds"))
    proc = None
    try:
        proc, port, log = start_proxy(name, tls_obj, echo_port, tag)
        root = proc.pid if proc else None
        time.sleep(0.3)
        argv = bench_argv(url_for(port, tls_obj), sc["args"], tls_obj)
        result["bench_command"] = " ".join(argv)
        before = Sample(root, echo.pid)
        result["rss_kib_before"] = rss_kib(before.pids)
        out_path = os.path.join(RUN_DIR, tag, "bench.json")
        err_path = os.path.join(RUN_DIR, tag, "bench.err")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            bench = subprocess.Popen(argv, stdout=out, stderr=err, start_new_session=True)
        t0 = time.monotonic()
        STARTED.append(bench)
        note_pid(bench.pid)
        idle = sc["kind"] == "idle"
        marks = {} if idle else {"start": t0 + BENCH_START_OFFSET + WARMUP,
                                 "end": t0 + BENCH_START_OFFSET + WARMUP + DURATION}
        samples = {}
        series = []  # (t, rss KiB, fds) of the proxy
        next_rss = t0
        limit = t0 + WARMUP + DURATION + 120
        while bench.poll() is None:
            now = time.monotonic()
            for key, at in marks.items():
                if key not in samples and now >= at:
                    samples[key] = Sample(root, echo.pid)
            if now >= next_rss:
                # The processes found by the last CPU sample, not found
                # anew: that means reading every process's stat, and the
                # scan, four times a second on the load's core, alone raised
                # the p99 of a proxied open-loop run from 0.11 to 0.34 ms.
                pids = samples.get("start", before).pids
                series.append((round(now - t0, 3), rss_kib(pids), fd_count(pids) if idle else None))
                next_rss = now + (0.5 if idle else 0.25)
            if now > limit:
                bench.kill()
                result["note"] = "bench killed: ran far beyond its own deadline"
                break
            pending = [at for k, at in marks.items() if k not in samples] + [next_rss]
            time.sleep(max(0.0, min(min(pending) - time.monotonic(), 0.1)))
        bench.wait()
        after = Sample(root, echo.pid)
        # A churn run ends right at the end of its window, often before the
        # end mark: the proxy has nothing left to do by then.
        for key in marks:
            samples.setdefault(key, after)
        if idle:
            samples = {"start": before, "end": after}
        result["bench_exit"] = bench.returncode
        result["bench_stderr"] = tail(err_path, 20)
        try:
            with open(out_path) as f:
                rep = json.load(f)
        except ValueError:
            rep = None
        result["bench"] = rep
        result["proxy_alive_after"] = (proc.poll() is None) if proc else True
        if proc and proc.poll() is not None:
            result["proxy_exit"] = proc.returncode
            result["proxy_log_tail"] = tail(log, 30)
        result["rss_series"] = series
        a, b = samples.get("start"), samples.get("end")
        if a and b:
            window = b.t - a.t
            result["window_s"] = window
            result["proxy_cpu_s"] = b.cpu - a.cpu if root else None
            result["proxy_sched_s"] = b.sched - a.sched if root else None
            result["echo_cpu_s"] = b.echo_cpu - a.echo_cpu
            busy = b.core0[0] - a.core0[0]
            total = b.core0[1] - a.core0[1]
            result["core0_busy_pct"] = 100.0 * busy / total if total else None
            result["proxy_pids"] = b.pids
        result["rss_kib_end"] = rss_kib(after.pids) if root else None
        if idle and rep:
            open_s = (rep.get("open_time_ms") or 0) / 1000.0
            hold = [r for (t, r, _) in series if open_s + 0.5 <= t <= open_s + DURATION]
            fds = [n for (t, _, n) in series if open_s + 0.5 <= t <= open_s + DURATION]
            result["rss_kib_hold"] = statistics.median(hold) if hold else (max(r for _, r, _ in series) if series else None)
            result["fds_hold"] = max(fds) if fds else None
            result["rss_hold_samples"] = len(hold)
    except Exception as e:  # noqa: BLE001 - reported in the results
        result["failure"] = str(e)
    finally:
        if proc is not None:
            stop(proc)
        stop(echo)
    with open(raw_path, "w") as f:
        json.dump(result, f, indent=2)
    return result


# --------------------------------------------------------------------------
# Results


def summarize(r, sc):
    """The figures of one run for the tables."""
    rep = r.get("bench") or {}
    s = dict(proxy=r["proxy"], failure=r.get("failure") or rep.get("failure"))
    kind = sc["kind"]
    count = rep.get("sessions") if kind == "churn" else rep.get("messages")
    if kind == "idle":
        count = rep.get("connections_opened")
    s["count"] = count
    cpu = r.get("proxy_cpu_s")
    s["cpu_us"] = cpu * 1e6 / count if (cpu is not None and count) else None
    sched = r.get("proxy_sched_s")
    s["sched_us"] = sched * 1e6 / count if (sched is not None and count) else None
    s["cpu_pct"] = 100.0 * cpu / r["window_s"] if (cpu is not None and r.get("window_s")) else None
    s["core0_pct"] = r.get("core0_busy_pct")
    s["rate"] = rep.get("sessions_per_sec") if kind == "churn" else rep.get("messages_per_sec")
    lat = rep.get("latency_us") or {}
    s["p50"], s["p99"], s["p999"] = lat.get("p50"), lat.get("p99"), lat.get("p999")
    s["errors"] = (rep.get("errors") or {}).get("total")
    s["first_errors"] = rep.get("first_errors") or {}
    series = [rss for (_, rss, _) in r.get("rss_series") or [] if rss]
    s["rss_mib"] = max(series) / 1024 if series and r["proxy"] != "direct" else None
    s["alive_proxy"] = r.get("proxy_alive_after", True)
    s["proxy_exit"] = r.get("proxy_exit")
    s["bench_cpu_us"] = rep.get("cpu_us_per_message")
    if kind == "idle":
        s["connections"] = rep.get("connections")
        s["opened"] = rep.get("connections_opened")
        s["alive"] = rep.get("alive")
        s["open_ms"] = rep.get("open_time_ms")
        before, hold = r.get("rss_kib_before"), r.get("rss_kib_hold")
        s["rss_before_mib"] = before / 1024 if before else None
        s["rss_hold_mib"] = hold / 1024 if hold else None
        s["rss_per_conn_kib"] = ((hold - before) / s["opened"]
                                 if (hold and before is not None and s["opened"]) else None)
        s["fds_hold"] = r.get("fds_hold")
    return s


def combine(runs):
    """One row from the rounds of one proxy: the median of every figure,
    errors added up, the fewest alive, and the spread of the deciding
    figure."""
    if len(runs) == 1:
        return runs[0]
    row = dict(runs[0])
    for key, value in runs[0].items():
        if key in ("errors",):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [r[key] for r in runs if r.get(key) is not None]
            middle = statistics.median_low if isinstance(value, int) else statistics.median
            row[key] = middle(values) if values else None
    row["errors"] = sum(r.get("errors") or 0 for r in runs)
    if any(r.get("alive") is not None for r in runs):
        row["alive"] = min(r.get("alive") or 0 for r in runs)
    row["failure"] = "; ".join(f"#{i + 1}: {r['failure']}" for i, r in enumerate(runs) if r.get("failure")) or None
    row["first_errors"] = {}
    for r in runs:
        for k, v in (r.get("first_errors") or {}).items():
            row["first_errors"].setdefault(k, v)
    row["alive_proxy"] = all(r.get("alive_proxy", True) for r in runs)
    for key in ("cpu_us", "rss_per_conn_kib"):
        values = [r[key] for r in runs if r.get(key) is not None]
        row[key + "_range"] = (min(values), max(values)) if values else None
    row["rounds"] = len(runs)
    return row


def spread(s, key, spec):
    """The figure, with its range over the rounds when there were several."""
    text = f(s.get(key), spec)
    rng = s.get(key + "_range")
    if rng and s.get("rounds", 1) > 1:
        text += f" ({rng[0]:{spec}}–{rng[1]:{spec}})"
    return text


def f(value, spec, dash="—"):
    return dash if value is None else format(value, spec)


def ms(us):
    if us is None:
        return "—"
    v = us / 1000.0
    return f"{v:.3f}" if v < 1 else (f"{v:.2f}" if v < 10 else f"{v:.1f}")


def ratio(value, base):
    if value is None or not base:
        return "—"
    return f"{value / base:.2f}×"


def table(sc, rows):
    kind = sc["kind"]
    by = {s["proxy"]: s for s in rows}
    nginx = by.get("nginx", {})
    out = []
    if kind == "idle":
        out.append("| proxy | RSS/conn (KiB) | ratio vs nginx | alive | RSS before → holding (MiB) "
                   "| proxy fds | open time (s) | µs CPU per conn | errors |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for s in rows:
            rss = (f"{s['rss_before_mib']:.1f} → {s['rss_hold_mib']:.1f}"
                   if s.get("rss_hold_mib") is not None and s["proxy"] != "direct" else "—")
            out.append(
                f"| {s['proxy']} | {spread(s, 'rss_per_conn_kib', '.2f') if s['proxy'] != 'direct' else '—'} "
                f"| {ratio(s.get('rss_per_conn_kib'), nginx.get('rss_per_conn_kib')) if s['proxy'] != 'direct' else '—'} "
                f"| {f(s.get('alive'), 'd')}/{f(s.get('connections'), 'd')} | {rss} "
                f"| {f(s.get('fds_hold') if s['proxy'] != 'direct' else None, 'd')} "
                f"| {f(s['open_ms'] / 1000 if s.get('open_ms') else None, '.2f')} "
                f"| {f(s.get('cpu_us'), '.1f')} | {f(s.get('errors'), 'd')} |")
    else:
        unit = "session" if kind == "churn" else "msg"
        rate = "sessions/s" if kind == "churn" else "msgs/s"
        lat = "session p50 / p99 / p99.9 (ms)" if kind == "churn" else "p50 / p99 / p99.9 (ms)"
        out.append(f"| proxy | µs CPU per {unit} | ratio vs nginx | proxy CPU % | {rate} | {lat} "
                   f"| peak RSS (MiB) | errors | core 0 busy % |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for s in rows:
            out.append(
                f"| {s['proxy']} | {spread(s, 'cpu_us', '.2f')} | {ratio(s.get('cpu_us'), nginx.get('cpu_us'))} "
                f"| {f(s.get('cpu_pct'), '.0f')} | {f(s.get('rate'), ',.0f')} "
                f"| {ms(s.get('p50'))} / {ms(s.get('p99'))} / {ms(s.get('p999'))} "
                f"| {f(s.get('rss_mib'), '.1f')} | {f(s.get('errors'), 'd')} | {f(s.get('core0_pct'), '.0f')} |")
    notes = []
    for s in rows:
        if s.get("failure"):
            notes.append(f"- {s['proxy']}: run failed: {s['failure']}")
        if s.get("first_errors"):
            for kind_, msg in s["first_errors"].items():
                notes.append(f"- {s['proxy']}: first `{kind_}` error: {msg}")
        if not s.get("alive_proxy", True):
            notes.append(f"- {s['proxy']}: **the proxy exited during the run** (code {s.get('proxy_exit')})")
    return "\n".join(out + ([""] + notes if notes else []))


def machine():
    model = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024 // 1024
    def version(argv, pick=lambda s: s.splitlines()[0]):
        try:
            r = subprocess.run(argv, capture_output=True, text=True)
            return pick((r.stdout + r.stderr).strip())
        except OSError:
            return "?"
    commit = version(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    return dict(
        cpu=f"{os.cpu_count()} × {model}", memory_gib=mem, kernel=platform.release(),
        nginx=version(["nginx", "-v"]).replace("nginx version: ", "").replace("nginx/", ""),
        haproxy=version(["haproxy", "-v"]).split(" - ")[0].replace("HA-Proxy version ", "").replace("HAProxy version ", ""),
        wsgate_commit=commit, nofile=f"{NOFILE_SOFT}/{NOFILE_HARD}",
        loadavg=open("/proc/loadavg").read().split()[:3],
    )


def main():
    global RUN_DIR
    RUN_DIR = os.environ.get("COMPARE_RUN_DIR") or tempfile.mkdtemp(prefix="wsgate-compare-")
    os.makedirs(RUN_DIR, exist_ok=True)
    os.makedirs(os.path.join(OUT, "raw"), exist_ok=True)
    # Only this run's files: an earlier run may have had other rounds or
    # scenarios.
    for d, suffix in ((os.path.join(OUT, "raw"), ".json"), (OUT, ".svg")):
        for name in os.listdir(d):
            if name.endswith(suffix):
                os.remove(os.path.join(d, name))
    # This script shares core 1 with the load; core 0 is the proxy's alone.
    os.sched_setaffinity(0, {LOAD_CORE})

    wanted_p = [p.strip() for p in env("PROXIES", ",".join(ALL_PROXIES)).split(",") if p.strip()]
    for p in wanted_p:
        if p not in ALL_PROXIES:
            sys.exit(f"compare: unknown proxy {p!r} (known: {', '.join(ALL_PROXIES)})")
    all_sc = scenarios()
    wanted_s = [s.strip() for s in env("SCENARIOS", ",".join(s["id"] for s in all_sc)).split(",") if s.strip()]
    known = {s["id"]: s for s in all_sc}
    for s in wanted_s:
        if s not in known:
            sys.exit(f"compare: unknown scenario {s!r} (known: {', '.join(known)})")
    if not os.access(WSGATE, os.X_OK):
        sys.exit(f"compare: {WSGATE} is missing; run cargo build --release")

    began = time.monotonic()
    info = machine()
    info["started"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    print(f"compare: {info['cpu']}, kernel {info['kernel']}, nginx {info['nginx']}, "
          f"HAProxy {info['haproxy']}, wsgate {info['wsgate_commit']}", flush=True)
    print(f"compare: DURATION={fmt_secs(DURATION)} WARMUP={fmt_secs(WARMUP)} "
          f"descriptors {NOFILE_SOFT} (hard {NOFILE_HARD}), run dir {RUN_DIR}", flush=True)
    if IDLE_CONNECTIONS < IDLE_WANTED:
        print(f"compare: idle test lowered from {IDLE_WANTED} to {IDLE_CONNECTIONS} connections: "
              f"a single-process proxy holds 2 descriptors per session and the limit is "
              f"{NOFILE_SOFT} (raise the hard limit of `ulimit -n` for more)", flush=True)

    need_tls = any(known[s]["tls"] for s in wanted_s)
    tls_obj = Tls(RUN_DIR) if need_tls else None

    # Every proxy must echo every kind of message correctly first.
    verified = {}
    for tls in ([False, True] if need_tls else [False]):
        if not any(known[s]["tls"] == tls for s in wanted_s):
            continue
        for p in wanted_p:
            if tls and p == "direct":
                continue
            failures = verify(p, tls_obj if tls else None, f"verify-{'tls-' if tls else ''}{p}")
            verified[(p, tls)] = failures
            status = "ok" if not failures else "FAILED: " + "; ".join(failures)
            print(f"verify {'wss' if tls else 'ws '} {p:14} {status}", flush=True)

    results = {}
    for sid in wanted_s:
        sc = known[sid]
        print(f"\n== {sc['title']}", flush=True)
        # The echo backend speaks no TLS: no direct run over TLS.
        order = [p for p in wanted_p if not (sc["tls"] and p == "direct")]
        runs = {p: [] for p in order}
        for rnd in range(ROUNDS):
            # Rotate the order each round, so that no proxy always runs
            # first or last.
            k = rnd % len(order)
            for p in order[k:] + order[:k]:
                r = run_one(p, sc, tls_obj if sc["tls"] else None, rnd)
                s = summarize(r, sc)
                runs[p].append(s)
                who = f"{p:14}" + (f" #{rnd + 1}" if ROUNDS > 1 else "")
                if sc["kind"] == "idle":
                    print(f"   {who} alive {s.get('alive')}/{s.get('connections')}  "
                          f"RSS/conn {f(s.get('rss_per_conn_kib'), '.2f')} KiB  errors {s.get('errors')}"
                          f"{'  FAILED: ' + s['failure'] if s.get('failure') else ''}", flush=True)
                else:
                    print(f"   {who} {f(s.get('cpu_us'), '.2f')} µs CPU/{'session' if sc['kind'] == 'churn' else 'msg'}  "
                          f"{f(s.get('rate'), ',.0f')}/s  p99 {ms(s.get('p99'))} ms  errors {s.get('errors')}"
                          f"{'  FAILED: ' + s['failure'] if s.get('failure') else ''}", flush=True)
        rows = []
        for p in order:
            s = combine(runs[p])
            s["verify_failures"] = verified.get((p, sc["tls"]), [])
            rows.append(s)
        results[sid] = dict(title=sc["title"], kind=sc["kind"], rows=rows,
                            bench_args=" ".join(sc["args"]))

    info["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    info["runtime_s"] = round(time.monotonic() - began)
    info["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    settings = dict(duration=fmt_secs(DURATION), warmup=fmt_secs(WARMUP),
                    idle_connections=IDLE_CONNECTIONS, idle_wanted=IDLE_WANTED,
                    idle_ramp=fmt_secs(IDLE_RAMP), churn_connections=CHURN_CONNECTIONS,
                    rate=RATE, rounds=ROUNDS, proxy_logs=PROXY_LOGS, nginx_ssl_protocols=NGINX_SSL_PROTOCOLS)
    with open(os.path.join(OUT, "results.json"), "w") as fh:
        json.dump(dict(machine=info, settings=settings, tls_resumption=RESUMES, verify={f"{p}{' tls' if t else ''}": v for (p, t), v in verified.items()},
                       scenarios=results), fh, indent=2)

    md = [f"# wsgate vs nginx vs HAProxy — {info['started']}", "",
          f"- machine: {info['cpu']}, {info['memory_gib']} GiB, kernel {info['kernel']}, "
          f"load average at start {' '.join(info['loadavg'])}, at end {' '.join(info['loadavg_end'])}",
          f"- nginx {info['nginx']} (1 worker), HAProxy {info['haproxy']} (nbthread 1), "
          f"wsgate {info['wsgate_commit']} (WORKER_THREADS=1); proxy on core 0, "
          f"bench + `wsgate echo` on core 1",
          f"- window {settings['duration']} after {settings['warmup']} warm-up"
          + (f", {ROUNDS} rounds per proxy in rotating order (medians; range of the deciding figure in brackets)"
             if ROUNDS > 1 else "") + "; "
          f"per-session logging {'on' if PROXY_LOGS else 'off'}; runtime {info['runtime_s']} s",
          "- µs CPU per msg: utime+stime of all the proxy's processes over the measured window "
          "÷ messages (sessions) the bench counted in it; proxy CPU %: of one core; "
          "core 0 busy %: all CPU use on the proxy's core (above proxy CPU % = other load or interrupts)",
          ""]
    for p_t, fails in verified.items():
        if fails:
            md.append(f"- **verification failed** for {p_t[0]}{' (TLS)' if p_t[1] else ''}: {'; '.join(fails)}")
    if RESUMES:
        md.append("- TLS as negotiated with a client offering TLS 1.2 and 1.3 (Python probe), and "
                  "whether a second connection resumes the session: "
                  + "; ".join(f"{p}: {v}" for p, v in RESUMES.items()))
    md.append("")
    for sid, res in results.items():
        md += [f"## {res['title']}", "", f"`wsgate bench {res['bench_args']}`", "",
               table(known[sid], res["rows"]), ""]
    text = "\n".join(md)
    with open(os.path.join(OUT, "results.md"), "w") as fh:
        fh.write(text + "\n")
    subprocess.run([sys.executable, os.path.join(HERE, "charts.py"), os.path.join(OUT, "results.json"), OUT],
                   check=False)
    print("\n" + text)
    print(f"\ncompare: results in {OUT}/results.md, raw JSON in {OUT}/raw/, charts {OUT}/*.svg; "
          f"took {info['runtime_s']} s")


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        main()
    finally:
        stop_all()
