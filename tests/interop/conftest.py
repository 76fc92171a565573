"""Fixtures for the wsgate interop tests (test_interop.py).

Why this exists: the interop tests need real processes around wsgate (a test
CA, a Node or Python backend, the wsgate binary, a Node client), each started
with bounded waits and always killed afterwards, even when a test fails. This
file owns all of that so the tests only say what is sent and what must arrive.

Per session: one test CA (tests/support/test-ca.sh) in a temporary directory.
Per test (`session` fixture, parametrized over the two pairings):
  1. the backend (backend.js or backend.py) on 127.0.0.1:0; it prints its port
     as its first stdout line, then one JSON event per line (read by a thread);
  2. wsgate with a TLS listener on a free 127.0.0.1 port (picked by binding
     port 0 and closing it; one retry if wsgate cannot bind it) and one route
     "/" to the backend;
  3. the client: Node `ws` (client.js, a subprocess) or Python `websockets`
     (in process, interop_clients.py); both run the same JSON scenario and
     return the same result shape (documented in client.js).
On failure the wsgate log, the backend's events and stderr are attached to
the test report.

Environment: WSGATE_BIN overrides the binary (default
<repo>/target/release/wsgate). Node's `ws` must be installed with
`npm ci --prefix tests/interop`.
"""

import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from interop_clients import run_node_client, run_python_client

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

START_TIMEOUT = 10.0  # backend / wsgate start-up
EVENT_TIMEOUT = 10.0  # a backend event after the client has finished
CLIENT_TIMEOUT = 20.0  # one whole client scenario

PAIRINGS = {
    "python-client-node-backend": ("python", "node"),
    "node-client-python-backend": ("node", "python"),
}


# --------------------------------------------------------------------------
# Session-wide prerequisites


@pytest.fixture(scope="session")
def wsgate_bin():
    path = Path(os.environ.get("WSGATE_BIN") or REPO / "target" / "release" / "wsgate")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"wsgate binary not found at {path}: run `cargo build --release` "
            "or set WSGATE_BIN",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def node_bin():
    node = shutil.which("node")
    if node is None:
        pytest.fail("`node` is not on PATH (needed for the ws client/backend)", pytrace=False)
    if not (HERE / "node_modules" / "ws" / "package.json").is_file():
        pytest.fail(
            "Node package `ws` is missing: run `npm ci --prefix tests/interop`",
            pytrace=False,
        )
    return node


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    """A throwaway CA and a server certificate for localhost/127.0.0.1."""
    directory = tmp_path_factory.mktemp("ca")
    subprocess.run(
        ["bash", str(REPO / "tests" / "support" / "test-ca.sh"), str(directory)],
        check=True,
        timeout=60,
        stdout=subprocess.DEVNULL,
    )
    for name in ("ca.pem", "cert.pem", "key.pem"):
        assert (directory / name).is_file(), f"test-ca.sh did not write {name}"
    return directory


# --------------------------------------------------------------------------
# Processes


class Reaper:
    """Every subprocess a test starts; all are killed in teardown."""

    def __init__(self):
        self.procs = []

    def track(self, proc):
        self.procs.append(proc)
        return proc

    def kill_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 3
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for proc in self.procs:
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    stream.close()


