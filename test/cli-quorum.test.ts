// `hsmproxy quorum` as crypto officers use it: make quorum keys (0600), register them, set M,
// get a token, sign it offline (no login), approve the signatures (ours and a raw openssl-style
// one), check its status, and run the user creation the quorum protects. In-process CLI against
// one in-process HSM node; one spawned run checks the one-line error and the help text.
import t from 'tap';
import { sign, createPrivateKey } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startNode } from '../src/hsm/cluster/run-node.js';
import { oneLineError, runCli } from './helpers/cli.js';
import { activate, cliInProcess, tempCluster, TEST_SCRYPT_COST } from './helpers/hsm-cluster.js';

const cluster = await tempCluster();
const port = cluster.manifest.hsms[0]?.port as number;
const node = await startNode({ dir: cluster.dir, scryptCost: TEST_SCRYPT_COST, log: () => undefined });
await activate(cluster, port, 'alice');
t.teardown(async () => {
  await node.stop();
  await cluster.cleanup();
});

const d = cluster.dir;
const base = { HSMPROXY_DIR: d, HSMPROXY_NEW_PASSWORD: '', HSMPROXY_PIN: '' };
const admin = { ...base, HSMPROXY_PIN: 'admin:co-password' };
const officer2 = { ...base, HSMPROXY_PIN: 'officer2:officer2-password' };
const f = (name: string): string => join(d, name);

async function run(args: string[], vars: Record<string, string>): Promise<unknown> {
  const r = await cliInProcess([...args, '--json'], vars);
  if (r.error) throw r.error;
  return JSON.parse(r.stdout) as unknown;
}

t.test('keygen writes the private key 0600 and refuses to overwrite it', async (t) => {
  const r = await run(['quorum', 'keygen', '--type', 'p256', '--out', f('admin.key'), '--public-out', f('admin.pub')], base);
  t.match(r, { privateKey: f('admin.key'), type: 'p256' });
  t.equal((await stat(f('admin.key'))).mode & 0o777, 0o600);
  t.match(await readFile(f('admin.pub'), 'utf8'), /^-----BEGIN PUBLIC KEY-----/);
  await t.rejects(run(['quorum', 'keygen', '--out', f('admin.key')], base), { message: /already exists; choose another --out or add --force/ });
  await run(['quorum', 'keygen', '--type', 'rsa', '--out', f('officer2.key')], base);
});

t.test('two officers register their keys; quorum show lists them with M=1 everywhere', async (t) => {
  await run(['user', 'create', '--name', 'officer2', '--role', 'CO'], { ...admin, HSMPROXY_NEW_PASSWORD: 'officer2-password' });
  t.match(await run(['quorum', 'register', '--key', f('admin.key')], admin), { name: 'admin', keyType: 'ec' });
  t.match(await run(['quorum', 'register', '--key', f('officer2.key')], officer2), { name: 'officer2', keyType: 'rsa' });
  const show = await run(['quorum', 'show'], admin) as { m: Record<string, number>; approvers: Array<{ name: string }> };
  t.same(show.m, { user: 1, key: 1, quorum: 1 });
  t.same(show.approvers.map((a) => a.name), ['admin', 'officer2']);
});

t.test('set-m refuses M above the registered officers, then sets M=2 for users', async (t) => {
  await t.rejects(run(['quorum', 'set-m', '--service', 'user', '--m', '3'], admin), { code: 'HSM_ERR_INVALID_ARGUMENT', message: /M=3 for user exceeds the 2 crypto officer/ });
  t.match(await run(['quorum', 'set-m', '--service', 'user', '--m', '2'], admin), { m: { user: 2 } });
  await t.rejects(run(['user', 'create', '--name', 'bob'], { ...admin, HSMPROXY_NEW_PASSWORD: 'bob-password' }), { code: 'HSM_ERR_QUORUM_REQUIRED' });
});

t.test('token get, offline signatures, approve one by one, status, then the user creation succeeds once', async (t) => {
  const tok = await run(['quorum', 'token', 'get', '--service', 'user', '--out', f('user.token')], admin) as { id: string; state: string };
  t.equal(tok.state, 'pending');
  const text = await readFile(f('user.token'), 'utf8');
  t.match(text, new RegExp(`^hsmproxy quorum token v1\\nid: ${tok.id}\\nservice: user\\nuser: admin\\n`));
  // Signing needs no HSM login: no credentials in the environment at all.
  const signed = await run(['quorum', 'token', 'sign', '--token', f('user.token'), '--key', f('admin.key'), '--user', 'admin', '--out', f('admin.sig')], base);
  t.match(signed, { tokenId: tok.id, approver: 'admin' });
  const one = await run(['quorum', 'token', 'approve', '--token', f('user.token'), '--signature', f('admin.sig')], admin) as { approvals: string[]; m: number; state: string };
  t.same([one.approvals, one.m, one.state], [['admin'], 2, 'pending']);
  await t.rejects(run(['user', 'create', '--name', 'bob'], { ...admin, HSMPROXY_NEW_PASSWORD: 'bob-password' }), { code: 'HSM_ERR_QUORUM_REQUIRED', message: /has 1 of 2 approvals/ });
  // A raw signature, as `openssl dgst -sha256 -sign officer2.key -out officer2.raw user.token` writes it.
  await writeFile(f('officer2.raw'), sign('sha256', Buffer.from(text), createPrivateKey(await readFile(f('officer2.key')))));
  await t.rejects(run(['quorum', 'token', 'approve', '--token', f('user.token'), '--signature', f('officer2.raw')], admin), { message: /raw signature .* name its signer with --approver/ });
  await run(['quorum', 'token', 'approve', '--token', f('user.token'), '--signature', f('officer2.raw'), '--approver', 'officer2'], admin);
  const status = await run(['quorum', 'token', 'status', '--token', f('user.token')], admin) as { approvals: string[]; state: string; expiresAt: string };
  t.same([status.approvals, status.state], [['admin', 'officer2'], 'approved']);
  t.ok(Date.parse(status.expiresAt) > Date.now(), 'it has not expired');
  t.match(await run(['user', 'create', '--name', 'bob'], { ...admin, HSMPROXY_NEW_PASSWORD: 'bob-password' }), { name: 'bob', role: 'CU' });
  t.match(await run(['quorum', 'token', 'status', '--id', tok.id], admin), { state: 'used' });
  await t.rejects(run(['user', 'delete', '--name', 'bob'], admin), { code: 'HSM_ERR_QUORUM_REQUIRED' }, 'the used token approves nothing more');
});

t.test('a forged approval is one line on stderr, no stack trace', async (t) => {
  await run(['quorum', 'token', 'get', '--service', 'user', '--out', f('user2.token')], admin);
  // officer2's name on admin's signature: does not verify under officer2's registered key.
  await run(['quorum', 'token', 'sign', '--token', f('user2.token'), '--key', f('admin.key'), '--user', 'officer2', '--out', f('forged.sig')], base);
  const r = await runCli(['quorum', 'token', 'approve', '--token', f('user2.token'), '--signature', f('forged.sig')], { env: admin });
  oneLineError(t, r, /does not verify under officer2's registered quorum key/);
});

t.test('the help of quorum token names its four commands', async (t) => {
  const r = await runCli(['quorum', 'token', '--help']);
  t.equal(r.code, 0);
  for (const c of ['get', 'sign', 'approve', 'status']) t.match(r.stdout, new RegExp(`\\n  ${c} `));
});
