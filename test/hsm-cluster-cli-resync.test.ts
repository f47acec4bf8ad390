// A cluster built with the CLI only (init --hsms 2, activate, a CU, each HSM under `hsm serve`)
// resyncs an HSM that missed a change, and never lets the HSMs diverge: activate creates the
// appliance user whose login (DIR/sync-user.json) clients use to resync, and a client never
// trusts a lone HSM whose peer is down.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectCluster } from '../src/hsm/cluster/membership.js';
import { cliEntry, runCli } from './helpers/cli.js';
import { cliInProcess, freePort, killChild } from './helpers/hsm-cluster.js';

const work = await mkdtemp(join(tmpdir(), 'hsmproxy-cli-resync-'));
const dir = join(work, 'cluster');
t.teardown(() => rm(work, { recursive: true, force: true }));
const env = { HSMPROXY_DIR: dir, HSMPROXY_PIN: '', HSMPROXY_NEW_PASSWORD: '' };
const co = { HSMPROXY_PIN: 'admin:co-secret-1' };
const cu = { HSMPROXY_PIN: 'alice:alice-secret-1' };
const serving = new Map<string, ChildProcess>();
t.teardown(() => Promise.all([...serving.values()].map((c) => killChild(c))));

async function serve(hsm: string): Promise<void> {
  const child = spawn(process.execPath, ['--import=tsx', cliEntry, 'hsm', 'serve', '--dir', dir, '--hsm', hsm], { stdio: ['ignore', 'pipe', 'pipe'] });
  serving.set(hsm, child);
  let log = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`hsm serve ${hsm} did not start: ${log}`)), 30_000);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => { log += d; if (log.includes('HSM listening')) { clearTimeout(timer); resolve(); } });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => { log += d; });
  });
}

async function stop(hsm: string): Promise<void> {
  const child = serving.get(hsm);
  serving.delete(hsm);
  if (child) await killChild(child, 'SIGTERM');
}

async function ok(args: string[], vars: Record<string, string>): Promise<string> {
  const r = await cliInProcess(args, { ...env, ...vars });
  if (r.error) throw r.error;
  return r.stdout;
}

async function inSync(): Promise<Record<string, boolean | undefined>> {
  const s = JSON.parse(await ok(['cluster', 'status', '--json'], {})) as { hsms: Array<{ id: string; inSync?: boolean }> };
  return Object.fromEntries(s.hsms.map((h) => [h.id, h.inSync]));
}

t.test('a CLI-built cluster resyncs a returning HSM and never diverges', async (t) => {
  const init = JSON.parse(await ok(['cluster', 'init', '--hsms', '2', '--base-port', String(await freePort()), '--json'], {})) as { precoPassword: string };
  await Promise.all([serve('hsm-1'), serve('hsm-2')]);
  await ok(['cluster', 'activate'], { HSMPROXY_PIN: `admin:${init.precoPassword}`, HSMPROXY_NEW_PASSWORD: 'co-secret-1' });

  const syncFile = join(dir, 'sync-user.json');
  t.equal((await stat(syncFile)).mode & 0o777, 0o600, 'activate wrote sync-user.json, 0600');
  const au = JSON.parse(await readFile(syncFile, 'utf8')) as { user: string; password: string };
  t.equal(au.user, 'sync');
  await ok(['user', 'create', '--name', 'alice'], { ...co, HSMPROXY_NEW_PASSWORD: 'alice-secret-1' });
  const users = JSON.parse(await ok(['user', 'list', '--json'], co)) as Array<{ name: string; role: string }>;
  t.same(users.map((u) => `${u.name}:${u.role}`).sort(), ['admin:CO', 'alice:CU', 'sync:AU'], 'the appliance user exists on the cluster');

  // A long-lived CU client (as `serve` is) makes k2 while hsm-2 is down.
  const client = await connectCluster(dir, { credentials: { user: 'alice', password: 'alice-secret-1' }, watch: false });
  t.teardown(() => client.close());
  await stop('hsm-2');
  const k2 = await client.generateKeyPair('ec:p256', { label: 'k2' });
  await client.close();

  // A new client that reaches hsm-1 alone cannot prove it is current: it reads, but refuses a
  // change in one line.
  const lone = await runCli(['key', 'list', '--json'], { env: { ...env, ...cu }, timeoutMs: 60_000 });
  t.equal(lone.code, 0, 'keys can be listed (and used) from hsm-1 alone');
  const refused = await runCli(['key', 'generate', '--type', 'ec:p256', '--label', 'k-lone'], { env: { ...env, ...cu }, timeoutMs: 60_000 });
  t.equal(refused.code, 1);
  t.match(refused.stderr, /^hsmproxy: generateKeyPair refused: hsm-1 cannot prove it holds the cluster's latest state while hsm-2 is unreachable/);
  t.equal(refused.stderr.trim().split('\n').length, 1, 'one line');

  await serve('hsm-2');
  t.same(await inSync(), { 'hsm-1': true, 'hsm-2': false }, 'hsm-2 returns without k2: out of sync');
  // Any CU command resyncs it, logged in as the appliance user.
  const list = JSON.parse(await ok(['key', 'list', '--json'], cu)) as Array<{ keyId: string }>;
  t.ok(list.some((k) => k.keyId === k2.privateKey.keyId));
  t.same(await inSync(), { 'hsm-1': true, 'hsm-2': true }, 'hsm-2 was resynced');

  // hsm-2 now holds k2 itself.
  await stop('hsm-1');
  const msg = join(work, 'msg');
  await writeFile(msg, 'hello');
  await ok(['crypto', 'sign', '--hsm', 'hsm-2', '--key', k2.privateKey.keyId, '--in', msg, '--mech', 'ecdsa-sha256', '--out', join(work, 'sig')], cu);
  t.pass('k2 signs on hsm-2');
  // With hsm-1 down, a new key cannot go to hsm-2 alone (that is how the HSMs diverged).
  const k3 = await runCli(['key', 'generate', '--type', 'ec:p256', '--label', 'k3'], { env: { ...env, ...cu }, timeoutMs: 60_000 });
  t.equal(k3.code, 1);
  t.match(k3.stderr, /hsm-2 cannot prove it holds the cluster's latest state while hsm-1 is unreachable/);
  await serve('hsm-1');
  const keys = JSON.parse(await ok(['key', 'list', '--json'], cu)) as Array<{ label: string }>;
  t.notOk(keys.some((k) => k.label === 'k3'), 'k3 was made nowhere');
  t.same(await inSync(), { 'hsm-1': true, 'hsm-2': true });
});
