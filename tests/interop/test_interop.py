"""Interop tests: real WebSocket clients and servers people use, through wsgate.

Why this exists: the Rust integration tests use tokio-tungstenite on both ends,
so a bug shared by wsgate and that library, or a behaviour only other
implementations exercise, would go unnoticed. Here the ends are the two most
used independent implementations, talking through wsgate over TLS (a test CA,
trusted by the clients and nothing else):

  python-client-node-backend   Python `websockets` client -> wsgate -> Node `ws` server
  node-client-python-backend   Node `ws` client (client.js) -> wsgate -> Python `websockets` server

Every test runs for both pairings (see conftest.py for the plumbing and
backend.py / backend.js for the backends' behaviour per path). Assertions are
exact: payload bytes (by SHA-256 and, for small messages, by content), message
types and order, the subprotocol and compression each side negotiated, and the
close code and reason each side received.

Run: python3 -m pytest -q tests/interop   (after `cargo build --release`,
`pip install -r tests/requirements.txt`, `npm ci --prefix tests/interop`).
"""

import base64
import random
import urllib.parse

import pytest

from interop_clients import describe

NORMAL = {"code": 1000, "reason": ""}
MiB = 1024 * 1024

compression = pytest.mark.parametrize("compression", [False, True], ids=["plain", "deflate"])


# --------------------------------------------------------------------------
# Helpers


def send_item(message):
    """A message to send, as a scenario item (see client.js)."""
    if isinstance(message, str):
        return {"text": message}
    return {"binary_b64": base64.b64encode(message).decode()}


def send_fragments(pieces, binary):
    """One message sent as one frame per piece (bytes; text may split a character)."""
    return {"fragments_b64": [base64.b64encode(p).decode() for p in pieces], "binary": binary}


def check_opened(result, protocol=None, compression=False):
    assert result["error"] is None, result["error"]
    assert result["opened"] is True
    assert result["protocol"] == protocol
    assert result["extensions"] == ("permessage-deflate" if compression else None)


def backend_view(session, protocol=None, compression=False):
    """Waits for the backend's close; returns (messages it received, its close)."""
    opened = session.backend.wait_event("open")
    assert opened["subprotocol"] == protocol
    assert opened["compression"] is compression
    closed = session.backend.wait_event("close")
    received = [
        {k: ev[k] for k in ("type", "length", "sha256")}
        for ev in session.backend.events
        if ev["event"] == "message"
    ]
    return received, {"code": closed["code"], "reason": closed["reason"]}


def as_received(message):
    """What a backend event says about a message it received."""
    d = describe(message)
    return {"type": d["type"], "length": d["length"], "sha256": d["sha256"]}


# Messages the backends send on their own (must match backend.py / backend.js).
GREETING = ["hello from the backend ✓", bytes(range(256)), "", b""]
FRAGMENTED_FROM_BACKEND = ["Hello, wörld ✓!", bytes(i % 256 for i in range(1024))]


# --------------------------------------------------------------------------
# Traffic in both directions


@compression
def test_echo_text_and_binary(session, compression):
    """Client -> backend -> client: text and binary, empty, non-ASCII, larger
    than a relay chunk; each echoed with its type, in order."""
    rng = random.Random(1)
    messages = [
        "hello ✓",
        bytes(range(256)),
        "",
        b"",
        "clef 𝄞, NUL \x00, é",
        "ab" * 50_000,
        rng.randbytes(100_000),
    ]
    r = session.client(
        "/echo",
        send=[send_item(m) for m in messages],
        expect=len(messages),
        close=NORMAL,
        compression=compression,
    )
    check_opened(r, compression=compression)
    assert r["messages"] == [describe(m) for m in messages]
    assert r["close"] == NORMAL
    received, closed = backend_view(session, compression=compression)
    assert received == [as_received(m) for m in messages]
    assert closed == NORMAL


@compression
def test_backend_sends_first(session, compression):
    """Backend -> client without a request: text, binary, empty ones, in order."""
    r = session.client("/greet", expect=len(GREETING), close=NORMAL, compression=compression)
    check_opened(r, compression=compression)
    assert r["messages"] == [describe(m) for m in GREETING]
    assert r["close"] == NORMAL
    received, closed = backend_view(session, compression=compression)
    assert received == []
    assert closed == NORMAL


# --------------------------------------------------------------------------
# Fragmented messages


@compression
def test_fragmented_client_to_backend(session, compression):
    """The client sends a text message whose frames split UTF-8 characters
    (with an empty middle frame) and a binary message in frames larger than a
    relay chunk; the backend receives each as one whole message."""
    text_pieces = [b"frag \xf0\x9d", b"", b"\x84\x9e clef \xe2\x9c", b"\x93"]
    text = b"".join(text_pieces).decode()
    assert text == "frag 𝄞 clef ✓"
    blob = random.Random(2).randbytes(70_000)
    binary_pieces = [blob[:10], blob[10:40_000], blob[40_000:]]
    r = session.client(
        "/echo",
        send=[send_fragments(text_pieces, binary=False), send_fragments(binary_pieces, binary=True)],
        expect=2,
        close=NORMAL,
        compression=compression,
    )
    check_opened(r, compression=compression)
    received, closed = backend_view(session, compression=compression)
    assert received == [as_received(text), as_received(blob)]
    assert r["messages"] == [describe(text), describe(blob)]
    assert closed == NORMAL
    assert r["close"] == NORMAL


@compression
def test_fragmented_backend_to_client(session, compression):
    """The backend sends a fragmented text message (UTF-8 characters split
    across frames) and a fragmented binary one; the client gets both whole."""
    r = session.client("/fragmented", expect=2, close=NORMAL, compression=compression)
    check_opened(r, compression=compression)
    assert r["messages"] == [describe(m) for m in FRAGMENTED_FROM_BACKEND]
    assert r["close"] == NORMAL
    received, closed = backend_view(session, compression=compression)
    assert received == []
    assert closed == NORMAL


