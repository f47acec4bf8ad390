// Signers: TLS schemes per key, wire-form signatures that verify, verify-after-sign, admission
// control (cap, bounded queue, deadline, abort) and the hsmproxy:engine:sign event.
import t from 'tap';
import { generateKeyPairSync, verify, webcrypto, constants } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import {
  Admission, Engine, ENGINE_SIGN_CHANNEL, SignatureScheme, SimBackend, SoftBackend, derToRaw, rawToDer, type EngineSignEvent, type KeyRef,
} from '../src/engine/index.js';
import type { Signer as TlsSigner, CertifiedKey as TlsCertifiedKey } from '../src/tls/signer.js';
import { FakeHsm } from './helpers/fake-hsm.js';

const CLUSTER = 'cd'.repeat(32);
const creds = { user: 'cu1', password: 'secret1' };

async function simKey(alg: { type: 'rsa'; bits: number } | { type: 'ec'; curve: 'P-256' | 'P-384' }, opts: { raw?: boolean; verify?: 'all' | 'rsa' | 'none'; admission?: Admission } = {}) {
  const hsm = new FakeHsm();
  hsm.ecdsaRaw = opts.raw ?? false;
  const backend = new SimBackend({ client: hsm, clusterId: CLUSTER, credentials: creds, ecdsaEncoding: opts.raw ? 'raw' : 'der' });
  const engine = new Engine({ backends: { sim: backend }, verify: opts.verify, admission: opts.admission });
  const made = await backend.generateKeyPair({ algorithm: alg, label: 'test' });
  const signer = await engine.signer(made.ref!);
  return { hsm, backend, engine, signer, ref: made.ref! };
}

t.test('an engine Signer is assignable to the tls/ Signer and CertifiedKey contracts', async (t) => {
  const { signer, engine } = await simKey({ type: 'ec', curve: 'P-256' });
  const tlsSigner: TlsSigner = signer;
  const certified: TlsCertifiedKey = { chain: [], signer };
  t.equal(tlsSigner.keyType, 'ec');
  t.equal(certified.signer.curve, 'P-256');
  await engine.close();
});

t.test('an RSA key offers PSS then PKCS#1 schemes, and every signature verifies', async (t) => {
  const { signer, ref, engine } = await simKey({ type: 'rsa', bits: 2048 });
  t.same(signer.schemes, [0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601]);
  t.equal(signer.bits, 2048);
  const data = Buffer.from('TLS 1.3, server CertificateVerify');
  for (const [scheme, hash, padding] of [
    [0x0804, 'sha256', constants.RSA_PKCS1_PSS_PADDING], [0x0805, 'sha384', constants.RSA_PKCS1_PSS_PADDING], [0x0806, 'sha512', constants.RSA_PKCS1_PSS_PADDING],
    [0x0401, 'sha256', constants.RSA_PKCS1_PADDING], [0x0501, 'sha384', constants.RSA_PKCS1_PADDING], [0x0601, 'sha512', constants.RSA_PKCS1_PADDING],
  ] as const) {
    const sig = await signer.sign(scheme, data);
    t.equal(sig.length, 256);
    // PSS salt length must equal the hash length (RFC 8446 §4.2.3).
    t.ok(verify(hash, data, { key: ref.publicKey, padding, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }, sig), `scheme 0x${scheme.toString(16)} verifies`);
  }
  await engine.close();
});

for (const [curve, scheme, hash, size] of [['P-256', 0x0403, 'sha256', 32], ['P-384', 0x0503, 'sha384', 48]] as const) {
  t.test(`an EC ${curve} key whose HSM answers raw r||s yields DER signatures that verify`, async (t) => {
    const { signer, ref, engine } = await simKey({ type: 'ec', curve }, { raw: true });
    t.same(signer.schemes, [scheme, ...[0x0403, 0x0503, 0x0603].filter((s) => s !== scheme)], 'own curve first, then every ECDSA hash (TLS 1.2)');
    for (const [other, otherHash] of [[0x0403, 'sha256'], [0x0503, 'sha384'], [0x0603, 'sha512']] as const) {
      const data = Buffer.from(`any hash ${other}`);
      t.ok(verify(otherHash, data, ref.publicKey, await signer.sign(other, data)), `the simulated HSM signs ECDSA with ${otherHash}`);
    }
    for (let i = 0; i < 20; i++) {
      const data = Buffer.from(`message ${i}`);
      const sig = await signer.sign(scheme, data);
      t.equal(sig[0], 0x30, 'DER SEQUENCE');
      if (!verify(hash, data, ref.publicKey, sig)) t.fail(`signature ${i} does not verify`);
      t.equal(derToRaw(sig, size).length, 2 * size);
    }
    await t.rejects(signer.sign(SignatureScheme.rsa_pss_rsae_sha256, Buffer.from('x')), { code: 'ENGINE_ERR_UNSUPPORTED' }, 'an RSA scheme on an EC key is refused');
    await engine.close();
  });
}

