// One HSM's leases and certificate objects: a lease is granted when free or expired with a fencing
// token above every earlier one (also after a restart), and a certificate stored under an older
// token than the newest granted is refused, leaving the stored one in place.
import t from 'tap';
import { randomBytes, webcrypto } from 'node:crypto';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { Hsm, type Session } from '../src/hsm/device/index.js';
import { readSnapshot } from '../src/hsm/device/replication.js';
import { sealJson } from '../src/hsm/device/sealing.js';
import { freshHsm, tempDir, TEST_SCRYPT_COST, type Fixture } from './helpers/hsm-device.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A P-256 key imported into the HSM and a self-signed certificate (DER) for it. */
async function keyWithCertificate(f: Fixture, cu: Session, cn: string): Promise<{ keyId: string; der: Buffer }> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01', name: `CN=${cn}`, notBefore: new Date(), notAfter: new Date(Date.now() + 86_400_000),
    keys: keys as unknown as Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[0]['keys'], signingAlgorithm: alg,
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const pair = await f.hsm.importPrivateKey(cu, { key: pkcs8, template: { label: cn } });
  return { keyId: pair.result.privateKey.keyId, der: Buffer.from(cert.rawData) };
}

t.test('a lease is granted when free, refused to another holder while live, and granted again after expiry with a higher token', async (t) => {
  const f = await freshHsm(t);
  const cu = await f.cu('alice');
  const a = await f.hsm.leaseAcquire(cu, 'shop.example', 'proxy-a', 60_000);
  t.match(a, { granted: true, holder: 'proxy-a', token: 1 });
  const b = await f.hsm.leaseAcquire(cu, 'shop.example', 'proxy-b', 60_000);
  t.match(b, { granted: false, holder: 'proxy-a', token: 1 }, 'held: the answer names the holder');
  t.same(f.hsm.leaseList(cu).map((l) => l.holder), ['proxy-a']);
  // The holder shortens it to 100 ms (a renewal) and stops renewing: it expires.
  await f.hsm.leaseRenew(cu, 'shop.example', 'proxy-a', 1, 100);
  await sleep(250);
  t.same(f.hsm.leaseList(cu), [], 'an expired lease is not listed');
  const b2 = await f.hsm.leaseAcquire(cu, 'shop.example', 'proxy-b', 60_000);
  t.match(b2, { granted: true, holder: 'proxy-b', token: 2 });
  await t.rejects(f.hsm.leaseRenew(cu, 'shop.example', 'proxy-a', 1, 60_000), { code: 'HSM_ERR_LEASE_HELD' }, 'the lapsed holder cannot renew');
  t.equal(await f.hsm.leaseRelease(cu, 'shop.example', 'proxy-a', 1), false, 'nor release the new holder\'s lease');
  t.equal(await f.hsm.leaseRelease(cu, 'shop.example', 'proxy-b', 2), true);
  const c = await f.hsm.leaseAcquire(cu, 'shop.example', 'proxy-c', 60_000);
  t.equal(c.token, 3, 'a released name is granted again with the next token');
  const other = await f.hsm.leaseAcquire(cu, 'other.example', 'proxy-c', 60_000);
  t.equal(other.token, 1, 'tokens count per name');
});

t.test('the fencing token keeps increasing across a restart of the HSM', async (t) => {
  const f = await freshHsm(t);
  const cu = await f.cu('alice');
  for (let i = 0; i < 3; i++) {
    const g = await f.hsm.leaseAcquire(cu, 'restart.example', `p${i}`, 60_000);
    await f.hsm.leaseRelease(cu, 'restart.example', `p${i}`, g.token);
  }
  const held = await f.hsm.leaseAcquire(cu, 'restart.example', 'before', 60_000);
  t.equal(held.token, 4);
  await f.hsm.close();
  const again = await Hsm.open({ ...f.opts, initialPassword: undefined });
  t.teardown(() => again.close());
  const cu2 = await again.login('alice', 'alice-password');
  t.match(again.leaseList(cu2), [{ name: 'restart.example', holder: 'before', token: 4 }], 'a live lease survives the restart');
  t.match(await again.leaseAcquire(cu2, 'restart.example', 'after', 60_000), { granted: false, holder: 'before' });
  await again.leaseRelease(cu2, 'restart.example', 'before', 4);
  t.match(await again.leaseAcquire(cu2, 'restart.example', 'after', 60_000), { granted: true, token: 5 }, 'never a token handed out before');
});

