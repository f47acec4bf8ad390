// The HSM channel batches: requests a client issues in one turn of the event loop leave in one
// socket write and reach the HSM in one read, and the answers finished in one turn leave the HSM
// in one write. Without it every signature costs a TLS record and a system call on each side,
// and HSM throughput falls by a third or more. Also: requests with the connection's
// default deadline (one shared timer) still time out.
import t from 'tap';
import { createPublicKey, verify } from 'node:crypto';
import { HsmConnection } from '../src/hsm/client/connection.js';
import { activatedNodeWithCu, clientTls } from './helpers/hsm-cluster.js';

// RSA-4096 signs hold a crypto unit for 400 ms: a request that outlives a short deadline.
const SLOW_RSA = { name: 'test-slow-rsa', units: 4, rates: { 'sign:rsa-4096': 10 }, maxQueue: 100 };
const { cluster, node, cu, stop } = await activatedNodeWithCu(SLOW_RSA);
t.teardown(stop);
const ec = await cu.generateKeyPair('ec:p256', { label: 'batched' });
const ecPub = createPublicKey((await cu.exportPublicKey(ec.publicKey.keyId)).pem);

t.test('64 signs issued in one turn reach the HSM in one read and come back in one write', async (t) => {
  const msgs = Array.from({ length: 64 }, (_, i) => Buffer.from(`batched message ${i}`));
  const before = { ...node.appliance.stats };
  // All 64 calls run before this function yields: one turn of the event loop.
  const sigs = await Promise.all(msgs.map((data) => cu.sign({ keyId: ec.privateKey.keyId, mechanism: 'ecdsa-sha256', data })));
  const s = node.appliance.stats;
  t.equal(s.frames - before.frames, 64, '64 request frames decoded');
  // One write of 64 frames (~11 KB) is one TLS record: one read. A second is tolerated (a record
  // split by the TCP stack), not one per request.
  t.ok(s.reads - before.reads <= 2, `requests arrived in ${s.reads - before.reads} reads`);
  t.ok(s.writes - before.writes <= 2, `answers left in ${s.writes - before.writes} writes`);
  t.equal(sigs.filter((sig, i) => verify('sha256', msgs[i] as Buffer, ecPub, sig)).length, 64, 'every signature verifies over its own message');
});

t.test('requests issued in separate turns are not held back for a batch', async (t) => {
  const before = node.appliance.stats.writes;
  for (let i = 0; i < 3; i++) await cu.sign({ keyId: ec.privateKey.keyId, mechanism: 'ecdsa-sha256', data: Buffer.from(`alone ${i}`) });
  t.equal(node.appliance.stats.writes - before, 3, 'one answer write per request awaited in turn');
});

t.test('a request past the connection default deadline fails with HSM_ERR_TIMEOUT; the connection goes on', async (t) => {
  const rsa = await cu.generateKeyPair('rsa:4096', { label: 'slow' }, { timeoutMs: 120_000 });
  const short = await HsmConnection.connect({ hsmId: 'hsm-1', host: '127.0.0.1', port: node.port, ...(await clientTls(cluster)), requestTimeoutMs: 150 });
  t.teardown(() => short.destroy());
  await short.login('alice', 'cu-password', { timeoutMs: 10_000 });
  const t0 = performance.now();
  await t.rejects(short.sign({ keyId: rsa.privateKey.keyId, mechanism: 'rsa-pkcs1-sha256', data: Buffer.from('late') }), { code: 'HSM_ERR_TIMEOUT' });
  const waited = performance.now() - t0;
  t.ok(waited >= 140 && waited < 2000, `timed out after ${waited.toFixed(0)} ms (deadline 150 ms)`);
  const sig = await short.sign({ keyId: ec.privateKey.keyId, mechanism: 'ecdsa-sha256', data: Buffer.from('after') });
  t.ok(verify('sha256', Buffer.from('after'), ecPub, sig), 'later requests are still paired with their answers');
});
