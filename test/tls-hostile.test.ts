// Hostile input: 2,000 mutated ClientHellos and records against a TlsServer over loopback, and
// 3,000 more fed to a sans-IO ServerConnection in memory. The process must never
// throw, every connection must end (alert or close), nothing may leak, and a good client must
// still complete a handshake afterwards.
import t from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import diagnosticsChannel from 'node:diagnostics_channel';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer, type TlsServer } from '../src/tls/server.js';
import { ServerConnection } from '../src/tls/connection.js';
import { HANDSHAKE_CHANNEL, type HandshakeObservation } from '../src/tls/observe.js';
import { prepareCertEntry } from '../src/tls/certselect.js';
import type { HandshakeConfig } from '../src/tls/handshake13.js';
import { AlertDescription, TlsAlertError, TlsError } from '../src/tls/alert.js';
import { makeTestCerts } from './helpers/tls-certs.js';
import { SoftSigner } from './helpers/soft-signer.js';

const certs = makeTestCerts(['localhost']);
t.teardown(() => certs.cleanup());

// ---- a deterministic PRNG, so a failure can be replayed ----
let seed = 0x5eed;
const rnd = (n: number): number => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return (seed >>> 8) % n; };

// ---- a real ClientHello, captured from node:tls ----
async function captureClientHello(): Promise<Buffer> {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as net.AddressInfo).port;
  const got = new Promise<Buffer>((resolve) => {
    srv.once('connection', (s) => {
      let buf = Buffer.alloc(0);
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) { resolve(buf.subarray(0, 5 + buf.readUInt16BE(3))); s.destroy(); }
      });
    });
  });
  const c = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', minVersion: 'TLSv1.3', ALPNProtocols: ['h2', 'http/1.1'] });
  c.on('error', () => { /* we hang up on it */ });
  const ch = await got;
  c.destroy();
  srv.close();
  return ch;
}

interface Ext { type: number; body: Buffer }
interface Hello { head: Buffer; exts: Ext[] }

/** Splits a ClientHello record into everything before the extensions, and the extensions. */
function parseHello(rec: Buffer): Hello {
  const body = rec.subarray(9);
  let p = 2 + 32;
  p += 1 + body[p]!;
  p += 2 + body.readUInt16BE(p);
  p += 1 + body[p]!;
  const head = body.subarray(0, p);
  const exts: Ext[] = [];
  let q = p + 2;
  while (q < body.length) {
    const type = body.readUInt16BE(q); const len = body.readUInt16BE(q + 2);
    exts.push({ type, body: body.subarray(q + 4, q + 4 + len) });
    q += 4 + len;
  }
  return { head, exts };
}

/** Re-encodes a ClientHello record from parts (lengths recomputed unless a mutation broke them). */
function buildHello(h: Hello): Buffer {
  const extBytes = Buffer.concat(h.exts.map((e) => { const x = Buffer.alloc(4); x.writeUInt16BE(e.type, 0); x.writeUInt16BE(e.body.length, 2); return Buffer.concat([x, e.body]); }));
  const extLen = Buffer.alloc(2); extLen.writeUInt16BE(extBytes.length);
  const msg = Buffer.concat([h.head, extLen, extBytes]);
  const hs = Buffer.alloc(4); hs[0] = 1; hs.writeUIntBE(msg.length, 1, 3);
  const rec = Buffer.alloc(5); rec[0] = 22; rec.writeUInt16BE(0x0301, 1); rec.writeUInt16BE(msg.length + 4, 3);
  return Buffer.concat([rec, hs, msg]);
}

const randomBytes = (n: number): Buffer => { const b = Buffer.alloc(n); for (let i = 0; i < n; i++) b[i] = rnd(256); return b; };