def test_ping_inside_fragmented_message(session):
    """A ping between two frames of a fragmented message (allowed by RFC 6455
    §5.4) is answered with a pong carrying the same payload, and the message
    still arrives whole."""
    pieces = [b"first half, ", b"second half"]
    r = session.client(
        "/echo",
        send=[dict(send_fragments(pieces, binary=False), ping_between="are you there?")],
        expect=1,
        close=NORMAL,
    )
    check_opened(r)
    assert r["pongs"] == ["are you there?"]
    assert r["messages"] == [describe("first half, second half")]
    received, closed = backend_view(session)
    assert received == [as_received("first half, second half")]
    assert closed == NORMAL


# --------------------------------------------------------------------------
# Large messages


def large_payload(kind):
    """5 MiB of random bytes, or random text of 5 MiB with 1- to 4-byte
    characters (so relay chunk boundaries fall inside characters)."""
    rng = random.Random(3)
    if kind == "binary":
        return rng.randbytes(5 * MiB)
    alphabet = ["a", "b", " ", "é", "ß", "✓", "€", "𝄞", "😀"]
    parts, size = [], 0
    while size < 5 * MiB:
        chunk = "".join(rng.choices(alphabet, k=4096))
        parts.append(chunk)
        size += len(chunk.encode())
    return "".join(parts)


@compression
@pytest.mark.parametrize("kind", ["binary", "text"])
def test_large_message_each_way(session, kind, compression, tmp_path):
    """One ~5 MiB message client -> backend, and the same back."""
    payload = large_payload(kind)
    data = payload if isinstance(payload, bytes) else payload.encode()
    assert len(data) >= 5 * MiB
    path = tmp_path / "large.bin"
    path.write_bytes(data)
    r = session.client(
        "/echo",
        send=[{"file": str(path), "binary": kind == "binary"}],
        expect=1,
        close=NORMAL,
        compression=compression,
    )
    check_opened(r, compression=compression)
    received, closed = backend_view(session, compression=compression)
    assert received == [as_received(payload)]
    assert r["messages"] == [describe(payload)]
    assert closed == NORMAL
    assert r["close"] == NORMAL


# --------------------------------------------------------------------------
# Subprotocols


@pytest.mark.parametrize(
    "offered, chosen",
    [
        (["chat.v1", "chat.v2"], "chat.v2"),  # the backend's preference, not the first offered
        (["x-unknown", "chat.v1"], "chat.v1"),
        ([], None),
    ],
    ids=["backend-preference", "one-match", "none-offered"],
)
def test_subprotocol_negotiation(session, offered, chosen):
    """The client sees exactly the subprotocol the backend chose."""
    r = session.client("/echo", send=[send_item("sub")], expect=1, close=NORMAL, protocols=offered)
    check_opened(r, protocol=chosen)
    assert r["messages"] == [describe("sub")]
    received, closed = backend_view(session, protocol=chosen)
    assert received == [as_received("sub")]
    assert closed == NORMAL


def test_subprotocol_no_match(session):
    """Offered subprotocols the backend does not support: the backend picks
    none, and wsgate must not invent one. Python `websockets` accepts that;
    Node `ws` fails the handshake, as it must when none was chosen."""
    r = session.client("/echo", send=[send_item("sub")], expect=1, close=NORMAL, protocols=["x-unknown"])
    opened = session.backend.wait_event("open")
    assert opened["subprotocol"] is None
    if session.client_kind == "python":
        check_opened(r, protocol=None)
        assert r["messages"] == [describe("sub")]
        assert r["close"] == NORMAL
    else:
        assert r["opened"] is False
        assert r["error"] == "Server sent no subprotocol"


# --------------------------------------------------------------------------
# Close codes and reasons

LONGEST_REASON = "é" * 61 + "x"  # 123 bytes, the most a close frame can carry
assert len(LONGEST_REASON.encode()) == 123

CLIENT_CLOSES = [
    (4002, "bye ✓"),
    (1000, ""),
    (1001, "going away"),
    (4999, LONGEST_REASON),
]


@pytest.mark.parametrize("code, reason", CLIENT_CLOSES, ids=["4002", "1000", "1001", "4999-longest-reason"])
def test_client_closes_with_code(session, code, reason):
    """The client closes with a code and reason: the backend receives exactly
    them, and the client receives the backend's echo of them."""
    r = session.client(
        "/echo",
        send=[send_item("last words")],
        expect=1,
        close={"code": code, "reason": reason},
    )
    check_opened(r)
    assert r["messages"] == [describe("last words")]
    received, closed = backend_view(session)
    assert received == [as_received("last words")]
    assert closed == {"code": code, "reason": reason}
    assert r["close"] == {"code": code, "reason": reason}


BACKEND_CLOSES = [
    (4001, "done"),
    (1000, ""),
    (1011, "server error"),
    (4999, LONGEST_REASON),
]


@pytest.mark.parametrize("code, reason", BACKEND_CLOSES, ids=["4001", "1000", "1011", "4999-longest-reason"])
def test_backend_closes_with_code(session, code, reason):
    """The backend closes with a code and reason: the client receives exactly
    them (after the message sent before the close), and the backend receives
    the client's echo of them."""
    path = f"/close/{code}/{urllib.parse.quote(reason, safe='')}"
    r = session.client(path, close=None)
    check_opened(r)
    assert r["messages"] == [describe("closing")]
    assert r["close"] == {"code": code, "reason": reason}
    received, closed = backend_view(session)
    assert received == []
    assert closed == {"code": code, "reason": reason}
