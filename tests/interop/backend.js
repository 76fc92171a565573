#!/usr/bin/env node
// WebSocket backend for the wsgate interop tests, built on Node `ws`.
//
// Why this exists: wsgate must relay sessions between WebSocket implementations
// that real people use, not only between copies of the library it was tested
// with. test_interop.py puts this server behind wsgate (TLS in front, plain
// ws:// to this backend) and talks to it with the Python `websockets` client.
// backend.py is the same server written with Python `websockets`; the two MUST
// behave identically, so the tests can assert the same exact results for both.
//
// Usage: node backend.js
//   Listens on 127.0.0.1, port 0. The first line on stdout is the port number.
//   Every further stdout line is one JSON event (see below). Logs go to stderr.
//
// Behaviour, selected by the request path (the query string is ignored):
//   /echo          echo every message back with its type (text stays text,
//                  binary stays binary).
//   /greet         on open, send exactly these four messages, then echo:
//                    text   "hello from the backend ✓"
//                    binary bytes 0x00..0xff (256 bytes)
//                    text   "" (empty)
//                    binary b"" (empty)
//   /fragmented    on open, send two fragmented messages, then echo:
//                    text   "Hello, wörld ✓!" as the three UTF-8 byte pieces
//                           "Hello, w\xc3" "\xb6rld \xe2" "\x9c\x93!"
//                           (two characters are split across frames)
//                    binary bytes (i % 256 for i in 0..1023) as the pieces
//                           [0:1] [1:700] [700:1024]
//                  (Python `websockets` adds an empty final continuation frame,
//                  Node `ws` does not; the messages are the same.)
//   /close/CODE/REASON
//                  on open, send text "closing", then start the close handshake
//                  with CODE and REASON (percent-decoded, may be empty).
//   anything else  close with 1008 "unknown path".
//
// Subprotocols: the server supports "chat.v2" and "chat.v1" and picks, in that
// order of preference, the first it supports among those the client offered
// (so an offer of "chat.v1, chat.v2" gets "chat.v2"). No match, or no offer:
// no subprotocol, and the connection is accepted.
//
// Compression: permessage-deflate is accepted when the client offers it.
// Message size limit: 64 MiB (the tests send 5 MiB messages).
// No keepalive pings are sent.
//
// Events on stdout (one JSON object per line):
//   {"event": "open", "path": P, "subprotocol": S or null, "compression": bool}
//   {"event": "message", "path": P, "type": "text"|"binary", "length": N,
//    "sha256": HEX}                       for every message received
//   {"event": "close", "path": P, "code": C, "reason": R}
//       once per connection, when it is fully closed. C and R are what the
//       PEER sent in its close frame: 1005 and "" for a close frame without a
//       code, 1006 and "" when no close frame was received at all.
'use strict';

const crypto = require('crypto');
const { WebSocketServer } = require('ws');

const SUBPROTOCOLS = ['chat.v2', 'chat.v1'];

const BYTES_256 = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
const GREETING = [
  ['hello from the backend ✓', false],
  [BYTES_256, true],
  ['', false],
  [Buffer.alloc(0), true],
];

const FRAG_TEXT_PIECES = [
  Buffer.from('Hello, w\xc3', 'latin1'),
  Buffer.from('\xb6rld \xe2', 'latin1'),
  Buffer.from('\x9c\x93!', 'latin1'),
];
const FRAG_BINARY = Buffer.from(Array.from({ length: 1024 }, (_, i) => i % 256));
const FRAG_BINARY_PIECES = [
  FRAG_BINARY.subarray(0, 1),
  FRAG_BINARY.subarray(1, 700),
  FRAG_BINARY.subarray(700, 1024),
];

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

function sendFragmented(ws, pieces, binary) {
  pieces.forEach((piece, i) => {
    ws.send(piece, { binary, fin: i === pieces.length - 1 });
  });
}

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: 0,
  perMessageDeflate: true,
  maxPayload: 64 * 1024 * 1024,
  handleProtocols: (offered) => {
    for (const protocol of SUBPROTOCOLS) {
      if (offered.has(protocol)) return protocol;
    }
    return false;
  },
});

wss.on('listening', () => {
  process.stdout.write(`${wss.address().port}\n`);
});

wss.on('error', (err) => {
  console.error(`backend.js: server error: ${err.message}`);
  process.exit(1);
});

wss.on('connection', (ws, req) => {
  const fullPath = req.url;
  const path = fullPath.split('?', 1)[0];
  emit({
    event: 'open',
    path: fullPath,
    subprotocol: ws.protocol || null,
    compression: ws.extensions.includes('permessage-deflate'),
  });

  let echo = true;
  ws.on('message', (data, isBinary) => {
    emit({
      event: 'message',
      path: fullPath,
      type: isBinary ? 'binary' : 'text',
      length: data.length,
      sha256: crypto.createHash('sha256').update(data).digest('hex'),
    });
    if (echo) ws.send(data, { binary: isBinary });
  });
  ws.on('close', (code, reason) => {
    emit({ event: 'close', path: fullPath, code, reason: reason.toString('utf8') });
  });
  ws.on('error', (err) => {
    console.error(`backend.js: connection error on ${fullPath}: ${err.message}`);
  });

  if (path === '/echo') {
    // nothing before echoing
  } else if (path === '/greet') {
    for (const [data, binary] of GREETING) ws.send(data, { binary });
  } else if (path === '/fragmented') {
    sendFragmented(ws, FRAG_TEXT_PIECES, false);
    sendFragmented(ws, FRAG_BINARY_PIECES, true);
  } else if (path.startsWith('/close/')) {
    const parts = path.split('/');
    const code = parseInt(parts[2], 10);
    const reason = parts.length > 3 ? decodeURIComponent(parts.slice(3).join('/')) : '';
    echo = false;
    ws.send('closing');
    ws.close(code, reason);
  } else {
    echo = false;
    ws.close(1008, 'unknown path');
  }
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
