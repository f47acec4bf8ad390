// The cluster manifest, DIR/cluster.json: the cluster's identity, its HSMs and where its
// certificates live. Paths inside are relative to DIR so a cluster directory can be moved.
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

/** Reads DIR/cluster.json; ManifestError says how to create one when missing. */
export async function readManifest(dir: string): Promise<ClusterManifest> {
  let text: string;
  try {
    text = await readFile(manifestPath(dir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ManifestError(`no cluster in ${dir} (no cluster.json); create one with \`hsmproxy cluster init --dir ${dir}\` or pass --dir / HSMPROXY_DIR`);
    }
    throw new ManifestError(`cannot read ${manifestPath(dir)}: ${(err as Error).message}`);
  }
  let m: ClusterManifest;
  try {
    m = JSON.parse(text) as ClusterManifest;
  } catch {
    throw new ManifestError(`${manifestPath(dir)} is not valid JSON; restore it from a copy or re-create the cluster`);
  }
  if (m.version !== 1 || typeof m.clusterId !== 'string' || !Array.isArray(m.hsms)) {
    throw new ManifestError(`${manifestPath(dir)} is not an hsmproxy cluster manifest (version 1)`);
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
export function findHsm(m: ClusterManifest, id?: string): ManifestHsm {
  const h = id === undefined ? m.hsms[0] : m.hsms.find((x) => x.id === id);
  if (!h) throw new ManifestError(`no HSM ${id ?? ''} in this cluster; its HSMs are: ${m.hsms.map((x) => x.id).join(', ') || 'none'}`);
  return h;
}
