// Certificates signed by an HSM key: self-signed leaf and CA certificates, validity, serials,
// and the extension sets for each profile.
import * as x509 from './x509.js';
import { randomBytes, webcrypto } from 'node:crypto';
import { MalformedInputError, PkiOptionError } from './errors.js';
import { parseSans, parseSubject } from './names.js';
import type { SigningKey } from './signing-key.js';

/** What the issued certificate is for. */
export type Profile = 'server' | 'client' | 'ca';

/** A random positive 128-bit serial number, as hex (top bit clear, so no sign byte is needed). */
export function randomSerial(): string {
  // 128 random bits, as the magnitude openssl prints; @peculiar/x509 encodes it as a positive
  // DER INTEGER (0x00 first when the top bit is set: 17 octets, within RFC 5280's 20).
  for (;;) {
    const n = BigInt(`0x${randomBytes(16).toString('hex')}`);
    if (n === 0n) continue; // a serial must be positive
    const hex = n.toString(16);
    return hex.length % 2 ? `0${hex}` : hex;
  }
}

/** Checks --days: a whole number of days between 1 and 36500. */
export function checkDays(days: number): number {
  if (!Number.isInteger(days) || days < 1 || days > 36500) throw new PkiOptionError(`--days must be a whole number from 1 to 36500, got ${String(days)}`);
  return days;
}

/** Validity window: from a minute ago (clock skew between machines) for `days` days. */
export function validity(days: number, notAfterCap?: Date): { notBefore: Date; notAfter: Date } {
  const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);
  let notAfter = new Date(notBefore.getTime() + checkDays(days) * 86_400_000);
  if (notAfterCap && notAfter > notAfterCap) notAfter = notAfterCap;
  return { notBefore, notAfter };
}

/** basicConstraints, keyUsage and extendedKeyUsage for a profile. */
export function profileExtensions(profile: Profile, keyType: 'rsa' | 'ec', pathLength?: number): x509.Extension[] {
  const F = x509.KeyUsageFlags;
  if (profile === 'ca') {
    return [
      new x509.BasicConstraintsExtension(true, pathLength, true),
      new x509.KeyUsagesExtension(F.keyCertSign | F.cRLSign | F.digitalSignature, true),
    ];
  }
  // keyEncipherment only means something for RSA (TLS 1.2 RSA key exchange); harmless and expected there.
  const usage = keyType === 'rsa' ? F.digitalSignature | F.keyEncipherment : F.digitalSignature;
  const eku = profile === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth;
  return [
    new x509.BasicConstraintsExtension(false, undefined, true), new x509.KeyUsagesExtension(usage, true),
    new x509.ExtendedKeyUsageExtension([eku], false),
  ];
}

/** id-pe-delegationUsage (RFC 9345 §4.2): the certificate's key may sign delegated credentials. */
export const DELEGATION_USAGE_OID = '1.3.6.1.4.1.44363.44';

/**
 * The DelegationUsage extension: non-critical, its value a DER NULL (RFC 9345 §4.2). Only for
 * server certificates, whose keyUsage always includes digitalSignature here (profileExtensions).
 */
export function delegationUsageExtension(): x509.Extension {
  return new x509.Extension(DELEGATION_USAGE_OID, false, new Uint8Array([0x05, 0x00]));
}

/** True when a certificate carries DelegationUsage. */
export function hasDelegationUsage(cert: x509.X509Certificate): boolean {
  return cert.extensions.some((e) => e.type === DELEGATION_USAGE_OID);
}

const provider = webcrypto as Parameters<typeof x509.SubjectKeyIdentifierExtension.create>[2];

/** subjectKeyIdentifier for a public key (SHA-1 of the key bits, RFC 5280 method 1). */
export async function subjectKeyId(publicKey: x509.PublicKeyType): Promise<x509.SubjectKeyIdentifierExtension> {
  return x509.SubjectKeyIdentifierExtension.create(publicKey, false, provider);
}

/** Options for a self-signed certificate. */
export interface SelfSignOptions {
  subject: string;
  sans?: readonly string[];
  days: number;
  /** 'server' (default) for a TLS server certificate, 'ca' for a root CA. */
  profile?: 'server' | 'client' | 'ca';
  pathLength?: number;
  /** Add DelegationUsage (RFC 9345), server profile only. */
  delegationUsage?: boolean;
}

/** Makes a self-signed certificate with an HSM key; returns the certificate. */
export async function selfSign(key: SigningKey, opts: SelfSignOptions): Promise<x509.X509Certificate> {
  const name = parseSubject(opts.subject);
  const sans = parseSans(opts.sans ?? []);
  const profile = opts.profile ?? 'server';
  const ski = await subjectKeyId(key.publicKey);
  const extensions = [
    ...profileExtensions(profile, key.signer.keyType, opts.pathLength), ski,
    new x509.AuthorityKeyIdentifierExtension(ski.keyId, false),
  ];
  if (sans.length) extensions.push(new x509.SubjectAlternativeNameExtension(sans));
  if (opts.delegationUsage) {
    if (profile !== 'server') throw new PkiOptionError('--delegation-usage is for server certificates only');
    extensions.push(delegationUsageExtension());
  }
  return x509.X509CertificateGenerator.create(
    {
      serialNumber: randomSerial(),
      subject: name,
      issuer: name,
      ...validity(opts.days),
      publicKey: key.publicKey,
      signingKey: key.privateKey as unknown as webcrypto.CryptoKey,
      signingAlgorithm: key.params,
      extensions,
    },
    key.crypto,
  );
}

/** Parses a PEM certificate; errors name the file. */
export function parseCertificate(text: string, file: string): x509.X509Certificate {
  const m = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(text);
  if (!m) throw new MalformedInputError(file, 'not a PEM certificate (expected "-----BEGIN CERTIFICATE-----")');
  try {
    return new x509.X509Certificate(m[0]);
  } catch (err) {
    throw new MalformedInputError(file, `the certificate does not parse (${(err as Error).message})`);
  }
}

/** PEM text of a certificate, newline-terminated. */
export function certPem(cert: x509.X509Certificate): string {
  return cert.toString('pem') + '\n';
}
