// Hostile input and load for TLS 1.2: mutated TLS 1.2 ClientHellos (captured from node:tls)
// and mutated client flights (ClientKeyExchange, CCS, Finished) never throw and always end in
// an alert, a close or a wait; the same over TCP leaves nothing behind; and hundreds of TLS 1.2
// handshakes in flight against a 50 ms signer overlap their signatures. Bounded to a few seconds.
import t from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { AlertDescription, TlsAlertError } from '../src/tls/alert.js';
import { prepareCertEntry } from '../src/tls/certselect.js';
import { ServerConnection } from '../src/tls/connection.js';
import type { ServerHandshakeConfig } from '../src/tls/hello12.js';
import { ContentType, plaintextRecords } from '../src/tls/record.js';
import { createServer, type TlsServer } from '../src/tls/server.js';
import type { TlsSocket } from '../src/tls/socket.js';
import { TicketKeys } from '../src/tls/tickets.js';
import { makeTestCerts } from './helpers/tls-certs.js';
import { SoftSigner } from './helpers/soft-signer.js';
import { exchange } from './helpers/tls13-client.js';
import { CCS, Pkcs1SoftSigner, clientFlight12, parseFlight12, readServerFinish12 } from './helpers/tls12-client.js';

const certs = makeTestCerts(['localhost']);
t.teardown(() => certs.cleanup());
const ca = [certs.ec.caFile, certs.rsa.caFile].map((f) => readFileSync(f));

// A deterministic PRNG, so a failure can be replayed.
let seed = 0x12ed;
const rnd = (n: number): number => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return (seed >>> 8) % n; };
const randomBytes = (n: number): Buffer => { const b = Buffer.alloc(n); for (let i = 0; i < n; i++) b[i] = rnd(256); return b; };

/** The first record a node:tls client with maxVersion TLSv1.2 sends: a real-world TLS 1.2 ClientHello. */
async function captureHello12(): Promise<Buffer> {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const got = new Promise<Buffer>((resolve) => {
    srv.once('connection', (s) => {
      let buf = Buffer.alloc(0);
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) { resolve(buf.subarray(0, 5 + buf.readUInt16BE(3))); s.destroy(); }
      });
    });
  });
  const c = tls.connect({ port: (srv.address() as net.AddressInfo).port, host: '127.0.0.1', servername: 'localhost', maxVersion: 'TLSv1.2', ALPNProtocols: ['http/1.1'] });
  c.on('error', () => { /* we hang up on it */ });
  const ch = await got;
  c.destroy();
  srv.close();
  return ch;
}

/** Splits bytes into records (header + body), tolerating a broken tail. */
function splitRecords(b: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let p = 0; p < b.length;) { const n = p + 5 <= b.length ? 5 + b.readUInt16BE(p + 3) : b.length - p; out.push(b.subarray(p, p + n)); p += n; }
  return out;
}

/** One mutation of `input` (a ClientHello record or a client flight). */
function mutate(input: Buffer): { kind: string; bytes: Buffer } {
  const kinds = ['bitflip', 'bitflips', 'truncate', 'recordLen', 'handshakeLen', 'recordType', 'random', 'dropRecord', 'dupRecord', 'swapRecords', 'tinyRecords', 'trailing', 'version'];
  const kind = kinds[rnd(kinds.length)]!;
  const b = Buffer.from(input);
  const recs = splitRecords(b);
  switch (kind) {
    case 'bitflip': b[rnd(b.length)] ^= 1 << rnd(8); break;
    case 'bitflips': for (let k = 0; k < 1 + rnd(8); k++) b[rnd(b.length)] ^= 1 << rnd(8); break;
    case 'truncate': return { kind, bytes: b.subarray(0, rnd(b.length)) };
    case 'recordLen': { const r = recs[rnd(recs.length)]!; if (r.length >= 5) r.writeUInt16BE(rnd(0x10000), 3); return { kind, bytes: Buffer.concat(recs) }; }
    case 'handshakeLen': if (b.length > 9) b.writeUIntBE(rnd(0x1000000), 6, 3); break;
    case 'recordType': recs[rnd(recs.length)]![0] = rnd(256); return { kind, bytes: Buffer.concat(recs) };
    case 'random': return { kind, bytes: randomBytes(1 + rnd(400)) };
    case 'dropRecord': recs.splice(rnd(recs.length), 1); return { kind, bytes: Buffer.concat(recs) };
    case 'dupRecord': { const i = rnd(recs.length); recs.splice(i, 0, recs[i]!); return { kind, bytes: Buffer.concat(recs) }; }
    case 'swapRecords': { const i = rnd(recs.length); const j = rnd(recs.length); [recs[i], recs[j]] = [recs[j]!, recs[i]!]; return { kind, bytes: Buffer.concat(recs) }; }
    case 'tinyRecords': {
      const r = recs[0]!;
      const parts: Buffer[] = [];
      for (let i = 5; i < r.length;) { const n = 1 + rnd(20); const piece = r.subarray(i, i + n); parts.push(Buffer.from([r[0]!, 3, 3, piece.length >> 8, piece.length & 0xff]), piece); i += n; }
      return { kind, bytes: Buffer.concat([...parts, ...recs.slice(1)]) };
    }
    case 'trailing': { const len = rnd(200); return { kind, bytes: Buffer.concat([b, Buffer.from([[20, 21, 22, 23][rnd(4)]!, 3, 3, len >> 8, len & 0xff]), randomBytes(len)]) }; }
    case 'version': recs[rnd(recs.length)]!.writeUInt16BE([0x0300, 0x0301, 0x0302, 0x0304, 0x0203][rnd(5)]!, 1); return { kind, bytes: Buffer.concat(recs) };
  }
  return { kind, bytes: b };
}

