// Bringing one HSM in sync with a healthy peer: compare state digests; if they differ, copy the
// peer's user table and token keys as masked objects (encrypted under the cluster key, so no key
// material is ever in the clear outside an HSM) and delete keys the peer no longer has. Every
// masked object carries its version and an HSM applies only newer ones, so
// copying never undoes a change: what the target holds newer than the peer is reported
// (`newerOnTarget`), and `merge` copies it the other way.
import type { HsmLink } from './link.js';

/** What a resync did, for status and tests. */
export interface ResyncReport {
  usersCopied: boolean;
  keysCopied: number;
  keysDeleted: number;
  /** Keys present only on the target that it refused to delete (policy); they keep it out of sync. */
  keysNotDeleted: string[];
  /** Objects the target holds in a newer version than the source (it refused the older copy). */
  newerOnTarget: string[];
  inSync: boolean;
}

/** Whether two HSMs hold the same users and token keys. */
export async function inSync(a: HsmLink, b: HsmLink): Promise<boolean> {
  const [da, db] = await Promise.all([a.stateDigest(), b.stateDigest()]);
  return da.digest === db.digest;
}

// An import the target refused because it holds a newer version: not a failure of the copy.
async function unlessStale(what: string, report: ResyncReport, fn: () => Promise<unknown>): Promise<boolean> {
  try {
    await fn();
    return true;
  } catch (err) {
    if ((err as { code?: unknown }).code !== 'HSM_ERR_STALE_OBJECT') throw err;
    report.newerOnTarget.push(what);
    return false;
  }
}

/** Copies users and token keys from `source` to `target` until their digests match (or the gap cannot be closed). */
export async function resync(source: HsmLink, target: HsmLink): Promise<ResyncReport> {
  const report = await copy(source, target);
  if (await inSync(source, target)) {
    report.inSync = true;
    return report;
  }
  // Same ids but different versions (a share or attribute change was missed): copy every key
  // again; the ones the target already holds are no-ops, older ones are refused.
  for (const id of await source.listTokenKeyIds()) {
    if (await unlessStale(`key ${id}`, report, async () => target.importMasked(await source.exportMasked(id)))) report.keysCopied++;
  }
  report.inSync = await inSync(source, target);
  return report;
}

/**
 * Copies to `target` what `source` holds newer (users, deletions, key versions) or that `target`
 * never had, deleting nothing: how changes that reached one HSM only (never acknowledged, or made
 * behind the client's back) reach the others instead of being undone.
 */
export async function merge(source: HsmLink, target: HsmLink): Promise<ResyncReport> {
  const report = emptyReport();
  report.usersCopied = await unlessStale('the user table', report, async () => target.importUsers(await source.exportUsers()));
  for (const id of await source.listTokenKeyIds()) {
    if (await unlessStale(`key ${id}`, report, async () => target.importMasked(await source.exportMasked(id)))) report.keysCopied++;
  }
  report.inSync = await inSync(source, target);
  return report;
}

function emptyReport(): ResyncReport {
  return { usersCopied: false, keysCopied: 0, keysDeleted: 0, keysNotDeleted: [], newerOnTarget: [], inSync: false };
}

async function copy(source: HsmLink, target: HsmLink): Promise<ResyncReport> {
  const report = emptyReport();
  // Users first: keys name their owner and sharees, who must exist on the target. The table
  // also carries the source's deletions of keys and users.
  report.usersCopied = await unlessStale('the user table', report, async () => target.importUsers(await source.exportUsers()));
  const [sourceIds, targetIds] = await Promise.all([source.listTokenKeyIds(), target.listTokenKeyIds()]);
  const have = new Set(targetIds);
  const want = new Set(sourceIds);
  for (const id of sourceIds) {
    if (have.has(id)) continue;
    if (await unlessStale(`key ${id}`, report, async () => target.importMasked(await source.exportMasked(id)))) report.keysCopied++;
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
  return report;
}
