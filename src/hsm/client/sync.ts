// Bringing one HSM in sync with a healthy peer: compare state digests; if they differ, copy the
// peer's user table and token keys as masked objects (encrypted under the cluster key, so no key
// material is ever in the clear outside an HSM) and delete keys the peer no longer has.
import type { HsmLink } from './link.js';

/** What a resync did, for status and tests. */
export interface ResyncReport {
  usersCopied: boolean;
  keysCopied: number;
  keysDeleted: number;
  /** Keys present only on the target that it refused to delete (policy); they keep it out of sync. */
  keysNotDeleted: string[];
  inSync: boolean;
}

/** Whether two HSMs hold the same users and token keys. */
export async function inSync(a: HsmLink, b: HsmLink): Promise<boolean> {
  const [da, db] = await Promise.all([a.stateDigest(), b.stateDigest()]);
  return da.digest === db.digest;
}

/** Copies users and token keys from `source` to `target` until their digests match (or the difference cannot be closed). */
export async function resync(source: HsmLink, target: HsmLink): Promise<ResyncReport> {
  const report: ResyncReport = { usersCopied: false, keysCopied: 0, keysDeleted: 0, keysNotDeleted: [], inSync: false };
  // Users first: keys name their owner and sharees, who must exist on the target.
  await target.importUsers(await source.exportUsers());
  report.usersCopied = true;
  const [sourceIds, targetIds] = await Promise.all([source.listTokenKeyIds(), target.listTokenKeyIds()]);
  const have = new Set(targetIds);
  const want = new Set(sourceIds);
  for (const id of sourceIds) {
    if (have.has(id)) continue;
    await target.importMasked(await source.exportMasked(id));
    report.keysCopied++;
  }
  for (const id of targetIds) {
    if (want.has(id)) continue;
    try {
      await target.deleteKey(id);
      report.keysDeleted++;
    } catch {
      report.keysNotDeleted.push(id);
    }
  }
  if (await inSync(source, target)) {
    report.inSync = true;
    return report;
  }
  // Same ids but different attributes (a share or attribute change was missed): copy every key again.
  for (const id of sourceIds) {
    await target.importMasked(await source.exportMasked(id));
    report.keysCopied++;
  }
  report.inSync = await inSync(source, target);
  return report;
}
