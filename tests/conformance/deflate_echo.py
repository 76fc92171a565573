#!/usr/bin/env python3
"""A WebSocket echo server that negotiates permessage-deflate.

    deflate_echo.py [--listen HOST:PORT]      (default 127.0.0.1:9002)

Built on Python `websockets` (asyncio server) with its default compression
(``compression="deflate"``: it accepts a client's permessage-deflate offer).
Limits are lifted so that it is a conformant peer rather than a DoS-hardened
one: ``max_size=None`` and ``WEBSOCKETS_MAX_FRAGMENTS`` raised (read when
websockets is imported). Every text or binary message is echoed back as it
came (text as text, binary as binary). No keepalive pings.

Used by tests/conformance/autobahn.sh (configurations ``deflate`` and
``deflate-direct``) as the backend for the Autobahn fuzzing client's
permessage-deflate cases 12.* and 13.*. Prints ``listening on HOST:PORT`` once
it accepts connections; stops on SIGTERM or SIGINT.
"""

import os

# Must be set before websockets is imported (read at import time).
os.environ.setdefault("WEBSOCKETS_MAX_FRAGMENTS", str(1 << 24))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from websockets.asyncio.server import serve  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402


async def echo(ws):
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:9002", help="HOST:PORT (default 127.0.0.1:9002)")
    args = ap.parse_args()
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))

    async with serve(
        echo,
        host,
        int(port),
        compression="deflate",
        max_size=None,
        ping_interval=None,
        server_header="deflate_echo.py (websockets)",
    ):
        print(f"deflate_echo.py: listening on {host}:{port}", file=sys.stderr, flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main())
