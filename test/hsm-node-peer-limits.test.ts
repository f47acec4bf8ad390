// What a peer may hold on an HSM node (issue 28): connections that never finish mTLS are closed
// at the handshake timeout and capped per source address and in total (refused at accept); an
// authenticated connection that pipelines past its in-flight cap, or stops reading its answers,
// is simply not read until it catches up, and every answer still arrives. Before, node:tls's
// handshake timeout only reported the peer and left its socket open for good, and a connection
// could have any number of requests and any amount of answers pending.
// Attackers connect from 127.0.0.2 so the per-source cap never touches the real client on
// 127.0.0.1. One device, one appliance per test (each with the limits under test), loopback only.
import t, { type Test } from 'tap';
import { createPublicKey, verify } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { Hsm } from '../src/hsm/device/index.js';
import { HsmAppliance, type HsmApplianceOptions } from '../src/hsm/node.js';
import { clusterPath } from '../src/hsm/cluster/manifest.js';
import {
  FLAG_JSON, FrameDecoder, Op, STATUS_OK, encodeFrame, writeRandom, type Frame,
} from '../src/hsm/protocol/index.js';
import { activate, clientTls, connect, tempCluster, TEST_SCRYPT_COST } from './helpers/hsm-cluster.js';

const ATTACKER = '127.0.0.2';
// A P-256 sign holds one of 4 crypto units for 20 ms, so pipelined signs really are in flight together.
const SLOW_SIGN = { name: 'test-slow-sign', units: 4, rates: { 'sign:ec-p256': 200 }, maxQueue: 10_000 };

const cluster = await tempCluster();
const h = cluster.manifest.hsms[0]!;
const [key, cert, ca, clusterKey] = await Promise.all(
  [h.key, h.cert, cluster.manifest.caCert, cluster.manifest.maskingKey].map((p) => readFile(clusterPath(cluster.dir, p))),
) as [Buffer, Buffer, Buffer, Buffer];
const device = await Hsm.open({ dir: clusterPath(cluster.dir, h.dataDir), hsmId: h.id, clusterKey, capacity: SLOW_SIGN, scryptCost: TEST_SCRYPT_COST });
const logs: Array<{ msg: string; fields?: Record<string, unknown> }> = [];
t.teardown(async () => {
  await device.close();
  await cluster.cleanup();
});

/** An appliance over the shared device with `limits`; closed when the test ends. */
async function appliance(t: Test, limits: Partial<HsmApplianceOptions> = {}): Promise<HsmAppliance> {
  const a = await HsmAppliance.listen({ device, hsmId: h.id, host: '127.0.0.1', port: 0, key, cert, ca, log: (_l, msg, fields) => logs.push({ msg, ...(fields ? { fields } : {}) }), ...limits });
  t.teardown(() => a.close());
  return a;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
// Waits (bounded in count and time) until `cond` holds.
async function until(cond: () => boolean, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await sleep(20);
  if (!cond()) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}
const openFds = (): number => readdirSync(`/proc/${process.pid}/fd`).length;

// Activate once (PRECO → CO, CU alice) and make the key the tests sign with.
const ecKey = await (async () => {
  const a = await HsmAppliance.listen({ device, hsmId: h.id, host: '127.0.0.1', port: 0, key, cert, ca });
  try {
    await activate(cluster, a.port);
    const c = await connect(cluster, a.port);
    await c.login('alice', 'cu-password');
    const k = await c.generateKeyPair('ec:p256', { label: 'peer-limits' });
    const pub = createPublicKey((await c.exportPublicKey(k.publicKey.keyId)).pem);
    c.destroy();
    return { keyId: k.privateKey.keyId, pub };
  } finally {
    await a.close();
  }
})();

/** A real client from 127.0.0.1: connects, logs in, signs, and checks the signature. */
async function legitimateSign(a: HsmAppliance, what: string): Promise<boolean> {
  const c = await connect(cluster, a.port);
  try {
    await c.login('alice', 'cu-password');
    const data = Buffer.from(what);
    return verify('sha256', data, ecKey.pub, await c.sign({ keyId: ecKey.keyId, mechanism: 'ecdsa-sha256', data }, { timeoutMs: 10_000 }));
  } finally {
    c.destroy();
  }
}

/** A TCP connection from the attacker's address; `onOpen` may start sending. Tracks its close. */
function attacker(a: HsmAppliance, onOpen?: (s: Socket) => void): Socket & { closedAt?: number } {
  const s: Socket & { closedAt?: number } = netConnect({ host: '127.0.0.1', port: a.port, localAddress: ATTACKER });
  s.on('error', () => undefined);
  s.once('close', () => { s.closedAt = Date.now(); });
  if (onOpen) s.once('connect', () => onOpen(s));
  return s;
}
// A TLS record header announcing a 512-byte handshake message that never comes.
const RECORD_HEADER = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]);