/** One mutated input: a name (for diagnosis) and the bytes to send. */
function mutate(ch: Buffer, hello: Hello): { kind: string; bytes: Buffer } {
  const kinds = ['bitflip', 'bitflips', 'truncate', 'recordLen', 'handshakeLen', 'dupExt', 'dropExt', 'oversizeExt', 'shrinkExt', 'extGarbage', 'recordType', 'random', 'chThenRecords', 'splitRecords', 'oversizeHeader', 'sessionId'];
  const kind = kinds[rnd(kinds.length)]!;
  const b = Buffer.from(ch);
  switch (kind) {
    case 'bitflip': { const i = rnd(b.length); b[i]! ^= 1 << rnd(8); return { kind, bytes: b }; }
    case 'bitflips': { for (let k = 0; k < 1 + rnd(8); k++) b[rnd(b.length)] ^= 1 << rnd(8); return { kind, bytes: b }; }
    case 'truncate': return { kind, bytes: b.subarray(0, rnd(b.length)) };
    case 'recordLen': { b.writeUInt16BE(rnd(0x10000), 3); return { kind, bytes: b }; }
    case 'handshakeLen': { b.writeUIntBE(rnd(0x1000000), 6, 3); return { kind, bytes: b }; }
    case 'dupExt': { const exts = [...hello.exts]; const e = exts[rnd(exts.length)]!; exts.splice(rnd(exts.length + 1), 0, e); return { kind, bytes: buildHello({ head: hello.head, exts }) }; }
    case 'dropExt': { const exts = [...hello.exts]; exts.splice(rnd(exts.length), 1); return { kind, bytes: buildHello({ head: hello.head, exts }) }; }
    case 'oversizeExt': {
      // A vector inside an extension claims more bytes than the extension holds.
      const exts = hello.exts.map((e) => ({ ...e }));
      const e = exts[rnd(exts.length)]!;
      if (e.body.length >= 2) { e.body = Buffer.from(e.body); e.body.writeUInt16BE(0xffff - rnd(16), 0); }
      else e.body = Buffer.from([0xff]);
      return { kind, bytes: buildHello({ head: hello.head, exts }) };
    }
    case 'shrinkExt': {
      const exts = hello.exts.map((e) => ({ ...e }));
      const e = exts[rnd(exts.length)]!;
      e.body = e.body.subarray(0, rnd(e.body.length + 1));
      return { kind, bytes: buildHello({ head: hello.head, exts }) };
    }
    case 'extGarbage': {
      const exts = hello.exts.map((e) => ({ ...e }));
      const e = exts[rnd(exts.length)]!;
      e.body = randomBytes(rnd(64));
      return { kind, bytes: buildHello({ head: hello.head, exts }) };
    }
    case 'recordType': { b[0] = rnd(256); return { kind, bytes: b }; }
    case 'random': return { kind, bytes: randomBytes(1 + rnd(600)) };
    case 'chThenRecords': {
      // A good ClientHello, then records the server cannot accept at that point.
      const tail: Buffer[] = [];
      for (let k = 0; k < 1 + rnd(4); k++) {
        const len = rnd(300);
        const h = Buffer.from([[20, 21, 22, 23, rnd(256)][rnd(5)]!, 3, 3, 0, 0]); h.writeUInt16BE(len, 3);
        tail.push(h, randomBytes(len));
      }
      return { kind, bytes: Buffer.concat([b, ...tail]) };
    }
    case 'splitRecords': {
      // The ClientHello across many tiny records, with one of them damaged.
      const msg = b.subarray(5); const parts: Buffer[] = [];
      for (let i = 0; i < msg.length;) { const n = 1 + rnd(40); const piece = msg.subarray(i, i + n); const h = Buffer.from([22, 3, 1, 0, 0]); h.writeUInt16BE(piece.length, 3); parts.push(h, piece); i += n; }
      const joined = Buffer.concat(parts); joined[rnd(joined.length)] ^= 0xff;
      return { kind, bytes: joined };
    }
    case 'oversizeHeader': { const h = Buffer.from([22, 3, 1, 0, 0]); h.writeUInt16BE(0x4001 + rnd(0xbfff), 3); return { kind, bytes: Buffer.concat([h, randomBytes(rnd(100))]) }; }
    case 'sessionId': { const head = Buffer.from(hello.head); head[34] = 33 + rnd(200); return { kind, bytes: buildHello({ head, exts: hello.exts }) }; }
  }
  return { kind, bytes: b };
}