t.test('a certificate stored under an older token than the newest granted is refused and nothing is overwritten', async (t) => {
  const f = await freshHsm(t);
  const cu = await f.cu('alice');
  const first = await keyWithCertificate(f, cu, 'fenced.example');
  const second = await keyWithCertificate(f, cu, 'fenced.example');
  const old = await f.hsm.leaseAcquire(cu, 'fenced.example', 'lapsed', 100);
  await sleep(200);
  const cur = await f.hsm.leaseAcquire(cu, 'fenced.example', 'current', 60_000);
  t.ok(cur.token > old.token);
  const stored = await f.hsm.storeCertificate(cu, { label: 'fenced.example', keyId: second.keyId, chain: [second.der], token: cur.token, note: 'acct-2' });
  t.match(stored, { label: 'fenced.example', keyId: second.keyId, token: cur.token, version: 1, note: 'acct-2' });
  await t.rejects(
    f.hsm.storeCertificate(cu, { label: 'fenced.example', keyId: first.keyId, chain: [first.der], token: old.token }),
    { code: 'HSM_ERR_STALE_LEASE', message: new RegExp(`fencing token ${old.token} is older than token ${cur.token}.*nothing was overwritten`) },
  );
  const read = f.hsm.getCertificate(cu, 'fenced.example');
  t.equal(read.keyId, second.keyId, 'the newer certificate stays');
  t.ok(read.chain[0]!.equals(second.der));
  // Before any lease, a store raises the name's newest token: no later grant goes below it.
  const third = await keyWithCertificate(f, cu, 'unleased.example');
  await f.hsm.storeCertificate(cu, { label: 'unleased.example', keyId: third.keyId, chain: [third.der], token: 7 });
  t.equal((await f.hsm.leaseAcquire(cu, 'unleased.example', 'x', 60_000)).token, 8);
});

t.test('a certificate must certify a key the user may see, and is visible only to who may see that key', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const bob = await f.cu('bob');
  const carol = await f.cu('carol');
  const k = await keyWithCertificate(f, alice, 'owned.example');
  const other = await keyWithCertificate(f, alice, 'owned.example');
  const g = await f.hsm.leaseAcquire(alice, 'owned.example', 'p', 60_000);
  await t.rejects(f.hsm.storeCertificate(alice, { label: 'owned.example', keyId: k.keyId, chain: [other.der], token: g.token }), { code: 'HSM_ERR_INVALID_ARGUMENT', message: /does not certify key/ });
  await t.rejects(f.hsm.storeCertificate(alice, { label: 'owned.example', keyId: k.keyId, chain: [Buffer.from('not a certificate')], token: g.token }), { message: /does not parse/ });
  await t.rejects(f.hsm.storeCertificate(bob, { label: 'owned.example', keyId: k.keyId, chain: [k.der], token: g.token }), { code: 'HSM_ERR_NO_SUCH_KEY' }, 'another CU cannot store for a key it cannot see');
  await f.hsm.storeCertificate(alice, { label: 'owned.example', keyId: k.keyId, chain: [k.der], token: g.token });
  t.throws(() => f.hsm.getCertificate(bob, 'owned.example'), { code: 'HSM_ERR_NO_SUCH_KEY' });
  t.same(f.hsm.listCertificates(bob), []);
  await f.hsm.shareKey(alice, k.keyId, 'bob');
  t.equal(f.hsm.getCertificate(bob, 'owned.example').keyId, k.keyId, 'a sharee of the key reads its certificate');
  t.same(f.hsm.listCertificates(carol), []);
  const carols = await keyWithCertificate(f, carol, 'owned.example');
  const later = await f.hsm.leaseAcquire(carol, 'owned.example', 'q', 60_000);
  await t.rejects(f.hsm.storeCertificate(carol, { label: 'owned.example', keyId: carols.keyId, chain: [carols.der], token: later.token }), {
    code: 'HSM_ERR_PERMISSION_DENIED', message: /belongs to alice's key/,
  }, 'another CU cannot replace it, even under a newer lease');
  t.equal(f.hsm.getCertificate(alice, 'owned.example').keyId, k.keyId);
});