t.test('silent, half-handshake and trickling peers are all closed at the handshake timeout, and their descriptors freed', async (t) => {
  const a = await appliance(t, { handshakeTimeoutMs: 1000, maxPendingPerSource: 500, maxPending: 1000 });
  const baseline = openFds();
  const fromLog = logs.length;
  const hostile: Array<Socket & { closedAt?: number }> = [];
  t.teardown(() => { for (const s of hostile) s.destroy(); });
  for (let i = 0; i < 200; i++) hostile.push(attacker(a));
  for (let i = 0; i < 200; i++) hostile.push(attacker(a, (s) => s.write(RECORD_HEADER)));
  // Three peers send the header and then one byte every 100 ms (at most 50, well past the timeout).
  for (let i = 0; i < 3; i++) {
    hostile.push(attacker(a, (s) => {
      s.write(RECORD_HEADER);
      let sent = 0;
      const timer = setInterval(() => { if (s.destroyed || ++sent > 50) clearInterval(timer); else s.write(Buffer.from([sent])); }, 100);
    }));
  }
  const opened = Date.now();
  // Each hostile connection holds a descriptor at both ends once the node accepted it.
  await until(() => openFds() >= baseline + 2 * hostile.length, `the node to accept all ${hostile.length} hostile connections`);
  t.equal(a.pendingHandshakes, hostile.length, 'the node counts them as unauthenticated');
  t.ok(await legitimateSign(a, 'while attacked'), 'a client from 127.0.0.1 logs in and signs while they are held');

  // Bound only catches a hang: the timeout is 1 s.
  await until(() => hostile.every((s) => s.destroyed), 'the node to close every hostile connection', 15_000);
  const lastClose = Math.max(...hostile.map((s) => s.closedAt ?? 0));
  t.ok(lastClose - opened >= 900, `closed by the handshake timeout, not at once (last after ${lastClose - opened} ms)`);
  t.equal(a.pendingHandshakes, 0, 'the node holds no unauthenticated connection');
  t.equal(a.stats.handshakeTimeouts, hostile.length, 'each one counted as a handshake timeout');
  await until(() => openFds() <= baseline + 5, `descriptors back near the baseline of ${baseline} (now ${openFds()})`);
  t.ok(await legitimateSign(a, 'after the attack'), 'the node still serves');

  const refusalLines = logs.slice(fromLog).filter((l) => l.msg === 'refused a connection');
  t.ok(refusalLines.length <= 10, `403 refusals cost at most 10 log lines (${refusalLines.length})`);
  t.match(refusalLines[0]?.fields, { peer: ATTACKER, code: 'ERR_TLS_HANDSHAKE_TIMEOUT' });
  await a.close();
  t.match(logs.slice(fromLog).find((l) => l.msg === 'log lines left out during a burst')?.fields, { about: 'refused a connection', count: hostile.length - refusalLines.length });
});