function config(): ServerHandshakeConfig {
  return {
    certificates: [prepareCertEntry({ chain: certs.ec.chain, signer: new SoftSigner(certs.ec.key) }), prepareCertEntry({ chain: certs.rsa.chain, signer: new Pkcs1SoftSigner(certs.rsa.key) })],
    ticketKeys: new TicketKeys(), ticketCount: 1, ticketLifetimeS: 3600, verifyAfterSign: () => false, now: Date.now, maxVersion: '1.2',
  };
}

/** Feeds bytes in random pieces, answering signature requests; returns what the server sent, or null if anything threw. */
async function feedAll(conn: ServerConnection, bytes: Buffer): Promise<Buffer | null> {
  const out: Buffer[] = [];
  try {
    for (let p = 0; p < bytes.length;) { const n = 1 + rnd(bytes.length); conn.feed(bytes.subarray(p, p + n)); p += n; }
    for (const ev of conn.takeEvents()) {
      if (ev.type !== 'sign') continue;
      out.push(conn.takeOutput() ?? Buffer.alloc(0));
      conn.resumeWithSignature(ev.request.epoch, await ev.request.signer.sign(ev.request.scheme, ev.request.content));
    }
    out.push(conn.takeOutput() ?? Buffer.alloc(0));
    conn.takeEvents();
    return Buffer.concat(out);
  } catch {
    return null;
  }
}

const outcome = (conn: ServerConnection): string => {
  const err = conn.error;
  return err ? (err instanceof TlsAlertError ? `alert:${err.alert}` : err.code) : `state:${conn.stateName}`;
};

t.test('2,000 mutated TLS 1.2 ClientHellos in memory: an alert or a wait, never an exception or internal_error', async (t) => {
  const ch = await captureHello12();
  t.equal(ch[0], 22, 'captured a handshake record');
  const cfg = config();
  let thrown = 0;
  const internal: string[] = [];
  const outcomes = new Map<string, number>();
  for (let i = 0; i < 2000; i++) {
    const { kind, bytes } = mutate(ch);
    const conn = new ServerConnection(cfg);
    if (!(await feedAll(conn, bytes))) { thrown++; t.comment(`${kind} threw`); }
    const o = outcome(conn);
    outcomes.set(o, (outcomes.get(o) ?? 0) + 1);
    if (o === `alert:${AlertDescription.internal_error}`) internal.push(`${kind}: ${conn.error?.message}`);
  }
  t.equal(thrown, 0, 'feed never throws');
  t.same(internal.slice(0, 5), [], 'no input reaches internal_error');
  t.comment(JSON.stringify(Object.fromEntries(outcomes)));
});

t.test('2,000 mutated client flights (CKE, CCS, Finished): never established, never an exception', async (t) => {
  const cfg = config();
  const ch = await captureHello12();
  let thrown = 0;
  let established = 0;
  let benign = 0;
  const internal: string[] = [];
  const outcomes = new Map<string, number>();
  for (let i = 0; i < 2000; i++) {
    const conn = new ServerConnection(cfg);
    const out = await exchange(conn, ch);
    const f = parseFlight12(Buffer.from(ch.subarray(5)), out);
    const c = clientFlight12(f);
    const good = Buffer.concat([plaintextRecords(ContentType.handshake, c.cke), CCS, c.sealer.seal(ContentType.handshake, c.finished)]);
    const { kind, bytes } = mutate(good);
    const reply = await feedAll(conn, bytes);
    if (!reply) { thrown++; t.comment(`${kind} threw`); }
    // Some mutations are benign (record splits, a lenient plaintext record version, the x25519
    // bit RFC 7748 masks): then the handshake may complete, but only with keys both sides agree on.
    if (conn.established && !bytes.equals(good)) {
      try { readServerFinish12(f, c, reply ?? Buffer.alloc(0)); benign++; } catch { established++; t.comment(`${kind} established with keys the client does not share`); }
    }
    const o = outcome(conn);
    outcomes.set(o, (outcomes.get(o) ?? 0) + 1);
    if (o === `alert:${AlertDescription.internal_error}`) internal.push(`${kind}: ${conn.error?.message}`);
  }
  t.equal(thrown, 0, 'feed never throws');
  t.equal(established, 0, 'no mutated flight completes a handshake the client could not have completed');
  t.comment(`${benign} benign mutations completed`);
  t.same(internal.slice(0, 5), [], 'no input reaches internal_error');
  t.comment(JSON.stringify(Object.fromEntries(outcomes)));
});