function inMemoryConfig(): HandshakeConfig {
  return {
    certificates: [prepareCertEntry({ chain: certs.ec.chain, signer: new SoftSigner(certs.ec.key) }), prepareCertEntry({ chain: certs.rsa.chain, signer: new SoftSigner(certs.rsa.key) })],
    ticketCount: 0, ticketLifetimeS: 3600, verifyAfterSign: () => false, now: Date.now,
  };
}

t.test('the sans-IO connection turns every mutated input into an alert or a wait, never an exception', async (t) => {
  const ch = await captureClientHello();
  const hello = parseHello(ch);
  t.ok(buildHello(hello).equals(ch), 'the hello re-encodes byte for byte (the mutator is sound)');
  const cfg = inMemoryConfig();
  let thrown = 0; let signed = 0; const internal: string[] = []; const outcomes = new Map<string, number>();
  for (let i = 0; i < 3000; i++) {
    const { kind, bytes } = mutate(ch, hello);
    const conn = new ServerConnection(cfg);
    try {
      // Feed in random-sized pieces: the deframer and joiner must cope with any split.
      for (let p = 0; p < bytes.length;) { const n = 1 + rnd(bytes.length); conn.feed(bytes.subarray(p, p + n)); p += n; }
      conn.takeOutput();
      // When a mutation still passes as a ClientHello, sign, so the bytes after it reach the encrypted states.
      for (const ev of conn.takeEvents()) {
        if (ev.type === 'sign') { signed++; conn.resumeWithSignature(ev.request.epoch, await ev.request.signer.sign(ev.request.scheme, ev.request.content)); }
      }
      conn.takeOutput();
      conn.takeEvents();
    } catch (e) {
      thrown++; t.comment(`${kind}: feed threw ${String(e)}`);
    }
    const err = conn.error;
    const outcome = err ? (err instanceof TlsAlertError ? `alert:${err.alert}` : err.code) : `state:${conn.stateName}`;
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    if (err instanceof TlsAlertError && err.alert === AlertDescription.internal_error) internal.push(`${kind}: ${err.message}`);
  }
  t.equal(thrown, 0, 'feed never throws');
  t.same(internal.slice(0, 5), [], 'no input reaches an internal_error (a bug, not a protocol violation)');
  t.comment(`${signed} signed; outcomes: ${JSON.stringify(Object.fromEntries(outcomes))}`);
});

interface RunResult { alert: number; closedOnly: number; stuck: number }

/** Sends one input, half-closes, and reports how the server ended the connection. */
function probe(port: number, bytes: Buffer): Promise<'alert' | 'closed' | 'stuck'> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => { s.destroy(); resolve('stuck'); }, 8000);
    s.on('data', (d: Buffer) => { if (got.length < 64 * 1024) got = Buffer.concat([got, d]); });
    s.on('error', () => { /* RST is an acceptable way to end */ });
    s.on('close', () => {
      clearTimeout(timer);
      // A plaintext alert record, or (after the server's flight) an encrypted one we can't read.
      resolve(got.includes(Buffer.from([21, 3, 3, 0, 2, 2])) || got.length > 0 ? 'alert' : 'closed');
    });
    s.on('connect', () => { s.end(bytes); });
  });
}

async function settle(server: TlsServer, ms = 5000): Promise<number> {
  const deadline = Date.now() + ms;
  for (;;) {
    const open = await new Promise<number>((r) => server.netServer.getConnections((_e, n) => r(n)));
    if ((open === 0 && server.handshakesInProgress === 0) || Date.now() > deadline) return open + server.handshakesInProgress;
    await new Promise((r) => setTimeout(r, 50));
  }
}

