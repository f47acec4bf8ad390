// Quorum on one simulated HSM, the parts a cluster test cannot reach cheaply: tokens, approvals
// and M survive a restart; registration needs proof of the private key and refuses other key
// kinds; refusals are in the audit log, which still verifies; a password change keeps the
// officer's quorum key; a snapshot restores the M values.
import t, { type Test } from 'tap';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { generateQuorumKey, quorumRegistration, signQuorumToken } from '../src/hsm/client/quorum.js';
import { Hsm, readAuditKey, verifyAuditLog, type HsmOpenOptions, type Session } from '../src/hsm/device/index.js';
import { freshHsm, tempDir, type Fixture } from './helpers/hsm-device.js';

const adminKey = generateQuorumKey('p256');
const o2Key = generateQuorumKey('rsa');

// An HSM with two officers (admin, officer2) whose quorum keys are registered.
async function twoOfficers(t: Test, extra: Partial<HsmOpenOptions> = {}): Promise<Fixture & { o2: Session }> {
  const f = await freshHsm(t, extra);
  await f.hsm.createUser(f.co, 'officer2', 'CO', 'officer2-password');
  const o2 = await f.hsm.login('officer2', 'officer2-password');
  const a = quorumRegistration('admin', adminKey.privateKeyPem);
  await f.hsm.registerQuorumKey(f.co, a.publicKey, a.proof);
  const b = quorumRegistration('officer2', o2Key.privateKeyPem);
  await f.hsm.registerQuorumKey(o2, b.publicKey, b.proof);
  return { ...f, o2 };
}

t.test('M, a token and its approval survive close and reopen', async (t) => {
  const f = await twoOfficers(t);
  await f.hsm.setQuorumM(f.co, 'user', 2);
  const tok = await f.hsm.getQuorumToken(f.co, 'user');
  await f.hsm.approveQuorumToken(f.co, tok.id, 'admin', signQuorumToken(tok.text, adminKey.privateKeyPem));
  await f.hsm.close();
  const again = await Hsm.open({ ...f.opts, initialPassword: undefined });
  t.teardown(() => again.close());
  const co = await again.login('admin', 'officer-pw1');
  t.same(again.quorumStatus(co).m, { user: 2, key: 1, quorum: 1 });
  const after = again.quorumTokenStatus(co, tok.id);
  t.same([after.approvals, after.state, after.text], [['admin'], 'pending', tok.text]);
  // And the reopened HSM finishes the job: the second approval makes the user creation pass.
  await again.approveQuorumToken(co, tok.id, 'officer2', signQuorumToken(tok.text, o2Key.privateKeyPem));
  t.match(await again.createUser(co, 'bob', 'CU', 'bob-password'), { name: 'bob' });
});

t.test('registration needs a proof by the private half, a CO, and an RSA or P-256 key', async (t) => {
  const f = await freshHsm(t);
  const mine = quorumRegistration('admin', adminKey.privateKeyPem);
  const other = quorumRegistration('admin', o2Key.privateKeyPem);
  await t.rejects(f.hsm.registerQuorumKey(f.co, mine.publicKey, other.proof), { code: 'HSM_ERR_INVALID_ARGUMENT', message: /registration proof does not verify/ });
  const p384 = generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).privateKey.export({ format: 'pem', type: 'pkcs8' });
  const r384 = quorumRegistration('admin', p384);
  await t.rejects(f.hsm.registerQuorumKey(f.co, r384.publicKey, r384.proof), { message: /RSA 2048 to 4096 bits or EC P-256, not ec secp384r1/ });
  const alice = await f.cu('alice');
  const ra = quorumRegistration('alice', adminKey.privateKeyPem);
  await t.rejects(f.hsm.registerQuorumKey(alice, ra.publicKey, ra.proof), { code: 'HSM_ERR_PERMISSION_DENIED' });
  t.same(f.hsm.quorumStatus(f.co).approvers, [], 'nothing was registered');
});

