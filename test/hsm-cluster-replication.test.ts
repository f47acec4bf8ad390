// Three HSMs behind one ClusterClient: token keys and users created through the client exist on
// every HSM (each addressed directly), replication sends only masked key objects (checked on
// the frames crossing the wire), and load spreads across the HSMs.
import t from 'tap';
import { constants, createPublicKey, generateKeyPairSync, privateDecrypt, verify } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TLSSocket } from 'node:tls';
import { connectCluster, linkFactory, membersOf } from '../src/hsm/cluster/membership.js';
import { readManifest } from '../src/hsm/cluster/manifest.js';
import { startEmbeddedCluster, type EmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { FrameDecoder, Op, DEFAULT_MAX_RESPONSE_FRAME } from '../src/hsm/protocol/index.js';
import type { HsmConnection } from '../src/hsm/client/connection.js';

let cluster: EmbeddedCluster;
let dir: string;

t.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hsmproxy-repl-'));
  cluster = await startEmbeddedCluster({ dir, hsms: 3, scryptCost: 1024 });
});
t.teardown(async () => {
  await cluster?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function eachHsm<T>(user: { user: string; password: string }, fn: (c: HsmConnection, id: string) => Promise<T>): Promise<T[]> {
  const m = await readManifest(dir);
  const factory = await linkFactory(dir, m);
  return Promise.all(membersOf(m).map(async (a) => {
    const c = await factory(a, user);
    try {
      return await fn(c, a.id);
    } finally {
      await c.close();
    }
  }));
}

t.test('a key created through the client is usable on each HSM, addressed directly', async (t) => {
  const pair = await cluster.client.generateKeyPair('rsa:2048', { label: 'everywhere' });
  const pub = createPublicKey({ key: (await cluster.client.exportPublicKey(pair.publicKey.keyId)).der, format: 'der', type: 'spki' });
  const data = Buffer.from('signed on every HSM');
  const results = await eachHsm(cluster.credentials.cu, async (c, id) => {
    const sig = await c.sign({ keyId: pair.privateKey.keyId, mechanism: 'rsa-pss-sha256', data });
    return { id, ok: verify('sha256', data, { key: pub, padding: 6, saltLength: 32 }, sig) };
  });
  t.same(results.map((r) => r.id), ['hsm-1', 'hsm-2', 'hsm-3']);
  t.ok(results.every((r) => r.ok), 'each HSM signs with the replicated key and the signature verifies');
});

t.test('a user created through the client can log in on each HSM', async (t) => {
  const co = await connectCluster(dir, { credentials: cluster.credentials.co, watch: false });
  t.teardown(() => co.close());
  await co.createUser('alice', 'CU', 'alice-password-1');
  const logins = await eachHsm({ user: 'alice', password: 'alice-password-1' }, async (c) => c.user?.role);
  t.same(logins, ['CU', 'CU', 'CU']);
  await co.deleteUser('alice');
  const after = await eachHsm(cluster.credentials.co, async (c) => (await c.listUsers()).some((u) => u.name === 'alice'));
  t.same(after, [false, false, false], 'and a deleted user is gone from each HSM');
});

t.test('a token key deleted through the client is gone from each HSM', async (t) => {
  const k = await cluster.client.generateKey('aes:256', { label: 'short-lived' });
  await cluster.client.deleteKey(k.keyId);
  const found = await eachHsm(cluster.credentials.cu, async (c) => (await c.findKeys({ label: 'short-lived' })).length);
  t.same(found, [0, 0, 0]);
});

t.test('every HSM reports the same state digest after replication', async (t) => {
  const digests = await eachHsm(cluster.credentials.cu, async (c) => (await c.stateDigest()).digest);
  t.equal(new Set(digests).size, 1);
});

t.test('replication never sends key material in the clear', async (t) => {
  // Record every frame the client's mTLS sockets write and receive (plaintext, i.e. the frame layer).
  const streams = new Map<TLSSocket, { out: Buffer[]; in: Buffer[] }>();
  const rec = (s: TLSSocket): { out: Buffer[]; in: Buffer[] } => {
    let r = streams.get(s);
    if (!r) streams.set(s, (r = { out: [], in: [] }));
    return r;
  };
  const origWrite = TLSSocket.prototype.write;
  const origEmit = TLSSocket.prototype.emit;
  // Patching prototypes needs loose signatures; both are restored in teardown.
  TLSSocket.prototype.write = function (this: TLSSocket, chunk: unknown, ...rest: unknown[]) {
    if (Buffer.isBuffer(chunk)) rec(this).out.push(Buffer.from(chunk));
    return (origWrite as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
  } as typeof origWrite;
  TLSSocket.prototype.emit = function (this: TLSSocket, event: string | symbol, ...args: unknown[]) {
    if (event === 'data' && Buffer.isBuffer(args[0])) rec(this).in.push(Buffer.from(args[0]));
    return (origEmit as (...a: unknown[]) => boolean).call(this, event, ...args);
  } as typeof origEmit;
  const restore = (): void => {
    TLSSocket.prototype.write = origWrite;
    TLSSocket.prototype.emit = origEmit;
  };
  t.teardown(restore);

  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
  const scalar = Buffer.from(privateKey.export({ format: 'jwk' }).d as string, 'base64url');
  const imported = await cluster.client.importKey({ key: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, template: { label: 'migrated' } });
  const data = Buffer.from('still usable');
  await cluster.client.sign({ keyId: imported.privateKey.keyId, mechanism: 'ecdsa-sha256', data });
  restore();

  const needles = [pkcs8, scalar, Buffer.from(scalar.toString('hex')), Buffer.from(scalar.toString('base64')), Buffer.from(scalar.toString('base64url')), Buffer.from(pkcs8.toString('base64').slice(0, 60))];
  let frames = 0;
  let maskedImports = 0;
  let leaks = 0;
  let detectorFired = false;
  for (const r of streams.values()) {
    const reqDec = new FrameDecoder(DEFAULT_MAX_RESPONSE_FRAME);
    const resDec = new FrameDecoder(DEFAULT_MAX_RESPONSE_FRAME);
    const importIds = new Set<number>();
    for (const f of reqDec.push(Buffer.concat(r.out))) {
      frames++;
      // The caller's own import request necessarily carries the key it imports: that is the one exception.
      if (f.code === Op.IMPORT_KEY) {
        importIds.add(f.requestId);
        detectorFired ||= needles.some((n) => f.body.includes(n));
        continue;
      }
      if (f.code === Op.IMPORT_MASKED) maskedImports++;
      if (needles.some((n) => f.body.includes(n))) leaks++;
    }
    for (const f of resDec.push(Buffer.concat(r.in))) {
      frames++;
      if (!importIds.has(f.requestId) && needles.some((n) => f.body.includes(n))) leaks++;
    }
  }
  t.ok(frames > 0, `captured ${frames} frames`);
  t.ok(maskedImports >= 4, `the key pair reached the 2 other HSMs as masked objects (${maskedImports} masked imports)`);
  t.ok(detectorFired, 'the detector does find the key where it is sent on purpose (the import request)');
  t.equal(leaks, 0, 'no frame but the import request carries the private key or its scalar');
});

t.test('a key generated inside an HSM reaches the others without its bytes ever crossing the wire', async (t) => {
  // Capture the frame layer per socket while the key is generated and replicated (as above).
  const streams = new Map<TLSSocket, { out: Buffer[]; in: Buffer[] }>();
  const rec = (sock: TLSSocket): { out: Buffer[]; in: Buffer[] } => {
    let r = streams.get(sock);
    if (!r) streams.set(sock, (r = { out: [], in: [] }));
    return r;
  };
  const origWrite = TLSSocket.prototype.write;
  const origEmit = TLSSocket.prototype.emit;
  // Patching prototypes needs loose signatures; both are restored before the key is read back.
  TLSSocket.prototype.write = function (this: TLSSocket, chunk: unknown, ...rest: unknown[]) {
    if (Buffer.isBuffer(chunk)) rec(this).out.push(Buffer.from(chunk));
    return (origWrite as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
  } as typeof origWrite;
  TLSSocket.prototype.emit = function (this: TLSSocket, event: string | symbol, ...args: unknown[]) {
    if (event === 'data' && Buffer.isBuffer(args[0])) rec(this).in.push(Buffer.from(args[0]));
    return (origEmit as (...a: unknown[]) => boolean).call(this, event, ...args);
  } as typeof origEmit;
  const restore = (): void => {
    TLSSocket.prototype.write = origWrite;
    TLSSocket.prototype.emit = origEmit;
  };
  t.teardown(restore);
  // Extractable only so that the test can learn its bytes afterwards; replication does not depend on it.
  const key = await cluster.client.generateKey('aes:256', { label: 'generated-inside', extractable: true });
  restore();

  // Learn the key: wrap it (RSA-OAEP) under a public key whose private half only this test holds.
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kek = await cluster.client.importKey({ key: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, template: { label: 'test-kek' } });
  const wrapped = await cluster.client.wrap({ wrappingKeyId: kek.publicKey.keyId, keyId: key.keyId, mechanism: 'rsa-oaep-wrap' });
  const bytes = privateDecrypt({ key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, wrapped);
  t.equal(bytes.length, 32, 'the test knows the 32 key bytes');

  const needles = [bytes, Buffer.from(bytes.toString('hex')), Buffer.from(bytes.toString('base64')), Buffer.from(bytes.toString('base64url'))];
  let frames = 0;
  let maskedImports = 0;
  let leaks = 0;
  for (const r of streams.values()) {
    const requests = new FrameDecoder(DEFAULT_MAX_RESPONSE_FRAME).push(Buffer.concat(r.out));
    const responses = new FrameDecoder(DEFAULT_MAX_RESPONSE_FRAME).push(Buffer.concat(r.in));
    maskedImports += requests.filter((f) => f.code === Op.IMPORT_MASKED).length;
    for (const f of [...requests, ...responses]) {
      frames++;
      if (needles.some((n) => f.body.includes(n))) leaks++;
    }
  }
  t.ok(maskedImports >= 2, `the key reached the 2 other HSMs as masked objects (${maskedImports} masked imports in ${frames} frames)`);
  t.equal(leaks, 0, 'no frame, sent or received, carries the key bytes in any encoding');
});

t.test('load spreads over 3 healthy HSMs', async (t) => {
  const pair = await cluster.client.generateKeyPair('ec:p256', { label: 'spread' });
  const byHsm = new Map<string, number>();
  const onRequest = (m: unknown): void => {
    const ev = m as { op: string; hsm: string; outcome: string };
    if (ev.op === 'sign' && ev.outcome === 'ok') byHsm.set(ev.hsm, (byHsm.get(ev.hsm) ?? 0) + 1);
  };
  subscribe('hsmproxy:hsm:request', onRequest);
  t.teardown(() => unsubscribe('hsmproxy:hsm:request', onRequest));
  const total = 900;
  let next = 0;
  const data = Buffer.from('spread me');
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < total) {
      next++;
      await cluster.client.sign({ keyId: pair.privateKey.keyId, mechanism: 'ecdsa-sha256', data });
    }
  }));
  const counts = ['hsm-1', 'hsm-2', 'hsm-3'].map((h) => byHsm.get(h) ?? 0);
  t.equal(counts.reduce((a, b) => a + b, 0), total, 'every sign was served once');
  for (const [i, c] of counts.entries()) t.ok(c >= (total / 3) * 0.4, `hsm-${i + 1} served a fair share: ${c} of ${total} (fair: ${total / 3})`);
});

t.test('the client publishes per-HSM state with key occupancy', async (t) => {
  const seen: Array<{ hsm: string; up: boolean; keysMax?: number }> = [];
  const onState = (m: unknown): void => { seen.push(m as { hsm: string; up: boolean; keysMax?: number }); };
  subscribe('hsmproxy:hsm:state', onState);
  t.teardown(() => unsubscribe('hsmproxy:hsm:state', onState));
  const node = cluster.client.node('hsm-2');
  await node?.healthCheck();
  const ev = seen.find((e) => e.hsm === 'hsm-2');
  t.ok(ev?.up, 'hsm-2 is reported up');
  t.equal(ev?.keysMax, 3500, 'with its key limit');
  t.same(cluster.client.stats().map((s) => s.inFlight), [0, 0, 0], 'nothing in flight once idle');
});
