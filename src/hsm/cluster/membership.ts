// Cluster membership as the client sees it: the manifest's HSMs as addresses, the mTLS link
// factory built from the cluster's certificates, `connectCluster` (a ClusterClient that follows
// manifest changes without a restart), and adding/removing HSMs in the manifest. The client side
// (membersOf, linkFactory, connectCluster) reads a cluster directory or a proxy's client bundle.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ClusterClient, type ClusterClientOptions } from '../client/cluster-client.js';
import { HsmConnection } from '../client/connection.js';
import type { HsmAddress, LinkFactory, LoginCredentials } from '../client/link.js';
import type { HsmNodeOptions } from '../client/node.js';
import { LastHsmError, UnknownHsmError } from './lifecycle-errors.js';
import { clusterPath, manifestPath, readClientManifest, readManifest, writeManifest, type ClientManifest, type ClusterManifest, type ManifestHsm } from './manifest.js';

/** The manifest's HSMs as addresses. */
export function membersOf(m: ClientManifest): HsmAddress[] {
  return m.hsms.map((h) => ({ id: h.id, host: h.address, port: h.port }));
}

/** A link factory speaking mTLS with the client certificate of `dir` (cluster or bundle); logs in when given a user. */
export async function linkFactory(
  dir: string, m?: ClientManifest, requestTimeoutMs = 10_000,
): Promise<LinkFactory<HsmConnection>> {
  const man = m ?? (await readClientManifest(dir));
  const [ca, cert, key] = await Promise.all([
    readFile(clusterPath(dir, man.caCert)), readFile(clusterPath(dir, man.clientCert)),
    readFile(clusterPath(dir, man.clientKey)),
  ]);
  return async (addr, login) => {
    const c = await HsmConnection.connect({
      hsmId: addr.id, host: addr.host, port: addr.port, ca, cert, key, connectTimeoutMs: 3000, requestTimeoutMs,
    });
    if (login.user) {
      try {
        await c.login(login.user, login.password);
      } catch (err) {
        c.destroy();
        throw err;
      }
    }
    return c;
  };
}

/** Credentials the cluster keeps for its own sync work (an AU user), if any: DIR/sync-user.json (0600). */
export async function loadSyncCredentials(dir: string): Promise<LoginCredentials | undefined> {
  try {
    const c = JSON.parse(await readFile(join(dir, 'sync-user.json'), 'utf8')) as Partial<LoginCredentials>;
    return typeof c.user === 'string' && typeof c.password === 'string' ? { user: c.user, password: c.password } : undefined;
  } catch {
    return undefined;
  }
}

/** Options of `connectCluster`. */
export interface ConnectClusterOptions {
  credentials: LoginCredentials;
  /** Default: DIR/sync-user.json when present. */
  syncCredentials?: LoginCredentials;
  node?: HsmNodeOptions;
  /** Follow manifest changes (default true). */
  watch?: boolean;
  requestTimeoutMs?: number;
  extra?: Partial<ClusterClientOptions>;
}

/** A logged-in ClusterClient for the cluster in `dir` (directory or client bundle), following manifest changes. */
export async function connectCluster(dir: string, opts: ConnectClusterOptions): Promise<ClusterClient> {
  const m = await readClientManifest(dir);
  const sync = opts.syncCredentials ?? (await loadSyncCredentials(dir));
  return ClusterClient.connect({
    members: membersOf(m),
    factory: await linkFactory(dir, m, opts.requestTimeoutMs),
    credentials: opts.credentials,
    ...(sync ? { syncCredentials: sync } : {}),
    ...(opts.node ? { node: opts.node } : {}),
    ...(opts.watch === false ? {} : {
      membership: { file: manifestPath(dir), read: async () => membersOf(await readClientManifest(dir)) },
    }),
    ...opts.extra,
  });
}

/** The next free HSM id (hsm-N) and port (one past the highest in use). */
export function nextHsmSlot(m: ClusterManifest): { id: string; port: number } {
  let n = 1;
  const ids = new Set(m.hsms.map((h) => h.id));
  while (ids.has(`hsm-${n}`)) n++;
  const port = m.hsms.reduce((p, h) => Math.max(p, h.port), 0) + 1;
  return { id: `hsm-${n}`, port };
}

/** Adds an HSM entry to the manifest (atomic rewrite: running clients and supervisors pick it up). */
export async function addToManifest(dir: string, h: ManifestHsm): Promise<ClusterManifest> {
  const m = await readManifest(dir);
  m.hsms = [...m.hsms.filter((x) => x.id !== h.id), h];
  await writeManifest(dir, m);
  return m;
}

/** Removes an HSM from the manifest; refuses to remove the last one. */
export async function removeFromManifest(
  dir: string, id: string,
): Promise<{ manifest: ClusterManifest; removed: ManifestHsm }> {
  const m = await readManifest(dir);
  const removed = m.hsms.find((h) => h.id === id);
  if (!removed) throw new UnknownHsmError(id, m.hsms.map((h) => h.id));
  if (m.hsms.length === 1) throw new LastHsmError(id);
  m.hsms = m.hsms.filter((h) => h.id !== id);
  await writeManifest(dir, m);
  return { manifest: m, removed };
}

/** Records ports that HSMs actually bound (embedded mode listens on ephemeral ports). */
export async function recordPorts(dir: string, ports: Map<string, number>): Promise<ClusterManifest> {
  const m = await readManifest(dir);
  let changed = false;
  for (const h of m.hsms) {
    const p = ports.get(h.id);
    if (p !== undefined && p !== h.port) {
      h.port = p;
      changed = true;
    }
  }
  if (changed) await writeManifest(dir, m);
  return m;
}