t.test('past the per-source cap a new unauthenticated connection is closed at once; other addresses and finished handshakes are not counted', async (t) => {
  const a = await appliance(t, { handshakeTimeoutMs: 30_000, maxPendingPerSource: 5 });
  const fromLog = logs.length;
  const baseline = openFds();
  const held = Array.from({ length: 5 }, () => attacker(a));
  t.teardown(() => { for (const s of held) s.destroy(); });
  await until(() => openFds() >= baseline + 10, 'the node to accept the first 5');

  const extra = Array.from({ length: 20 }, () => attacker(a));
  t.teardown(() => { for (const s of extra) s.destroy(); });
  // Far below the 30 s handshake timeout: only the cap can close them this soon.
  await until(() => extra.every((s) => s.destroyed), 'the connections over the cap to be closed', 10_000);
  t.equal(a.stats.overPendingCap, 20, 'each counted as refused over the cap');
  t.ok(held.every((s) => !s.destroyed), 'the first 5 are still open (their handshake time is not up)');
  t.equal(a.pendingHandshakes, 5);

  // 127.0.0.1 has its own count, and a connection that finished mTLS no longer counts at all:
  // eight clients from there, all kept open, stay well past a cap of 5.
  const clients: Array<Awaited<ReturnType<typeof connect>>> = [];
  for (let i = 0; i < 8; i++) {
    const c = await connect(cluster, a.port);
    clients.push(c);
    await c.login('alice', 'cu-password');
  }
  t.teardown(() => { for (const c of clients) c.destroy(); });
  t.ok(await legitimateSign(a, 'next to a capped address'), 'a ninth client from 127.0.0.1 signs');

  // A closed connection frees its place: once the 5 go, the address may connect again.
  for (const s of held) s.destroy();
  await until(() => a.pendingHandshakes === 0, 'the held connections to be uncounted');
  const again = attacker(a);
  t.teardown(() => again.destroy());
  await until(() => a.pendingHandshakes === 1, 'a new connection from the attacker address to be admitted');
  t.notOk(again.destroyed, 'admitted, not refused');

  const capLines = logs.slice(fromLog).filter((l) => /over the cap/.test(l.msg));
  t.ok(capLines.length >= 1 && capLines.length <= 10, `20 refusals cost at most 10 log lines (${capLines.length})`);
  t.match(capLines[0]?.fields, { peer: ATTACKER, reason: /maxPendingPerSource/ });
});

t.test('the total cap refuses at accept whatever the address', async (t) => {
  const a = await appliance(t, { handshakeTimeoutMs: 30_000, maxPendingPerSource: 100, maxPending: 3 });
  const baseline = openFds();
  const held = Array.from({ length: 3 }, () => attacker(a));
  t.teardown(() => { for (const s of held) s.destroy(); });
  await until(() => openFds() >= baseline + 6, 'the node to accept 3');
  const over = attacker(a);
  t.teardown(() => over.destroy());
  await until(() => over.destroyed, 'the fourth to be closed', 10_000);
  t.equal(a.stats.overPendingCap, 1);
  for (const s of held) s.destroy();
  await until(() => a.pendingHandshakes === 0, 'the held connections to be uncounted');
  t.ok(await legitimateSign(a, 'after the cap cleared'), 'a client gets in once there is room');
});

t.test('a client pipelining past the in-flight cap gets every answer; the node never runs more than the cap at once', async (t) => {
  const a = await appliance(t, { maxInFlightPerConnection: 8 });
  const c = await connect(cluster, a.port);
  t.teardown(() => c.destroy());
  await c.login('alice', 'cu-password');
  const msgs = Array.from({ length: 100 }, (_, i) => Buffer.from(`pipelined ${i}`));
  const sigs = await Promise.all(msgs.map((data) => c.sign({ keyId: ecKey.keyId, mechanism: 'ecdsa-sha256', data }, { timeoutMs: 15_000 })));
  t.equal(sigs.filter((s, i) => verify('sha256', msgs[i] as Buffer, ecKey.pub, s)).length, 100, 'all 100 signed, each over its own message');
  t.equal(a.stats.peakInFlight, 8, 'at most 8 requests were in flight at once (and the cap was reached)');
  t.ok(a.stats.readPauses >= 1, 'the node paused reading rather than failing requests');
});

