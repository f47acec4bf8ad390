// `cluster status` as a library call: asks every HSM of the manifest for its info (no login
// needed) and reports health, address, key occupancy against the limit, users, and whether
// its state digest matches the cluster's (the digest most reachable HSMs agree on).
import { HsmConnection } from '../client/connection.js';
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
  inSync?: boolean;
}

/** The whole cluster's status. */
export interface ClusterStatus {
  clusterId: string;
  hsms: HsmStatus[];
  latestBackup?: string;
  backups: number;
}

/** Queries every HSM of the cluster in `dir` (each bounded by `timeoutMs`). */
export async function clusterStatus(dir: string, timeoutMs = 3000): Promise<ClusterStatus> {
  const m = await readManifest(dir);
  const [ca, cert, key] = await Promise.all([
    readFile(clusterPath(dir, m.caCert)), readFile(clusterPath(dir, m.clientCert)), readFile(clusterPath(dir, m.clientKey)),
  ]);
  const hsms = await Promise.all(m.hsms.map(async (h): Promise<HsmStatus> => {
    const base = { id: h.id, address: `${h.address}:${h.port}` };
    let conn: HsmConnection | undefined;
    try {
      conn = await HsmConnection.connect({ hsmId: h.id, host: h.address, port: h.port, ca, cert, key, connectTimeoutMs: timeoutMs, requestTimeoutMs: timeoutMs });
      const info = await conn.info();
      return {
        ...base, up: true, profile: info.profile, keysToken: info.occupancy.token, keysSession: info.occupancy.session,
        keysMax: info.occupancy.max, users: info.users, utilisation: info.utilisation, digest: info.state.digest,
      };
    } catch (err) {
      return { ...base, up: false, error: (err as Error).message };
    } finally {
      conn?.destroy();
    }
  }));
  const votes = new Map<string, number>();
  for (const s of hsms) if (s.digest) votes.set(s.digest, (votes.get(s.digest) ?? 0) + 1);
  const majority = [...votes].sort((a, b) => b[1] - a[1])[0]?.[0];
  for (const s of hsms) if (s.up) s.inSync = s.digest === majority;
  const backups = await listBackups(dir);
  const last = backups.at(-1);
  return { clusterId: m.clusterId, hsms, backups: backups.length, ...(last ? { latestBackup: last.file } : {}) };
}
