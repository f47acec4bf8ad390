// User mistakes with the HSM commands end in one line that says what to do and a non-zero
// exit, never a stack trace: HSM not running, no cluster, wrong password, unknown key, another
// user's key, bad flags, init over an existing cluster, a reused one-time password. A few cases
// spawn the CLI to see the real stderr and exit code; the rest run it in-process (same code).
import t, { type Test } from 'tap';
import { join } from 'node:path';
import { startNode } from '../src/hsm/cluster/run-node.js';
import { runCli, type CliResult } from './helpers/cli.js';
import { cliInProcess, connect, tempCluster, TEST_SCRYPT_COST } from './helpers/hsm-cluster.js';

const cluster = await tempCluster();
const port = cluster.manifest.hsms[0]?.port as number;
const env = { HSMPROXY_DIR: cluster.dir, HSMPROXY_PIN: '', HSMPROXY_NEW_PASSWORD: '' };
t.teardown(() => cluster.cleanup());

function oneLine(t: Test, r: CliResult, pattern: RegExp): void {
  t.not(r.code, 0, 'non-zero exit');
  t.match(r.stderr, /^hsmproxy: [^\n]+\n$/, 'exactly one line on stderr');
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  t.match(r.stderr, pattern);
}

// In-process: the command fails with an error whose message is the one line the user would see.
async function fails(t: Test, args: string[], vars: Record<string, string>, pattern: RegExp): Promise<void> {
  const r = await cliInProcess(args, { ...env, ...vars });
  t.ok(r.error, 'the command fails');
  t.match(r.error?.message, pattern);
  t.notMatch(r.error?.message ?? '', /\n/, 'one line');
}

t.test('a command while the HSM is not running says how to start it', async (t) => {
  const r = await runCli(['key', 'list'], { env: { ...env, HSMPROXY_PIN: 'alice:whatever' } });
  oneLine(t, r, new RegExp(`cannot reach HSM hsm-1 at 127\\.0\\.0\\.1:${port}: is it running\\? start it with \`hsmproxy hsm serve --dir ${cluster.dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} --hsm hsm-1\``));
});

t.test('a directory without a cluster says how to create one', async (t) => {
  await fails(t, ['key', 'list', '--dir', join(cluster.dir, 'nope')], { HSMPROXY_PIN: 'a:b' }, /no cluster in .*nope.*hsmproxy cluster init/);
});

t.test('cluster init refuses to overwrite an existing cluster', async (t) => {
  await fails(t, ['cluster', 'init'], {}, /already holds a cluster/);
});

t.test('cluster init rejects a bad profile and a bad HSM count', async (t) => {
  await fails(t, ['cluster', 'init', '--dir', join(cluster.dir, 'x'), '--profile', 'fast'], {}, /--profile must be one of unlimited, hsm1\.medium, hsm2m\.medium/);
  await fails(t, ['cluster', 'init', '--dir', join(cluster.dir, 'x'), '--hsms', '29'], {}, /--hsms must be from 1 to 28/);
});

t.test('key generate with an unknown type lists the valid ones', async (t) => {
  await fails(t, ['key', 'generate', '--type', 'rsa:1024', '--label', 'x'], { HSMPROXY_PIN: 'alice:x' }, /--type must be one of rsa:2048, .*ec:p256/);
});

t.test('no credentials and no terminal: says to set HSMPROXY_PIN', async (t) => {
  await fails(t, ['key', 'list'], {}, /set HSMPROXY_PIN=user:password/);
});

