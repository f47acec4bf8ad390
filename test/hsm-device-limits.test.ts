// The HSM's published limits with their default values (not a lowered test setting): 3,500 key
// objects (token + session) and 1,024 users. Filling them for real shows the defaults are
// wired in, that the limit counts what the user sees as occupancy, and that freeing a slot
// makes room again.
import t from 'tap';
import { freshHsm } from './helpers/hsm-device.js';
import { KeyLimitError, UserLimitError } from '../src/hsm/device/index.js';

// The two fills wait mostly on fsync (audit log, user table), not the CPU: run them side by side.
t.jobs = 2;

t.test('with the defaults, 3,500 keys fit (token + session) and the 3,501st is refused', async (t) => {
  const f = await freshHsm(t);
  const alice = await f.cu('alice');
  // A few token keys (persisted) and the rest session keys (memory only, so the fill is quick).
  const token = await Promise.all(Array.from({ length: 20 }, (_, i) => f.hsm.generateKey(alice, 'aes:128', { label: `t${i}` })));
  let last = '';
  for (let i = 0; i < 3480; i++) last = (await f.hsm.generateKey(alice, 'aes:128', { label: `s${i}`, token: false })).result.keyId;
  t.same(f.hsm.occupancy(), { token: 20, session: 3480, max: 3500 }, 'occupancy reports the full HSM');
  await t.rejects(f.hsm.generateKey(alice, 'aes:128', { label: 'one-too-many', token: false }), KeyLimitError, 'a session key is refused');
  await t.rejects(f.hsm.generateKey(alice, 'aes:128', { label: 'one-too-many' }), { code: 'HSM_ERR_KEY_LIMIT', message: /maximum of 3500 keys.*delete unused keys or add an HSM/ }, 'a token key is refused, saying what to do');
  t.equal(f.hsm.occupancy().token + f.hsm.occupancy().session, 3500, 'a refused request takes no slot');

  await f.hsm.deleteKey(alice, last);
  await f.hsm.deleteKey(alice, token[0]!.result.keyId);
  const pair = await f.hsm.generateKeyPair(alice, 'ec:p256', { label: 'fits-again' });
  t.ok(pair.result.privateKey.keyId, 'two freed slots take a key pair');
  t.same(f.hsm.occupancy(), { token: 21, session: 3479, max: 3500 });
});

t.test('with the defaults, 1,024 users fit and the 1,025th is refused', async (t) => {
  const f = await freshHsm(t);
  // The crypto officer made at activation is user 1 of 1,024.
  // Created 128 at a time: concurrent changes share user-table writes (each write is fsynced).
  for (let i = 2; i <= 1024; i += 128) {
    await Promise.all(Array.from({ length: Math.min(128, 1025 - i) }, (_, k) => f.hsm.createUser(f.co, `user${i + k}`, (i + k) % 2 ? 'CU' : 'AU', 'password1')));
  }
  t.equal(f.hsm.listUsers(f.co).length, 1024);
  await t.rejects(f.hsm.createUser(f.co, 'user1025', 'CU', 'password1'), UserLimitError);
  await t.rejects(f.hsm.createUser(f.co, 'user1025', 'CU', 'password1'), { code: 'HSM_ERR_USER_LIMIT', message: /maximum of 1024 users; delete unused users first/ });
  t.equal(f.hsm.listUsers(f.co).length, 1024, 'the refused user was not added');

  await f.hsm.deleteUser(f.co, 'user7');
  await f.hsm.createUser(f.co, 'user1025', 'CU', 'password1');
  t.equal((await f.hsm.login('user1025', 'password1')).role, 'CU', 'after a deletion the next user fits and can log in');
});