t.test('malformed lease requests get a clear error', async (t) => {
  const f = await freshHsm(t);
  const cu = await f.cu('alice');
  await t.rejects(f.hsm.leaseAcquire(cu, 'has space', 'p', 1000), { code: 'HSM_ERR_INVALID_ARGUMENT', message: /printable ASCII/ });
  await t.rejects(f.hsm.leaseAcquire(cu, 'n', 'p', 5), { message: /ttl/ });
  const g = await f.hsm.leaseAcquire(cu, 'n', 'p', 1000);
  await t.rejects(f.hsm.leaseRenew(cu, 'n', 'p', g.token, 1000, [{ type: 'dns-01', name: 'x', keyAuthorization: 'y' }]), { message: /tls-alpn-01 or http-01/ });
  await t.rejects(f.hsm.leaseRenew(cu, 'n', 'p', g.token, 1000, 'nope'), { message: /list/ });
  await f.hsm.leaseRenew(cu, 'n', 'p', g.token, 1000, [{ type: 'http-01', token: 'tok', keyAuthorization: 'tok.thumb' }]);
  t.same(f.hsm.leaseList(cu)[0]!.challenges, [{ type: 'http-01', token: 'tok', keyAuthorization: 'tok.thumb' }], 'the published challenge is listed beside the lease');
});

t.test('a deleted certificate leaves a tombstone: no copy under an older token comes back', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const bob = await f.cu('bob');
  const k = await keyWithCertificate(f, alice, 'gone.example');
  const first = await f.hsm.leaseAcquire(alice, 'gone.example', 'p', 60_000);
  await f.hsm.storeCertificate(alice, { label: 'gone.example', keyId: k.keyId, chain: [k.der], token: first.token });
  await f.hsm.shareKey(alice, k.keyId, 'bob');
  await t.rejects(f.hsm.deleteCertificate(bob, 'gone.example', first.token), { code: 'HSM_ERR_PERMISSION_DENIED' }, 'a sharee may not delete it');
  await f.hsm.leaseRelease(alice, 'gone.example', 'p', first.token);
  const second = await f.hsm.leaseAcquire(alice, 'gone.example', 'p', 60_000);
  const tomb = await f.hsm.deleteCertificate(alice, 'gone.example', second.token);
  t.match(tomb, { deleted: true, token: second.token, version: 2, chain: [] });
  t.same(f.hsm.listCertificates(alice), [], 'not listed once deleted');
  t.match(f.hsm.getCertificate(alice, 'gone.example'), { deleted: true }, 'read as a tombstone');
  await t.rejects(
    f.hsm.storeCertificate(alice, { label: 'gone.example', keyId: k.keyId, chain: [k.der], token: first.token }),
    { code: 'HSM_ERR_STALE_LEASE' }, 'the copy stored under the older token does not come back',
  );
  await t.rejects(f.hsm.deleteCertificate(alice, 'gone.example', second.token), { code: 'HSM_ERR_NO_SUCH_KEY' }, 'deleting twice');
  await f.hsm.leaseRelease(alice, 'gone.example', 'p', second.token);
  const third = await f.hsm.leaseAcquire(alice, 'gone.example', 'q', 60_000);
  t.ok(third.token > second.token, 'the next lease is above the deletion\'s token');
  const back = await f.hsm.storeCertificate(alice, { label: 'gone.example', keyId: k.keyId, chain: [k.der], token: third.token });
  t.match(back, { version: 3, token: third.token }, 'a newer lease stores it again, one version up');
  t.notOk(back.deleted);
});

