// The embedded default's PKI: a local dev CA and localhost certificates (RSA-2048 and ECDSA
// P-256), every key generated inside the HSM and written as a key reference. The leaves carry
// DelegationUsage (RFC 9345), so a listener may enable delegated credentials on them. Made once; later
// starts reuse the files when their keys still resolve, so a second start is fast.
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Backend, Engine, KeyAlgorithm } from '../engine/index.js';
import { writeKeyReference } from '../engine/index.js';
import { caInit, caSign, chainPem } from './ca.js';
import { certPem, hasDelegationUsage, parseCertificate } from './cert.js';
import type * as x509 from './x509.js';
import { createCsr, parseCsr } from './csr.js';
import { signingKey, type SigningKey } from './signing-key.js';

/** Where the demo PKI's files are. */
export interface DemoPkiFiles {
  caCert: string;
  caKey: string;
  rsaChain: string;
  rsaKey: string;
  ecdsaChain: string;
  ecdsaKey: string;
}

/** The file names the default config (config/hsmproxy.yaml) refers to, under `dir`. */
export function demoPkiFiles(dir: string): DemoPkiFiles {
  return {
    caCert: join(dir, 'dev-ca.crt'),
    caKey: join(dir, 'dev-ca.key.pem'),
    rsaChain: join(dir, 'localhost-rsa.chain.pem'),
    rsaKey: join(dir, 'localhost-rsa.key.pem'),
    ecdsaChain: join(dir, 'localhost-ecdsa.chain.pem'),
    ecdsaKey: join(dir, 'localhost-ecdsa.key.pem'),
  };
}

const exists = (p: string): Promise<boolean> => access(p).then(() => true, () => false);

/** True when every demo file is present and each key reference resolves on the engine. */
async function reusable(engine: Engine, f: DemoPkiFiles): Promise<boolean> {
  const all = await Promise.all(Object.values(f).map(exists));
  if (all.includes(false)) return false;
  try {
    await Promise.all([f.caKey, f.rsaKey, f.ecdsaKey].map((k) => engine.loadKey(k)));
    return true;
  } catch {
    return false; // e.g. ./data was wiped: the references point at keys that no longer exist
  }
}

const SANS = (names: readonly string[]) => names.map((n) => (/^[\d.]+$|:/.test(n) ? `IP:${n}` : `DNS:${n}`));

/** Issues a localhost leaf for `key` with DelegationUsage, signed by the dev CA, and writes its chain. */
async function issueLeaf(
  ca: SigningKey, caCert: x509.X509Certificate, caCertFile: string, key: SigningKey, kind: string, chainPath: string,
  opts: { days?: number; names?: readonly string[] },
): Promise<void> {
  const csrPem = await createCsr(key, { subject: 'CN=localhost', sans: SANS(opts.names ?? ['localhost', '127.0.0.1', '::1']) });
  const { cert } = await caSign(ca, {
    caCert, caCertFile, csr: parseCsr(csrPem, `${kind} CSR`), csrFile: `${kind} CSR`,
    days: Math.min(opts.days ?? 397, 397), profile: 'server', delegationUsage: true,
  });
  await writeFile(chainPath, chainPem(cert, caCert));
}

/**
 * Demo leaves from before DelegationUsage existed are issued again, for the same keys and by the
 * same dev CA (whoever trusts it keeps doing so), so the demo can delegate. True when it did.
 */
async function addDelegationUsage(
  engine: Engine, f: DemoPkiFiles, opts: { days?: number; names?: readonly string[] },
): Promise<boolean> {
  const stale: Array<[string, string, string]> = [];
  for (const [kind, chain, key] of [['rsa', f.rsaChain, f.rsaKey], ['ecdsa', f.ecdsaChain, f.ecdsaKey]] as const) {
    if (!hasDelegationUsage(parseCertificate(await readFile(chain, 'utf8'), chain))) stale.push([kind, chain, key]);
  }
  if (stale.length === 0) return false;
  const ca = await signingKey(await engine.signer(f.caKey), engine.webcrypto());
  const caCert = parseCertificate(await readFile(f.caCert, 'utf8'), f.caCert);
  for (const [kind, chain, key] of stale) {
    const leafKey = await signingKey(await engine.signer(key), engine.webcrypto());
    await issueLeaf(ca, caCert, f.caCert, leafKey, kind, chain, opts);
  }
  return true;
}

async function newKey(
  engine: Engine, backend: Backend, algorithm: KeyAlgorithm, label: string, refPath: string,
): Promise<SigningKey> {
  const handle = engine.adopt(await backend.generateKeyPair({ algorithm, label }), backend);
  await writeKeyReference(handle, refPath, { overwrite: true });
  return signingKey(await engine.signer(handle), engine.webcrypto());
}

/**
 * Makes (or reuses) the dev CA and the localhost certificates in `dir`, keys in the HSM behind
 * `backend`. Returns the files and whether they were created by this call.
 */
export async function ensureDemoPki(
  engine: Engine, backend: Backend, dir: string, opts: { days?: number; names?: readonly string[] } = {},
): Promise<{ files: DemoPkiFiles; created: boolean }> {
  const files = demoPkiFiles(dir);
  if (await reusable(engine, files)) return { files, created: await addDelegationUsage(engine, files, opts) };
  await mkdir(dir, { recursive: true });
  const stamp = Date.now().toString(36);
  const ca = await newKey(engine, backend, { type: 'ec', curve: 'P-256' }, `hsmproxy-dev-ca-${stamp}`, files.caKey);
  const caCert = await caInit(ca, { subject: 'CN=hsmproxy dev CA,O=hsmproxy (local development only)', days: opts.days ?? 825 });
  await writeFile(files.caCert, certPem(caCert));
  const leaves: Array<[KeyAlgorithm, string, string, string]> = [
    [{ type: 'rsa', bits: 2048 }, 'rsa', files.rsaKey, files.rsaChain],
    [{ type: 'ec', curve: 'P-256' }, 'ecdsa', files.ecdsaKey, files.ecdsaChain],
  ];
  for (const [algorithm, kind, keyPath, chainPath] of leaves) {
    const key = await newKey(engine, backend, algorithm, `hsmproxy-localhost-${kind}-${stamp}`, keyPath);
    await issueLeaf(ca, caCert, files.caCert, key, kind, chainPath, opts);
  }
  return { files, created: true };
}
