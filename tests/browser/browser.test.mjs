// Why this exists: the Rust, Python and Node tests talk to wsgate with WebSocket
// libraries; this one checks that a real browser works through it. Headless
// Chromium (the system package, /usr/bin/chromium, driven by playwright-core)
// loads a page over https:// from a test origin, opens `new WebSocket("wss://…")`
// to a TLS listener of wsgate, exchanges text and binary messages (exact echoes,
// unicode, a 300 KiB ArrayBuffer), closes with 4000 "bye", sees a backend close
// first with 4001 (tests/browser/backend.js), sends a close without a code,
// passes permessage-deflate end to end, and checks the subprotocol of wsgate's
// 101 as Chromium's network stack received it. TLS is real: the
// certificate comes from a throwaway CA (tests/support/test-ca.sh) and Chromium
// trusts exactly that key through --ignore-certificate-errors-spki-list.
//
// Run from the repository root:  node --test tests/browser/
// Needs: target/release/wsgate (or WSGATE_BIN), /usr/bin/chromium (or CHROMIUM),
// and `npm ci --prefix tests/browser`. A screenshot of the page goes to
// reports/browser/page.png.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const WSGATE_BIN = process.env.WSGATE_BIN || path.join(REPO, 'target', 'release', 'wsgate');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = path.join(REPO, 'reports', 'browser', 'page.png');
const PORT_WAIT_MS = 10_000;
const RESULTS_WAIT_MS = 40_000; // the page bounds each of its cases to 8 s

// ---------- helpers ----------

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const children = [];

// Starts a child process, keeping its output for diagnostics.
function startChild(name, cmd, args, env = {}) {
  const child = spawn(cmd, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1', ...env },
  });
  child.label = name;
  child.output = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { child.output += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { child.output += d; });
  child.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  child.once('error', (err) => { child.output += `\n[spawn error] ${err}`; });
  children.push(child);
  return child;
}

function running(child) {
  return child.exitCode === null && child.signalCode === null;
}

async function stopChild(child) {
  if (!running(child)) return;
  child.kill('SIGTERM');
  const timedOut = await Promise.race([
    child.exited.then(() => false),
    new Promise((r) => setTimeout(() => r(true), 3000)),
  ]);
  if (timedOut && running(child)) {
    child.kill('SIGKILL');
    await Promise.race([child.exited, new Promise((r) => setTimeout(r, 2000))]);
  }
}

// Last resort if the runner exits without teardown: never leave children behind.
process.on('exit', () => {
  for (const c of children) if (running(c)) c.kill('SIGKILL');
});