t.test('raw r||s to DER handles leading zeros, high bits and P-384 sizes, and round-trips', async (t) => {
  const r = Buffer.alloc(32); r[31] = 1; // r = 1: 31 leading zero bytes
  const s = Buffer.alloc(32, 0xff); // high bit set: needs a 0x00 sign byte
  const der = rawToDer(Buffer.concat([r, s]), 32);
  t.same([...der.subarray(0, 7)], [0x30, 0x26, 0x02, 0x01, 0x01, 0x02, 0x21]);
  t.same(derToRaw(der, 32), Buffer.concat([r, s]));
  const r384 = Buffer.alloc(48, 0x7f); const s384 = Buffer.alloc(48); s384[0] = 0; s384[1] = 0x80; s384[47] = 9;
  t.same(derToRaw(rawToDer(Buffer.concat([r384, s384]), 48), 48), Buffer.concat([r384, s384]));
  t.throws(() => rawToDer(Buffer.alloc(63), 32), /must be 64 bytes/);
  t.throws(() => derToRaw(Buffer.concat([der, Buffer.from([0])]), 32), /trailing/);
  t.throws(() => derToRaw(rawToDer(Buffer.concat([r384, s384]), 48), 32), /longer than 32/);
  // Real node signatures round-trip through both encodings.
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const raw = (await import('node:crypto')).sign('sha384', Buffer.from('m'), { key: privateKey, dsaEncoding: 'ieee-p1363' });
  t.ok(verify('sha384', Buffer.from('m'), publicKey, rawToDer(raw, 48)));
});

t.test('verify-after-sign withholds a faulty RSA signature from the HSM', async (t) => {
  const { signer, hsm, engine } = await simKey({ type: 'rsa', bits: 2048 });
  hsm.corruptNext = 1;
  await t.rejects(signer.sign(0x0804, Buffer.from('x')), { code: 'ENGINE_ERR_BAD_SIGNATURE', message: /does not verify.*withheld/ });
  t.ok(await signer.sign(0x0804, Buffer.from('x')), 'the next, good signature goes through');
  await engine.close();
});

t.test('verify-after-sign can be turned on for EC keys', async (t) => {
  const { signer, hsm, engine } = await simKey({ type: 'ec', curve: 'P-256' }, { raw: true, verify: 'all' });
  hsm.corruptNext = 1;
  await t.rejects(signer.sign(0x0403, Buffer.from('x')), { code: 'ENGINE_ERR_BAD_SIGNATURE' });
  await engine.close();
});

t.test('admission control: a full queue sheds at once with ENGINE_ERR_OVERLOADED', async (t) => {
  const admission = new Admission({ maxInFlight: 2, maxQueue: 1, queueTimeoutMs: 5000 });
  const { signer, hsm, engine } = await simKey({ type: 'ec', curve: 'P-256' }, { admission });
  hsm.signDelayMs = 100;
  const running = [signer.sign(0x0403, Buffer.from('a')), signer.sign(0x0403, Buffer.from('b')), signer.sign(0x0403, Buffer.from('c'))];
  t.equal(admission.inFlight, 2);
  t.equal(admission.queued, 1);
  await t.rejects(signer.sign(0x0403, Buffer.from('d')), { code: 'ENGINE_ERR_OVERLOADED' });
  const sigs = await Promise.all(running);
  t.equal(sigs.length, 3, 'the admitted three complete');
  t.equal(admission.shed, 1);
  t.equal(admission.inFlight, 0);
  await engine.close();
});