async function listen(server: TlsServer): Promise<number> {
  server.on('tlsClientError', () => { /* expected */ });
  server.on('secureConnection', (s: TlsSocket) => { s.on('error', () => { /* clients hang up at once */ }); s.resume(); });
  server.listen({ port: 0, host: '127.0.0.1' });
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

async function settle(server: TlsServer, ms = 5000): Promise<number> {
  const deadline = Date.now() + ms;
  for (;;) {
    const open = await new Promise<number>((r) => server.netServer.getConnections((_e, n) => r(n)));
    if ((open === 0 && server.handshakesInProgress === 0) || Date.now() > deadline) return open + server.handshakesInProgress;
    await new Promise((r) => setTimeout(r, 50));
  }
}

t.test('500 mutated TLS 1.2 hellos over TCP end in an alert or close; nothing leaks; a good client still gets through', async (t) => {
  const ch = await captureHello12();
  const signer = new SoftSigner(certs.ec.key);
  const server = createServer({ certificates: [{ chain: certs.ec.chain, signer }, { chain: certs.rsa.chain, signer: new SoftSigner(certs.rsa.key) }], handshakeTimeoutMs: 3000 });
  const port = await listen(server);
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  let stuck = 0;
  let next = 0;
  const probe = (bytes: Buffer): Promise<boolean> => new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const timer = setTimeout(() => { s.destroy(); resolve(false); }, 6000);
    s.on('data', () => undefined);
    s.on('error', () => undefined);
    s.on('close', () => { clearTimeout(timer); resolve(true); });
    s.on('connect', () => s.end(bytes));
  });
  await Promise.all(Array.from({ length: 32 }, async () => {
    while (next++ < 500) if (!(await probe(mutate(ch).bytes))) stuck++;
  }));
  t.equal(stuck, 0, 'every connection was ended by the server');
  t.equal(await settle(server), 0, 'connections and handshakes back to 0');
  t.equal(signer.inFlight, 0, 'no signature left pending');
  const good = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca, maxVersion: 'TLSv1.2' });
  await once(good, 'secureConnect');
  t.equal(good.getProtocol(), 'TLSv1.2');
  good.destroy();
});

t.test('300 concurrent TLS 1.2 handshakes against a 50 ms signer overlap their signatures', async (t) => {
  class PeakSigner extends SoftSigner {
    peak = 0;
    override async sign(scheme: number, data: Buffer, signal?: AbortSignal): Promise<Buffer> {
      const p = super.sign(scheme, data, signal);
      this.peak = Math.max(this.peak, this.inFlight);
      return p;
    }
  }
  const signer = new PeakSigner(certs.ec.key, { latencyMs: 50 });
  const server = createServer({ certificates: [{ chain: certs.ec.chain, signer }], ticketKeys: false, maxVersion: '1.2' });
  const port = await listen(server);
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const context = tls.createSecureContext({ ca, maxVersion: 'TLSv1.2' });
  const n = 300;
  const t0 = performance.now();
  const results = await Promise.all(Array.from({ length: n }, () => new Promise<string>((resolve) => {
    const s = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', secureContext: context });
    s.once('secureConnect', () => { const p = s.getProtocol(); s.destroy(); resolve(p ?? 'none'); });
    s.once('error', (e: NodeJS.ErrnoException) => { s.destroy(); resolve(e.code ?? e.message); });
    s.setTimeout(20_000, () => { s.destroy(); resolve('timeout'); });
  })));
  const elapsed = performance.now() - t0;
  const tally: Record<string, number> = {};
  for (const r of results) tally[r] = (tally[r] ?? 0) + 1;
  t.same(tally, { 'TLSv1.2': n }, 'every handshake completed with TLS 1.2');
  t.equal(signer.calls, n, 'one signature per handshake');
  t.ok(signer.peak >= 10, `signatures overlapped (peak ${signer.peak} in flight)`);
  t.ok(elapsed < (n * 50) / 2, `${n} handshakes took ${Math.round(elapsed)} ms, far below ${n} × 50 ms in series`);
  t.equal(await settle(server), 0, 'nothing left open');
});

t.test('a client that leaves while its ServerKeyExchange is being signed leaks nothing', async (t) => {
  const signer = new SoftSigner(certs.ec.key, { fault: 'hang' });
  const server = createServer({ certificates: [{ chain: certs.ec.chain, signer }], signTimeoutMs: 5000, maxVersion: '1.2' });
  const port = await listen(server);
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const ch = await captureHello12();
  for (let i = 0; i < 20; i++) {
    const s = net.connect(port, '127.0.0.1');
    await once(s, 'connect');
    s.write(ch);
    await new Promise((r) => setTimeout(r, 20));
    s.destroy();
  }
  t.equal(await settle(server), 0, 'connections and handshakes back to 0');
  t.equal(signer.inFlight, 0, 'every pending signature was aborted');
  t.equal(signer.aborted, 20);
});
