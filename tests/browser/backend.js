// Why this exists: `wsgate echo` only echoes, and the browser test also needs a
// backend that closes the session FIRST (with its own code and reason), so that
// the browser sees a server-initiated close relayed through wsgate. This is a
// tiny backend on Node's `ws` package (an implementation independent of wsgate
// and of tungstenite). It also records what each connection looked like from
// the backend's side (path, headers, the browser's close reply) so the test can
// check what wsgate forwarded.
//
// Protocol: every message is echoed, except a JSON text message
// {"close": [CODE, "REASON"]}, which is answered with the text "closing" and
// then a close frame with CODE and REASON.
//
// With { deflate: true } it also accepts permessage-deflate and compresses
// every message it sends, so the browser's and the backend's compressed frames
// (RSV1) pass through wsgate.

import { WebSocketServer } from 'ws';

/**
 * Starts the backend on 127.0.0.1 on a free port.
 * @param {{deflate?: boolean}} [options]
 * @returns {Promise<{port: number, connections: object[], close: () => Promise<void>}>}
 */
export async function startCloserBackend({ deflate = false } = {}) {
  // handleProtocols: choose the first subprotocol the client offered (the
  // same rule as `wsgate echo`), so the test can check it reached the browser.
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    handleProtocols: (protocols) => (protocols.size ? [...protocols][0] : false),
    perMessageDeflate: deflate ? { threshold: 0 } : false,
  });
  await new Promise((resolve, reject) => {
    wss.once('listening', resolve);
    wss.once('error', reject);
  });

  const connections = [];
  wss.on('connection', (ws, req) => {
    const record = {
      url: req.url,
      headers: { ...req.headers },
      protocol: ws.protocol,
      extensions: ws.extensions,
      received: [],
      closedBy: null,
      closeCode: null,
      closeReason: null,
    };
    connections.push(record);
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        record.received.push({ binary: true, length: data.length });
        ws.send(data, { binary: true });
        return;
      }
      const text = data.toString('utf8');
      record.received.push({ binary: false, text });
      let command = null;
      try {
        command = JSON.parse(text);
      } catch {
        // not a command: plain echo
      }
      if (command && Array.isArray(command.close)) {
        const [code, reason] = command.close;
        ws.send('closing');
        record.closedBy = 'backend';
        ws.close(code, reason);
      } else {
        ws.send(text);
      }
    });
    // For a close we started, `code`/`reason` are those of the peer's reply.
    ws.on('close', (code, reason) => {
      record.closeCode = code;
      record.closeReason = reason.toString('utf8');
      if (!record.closedBy) record.closedBy = 'client';
    });
    ws.on('error', (err) => {
      record.error = String(err);
    });
  });

  return {
    port: wss.address().port,
    connections,
    close: () =>
      new Promise((resolve) => {
        for (const client of wss.clients) client.terminate();
        wss.close(() => resolve());
      }),
  };
}
