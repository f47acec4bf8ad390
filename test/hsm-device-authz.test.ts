// The simulated HSM's authorization matrix and user rules: each cell one test.
import t from 'tap';
import { createPublicKey, verify } from 'node:crypto';
import {
  BadCredentialsError, DEFAULT_MAX_KEYS, DEFAULT_MAX_USERS, Hsm, KeyLimitError, MechanismNotAllowedError, MustChangePasswordError,
  NoSuchKeyError, NotLoggedInError, PermissionDeniedError, UserLimitError,
} from '../src/hsm/device/index.js';
import { CO_PASSWORD, freshHsm, PRECO_PASSWORD, TEST_SCRYPT_COST, tempDir } from './helpers/hsm-device.js';

const MSG = Buffer.from('authorization matrix');

t.test('a fresh HSM has only the PRECO admin, who may do nothing but change its password', async (t) => {
  const dir = await tempDir(t);
  const hsm = await Hsm.open({ dir, hsmId: 'h', initialPassword: PRECO_PASSWORD, scryptCost: TEST_SCRYPT_COST });
  t.teardown(() => hsm.close());
  const preco = await hsm.login('admin', PRECO_PASSWORD);
  t.equal(preco.role, 'PRECO');
  t.throws(() => hsm.listUsers(preco), MustChangePasswordError);
  await t.rejects(hsm.createUser(preco, 'x', 'CU', 'password1'), MustChangePasswordError);
  await t.rejects(hsm.generateKeyPair(preco, 'ec:p256', { label: 'k' }), MustChangePasswordError);
  const co = await hsm.changePassword(preco, CO_PASSWORD);
  t.equal(co.role, 'CO', 'changing the password makes the PRECO a CO');
  t.same(hsm.listUsers(co).map((u) => [u.name, u.role]), [['admin', 'CO']]);
  await t.rejects(hsm.login('admin', PRECO_PASSWORD), BadCredentialsError, 'the one-time password no longer works');
});

t.test('opening an empty directory without the one-time password says how to initialise it', async (t) => {
  const dir = await tempDir(t);
  await t.rejects(Hsm.open({ dir, hsmId: 'h' }), { code: 'HSM_ERR_INVALID_ARGUMENT', message: /one-time PRECO password/ });
});

t.test('a CO cannot sign, even with a key it can list', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const kp = await f.hsm.generateKeyPair(alice, 'ec:p256', { label: 'k' });
  t.ok(f.hsm.listKeys(f.co).some((k) => k.keyId === kp.result.privateKey.keyId), 'CO sees the key to manage it');
  await t.rejects(f.hsm.sign(f.co, { keyId: kp.result.privateKey.keyId, mechanism: 'ecdsa-sha256', data: MSG }), PermissionDeniedError);
});

t.test('a CO cannot create keys', async (t) => {
  const f = await freshHsm(t);
  await t.rejects(f.hsm.generateKeyPair(f.co, 'ec:p256', { label: 'k' }), PermissionDeniedError);
});

t.test('a CU cannot manage users', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  await t.rejects(f.hsm.createUser(alice, 'mallory', 'CO', 'password1'), PermissionDeniedError);
  t.throws(() => f.hsm.listUsers(alice), PermissionDeniedError);
});

t.test("a CU cannot see another CU's unshared key: it is as if the key did not exist", async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const bob = await f.cu('bob');
  const kp = await f.hsm.generateKeyPair(alice, 'ec:p256', { label: 'alice-key' });
  const id = kp.result.privateKey.keyId;
  t.same(f.hsm.listKeys(bob), []);
  t.throws(() => f.hsm.getKey(bob, id), NoSuchKeyError);
  await t.rejects(f.hsm.sign(bob, { keyId: id, mechanism: 'ecdsa-sha256', data: MSG }), NoSuchKeyError);
  t.throws(() => f.hsm.exportPublicKey(bob, id), NoSuchKeyError);
  await t.rejects(f.hsm.deleteKey(bob, id), NoSuchKeyError);
});

t.test('a sharee can sign with a shared key, and the signature verifies', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const bob = await f.cu('bob');
  const kp = await f.hsm.generateKeyPair(alice, 'ec:p256', { label: 'shared' });
  const id = kp.result.privateKey.keyId;
  await f.hsm.shareKey(alice, id, 'bob');
  t.same(f.hsm.getKey(bob, id).sharedWith, ['bob']);
  const sig = await f.hsm.sign(bob, { keyId: id, mechanism: 'ecdsa-sha256', data: MSG });
  t.ok(verify('sha256', MSG, createPublicKey(f.hsm.exportPublicKey(bob, id).pem), sig.result));
});

