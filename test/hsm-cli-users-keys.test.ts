// The user and key commands as a crypto officer and crypto users use them: create, list,
// lockout and unlock, password reset, delete; share/unshare, what a sharee may and may not do,
// show, delete. The CLI runs in-process against one in-process HSM node.
import t from 'tap';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { startNode } from '../src/hsm/cluster/run-node.js';
import { activate, cliInProcess, connect, tempCluster, TEST_SCRYPT_COST } from './helpers/hsm-cluster.js';

const cluster = await tempCluster();
const port = cluster.manifest.hsms[0]?.port as number;
const node = await startNode({ dir: cluster.dir, scryptCost: TEST_SCRYPT_COST, log: () => undefined });
await activate(cluster, port, 'alice');
t.teardown(async () => {
  await node.stop();
  await cluster.cleanup();
});

const dirVars = { HSMPROXY_DIR: cluster.dir, HSMPROXY_NEW_PASSWORD: '' };
const co = { ...dirVars, HSMPROXY_PIN: 'admin:co-password' };
const alice = { ...dirVars, HSMPROXY_PIN: 'alice:cu-password' };
const bob = { ...dirVars, HSMPROXY_PIN: 'bob:bob-password' };
const msg = join(cluster.dir, 'msg.txt');
await writeFile(msg, 'shared signing\n');

async function run(args: string[], vars: Record<string, string>): Promise<string> {
  const r = await cliInProcess([...args, '--json'], vars);
  if (r.error) throw r.error;
  return r.stdout;
}

t.test('the CO creates a CU, who then appears in user list', async (t) => {
  const u = JSON.parse(await run(['user', 'create', '--name', 'bob', '--role', 'cu'], { ...co, HSMPROXY_NEW_PASSWORD: 'bob-password' })) as { name: string; role: string };
  t.same(u, { name: 'bob', role: 'CU', locked: false, failedLogins: 0 });
  const list = JSON.parse(await run(['user', 'list'], co)) as Array<{ name: string }>;
  t.same(list.map((x) => x.name).sort(), ['admin', 'alice', 'bob']);
});

t.test('a CU cannot manage users', async (t) => {
  await t.rejects(run(['user', 'list'], alice), { code: 'HSM_ERR_PERMISSION_DENIED' });
});

t.test('a locked-out user is unlocked by the CO and can log in again', async (t) => {
  const c = await connect(cluster, port);
  t.teardown(() => c.destroy());
  for (let i = 0; i < 5; i++) await c.login('bob', 'wrong').catch(() => undefined);
  // The peer hears what a wrong password hears (a lock must not confirm the name); the CO sees the lock.
  await t.rejects(c.login('bob', 'bob-password'), { code: 'HSM_ERR_BAD_CREDENTIALS' });
  const list = JSON.parse(await run(['user', 'list'], co)) as Array<{ name: string; locked: boolean }>;
  t.equal(list.find((u) => u.name === 'bob')?.locked, true, 'user list shows the lock');
  await run(['user', 'unlock', '--name', 'bob'], co);
  t.equal((await c.login('bob', 'bob-password')).user, 'bob');
});

t.test('the owner shares a key: the sharee signs with it but cannot delete or re-share it', async (t) => {
  const kp = JSON.parse(await run(['key', 'generate', '--type', 'ec:p256', '--label', 'team'], alice)) as { keyId: string };
  await t.rejects(run(['crypto', 'sign', '--key', kp.keyId, '--in', msg, '--mech', 'ecdsa-sha256', '--out', join(cluster.dir, 'b.sig')], bob), { message: /no key with id or label "[0-9a-f]{32}" visible to this user/ }, 'invisible before sharing');
  const shared = JSON.parse(await run(['key', 'share', '--key', 'team', '--user', 'bob'], alice)) as { sharedWith: string[] };
  t.same(shared.sharedWith, ['bob']);
  await run(['crypto', 'sign', '--key', kp.keyId, '--in', msg, '--mech', 'ecdsa-sha256', '--out', join(cluster.dir, 'b.sig')], bob);
  const verdict = JSON.parse(await run(['crypto', 'verify', '--key', 'team', '--in', msg, '--sig', join(cluster.dir, 'b.sig'), '--mech', 'ecdsa-sha256'], alice)) as { valid: boolean };
  t.equal(verdict.valid, true, "the sharee's signature verifies for the owner");
  await t.rejects(run(['key', 'delete', '--key', kp.keyId], bob), { code: 'HSM_ERR_PERMISSION_DENIED' });
  await t.rejects(run(['key', 'share', '--key', kp.keyId, '--user', 'alice'], bob), { code: 'HSM_ERR_PERMISSION_DENIED' });
  await run(['key', 'unshare', '--key', 'team', '--user', 'bob'], alice);
  await t.rejects(run(['key', 'show', '--key', kp.keyId], bob), { message: /no key with id or label/ }, 'invisible again after unsharing');
});

t.test('key show and key delete by label; the key is gone afterwards', async (t) => {
  const shown = JSON.parse(await run(['key', 'show', '--key', 'team'], alice)) as { class: string; type: string; owner: string };
  t.match(shown, { class: 'private', type: 'ec', owner: 'alice' });
  await run(['key', 'delete', '--key', 'team'], alice);
  const left = JSON.parse(await run(['key', 'list', '--label', 'team'], alice)) as unknown[];
  t.same(left, [], 'both halves of the pair are deleted');
});

t.test('the CO resets a password; the old one stops working', async (t) => {
  await run(['user', 'passwd', '--name', 'bob'], { ...co, HSMPROXY_NEW_PASSWORD: 'bob-new-password' });
  await t.rejects(run(['key', 'list'], bob), { code: 'HSM_ERR_BAD_CREDENTIALS' });
  t.same(JSON.parse(await run(['key', 'list'], { ...bob, HSMPROXY_PIN: 'bob:bob-new-password' })), []);
});

t.test('a user changes their own password', async (t) => {
  await run(['user', 'passwd'], { ...bob, HSMPROXY_PIN: 'bob:bob-new-password', HSMPROXY_NEW_PASSWORD: 'bob-own-password' });
  t.same(JSON.parse(await run(['key', 'list'], { ...bob, HSMPROXY_PIN: 'bob:bob-own-password' })), []);
});

t.test('the CO deletes a user, who can no longer log in', async (t) => {
  await run(['user', 'delete', '--name', 'bob'], co);
  await t.rejects(run(['key', 'list'], { ...bob, HSMPROXY_PIN: 'bob:bob-own-password' }), { code: 'HSM_ERR_BAD_CREDENTIALS' });
});
