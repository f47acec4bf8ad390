// Replication and backup hooks of the simulated HSM: masked key objects and user tables move
// between HSMs of one cluster (never in the clear), snapshots restore onto a new HSM, and the
// state digest tells whether two HSMs are in sync.
import t from 'tap';
import { createPublicKey, generateKeyPairSync, randomBytes, verify } from 'node:crypto';
import { Hsm, NoSuchKeyError, PermissionDeniedError } from '../src/hsm/device/index.js';
import { CO_PASSWORD, freshHsm, PRECO_PASSWORD, TEST_SCRYPT_COST, tempDir } from './helpers/hsm-device.js';

const MSG = Buffer.from('replicated');
const CLUSTER = randomBytes(32);

t.test('a masked key installed on a second HSM keeps its key id, owner and sharing, and signs the same', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER, hsmId: 'hsm-a' });
  const b = await freshHsm(t, { clusterKey: CLUSTER, hsmId: 'hsm-b' });
  const alice = await a.cu('alice');
  await a.cu('bob');
  const kp = await a.hsm.generateKeyPair(alice, 'ec:p256', { label: 'web' });
  const id = kp.result.privateKey.keyId;
  await a.hsm.shareKey(alice, id, 'bob');

  await b.hsm.importUsers(b.co, a.hsm.exportUsers(a.co));
  const installed = await b.hsm.importMasked(b.co, a.hsm.exportMasked(a.co, id));
  await b.hsm.importMasked(b.co, a.hsm.exportMasked(a.co, kp.result.publicKey.keyId));
  t.equal(installed.keyId, id);
  t.equal(installed.owner, 'alice');
  t.same(installed.sharedWith, ['bob']);

  const bob = await b.hsm.login('bob', 'bob-password');
  const sig = await b.hsm.sign(bob, { keyId: id, mechanism: 'ecdsa-sha256', data: MSG });
  t.ok(verify('sha256', MSG, createPublicKey(a.hsm.exportPublicKey(alice, id).pem), sig.result), "HSM B's signature verifies under HSM A's public key");
  t.equal(b.hsm.stateDigest().digest, a.hsm.stateDigest().digest, 'the two HSMs are in sync');
});

t.test('the state digest differs while an HSM lacks a key, and a version counter moves on each change', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER });
  const b = await freshHsm(t, { clusterKey: CLUSTER });
  const alice = await a.cu('alice');
  await b.hsm.importUsers(b.co, a.hsm.exportUsers(a.co));
  t.equal(a.hsm.stateDigest().digest, b.hsm.stateDigest().digest);
  const v = a.hsm.stateDigest().version;
  const k = await a.hsm.generateKey(alice, 'aes:256', { label: 'k' });
  t.ok(a.hsm.stateDigest().version > v);
  t.not(a.hsm.stateDigest().digest, b.hsm.stateDigest().digest);
  t.same(a.hsm.listTokenKeyIds(a.co), [k.result.keyId]);
  t.same(b.hsm.listTokenKeyIds(b.co), []);
});

t.test('masked objects never carry key material in the clear', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER });
  const alice = await a.cu('alice');
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const scalar = Buffer.from(privateKey.export({ format: 'jwk' }).d!, 'base64url');
  const kp = await a.hsm.importPrivateKey(alice, { key: privateKey.export({ format: 'pem', type: 'sec1' }).toString(), template: { label: 'secret-label' } });
  const masked = a.hsm.exportMasked(alice, kp.result.privateKey.keyId);
  const der = privateKey.export({ format: 'der', type: 'pkcs8' });
  t.notOk(masked.includes(scalar) || masked.includes(der) || masked.includes(Buffer.from(der.toString('base64'))));
  t.notOk(masked.includes(Buffer.from('secret-label')));
  const snap = a.hsm.snapshot(a.co);
  t.notOk(snap.includes(Buffer.from(der.toString('base64'))) || snap.includes(Buffer.from('alice')));
});

t.test('an HSM of another cluster cannot install a masked key', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER });
  const other = await freshHsm(t, { clusterKey: randomBytes(32) });
  const alice = await a.cu('alice');
  const k = await a.hsm.generateKey(alice, 'aes:256', { label: 'k' });
  await t.rejects(other.hsm.importMasked(other.co, a.hsm.exportMasked(a.co, k.result.keyId)), { code: 'HSM_ERR_DECRYPT' });
});

t.test('a tampered masked key is refused', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER });
  const alice = await a.cu('alice');
  const k = await a.hsm.generateKey(alice, 'aes:256', { label: 'k' });
  const masked = a.hsm.exportMasked(alice, k.result.keyId);
  masked[masked.length - 3] ^= 0x40;
  await t.rejects(a.hsm.importMasked(a.co, masked), { code: 'HSM_ERR_DECRYPT' });
});

t.test('session keys are never exported masked', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER });
  const alice = await a.cu('alice');
  const k = await a.hsm.generateKey(alice, 'aes:256', { label: 'k', token: false });
  t.throws(() => a.hsm.exportMasked(alice, k.result.keyId), NoSuchKeyError);
});