// Waits until 127.0.0.1:port accepts a TCP connection, failing early if the child exits.
async function waitForPort(port, child) {
  const deadline = Date.now() + PORT_WAIT_MS;
  for (;;) {
    if (child && !running(child)) {
      throw new Error(`${child.label} exited (code ${child.exitCode}, signal ${child.signalCode}) before listening on ${port}:\n${child.output}`);
    }
    const ok = await new Promise((resolve) => {
      const sock = net.connect({ host: '127.0.0.1', port });
      sock.setTimeout(500);
      sock.once('connect', () => { sock.destroy(); resolve(true); });
      sock.once('error', () => resolve(false));
      sock.once('timeout', () => { sock.destroy(); resolve(false); });
    });
    if (ok) return;
    if (Date.now() > deadline) {
      throw new Error(`nothing listening on 127.0.0.1:${port} after ${PORT_WAIT_MS} ms${child ? `; ${child.label} output:\n${child.output}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function withTimeout(promise, ms, what) {
  let timer;
  try {
    return await Promise.race([
      promise,
      new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms); }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

const stripAnsi = (s) => s.replace(/\x1b\[[0-9;]*m/g, '');

// ---------- the fixture: CA, echo server, Node backend, wsgate, https page server, Chromium ----------

const fx = {
  tmp: null, echo: null, proxy: null, backend: null, pageServer: null,
  context: null, page: null, results: null, response: null,
  handshakes: [], consoleLines: [],
};

function diagnostics() {
  const parts = [];
  for (const c of children) parts.push(`--- ${c.label} output ---\n${stripAnsi(c.output).slice(-4000)}`);
  if (fx.consoleLines.length) parts.push(`--- browser console ---\n${fx.consoleLines.join('\n')}`);
  return parts.join('\n');
}

describe('wsgate through a real browser (headless Chromium)', () => {
  before(async () => {
    // Prerequisites, each with a clear message.
    try {
      fs.accessSync(WSGATE_BIN, fs.constants.X_OK);
    } catch {
      throw new Error(`wsgate binary not found or not executable at ${WSGATE_BIN}: run \`cargo build --release\` or set WSGATE_BIN`);
    }
    try {
      fs.accessSync(CHROMIUM, fs.constants.X_OK);
    } catch {
      throw new Error(`Chromium not found at ${CHROMIUM}: install the Debian package \`chromium\` (apt-get install chromium) or set CHROMIUM`);
    }
    let chromium;
    try {
      ({ chromium } = await import('playwright-core'));
    } catch (err) {
      throw new Error(`cannot load playwright-core (${err.message}): run \`npm ci --prefix tests/browser\` from the repository root`);
    }
    const { startCloserBackend } = await import('./backend.js');

    fx.tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'wsgate-browser-'));
    const caDir = path.join(fx.tmp, 'ca');
    execFileSync('bash', [path.join(REPO, 'tests', 'support', 'test-ca.sh'), caDir], { timeout: 30_000, stdio: 'pipe' });
    const certFile = path.join(caDir, 'cert.pem');
    const keyFile = path.join(caDir, 'key.pem');
    const spki = fs.readFileSync(path.join(caDir, 'spki.txt'), 'utf8').trim();
    assert.match(spki, /^[A-Za-z0-9+/]{43}=$/, 'spki.txt should hold a base64 SHA-256');

    // The echo backend (tungstenite, independent of wsgate's frame code).
    const echoPort = await freePort();
    fx.echo = startChild('wsgate echo', WSGATE_BIN, ['echo', '--listen', `127.0.0.1:${echoPort}`]);
    await waitForPort(echoPort, fx.echo);

    // The backend that closes first (Node `ws`, in this process), and one
    // more that negotiates permessage-deflate.
    fx.backend = await startCloserBackend();
    fx.deflate = await startCloserBackend({ deflate: true });

    // wsgate with a TLS listener and two routes.
    const proxyPort = await freePort();
    const configFile = path.join(fx.tmp, 'wsgate.yaml');
    fs.writeFileSync(configFile, [
      '# written by tests/browser/browser.test.mjs',
      'listeners:',
      `  - bind: "127.0.0.1:${proxyPort}"`,
      '    tls:',
      `      cert: ${JSON.stringify(certFile)}`,
      `      key: ${JSON.stringify(keyFile)}`,
      'routes:',
      '  - path_prefix: /echo',
      '    backend: echo',
      '  - path_prefix: /closer',
      '    backend: closer',
      '  - path_prefix: /deflate',
      '    backend: deflate',
      'backends:',
      '  echo:',
      '    servers:',
      `      - url: "ws://127.0.0.1:${echoPort}"`,
      '  closer:',
      '    servers:',
      `      - url: "ws://127.0.0.1:${fx.backend.port}"`,
      '  deflate:',
      '    servers:',
      `      - url: "ws://127.0.0.1:${fx.deflate.port}"`,
      '',
    ].join('\n'));
    fx.proxy = startChild('wsgate run', WSGATE_BIN, ['run', '--config', configFile]);
    await waitForPort(proxyPort, fx.proxy);

    // The https origin that serves the test page, with the same certificate.
    const html = fs.readFileSync(path.join(HERE, 'page', 'index.html'));
    fx.pageServer = https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) }, (req, res) => {
      if (req.method === 'GET' && new URL(req.url, 'https://localhost').pathname === '/') {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
        res.end(html);
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('not found');
      }
    });
    await new Promise((resolve, reject) => {
      fx.pageServer.once('error', reject);
      fx.pageServer.listen(0, '127.0.0.1', resolve);
    });
    const pagePort = fx.pageServer.address().port;
    fx.origin = `https://localhost:${pagePort}`;
    fx.wssBase = `wss://localhost:${proxyPort}`;

    // Chromium with a fresh profile; it trusts exactly the test server key.
    const profile = path.join(fx.tmp, 'profile');
    fs.mkdirSync(profile);
    fx.context = await withTimeout(chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30_000,
      viewport: { width: 1000, height: 900 },
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--disable-quic',
        `--ignore-certificate-errors-spki-list=${spki}`,
      ],
    }), 40_000, 'launching Chromium');
    fx.page = fx.context.pages()[0] || await fx.context.newPage();
    fx.page.setDefaultTimeout(20_000);
    fx.page.on('console', (m) => fx.consoleLines.push(`[${m.type()}] ${m.text()}`));
    fx.page.on('pageerror', (e) => fx.consoleLines.push(`[pageerror] ${e}`));

    // The 101 responses, as Chromium's network stack received them.
    const cdp = await fx.context.newCDPSession(fx.page);
    const requests = new Map();
    cdp.on('Network.webSocketCreated', (e) => requests.set(e.requestId, { url: e.url }));
    cdp.on('Network.webSocketHandshakeResponseReceived', (e) => {
      const headers = {};
      for (const [k, v] of Object.entries(e.response.headers || {})) headers[k.toLowerCase()] = v;
      fx.handshakes.push({ url: requests.get(e.requestId)?.url, status: e.response.status, headers });
    });
    await cdp.send('Network.enable');

    try {
      fx.response = await fx.page.goto(`${fx.origin}/?wss=${encodeURIComponent(fx.wssBase)}`, { timeout: 15_000 });
      await fx.page.waitForFunction(() => window.results && window.results.done === true, null, {
        timeout: RESULTS_WAIT_MS,
        polling: 100,
      });
      fx.results = await fx.page.evaluate(() => window.results);
    } finally {
      // The screenshot is taken even when the page failed, to show how far it got.
      await fsp.mkdir(path.dirname(SCREENSHOT), { recursive: true });
      await fx.page.screenshot({ path: SCREENSHOT, fullPage: true, timeout: 10_000 }).catch((err) => {
        console.error(`screenshot failed: ${err.message}`);
      });
    }
  }, { timeout: 90_000 });

  after(async () => {
    if (fx.context) await withTimeout(fx.context.close(), 15_000, 'closing Chromium').catch((e) => console.error(String(e)));
    if (fx.pageServer) {
      fx.pageServer.closeAllConnections?.();
      await new Promise((r) => fx.pageServer.close(r));
    }
    await Promise.all(children.map(stopChild));
    for (const b of [fx.backend, fx.deflate]) {
      if (b) await withTimeout(b.close(), 5000, 'closing a Node backend').catch((e) => console.error(String(e)));
    }
    if (fx.tmp) await fsp.rm(fx.tmp, { recursive: true, force: true }).catch(() => {});
  });

  // Asserts every check the page recorded for one case, with a readable message.
  function assertCase(name) {
    assert.ok(fx.results, 'the page produced no results');
    assert.equal(fx.results.error, undefined, `the page script failed: ${fx.results.error}`);
    const c = fx.results.cases.find((x) => x.name === name);
    assert.ok(c, `no case named ${JSON.stringify(name)} in the page results`);
    const failed = c.checks.filter((k) => !k.ok);
    assert.deepEqual(
      failed.map((k) => `${k.what}: expected ${k.expected}, got ${k.actual}`),
      [],
      `case "${name}" failed in the browser\n${diagnostics()}`,
    );
    assert.ok(c.checks.length > 3, 'the case recorded its checks');
  }

  it('loads the test page over https from the test origin, trusted through the SPKI pin', async () => {
    assert.ok(fx.response, 'no response for the page');
    assert.equal(fx.response.status(), 200);
    assert.equal(new URL(fx.response.url()).origin, fx.origin);
    assert.equal(fx.results.origin, fx.origin);
    const security = await fx.response.securityDetails();
    assert.ok(security, 'the page was not loaded over TLS');
    assert.equal(security.issuer, 'wsgate test CA');
  });

  it('echoes text, unicode, empty, large and binary messages exactly, then closes with 4000 "bye"', () => {
    assertCase('echo + client close 4000');
  });

  it('relays a close that the backend starts (4001, unicode reason) as a clean close', () => {
    assertCase('backend closes first 4001');
  });

  it('gives 1005 for a close frame without a code, and no subprotocol when none was offered', () => {
    assertCase('no subprotocol + close without code');
  });

  it('passes permessage-deflate through end to end: compressed frames both ways', () => {
    assertCase('permessage-deflate');
    const b = fx.deflate.connections;
    assert.equal(b.length, 1, 'one connection to the deflate backend');
    assert.match(b[0].extensions, /^permessage-deflate/, 'the backend negotiated permessage-deflate');
    assert.match(b[0].headers['sec-websocket-extensions'] || '', /permessage-deflate/, 'wsgate passed on the browser offer');
  });

  it("wsgate's 101 carried the subprotocol the page asked for", () => {
    const byPath = (p) => fx.handshakes.filter((h) => new URL(h.url).pathname === p);
    const echo = byPath('/echo');
    const closer = byPath('/closer');
    const deflate = byPath('/deflate');
    assert.equal(echo.length, 2, `two handshakes to /echo expected: ${JSON.stringify(fx.handshakes)}`);
    assert.equal(closer.length, 1, `one handshake to /closer expected: ${JSON.stringify(fx.handshakes)}`);
    for (const h of fx.handshakes) {
      assert.equal(h.status, 101, `status of ${h.url}`);
      assert.equal(h.headers.upgrade?.toLowerCase(), 'websocket', `Upgrade of ${h.url}`);
    }
    assert.equal(echo[0].headers['sec-websocket-protocol'], 'wsgate.test.v1');
    assert.equal(echo[1].headers['sec-websocket-protocol'], undefined, 'no subprotocol when none was offered');
    assert.equal(closer[0].headers['sec-websocket-protocol'], 'closer.v1');
    assert.equal(deflate.length, 1, `one handshake to /deflate expected: ${JSON.stringify(fx.handshakes)}`);
    assert.equal(deflate[0].headers['sec-websocket-protocol'], 'deflate.v1');
    assert.match(deflate[0].headers['sec-websocket-extensions'] || '', /^permessage-deflate/);
    assert.equal(echo[0].headers['sec-websocket-extensions'], undefined, 'wsgate echo does not compress');
    // And what the page saw on the socket (also asserted per case).
    const protocolOf = (name) => fx.results.cases.find((c) => c.name === name)
      .checks.find((k) => k.what.startsWith('ws.protocol'))?.value;
    assert.equal(protocolOf('echo + client close 4000'), 'wsgate.test.v1');
    assert.equal(protocolOf('backend closes first 4001'), 'closer.v1');
  });

  it('the backend saw the browser request as wsgate forwarded it, and the browser\'s close reply', async () => {
    const conns = fx.backend.connections;
    assert.equal(conns.length, 1, 'one connection to the closing backend');
    const b = conns[0];
    assert.equal(b.url, '/closer');
    assert.equal(b.headers.origin, fx.origin, 'the browser Origin is passed on');
    assert.equal(b.headers['sec-websocket-protocol'], 'closer.v1');
    assert.equal(b.headers['x-forwarded-proto'], 'https');
    assert.match(b.headers['user-agent'] || '', /Chrome\//);
    assert.equal(b.protocol, 'closer.v1');
    assert.deepEqual(b.received.map((m) => m.text), ['before the close', JSON.stringify({ close: [4001, 'backend says bye ✓'] })]);
    // The browser's reply to the backend's close travels back through wsgate.
    const deadline = Date.now() + 5000;
    while (b.closeCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(b.closedBy, 'backend');
    assert.equal(b.closeCode, 4001, 'the browser echoes the close code back to the backend');
  });

  it('wsgate logged each session with its close code and who closed', async () => {
    // The log line is written when the session ends, which can be just after
    // the browser saw its close event.
    const want = [
      /session closed.*route=\/echo.*close_code=4000.*closed_by=client/,
      /session closed.*route=\/closer.*close_code=4001.*closed_by=backend/,
      /session closed.*route=\/echo.*close_code=-1.*closed_by=client/,
      /session closed.*route=\/deflate.*close_code=1000.*closed_by=client/,
    ];
    const deadline = Date.now() + 5000;
    let log = '';
    for (;;) {
      log = stripAnsi(fx.proxy.output);
      if (want.every((re) => re.test(log)) || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const re of want) assert.match(log, re);
  });
});
