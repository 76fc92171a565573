"""The two WebSocket clients of the interop tests, behind one interface.

Why this exists: every test in test_interop.py runs once with the Python
`websockets` client and once with the Node `ws` client (client.js). Both take
the same scenario dict and return the same result shape (both documented in
client.js), so a test states its expectations once. `describe` is how a
received message appears in a result; the tests use it for expected values.
"""

import asyncio
import base64
import hashlib
import json
import ssl
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def describe(message):
    """One received message, as client.js describes it."""
    data = message.encode() if isinstance(message, str) else bytes(message)
    return {
        "type": "text" if isinstance(message, str) else "binary",
        "length": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "data": None
        if len(data) > 4096
        else (message if isinstance(message, str) else base64.b64encode(data).decode()),
    }


async def _python_client(scenario):
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    result = {
        "opened": False,
        "protocol": None,
        "extensions": None,
        "messages": [],
        "pongs": [],
        "close": None,
        "error": None,
    }
    ctx = ssl.create_default_context(cafile=scenario["ca"])  # trusts only ca.pem
    try:
        async with asyncio.timeout(scenario["timeoutMs"] / 1000):
            ws = await connect(
                scenario["url"],
                ssl=ctx,
                subprotocols=scenario.get("protocols") or None,
                compression="deflate" if scenario.get("compression") else None,
                max_size=None,
                ping_interval=None,
                open_timeout=5,
                close_timeout=5,
            )
            result["opened"] = True
            result["protocol"] = ws.subprotocol
            result["extensions"] = ",".join(e.name for e in ws.protocol.extensions) or None
            pings = []  # (payload, waiter resolved by the matching pong)

            async def fragments(pieces, ping):
                for i, piece in enumerate(pieces):
                    yield piece
                    if i == 0 and ping is not None:
                        pings.append((ping, await ws.ping(ping.encode())))

            for item in scenario.get("send", []):
                if "text" in item:
                    await ws.send(item["text"])
                elif "binary_b64" in item:
                    await ws.send(base64.b64decode(item["binary_b64"]))
                elif "fragments_b64" in item:
                    pieces = [base64.b64decode(p) for p in item["fragments_b64"]]
                    await ws.send(
                        fragments(pieces, item.get("ping_between")), text=not item["binary"]
                    )
                elif "ping" in item:
                    pings.append((item["ping"], await ws.ping(item["ping"].encode())))
                elif "file" in item:
                    data = Path(item["file"]).read_bytes()
                    await ws.send(data, text=not item["binary"])
                else:
                    raise ValueError(f"unknown send item {item}")
            for payload, waiter in pings:
                # websockets resolves the waiter only for a pong with this
                # payload (or a later ping's): one ping per scenario is exact.
                try:
                    await asyncio.wait_for(waiter, 5)
                    result["pongs"].append(payload)
                except (TimeoutError, ConnectionClosed):
                    pass
            close = scenario.get("close")
            expect = scenario.get("expect", 0)
            closing = False
            while True:
                if close and not closing and len(result["messages"]) >= expect:
                    closing = True
                    await ws.close(close["code"], close.get("reason", ""))
                    break
                try:
                    message = await ws.recv()
                except ConnectionClosed:
                    break
                result["messages"].append(describe(message))
            await ws.wait_closed()
            result["close"] = {"code": ws.close_code, "reason": ws.close_reason}
    except TimeoutError:
        result["error"] = f"timeout after {scenario['timeoutMs']} ms"
    except Exception as exc:  # reported, and asserted on, by the tests
        result["error"] = f"{type(exc).__name__}: {exc}"
    return result


def run_python_client(scenario):
    return asyncio.run(_python_client(scenario))


def run_node_client(node, reaper, scenario, workdir):
    arg = json.dumps(scenario)
    if len(arg) > 64 * 1024:  # Linux limits one argument to 128 KiB
        path = workdir / f"scenario-{len(reaper.procs)}.json"
        path.write_text(arg)
        arg = f"@{path}"
    proc = reaper.track(
        subprocess.Popen(
            [node, str(HERE / "client.js"), arg],
            cwd=HERE,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    )
    try:
        out, err = proc.communicate(timeout=scenario["timeoutMs"] / 1000 + 10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=5)
        pytest.fail(f"client.js hung; stderr:\n{err.decode(errors='replace')}")
    lines = out.decode().strip().splitlines()
    if not lines:
        pytest.fail(
            f"client.js printed nothing (exit {proc.returncode}); stderr:\n"
            f"{err.decode(errors='replace')}"
        )
    return json.loads(lines[-1])