const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

t.test('thousands of mutated ClientHellos and records over TCP: no throw, no leak, good client still served', async (t) => {
  const ch = await captureClientHello();
  const hello = parseHello(ch);
  let escaped = 0;
  const onUncaught = (e: unknown): void => { escaped++; t.comment(`escaped: ${String(e)}`); };
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  t.teardown(() => { process.off('uncaughtException', onUncaught); process.off('unhandledRejection', onUncaught); });
  const observed: HandshakeObservation[] = [];
  const onObs = (m: unknown): void => { observed.push(m as HandshakeObservation); };
  diagnosticsChannel.subscribe(HANDSHAKE_CHANNEL, onObs);
  t.teardown(() => diagnosticsChannel.unsubscribe(HANDSHAKE_CHANNEL, onObs));

  const ecSigner = new SoftSigner(certs.ec.key);
  const server = createServer({
    certificates: [{ chain: certs.ec.chain, signer: ecSigner }, { chain: certs.rsa.chain, signer: new SoftSigner(certs.rsa.key) }],
    handshakeTimeoutMs: 3000, signTimeoutMs: 2000, name: 'hostile',
  });
  server.on('tlsClientError', () => { /* expected, thousands of times */ });
  server.listen({ port: 0, host: '127.0.0.1' });
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const timersBefore = timers();

  const total = 2000; const parallel = 64; // plus 3,000 in memory above; keeps the file well under 30 s on a busy 2-core box
  const result: RunResult = { alert: 0, closedOnly: 0, stuck: 0 };
  const kinds = new Map<string, number>();
  const started = Date.now();
  let next = 0;
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (next < total) {
      next++;
      const { kind, bytes } = mutate(ch, hello);
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      const r = await probe(port, bytes);
      if (r === 'alert') result.alert++; else if (r === 'closed') result.closedOnly++; else { result.stuck++; t.comment(`stuck: ${kind}`); }
    }
  }));
  t.comment(`${total} hostile connections in ${Date.now() - started} ms: ${JSON.stringify(result)}`);
  t.equal(result.stuck, 0, 'every connection was ended by the server');
  t.equal(escaped, 0, 'no uncaughtException / unhandledRejection');
  t.equal(await settle(server), 0, 'server connections and handshakes back to 0');
  t.ok(timers() <= timersBefore, `no timers left behind (${timers()} now, ${timersBefore} before)`);
  t.equal(ecSigner.inFlight, 0, 'no signature left pending');
  t.ok(observed.length >= total * 0.9, `handshake outcomes were observed (${observed.length})`);
  t.notOk(observed.some((o) => o.result === 'ok'), 'no mutated input completed a handshake');

  // And a well-behaved client still gets through.
  const good = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca: [certs.ec.caFile, certs.rsa.caFile].map((f) => readFileSync(f)), minVersion: 'TLSv1.3' });
  await once(good, 'secureConnect');
  t.equal(good.getProtocol(), 'TLSv1.3');
  good.destroy();
  await new Promise<void>((r) => server.close(() => r()));
});

t.test('the server answers plain HTTP on its port without crashing', async (t) => {
  const server = createServer({ certificates: [{ chain: certs.ec.chain, signer: new SoftSigner(certs.ec.key) }] });
  server.on('tlsClientError', (err: TlsError) => { t.equal(err.code, 'TLS_ERR_HTTP_ON_TLS_PORT'); });
  server.listen({ port: 0, host: '127.0.0.1' });
  await once(server, 'listening');
  const r = await probe((server.address() as net.AddressInfo).port, Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  t.not(r, 'stuck');
  t.equal(await settle(server), 0);
  await new Promise<void>((r) => server.close(() => r()));
});
