// Operating a running 3-HSM cluster: what `cluster status` shows (every field, as JSON and as
// text, and an HSM changed behind the cluster's back reported out of sync), session keys that
// stay on the HSM that made them, `cluster backup --retention-days` pruning old backups, and
// `cluster add-hsm --from live` cloning a live HSM that then serves the existing keys.
import t from 'tap';
import { createPublicKey, verify } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEmbeddedCluster, type EmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { connectCluster, linkFactory, membersOf } from '../src/hsm/cluster/membership.js';
import { readManifest } from '../src/hsm/cluster/manifest.js';
import { listBackups, sealBackup, writeBackupFile } from '../src/hsm/cluster/backup.js';
import type { HsmConnection } from '../src/hsm/client/connection.js';
import type { ClusterStatus } from '../src/hsm/cluster/status.js';
import { cliInProcess } from './helpers/hsm-cluster.js';

t.setTimeout(90_000);

let cluster: EmbeddedCluster;
let dir: string;
let officerPin: Record<string, string>;

t.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hsmproxy-ops-'));
  cluster = await startEmbeddedCluster({ dir, hsms: 3, scryptCost: 1024, node: { healthIntervalMs: 300, reconnectMinMs: 50, reconnectMaxMs: 300 } });
  officerPin = { HSMPROXY_PIN: `${cluster.credentials.co.user}:${cluster.credentials.co.password}` };
});
t.teardown(async () => {
  await cluster?.stop();
  await rm(dir, { recursive: true, force: true });
});

// A logged-in connection to one HSM, bypassing the cluster client.
async function direct(id: string, who: { user: string; password: string }): Promise<HsmConnection> {
  const m = await readManifest(dir);
  return (await linkFactory(dir, m))(membersOf(m).find((a) => a.id === id)!, who);
}

async function status(): Promise<{ json: ClusterStatus; text: string }> {
  const j = await cliInProcess(['cluster', 'status', '--dir', dir, '--json']);
  const p = await cliInProcess(['cluster', 'status', '--dir', dir]);
  if (j.error ?? p.error) throw j.error ?? p.error;
  return { json: JSON.parse(j.stdout) as ClusterStatus, text: p.stdout };
}

t.test('cluster status shows each HSM: health, address, keys against 3,500, users, in sync', async (t) => {
  await cluster.client.generateKeyPair('ec:p256', { label: 'status-pair' });
  const m = await readManifest(dir);
  const { json, text } = await status();
  t.equal(json.clusterId, m.clusterId);
  t.same(json.hsms.map((h) => h.address), m.hsms.map((h) => `${h.address}:${h.port}`), 'the address each HSM listens on');
  for (const h of json.hsms) {
    t.match(h, { up: true, profile: 'unlimited', keysToken: 2, keysSession: 0, keysMax: 3500, users: 3, inSync: true }, `${h.id}: up, 2 token keys of 3,500, 3 users (CO, CU, AU), in sync`);
  }
  const lines = text.split('\n');
  t.equal(lines[0], `cluster ${m.clusterId}`);
  for (const h of m.hsms) {
    t.match(lines.find((l) => l.includes(` ${h.id} `)), new RegExp(`${h.id}\\s+${h.address}:${h.port}\\s+up\\s+keys 2\\+0/3500\\s+users 3\\s+in sync`), `a text line for ${h.id}`);
  }
});

t.test('an HSM changed behind the cluster client is reported out of sync until it matches again', async (t) => {
  const c = await direct('hsm-1', cluster.credentials.cu);
  t.teardown(() => c.close());
  const stray = await c.generateKey('aes:128', { label: 'made-on-hsm-1-only' });
  const { json, text } = await status();
  t.same(json.hsms.map((h) => [h.id, h.inSync, h.keysToken]), [['hsm-1', false, 3], ['hsm-2', true, 2], ['hsm-3', true, 2]], 'hsm-1 differs from the majority');
  t.match(text, /hsm-1 .*OUT OF SYNC/);
  t.notMatch(text, /hsm-2 .*OUT OF SYNC/);
  await c.deleteKey(stray.keyId);
  t.ok((await status()).json.hsms.every((h) => h.inSync), 'in sync again once the stray key is gone');
});

