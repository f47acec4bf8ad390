// HTTP/2 abuse limits, each driven by a raw client that misbehaves on purpose: concurrent
// streams, rapid reset (CVE-2023-44487), CONTINUATION flood (CVE-2024-27316), header list size,
// HPACK table size, stream and connection flow-control windows, SETTINGS and idle timeouts, and
// the request fields RFC 9113 §8.2.2 and §8.3.1 make malformed. After each, the proxy still serves.
import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import type { ProxyExchange } from '../src/proxy/exchange.js';
import { Http2Front, http2Policy } from '../src/proxy/http2/index.js';
import { baseYaml, startHarness, type Harness } from './helpers/proxy-harness.js';
import { h2connect, h2request } from './helpers/h2-client.js';
import {
  ERROR, FLAG, FRAME, frame, getBlock, indexed, literal, literalIndexed, parseSettings, rawH2, rstCode, tableSizeUpdate, type RawH2,
} from './helpers/h2-raw.js';

const LIMITS = `
http2:
  maxConcurrentStreams: 8
  resetBurst: 20
  resetsPerSecond: 5
  settingsTimeoutMs: 500
  streamWindowBytes: 16384
  connectionWindowBytes: 100000
timeouts: { idleMs: 1000 }
`;

let h: Harness;
let authority: string;
t.before(async () => {
  h = await startHarness(t, baseYaml('  - upstream: [ "{{up0}}" ]') + LIMITS);
  authority = `localhost:${h.port}`;
});

const connect = async (t: Test, opts = {}): Promise<RawH2> => {
  const c = await rawH2(h.port, h.ca, opts);
  t.teardown(() => c.close());
  return c;
};
const headers = (stream: number, block: Buffer, end = true) => frame(FRAME.HEADERS, FLAG.END_HEADERS | (end ? FLAG.END_STREAM : 0), stream, block);
const closedBy = async (reason: string) => {
  const text = await (await fetch(`http://127.0.0.1:${h.proxy.adminAddress()!.port}/metrics`)).text();
  return Number(new RegExp(`hsmproxy_http2_connections_closed_total\\{reason="${reason}"\\} (\\d+)`).exec(text)?.[1] ?? 0);
};

/** The proxy still answers a well-behaved client. */
async function stillServes(t: Test): Promise<void> {
  const s = await h2connect(h.port, h.ca);
  try {
    t.equal((await h2request(s, { ':path': '/after' })).status, 200, 'a well-behaved client is still served');
  } finally {
    s.close();
  }
}

t.test('the defaults advertise 128 streams, a 4 KiB HPACK table and the configured windows', async (t) => {
  const d = await startHarness(t, baseYaml('  - upstream: [ "{{up0}}" ]'));
  const c = await rawH2(d.port, d.ca);
  t.teardown(() => c.close());
  const settings = parseSettings((await c.waitFor((f) => f.type === FRAME.SETTINGS && !(f.flags & FLAG.ACK))).payload);
  t.equal(settings.get(0x3), 128, 'SETTINGS_MAX_CONCURRENT_STREAMS');
  t.equal(settings.get(0x1), 4096, 'SETTINGS_HEADER_TABLE_SIZE');
  t.equal(settings.get(0x4), 256 * 1024, 'SETTINGS_INITIAL_WINDOW_SIZE');
  t.equal(settings.get(0x6), 16 * 1024 + 32 * 100, 'SETTINGS_MAX_HEADER_LIST_SIZE');
  t.equal(settings.get(0x2), 0, 'no server push');
  const wu = await c.waitFor((f) => f.type === FRAME.WINDOW_UPDATE && f.stream === 0);
  t.equal(wu.payload.readUInt32BE(0) + 65_535, 1024 * 1024, 'connection window raised to 1 MiB');
});

t.test('a client that honours SETTINGS_MAX_CONCURRENT_STREAMS queues its streams and all are answered', async (t) => {
  const s = await h2connect(h.port, h.ca);
  t.teardown(() => s.close());
  // A client's first request may race our SETTINGS; after one answer the limit is known.
  t.equal((await h2request(s, { ':path': '/first' })).status, 200);
  const all = await Promise.all(Array.from({ length: 20 }, (_, i) => h2request(s, { ':path': `/slow?ms=50&i=${i}` })));
  t.same(all.map((r) => r.status), Array(20).fill(200));
  t.equal(s.remoteSettings.maxConcurrentStreams, 8);
});