t.test('a sharee cannot delete, re-share, unshare, change or export a shared key', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const bob = await f.cu('bob');
  await f.cu('carol');
  const kp = await f.hsm.generateKeyPair(alice, 'rsa:2048', { label: 'shared', extractable: true });
  const aes = await f.hsm.generateKey(bob, 'aes:256', { label: 'bob-kek' });
  const id = kp.result.privateKey.keyId;
  await f.hsm.shareKey(alice, id, 'bob');
  await t.rejects(f.hsm.deleteKey(bob, id), PermissionDeniedError);
  await t.rejects(f.hsm.shareKey(bob, id, 'carol'), PermissionDeniedError);
  await t.rejects(f.hsm.unshareKey(bob, id, 'bob'), PermissionDeniedError);
  await t.rejects(f.hsm.setAttributes(bob, id, { label: 'mine' }), PermissionDeniedError);
  await t.rejects(f.hsm.wrapKey(bob, { wrappingKeyId: aes.result.keyId, keyId: id, mechanism: 'aes-key-wrap-pad' }), PermissionDeniedError);
  t.equal(f.hsm.getKey(alice, id).label, 'shared', 'nothing changed');
});

t.test('after unsharing, the former sharee can no longer see the key', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const bob = await f.cu('bob');
  const kp = await f.hsm.generateKeyPair(alice, 'ec:p256', { label: 'k' });
  const id = kp.result.privateKey.keyId;
  await f.hsm.shareKey(alice, id, 'bob');
  await f.hsm.unshareKey(alice, id, 'bob');
  await t.rejects(f.hsm.sign(bob, { keyId: id, mechanism: 'ecdsa-sha256', data: MSG }), NoSuchKeyError);
});

t.test('keys can only be shared with crypto users', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const kp = await f.hsm.generateKeyPair(alice, 'ec:p256', { label: 'k' });
  await t.rejects(f.hsm.shareKey(alice, kp.result.privateKey.keyId, 'admin'), { code: 'HSM_ERR_INVALID_ARGUMENT' });
  await t.rejects(f.hsm.shareKey(alice, kp.result.privateKey.keyId, 'nobody'), { code: 'HSM_ERR_INVALID_ARGUMENT' });
});

t.test('private keys are non-extractable by default and cannot be wrapped out', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const kp = await f.hsm.generateKeyPair(alice, 'ec:p256', { label: 'k' });
  const kek = await f.hsm.generateKey(alice, 'aes:256', { label: 'kek' });
  t.equal(kp.result.privateKey.extractable, false);
  t.equal(kp.result.privateKey.sensitive, true);
  await t.rejects(f.hsm.wrapKey(alice, { wrappingKeyId: kek.result.keyId, keyId: kp.result.privateKey.keyId, mechanism: 'aes-key-wrap-pad' }), {
    code: 'HSM_ERR_PERMISSION_DENIED', message: /not extractable/,
  });
});

t.test('sensitive is one-way: it can be set but never cleared', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const k = await f.hsm.generateKey(alice, 'aes:128', { label: 'k', sensitive: false });
  const after = await f.hsm.setAttributes(alice, k.result.keyId, { sensitive: true });
  t.equal(after.sensitive, true);
  await t.rejects(f.hsm.setAttributes(alice, k.result.keyId, { sensitive: false }), { code: 'HSM_ERR_PERMISSION_DENIED', message: /one-way/ });
});

t.test('extractable is one-way: it can be cleared but never set again', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const k = await f.hsm.generateKey(alice, 'aes:128', { label: 'k', extractable: true });
  t.equal((await f.hsm.setAttributes(alice, k.result.keyId, { extractable: false })).extractable, false);
  await t.rejects(f.hsm.setAttributes(alice, k.result.keyId, { extractable: true }), { code: 'HSM_ERR_PERMISSION_DENIED', message: /one-way/ });
});

t.test('class, type and owner cannot be changed', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const k = await f.hsm.generateKey(alice, 'aes:128', { label: 'k' });
  // Deliberately outside the allowed change set, as a caller over the wire could send.
  await t.rejects(f.hsm.setAttributes(alice, k.result.keyId, { owner: 'bob' } as never), { code: 'HSM_ERR_INVALID_ARGUMENT' });
});

t.test('a key whose usage attribute is false refuses that use', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const kp = await f.hsm.generateKeyPair(alice, 'rsa:2048', { label: 'k', sign: false });
  await t.rejects(f.hsm.sign(alice, { keyId: kp.result.privateKey.keyId, mechanism: 'rsa-pss-sha256', data: MSG }), MechanismNotAllowedError);
});

t.test('a mechanism for the wrong key type is refused with the reason', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const kp = await f.hsm.generateKeyPair(alice, 'ec:p256', { label: 'k' });
  await t.rejects(f.hsm.sign(alice, { keyId: kp.result.privateKey.keyId, mechanism: 'rsa-pss-sha256', data: MSG }), {
    code: 'HSM_ERR_MECHANISM_NOT_ALLOWED', message: /needs a rsa key/,
  });
});