t.test('quorum refusals and approvals are audited, and the log still verifies', async (t) => {
  const f = await twoOfficers(t);
  await f.cu('bob');
  await f.hsm.setQuorumM(f.co, 'user', 2);
  await t.rejects(f.hsm.createUser(f.co, 'carol', 'CU', 'carol-password'), { code: 'HSM_ERR_QUORUM_REQUIRED' });
  const tok = await f.hsm.getQuorumToken(f.co, 'user');
  await t.rejects(f.hsm.approveQuorumToken(f.co, tok.id, 'officer2', signQuorumToken(tok.text, adminKey.privateKeyPem)), { code: 'HSM_ERR_QUORUM_BAD_SIGNATURE' });
  await t.rejects(f.hsm.approveQuorumToken(f.co, tok.id, 'bob', signQuorumToken(tok.text, adminKey.privateKeyPem)), { code: 'HSM_ERR_PERMISSION_DENIED' });
  const lines = (await readFile(f.hsm.auditLogPath, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.ok(lines.some((e) => e.event === 'denied' && e.code === 'HSM_ERR_QUORUM_REQUIRED' && e.action === 'create user carol'), 'the refused creation');
  t.ok(lines.some((e) => e.event === 'quorum.approve' && e.ok === false && e.approver === 'officer2' && e.code === 'HSM_ERR_QUORUM_BAD_SIGNATURE'), 'the forged approval');
  t.equal(lines.filter((e) => e.event === 'denied' && String(e.action).startsWith(`approve quorum token ${tok.id}`) && /bob is a CU, not a crypto officer/.test(String(e.reason))).length, 1, 'a non-officer approver, once');
  t.ok(lines.some((e) => e.event === 'quorum.register' && e.ok === true && e.user === 'officer2'), 'the registration');
  t.ok(lines.some((e) => e.event === 'quorum.set-m' && e.ok === true && e.m === 2), 'the M change');
  t.same(await verifyAuditLog(f.hsm.auditLogPath, await readAuditKey(f.dir)), { ok: true, entries: lines.length });
});

t.test('an approved token that expires before it is used approves nothing', async (t) => {
  const f = await twoOfficers(t);
  await f.hsm.setQuorumM(f.co, 'user', 2);
  const tok = await f.hsm.getQuorumToken(f.co, 'user');
  await f.hsm.approveQuorumToken(f.co, tok.id, 'admin', signQuorumToken(tok.text, adminKey.privateKeyPem));
  await f.hsm.approveQuorumToken(f.co, tok.id, 'officer2', signQuorumToken(tok.text, o2Key.privateKeyPem));
  t.equal(f.hsm.quorumTokenStatus(f.co, tok.id).state, 'approved');
  // Ten minutes and a second later, by the HSM's clock.
  const realNow = Date.now;
  const later = realNow() + 601_000;
  Date.now = () => later;
  t.teardown(() => { Date.now = realNow; });
  t.equal(f.hsm.quorumTokenStatus(f.co, tok.id).state, 'expired');
  await t.rejects(f.hsm.createUser(f.co, 'carol', 'CU', 'carol-password'), { code: 'HSM_ERR_QUORUM_TOKEN_EXPIRED', message: new RegExp(`quorum token ${tok.id} expired at ${tok.expiresAt}`) });
  Date.now = realNow;
  t.equal(f.hsm.quorumTokenStatus(f.co, tok.id).state, 'approved', 'the same token, seen before its expiry, was approved');
});

t.test('an operation that fails leaves the token approved for the next attempt', async (t) => {
  const f = await twoOfficers(t);
  await f.hsm.setQuorumM(f.co, 'user', 2);
  const tok = await f.hsm.getQuorumToken(f.co, 'user');
  await f.hsm.approveQuorumToken(f.co, tok.id, 'admin', signQuorumToken(tok.text, adminKey.privateKeyPem));
  await f.hsm.approveQuorumToken(f.co, tok.id, 'officer2', signQuorumToken(tok.text, o2Key.privateKeyPem));
  await t.rejects(f.hsm.createUser(f.co, 'carol', 'CU', 'short'), { code: 'HSM_ERR_INVALID_ARGUMENT' });
  t.equal(f.hsm.quorumTokenStatus(f.co, tok.id).state, 'approved');
  await f.hsm.createUser(f.co, 'carol', 'CU', 'carol-password');
  t.equal(f.hsm.quorumTokenStatus(f.co, tok.id).state, 'used');
});

t.test('a new password keeps the officer registered as an approver', async (t) => {
  const f = await twoOfficers(t);
  await f.hsm.resetPassword(f.co, 'officer2', 'officer2-new-password');
  t.same(f.hsm.quorumStatus(f.co).approvers.map((a) => a.name), ['admin', 'officer2']);
});

t.test('a snapshot restores the M values on a new HSM', async (t) => {
  const clusterKey = randomBytes(32);
  const f = await twoOfficers(t, { clusterKey });
  await f.hsm.setQuorumM(f.co, 'key', 2);
  const snap = f.hsm.snapshot(f.co);
  const dir = await tempDir(t);
  const restored = await Hsm.restore(snap, { dir, hsmId: 'hsm-restored', clusterKey, scryptCost: 1024 });
  t.teardown(() => restored.close());
  const co = await restored.login('admin', 'officer-pw1');
  t.same(restored.quorumStatus(co).m, { user: 1, key: 2, quorum: 1 });
  t.same(restored.stateDigest(), f.hsm.stateDigest(), 'the same state digest as the source');
});
