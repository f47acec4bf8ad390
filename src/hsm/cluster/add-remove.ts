// `cluster add-hsm` and `cluster remove-hsm` as library calls. A new HSM is cloned from the
// latest backup or from a live snapshot of an HSM in rotation (masked under the cluster key
// either way), gets a node certificate issued by the cluster key, and joins the manifest; a
// running supervisor starts it and running clients admit it once its state digest matches a
// healthy peer (resyncing it first if the backup was older than the cluster's state).
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LoginCredentials } from '../client/link.js';
import { HsmError } from '../device/index.js';
import { latestBackup, readBackupFile } from './backup.js';
import { createNodeCert, isNodeHost, loadIssued, privateKeyPem } from './certs.js';
import { adminCredentials, restoreHsmStore } from './lifecycle.js';
import { addToManifest, connectCluster, nextHsmSlot, removeFromManifest } from './membership.js';
import { clusterPath, readManifest, type ManifestHsm } from './manifest.js';

/** Options of `addHsm`. */
export interface AddHsmOptions {
  /** Clone from the latest backup (default) or a live HSM in rotation. */
  from?: 'backup' | 'live';
  /** CO/AU login for a live clone (default: the cluster's sync user). */
  credentials?: LoginCredentials;
  scryptCost?: number;
  /** Where the new HSM listens (IP or DNS name; default: the first HSM's address). */
  host?: string;
}

/** What `addHsm` did. */
export interface AddHsmResult {
  hsm: ManifestHsm;
  from: 'backup' | 'live';
  /** The backup file or the HSM cloned. */
  source: string;
  tokenKeys: number;
}

/** Makes a new HSM from a backup or a live clone and adds it to the manifest. */
export async function addHsm(dir: string, opts: AddHsmOptions = {}): Promise<AddHsmResult> {
  if (opts.host !== undefined && !isNodeHost(opts.host)) throw new HsmError(`--host takes an IP address or a DNS name, got "${opts.host}"`, 'HSM_ERR_INVALID_ARGUMENT');
  const m = await readManifest(dir);
  const from = opts.from ?? 'backup';
  const clusterKey = await readFile(clusterPath(dir, m.maskingKey));
  let snapshot: Buffer;
  let source: string;
  let digest: string;
  let tokenKeys: number;
  if (from === 'backup') {
    const b = await latestBackup(dir);
    const contents = await readBackupFile(b.file, clusterKey);
    ({ snapshot } = contents);
    source = b.file;
    digest = contents.header.digest;
    tokenKeys = contents.header.tokenKeys;
  } else {
    const client = await connectCluster(
      dir, { credentials: await adminCredentials(dir, opts.credentials), watch: false },
    );
    try {
      const s = await client.snapshotFrom();
      ({ snapshot } = s);
      source = s.hsm;
      digest = s.state.digest;
      tokenKeys = s.state.tokenKeys;
    } finally {
      await client.close();
    }
  }
  const slot = nextHsmSlot(m);
  const profile = m.hsms[0]?.profile ?? 'unlimited';
  const h: ManifestHsm = {
    id: slot.id, address: opts.host ?? m.hsms[0]?.address ?? '127.0.0.1', port: slot.port, dataDir: `hsms/${slot.id}`, profile,
    cert: `pki/${slot.id}.crt`, key: `pki/${slot.id}.key`,
  };
  const issuer = await loadIssued(clusterPath(dir, m.clusterCert), clusterPath(dir, m.clusterKey));
  const node = await createNodeCert(issuer, h.id, h.address);
  await restoreHsmStore(clusterPath(dir, h.dataDir), h.id, snapshot, clusterKey, profile, digest, opts.scryptCost);
  await mkdir(join(dir, 'pki'), { recursive: true, mode: 0o700 });
  await writeFile(clusterPath(dir, h.cert), node.cert.toString('pem') + '\n' + issuer.cert.toString('pem') + '\n');
  await writeFile(clusterPath(dir, h.key), await privateKeyPem(node.keys), { mode: 0o600 });
  // Last: only a complete HSM (store, certificate) ever appears in the manifest.
  await addToManifest(dir, h);
  return { hsm: h, from, source, tokenKeys };
}

/** Takes an HSM out of the manifest (running supervisors stop it, clients drop it); refuses the last one. */
export async function removeHsm(dir: string, id: string): Promise<{ removed: ManifestHsm; remaining: string[] }> {
  const { manifest, removed } = await removeFromManifest(dir, id);
  return { removed, remaining: manifest.hsms.map((h) => h.id) };
}
