// The HSM's signing threads (hsm/device/signing-threads.ts): a burst of signatures is shared between the
// main thread and a worker thread of the same process, every signature verifies whichever thread
// made it, a few at a time are made on the spot, a bad job fails alone, and closing the pool
// with batches out still answers every request.
import t from 'tap';
import { constants, createHash, createPublicKey, generateKeyPairSync, verify as nodeVerify } from 'node:crypto';
import { SigningThreads, SigningThreadError } from '../src/hsm/device/signing-threads.js';
import { signPlan } from '../src/hsm/device/mechanisms.js';
import type { StoredKey } from '../src/hsm/device/objects.js';
import { freshHsm } from './helpers/hsm-device.js';

const MSG = Buffer.from('ClientHello..Certificate transcript stand-in, 64 spaces and a context string');

t.test('a burst of signatures is shared with a worker thread and every one verifies', async (t) => {
  const f = await freshHsm(t, { signWorkers: 1 });
  const alice = await f.cu('alice');
  const ec = (await f.hsm.generateKeyPair(alice, 'ec:p256', { label: 'ec' })).result.privateKey.keyId;
  const rsa = (await f.hsm.generateKeyPair(alice, 'rsa:2048', { label: 'rsa' })).result.privateKey.keyId;
  const ecPub = createPublicKey(f.hsm.exportPublicKey(alice, ec).pem);
  const rsaPub = createPublicKey(f.hsm.exportPublicKey(alice, rsa).pem);
  await f.hsm.warmSigningThreads();
  t.equal(f.hsm.signingStats.started, 1, 'one worker started');

  const digest = createHash('sha256').update(MSG).digest();
  const asks = [
    ...Array.from({ length: 48 }, () => ({ kind: 'ec-der', p: f.hsm.sign(alice, { keyId: ec, mechanism: 'ecdsa-sha256', data: MSG }) })),
    ...Array.from({ length: 8 }, () => ({ kind: 'ec-raw', p: f.hsm.sign(alice, { keyId: ec, mechanism: 'ecdsa-sha256', data: MSG, format: 'raw' }) })),
    ...Array.from({ length: 8 }, () => ({ kind: 'ec-digest', p: f.hsm.sign(alice, { keyId: ec, mechanism: 'ecdsa-sha256', data: digest, prehashed: true }) })),
    ...Array.from({ length: 8 }, () => ({ kind: 'rsa-pss', p: f.hsm.sign(alice, { keyId: rsa, mechanism: 'rsa-pss-sha256', data: MSG }) })),
    ...Array.from({ length: 8 }, () => ({ kind: 'rsa-pkcs1', p: f.hsm.sign(alice, { keyId: rsa, mechanism: 'rsa-pkcs1-sha256', data: MSG }) })),
  ];
  const sigs = await Promise.all(asks.map((a) => a.p));
  let bad = 0;
  asks.forEach((a, i) => {
    const sig = sigs[i]!.result;
    const ok = a.kind === 'ec-der' || a.kind === 'ec-digest'
      ? nodeVerify('sha256', MSG, ecPub, sig)
      : a.kind === 'ec-raw'
        ? sig.length === 64 && nodeVerify('sha256', MSG, { key: ecPub, dsaEncoding: 'ieee-p1363' }, sig)
        : a.kind === 'rsa-pss'
          ? nodeVerify('sha256', MSG, { key: rsaPub, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, sig)
          : nodeVerify('sha256', MSG, rsaPub, sig);
    if (!ok) bad++;
  });
  t.equal(bad, 0, `all ${asks.length} signatures verify`);
  const s = f.hsm.signingStats;
  t.ok(s.workerSigns > 0, `the worker made some (${s.workerSigns}) in ${s.batches} batches`);
  t.ok(s.mainSigns > 0, `the main thread made the others (${s.mainSigns})`);
  t.equal(s.mainSigns + s.workerSigns, asks.length, 'each request was signed once');
  t.equal(s.died, 0, 'no worker died');

  // At low load each signature is made where it was asked for: no hop to a thread for a few.
  const before = f.hsm.signingStats;
  const few = await Promise.all(Array.from({ length: 8 }, () => f.hsm.sign(alice, { keyId: ec, mechanism: 'ecdsa-sha256', data: MSG })));
  t.ok(few.every((s) => nodeVerify('sha256', MSG, ecPub, s.result)), 'a few signatures at once verify');
  t.equal(f.hsm.signingStats.mainSigns, before.mainSigns + 8, 'a few at once are made on the main thread');
  t.equal(f.hsm.signingStats.workerSigns, before.workerSigns, 'and not sent to the worker');
});

t.test('with signWorkers 0 every signature is made on the main thread', async (t) => {
  const f = await freshHsm(t, { signWorkers: 0 });
  const alice = await f.cu('alice');
  const ec = (await f.hsm.generateKeyPair(alice, 'ec:p256', { label: 'ec' })).result.privateKey.keyId;
  const pub = createPublicKey(f.hsm.exportPublicKey(alice, ec).pem);
  const sigs = await Promise.all(Array.from({ length: 16 }, () => f.hsm.sign(alice, { keyId: ec, mechanism: 'ecdsa-sha256', data: MSG })));
  t.ok(sigs.every((s) => nodeVerify('sha256', MSG, pub, s.result)), 'all verify');
  t.same(f.hsm.signingStats, { mainSigns: 16, workerSigns: 0, batches: 0, started: 0, died: 0 }, 'no worker was started');
  await t.rejects(freshHsm(t, { signWorkers: -1 }), { code: 'HSM_ERR_INVALID_ARGUMENT' }, 'a negative count is refused');
});

// A private key wrapped as the device stores it, for the pool's own tests.
function ecKey(): { key: StoredKey; pub: ReturnType<typeof createPublicKey> } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const key = { attrs: { keyId: 'k', type: 'ec', class: 'private', size: 256 }, keyObject: privateKey } as unknown as StoredKey;
  return { key, pub: publicKey };
}

