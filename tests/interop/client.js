#!/usr/bin/env node
// WebSocket client for the wsgate interop tests, built on Node `ws`.
//
// Why this exists: test_interop.py drives wsgate with real clients people use.
// This is the Node `ws` one (the Python `websockets` one lives in
// test_interop.py itself and runs the same scenarios with the same result
// shape, so the tests assert identical exact results for both clients).
//
// Usage: node client.js SCENARIO_JSON
//        node client.js @FILE          (the scenario JSON read from FILE, for
//                                       scenarios too long for one argument)
//   SCENARIO_JSON = {
//     "url": "wss://127.0.0.1:PORT/PATH",
//     "ca": "/path/ca.pem",            // the only CA trusted
//     "protocols": ["chat.v1"],        // subprotocols offered (may be empty)
//     "compression": false,            // offer permessage-deflate?
//     "send": [SEND, ...],             // sent in order right after open
//     "expect": N,                     // messages to receive before closing
//     "close": {"code": C, "reason": R} or null,
//                                      // null: wait for the server to close
//     "timeoutMs": 15000
//   }
//   SEND is one of
//     {"text": "..."}                               a text message
//     {"binary_b64": "..."}                         a binary message
//     {"fragments_b64": ["..", ..], "binary": B}    one message, one frame per
//                                                   piece (text pieces may
//                                                   split a UTF-8 character);
//       with "ping_between": "P" a ping with payload P is sent right after
//       the first piece, i.e. in the middle of the fragmented message
//     {"ping": "P"}                                 a ping with payload P
//     {"file": "/path", "binary": B}                a message read from a file
//
// Prints one JSON line on stdout and exits 0 (2 on the overall timeout):
//   {"opened": bool, "protocol": S or null, "extensions": S or null,
//    "messages": [{"type": "text"|"binary", "length": N, "sha256": HEX,
//                  "data": STR (text) / base64 (binary) / null if > 4096 bytes}],
//    "pongs": [P, ...],                            // pong payloads received
//    "close": {"code": C, "reason": R} or null,   // what the SERVER sent
//                                                  // (1006 if no close frame)
//    "error": STR or null}
// Messages are collected until the connection is closed, so an unexpected
// extra message shows up in the result.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const WebSocket = require('ws');

const arg = process.argv[2];
const scenario = JSON.parse(arg.startsWith('@') ? fs.readFileSync(arg.slice(1), 'utf8') : arg);
const result = {
  opened: false,
  protocol: null,
  extensions: null,
  messages: [],
  pongs: [],
  close: null,
  error: null,
};

let finished = false;
function finish(exitCode) {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(exitCode));
}

const ws = new WebSocket(scenario.url, scenario.protocols || [], {
  ca: fs.readFileSync(scenario.ca),
  perMessageDeflate: !!scenario.compression,
  maxPayload: 64 * 1024 * 1024,
  handshakeTimeout: 5000,
});

const timer = setTimeout(() => {
  if (!result.error) result.error = `timeout after ${scenario.timeoutMs} ms`;
  ws.terminate();
  finish(2);
}, scenario.timeoutMs || 15000);

function describe(data, isBinary) {
  return {
    type: isBinary ? 'binary' : 'text',
    length: data.length,
    sha256: crypto.createHash('sha256').update(data).digest('hex'),
    data: data.length > 4096 ? null : data.toString(isBinary ? 'base64' : 'utf8'),
  };
}

function sendOne(item) {
  if ('text' in item) {
    ws.send(item.text);
  } else if ('binary_b64' in item) {
    ws.send(Buffer.from(item.binary_b64, 'base64'), { binary: true });
  } else if ('fragments_b64' in item) {
    const pieces = item.fragments_b64.map((p) => Buffer.from(p, 'base64'));
    pieces.forEach((piece, i) => {
      ws.send(piece, { binary: !!item.binary, fin: i === pieces.length - 1 });
      if (i === 0 && 'ping_between' in item) ws.ping(Buffer.from(item.ping_between));
    });
  } else if ('ping' in item) {
    ws.ping(Buffer.from(item.ping));
  } else if ('file' in item) {
    ws.send(fs.readFileSync(item.file), { binary: !!item.binary });
  } else {
    throw new Error(`unknown send item ${JSON.stringify(item)}`);
  }
}

let closing = false;
function maybeClose() {
  const close = scenario.close;
  if (!close || closing || result.messages.length < (scenario.expect || 0)) return;
  closing = true;
  if (close.code === null || close.code === undefined) ws.close();
  else ws.close(close.code, close.reason || '');
}

ws.on('open', () => {
  result.opened = true;
  result.protocol = ws.protocol || null;
  result.extensions = ws.extensions || null;
  for (const item of scenario.send || []) sendOne(item);
  maybeClose();
});

ws.on('message', (data, isBinary) => {
  result.messages.push(describe(data, isBinary));
  maybeClose();
});

ws.on('pong', (data) => {
  result.pongs.push(data.toString('utf8'));
});

ws.on('error', (err) => {
  if (!result.error) result.error = err.message;
});

ws.on('close', (code, reason) => {
  result.close = { code, reason: reason.toString('utf8') };
  clearTimeout(timer);
  finish(0);
});
