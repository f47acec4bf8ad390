// Pipelining: many requests in flight on one connection, answered as they finish. A custom
// capacity profile makes an RSA-4096 sign hold a crypto unit for 500 ms while a P-256 sign costs
// only its real crypto, so the order of answers is decided by the HSM's work even on a loaded
// machine (the device computes synchronously; the modelled time is what keeps RSA slow).
import t from 'tap';
import { createPublicKey, generateKeyPair, verify } from 'node:crypto';
import { promisify } from 'node:util';
import { activatedNodeWithCu } from './helpers/hsm-cluster.js';

const SLOW_RSA = { name: 'test-slow-rsa', units: 8, rates: { 'sign:rsa-4096': 16 }, maxQueue: 1000 };
const { cu, stop } = await activatedNodeWithCu(SLOW_RSA);
t.teardown(stop);

// Importing a locally made RSA-4096 key: generation is slow, and the test is about signing.
const rsaPem = (await promisify(generateKeyPair)('rsa', { modulusLength: 4096, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } })).privateKey;
const rsa = await cu.importKey({ key: rsaPem, template: { label: 'slow-rsa-4096' } });
const ec = await cu.generateKeyPair('ec:p256', { label: 'fast-ec' });
const ecPub = createPublicKey((await cu.exportPublicKey(ec.publicKey.keyId)).pem);
const rsaPub = createPublicKey((await cu.exportPublicKey(rsa.publicKey.keyId)).pem);

t.test('a fast ECDSA sign sent after a slow RSA-4096 sign is answered first', async (t) => {
  const order: string[] = [];
  const data = Buffer.from('pipelined');
  const slow = cu.sign({ keyId: rsa.privateKey.keyId, mechanism: 'rsa-pss-sha256', data }).then((s) => { order.push('rsa'); return s; });
  const fast = cu.sign({ keyId: ec.privateKey.keyId, mechanism: 'ecdsa-sha256', data }).then((s) => { order.push('ec'); return s; });
  const [rsaSig, ecSig] = await Promise.all([slow, fast]);
  t.same(order, ['ec', 'rsa']);
  t.ok(verify('sha256', data, { key: rsaPub, padding: 6 /* RSA_PKCS1_PSS_PADDING */ }, rsaSig), 'RSA-PSS signature verifies');
  t.ok(verify('sha256', data, ecPub, ecSig), 'ECDSA signature verifies');
});

t.test('64 signs in flight on one connection all come back matched to their requests', async (t) => {
  const msgs = Array.from({ length: 64 }, (_, i) => Buffer.from(`message ${i}`));
  const sigs = await Promise.all(msgs.map((data) => cu.sign({ keyId: ec.privateKey.keyId, mechanism: 'ecdsa-sha256', data })));
  t.equal(sigs.filter((s, i) => verify('sha256', msgs[i] as Buffer, ecPub, s)).length, 64, 'each signature verifies over its own message');
});

t.test('crypto answers report the HSM queue wait and service time', async (t) => {
  const r = await cu.signTimed({ keyId: rsa.privateKey.keyId, mechanism: 'rsa-pkcs1-sha256', data: Buffer.from('t') });
  t.ok(r.serviceUs >= 400_000, `RSA-4096 service time reflects the profile (${r.serviceUs} µs)`);
  t.ok(r.queueWaitUs >= 0);
});

t.test('a request past its deadline fails with HSM_ERR_TIMEOUT; the late answer is dropped', async (t) => {
  await t.rejects(cu.sign({ keyId: rsa.privateKey.keyId, mechanism: 'rsa-pss-sha256', data: Buffer.from('late') }, { timeoutMs: 5 }), { code: 'HSM_ERR_TIMEOUT' });
  await new Promise((r) => setTimeout(r, 100));
  const sig = await cu.sign({ keyId: ec.privateKey.keyId, mechanism: 'ecdsa-sha256', data: Buffer.from('after') });
  t.ok(verify('sha256', Buffer.from('after'), ecPub, sig), 'the connection still pairs answers correctly');
});