t.test('admission control: a queued request past its deadline is shed', async (t) => {
  const admission = new Admission({ maxInFlight: 1, maxQueue: 10, queueTimeoutMs: 30 });
  const { signer, hsm, engine } = await simKey({ type: 'ec', curve: 'P-256' }, { admission });
  hsm.signDelayMs = 300;
  const first = signer.sign(0x0403, Buffer.from('a'));
  await t.rejects(signer.sign(0x0403, Buffer.from('b')), { code: 'ENGINE_ERR_OVERLOADED', message: /within 30 ms/ });
  await first;
  await engine.close();
});

t.test('an aborted request is cancelled whether queued or in flight', async (t) => {
  const admission = new Admission({ maxInFlight: 1, maxQueue: 10 });
  const { signer, hsm, engine } = await simKey({ type: 'ec', curve: 'P-256' }, { admission });
  hsm.signDelayMs = 5000;
  const inFlight = new AbortController();
  const queued = new AbortController();
  const a = signer.sign(0x0403, Buffer.from('a'), inFlight.signal);
  const b = signer.sign(0x0403, Buffer.from('b'), queued.signal);
  queued.abort();
  await t.rejects(b, { code: 'ENGINE_ERR_ABORTED' }, 'queued request rejects');
  inFlight.abort();
  await t.rejects(a, { code: 'ENGINE_ERR_ABORTED' }, 'in-flight request rejects');
  t.equal(admission.inFlight, 0, 'slot released');
  const done = new AbortController();
  done.abort();
  await t.rejects(signer.sign(0x0403, Buffer.from('c'), done.signal), { code: 'ENGINE_ERR_ABORTED' }, 'already aborted');
  await engine.close();
});

t.test('every signature publishes hsmproxy:engine:sign with backend, key type, scheme, duration and outcome', async (t) => {
  const events: EngineSignEvent[] = [];
  const onEvent = (m: unknown): void => { events.push(m as EngineSignEvent); };
  subscribe(ENGINE_SIGN_CHANNEL, onEvent);
  t.teardown(() => unsubscribe(ENGINE_SIGN_CHANNEL, onEvent));
  const { signer, hsm, engine } = await simKey({ type: 'rsa', bits: 2048 });
  await signer.sign(0x0804, Buffer.from('x'));
  hsm.corruptNext = 1;
  await signer.sign(0x0401, Buffer.from('x')).catch(() => undefined);
  t.equal(events.length, 2);
  t.match(events[0], { backend: 'sim', keyType: 'rsa', scheme: 0x0804, outcome: 'ok' });
  t.ok(events[0]!.durationMs >= 0);
  t.match(events[1], { backend: 'sim', keyType: 'rsa', scheme: 0x0401, outcome: 'ENGINE_ERR_BAD_SIGNATURE' });
  await engine.close();
});

t.test('the soft backend signs with a real key and refuses key references', async (t) => {
  const soft = new SoftBackend();
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const handle = soft.load(privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 'real.pem');
  const engine = new Engine({ backends: { soft } });
  const signer = await engine.signer(engine.adopt(handle, soft));
  t.ok(verify('sha256', Buffer.from('m'), publicKey, await signer.sign(0x0403, Buffer.from('m'))));
  const { formatKeyRef } = await import('../src/engine/index.js');
  const ref: KeyRef = { backend: 'sim', clusterId: CLUSTER, keyId: 'k', label: 'l', publicKey };
  t.throws(() => soft.load(formatKeyRef(ref), 'ref.pem'), { code: 'ENGINE_ERR_NOT_SOFT_KEY', message: /ref\.pem is a key reference/ });
  const rsaRef = formatKeyRef({ ...ref, publicKey: generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey });
  t.throws(() => soft.load(rsaRef, 'rsa-ref.pem'), { code: 'ENGINE_ERR_NOT_SOFT_KEY' });
  await engine.close();
});