t.test('a snapshot (a backup, a clone) carries certificate objects and tombstones; no older copy comes back after the restore', async (t) => {
  const clusterKey = randomBytes(32);
  const f = await freshHsm(t, { clusterKey });
  const alice = await f.cu('alice');
  const kept = await keyWithCertificate(f, alice, 'kept.example');
  const gone = await keyWithCertificate(f, alice, 'gone.example');
  const g1 = await f.hsm.leaseAcquire(alice, 'kept.example', 'p', 60_000);
  await f.hsm.storeCertificate(alice, { label: 'kept.example', keyId: kept.keyId, chain: [kept.der], token: g1.token, note: 'acme order 1' });
  const g2 = await f.hsm.leaseAcquire(alice, 'gone.example', 'p', 60_000);
  await f.hsm.storeCertificate(alice, { label: 'gone.example', keyId: gone.keyId, chain: [gone.der], token: g2.token });
  await f.hsm.leaseRelease(alice, 'gone.example', 'p', g2.token);
  const g3 = await f.hsm.leaseAcquire(alice, 'gone.example', 'p', 60_000);
  await f.hsm.deleteCertificate(alice, 'gone.example', g3.token);

  const restored = await Hsm.restore(f.hsm.snapshot(f.co), { dir: await tempDir(t), hsmId: 'hsm-restored', clusterKey, scryptCost: TEST_SCRYPT_COST });
  t.teardown(() => restored.close());
  const a2 = await restored.login('alice', 'alice-password');
  t.same(restored.listCertificates(a2), ['kept.example'], 'the live certificate is listed on the restored HSM');
  const c = restored.getCertificate(a2, 'kept.example');
  t.ok(c.chain[0]!.equals(kept.der), 'with its DER');
  t.match(c, { keyId: kept.keyId, token: g1.token, note: 'acme order 1', version: 1 });
  t.match(restored.getCertificate(a2, 'gone.example'), { deleted: true }, 'the deletion is restored as a tombstone');
  await t.rejects(
    restored.storeCertificate(a2, { label: 'gone.example', keyId: gone.keyId, chain: [gone.der], token: g2.token }),
    { code: 'HSM_ERR_STALE_LEASE' }, 'a copy under an older token than the tombstone\'s is refused there too',
  );
  const next = await restored.leaseAcquire(a2, 'kept.example', 'q', 60_000);
  t.ok(next.token > g1.token, `a lease on the restored HSM (token ${next.token}) is above the stored certificate's (${g1.token})`);
  const renewed = await restored.storeCertificate(a2, { label: 'kept.example', keyId: kept.keyId, chain: [kept.der], token: next.token });
  t.match(renewed, { version: 2 }, 'so its holder can replace the certificate');
  t.same(restored.stateDigest(), f.hsm.stateDigest(), 'users and keys as on the source');
});

t.test('a snapshot whose certificate objects are malformed is refused whole, with a clear error', async (t) => {
  const clusterKey = randomBytes(32);
  const f = await freshHsm(t, { clusterKey });
  const alice = await f.cu('alice');
  const k = await keyWithCertificate(f, alice, 'ok.example');
  const g = await f.hsm.leaseAcquire(alice, 'ok.example', 'p', 60_000);
  await f.hsm.storeCertificate(alice, { label: 'ok.example', keyId: k.keyId, chain: [k.der], token: g.token });
  const good = readSnapshot(clusterKey, f.hsm.snapshot(f.co));
  const [rec] = good.certificates!;
  const cases: Array<[string, unknown, RegExp]> = [
    ['not a list', { bad: true }, /malformed certificate object: not a list/],
    ['a live certificate without a chain', [{ ...rec, chain: [] }], /ok\.example: a live certificate without a chain/],
    ['a token that is not an integer', [{ ...rec, token: 'x' }], /token and version must be integers/],
    ['a chain of numbers', [{ ...rec, chain: [1] }], /not a list of base64 DER/],
  ];
  for (const [what, certificates, message] of cases) {
    const dir = await tempDir(t);
    const forged = sealJson(clusterKey, 'hsmproxy snapshot v1', { ...good, certificates });
    await t.rejects(Hsm.restore(forged, { dir, hsmId: 'x', clusterKey, scryptCost: TEST_SCRYPT_COST }), { code: 'HSM_ERR_INVALID_ARGUMENT', message }, what);
    const again = await Hsm.restore(f.hsm.snapshot(f.co), { dir, hsmId: 'x', clusterKey, scryptCost: TEST_SCRYPT_COST });
    t.same(again.listCertificates(await again.login('alice', 'alice-password')), ['ok.example'], `nothing was written: the directory takes a good snapshot after ${what}`);
    await again.close();
  }
});