t.test('the owner can delete its key pair; both halves go', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const kp = await f.hsm.generateKeyPair(alice, 'ec:p256', { label: 'k' });
  await f.hsm.deleteKey(alice, kp.result.privateKey.keyId);
  t.same(f.hsm.listKeys(alice), []);
  t.same(f.hsm.occupancy(), { token: 0, session: 0, max: 3500 });
});

t.test('session keys belong to their login session and vanish at logout', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const other = await f.hsm.login('alice', 'alice-password');
  const k = await f.hsm.generateKeyPair(alice, 'ec:p256', { label: 's', token: false });
  t.equal(k.result.privateKey.token, false);
  t.same(f.hsm.occupancy(), { token: 0, session: 2, max: 3500 });
  t.throws(() => f.hsm.getKey(other, k.result.privateKey.keyId), NoSuchKeyError, 'another session of the same user does not see it');
  await f.hsm.logout(alice);
  t.same(f.hsm.occupancy(), { token: 0, session: 0, max: 3500 });
  t.throws(() => f.hsm.listKeys(alice), NotLoggedInError, 'the logged-out session is refused');
});

t.test('wrong passwords give the same error for unknown users and wrong passwords', async (t) => {
  const f = await freshHsm(t);
  await f.cu('alice');
  const refusal = (p: Promise<unknown>): Promise<{ code?: string; message?: string }> => p.then(() => ({}), (e: unknown) => e as { code: string; message: string });
  const wrong = await refusal(f.hsm.login('alice', 'wrong-password'));
  const unknown = await refusal(f.hsm.login('nobody', 'wrong-password'));
  t.match(unknown, { code: 'HSM_ERR_BAD_CREDENTIALS', message: /^login failed: wrong user name or password/ });
  t.same([wrong.code, wrong.message], [unknown.code, unknown.message], 'the same code and message: no attempts left, no hint that alice exists');
});

// The refusal of a locked account is the refusal of a wrong password (it must not confirm the
// name); whether an account is locked is the user record's and the audit log's to say.
const lockedOf = (f: Awaited<ReturnType<typeof freshHsm>>, name: string): boolean | undefined => f.hsm.listUsers(f.co).find((u) => u.name === name)?.locked;

t.test('five consecutive failures lock the account, even for the right password', async (t) => {
  const f = await freshHsm(t);
  await f.cu('alice');
  for (let i = 0; i < 4; i++) await t.rejects(f.hsm.login('alice', 'wrong-password'), BadCredentialsError);
  t.equal(lockedOf(f, 'alice'), false, 'not locked after four');
  await t.rejects(f.hsm.login('alice', 'wrong-password'), BadCredentialsError);
  t.equal(lockedOf(f, 'alice'), true, 'locked after the fifth');
  await t.rejects(f.hsm.login('alice', 'alice-password'), BadCredentialsError, 'the right password is refused while locked');
  t.equal(f.hsm.listUsers(f.co).find((u) => u.name === 'alice')?.failedLogins, 5);
});

t.test('a success resets the failure count', async (t) => {
  const f = await freshHsm(t);
  await f.cu('alice');
  for (let i = 0; i < 4; i++) await t.rejects(f.hsm.login('alice', 'wrong-password'), BadCredentialsError);
  await f.hsm.login('alice', 'alice-password');
  t.equal(f.hsm.listUsers(f.co).find((u) => u.name === 'alice')?.failedLogins, 0);
  for (let i = 0; i < 4; i++) await t.rejects(f.hsm.login('alice', 'wrong-password'), BadCredentialsError);
  t.equal(lockedOf(f, 'alice'), false, 'four more failures do not lock it');
});

t.test('the lockout threshold is configurable', async (t) => {
  const f = await freshHsm(t, { lockoutThreshold: 2 });
  await f.cu('alice');
  await t.rejects(f.hsm.login('alice', 'wrong-password'), BadCredentialsError);
  t.equal(lockedOf(f, 'alice'), false);
  await t.rejects(f.hsm.login('alice', 'wrong-password'), BadCredentialsError);
  t.equal(lockedOf(f, 'alice'), true);
});

t.test('a CO unlocks a locked user, or resets its password', async (t) => {
  const f = await freshHsm(t, { lockoutThreshold: 1 });
  await f.cu('alice');
  await f.cu('bob');
  await t.rejects(f.hsm.login('alice', 'x-wrong-pw'), BadCredentialsError);
  await t.rejects(f.hsm.login('bob', 'x-wrong-pw'), BadCredentialsError);
  t.same([lockedOf(f, 'alice'), lockedOf(f, 'bob')], [true, true]);
  await f.hsm.unlockUser(f.co, 'alice');
  t.equal((await f.hsm.login('alice', 'alice-password')).user, 'alice');
  await f.hsm.resetPassword(f.co, 'bob', 'bob-new-password');
  t.equal((await f.hsm.login('bob', 'bob-new-password')).user, 'bob');
});

