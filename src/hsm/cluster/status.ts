// `cluster status` as a library call: asks every HSM of the manifest for its info (no login
// needed) and reports health, address, key occupancy against the limit, users, and whether
// it holds the cluster's current state, by the rule the cluster client admits HSMs with
// (client/current.ts): when that rule cannot prove any group current, status says so instead
// of guessing.
import { HsmConnection } from '../client/connection.js';
import { currentState } from '../client/current.js';
import { listBackups } from './backup.js';
import { clusterPath, readManifest } from './manifest.js';
import { readFile } from 'node:fs/promises';

/** One HSM's line of `cluster status`. */
export interface HsmStatus {
  id: string;
  address: string;
  up: boolean;
  error?: string;
  profile?: string;
  keysToken?: number;
  keysSession?: number;
  keysMax?: number;
  users?: number;
  utilisation?: number;
  digest?: string;
  /** Changes since the HSM process started (the rule's tie-break when every HSM answered). */
  version?: number;
  /**
   * Whether it holds the cluster's current state: true/false when the rule proves a group
   * current; undefined when the HSM is down or nothing proves which state is current (see
   * ClusterStatus.syncUnproven).
   */
  inSync?: boolean;
}

/** The whole cluster's status. */
export interface ClusterStatus {
  clusterId: string;
  /** False until `cluster activate`; until then the HSMs' states differ by design (each salted its own password). */
  activated: boolean;
  hsms: HsmStatus[];
  /** Why no HSM can be called in sync (peers unreachable, or a disagreement nothing settles); absent when proven. */
  syncUnproven?: string;
  latestBackup?: string;
  backups: number;
}

/** Queries every HSM of the cluster in `dir` (each bounded by `timeoutMs`). */
export async function clusterStatus(dir: string, timeoutMs = 3000): Promise<ClusterStatus> {
  const m = await readManifest(dir);
  const [ca, cert, key] = await Promise.all([
    readFile(clusterPath(dir, m.caCert)), readFile(clusterPath(dir, m.clientCert)),
    readFile(clusterPath(dir, m.clientKey)),
  ]);
  const hsms = await Promise.all(m.hsms.map(async (h): Promise<HsmStatus> => {
    const base = { id: h.id, address: `${h.address}:${h.port}` };
    let conn: HsmConnection | undefined;
    try {
      conn = await HsmConnection.connect({
        hsmId: h.id, host: h.address, port: h.port, ca, cert, key, connectTimeoutMs: timeoutMs,
        requestTimeoutMs: timeoutMs,
      });
      const info = await conn.info();
      return {
        ...base, up: true, profile: info.profile, keysToken: info.occupancy.token, keysSession: info.occupancy.session,
        keysMax: info.occupancy.max, users: info.users, utilisation: info.utilisation, digest: info.state.digest,
        version: info.state.version,
      };
    } catch (err) {
      return { ...base, up: false, error: (err as Error).message };
    } finally {
      conn?.destroy();
    }
  }));
  // Before activation the HSMs differ by design: no verdict; status says the cluster is not activated yet.
  const unproven = m.activated ? applySyncVerdict(hsms, m.hsms.map((h) => h.id)) : undefined;
  const backups = await listBackups(dir);
  const last = backups.at(-1);
  return {
    clusterId: m.clusterId, activated: m.activated, hsms, ...(unproven ? { syncUnproven: unproven } : {}),
    backups: backups.length, ...(last ? { latestBackup: last.file } : {}),
  };
}

/**
 * Sets `inSync` on the HSMs that answered, by the cluster client's rule (currentState) over the
 * manifest's `members`. Returns the rule's reason when it proves no group current (every
 * `inSync` then stays undefined).
 */
export function applySyncVerdict(hsms: HsmStatus[], members: readonly string[]): string | undefined {
  const reports = hsms.flatMap((s) => (
    s.up && s.digest !== undefined ? [{ id: s.id, digest: s.digest, version: s.version ?? 0 }] : []
  ));
  const cur = currentState(reports, members);
  if (!cur) return undefined;
  if (!cur.proven) return cur.reason ?? 'nothing proves which HSMs hold the current state';
  for (const s of hsms) if (s.up && s.digest !== undefined) s.inSync = cur.ids.includes(s.id);
  return undefined;
}