t.test('a client that opens streams past the acknowledged limit is cut off; the extra stream is never served', async (t) => {
  const c = await connect(t);
  await c.waitFor((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) !== 0);
  const open = Array.from({ length: 8 }, (_, i) => headers(1 + 2 * i, getBlock(authority, '/slow?ms=1500')));
  c.send(...open, headers(17, getBlock(authority, '/ninth')));
  // nghttp2 treats exceeding the acknowledged limit as a connection error (RFC 9113 §5.1.2 allows
  // a stream error; nghttp2 is stricter), so the offender loses the connection.
  await c.closed;
  t.notOk(c.frames.some((f) => f.type === FRAME.HEADERS && f.stream === 17), 'no answer on the ninth stream');
  t.notOk(h.logs.some((l) => l.path === '/ninth'), 'the ninth request never reached routing');
  await stillServes(t);
});

t.test('rapid reset: a client that opens and cancels streams past the burst gets GOAWAY ENHANCE_YOUR_CALM and is closed', async (t) => {
  const before = await closedBy('rapid_reset');
  const c = await connect(t);
  const burst: Buffer[] = [];
  for (let i = 0; i < 200; i++) {
    const id = 1 + 2 * i;
    burst.push(headers(id, getBlock(authority, `/slow?ms=1000&i=${i}`)), frame(FRAME.RST_STREAM, 0, id, Buffer.from([0, 0, 0, ERROR.CANCEL])));
  }
  c.send(...burst);
  const g = await c.goaway();
  t.equal(g.code, ERROR.ENHANCE_YOUR_CALM);
  await c.closed;
  t.equal(await closedBy('rapid_reset'), before + 1, 'counted as rapid_reset');
  const reasons = h.logs.filter((l) => l.msg === 'http2 connection closed by the proxy').map((l) => l.reason);
  t.ok(reasons.includes('rapid_reset'));
  await stillServes(t);
});

t.test('a few cancelled streams are normal browsing, not an attack', async (t) => {
  const c = await connect(t);
  const some: Buffer[] = [];
  for (let i = 0; i < 10; i++) some.push(headers(1 + 2 * i, getBlock(authority, '/slow?ms=1000')), frame(FRAME.RST_STREAM, 0, 1 + 2 * i, Buffer.from([0, 0, 0, ERROR.CANCEL])));
  c.send(...some, headers(21, getBlock(authority, '/fine')));
  await c.waitFor((f) => f.type === FRAME.HEADERS && f.stream === 21);
  t.notOk(c.frames.some((f) => f.type === FRAME.GOAWAY), 'no GOAWAY');
});

t.test('CONTINUATION flood: endless header continuation ends in GOAWAY and close, bounded', async (t) => {
  const c = await connect(t);
  // A header block that never ends: HEADERS without END_HEADERS, then CONTINUATION after CONTINUATION.
  const piece = literal('x-flood', 'y'.repeat(40));
  const flood = [frame(FRAME.HEADERS, FLAG.END_STREAM, 1, getBlock(authority, '/flood'))];
  for (let i = 0; i < 2000; i++) flood.push(frame(FRAME.CONTINUATION, 0, 1, piece));
  c.send(...flood);
  // nghttp2 stops after 8 CONTINUATION frames ("Too many CONTINUATION frames"); node ends the session.
  await c.closed;
  const g = c.frames.find((f) => f.type === FRAME.GOAWAY);
  if (g) t.not(g.payload.readUInt32BE(4), ERROR.NO_ERROR, 'any GOAWAY carries an error');
  t.notOk(h.logs.some((l) => l.path === '/flood'), 'the request never reached routing');
  await stillServes(t);
});

t.test('a header list over SETTINGS_MAX_HEADER_LIST_SIZE never reaches the upstream', async (t) => {
  const c = await connect(t);
  // 24 KiB of fields: over 16 KiB + 32 octets per field, in HEADERS + CONTINUATION (16 KiB frames).
  const block = Buffer.concat([getBlock(authority, '/big'), ...Array.from({ length: 6 }, (_, i) => literal(`x-big-${i}`, 'z'.repeat(4000)))]);
  c.send(frame(FRAME.HEADERS, FLAG.END_STREAM, 1, block.subarray(0, 16_000)), frame(FRAME.CONTINUATION, FLAG.END_HEADERS, 1, block.subarray(16_000)));
  await c.waitFor((x) => (x.type === FRAME.RST_STREAM && x.stream === 1) || x.type === FRAME.GOAWAY || (x.type === FRAME.HEADERS && x.stream === 1));
  t.ok(h.logs.some((l) => l.msg === 'client error' && l.status === 431), 'answered 431 by the proxy');
  t.notOk(h.logs.some((l) => l.type === 'access' && l.path === '/big'), 'the request never reached routing');
  await stillServes(t);
});

