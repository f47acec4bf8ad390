// `cluster backup` and `cluster restore` as library calls. A backup is a snapshot of one HSM in
// rotation (users, token keys — masked under the cluster key) plus the cluster policy, sealed by
// backup.ts. Restoring creates a NEW cluster directory: fresh customer CA, cluster certificate
// (so a new clusterId) and node certificates, as CloudHSM creates a new cluster from a backup —
// but the same cluster masking key, because the backup's PBK and the masked objects inside it
// derive from it. That key is the one secret a restore needs (--cluster-key FILE, by default the
// source cluster's cluster-masking.key when the backup still sits in DIR/backups). Everything is
// built in a temporary sibling directory and renamed into place at the end: a refused (tampered,
// truncated, foreign) backup or any failure leaves nothing behind.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, rmdir, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { LoginCredentials } from '../client/link.js';
import { Hsm } from '../device/index.js';
import {
  DEFAULT_RETENTION_DAYS, pruneBackups, readBackupFile, sealBackup, writeBackupFile, type BackupContents,
} from './backup.js';
import { initCluster } from './init.js';
import { ClusterLifecycleError } from './lifecycle-errors.js';
import { clusterPath, readManifest, writeManifest, type ManifestProfile } from './manifest.js';
import { connectCluster, loadSyncCredentials } from './membership.js';

/** What `backupCluster` wrote. */
export interface BackupResult {
  file: string;
  createdAt: string;
  sourceHsm: string;
  users: number;
  tokenKeys: number;
  pruned: string[];
}

/** Credentials for backup/clone work: the given ones, else the cluster's sync (AU) user. */
export async function adminCredentials(dir: string, given?: LoginCredentials): Promise<LoginCredentials> {
  const c = given ?? (await loadSyncCredentials(dir));
  if (!c) throw new ClusterLifecycleError('this needs a crypto officer or AU login: set HSMPROXY_PIN=<officer>:<password>', 'HSM_ERR_NEEDS_OFFICER');
  return c;
}

/** Snapshots one HSM in rotation and writes an encrypted backup to DIR/backups; prunes old ones. */
export async function backupCluster(
  dir: string, opts: { credentials?: LoginCredentials; retentionDays?: number; now?: Date } = {},
): Promise<BackupResult> {
  const m = await readManifest(dir);
  const clusterKey = await readFile(clusterPath(dir, m.maskingKey));
  const client = await connectCluster(
    dir, { credentials: await adminCredentials(dir, opts.credentials), watch: false },
  );
  let snap: { hsm: string; snapshot: Buffer; state: { digest: string; users: number; tokenKeys: number } };
  try {
    snap = await client.snapshotFrom();
  } finally {
    await client.close();
  }
  const now = opts.now ?? new Date();
  const bytes = sealBackup({
    clusterKey, clusterId: m.clusterId, sourceHsm: snap.hsm, snapshot: snap.snapshot,
    policy: { profile: m.hsms[0]?.profile ?? 'unlimited', hsms: m.hsms.length },
    users: snap.state.users, tokenKeys: snap.state.tokenKeys, digest: snap.state.digest, now,
  });
  const file = await writeBackupFile(dir, bytes, now.toISOString());
  const pruned = await pruneBackups(dir, opts.retentionDays ?? DEFAULT_RETENTION_DAYS, now);
  return {
    file, createdAt: now.toISOString(), sourceHsm: snap.hsm, users: snap.state.users, tokenKeys: snap.state.tokenKeys,
    pruned,
  };
}

/** The cluster key for a backup: the given file, else the source cluster's (the backup's DIR/backups/..). */
export async function clusterKeyForBackup(backupFile: string, keyFile?: string): Promise<Buffer> {
  let file = keyFile;
  if (!file) {
    const sourceDir = dirname(dirname(resolve(backupFile)));
    try {
      const m = await readManifest(sourceDir);
      file = clusterPath(sourceDir, m.maskingKey);
    } catch {
      throw new ClusterLifecycleError(`restoring ${basename(backupFile)} needs the source cluster's key: pass --cluster-key FILE (its cluster-masking.key)`, 'HSM_ERR_NEEDS_CLUSTER_KEY');
    }
  }
  const key = await readFile(file).catch(() => {
    throw new ClusterLifecycleError(`cannot read the cluster key ${file}`, 'HSM_ERR_NEEDS_CLUSTER_KEY');
  });
  if (key.length !== 32) throw new ClusterLifecycleError(`${file} is not a cluster key (32 bytes expected, found ${key.length})`, 'HSM_ERR_NEEDS_CLUSTER_KEY');
  return key;
}

