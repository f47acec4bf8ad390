// Abuse limits in front of the signer: per-client connection and handshake caps refused at
// accept, a token bucket of full handshakes and signing-queue pressure shed before the key
// exchange (no signature asked for) while resumptions pass, a fair (round-robin) signing queue,
// the ClientHello size cap, and the handshake timeout bounding the signature wait.
import t, { type Test } from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { Admission } from '../src/engine/index.js';
import { ClientLimiter, clientKey, LimitReason, type ClientLimitOptions } from '../src/proxy/client-limits.js';
import { createServer, type TlsServer, type TlsServerOptions } from '../src/tls/server.js';
import { REFUSED_CHANNEL, type RefusedConnection } from '../src/tls/admit.js';
import type { HandshakeObservation } from '../src/tls/observe.js';
import type { SignContext } from '../src/tls/signer.js';
import { makeTestCerts } from './helpers/tls-certs.js';
import { SoftSigner } from './helpers/soft-signer.js';
import { encodeClientHello, ext, goodHello, record } from './helpers/tls13-client.js';

const certs = makeTestCerts(['localhost']);
t.teardown(() => certs.cleanup());
const ca = readFileSync(certs.ec.caFile);

const UNLIMITED: ClientLimitOptions = { maxConnections: 0, maxHandshakes: 0, handshakesPerSecond: 0, handshakeBurst: 1 };

/** A SoftSigner that keeps the SignContext of each call. */
class ContextSigner extends SoftSigner {
  contexts: Array<SignContext | undefined> = [];
  override sign(scheme: number, data: Buffer, signal?: AbortSignal, context?: SignContext): Promise<Buffer> {
    this.contexts.push(context);
    return super.sign(scheme, data, signal);
  }
}

async function start(t: Test, opts: Partial<TlsServerOptions> & { signer?: SoftSigner } = {}) {
  const signer = opts.signer ?? new ContextSigner(certs.ec.key);
  const observed: HandshakeObservation[] = [];
  const server: TlsServer = createServer({
    certificates: [{ chain: certs.ec.chain, signer }], onHandshake: (o) => observed.push(o), ...opts,
  }, (s) => { s.on('error', () => undefined); s.on('data', () => undefined); });
  server.on('tlsClientError', () => undefined);
  server.listen({ port: 0, host: '127.0.0.1' });
  await once(server, 'listening');
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return { server, signer, observed, port: (server.address() as net.AddressInfo).port };
}

/** A node:tls client connection from `localAddress` (another loopback address is another client). */
function connectFrom(port: number, localAddress = '127.0.0.1', session?: Buffer): tls.TLSSocket {
  const raw = net.connect({ host: '127.0.0.1', port, localAddress });
  return tls.connect({ socket: raw, servername: 'localhost', ca, minVersion: 'TLSv1.3', ...(session ? { session } : {}) });
}

type Outcome = { ok: true; resumed: boolean; session?: Buffer; socket: tls.TLSSocket } | { ok: false; error: string };

/** One node:tls handshake; `keep` leaves the connection open (closed at teardown). */
async function handshake(t: Test, port: number, opts: { session?: Buffer; localAddress?: string; keep?: boolean } = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    const socket = connectFrom(port, opts.localAddress, opts.session);
    let session: Buffer | undefined;
    let done = false;
    const finish = (o: Outcome): void => {
      if (done) return;
      done = true;
      if (o.ok && opts.keep) t.teardown(() => { socket.destroy(); });
      else socket.destroy();
      resolve(o);
    };
    socket.on('session', (s: Buffer) => {
      session = s;
      finish({ ok: true, resumed: socket.isSessionReused(), session, socket });
    });
    socket.on('secureConnect', () => {
      // TLS 1.3 tickets come after the handshake: wait for one, unless this was a resumption.
      if (socket.isSessionReused() || opts.keep) finish({ ok: true, resumed: socket.isSessionReused(), socket });
    });
    socket.on('error', (e: Error) => finish({ ok: false, error: e.message }));
    socket.on('close', () => finish({ ok: false, error: 'closed' }));
  });
}

/** Opens a TCP connection and reports whether the server closed it without sending anything. */
async function closedAtAccept(port: number, localAddress = '127.0.0.1'): Promise<{ closed: boolean; socket: net.Socket }> {
  const socket = net.connect({ host: '127.0.0.1', port, localAddress });
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  let got = 0;
  socket.on('data', (d: Buffer) => { got += d.length; });
  const closed = await Promise.race([
    once(socket, 'close').then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(false), 500)),
  ]);
  return { closed: closed && got === 0, socket };
}

