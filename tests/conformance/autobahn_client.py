#!/usr/bin/env python3
"""Drive the Autobahn|Testsuite fuzzing *server* with Python `websockets`.

    autobahn_client.py BASE_URL AGENT [--case-timeout S] [--deadline S] [--log FILE]

BASE_URL is the fuzzing server (``ws://127.0.0.1:9001``) or a proxy in front
of it that forwards path and query unchanged. The client asks for the number
of cases (``/getCaseCount``), runs every case (``/runCase?case=i&agent=AGENT``,
echoing each message until the server closes), then has the server write its
reports (``/updateReports?agent=AGENT``). The verdicts are the fuzzing
server's (its ``index.json``); this script only reports what it saw on its
side: one line per case on stderr, and with ``--log`` a JSON list of
``{"case": i, "id": "1.1.1", "outcome": ..., "close_code": ..., "seconds": ...}``.

The client is `websockets` with its limits lifted, so that it is a conformant
peer rather than a DoS-hardened one: ``max_size=None`` (9.* sends up to 16 MiB
messages) and ``WEBSOCKETS_MAX_FRAGMENTS`` (read when websockets is imported;
its default of 4096 fails 9.3.x/9.4.x, which send up to 65536 fragments). It
offers permessage-deflate as it does by default, so 12.* and 13.* run
compressed. No keepalive pings (they would show up in the cases' traffic).

Every wait is bounded: each case by --case-timeout, the whole run by
--deadline. When the deadline passes, or on SIGTERM/SIGINT, the case in
progress is abandoned, no further case is started, and the server is still
asked to write its reports for the cases that ran.

Exit status: 0 when every case ran (whatever the verdicts), 1 when a case
timed out or could not connect, or the run was cut short, 2 when the server
could not be reached.
"""

import os

# Must be set before websockets is imported (read at import time).
os.environ.setdefault("WEBSOCKETS_MAX_FRAGMENTS", str(1 << 24))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from urllib.parse import quote  # noqa: E402

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK  # noqa: E402

OPEN_TIMEOUT = 10
CLOSE_TIMEOUT = 10


def _connect(uri, **kw):
    return connect(
        uri,
        max_size=None,
        ping_interval=None,
        open_timeout=OPEN_TIMEOUT,
        close_timeout=CLOSE_TIMEOUT,
        **kw,
    )


async def fetch_one(uri, timeout):
    """Open uri, return the first message (or None), wait for the close."""

    async def go():
        async with _connect(uri) as ws:
            try:
                msg = await ws.recv()
            except ConnectionClosedOK:
                return None
            await ws.wait_closed()
            return msg

    return await asyncio.wait_for(go(), timeout)


async def run_case(uri, timeout, stop):
    """Echo every message on uri until the server closes.

    Returns (outcome, close_code): outcome is "closed" (clean close
    handshake), "closed-error" (connection failed, e.g. a protocol violation
    detected by websockets), "timeout" or "connect-error: ..."."""
    state = {"ws": None}

    async def go():
        async with _connect(uri) as ws:
            state["ws"] = ws
            async for message in ws:
                await ws.send(message)

    task = asyncio.ensure_future(asyncio.wait_for(go(), timeout))
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    try:
        if not task.done():
            task.cancel()
            try:
                await task
            except BaseException:
                pass
            raise InterruptedError("stopped (deadline or signal)")
        task.result()
        outcome = "closed"
    except ConnectionClosed:
        outcome = "closed-error"
    except asyncio.TimeoutError:
        outcome = "timeout"
    except InterruptedError as exc:
        outcome = str(exc)
    except Exception as exc:  # handshake refused, connection refused, ...
        if state["ws"] is None:
            outcome = f"connect-error: {type(exc).__name__}: {exc}"
        else:
            outcome = f"error: {type(exc).__name__}: {exc}"
    ws = state["ws"]
    code = None
    if ws is not None:
        rcvd = ws.protocol.close_rcvd
        sent = ws.protocol.close_sent
        code = rcvd.code if rcvd is not None else (sent.code if sent is not None else None)
    return outcome, code


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base_url", help="ws://HOST:PORT[/PREFIX] of the fuzzing server (or a proxy)")
    ap.add_argument("agent", help="agent name in the reports")
    ap.add_argument("--case-timeout", type=float, default=float(os.environ.get("AUTOBAHN_CASE_TIMEOUT", 600)),
                    help="seconds allowed per case (default 600, env AUTOBAHN_CASE_TIMEOUT; the "
                         "fuzzing server gives up on a case itself after at most 480 s)")
    ap.add_argument("--deadline", type=float, default=float(os.environ.get("AUTOBAHN_DEADLINE", 10800)),
                    help="seconds allowed for all cases; then stop and write the reports "
                         "(default 10800, env AUTOBAHN_DEADLINE)")
    ap.add_argument("--log", help="write per-case outcomes as JSON to this file")
    ap.add_argument("--quiet", action="store_true", help="no per-case lines")
    args = ap.parse_args()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(args.deadline, stop.set)

    base = args.base_url.rstrip("/")
    agent = quote(args.agent, safe="")
    t0 = time.monotonic()
    try:
        count = int(await fetch_one(f"{base}/getCaseCount", 30))
    except Exception as exc:
        print(f"autobahn_client: /getCaseCount failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"autobahn_client: {count} cases, agent {args.agent}, via {base}", file=sys.stderr)

    results, bad = [], 0
    for i in range(1, count + 1):
        if stop.is_set():
            print(f"autobahn_client: stopped (deadline {args.deadline:.0f}s or signal) before case {i} of {count}",
                  file=sys.stderr)
            bad += 1
            break
        try:
            info = json.loads(await fetch_one(f"{base}/getCaseInfo?case={i}", 30))
            case_id = info.get("id", "?")
        except Exception:
            case_id = "?"
        t = time.monotonic()
        outcome, code = await run_case(f"{base}/runCase?case={i}&agent={agent}", args.case_timeout, stop)
        secs = time.monotonic() - t
        if outcome not in ("closed", "closed-error"):
            bad += 1
        results.append({"case": i, "id": case_id, "outcome": outcome, "close_code": code,
                        "seconds": round(secs, 3)})
        if not args.quiet or outcome not in ("closed", "closed-error"):
            print(f"  [{i}/{count}] {case_id}: {outcome} (close {code}) {secs:.2f}s", file=sys.stderr)

    total = time.monotonic() - t0
    if args.log:
        with open(args.log, "w") as f:
            json.dump({"agent": args.agent, "base_url": base, "seconds": round(total, 1),
                       "cases": results}, f, indent=1)
    try:
        await fetch_one(f"{base}/updateReports?agent={agent}", 600)
    except Exception as exc:
        print(f"autobahn_client: /updateReports failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"autobahn_client: {len(results)} of {count} cases in {total:.1f}s; "
          f"{bad} timed out, failed to connect or were not run", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
