// An issuing CA whose key stays in the HSM: init (self-signed CA), a CSR for an intermediate to be
// signed by an offline root, and `sign` (checks the CSR, copies its SANs, applies a profile, logs).
import * as x509 from './x509.js';
import { createHash, webcrypto } from 'node:crypto';
import { appendFile } from 'node:fs/promises';
import { CaError } from './errors.js';
import { createCsr, csrSans, verifyCsr } from './csr.js';
import { certPem, delegationUsageExtension, profileExtensions, randomSerial, selfSign, subjectKeyId, validity } from './cert.js';
import type { SigningKey } from './signing-key.js';

/** Creates a self-signed CA certificate for an HSM key. */
export async function caInit(
  key: SigningKey, opts: { subject: string; days: number; pathLength?: number },
): Promise<x509.X509Certificate> {
  return selfSign(key, { subject: opts.subject, days: opts.days, profile: 'ca', pathLength: opts.pathLength });
}

/** Creates a CSR for an intermediate CA (requests CA:true and certificate-signing key usage). */
export async function caCsr(key: SigningKey, opts: { subject: string; pathLength?: number }): Promise<string> {
  return createCsr(key, { subject: opts.subject, extensions: profileExtensions('ca', key.signer.keyType, opts.pathLength) });
}

/** One line of the issued-certificates log (JSON lines next to the CA certificate). */
export interface IssuedRecord {
  issuedAt: string;
  serial: string;
  subject: string;
  sans: string[];
  profile: 'server' | 'client';
  notBefore: string;
  notAfter: string;
  sha256: string;
  csr: string;
}

/** Path of the issued-certificates log for a CA certificate file. */
export function issuedLogPath(caCertFile: string): string {
  return `${caCertFile}.issued.jsonl`;
}

/** Options for signing a CSR with the CA. */
export interface CaSignOptions {
  caCert: x509.X509Certificate;
  caCertFile: string;
  csr: x509.Pkcs10CertificateRequest;
  csrFile: string;
  days: number;
  profile: 'server' | 'client';
  /** Add DelegationUsage (RFC 9345): the certificate's key may sign delegated credentials. */
  delegationUsage?: boolean;
  /**
   * Stores the certificate (e.g. writes --out); the issued log gets its line only once this
   * resolves, so a failed write leaves no record of a certificate nobody received.
   */
  write?: (cert: x509.X509Certificate) => Promise<void>;
}

/** The issued certificate, its log record, and whether the validity was cut to the CA's. */
export interface CaSignResult {
  cert: x509.X509Certificate;
  record: IssuedRecord;
  capped: boolean;
}

function spki(key: webcrypto.CryptoKey | ArrayBuffer): Promise<ArrayBuffer> {
  return key instanceof ArrayBuffer ? Promise.resolve(key) : webcrypto.subtle.exportKey('spki', key);
}

/** Checks that a CA key and certificate belong together and the certificate may issue. */
export async function checkCa(key: SigningKey, caCert: x509.X509Certificate, caCertFile: string): Promise<void> {
  const certSpki = Buffer.from(caCert.publicKey.rawData);
  const keySpki = Buffer.from(await spki(key.publicKey));
  if (!certSpki.equals(keySpki)) throw new CaError(`the CA key does not match the CA certificate ${caCertFile}; pass the key reference the CA was created with`);
  const bc = caCert.getExtension(x509.BasicConstraintsExtension);
  if (!bc?.ca) throw new CaError(`${caCertFile} is not a CA certificate (no basicConstraints CA:TRUE)`);
  const ku = caCert.getExtension(x509.KeyUsagesExtension);
  if (ku && !(ku.usages & x509.KeyUsageFlags.keyCertSign)) throw new CaError(`${caCertFile} may not sign certificates (keyUsage lacks keyCertSign)`);
  if (caCert.notAfter.getTime() <= Date.now()) throw new CaError(`the CA certificate ${caCertFile} expired on ${caCert.notAfter.toISOString()}`);
}

/** Signs a CSR: verifies it, copies subject and SANs, applies the profile, SKI/AKI, random serial; logs it. */
export async function caSign(key: SigningKey, opts: CaSignOptions): Promise<CaSignResult> {
  await checkCa(key, opts.caCert, opts.caCertFile);
  await verifyCsr(opts.csr, opts.csrFile);
  const sans = csrSans(opts.csr);
  const caSki = opts.caCert.getExtension(x509.SubjectKeyIdentifierExtension);
  const aki = caSki
    ? new x509.AuthorityKeyIdentifierExtension(caSki.keyId, false)
    : await x509.AuthorityKeyIdentifierExtension.create(
      opts.caCert.publicKey, false, webcrypto as Parameters<typeof x509.AuthorityKeyIdentifierExtension.create>[2],
    );
  const keyType = opts.csr.publicKey.algorithm.name === 'ECDSA' ? 'ec' : 'rsa';
  const extensions = [...profileExtensions(opts.profile, keyType), await subjectKeyId(opts.csr.publicKey), aki];
  if (sans.length) extensions.push(new x509.SubjectAlternativeNameExtension(sans));
  if (opts.delegationUsage) {
    if (opts.profile !== 'server') throw new CaError('--delegation-usage is for server certificates only (--profile server)');
    extensions.push(delegationUsageExtension());
  }
  const { notBefore, notAfter } = validity(opts.days, opts.caCert.notAfter);
  const capped = notAfter.getTime() === opts.caCert.notAfter.getTime();
  const serial = randomSerial();
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: serial,
      subject: opts.csr.subjectName,
      issuer: opts.caCert.subjectName,
      notBefore,
      notAfter,
      publicKey: opts.csr.publicKey,
      signingKey: key.privateKey as unknown as webcrypto.CryptoKey,
      signingAlgorithm: key.params,
      extensions,
    },
    key.crypto,
  );
  const record: IssuedRecord = {
    issuedAt: new Date().toISOString(),
    serial,
    subject: cert.subject,
    sans: sans.map((s) => `${s.type === 'url' ? 'URI' : s.type === 'email' ? 'email' : s.type.toUpperCase()}:${s.value}`),
    profile: opts.profile,
    notBefore: notBefore.toISOString(),
    notAfter: notAfter.toISOString(),
    sha256: createHash('sha256').update(Buffer.from(cert.rawData)).digest('hex'),
    csr: opts.csrFile,
  };
  if (opts.write) await opts.write(cert);
  await appendFile(issuedLogPath(opts.caCertFile), JSON.stringify(record) + '\n', { mode: 0o644 });
  return { cert, record, capped };
}

/** The leaf followed by the CA certificate, PEM. */
export function chainPem(leaf: x509.X509Certificate, ca: x509.X509Certificate): string {
  return certPem(leaf) + certPem(ca);
}
