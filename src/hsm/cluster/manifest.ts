// The cluster manifest, DIR/cluster.json: the cluster's identity, its HSMs and where its
// certificates live. Paths inside are relative to DIR so a cluster directory can be moved.
// A proxy's client bundle (clients.ts) holds a smaller manifest of the same shape, `kind:
// 'client-bundle'`, naming only what a client needs: readClientManifest reads either, and
// readManifest (cluster administration, HSM nodes) refuses a bundle.
import { readFile, writeFile, rename } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { HsmError } from '../device/index.js';

/** Capacity profiles an HSM of the manifest may name. */
export type ManifestProfile = 'unlimited' | 'hsm1.medium' | 'hsm2m.medium';

/** One HSM of the cluster. */
export interface ManifestHsm {
  id: string;
  address: string;
  port: number;
  /** The device's data directory (relative to the cluster directory). */
  dataDir: string;
  profile: ManifestProfile;
  /** Node certificate (chain: node, cluster) and key. */
  cert: string;
  key: string;
}

/** DIR/cluster.json. */
export interface ClusterManifest {
  version: 1;
  /** SHA-256 fingerprint (hex) of the cluster certificate: the cluster's identity. */
  clusterId: string;
  createdAt: string;
  /** Customer CA certificate (and, in this simulation, its key; in real life kept offline). */
  caCert: string;
  caKey: string;
  clusterCert: string;
  clusterKey: string;
  clientCert: string;
  clientKey: string;
  /** The 32-byte cluster masking key shared by member HSMs (0600). */
  maskingKey: string;
  /** Whether `cluster activate` has replaced the PRECO's one-time password. */
  activated: boolean;
  hsms: ManifestHsm[];
}

/** One HSM as a client sees it: where to reach it. */
export type ClientHsm = Pick<ManifestHsm, 'id' | 'address' | 'port'>;

/**
 * What a cluster client reads: the cluster's identity, its HSMs' addresses, the customer CA
 * certificate and the client certificate and key. A cluster manifest is one; so is the
 * cluster.json of a client bundle, which names nothing else.
 */
export interface ClientManifest {
  version: 1;
  /** 'client-bundle' in a bundle's cluster.json; absent in a cluster directory's. */
  kind?: 'client-bundle';
  clusterId: string;
  caCert: string;
  clientCert: string;
  clientKey: string;
  hsms: ClientHsm[];
  /** The bundle's client certificate, as recorded in the cluster (bundles only). */
  client?: { name: string; serial: string };
}

/** The manifest is missing or unreadable. */
export class ManifestError extends HsmError {
  constructor(message: string) {
    super(message, 'HSM_ERR_MANIFEST');
    this.name = 'ManifestError';
  }
}

/** Path of the manifest in a cluster directory. */
export function manifestPath(dir: string): string {
  return join(dir, 'cluster.json');
}

/** Resolves a manifest path (relative to the cluster directory) to an absolute one. */
export function clusterPath(dir: string, p: string): string {
  return isAbsolute(p) ? p : join(dir, p);
}

// DIR/cluster.json parsed, with the checks both kinds of manifest share.
async function parseManifest(dir: string): Promise<ClientManifest & Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(manifestPath(dir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ManifestError(`no cluster in ${dir} (no cluster.json); create one with \`hsmproxy cluster init --dir ${dir}\` or pass --dir / HSMPROXY_DIR`);
    }
    throw new ManifestError(`cannot read ${manifestPath(dir)}: ${(err as Error).message}`);
  }
  let m: ClientManifest & Record<string, unknown>;
  try {
    m = JSON.parse(text) as ClientManifest & Record<string, unknown>;
  } catch {
    throw new ManifestError(`${manifestPath(dir)} is not valid JSON; restore it from a copy or re-create the cluster`);
  }
  if (m === null || typeof m !== 'object' || m.version !== 1 || typeof m.clusterId !== 'string' || !Array.isArray(m.hsms)) {
    throw new ManifestError(`${manifestPath(dir)} is not an hsmproxy cluster manifest (version 1)`);
  }
  return m;
}

/** Reads DIR/cluster.json; ManifestError says how to create one when missing, and refuses a client bundle. */
export async function readManifest(dir: string): Promise<ClusterManifest> {
  const m = await parseManifest(dir);
  if (m.kind === 'client-bundle') {
    throw new ManifestError(`${dir} is the client bundle of "${m.client?.name ?? '?'}" (what a proxy needs to reach the HSMs), not a cluster directory: pass the cluster's own directory (--dir / HSMPROXY_DIR) to administer the cluster or run its HSMs`);
  }
  return m as unknown as ClusterManifest;
}

/** Reads what a cluster client needs from DIR/cluster.json: a cluster directory's or a client bundle's. */
export async function readClientManifest(dir: string): Promise<ClientManifest> {
  const m = await parseManifest(dir);
  for (const f of ['caCert', 'clientCert', 'clientKey'] as const) {
    if (typeof m[f] !== 'string') throw new ManifestError(`${manifestPath(dir)} names no ${f}; issue a new client bundle with \`hsmproxy cluster client-cert\``);
  }
  return m;
}

/** Writes the manifest atomically (temp file + rename). */
export async function writeManifest(dir: string, m: ClusterManifest): Promise<void> {
  const p = manifestPath(dir);
  await writeFile(p + '.tmp', JSON.stringify(m, null, 2) + '\n', { mode: 0o644 });
  await rename(p + '.tmp', p);
}

/** The HSM `id` of the manifest (default: the first); ManifestError lists the ids otherwise. */
export function findHsm<H extends ClientHsm>(m: { hsms: H[] }, id?: string): H {
  const h = id === undefined ? m.hsms[0] : m.hsms.find((x) => x.id === id);
  if (!h) throw new ManifestError(`no HSM ${id ?? ''} in this cluster; its HSMs are: ${m.hsms.map((x) => x.id).join(', ') || 'none'}`);
  return h;
}
