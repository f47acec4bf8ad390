// The HSM appliance on the network: mTLS admission, bad frames, login, typed errors, deadlines,
// and the per-request observability event. One in-process node on an ephemeral loopback port.
import t from 'tap';
import { createPublicKey, randomBytes, verify } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { startNode, type RunningNode } from '../src/hsm/cluster/run-node.js';
import type { HsmConnection, HsmRequestEvent } from '../src/hsm/client/connection.js';
import {
  FLAG_JSON, FrameDecoder, HEADER_BYTES, Op, encodeFrame, writeHeader, writeSign, type Frame,
} from '../src/hsm/protocol/index.js';
import { activate, clientTls, connect, tempCluster, TEST_SCRYPT_COST } from './helpers/hsm-cluster.js';

const cluster = await tempCluster();
const other = await tempCluster();
const node: RunningNode = await startNode({ dir: cluster.dir, port: 0, scryptCost: TEST_SCRYPT_COST, log: () => undefined });
await activate(cluster, node.port);
t.teardown(async () => {
  await node.stop();
  await cluster.cleanup();
  await other.cleanup();
});

async function loggedIn(): Promise<HsmConnection> {
  const c = await connect(cluster, node.port);
  await c.login('alice', 'cu-password');
  return c;
}

const cu = await loggedIn();
const ec = await cu.generateKeyPair('ec:p256', { label: 'server-test-ec' });
t.teardown(() => cu.destroy());

// Waits (bounded) until `cond` holds; the node updates its counters asynchronously.
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!cond()) throw new Error(`timed out waiting for ${what}`);
}

// A raw mTLS socket with the cluster's client certificate, for sending hand-made frames.
async function rawSocket(): Promise<{ socket: TLSSocket; next(): Promise<Frame>; closed: Promise<void> }> {
  const socket = tlsConnect({ host: '127.0.0.1', port: node.port, ...(await clientTls(cluster)), minVersion: 'TLSv1.3' });
  await new Promise<void>((resolve, reject) => { socket.once('secureConnect', resolve); socket.once('error', reject); });
  const decoder = new FrameDecoder(64 << 20);
  const frames: Frame[] = [];
  const waiters: Array<(f: Frame) => void> = [];
  socket.on('data', (chunk: Buffer) => {
    for (const f of decoder.push(chunk)) {
      const w = waiters.shift();
      if (w) w(f);
      else frames.push(f);
    }
  });
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return { socket, closed, next: () => new Promise((resolve) => { const f = frames.shift(); if (f) resolve(f); else waiters.push(resolve); }) };
}

function jsonFrame(id: number, op: number, body: unknown): Buffer {
  return encodeFrame(id, op, FLAG_JSON, Buffer.from(body === undefined ? '' : JSON.stringify(body)));
}
function errorOf(f: Frame): { code: string; message: string } {
  return JSON.parse(f.body.toString()) as { code: string; message: string };
}

t.test('a client without a certificate is refused before any frame is read', async (t) => {
  const before = { ...node.appliance.stats };
  const socket = tlsConnect({ host: '127.0.0.1', port: node.port, ca: (await clientTls(cluster)).ca, minVersion: 'TLSv1.3' });
  socket.on('error', () => undefined);
  socket.on('secureConnect', () => socket.write(jsonFrame(1, Op.INFO, undefined)));
  let answered = false;
  socket.on('data', () => { answered = true; });
  await new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await until(() => node.appliance.stats.refused > before.refused, 'the refusal');
  t.notOk(answered, 'no protocol byte came back');
  t.equal(node.appliance.stats.frames, before.frames, 'no frame was decoded');
});

t.test('a client certificate from another cluster\'s CA is refused', async (t) => {
  const before = { ...node.appliance.stats };
  const foreign = await clientTls(other);
  const socket = tlsConnect({ host: '127.0.0.1', port: node.port, ca: (await clientTls(cluster)).ca, cert: foreign.cert, key: foreign.key, minVersion: 'TLSv1.3' });
  socket.on('error', () => undefined);
  socket.on('secureConnect', () => socket.write(jsonFrame(1, Op.INFO, undefined)));
  await new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await until(() => node.appliance.stats.refused > before.refused, 'the refusal');
  t.equal(node.appliance.stats.frames, before.frames, 'no frame was decoded');
  t.equal(node.appliance.stats.connections, before.connections, 'no connection was accepted');
});

t.test('a client limited to TLS 1.2, even with a valid certificate, is refused in the handshake', async (t) => {
  const before = { ...node.appliance.stats };
  const socket = tlsConnect({ host: '127.0.0.1', port: node.port, ...(await clientTls(cluster)), minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
  let secure = false;
  socket.on('secureConnect', () => { secure = true; });
  const err = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    socket.once('error', (e) => resolve(e));
    socket.once('close', () => resolve(undefined));
  });
  socket.destroy();
  t.notOk(secure, 'no TLS 1.2 session was established');
  t.match(err?.code, /^ERR_SSL_/, `the handshake fails with an SSL error (${err?.code})`);
  t.equal(node.appliance.stats.frames, before.frames, 'no frame was decoded');
  t.equal(node.appliance.stats.connections, before.connections, 'no connection was accepted');
  const ok = await connect(cluster, node.port);
  t.equal((await ok.info()).hsmId, 'hsm-1', 'a TLS 1.3 client still gets in');
  ok.destroy();
});