t.test('with the HSM running', async (t) => {
  const node = await startNode({ dir: cluster.dir, scryptCost: TEST_SCRYPT_COST, log: () => undefined });
  t.teardown(() => node.stop());
  const c = await connect(cluster, port);
  await c.login(cluster.precoUser, cluster.precoPassword);
  await c.changePassword('co-password');
  await c.createUser('alice', 'CU', 'alice-password');
  await c.createUser('bob', 'CU', 'bob-password');
  c.destroy();
  // A connection logs in once: alice gets her own.
  const a = await connect(cluster, port);
  await a.login('alice', 'alice-password');
  const alices = await a.generateKeyPair('ec:p256', { label: 'alice-key' });
  a.destroy();

  await t.test('a reused one-time PRECO password is refused', async (t) => {
    await fails(t, ['cluster', 'activate'], { HSMPROXY_PIN: `admin:${cluster.precoPassword}`, HSMPROXY_NEW_PASSWORD: 'again-123' }, /wrong user name or password/);
  });
  await t.test('a wrong password is one line that says what to check, the same as for an unknown user', async (t) => {
    const wrong = await runCli(['key', 'list'], { env: { ...env, HSMPROXY_PIN: 'alice:wrong' } });
    oneLine(t, wrong, /login failed: wrong user name or password, or the account is locked .*hsmproxy user unlock/);
    t.notMatch(wrong.stderr, /attempts? left/, 'no countdown: it would confirm that alice exists');
    const unknown = await runCli(['key', 'list'], { env: { ...env, HSMPROXY_PIN: 'nobody:wrong' } });
    t.equal(unknown.stderr, wrong.stderr, 'an unknown user reads the same line');
  });
  await t.test('an unknown key says how to list keys', async (t) => {
    await fails(t, ['key', 'show', '--key', 'no-such-label'], { HSMPROXY_PIN: 'alice:alice-password' }, /no key with id or label "no-such-label".*hsmproxy key list/);
  });
  await t.test("another CU's unshared key is invisible, by label and by id", async (t) => {
    const bob = { ...env, HSMPROXY_PIN: 'bob:bob-password' };
    await fails(t, ['crypto', 'sign', '--key', alices.privateKey.keyId, '--in', join(cluster.dir, 'cluster.json'), '--mech', 'ecdsa-sha256', '--out', join(cluster.dir, 'sig')], bob, /no key .* visible/);
    await fails(t, ['key', 'delete', '--key', 'alice-key'], bob, /no key with id or label "alice-key"/);
  });
  await t.test('a crypto officer cannot sign: it sees the key but its role may not use it', async (t) => {
    const co = { HSMPROXY_PIN: 'admin:co-password' };
    const shown = JSON.parse((await cliInProcess(['key', 'show', '--key', alices.privateKey.keyId, '--json'], { ...env, ...co })).stdout) as { keyId: string };
    t.equal(shown.keyId, alices.privateKey.keyId, 'the CO can see the key exists');
    const r = await cliInProcess(['crypto', 'sign', '--key', alices.privateKey.keyId, '--in', join(cluster.dir, 'cluster.json'), '--mech', 'ecdsa-sha256', '--out', join(cluster.dir, 'sig')], { ...env, ...co });
    t.equal(r.error?.code, 'HSM_ERR_PERMISSION_DENIED');
    t.match(r.error?.message, /only crypto users use keys; a CO cannot/);
  });
  await t.test('a missing input file names the file', async (t) => {
    await fails(t, ['crypto', 'sign', '--key', 'alice-key', '--in', '/nonexistent/file', '--mech', 'ecdsa-sha256', '--out', join(cluster.dir, 'sig')],
      { HSMPROXY_PIN: 'alice:alice-password' }, /cannot read --in \/nonexistent\/file: no such file \(ENOENT\); check the path/);
  });
  await t.test('an output file in a missing directory names the flag and says what to do', async (t) => {
    await fails(t, ['crypto', 'sign', '--key', 'alice-key', '--in', join(cluster.dir, 'cluster.json'), '--mech', 'ecdsa-sha256', '--out', '/nonexistent/x.sig'],
      { HSMPROXY_PIN: 'alice:alice-password' }, /^cannot write --out \/nonexistent\/x\.sig: directory \/nonexistent does not exist \(ENOENT\); create it or choose another path$/);
  });
  await t.test('an unknown mechanism lists the valid ones', async (t) => {
    await fails(t, ['crypto', 'sign', '--key', 'alice-key', '--in', join(cluster.dir, 'cluster.json'), '--mech', 'md5', '--out', join(cluster.dir, 'sig')],
      { HSMPROXY_PIN: 'alice:alice-password' }, /--mech must be one of rsa-pss-sha256/);
  });
});
