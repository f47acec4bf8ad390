// Cluster lifecycle through the CLI: backup, add-hsm from the backup (brought in sync, serves the
// existing keys), remove-hsm (never the last), a tampered or truncated backup refused with
// nothing half-restored, and restore into a new directory giving a working cluster with the
// same keys (a signature made before verifies with the key used after).
import t from 'tap';
import { createPublicKey, verify } from 'node:crypto';
import { copyFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { connectCluster, linkFactory, membersOf } from '../src/hsm/cluster/membership.js';
import { readManifest } from '../src/hsm/cluster/manifest.js';
import { Supervisor } from '../src/hsm/cluster/supervisor.js';
import { removeHsm } from '../src/hsm/cluster/add-remove.js';
import { initCluster } from '../src/hsm/cluster/init.js';
import { restoreCluster } from '../src/hsm/cluster/lifecycle.js';
import { runCli } from './helpers/cli.js';
import { cliInProcess } from './helpers/hsm-cluster.js';

// Child processes and CLI spawns are slow on a loaded 2-core CI box: allow for it.
t.setTimeout(120_000);

t.test('backup, add-hsm, remove-hsm, tampered backup, restore', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'hsmproxy-lifecycle-'));
  const dir = join(root, 'cluster');
  const cluster = await startEmbeddedCluster({ dir, hsms: 2, scryptCost: 1024, node: { healthIntervalMs: 300, reconnectMinMs: 50, reconnectMaxMs: 300 } });
  t.teardown(async () => {
    await cluster.stop();
    await rm(root, { recursive: true, force: true });
  });
  const { client } = cluster;
  const env = { HSMPROXY_PIN: `${cluster.credentials.co.user}:${cluster.credentials.co.password}` };
  const key = await client.generateKeyPair('rsa:2048', { label: 'before-backup' });
  const pubDer = (await client.exportPublicKey(key.publicKey.keyId)).der;
  const msg = Buffer.from('signed before the backup');
  const sigBefore = await client.sign({ keyId: key.privateKey.keyId, mechanism: 'rsa-pkcs1-sha256', data: msg });

  // ---- backup ----
  // In-process runs of the CLI (same code, no spawn cost); one spawned run below checks stderr and the exit code.
  const b = await cliInProcess(['cluster', 'backup', '--dir', dir, '--json'], env);
  t.error(b.error, 'backup succeeds');
  const backup = JSON.parse(b.stdout) as { file: string; tokenKeys: number };
  t.equal(backup.tokenKeys, 2, 'the backup holds the key pair');
  t.equal((await readFile(backup.file)).indexOf(Buffer.from('before-backup')), -1, 'labels are not readable in the backup file');

  // A change after the backup: add-hsm must bring the new HSM up to date, not just restore.
  const later = await client.generateKey('aes:256', { label: 'after-backup' });

  // ---- add-hsm from the backup ----
  const add = await cliInProcess(['cluster', 'add-hsm', '--dir', dir, '--json'], env);
  t.error(add.error, 'add-hsm succeeds');
  const added = JSON.parse(add.stdout) as { hsm: { id: string }; from: string; inSync: boolean };
  t.equal(added.hsm.id, 'hsm-3');
  t.equal(added.from, 'backup');
  t.ok(added.inSync, 'the new HSM was brought in sync');
  await client.waitInRotation('hsm-3', 15_000);
  t.ok(client.members().some((m) => m.id === 'hsm-3'), 'the running client picked up the new HSM without a restart');

  const m = await readManifest(dir);
  const factory = await linkFactory(dir, m);
  const direct = await factory(membersOf(m).find((a) => a.id === 'hsm-3')!, cluster.credentials.cu);
  const sig3 = await direct.sign({ keyId: key.privateKey.keyId, mechanism: 'rsa-pkcs1-sha256', data: msg });
  t.ok(verify('sha256', msg, createPublicKey({ key: pubDer, format: 'der', type: 'spki' }), sig3), 'hsm-3 serves the existing key');
  t.ok((await direct.getKey(later.keyId)).keyId, 'and the key made after the backup');
  await direct.close();

  const status = await cliInProcess(['cluster', 'status', '--dir', dir, '--json']);
  t.error(status.error);
  const st = JSON.parse(status.stdout) as { hsms: Array<{ id: string; up: boolean; inSync: boolean; keysMax: number; keysToken: number }> };
  t.same(st.hsms.map((h) => [h.id, h.up, h.inSync]), [['hsm-1', true, true], ['hsm-2', true, true], ['hsm-3', true, true]], 'status: three HSMs up and in sync');
  t.ok(st.hsms.every((h) => h.keysMax === 3500 && h.keysToken === 3), 'status: keys occupied against the 3,500 limit');

  // ---- remove-hsm ----
  const pid3 = cluster.supervisor.pids().get('hsm-3');
  const rm3 = await cliInProcess(['cluster', 'remove-hsm', '--dir', dir, '--hsm', 'hsm-3', '--json']);
  t.error(rm3.error, 'remove-hsm succeeds');
  t.same((JSON.parse(rm3.stdout) as { remaining: string[] }).remaining, ['hsm-1', 'hsm-2']);
  const goneBy = Date.now() + 10_000;
  while ((cluster.supervisor.pids().has('hsm-3') || client.members().some((x) => x.id === 'hsm-3')) && Date.now() < goneBy) await new Promise((r) => setTimeout(r, 50));
  t.notOk(cluster.supervisor.pids().has('hsm-3'), `the supervisor stopped hsm-3 (pid ${pid3})`);
  t.notOk(client.members().some((x) => x.id === 'hsm-3'), 'the client dropped hsm-3');
  await client.sign({ keyId: key.privateKey.keyId, mechanism: 'rsa-pkcs1-sha256', data: msg });

  await t.rejects(removeHsm(dir, 'hsm-9'), { code: 'HSM_ERR_UNKNOWN_HSM', message: /no HSM hsm-9 in this cluster; known: hsm-1, hsm-2/ });

  // ---- tampered and truncated backups are refused; nothing is half-restored ----
  const bytes = await readFile(backup.file);
  const tampered = join(root, 'tampered.hsmbak');
  const flipped = Buffer.from(bytes);
  flipped[Math.floor(flipped.length / 2)] ^= 0x40;
  await writeFile(tampered, flipped);
  const keyFile = join(dir, m.maskingKey);
  const bad = await runCli(['cluster', 'restore', '--backup', tampered, '--dir', join(root, 'restored-bad'), '--cluster-key', keyFile]);
  t.not(bad.code, 0, 'a tampered backup is refused');
  t.match(bad.stderr, /altered/);
  t.equal(bad.stderr.trim().split('\n').length, 1, 'with one line, no stack trace');
  const truncated = join(root, 'truncated.hsmbak');
  await writeFile(truncated, bytes.subarray(0, bytes.length - 100));
  await t.rejects(restoreCluster({ backup: truncated, dir: join(root, 'restored-bad'), clusterKeyFile: keyFile }), { code: 'HSM_ERR_BACKUP_CORRUPT', message: /truncated/ }, 'a truncated backup is refused');
  t.same((await readdir(root)).filter((n) => n.includes('restored-bad')), [], 'nothing was half-restored');

  // ---- restore into a new directory ----
  const copy = join(root, 'copy.hsmbak');
  await copyFile(backup.file, copy);
  await t.rejects(restoreCluster({ backup: copy, dir: join(root, 'restored-x') }), { code: 'HSM_ERR_NEEDS_CLUSTER_KEY', message: /--cluster-key/ }, 'away from its cluster, a backup needs the cluster key');

  const newDir = join(root, 'restored');
  const res = await cliInProcess(['cluster', 'restore', '--backup', backup.file, '--dir', newDir, '--json']);
  t.error(res.error, 'restore succeeds');
  const restored = JSON.parse(res.stdout) as { hsms: string[]; tokenKeys: number };
  t.same(restored.hsms, ['hsm-1', 'hsm-2'], 'as many HSMs as the source had');
  const sup = new Supervisor({ dir: newDir, ephemeralPorts: true, watch: false });
  await sup.start();
  t.teardown(() => sup.stop());
  const rc = await connectCluster(newDir, { credentials: cluster.credentials.cu, watch: false });
  t.teardown(() => rc.close());
  const pubAfter = createPublicKey({ key: (await rc.exportPublicKey(key.publicKey.keyId)).der, format: 'der', type: 'spki' });
  t.ok(verify('sha256', msg, pubAfter, sigBefore), 'a signature made before the backup verifies with the restored key');
  const msg2 = Buffer.from('signed after the restore');
  const sigAfter = await rc.sign({ keyId: key.privateKey.keyId, mechanism: 'rsa-pkcs1-sha256', data: msg2 });
  t.ok(verify('sha256', msg2, createPublicKey({ key: pubDer, format: 'der', type: 'spki' }), sigAfter), 'the restored cluster signs with the same key');
  t.ok(rc.stats().every((s) => s.inRotation), 'both restored HSMs are in sync and serving');
});

t.test('remove-hsm refuses to remove the last HSM', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'hsmproxy-last-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  await initCluster({ dir: root, hsms: 1, scryptCost: 1024 });
  const r = await cliInProcess(['cluster', 'remove-hsm', '--dir', root, '--hsm', 'hsm-1']);
  t.match(r.error, { message: /refusing to remove hsm-1: it is the last HSM/ });
  t.equal((await readManifest(root)).hsms.length, 1, 'the manifest is unchanged');
});