t.test('a job the worker cannot sign fails alone, with a clear error', async (t) => {
  const pool = new SigningThreads({ workers: 1, chunk: 4 });
  t.teardown(() => pool.close());
  await pool.warm();
  const { key, pub } = ecKey();
  const good = signPlan(key, 'ecdsa-sha256', MSG)!;
  // A public key where a private one belongs: OpenSSL refuses it at sign time, on whichever thread
  // the job lands (the device never builds such a job; this is the pool's own failure path).
  const asks = Array.from({ length: 16 }, (_, i) => pool.sign(i === 9 ? pub : key.keyObject, good, MSG));
  const results = await Promise.allSettled(asks);
  const rejected = results.filter((r) => r.status === 'rejected');
  t.equal(rejected.length, 1, 'only the bad job failed');
  const err = (rejected[0] as PromiseRejectedResult).reason as Error & { code?: string };
  t.ok(err instanceof SigningThreadError ? err.code === 'HSM_ERR_INTERNAL' : typeof err.message === 'string', `a clear error: ${err.message}`);
  t.match(err.message, /key|private|operation/i, 'naming what was wrong');
  const ok = results.filter((r): r is PromiseFulfilledResult<Buffer> => r.status === 'fulfilled');
  t.ok(ok.every((r) => nodeVerify('sha256', MSG, pub, r.value)), 'the other 15 verify');
  t.equal(pool.stats.died, 0, 'the worker lives on');
});

t.test('closing the pool with batches out still answers every request', async (t) => {
  const pool = new SigningThreads({ workers: 1, chunk: 8 });
  await pool.warm();
  const { key, pub } = ecKey();
  const plan = signPlan(key, 'ecdsa-sha256', MSG)!;
  const asks = Array.from({ length: 40 }, () => pool.sign(key.keyObject, plan, MSG));
  // Let the batch be dispatched (the worker takes its chunks), then close before it answers.
  await Promise.resolve();
  const closing = pool.close();
  const sigs = await Promise.all(asks);
  await closing;
  t.ok(sigs.every((s) => nodeVerify('sha256', MSG, pub, s)), 'all 40 verify');
  t.equal(pool.stats.mainSigns + pool.stats.workerSigns, 40, 'each was signed once');
  const after = await pool.sign(key.keyObject, plan, MSG);
  t.ok(nodeVerify('sha256', MSG, pub, after), 'a closed pool signs on the main thread');
});