t.test('session keys stay on the HSM that made them: not replicated, and used only there', async (t) => {
  const pair = await cluster.client.generateKeyPair('ec:p256', { label: 'session-pair', token: false });
  const { json } = await status();
  const holders = json.hsms.filter((h) => h.keysSession! > 0);
  t.equal(holders.length, 1, `exactly one HSM holds the session key pair (${holders.map((h) => h.id).join(', ')})`);
  t.equal(holders[0]?.keysSession, 2, 'both halves');
  t.ok(json.hsms.every((h) => h.keysToken === 2 && h.inSync), 'no token key appeared and the HSMs still agree');

  const byHsm = new Map<string, number>();
  const onRequest = (m: unknown): void => {
    const ev = m as { op: string; hsm: string; outcome: string };
    if (ev.op === 'sign' && ev.outcome === 'ok') byHsm.set(ev.hsm, (byHsm.get(ev.hsm) ?? 0) + 1);
  };
  subscribe('hsmproxy:hsm:request', onRequest);
  t.teardown(() => unsubscribe('hsmproxy:hsm:request', onRequest));
  const data = Buffer.from('session-key signature');
  const pub = createPublicKey({ key: (await cluster.client.exportPublicKey(pair.publicKey.keyId)).der, format: 'der', type: 'spki' });
  const sigs = await Promise.all(Array.from({ length: 30 }, () => cluster.client.sign({ keyId: pair.privateKey.keyId, mechanism: 'ecdsa-sha256', data })));
  t.ok(sigs.every((s) => verify('sha256', data, pub, s)), 'every signature verifies');
  t.same([...byHsm.keys()], [holders[0]!.id], 'all 30 signs went to that HSM');
  await cluster.client.deleteKey(pair.privateKey.keyId);
  t.ok((await status()).json.hsms.every((h) => h.keysSession === 0), 'deleting it (both halves) frees the slots on its HSM');
});

t.test('cluster backup --retention-days prunes older backups through the CLI and keeps the new one', async (t) => {
  const m = await readManifest(dir);
  const clusterKey = await readFile(join(dir, m.maskingKey));
  const old = async (days: number): Promise<string> => {
    const at = new Date(Date.now() - days * 86_400_000);
    const bytes = sealBackup({ clusterKey, clusterId: m.clusterId, sourceHsm: 'hsm-1', snapshot: Buffer.from('{}'), policy: {}, users: 0, tokenKeys: 0, digest: 'x', now: at });
    return writeBackupFile(dir, bytes, at.toISOString());
  };
  const d40 = await old(40);
  const d10 = await old(10);
  const r = await cliInProcess(['cluster', 'backup', '--dir', dir, '--retention-days', '30', '--json'], officerPin);
  t.error(r.error);
  const out = JSON.parse(r.stdout) as { file: string; pruned: string[]; tokenKeys: number };
  t.same(out.pruned, [d40], 'the 40-day-old backup is pruned');
  t.same((await listBackups(dir)).map((b) => b.file), [d10, out.file], 'the 10-day-old one and the new one remain');
  t.equal(out.tokenKeys, 2);

  const bad = await cliInProcess(['cluster', 'backup', '--dir', dir, '--retention-days', '0'], officerPin);
  t.match(bad.error, { message: /--retention-days must be a whole number of at least 1/ }, 'a retention of 0 days is a usage error');
  t.equal((await listBackups(dir)).length, 2, 'and writes nothing');
});