class Backend:
    """backend.js or backend.py, with its stdout events collected by a thread."""

    def __init__(self, kind, reaper, node, workdir):
        self.kind = kind
        if kind == "node":
            argv = [node, str(HERE / "backend.js")]
        else:
            argv = [sys.executable, str(HERE / "backend.py")]
        self.stderr_path = workdir / f"backend-{kind}.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.proc = reaper.track(
                subprocess.Popen(
                    argv,
                    cwd=HERE,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                )
            )
        self._lines = queue.Queue()
        self.events = []  # every event seen so far, in order
        threading.Thread(target=self._read, daemon=True).start()
        try:
            first = self._lines.get(timeout=START_TIMEOUT)
        except queue.Empty:
            first = None
        if first is None or not first.strip().isdigit():
            self.proc.kill()
            pytest.fail(
                f"{kind} backend did not print its port (got {first!r});\n"
                f"stderr:\n{self.stderr()}",
                pytrace=False,
            )
        self.port = int(first)

    def _read(self):
        for raw in self.proc.stdout:
            self._lines.put(raw.decode("utf-8", "replace"))
        self._lines.put(None)  # EOF

    def _pump(self, timeout):
        """Moves at most one line from the reader into self.events."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            return False
        if line is None:
            self._lines.put(None)  # keep EOF visible
            time.sleep(min(timeout, 0.05))
            return False
        self.events.append(json.loads(line))
        return True

    def wait_event(self, event, timeout=EVENT_TIMEOUT, **fields):
        """The first event of this kind (and with these field values)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for ev in self.events[seen:]:
                if ev.get("event") == event and all(ev.get(k) == v for k, v in fields.items()):
                    return ev
            seen = len(self.events)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.kind} backend: no {event!r} event with {fields} within "
                    f"{timeout}s; events: {self.events}"
                )
            self._pump(remaining)

    def drain(self, quiet=0.2):
        """Collects events until none has come for `quiet` seconds."""
        while self._pump(quiet):
            pass
        return self.events

    def stderr(self):
        return self.stderr_path.read_text(errors="replace")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """wsgate with one TLS listener and one route "/" to the backend."""

    def __init__(self, binary, reaper, workdir, ca_dir, backend_port):
        self.log_path = workdir / "wsgate.log"
        for attempt in (1, 2):
            self.port = free_port()
            config = workdir / "wsgate.yaml"
            config.write_text(
                "listeners:\n"
                f'  - bind: "127.0.0.1:{self.port}"\n'
                "    tls:\n"
                f'      cert: "{ca_dir / "cert.pem"}"\n'
                f'      key: "{ca_dir / "key.pem"}"\n'
                "routes:\n"
                "  - path_prefix: /\n"
                "    backend: interop\n"
                "backends:\n"
                "  interop:\n"
                "    servers:\n"
                f'      - url: "ws://127.0.0.1:{backend_port}"\n'
            )
            with open(self.log_path, "ab") as log:
                log.write(f"--- attempt {attempt}: port {self.port}\n".encode())
                log.flush()
                self.proc = reaper.track(
                    subprocess.Popen(
                        [str(binary), "run", "--config", str(config)],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env={
                            **os.environ,
                            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
                            "NO_COLOR": "1",
                        },
                    )
                )
            if self._wait_ready():
                return
            if self.proc.poll() is None:
                break  # running but not accepting: no point in retrying
        pytest.fail(
            f"wsgate did not start listening on 127.0.0.1:{self.port} within "
            f"{START_TIMEOUT}s (exit status {self.proc.poll()}); log:\n{self.log()}",
            pytrace=False,
        )

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # exited, e.g. the port was taken meanwhile
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"


# --------------------------------------------------------------------------
# The per-test session: backend + wsgate + a client runner


class Session:
    def __init__(self, client_kind, backend_kind, backend, gateway, ca_dir, workdir, node, reaper):
        self.client_kind = client_kind
        self.backend_kind = backend_kind
        self.backend = backend
        self.gateway = gateway
        self.ca_dir = ca_dir
        self.workdir = workdir
        self._node = node
        self._reaper = reaper
        self.results = []

    def url(self, path):
        return f"wss://127.0.0.1:{self.gateway.port}{path}"

    def client(self, path, send=(), expect=0, close=None, protocols=(), compression=False):
        """Runs one client connection to `path` through wsgate; see client.js."""
        scenario = {
            "url": self.url(path),
            "ca": str(self.ca_dir / "ca.pem"),
            "protocols": list(protocols),
            "compression": compression,
            "send": list(send),
            "expect": expect,
            "close": close,
            "timeoutMs": int(CLIENT_TIMEOUT * 1000),
        }
        if self.client_kind == "node":
            result = run_node_client(self._node, self._reaper, scenario, self.workdir)
        else:
            result = run_python_client(scenario)
        self.results.append(result)
        return result

    def diagnostics(self):
        self.backend.drain(quiet=0.1)
        results = json.dumps(self.results, ensure_ascii=False)
        return [
            ("wsgate log", self.gateway.log()),
            (f"{self.backend_kind} backend events", "\n".join(map(json.dumps, self.backend.events))),
            (f"{self.backend_kind} backend stderr", self.backend.stderr()),
            (f"{self.client_kind} client results", results[:20000]),
        ]


@pytest.fixture(params=list(PAIRINGS), ids=list(PAIRINGS))
def session(request, wsgate_bin, node_bin, test_ca, tmp_path):
    client_kind, backend_kind = PAIRINGS[request.param]
    reaper = Reaper()
    try:
        backend = Backend(backend_kind, reaper, node_bin, tmp_path)
        gateway = Gateway(wsgate_bin, reaper, tmp_path, test_ca, backend.port)
        yield Session(client_kind, backend_kind, backend, gateway, test_ca, tmp_path, node_bin, reaper)
    finally:
        reaper.kill_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        sess = getattr(item, "funcargs", {}).get("session")
        if isinstance(sess, Session):
            for title, text in sess.diagnostics():
                report.sections.append((title, text))
    return report