t.test('HsmConnection with another cluster\'s certificates fails with a TLS error, not a hang', async (t) => {
  const foreign = await clientTls(other);
  const err = await (async () => {
    try {
      const c = await (await import('../src/hsm/client/connection.js')).HsmConnection.connect({ hsmId: 'hsm-1', host: '127.0.0.1', port: node.port, ...foreign });
      // TLS 1.3: the server may only refuse after the client finished; the first request fails.
      await c.info({ timeoutMs: 5000 });
      return undefined;
    } catch (e) {
      return e as { code?: string };
    }
  })();
  t.ok(err, 'refused');
  t.match(err?.code, /^HSM_ERR_(TLS|CONNECTION_CLOSED)$/);
});

t.test('a peer speaking plain TCP garbage is refused and the node carries on', async (t) => {
  const before = node.appliance.stats.refused;
  const s = netConnect(node.port, '127.0.0.1');
  s.on('error', () => undefined);
  s.write(randomBytes(600));
  await new Promise<void>((resolve) => s.once('close', () => resolve()));
  await until(() => node.appliance.stats.refused > before, 'the refusal');
  t.ok(await cu.info(), 'other connections still served');
});

t.test('an oversized frame gets an error answer by its id, then the connection closes; others carry on', async (t) => {
  const raw = await rawSocket();
  const header = Buffer.alloc(HEADER_BYTES);
  writeHeader(header, 0, 2 * 1024 * 1024, 77, Op.SIGN, 0);
  raw.socket.write(header);
  const f = await raw.next();
  t.equal(f.requestId, 77);
  t.equal(errorOf(f).code, 'HSM_ERR_FRAME_TOO_LARGE');
  await raw.closed;
  const sig = await cu.sign({ keyId: ec.privateKey.keyId, mechanism: 'ecdsa-sha256', data: Buffer.from('still here') });
  t.ok(verify('sha256', Buffer.from('still here'), createPublicKey((await cu.exportPublicKey(ec.publicKey.keyId)).pem), sig), 'another connection signs');
});

t.test('an unknown opcode is answered with HSM_ERR_UNKNOWN_OP and the connection stays usable', async (t) => {
  const raw = await rawSocket();
  raw.socket.write(jsonFrame(5, 0x0777, {}));
  const f = await raw.next();
  t.match({ id: f.requestId, ...errorOf(f) }, { id: 5, code: 'HSM_ERR_UNKNOWN_OP' });
  raw.socket.write(jsonFrame(6, Op.INFO, undefined));
  const info = await raw.next();
  t.equal(info.code, 0, 'next request served');
  raw.socket.destroy();
});

t.test('a truncated binary body is a protocol error answer, not a crash', async (t) => {
  const raw = await rawSocket();
  raw.socket.write(jsonFrame(1, Op.LOGIN, { user: 'alice', password: 'cu-password' }));
  t.equal((await raw.next()).code, 0);
  const sign = writeSign({ keyId: ec.privateKey.keyId, mechanism: 'ecdsa-sha256', data: Buffer.alloc(0) }).subarray(0, HEADER_BYTES + 2);
  writeHeader(sign, 0, 2, 2, Op.SIGN, 0);
  raw.socket.write(sign);
  const f = await raw.next();
  t.match(errorOf(f), { code: 'HSM_ERR_PROTOCOL', message: /truncated/ });
  raw.socket.destroy();
});

t.test('a burst of random frames never takes the node down', async (t) => {
  const raw = await rawSocket();
  const burst: Buffer[] = [];
  for (let i = 0; i < 300; i++) burst.push(encodeFrame(i, (i * 37) % 0x110, i % 3 === 0 ? FLAG_JSON : 0, randomBytes(i % 90)));
  raw.socket.write(Buffer.concat(burst));
  let answers = 0;
  for (let i = 0; i < 300; i++) {
    const f = await raw.next();
    if (f.code !== 0) t.match(errorOf(f).code, /^HSM_ERR_/);
    answers++;
  }
  t.equal(answers, 300, 'every frame answered');
  raw.socket.destroy();
  t.ok(await cu.info(), 'node alive');
});

t.test('operations before login are refused with HSM_ERR_NOT_LOGGED_IN; info is open', async (t) => {
  const c = await connect(cluster, node.port);
  t.teardown(() => c.destroy());
  await t.rejects(c.sign({ keyId: ec.privateKey.keyId, mechanism: 'ecdsa-sha256', data: Buffer.from('x') }), { code: 'HSM_ERR_NOT_LOGGED_IN' });
  t.equal((await c.info()).hsmId, 'hsm-1');
});