t.test('a CU other than the owner may not export a key masked', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER });
  const alice = await a.cu('alice');
  const bob = await a.cu('bob');
  const k = await a.hsm.generateKey(alice, 'aes:256', { label: 'k' });
  await a.hsm.shareKey(alice, k.result.keyId, 'bob');
  t.throws(() => a.hsm.exportMasked(bob, k.result.keyId), PermissionDeniedError);
  t.throws(() => a.hsm.exportUsers(bob), PermissionDeniedError);
});

t.test('a snapshot restores onto a new HSM with the same users and keys', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER });
  const alice = await a.cu('alice');
  const kp = await a.hsm.generateKeyPair(alice, 'rsa:2048', { label: 'web' });
  const snap = a.hsm.snapshot(a.co);
  const dir = await tempDir(t);
  const b = await Hsm.restore(snap, { dir, hsmId: 'hsm-restored', clusterKey: CLUSTER, scryptCost: TEST_SCRYPT_COST });
  t.teardown(() => b.close());
  t.equal(b.stateDigest().digest, a.hsm.stateDigest().digest);
  const alice2 = await b.login('alice', 'alice-password');
  const sig = await b.sign(alice2, { keyId: kp.result.privateKey.keyId, mechanism: 'rsa-pss-sha256', data: MSG });
  t.equal((await a.hsm.verify(alice, { keyId: kp.result.publicKey.keyId, mechanism: 'rsa-pss-sha256', data: MSG, signature: sig.result })).result, true);
  await b.login('admin', CO_PASSWORD);
});

t.test('restoring needs the right cluster key and an empty directory', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER });
  const snap = a.hsm.snapshot(a.co);
  await t.rejects(Hsm.restore(snap, { dir: await tempDir(t), hsmId: 'x', clusterKey: randomBytes(32) }), { code: 'HSM_ERR_DECRYPT' });
  const used = await freshHsm(t, { clusterKey: CLUSTER });
  await used.hsm.close();
  await t.rejects(Hsm.restore(snap, { dir: used.dir, hsmId: 'x', clusterKey: CLUSTER }), { code: 'HSM_ERR_INVALID_ARGUMENT', message: /empty directory/ });
});

t.test('a PRECO cannot replicate anything', async (t) => {
  const dir = await tempDir(t);
  const hsm = await Hsm.open({ dir, hsmId: 'h', initialPassword: PRECO_PASSWORD, scryptCost: TEST_SCRYPT_COST });
  t.teardown(() => hsm.close());
  const preco = await hsm.login('admin', PRECO_PASSWORD);
  t.throws(() => hsm.snapshot(preco), { code: 'HSM_ERR_MUST_CHANGE_PASSWORD' });
});

t.test('importing a user table that deleted a user ends its sessions', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER });
  const b = await freshHsm(t, { clusterKey: CLUSTER });
  const carol = await b.cu('carol');
  await a.hsm.importUsers(a.co, b.hsm.exportUsers(b.co));
  // A table without carol proves nothing (it may be older); one that records her deletion does.
  await a.hsm.deleteUser(a.co, 'carol');
  await b.hsm.importUsers(b.co, a.hsm.exportUsers(a.co));
  t.throws(() => b.hsm.listKeys(carol), { code: 'HSM_ERR_NOT_LOGGED_IN' });
  await t.rejects(b.hsm.login('carol', 'carol-password'), { code: 'HSM_ERR_BAD_CREDENTIALS' });
  t.same(b.hsm.listUsers(b.co).map((u) => u.name), ['admin'], 'the CO session of a user still present carries on');
});

t.test('a password changed with the same salt nonce on two clones leaves them in sync; different nonces differ', async (t) => {
  const a = await freshHsm(t, { clusterKey: CLUSTER, hsmId: 'hsm-a' });
  const b = await freshHsm(t, { clusterKey: CLUSTER, hsmId: 'hsm-b' });
  await a.cu('alice');
  await b.hsm.importUsers(b.co, a.hsm.exportUsers(a.co));
  const nonce = randomBytes(16);
  for (const h of [a, b]) await h.hsm.changePassword(await h.hsm.login('alice', 'alice-password'), 'alice-new-pw', nonce);
  t.equal(a.hsm.stateDigest().digest, b.hsm.stateDigest().digest, 'the clones store the same hash');
  t.equal((await b.hsm.login('alice', 'alice-new-pw')).user, 'alice', 'and the new password works');

  await a.hsm.changePassword(await a.hsm.login('alice', 'alice-new-pw'), 'alice-newer-pw', randomBytes(16));
  await b.hsm.changePassword(await b.hsm.login('alice', 'alice-new-pw'), 'alice-newer-pw', randomBytes(16));
  t.not(a.hsm.stateDigest().digest, b.hsm.stateDigest().digest, 'different nonces give different salts');
  await t.rejects(a.hsm.changePassword(await a.hsm.login('alice', 'alice-newer-pw'), 'alice-newest', Buffer.alloc(4)), { code: 'HSM_ERR_INVALID_ARGUMENT', message: /16 to 64 random bytes/ });
});
