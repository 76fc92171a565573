"""WebSocket backend for the wsgate interop tests, built on Python `websockets`.

Why this exists: wsgate must relay sessions between WebSocket implementations
that real people use, not only between copies of the library it was tested
with. test_interop.py puts this server behind wsgate (TLS in front, plain ws://
to this backend) and talks to it with the Node `ws` client (client.js).
backend.js is the same server written with Node `ws`; the two MUST behave
identically, so the tests can assert the same exact results for both.

Usage: python3 backend.py
  Listens on 127.0.0.1, port 0. The first line on stdout is the port number.
  Every further stdout line is one JSON event (see below). Logs go to stderr.

Behaviour, selected by the request path (the query string is ignored):
  /echo          echo every message back with its type (text stays text,
                 binary stays binary).
  /greet         on open, send exactly these four messages, then echo:
                   text   "hello from the backend ✓"
                   binary bytes 0x00..0xff (256 bytes)
                   text   "" (empty)
                   binary b"" (empty)
  /fragmented    on open, send two fragmented messages, then echo:
                   text   "Hello, wörld ✓!" as the three UTF-8 byte pieces
                          b"Hello, w\\xc3" b"\\xb6rld \\xe2" b"\\x9c\\x93!"
                          (two characters are split across frames)
                   binary bytes(i % 256 for i in range(1024)) as the pieces
                          [0:1] [1:700] [700:1024]
                 (Python `websockets` adds an empty final continuation frame,
                 Node `ws` does not; the messages are the same.)
  /close/CODE/REASON
                 on open, send text "closing", then start the close handshake
                 with CODE and REASON (percent-decoded, may be empty).
  anything else  close with 1008 "unknown path".

Subprotocols: the server supports "chat.v2" and "chat.v1" and picks, in that
order of preference, the first it supports among those the client offered
(so an offer of "chat.v1, chat.v2" gets "chat.v2"). No match, or no offer:
no subprotocol, and the connection is accepted.

Compression: permessage-deflate is accepted when the client offers it.
Message size limit: none (the tests send 5 MiB messages).
No keepalive pings are sent.

Events on stdout (one JSON object per line):
  {"event": "open", "path": P, "subprotocol": S or null, "compression": bool}
  {"event": "message", "path": P, "type": "text"|"binary", "length": N,
   "sha256": HEX}                       for every message received
  {"event": "close", "path": P, "code": C, "reason": R}
      once per connection, when it is fully closed. C and R are what the
      PEER sent in its close frame: 1005 and "" for a close frame without a
      code, 1006 and "" when no close frame was received at all.
"""

import asyncio
import hashlib
import json
import sys
import urllib.parse

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

SUBPROTOCOLS = ["chat.v2", "chat.v1"]

GREETING = ["hello from the backend ✓", bytes(range(256)), "", b""]

FRAG_TEXT_PIECES = [b"Hello, w\xc3", b"\xb6rld \xe2", b"\x9c\x93!"]
FRAG_BINARY = bytes(i % 256 for i in range(1024))
FRAG_BINARY_PIECES = [FRAG_BINARY[0:1], FRAG_BINARY[1:700], FRAG_BINARY[700:1024]]


def emit(event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def select_subprotocol(connection, offered):
    for protocol in SUBPROTOCOLS:
        if protocol in offered:
            return protocol
    return None


def describe(path, message):
    data = message.encode() if isinstance(message, str) else message
    return {
        "event": "message",
        "path": path,
        "type": "text" if isinstance(message, str) else "binary",
        "length": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


async def handler(ws):
    full_path = ws.request.path
    path = full_path.split("?", 1)[0]
    extensions = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
    emit(
        {
            "event": "open",
            "path": full_path,
            "subprotocol": ws.subprotocol,
            "compression": "permessage-deflate" in extensions,
        }
    )
    try:
        if path == "/echo":
            pass
        elif path == "/greet":
            for message in GREETING:
                await ws.send(message)
        elif path == "/fragmented":
            await ws.send(FRAG_TEXT_PIECES, text=True)
            await ws.send(FRAG_BINARY_PIECES)
        elif path.startswith("/close/"):
            parts = path.split("/", 3)
            code = int(parts[2])
            reason = urllib.parse.unquote(parts[3]) if len(parts) > 3 else ""
            await ws.send("closing")
            await ws.close(code, reason)
        else:
            await ws.close(1008, "unknown path")
        async for message in ws:
            emit(describe(full_path, message))
            await ws.send(message)
    except ConnectionClosed:
        pass
    finally:
        await ws.wait_closed()
        emit(
            {
                "event": "close",
                "path": full_path,
                "code": ws.close_code,
                "reason": ws.close_reason,
            }
        )


async def main():
    async with serve(
        handler,
        "127.0.0.1",
        0,
        select_subprotocol=select_subprotocol,
        compression="deflate",
        max_size=None,
        ping_interval=None,
        close_timeout=5,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        sys.stdout.write(f"{port}\n")
        sys.stdout.flush()
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