// A raw mTLS socket, logged in as alice, whose reading the test controls.
async function rawLoggedIn(a: HsmAppliance): Promise<{ socket: TLSSocket; frames: Frame[] }> {
  const socket = tlsConnect({ host: '127.0.0.1', port: a.port, ...(await clientTls(cluster)), minVersion: 'TLSv1.3', checkServerIdentity: () => undefined });
  await new Promise<void>((resolve, reject) => { socket.once('secureConnect', resolve); socket.once('error', reject); });
  socket.on('error', () => undefined);
  const decoder = new FrameDecoder(1 << 20);
  const frames: Frame[] = [];
  socket.on('data', (chunk: Buffer) => { frames.push(...decoder.push(chunk)); });
  socket.write(encodeFrame(1, Op.LOGIN, FLAG_JSON, Buffer.from(JSON.stringify({ user: 'alice', password: 'cu-password' }))));
  await until(() => frames.length === 1, 'the login answer');
  if (frames[0]?.code !== STATUS_OK) throw new Error(`login failed: ${frames[0]?.body.toString()}`);
  frames.length = 0;
  return { socket, frames };
}

t.test('a client that stops reading its answers is not read either; the answers queued for it stay bounded and all arrive once it reads', async (t) => {
  const HIGH_WATER = 256 * 1024;
  const IN_FLIGHT = 16;
  const a = await appliance(t, { replyHighWaterBytes: HIGH_WATER, maxInFlightPerConnection: IN_FLIGHT });
  const { socket, frames } = await rawLoggedIn(a);
  t.teardown(() => socket.destroy());
  socket.pause();
  // 2000 requests for 64 KiB of random bytes each: 128 MiB of answers, far more than the
  // loopback socket buffers hold, asked for in 48 KB of requests.
  const N = 2000;
  const LEN = 65_536;
  const body = writeRandom(LEN);
  socket.write(Buffer.concat(Array.from({ length: N }, (_, i) => encodeFrame(i + 2, Op.RANDOM, 0, body.subarray(20)))));
  // Wait until the node stops making progress (its queue peak holds still), bounded.
  let last = -1;
  for (let i = 0; i < 50 && a.stats.peakQueuedReplyBytes !== last; i++) {
    last = a.stats.peakQueuedReplyBytes;
    await sleep(200);
  }
  t.ok(a.stats.readPauses >= 1, 'the node stopped reading the connection');
  // What may pile up: the high-water mark, the answers of the requests in flight when it was
  // crossed, and under the socket's own 16 KiB mark (writes below it raise no 'drain').
  const bound = HIGH_WATER + IN_FLIGHT * (LEN + 20) + 16 * 1024;
  t.ok(a.stats.peakQueuedReplyBytes <= bound, `answer bytes queued for the connection peaked at ${a.stats.peakQueuedReplyBytes}, under ${bound}`);
  t.ok(a.stats.peakQueuedReplyBytes > HIGH_WATER, 'answers did pile up past the mark (the client really stopped reading)');

  socket.resume();
  await until(() => frames.length === N, `all ${N} answers (have ${frames.length})`, 15_000);
  t.ok(frames.every((f) => f.code === STATUS_OK && f.body.length === LEN), 'each is 64 KiB of random bytes');
  t.equal(new Set(frames.map((f) => f.requestId)).size, N, 'one answer per request');
  t.ok(a.stats.peakQueuedReplyBytes <= bound, 'and the queue stayed bounded while they drained');
});