t.test('add-hsm --from live clones a live HSM; it joins in sync and serves the existing keys', async (t) => {
  const pair = await cluster.client.generateKeyPair('rsa:2048', { label: 'before-live-clone' });
  const r = await cliInProcess(['cluster', 'add-hsm', '--dir', dir, '--from', 'live', '--json'], officerPin);
  t.error(r.error);
  const added = JSON.parse(r.stdout) as { hsm: { id: string }; from: string; source: string; tokenKeys: number; inSync: boolean };
  t.match(added, { hsm: { id: 'hsm-4' }, from: 'live', source: /^hsm-[123]$/, tokenKeys: 4, inSync: true });
  await cluster.client.waitInRotation('hsm-4', 15_000);
  t.ok(cluster.client.members().some((m) => m.id === 'hsm-4'), 'the running client picked it up');

  const c = await direct('hsm-4', cluster.credentials.cu);
  t.teardown(() => c.close());
  const msg = Buffer.from('signed by the live clone');
  const sig = await c.sign({ keyId: pair.privateKey.keyId, mechanism: 'rsa-pss-sha256', data: msg });
  const pub = createPublicKey({ key: (await c.exportPublicKey(pair.publicKey.keyId)).der, format: 'der', type: 'spki' });
  t.ok(verify('sha256', msg, { key: pub, padding: 6, saltLength: 32 }, sig), 'hsm-4 signs with a key made before it existed');
  const after = await cluster.client.generateKey('aes:256', { label: 'after-live-clone' });
  t.ok((await c.getKey(after.keyId)).keyId, 'and receives keys created after it joined');
  t.ok((await status()).json.hsms.every((h) => h.up && h.inSync && h.keysToken === 5), 'status: four HSMs, up and in sync');

  const bad = await cliInProcess(['cluster', 'add-hsm', '--dir', dir, '--from', 'nowhere'], officerPin);
  t.match(bad.error, { message: /--from must be backup or live/ });
});

t.test('a crypto user changing its own password through the client leaves the HSMs in sync', async (t) => {
  const co = await connectCluster(dir, { credentials: cluster.credentials.co, watch: false });
  t.teardown(() => co.close());
  await co.createUser('carol', 'CU', 'carol-password-1');
  const carol = await connectCluster(dir, { credentials: { user: 'carol', password: 'carol-password-1' }, watch: false });
  t.teardown(() => carol.close());
  await carol.changePassword('carol-password-2');
  for (const id of ['hsm-1', 'hsm-2', 'hsm-3', 'hsm-4']) {
    const c = await direct(id, { user: 'carol', password: 'carol-password-2' });
    t.equal(c.user?.user, 'carol', `the new password works on ${id}`);
    await c.close();
  }
  const { json } = await status();
  t.same(json.hsms.map((h) => [h.id, h.inSync]), [['hsm-1', true], ['hsm-2', true], ['hsm-3', true], ['hsm-4', true]], 'every HSM still agrees');
});

t.test('sharing and unsharing through the client holds on every HSM', async (t) => {
  const co = await connectCluster(dir, { credentials: cluster.credentials.co, watch: false });
  t.teardown(() => co.close());
  await co.createUser('dave', 'CU', 'dave-password-1');
  const pair = await cluster.client.generateKeyPair('ec:p256', { label: 'shared-with-dave' });
  await cluster.client.shareKey(pair.privateKey.keyId, 'dave');
  const data = Buffer.from('signed by a sharee');
  const pub = createPublicKey({ key: (await cluster.client.exportPublicKey(pair.publicKey.keyId)).der, format: 'der', type: 'spki' });
  for (const id of ['hsm-1', 'hsm-2', 'hsm-3', 'hsm-4']) {
    const c = await direct(id, { user: 'dave', password: 'dave-password-1' });
    t.ok(verify('sha256', data, pub, await c.sign({ keyId: pair.privateKey.keyId, mechanism: 'ecdsa-sha256', data })), `the sharee signs on ${id}`);
    await c.close();
  }
  await cluster.client.unshareKey(pair.privateKey.keyId, 'dave');
  for (const id of ['hsm-1', 'hsm-2', 'hsm-3', 'hsm-4']) {
    const c = await direct(id, { user: 'dave', password: 'dave-password-1' });
    await t.rejects(c.sign({ keyId: pair.privateKey.keyId, mechanism: 'ecdsa-sha256', data }), { code: 'HSM_ERR_NO_SUCH_KEY' }, `after unsharing, ${id} no longer lets the former sharee see it`);
    await c.close();
  }
  t.ok((await status()).json.hsms.every((h) => h.inSync), 'the HSMs agree throughout');
});