t.test('an HPACK dynamic table bigger than SETTINGS_HEADER_TABLE_SIZE is a COMPRESSION_ERROR', async (t) => {
  const c = await connect(t);
  c.send(headers(1, Buffer.concat([tableSizeUpdate(65_536), getBlock(authority, '/hpack')])));
  const g = await c.goaway();
  t.equal(g.code, ERROR.COMPRESSION_ERROR);
  await c.closed;
});

t.test('HPACK amplification (one table entry referenced many times) is bounded by the header list size', async (t) => {
  const c = await connect(t);
  // 4 KiB enter the dynamic table once, then 1-byte references inflate it to ~40 KiB of fields.
  const block = Buffer.concat([getBlock(authority, '/bomb'), literalIndexed('x-bomb', 'b'.repeat(4000)), ...Array.from({ length: 10 }, () => indexed(62))]);
  c.send(headers(1, block));
  await c.waitFor((x) => (x.type === FRAME.RST_STREAM && x.stream === 1) || x.type === FRAME.GOAWAY || (x.type === FRAME.HEADERS && x.stream === 1));
  t.ok(h.logs.some((l) => l.msg === 'client error' && l.status === 431 && /11 fields|1[0-9] fields/.test(String(l.reason))), 'answered 431');
  t.notOk(h.logs.some((l) => l.type === 'access' && l.path === '/bomb'), 'the request never reached routing');
});

t.test('DATA beyond the stream window is a FLOW_CONTROL_ERROR', async (t) => {
  const c = await connect(t);
  await c.waitFor((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) !== 0);
  const post = Buffer.concat([literal(':method', 'POST'), literal(':scheme', 'https'), literal(':authority', authority), literal(':path', '/upload')]);
  c.send(headers(1, post, false), frame(FRAME.DATA, 0, 1, Buffer.alloc(16_384)), frame(FRAME.DATA, 0, 1, Buffer.alloc(16_384)));
  const f = await c.waitFor((x) => (x.type === FRAME.RST_STREAM && x.stream === 1) || x.type === FRAME.GOAWAY);
  t.equal(f.type === FRAME.GOAWAY ? f.payload.readUInt32BE(4) : rstCode(f), ERROR.FLOW_CONTROL_ERROR);
});

