// Client certificates, one per proxy, as a CloudHSM client has: `cluster client-cert` issues one
// (signed by the customer CA, the proxy's name as CN, clientAuth, a random serial), records it in
// the cluster's client register (DIR/pki/clients.json) and writes a *client bundle*: the customer
// CA certificate, the proxy's certificate and key (0600) and a cluster.json naming only those and
// the HSMs' addresses. The bundle is all a proxy needs to reach the HSMs; it holds no key of the
// CA, the cluster or the HSMs, no masking key and no other client's key. `cluster revoke-client`
// marks an entry of the register revoked; every HSM node refuses that certificate
// (node-revocation.ts) and the other proxies carry on.
import { X509Certificate, randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rename, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { HsmError } from '../device/index.js';
import { normaliseSerial, parseClientRegister, type ClientRecord, type ClientRegister } from '../node-revocation.js';
import { createClientCert, loadIssued, privateKeyPem } from './certs.js';
import { clusterPath, manifestPath, readClientManifest, readManifest, type ClientManifest, type ClusterManifest } from './manifest.js';

export type { ClientRecord, ClientRegister } from '../node-revocation.js';

/** The client register, relative to the cluster directory; HSM nodes read it for revocations. */
export const CLIENT_REGISTER = 'pki/clients.json';

/** The files of a client bundle (cluster.json is the bundle's manifest). */
export const BUNDLE_FILES = { caCert: 'customer-ca.crt', clientCert: 'client.crt', clientKey: 'client.key', manifest: 'cluster.json' } as const;

/** A mistake in issuing or revoking a client certificate. */
export class ClientCertError extends HsmError {
  constructor(message: string, code: string) {
    super(message, code);
    this.name = 'ClientCertError';
  }
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** The cluster's client register (empty when no client certificate was issued yet). */
export async function readClientRegister(dir: string): Promise<ClientRegister> {
  const file = clusterPath(dir, CLIENT_REGISTER);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, clients: [] };
    throw err;
  }
  try {
    return parseClientRegister(text);
  } catch (err) {
    throw new ClientCertError(`${file} is unreadable (${(err as Error).message}); restore it from a copy`, 'HSM_ERR_CLIENT_REGISTER');
  }
}

// Replaced by rename, never rewritten in place: a node reading it sees the old or the new list,
// and every change is a new inode, which the nodes' change check relies on.
async function writeClientRegister(dir: string, register: ClientRegister): Promise<void> {
  const file = clusterPath(dir, CLIENT_REGISTER);
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, JSON.stringify(register, null, 2) + '\n', { mode: 0o644 });
  await rename(tmp, file);
}

/** Options of `issueClientCert`. */
export interface IssueClientOptions {
  /** The proxy's name: the certificate's CN and how it is revoked. */
  name: string;
  /** Where the bundle goes (must be empty or absent; default DIR/clients/NAME). */
  outDir?: string;
}

/** What `issueClientCert` made. */
export interface IssuedClient {
  record: ClientRecord;
  outDir: string;
  /** Absolute paths of the bundle's files. */
  files: { caCert: string; clientCert: string; clientKey: string; manifest: string };
}

async function emptyOrAbsent(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).length === 0;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true;
    throw err;
  }
}

/** The manifest of a bundle: the cluster's identity and HSM addresses, and the bundle's own files. */
function bundleManifest(m: ClusterManifest, record: ClientRecord): ClientManifest {
  return {
    version: 1, kind: 'client-bundle', clusterId: m.clusterId,
    caCert: BUNDLE_FILES.caCert, clientCert: BUNDLE_FILES.clientCert, clientKey: BUNDLE_FILES.clientKey,
    hsms: m.hsms.map((h) => ({ id: h.id, address: h.address, port: h.port })),
    client: { name: record.name, serial: record.serial },
  };
}

async function writeBundleManifest(outDir: string, manifest: ClientManifest): Promise<void> {
  const p = manifestPath(outDir);
  await writeFile(`${p}.tmp`, JSON.stringify(manifest, null, 2) + '\n', { mode: 0o644 });
  await rename(`${p}.tmp`, p);
}