t.test('a wrong password is HSM_ERR_BAD_CREDENTIALS with a message for people', async (t) => {
  const c = await connect(cluster, node.port);
  t.teardown(() => c.destroy());
  await t.rejects(c.login('alice', 'wrong'), { code: 'HSM_ERR_BAD_CREDENTIALS', message: /wrong user name or password/ });
  await c.login('alice', 'cu-password');
  t.equal(c.user?.role, 'CU', 'a later login on the same connection works');
});

t.test('a second login on a logged-in connection is refused with HSM_ERR_ALREADY_LOGGED_IN and audited as denied', async (t) => {
  const c = await loggedIn();
  t.teardown(() => c.destroy());
  await t.rejects(c.login('admin', 'co-password'), { code: 'HSM_ERR_ALREADY_LOGGED_IN', message: /already logged in as alice.*open a new connection/ });
  await t.rejects(c.login('alice', 'cu-password'), { code: 'HSM_ERR_ALREADY_LOGGED_IN' }, 'the same user again too');
  await t.rejects(c.listUsers(), { code: 'HSM_ERR_PERMISSION_DENIED' }, 'the connection still works as the CU, not the CO');
  t.ok(await c.sign({ keyId: ec.privateKey.keyId, mechanism: 'ecdsa-sha256', data: Buffer.from('still alice') }), 'and its session is intact');
  const audit = (await readFile(node.device.auditLogPath, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.match(audit.filter((e) => e.code === 'HSM_ERR_ALREADY_LOGGED_IN'), [
    { event: 'denied', ok: false, user: 'alice', action: 'log in as admin' },
    { event: 'denied', ok: false, user: 'alice', action: 'log in as alice' },
  ]);
  t.notOk(audit.some((e) => e.event === 'login' && e.user === 'admin' && e.ok === false), 'refused before the password is checked (no failed login counted)');
});

t.test('two logins pipelined on one connection: the first is checked, the second is refused busy', async (t) => {
  const c = await connect(cluster, node.port);
  t.teardown(() => c.destroy());
  const out = await Promise.allSettled([c.login('alice', 'cu-password'), c.login('alice', 'cu-password')]);
  t.same(out.map((o) => o.status).sort(), ['fulfilled', 'rejected']);
  t.match(out.find((o) => o.status === 'rejected'), { reason: { code: 'HSM_ERR_BUSY', message: /already has a login in progress/ } });
});

t.test('each request publishes hsmproxy:hsm:request with timings and outcome', async (t) => {
  const events: HsmRequestEvent[] = [];
  const onEvent = (m: unknown): void => { events.push(m as HsmRequestEvent); };
  subscribe('hsmproxy:hsm:request', onEvent);
  t.teardown(() => unsubscribe('hsmproxy:hsm:request', onEvent));
  await cu.sign({ keyId: ec.privateKey.keyId, mechanism: 'ecdsa-sha256', data: Buffer.from('m') });
  await t.rejects(cu.getKey('0'.repeat(32)));
  t.match(events[0], { op: 'sign', mechanism: 'ecdsa-sha256', hsm: 'hsm-1', outcome: 'ok', rttMs: Number, queueWaitMs: Number, serviceMs: Number });
  t.ok((events[0]?.serviceMs ?? 0) > 0, 'the HSM reported its service time');
  t.match(events[1], { op: 'getKey', mechanism: '', outcome: 'HSM_ERR_NO_SUCH_KEY' });
});

t.test('an aborted request rejects with HSM_ERR_ABORTED and the connection carries on', async (t) => {
  const ac = new AbortController();
  ac.abort();
  await t.rejects(cu.random(16, { signal: ac.signal }), { code: 'HSM_ERR_ABORTED' });
  const ac2 = new AbortController();
  const p = cu.random(16, { signal: ac2.signal });
  ac2.abort();
  await t.rejects(p, { code: 'HSM_ERR_ABORTED' });
  t.equal((await cu.random(16)).length, 16);
});

t.test('closing the connection fails requests in flight with HSM_ERR_CONNECTION_CLOSED', async (t) => {
  const c = await loggedIn();
  const p = c.random(32);
  c.destroy();
  await t.rejects(p, { code: 'HSM_ERR_CONNECTION_CLOSED' });
  await c.closed;
  t.ok(c.isClosed);
  await t.rejects(c.random(1), { code: 'HSM_ERR_CONNECTION_CLOSED' }, 'later calls fail at once');
});

t.test('session keys vanish when their connection closes', async (t) => {
  const c = await loggedIn();
  const k = await c.generateKeyPair('ec:p256', { label: 'ephemeral', token: false });
  t.equal((await c.getKey(k.privateKey.keyId)).token, false);
  await c.close();
  await until(() => node.device.occupancy().session === 0, 'the session to end');
  await t.rejects(cu.getKey(k.privateKey.keyId), { code: 'HSM_ERR_NO_SUCH_KEY' });
});