/** Restores `snapshot` into an empty HSM data directory and checks it reports the backup's digest. */
export async function restoreHsmStore(
  dataDir: string, hsmId: string, snapshot: Buffer, clusterKey: Buffer, profile: ManifestProfile, expectDigest?: string,
  scryptCost?: number,
): Promise<void> {
  await rm(dataDir, { recursive: true, force: true });
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const hsm = await Hsm.restore(
    snapshot, { dir: dataDir, hsmId, clusterKey, capacity: profile, ...(scryptCost ? { scryptCost } : {}) },
  );
  try {
    const got = hsm.stateDigest().digest;
    if (expectDigest && got !== expectDigest) throw new ClusterLifecycleError(`the restored ${hsmId} does not match the backup's state digest`, 'HSM_ERR_BACKUP_CORRUPT');
  } finally {
    await hsm.close();
  }
}

/** Options of `restoreCluster`. */
export interface RestoreOptions {
  backup: string;
  /** The new cluster directory (must not exist, or be empty). */
  dir: string;
  clusterKey?: Buffer;
  clusterKeyFile?: string;
  /** HSMs of the new cluster (default: as many as the source had). */
  hsms?: number;
  basePort?: number;
  scryptCost?: number;
}

/** What `restoreCluster` made. */
export interface RestoreResult {
  dir: string;
  clusterId: string;
  fromClusterId: string;
  backupCreatedAt: string;
  hsms: string[];
  users: number;
  tokenKeys: number;
}

async function emptyOrMissing(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).length === 0;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

/** Creates a new cluster in `opts.dir` from a backup; all or nothing. */
export async function restoreCluster(opts: RestoreOptions): Promise<RestoreResult> {
  const target = resolve(opts.dir);
  if (!(await emptyOrMissing(target))) throw new ClusterLifecycleError(`${target} is not empty; restore into a new directory`, 'HSM_ERR_CLUSTER_EXISTS');
  const key = opts.clusterKey ?? (await clusterKeyForBackup(opts.backup, opts.clusterKeyFile));
  // Authenticate and decrypt first: a tampered or truncated backup stops here, before any write.
  const contents: BackupContents = await readBackupFile(opts.backup, key);
  const profile = (typeof contents.policy.profile === 'string' ? contents.policy.profile : 'unlimited') as ManifestProfile;
  const n = opts.hsms ?? (typeof contents.policy.hsms === 'number' ? contents.policy.hsms : 1);
  const tmp = join(dirname(target), `.${basename(target)}.restoring-${randomBytes(4).toString('hex')}`);
  try {
    await initCluster({
      dir: tmp, hsms: n, profile, ...(opts.basePort ? { basePort: opts.basePort } : {}),
      ...(opts.scryptCost ? { scryptCost: opts.scryptCost } : {})
    });
    const m = await readManifest(tmp);
    await writeFile(clusterPath(tmp, m.maskingKey), key, { mode: 0o600 });
    for (const h of m.hsms) {
      await restoreHsmStore(
        clusterPath(tmp, h.dataDir), h.id, contents.snapshot, key, profile, contents.header.digest, opts.scryptCost,
      );
    }
    await writeManifest(tmp, { ...m, activated: true });
    await rmdir(target).catch(() => undefined);
    await rename(tmp, target);
    return {
      dir: target, clusterId: m.clusterId, fromClusterId: contents.header.clusterId,
      backupCreatedAt: contents.header.createdAt,
      hsms: m.hsms.map((h) => h.id), users: contents.header.users, tokenKeys: contents.header.tokenKeys,
    };
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