t.test('flow control holds back a stream whose body nobody reads; the connection window is the configured one', async (t) => {
  // A handler that never reads request bodies. node:http2 refills the connection window as DATA
  // arrives (it counts it consumed at once), so what bounds memory is each stream's window: the
  // unread stream must stop getting WINDOW_UPDATE credit.
  const held: ProxyExchange[] = [];
  const front = new Http2Front({ request: (ex) => { held.push(ex); }, clientError: () => undefined }, {
    ...http2Policy(h.proxy.config), streamWindowBytes: 65_535, connectionWindowBytes: 100_000,
  });
  const { cert, key } = h.proxy.config.listeners[0]!.certificates[0]!;
  const server = tls.createServer({ cert: readFileSync(cert), key: readFileSync(key), ALPNProtocols: ['h2'] }, (s) => front.accept(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => { front.close(); server.close(); });
  const c = await rawH2((server.address() as AddressInfo).port, h.ca);
  t.teardown(() => c.close());
  await c.waitFor((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) !== 0);
  const wu = await c.waitFor((f) => f.type === FRAME.WINDOW_UPDATE && f.stream === 0);
  t.equal(wu.payload.readUInt32BE(0) + 65_535, 100_000, 'the connection window is the configured one');
  const post = Buffer.concat([literal(':method', 'POST'), literal(':scheme', 'https'), literal(':authority', authority), literal(':path', '/unread')]);
  const data = Array.from({ length: 4 }, () => frame(FRAME.DATA, 0, 1, Buffer.alloc(15_000)));
  c.send(headers(1, post, false), ...data);
  await c.waitFor((f) => f.type === FRAME.WINDOW_UPDATE && f.stream === 1);
  // Give the server every chance to hand out more credit than it should.
  await new Promise((r) => setTimeout(r, 500));
  const credit = c.frames.filter((f) => f.type === FRAME.WINDOW_UPDATE && f.stream === 1).reduce((n, f) => n + f.payload.readUInt32BE(0), 0);
  t.equal(held.length, 1, 'the request reached the handler');
  t.ok(credit < 60_000, `stream credit returned (${credit}) is less than what was sent (60000): the unread rest holds the window`);
  t.notOk(c.isClosed());
});

t.test('a client that never acknowledges our SETTINGS gets GOAWAY SETTINGS_TIMEOUT', async (t) => {
  const before = await closedBy('settings_timeout');
  const c = await connect(t, { ackSettings: false });
  const g = await c.goaway(5000);
  t.equal(g.code, ERROR.SETTINGS_TIMEOUT);
  await c.closed;
  t.equal(await closedBy('settings_timeout'), before + 1);
});

t.test('a client that never sends the connection preface is closed at the settings timeout', async (t) => {
  const c = await connect(t, { preface: false, ackSettings: false });
  await c.closed;
  t.pass('closed');
});

t.test('an idle connection gets GOAWAY NO_ERROR and is closed', async (t) => {
  const c = await connect(t);
  c.send(headers(1, getBlock(authority, '/once')));
  await c.waitFor((f) => f.type === FRAME.HEADERS && f.stream === 1);
  const g = await c.goaway(5000);
  t.equal(g.code, ERROR.NO_ERROR);
  t.equal(g.lastStream, 1, 'the last stream it processed');
  await c.closed;
});

t.test('connection-specific request fields and TE other than trailers make the request malformed (RFC 9113 §8.2.2)', async (t) => {
  const c = await connect(t);
  c.send(
    headers(1, getBlock(authority, '/conn', [['connection', 'keep-alive']])),
    headers(3, getBlock(authority, '/te', [['te', 'gzip']])),
    headers(5, getBlock(authority, '/upgrade', [['upgrade', 'websocket']])),
    headers(7, getBlock(authority, '/ok', [['te', 'trailers']])),
  );
  for (const id of [1, 3, 5]) t.equal(rstCode(await c.waitFor((f) => f.type === FRAME.RST_STREAM && f.stream === id)), ERROR.PROTOCOL_ERROR, `stream ${id}`);
  await c.waitFor((f) => f.type === FRAME.HEADERS && f.stream === 7);
  t.notOk(h.logs.some((l) => l.path === '/conn' || l.path === '/te' || l.path === '/upgrade'), 'none reached routing');
});

t.test('a Host field that disagrees with :authority is a 400 on its stream (RFC 9113 §8.3.1)', async (t) => {
  const c = await connect(t);
  c.send(headers(1, getBlock(authority, '/spoof', [['host', 'admin.internal']])));
  const f = await c.waitFor((x) => x.type === FRAME.HEADERS && x.stream === 1);
  t.equal(f.payload[0], 0x8c, ':status 400 (HPACK static index 12)');
  t.ok(h.logs.some((l) => l.msg === 'client error' && l.status === 400 && /Host and :authority disagree/.test(String(l.reason))));
  t.notOk(c.isClosed(), 'the connection stays open');
});

t.test('a request body that stalls gets 408 after timeouts.bodyIdleMs; the connection carries on', async (t) => {
  const s = await startHarness(t, baseYaml('  - upstream: [ "{{up0}}" ]') + 'timeouts: { bodyIdleMs: 400 }\n');
  const c = await rawH2(s.port, s.ca);
  t.teardown(() => c.close());
  const post = Buffer.concat([literal(':method', 'POST'), literal(':scheme', 'https'), literal(':authority', `localhost:${s.port}`), literal(':path', '/stalled')]);
  c.send(headers(1, post, false), frame(FRAME.DATA, 0, 1, Buffer.from('first bytes, then nothing')));
  await c.waitFor((f) => f.type === FRAME.HEADERS && f.stream === 1, 10_000);
  const logged = () => s.logs.find((l) => l.type === 'access' && l.path === '/stalled');
  for (let i = 0; i < 100 && !logged(); i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(logged()?.status, 408);
  t.equal(logged()?.protocol, 'h2');
  c.send(headers(3, getBlock(`localhost:${s.port}`, '/next')));
  await c.waitFor((f) => f.type === FRAME.HEADERS && f.stream === 3);
  t.notOk(c.isClosed(), 'the other streams of the connection are unaffected');
});
