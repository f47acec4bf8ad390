// hsm/cluster: cluster lifecycle. This file: `cluster init`: the customer CA (self-signed root;
// in real life the customer's offline key), the cluster key pair whose CSR the CA signs (the
// cluster certificate; its SHA-256 fingerprint is the clusterId), a node certificate per HSM,
// the client certificate, the shared 32-byte masking key, each HSM's store with the PRECO's
// one-time password, and DIR/cluster.json. May import hsm/device, hsm/protocol, hsm/client,
// hsm/node.ts and node built-ins.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Hsm, HsmError, PRECO_USER } from '../device/index.js';
import { createClientCert, createClusterCert, createCustomerCa, createNodeCert, fingerprint, isNodeHost, privateKeyPem } from './certs.js';
import { clusterPath, manifestPath, writeManifest, type ClusterManifest, type ManifestHsm, type ManifestProfile } from './manifest.js';

/** The most HSMs a cluster may have (CloudHSM's limit). */
export const MAX_HSMS = 28;
/** Default first port: CloudHSM clients talk to HSMs on 2223-2225. */
export const DEFAULT_BASE_PORT = 2223;

/** Options of `initCluster`. */
export interface InitClusterOptions {
  dir: string;
  hsms?: number;
  profile?: ManifestProfile;
  /** HSM i listens on basePort + i - 1. */
  basePort?: number;
  /** scrypt cost for the devices' password hashing (tests may lower it). */
  scryptCost?: number;
  /**
   * The address each HSM listens on and clients reach it at (IP or DNS name; default 127.0.0.1):
   * one for every HSM, or a list with one per HSM (e.g. the DNS names of a StatefulSet's pods).
   */
  host?: string | readonly string[];
}

/** What init made; `precoPassword` is shown once and never stored. */
export interface InitClusterResult {
  dir: string;
  manifest: ClusterManifest;
  precoUser: string;
  precoPassword: string;
}

/** Refusal to init over an existing cluster. */
export class ClusterExistsError extends HsmError {
  constructor(dir: string) {
    super(`${dir} already holds a cluster (cluster.json); pick another --dir, or delete that directory to start over (its keys are lost)`, 'HSM_ERR_CLUSTER_EXISTS');
    this.name = 'ClusterExistsError';
  }
}

async function isNonEmptyDir(p: string): Promise<boolean> {
  try {
    return (await readdir(p)).length > 0;
  } catch {
    return false;
  }
}

async function writeSecret(p: string, data: string | Buffer): Promise<void> {
  await writeFile(p, data, { mode: 0o600, flag: 'wx' });
}

/** Creates a new cluster in `dir`: certificates, masking key, HSM stores, manifest. */
export async function initCluster(opts: InitClusterOptions): Promise<InitClusterResult> {
  const n = opts.hsms ?? 1;
  const profile = opts.profile ?? 'unlimited';
  const basePort = opts.basePort ?? DEFAULT_BASE_PORT;
  if (!Number.isInteger(n) || n < 1 || n > MAX_HSMS) throw new HsmError(`--hsms must be a whole number from 1 to ${MAX_HSMS}`, 'HSM_ERR_INVALID_ARGUMENT');
  if (!Number.isInteger(basePort) || basePort < 1 || basePort + n - 1 > 65535) throw new HsmError('--base-port must leave room for one port per HSM below 65536', 'HSM_ERR_INVALID_ARGUMENT');
  const given = opts.host ?? '127.0.0.1';
  const hosts = typeof given === 'string' ? Array<string>(n).fill(given) : [...given];
  if (hosts.length !== n) throw new HsmError(`--host names ${hosts.length} addresses for ${n} HSMs: give one for all, or one per HSM`, 'HSM_ERR_INVALID_ARGUMENT');
  for (const host of hosts) {
    if (!isNodeHost(host)) throw new HsmError(`--host takes an IP address or a DNS name, got "${host}"`, 'HSM_ERR_INVALID_ARGUMENT');
  }
  const dir = opts.dir;
  if (await isNonEmptyDir(dir)) {
    const existing = await readdir(dir);
    if (existing.includes('cluster.json') || existing.includes('hsms') || existing.includes('pki')) throw new ClusterExistsError(dir);
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const pki = join(dir, 'pki');
  await mkdir(pki, { mode: 0o700 });
  try {
    return await create(dir, n, profile, basePort, hosts, opts.scryptCost);
  } catch (err) {
    // Leave no half-made cluster behind: a retry must not hit "already exists".
    await rm(pki, { recursive: true, force: true });
    await rm(join(dir, 'hsms'), { recursive: true, force: true });
    await rm(join(dir, 'cluster-masking.key'), { force: true });
    await rm(manifestPath(dir), { force: true });
    throw err;
  }
}

async function create(
  dir: string, n: number, profile: ManifestProfile, basePort: number, hosts: readonly string[], scryptCost?: number,
): Promise<InitClusterResult> {
  const ca = await createCustomerCa();
  const cluster = await createClusterCert(ca);
  const client = await createClientCert(ca);
  const files = {
    caCert: 'pki/customer-ca.crt', caKey: 'pki/customer-ca.key',
    clusterCert: 'pki/cluster.crt', clusterKey: 'pki/cluster.key',
    clientCert: 'pki/client.crt', clientKey: 'pki/client.key',
    maskingKey: 'cluster-masking.key',
  };
  await writeFile(join(dir, files.caCert), ca.cert.toString('pem') + '\n');
  await writeSecret(join(dir, files.caKey), await privateKeyPem(ca.keys));
  await writeFile(join(dir, 'pki/cluster.csr'), cluster.csr.toString('pem') + '\n');
  await writeFile(join(dir, files.clusterCert), cluster.cert.toString('pem') + '\n');
  await writeSecret(join(dir, files.clusterKey), await privateKeyPem(cluster.keys));
  await writeFile(join(dir, files.clientCert), client.cert.toString('pem') + '\n');
  await writeSecret(join(dir, files.clientKey), await privateKeyPem(client.keys));
  const maskingKey = randomBytes(32);
  await writeSecret(join(dir, files.maskingKey), maskingKey);

  const precoPassword = randomBytes(12).toString('base64url');
  const hsms: ManifestHsm[] = [];
  await mkdir(join(dir, 'hsms'), { mode: 0o700 });
  for (let i = 1; i <= n; i++) {
    const id = `hsm-${i}`;
    const host = hosts[i - 1]!;
    const node = await createNodeCert(cluster, id, host);
    const h: ManifestHsm = {
      id, address: host, port: basePort + i - 1, dataDir: `hsms/${id}`, profile,
      cert: `pki/${id}.crt`, key: `pki/${id}.key`,
    };
    // The node presents its own certificate followed by the cluster certificate.
    await writeFile(join(dir, h.cert), node.cert.toString('pem') + '\n' + cluster.cert.toString('pem') + '\n');
    await writeSecret(join(dir, h.key), await privateKeyPem(node.keys));
    await mkdir(clusterPath(dir, h.dataDir), { mode: 0o700 });
    const device = await Hsm.open({
      dir: clusterPath(dir, h.dataDir), hsmId: id, clusterKey: maskingKey, initialPassword: precoPassword,
      capacity: profile,
      ...(scryptCost !== undefined ? { scryptCost } : {}),
    });
    await device.close();
    hsms.push(h);
  }
  const manifest: ClusterManifest = {
    version: 1, clusterId: fingerprint(cluster.cert), createdAt: new Date().toISOString(), ...files, activated: false,
    hsms,
  };
  await writeManifest(dir, manifest);
  return { dir, manifest, precoUser: PRECO_USER, precoPassword };
}