t.test('a lockout survives a restart', async (t) => {
  const f = await freshHsm(t, { lockoutThreshold: 1 });
  await f.cu('alice');
  await t.rejects(f.hsm.login('alice', 'x-wrong-pw'), BadCredentialsError);
  await f.hsm.close();
  const again = await Hsm.open({ ...f.opts, initialPassword: undefined });
  t.teardown(() => again.close());
  await t.rejects(again.login('alice', 'alice-password'), BadCredentialsError, 'the right password is still refused');
  const co = await again.login('admin', CO_PASSWORD);
  t.equal(again.listUsers(co).find((u) => u.name === 'alice')?.locked, true);
});

t.test('at most maxUsers users; the default is 1,024', async (t) => {
  const f = await freshHsm(t, { maxUsers: 3 });
  await f.hsm.createUser(f.co, 'u1', 'CU', 'password1');
  await f.hsm.createUser(f.co, 'u2', 'AU', 'password1');
  await t.rejects(f.hsm.createUser(f.co, 'u3', 'CU', 'password1'), UserLimitError);
  t.equal(DEFAULT_MAX_USERS, 1024);
});

t.test('at most maxKeys objects (token + session); the default is 3,500', async (t) => {
  t.equal(DEFAULT_MAX_KEYS, 3500);
  const d = await freshHsm(t);
  t.equal(d.hsm.occupancy().max, 3500);
  const f = await freshHsm(t, { maxKeys: 3 });
  const alice = await f.cu('alice');
  await f.hsm.generateKeyPair(alice, 'ec:p256', { label: 'a' });
  await t.rejects(f.hsm.generateKeyPair(alice, 'ec:p256', { label: 'b' }), KeyLimitError, 'a pair needs two slots');
  await f.hsm.generateKey(alice, 'aes:128', { label: 'c', token: false });
  await t.rejects(f.hsm.generateKey(alice, 'aes:128', { label: 'd' }), { code: 'HSM_ERR_KEY_LIMIT', message: /maximum of 3 keys/ });
  t.same(f.hsm.occupancy(), { token: 2, session: 1, max: 3 });
});

t.test('a CO cannot delete a user who still owns keys', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  await f.hsm.generateKey(alice, 'aes:128', { label: 'k' });
  await t.rejects(f.hsm.deleteUser(f.co, 'alice'), { code: 'HSM_ERR_INVALID_ARGUMENT', message: /owns 1 key/ });
});

t.test('a deleted user can no longer log in, and its sessions end', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  await f.hsm.deleteUser(f.co, 'alice');
  await t.rejects(f.hsm.login('alice', 'alice-password'), BadCredentialsError);
  t.throws(() => f.hsm.listKeys(alice), NotLoggedInError);
});

t.test('a forged session object is refused', async (t) => {
  const f = await freshHsm(t);
  t.throws(() => f.hsm.listKeys({ id: 'f'.repeat(32), user: 'alice', role: 'CU' }), NotLoggedInError);
});

t.test('policy refusals are audited with who, what and why', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  const kp = await f.hsm.generateKeyPair(alice, 'ec:p256', { label: 'k' });
  await t.rejects(f.hsm.sign(f.co, { keyId: kp.result.privateKey.keyId, mechanism: 'ecdsa-sha256', data: MSG }));
  const { readFile } = await import('node:fs/promises');
  const lines = (await readFile(f.hsm.auditLogPath, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const denied = lines.filter((l) => l.event === 'denied');
  t.equal(denied.length, 1);
  t.match(denied[0], { user: 'admin', ok: false, code: 'HSM_ERR_PERMISSION_DENIED', action: /sign with/ });
});

t.test('an AU may replicate keys but not use them or manage users', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  await f.hsm.createUser(f.co, 'sync', 'AU', 'sync-password');
  const au = await f.hsm.login('sync', 'sync-password');
  const kp = await f.hsm.generateKeyPair(alice, 'ec:p256', { label: 'k' });
  t.ok(f.hsm.exportMasked(au, kp.result.privateKey.keyId).length > 0, 'masked export works');
  await t.rejects(f.hsm.sign(au, { keyId: kp.result.privateKey.keyId, mechanism: 'ecdsa-sha256', data: MSG }), PermissionDeniedError);
  await t.rejects(f.hsm.createUser(au, 'x', 'CU', 'password1'), PermissionDeniedError);
  await t.rejects(f.hsm.generateKey(au, 'aes:128', { label: 'x' }), PermissionDeniedError);
});