/** Issues a client certificate for one proxy, records it, and writes its client bundle. */
export async function issueClientCert(dir: string, opts: IssueClientOptions): Promise<IssuedClient> {
  const name = opts.name;
  if (!NAME.test(name)) throw new ClientCertError(`--name must be 1-63 letters, digits, '.', '_' or '-' (starting with a letter or digit), got "${name}"`, 'HSM_ERR_INVALID_ARGUMENT');
  const m = await readManifest(dir);
  const outDir = resolve(opts.outDir ?? join(dir, 'clients', name));
  if (!(await emptyOrAbsent(outDir))) {
    throw new ClientCertError(`${outDir} is not empty; a client bundle goes into an empty or new directory (pass another --out-dir, or empty that one)`, 'HSM_ERR_BUNDLE_EXISTS');
  }
  const register = await readClientRegister(dir);
  const live = register.clients.find((c) => c.name === name && !c.revokedAt);
  if (live) {
    throw new ClientCertError(`"${name}" already has a client certificate (serial ${live.serial}, issued ${live.issuedAt}); revoke it first (hsmproxy cluster revoke-client --name ${name}) or pick another name`, 'HSM_ERR_CLIENT_EXISTS');
  }
  const ca = await loadIssued(clusterPath(dir, m.caCert), clusterPath(dir, m.caKey));
  const issued = await createClientCert(ca, name);
  const certPem = issued.cert.toString('pem') + '\n';
  const record: ClientRecord = {
    name, serial: normaliseSerial(issued.cert.serialNumber),
    fingerprint256: new X509Certificate(certPem).fingerprint256,
    issuedAt: new Date().toISOString(), notAfter: issued.cert.notAfter.toISOString(),
  };
  // Recorded before the key leaves this function: no live certificate is ever missing from the
  // register, so every one can be revoked.
  await writeClientRegister(dir, { version: 1, clients: [...register.clients, record] });

  await mkdir(outDir, { recursive: true, mode: 0o700 });
  const files = {
    caCert: join(outDir, BUNDLE_FILES.caCert), clientCert: join(outDir, BUNDLE_FILES.clientCert),
    clientKey: join(outDir, BUNDLE_FILES.clientKey), manifest: manifestPath(outDir),
  };
  await writeFile(files.clientKey, await privateKeyPem(issued.keys), { mode: 0o600, flag: 'wx' });
  await writeFile(files.clientCert, certPem, { flag: 'wx' });
  await writeFile(files.caCert, await readFile(clusterPath(dir, m.caCert)), { flag: 'wx' });
  // Last: a bundle with a manifest is complete.
  await writeBundleManifest(outDir, bundleManifest(m, record));
  return { record, outDir, files };
}

/**
 * Rewrites the cluster.json of an existing bundle with the cluster's current HSMs (after add-hsm
 * or remove-hsm); a proxy serving from it follows the change. No new certificate.
 */
export async function refreshClientBundle(dir: string, outDir: string, name?: string): Promise<ClientManifest> {
  const m = await readManifest(dir);
  const bundle = await readClientManifest(outDir);
  if (bundle.kind !== 'client-bundle' || !bundle.client) throw new ClientCertError(`${outDir} holds no client bundle (its cluster.json names no client)`, 'HSM_ERR_INVALID_ARGUMENT');
  if (name !== undefined && bundle.client.name !== name) throw new ClientCertError(`${outDir} is the bundle of "${bundle.client.name}", not "${name}"`, 'HSM_ERR_INVALID_ARGUMENT');
  if (bundle.clusterId !== m.clusterId) throw new ClientCertError(`${outDir} is a bundle of another cluster (${bundle.clusterId.slice(0, 16)}…)`, 'HSM_ERR_INVALID_ARGUMENT');
  const serial = normaliseSerial(bundle.client!.serial);
  const record = (await readClientRegister(dir)).clients.find((c) => c.serial === serial);
  if (!record) throw new ClientCertError(`the certificate of ${outDir} (serial ${bundle.client.serial}) is not in this cluster's register`, 'HSM_ERR_UNKNOWN_CLIENT');
  if (record.revokedAt) throw new ClientCertError(`the certificate of ${outDir} ("${record.name}", serial ${record.serial}) was revoked on ${record.revokedAt}; issue a new bundle`, 'HSM_ERR_CLIENT_REVOKED');
  const next = bundleManifest(m, record);
  await writeBundleManifest(outDir, next);
  return next;
}

/** What `revokeClient` changed: certificates revoked now, and matching ones revoked before. */
export interface RevokeResult {
  revoked: ClientRecord[];
  alreadyRevoked: ClientRecord[];
}

/** Revokes the live client certificate(s) of `name`, or the one with `serial`. */
export async function revokeClient(dir: string, which: { name?: string; serial?: string }): Promise<RevokeResult> {
  if ((which.name === undefined) === (which.serial === undefined)) throw new ClientCertError('name the certificate to revoke with --name NAME or --serial SERIAL (one of them)', 'HSM_ERR_INVALID_ARGUMENT');
  await readManifest(dir); // a cluster directory, not a bundle
  const register = await readClientRegister(dir);
  const serial = which.serial !== undefined ? normaliseSerial(which.serial) : undefined;
  const matches = register.clients.filter((c) => (serial !== undefined ? c.serial === serial : c.name === which.name));
  if (matches.length === 0) {
    const known = register.clients.map((c) => `${c.name} (${c.serial}${c.revokedAt ? ', revoked' : ''})`).join(', ') || 'none';
    throw new ClientCertError(`no client certificate ${serial !== undefined ? `with serial ${which.serial}` : `named "${which.name}"`} in this cluster; issued ones: ${known}`, 'HSM_ERR_UNKNOWN_CLIENT');
  }
  const now = new Date().toISOString();
  const revoked: ClientRecord[] = [];
  const clients = register.clients.map((c) => {
    if (!matches.includes(c) || c.revokedAt) return c;
    const r = { ...c, revokedAt: now };
    revoked.push(r);
    return r;
  });
  if (revoked.length > 0) await writeClientRegister(dir, { version: 1, clients });
  return { revoked, alreadyRevoked: matches.filter((c) => c.revokedAt) };
}