function refusals(t: Test): RefusedConnection[] {
  const seen: RefusedConnection[] = [];
  const fn = (m: unknown): void => { seen.push(m as RefusedConnection); };
  subscribe(REFUSED_CHANNEL, fn);
  t.teardown(() => unsubscribe(REFUSED_CHANNEL, fn));
  return seen;
}

t.test('clientKey: IPv4 as is, IPv4-mapped as IPv4, IPv6 by its /64 however it is written', async (t) => {
  t.equal(clientKey('192.0.2.7'), '192.0.2.7');
  t.equal(clientKey('::ffff:192.0.2.7'), '192.0.2.7');
  t.equal(clientKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
  t.equal(clientKey('2001:db8:1:2::9'), '2001:db8:1:2::/64', 'the same /64');
  t.equal(clientKey('2001:0db8:0001:0002:ffff::1'), '2001:db8:1:2::/64', 'leading zeros');
  t.equal(clientKey('2001:db8::1'), '2001:db8:0:0::/64');
  t.equal(clientKey('::1'), '0:0:0:0::/64');
  t.equal(clientKey('fe80::1%eth0'), 'fe80:0:0:0::/64', 'zone id dropped');
  t.equal(clientKey('64:ff9b::192.0.2.1'), '64:ff9b:0:0::/64', 'dotted tail');
  t.not(clientKey('2001:db8:1:2::1'), clientKey('2001:db8:1:3::1'), 'another /64 is another client');
  t.equal(clientKey(''), '');
});

t.test('the signing queue serves clients round-robin: a flood waits behind itself', async (t) => {
  const gate = new Admission({ maxInFlight: 1, maxQueue: 100, queueTimeoutMs: 10_000 });
  const order: string[] = [];
  const job = (name: string) => () => new Promise<void>((r) => setImmediate(() => { order.push(name); r(); }));
  const runs = [];
  for (let i = 0; i < 6; i++) runs.push(gate.run(job(`flood${i}`), undefined, '198.51.100.9'));
  runs.push(gate.run(job('polite'), undefined, '192.0.2.1'));
  t.equal(gate.queuedClients, 2, 'two clients waiting');
  await Promise.all(runs);
  t.ok(order.indexOf('polite') <= 2, `the polite client's one request ran third at the latest (order: ${order.join(' ')})`);
  t.same(order.filter((n) => n.startsWith('flood')), ['flood0', 'flood1', 'flood2', 'flood3', 'flood4', 'flood5'], 'FIFO within one client');
  t.equal(gate.queued, 0);
  t.equal(gate.queuedClients, 0);
});

t.test('the round-robin queue still honours its deadline and aborts', async (t) => {
  const keepAlive = setInterval(() => undefined, 1000); // the queue's deadline timer is unref'd
  t.teardown(() => clearInterval(keepAlive));
  const gate = new Admission({ maxInFlight: 1, maxQueue: 10, queueTimeoutMs: 100 });
  let release!: () => void;
  const first = gate.run(() => new Promise<void>((r) => { release = r; }), undefined, 'a');
  const late = gate.run(async () => 'ran', undefined, 'b');
  const ac = new AbortController();
  const aborted = gate.run(async () => 'ran', ac.signal, 'a');
  ac.abort();
  const code = (p: Promise<unknown>): Promise<unknown> => p.then(() => 'resolved', (e: { code?: string }) => e.code);
  t.equal(await code(aborted), 'ENGINE_ERR_ABORTED', 'an aborted waiter leaves the queue');
  t.equal(await code(late), 'ENGINE_ERR_OVERLOADED', 'queue deadline');
  t.equal(gate.queued, 0, 'nothing left queued');
  release();
  await first;
  t.equal(await gate.run(async () => 'ran', undefined, 'b'), 'ran', 'the gate works afterwards');
});

t.test('ClientLimiter counts per client and forgets idle clients', async (t) => {
  const lim = new ClientLimiter({ maxConnections: 2, maxHandshakes: 1, handshakesPerSecond: 1, handshakeBurst: 2 });
  const a = lim.open('192.0.2.1');
  if (typeof a === 'string') throw new Error(a);
  t.equal(lim.open('192.0.2.1'), LimitReason.clientHandshakes, 'a second handshake in progress is refused');
  a.handshakeEnded();
  const b = lim.open('192.0.2.1');
  if (typeof b === 'string') throw new Error(b);
  b.handshakeEnded();
  t.equal(lim.open('192.0.2.1'), LimitReason.clientConnections, 'a third open connection is refused');
  t.type(lim.open('192.0.2.2'), 'object', 'another client is not affected');
  t.equal(a.fullHandshake(), undefined);
  t.equal(b.fullHandshake(), undefined);
  t.equal(a.fullHandshake(), LimitReason.clientRate, 'the bucket of 2 is empty');
  t.equal(lim.open('192.0.2.1'), LimitReason.clientConnections, 'still over its connection cap');
  a.handshakeEnded();
  b.closed();
  t.equal(lim.open('192.0.2.1'), LimitReason.clientRate, 'just shed for its rate: refused at accept until a token is due');
  b.closed();
  a.closed();
  b.closed(); // twice is harmless
  t.equal(lim.trackedClients, 2, 'a client with a spent bucket is remembered');
  await new Promise((r) => setTimeout(r, 1200));
  const c = lim.open('192.0.2.1');
  if (typeof c === 'string') throw new Error(c);
  t.equal(c.fullHandshake(), undefined, 'a token came back after a second');
  const pressured = new ClientLimiter(UNLIMITED, { queued: () => 8, shedFullAt: 8 });
  const p = pressured.open('192.0.2.3');
  if (typeof p === 'string') throw new Error(p);
  t.equal(p.fullHandshake(), LimitReason.signingQueue, 'a full handshake is shed while the queue is at its threshold');
});

t.test('over its rate a client\'s full handshakes are shed before any signature; its resumptions pass', async (t) => {
  const admission = new ClientLimiter({ ...UNLIMITED, handshakesPerSecond: 0.001, handshakeBurst: 2 });
  const { signer, observed, port } = await start(t, { admission });
  const first = await handshake(t, port);
  t.ok(first.ok, 'first full handshake');
  t.ok((await handshake(t, port)).ok, 'second full handshake');
  const third = await handshake(t, port);
  t.notOk(third.ok, 'the third is refused');
  if (!third.ok) t.match(third.error, /internal error|alert number 80/, 'with internal_error');
  t.equal(signer.calls, 2, 'no signature was asked for the shed handshake');
  const shed = observed.find((o) => o.result === 'shed');
  t.equal(shed?.reason, 'client_rate', 'observed as shed, with the reason');
  t.equal(shed?.alert, 'internal_error');
  t.equal(shed?.group, '', 'shed before the key exchange');
  t.ok((await closedAtAccept(port)).closed, 'until its next token is due (at most 1 s), its connections are refused at accept');
  if (!first.ok || !first.session) throw new Error('no session from the first handshake');
  await new Promise((r) => setTimeout(r, 1100));
  const resumed = await handshake(t, port, { session: first.session });
  t.ok(resumed.ok && resumed.resumed, 'a resumption still passes');
  t.equal(signer.calls, 2, 'and costs no signature');
  t.same((signer as ContextSigner).contexts.map((c) => c?.client), ['127.0.0.1', '127.0.0.1'], 'signatures name their client');
});

t.test('under signing-queue pressure full handshakes are shed first; resumptions are admitted', async (t) => {
  let queued = 0;
  const admission = new ClientLimiter(UNLIMITED, { queued: () => queued, shedFullAt: 4 });
  const { signer, observed, port } = await start(t, { admission });
  const first = await handshake(t, port);
  if (!first.ok || !first.session) throw new Error('no session');
  queued = 4;
  const full = await handshake(t, port);
  t.notOk(full.ok, 'a full handshake is shed');
  t.equal(observed.at(-1)?.reason, 'signing_queue');
  const resumed = await handshake(t, port, { session: first.session });
  t.ok(resumed.ok && resumed.resumed, 'a resumption is admitted');
  t.equal(signer.calls, 1);
  queued = 3;
  t.ok((await handshake(t, port)).ok, 'below the threshold full handshakes pass again');
});

t.test('per-client caps close connections at accept; another client is unaffected', async (t) => {
  const seen = refusals(t);
  const admission = new ClientLimiter({ ...UNLIMITED, maxConnections: 2 });
  const { server, port } = await start(t, { admission, name: 'web' });
  t.ok((await handshake(t, port, { keep: true })).ok);
  t.ok((await handshake(t, port, { keep: true })).ok);
  const third = await closedAtAccept(port);
  t.ok(third.closed, 'the third connection from 127.0.0.1 is closed without a byte');
  t.same(seen.at(-1), { reason: 'client_connections', address: '127.0.0.1', listener: 'web' }, 'published with its reason');
  t.ok((await handshake(t, port, { localAddress: '127.0.0.2' })).ok, '127.0.0.2 still connects');
  t.equal(server.shedConnections, 1);
});

t.test('handshakes in progress per client, and the listener caps', async (t) => {
  const seen = refusals(t);
  const signer = new ContextSigner(certs.ec.key, { fault: 'hang' });
  const admission = new ClientLimiter({ ...UNLIMITED, maxHandshakes: 1 });
  const { server, port } = await start(t, { admission, signer, maxConcurrentHandshakes: 2, maxConnections: 3, handshakeTimeoutMs: 30_000 });
  const pending = connectFrom(port);
  pending.on('error', () => undefined);
  t.teardown(() => { pending.destroy(); });
  while (signer.calls < 1) await new Promise((r) => setTimeout(r, 10));
  t.ok((await closedAtAccept(port)).closed, 'a second handshake from the same client is refused while one waits');
  t.equal(seen.at(-1)?.reason, 'client_handshakes');
  const other = connectFrom(port, '127.0.0.2');
  other.on('error', () => undefined);
  t.teardown(() => { other.destroy(); });
  while (signer.calls < 2) await new Promise((r) => setTimeout(r, 10));
  t.ok((await closedAtAccept(port, '127.0.0.3')).closed, 'the listener\'s cap of 2 handshakes in progress');
  t.equal(seen.at(-1)?.reason, 'listener_handshakes');
  server.setLimits({ maxConcurrentHandshakes: 100, maxConnections: 2 });
  t.ok((await closedAtAccept(port, '127.0.0.4')).closed, 'the listener\'s cap of open connections (lowered by setLimits)');
  t.equal(seen.at(-1)?.reason, 'listener_connections');
});

t.test('the handshake timeout bounds the signature wait and cancels the signature', async (t) => {
  const signer = new ContextSigner(certs.ec.key, { fault: 'hang' });
  const { observed, port } = await start(t, { signer, handshakeTimeoutMs: 300, signTimeoutMs: 60_000 });
  const out = await handshake(t, port);
  t.notOk(out.ok, 'the client is let go');
  t.equal(observed[0]?.result, 'timeout');
  t.ok(observed[0]!.signWaitMs < 60_000);
  while (signer.aborted < 1) await new Promise((r) => setTimeout(r, 10));
  t.equal(signer.aborted, 1, 'the pending signature was aborted (its queue slot and HSM request freed)');
});

t.test('a ClientHello over maxClientHelloBytes gets illegal_parameter before it is buffered', async (t) => {
  const { signer, port } = await start(t, { maxClientHelloBytes: 4096 });
  const { spec } = goodHello({ extra: [ext.sni('localhost'), [21, Buffer.alloc(6000)]] });
  const hello = encodeClientHello(spec);
  const socket = net.connect({ host: '127.0.0.1', port });
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  socket.write(record(22, hello.subarray(0, 4000)));
  const chunks: Buffer[] = [];
  socket.on('data', (d: Buffer) => chunks.push(d));
  await once(socket, 'close');
  t.same([...Buffer.concat(chunks)], [21, 3, 3, 0, 2, 2, 47], 'a fatal illegal_parameter alert, then close');
  t.equal(signer.calls, 0);
});

t.test('a client that keeps reconnecting past its caps has its refused connections held, then closed', async (t) => {
  const lim = new ClientLimiter({ ...UNLIMITED, maxConnections: 1 });
  t.equal(lim.holdRefused('192.0.2.9', LimitReason.clientConnections), 0, 'an unknown client: closed at once');
  const first = lim.open('192.0.2.9');
  if (typeof first === 'string') throw new Error(first);
  const holds = Array.from({ length: 20 }, () => lim.holdRefused('192.0.2.9', LimitReason.clientConnections));
  t.same(holds.slice(0, 16), new Array(16).fill(0), 'the first 16 refusals in a second close at once');
  t.ok(holds.slice(16).every((ms) => ms >= 1000 && ms <= 3000), 'past 16 in a second, held 1 to 3 s');
  t.equal(lim.holdRefused('192.0.2.9', 'listener_connections'), 0, 'listener caps are never held');

  const admission = new ClientLimiter({ ...UNLIMITED, maxConnections: 1 });
  const { server, port } = await start(t, { admission });
  t.ok((await handshake(t, port, { keep: true })).ok);
  const sockets: net.Socket[] = [];
  t.teardown(() => { for (const s of sockets) s.destroy(); });
  for (let i = 0; i < 24; i++) {
    const s = net.connect({ host: '127.0.0.1', port });
    s.on('error', () => undefined);
    sockets.push(s);
  }
  await Promise.all(sockets.map((s) => once(s, 'connect').catch(() => undefined)));
  while (server.shedConnections < 24) await new Promise((r) => setTimeout(r, 10));
  t.ok(server.heldRefusals >= 1 && server.heldRefusals <= 8, `the refusals past 16 are held (${server.heldRefusals})`);
  await Promise.all(sockets.map((s) => (s.destroyed ? undefined : once(s, 'close'))));
  while (server.heldRefusals > 0) await new Promise((r) => setTimeout(r, 10));
  t.pass('and closed afterwards');
  t.ok(sockets.every((s) => s.bytesRead === 0), 'not a byte was sent to them');
});