t.test('WebCrypto: subtle.sign with an HSM key returns raw ECDSA that node webcrypto verifies; export is refused', async (t) => {
  const { signer, engine } = await simKey({ type: 'ec', curve: 'P-384' });
  const crypto = engine.webcrypto();
  const keys = await crypto.keyPair(signer, { name: 'ECDSA', hash: 'SHA-384' });
  const data = Buffer.from('tbs');
  const sig = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-384' }, keys.privateKey as unknown as webcrypto.CryptoKey, data);
  t.equal(sig.byteLength, 96);
  t.ok(await webcrypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-384' }, keys.publicKey, sig, data));
  await t.rejects(crypto.subtle.exportKey('pkcs8', keys.privateKey as unknown as webcrypto.CryptoKey), { code: 'ENGINE_ERR_UNSUPPORTED' });
  const digest = await crypto.subtle.digest('SHA-256', data);
  t.equal(digest.byteLength, 32, 'other calls delegate to node webcrypto');
  await engine.close();
});

t.test('a signature that does not arrive within the deadline fails with ENGINE_ERR_TIMEOUT and frees its slot', async (t) => {
  const hsm = new FakeHsm();
  const backend = new SimBackend({ client: hsm, clusterId: CLUSTER, credentials: creds });
  const admission = new Admission({ maxInFlight: 1 });
  const engine = new Engine({ backends: { sim: backend }, admission, signTimeoutMs: 50 });
  const made = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'slow' });
  const signer = await engine.signer(made.ref!);
  hsm.signDelayMs = 2000;
  const t0 = Date.now();
  await t.rejects(signer.sign(0x0403, Buffer.from('x')), { code: 'ENGINE_ERR_TIMEOUT', message: /within 50 ms/ });
  t.ok(Date.now() - t0 < 1500, 'rejected long before the HSM would have answered');
  t.equal(admission.inFlight, 0, 'slot released');
  hsm.signDelayMs = 0;
  t.ok(await signer.sign(0x0403, Buffer.from('x')), 'the next signature goes through');
  await engine.close();
});

t.test('a caller that keeps its own deadline (SignContext.deadlineMs) cancels queued and in-flight signatures with its signal', async (t) => {
  const admission = new Admission({ maxInFlight: 1, maxQueue: 10 });
  const { signer, hsm, engine, ref } = await simKey({ type: 'ec', curve: 'P-256' }, { admission });
  const events: EngineSignEvent[] = [];
  const onEvent = (m: unknown): void => { events.push(m as EngineSignEvent); };
  subscribe(ENGINE_SIGN_CHANNEL, onEvent);
  t.teardown(() => unsubscribe(ENGINE_SIGN_CHANNEL, onEvent));
  const ok = await signer.sign(0x0403, Buffer.from('fast'), new AbortController().signal, { deadlineMs: 1000 });
  t.ok(verify('sha256', Buffer.from('fast'), ref.publicKey, ok), 'the signature verifies');
  hsm.signDelayMs = 5000;
  const inFlight = new AbortController();
  const queued = new AbortController();
  const a = signer.sign(0x0403, Buffer.from('a'), inFlight.signal, { deadlineMs: 1000 });
  const b = signer.sign(0x0403, Buffer.from('b'), queued.signal, { deadlineMs: 1000 });
  queued.abort();
  await t.rejects(b, { code: 'ENGINE_ERR_ABORTED' }, 'queued request rejects');
  inFlight.abort();
  await t.rejects(a, { code: 'ENGINE_ERR_ABORTED' }, 'in-flight request rejects');
  t.equal(admission.inFlight, 0, 'slot released');
  t.same(events.map((e) => e.outcome), ['ok', 'ENGINE_ERR_ABORTED', 'ENGINE_ERR_ABORTED'], 'each signature still publishes its outcome');
  await engine.close();
});

t.test("the engine's deadline still applies when the caller's deadline is later than it", async (t) => {
  const hsm = new FakeHsm();
  const backend = new SimBackend({ client: hsm, clusterId: CLUSTER, credentials: creds });
  const engine = new Engine({ backends: { sim: backend }, signTimeoutMs: 50 });
  const made = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'slow' });
  const signer = await engine.signer(made.ref!);
  hsm.signDelayMs = 2000;
  await t.rejects(signer.sign(0x0403, Buffer.from('x'), new AbortController().signal, { deadlineMs: 60_000 }), { code: 'ENGINE_ERR_TIMEOUT', message: /within 50 ms/ });
  await engine.close();
});
