// Backup file format: sealed under a fresh EBK wrapped by a PBK from the cluster key; tamper,
// truncation and a foreign cluster key are refused; retention prunes old backups.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  latestBackup, listBackups, openBackup, pruneBackups, readBackupHeader, sealBackup, writeBackupFile,
} from '../src/hsm/cluster/backup.js';

const clusterKey = randomBytes(32);
const snapshot = Buffer.from('masked-users-and-keys:' + randomBytes(64).toString('hex'));

function seal(now?: Date): Buffer {
  return sealBackup({
    clusterKey, clusterId: 'ab'.repeat(32), sourceHsm: 'hsm-1', snapshot, policy: { profile: 'unlimited' },
    users: 3, tokenKeys: 5, digest: 'd'.repeat(64), ...(now ? { now } : {}),
  });
}

t.test('a sealed backup opens with the cluster key and gives back snapshot and policy', async (t) => {
  const out = openBackup(seal(), clusterKey);
  t.ok(out.snapshot.equals(snapshot));
  t.same(out.policy, { profile: 'unlimited' });
  t.equal(out.header.sourceHsm, 'hsm-1');
  t.equal(out.header.tokenKeys, 5);
});

t.test('the snapshot does not appear in the clear in the file', async (t) => {
  const bytes = seal();
  t.equal(bytes.indexOf(snapshot.subarray(0, 40)), -1);
  t.equal(bytes.indexOf(Buffer.from(snapshot.toString('base64').slice(0, 40))), -1);
});

t.test('each backup uses a fresh backup key (two backups of the same state differ)', async (t) => {
  t.notOk(seal().equals(seal()));
});

t.test('a flipped byte anywhere is refused', async (t) => {
  const bytes = seal();
  // Header, wrapped key, payload and MAC regions.
  for (const at of [9, 20, bytes.readUInt32BE(8) + 20, Math.floor(bytes.length / 2), bytes.length - 5]) {
    const bad = Buffer.from(bytes);
    bad[at] = (bad[at] ?? 0) ^ 0x01;
    t.throws(() => openBackup(bad, clusterKey), { code: /HSM_ERR_BACKUP_(CORRUPT|WRONG_CLUSTER)/ }, `byte ${at}`);
  }
});

t.test('a truncated backup is refused as truncated', async (t) => {
  const bytes = seal();
  t.throws(() => openBackup(bytes.subarray(0, bytes.length - 10), clusterKey), { code: 'HSM_ERR_BACKUP_CORRUPT', message: /truncated/ });
  t.throws(() => openBackup(bytes.subarray(0, 30), clusterKey), { code: 'HSM_ERR_BACKUP_CORRUPT' });
});

t.test('another cluster key cannot open the backup', async (t) => {
  t.throws(() => openBackup(seal(), randomBytes(32)), { code: 'HSM_ERR_BACKUP_WRONG_CLUSTER' });
});

t.test('a file that is not a backup is refused', async (t) => {
  t.throws(() => readBackupHeader(Buffer.from('hello world, not a backup at all')), { code: 'HSM_ERR_BACKUP_CORRUPT', message: /magic/ });
});

t.test('retention prunes backups older than the limit but keeps the newest', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-bak-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const now = new Date('2026-11-22T10:00:00Z');
  const old = new Date(now.getTime() - 100 * 86_400_000);
  const recent = new Date(now.getTime() - 10 * 86_400_000);
  const oldFile = await writeBackupFile(dir, seal(old), old.toISOString());
  const recentFile = await writeBackupFile(dir, seal(recent), recent.toISOString());
  await writeFile(join(dir, 'backups', 'notes.txt'), 'not a backup');
  t.same((await listBackups(dir)).map((b) => b.file), [oldFile, recentFile]);
  t.same(await pruneBackups(dir, 90, now), [oldFile]);
  t.equal((await latestBackup(dir)).file, recentFile);
  t.same(await pruneBackups(dir, 1, now), [], 'the newest backup is never pruned');
  t.ok((await readdir(join(dir, 'backups'))).includes('notes.txt'));
});

t.test('latestBackup says how to make one when there is none', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-bak-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await t.rejects(latestBackup(dir), { code: 'HSM_ERR_NO_BACKUP', message: /cluster backup/ });
});
