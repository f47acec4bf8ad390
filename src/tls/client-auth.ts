// Client-certificate authentication (mTLS) policy and checks shared by TLS 1.3 and 1.2: the
// trusted CA bundle, chain building and verification to a trust anchor (RFC 5280 §6 subset:
// validity, signatures, basicConstraints and pathLen, keyUsage, EKU clientAuth, unknown critical
// extensions, bounded depth), allowed subjects/SANs, the verified PeerIdentity, and the check of
// the client's CertificateVerify signature. Each failure is the alert OpenSSL/rustls would send.
import { X509Certificate, createHash, type KeyObject } from 'node:crypto';
import { TlsError, fatal } from './alert.js';
import { pemCertificates } from './pem.js';
import { SignatureScheme, schemeSpec, verifyScheme } from './schemes.js';
import { KeyUsageBit, Oid, basicConstraints, keyUsageBits, readCertFields, type CertFields } from './x509-der.js';

/** none: no CertificateRequest; optional: asked for, verified if sent; require: no certificate, no connection. */
export type ClientAuthMode = 'none' | 'optional' | 'require';

/** How a server checks client certificates (TlsServerOptions.clientAuth). */
export interface ClientAuthOptions {
  mode: ClientAuthMode;
  /** Trusted CAs: a PEM bundle (text or Buffer) or DER certificates. Every one is a trust anchor. */
  ca: string | Buffer | readonly Buffer[];
  /** If set (with or without allowedSans), the leaf subject must be one of these ("CN=alice, O=Acme"). */
  allowedSubjects?: readonly string[];
  /** If set, one SAN must match ("DNS:host", "URI:spiffe://…", "email:a@b", "IP:10.0.0.1"; "DNS:*.example.com" for one label). */
  allowedSans?: readonly string[];
  /** Most intermediates between the leaf and a trust anchor (default 4). */
  maxDepth?: number;
}

/** A prepared ClientAuthOptions, shared by every connection of a server. */
export interface ClientAuthPolicy {
  readonly mode: 'optional' | 'require';
  readonly anchors: ReadonlyArray<{ cert: X509Certificate; fields: CertFields }>;
  /** DER subject Names of the anchors, for certificate_authorities. */
  readonly authorities: readonly Buffer[];
  readonly allowedSubjects?: ReadonlySet<string>;
  readonly allowedSans?: readonly string[];
  readonly maxDepth: number;
  /** Chains that verified, by hash of their bytes, with the window in which the result holds. */
  readonly verified: Map<string, { identity: PeerIdentity; from: number; to: number }>;
}

/** The verified client, as the proxy forwards and logs it. */
export interface PeerIdentity {
  /** Leaf subject, RDNs joined by ", " in certificate order ("C=FR, O=Acme, CN=alice"). */
  subject: string;
  issuer: string;
  /** Subject alternative names as "DNS:x", "IP:1.2.3.4", "email:a@b", "URI:u". */
  sans: string[];
  /** SHA-256 of the leaf DER, lower-case hex without colons. */
  fingerprint256: string;
  serialNumber: string;
  /** The chain the client sent, leaf first (DER). */
  chain: Buffer[];
  /** The leaf's public key (verifies the client's CertificateVerify). */
  publicKey: KeyObject;
}

/** Certificates a client may send (leaf, intermediates, perhaps its root); more is refused before any parsing. */
export const MAX_CLIENT_CHAIN = 10;
const DEFAULT_MAX_DEPTH = 4;
/**
 * Verified chains remembered per policy. Parsing a certificate with node's X509Certificate costs
 * ~0.3-0.6 ms and a signature check ~0.1-0.3 ms on a busy 2-core machine, so a returning client
 * (same chain bytes) skips them; a new CA bundle (reload) is a new policy with an empty cache.
 */
const VERIFIED_CACHE = 1024;
/** Critical extensions we process; any other critical extension makes a certificate unusable (RFC 5280 §4.2). */
const UNDERSTOOD = new Set<string>([Oid.basicConstraints, Oid.keyUsage, Oid.extKeyUsage, Oid.subjectAltName]);

/** Validates options and parses the CA bundle; undefined for mode none. Throws TLS_ERR_CLIENT_AUTH_CONFIG. */
export function prepareClientAuth(opts: ClientAuthOptions | undefined): ClientAuthPolicy | undefined {
  if (!opts || opts.mode === 'none') return undefined;
  const bad = (msg: string) => new TlsError(`clientAuth: ${msg}`, 'TLS_ERR_CLIENT_AUTH_CONFIG');
  const ders = typeof opts.ca === 'string' || Buffer.isBuffer(opts.ca) ? pemCertificates(opts.ca.toString()) : [...opts.ca];
  if (ders.length === 0) throw bad('the CA bundle holds no certificate (expected PEM "BEGIN CERTIFICATE" blocks)');
  const anchors = ders.map((der, i) => {
    try {
      return { cert: new X509Certificate(der), fields: readCertFields(der) };
    } catch (err) {
      throw bad(`certificate ${i + 1} of the CA bundle does not parse: ${(err as Error).message}`);
    }
  });
  const maxDepth = opts.maxDepth ?? DEFAULT_MAX_DEPTH;
  if (!Number.isInteger(maxDepth) || maxDepth < 0 || maxDepth > MAX_CLIENT_CHAIN - 1) throw bad(`maxDepth must be an integer from 0 to ${MAX_CLIENT_CHAIN - 1}`);
  return {
    mode: opts.mode, anchors, authorities: anchors.map((a) => Buffer.from(a.fields.subjectDer)), maxDepth,
    verified: new Map(),
    ...(opts.allowedSubjects ? { allowedSubjects: new Set(opts.allowedSubjects.map(normalizeSubject)) } : {}),
    ...(opts.allowedSans ? { allowedSans: [...opts.allowedSans] } : {}),
  };
}

/** "CN=a\nO=b" (node) or "CN=a,O=b" → "CN=a, O=b": one spelling for comparison and headers. */
export function normalizeSubject(s: string): string {
  return s.split(/\n|,(?=\s*[A-Za-z][\w.]*=)/).map((p) => p.trim()).filter(Boolean).join(', ');
}

/** Splits node's subjectAltName ("DNS:a, IP Address:1.2.3.4, DNS:\"x, y\"") into "TYPE:value" entries. */
export function parseSans(text: string | undefined): string[] {
  if (!text) return [];
  const out: string[] = [];
  for (const m of text.matchAll(/([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)(?:,\s*|$)/g)) {
    const type = m[1]!.trim() === 'IP Address' ? 'IP' : m[1]!.trim();
    let value = m[2]!;
    if (value.startsWith('"')) { try { value = JSON.parse(value) as string; } catch { /* keep as sent */ } }
    out.push(`${type}:${value}`);
  }
  return out;
}

function sanMatches(pattern: string, san: string): boolean {
  if (pattern === san) return true;
  const lower = pattern.toLowerCase();
  if (!lower.startsWith('dns:*.') || !san.toLowerCase().startsWith('dns:')) return false;
  const name = san.slice(4).toLowerCase();
  const dot = name.indexOf('.');
  return dot > 0 && name.slice(dot) === lower.slice(5);
}

function parse(der: Buffer, what: string): { cert: X509Certificate; fields: CertFields } {
  try {
    return { cert: new X509Certificate(der), fields: readCertFields(der) };
  } catch (err) {
    throw fatal('bad_certificate', `${what} does not parse: ${(err as Error).message}`);
  }
}

function checkValidity(c: X509Certificate, nowMs: number, what: string): void {
  const from = Date.parse(c.validFrom);
  const to = Date.parse(c.validTo);
  if (!(nowMs >= from)) throw fatal('certificate_expired', `${what} "${normalizeSubject(c.subject)}" is not valid before ${c.validFrom}`);
  if (!(nowMs <= to)) throw fatal('certificate_expired', `${what} "${normalizeSubject(c.subject)}" expired on ${c.validTo}`);
}

function checkCritical(f: CertFields, what: string): void {
  for (const e of f.extensions.values()) {
    if (e.critical && !UNDERSTOOD.has(e.oid)) throw fatal('unsupported_certificate', `${what} has an unknown critical extension ${e.oid}`);
  }
}

function checkIssuer(f: CertFields, below: number, what: string): void {
  const bc = basicConstraints(f.extensions.get(Oid.basicConstraints));
  if (!bc.ca) throw fatal('bad_certificate', `${what} is not a CA certificate (basicConstraints cA is false) but issued another certificate`);
  if (bc.pathLen !== undefined && below > bc.pathLen) throw fatal('bad_certificate', `${what} allows ${bc.pathLen} intermediate(s) below it, the chain has ${below}`);
  const ku = keyUsageBits(f.extensions.get(Oid.keyUsage));
  if (ku && !ku.has(KeyUsageBit.keyCertSign)) throw fatal('bad_certificate', `${what} lacks keyUsage keyCertSign`);
}

/**
 * Verifies a client chain (leaf first) to one of the policy's trust anchors at `nowMs`, then the
 * allowed subjects/SANs. Returns the identity or throws the alert: unknown_ca, bad_certificate,
 * certificate_expired, unsupported_certificate, access_denied.
 */
export function verifyClientChain(policy: ClientAuthPolicy, presented: readonly Buffer[], nowMs: number): PeerIdentity {
  if (presented.length === 0) throw fatal('bad_certificate', 'empty client certificate chain');
  if (presented.length > MAX_CLIENT_CHAIN) throw fatal('bad_certificate', `client sent ${presented.length} certificates; at most ${MAX_CLIENT_CHAIN} are accepted`);
  const h = createHash('sha256');
  for (const der of presented) h.update(Buffer.of(der.length >> 16, der.length >> 8, der.length)).update(der);
  const cacheKey = h.digest('base64');
  const hit = policy.verified.get(cacheKey);
  if (hit && nowMs >= hit.from && nowMs <= hit.to) return hit.identity;
  const certs = presented.map((der, i) => parse(der, i === 0 ? 'client certificate' : `client chain certificate ${i + 1}`));
  const leaf = certs[0]!;
  const path = [leaf];
  let anchor: ClientAuthPolicy['anchors'][number] | undefined;
  let forged = false;
  for (;;) {
    const cur = path[path.length - 1]!.cert;
    for (const a of policy.anchors) {
      if (!cur.checkIssued(a.cert)) continue;
      if (cur.verify(a.cert.publicKey)) { anchor = a; break; }
      forged = true;
    }
    if (anchor) break;
    if (forged) throw fatal('bad_certificate', `the signature on "${normalizeSubject(cur.subject)}" does not verify with its issuer's key`);
    if (path.length > policy.maxDepth) throw fatal('unknown_ca', `no trusted CA within ${policy.maxDepth} intermediate(s) of the client certificate`);
    const next = certs.find((c) => !path.includes(c) && cur.checkIssued(c.cert));
    if (!next) throw fatal('unknown_ca', `the client certificate chain does not lead to a trusted CA (no issuer "${normalizeSubject(cur.issuer)}")`);
    if (!cur.verify(next.cert.publicKey)) throw fatal('bad_certificate', `the signature on "${normalizeSubject(cur.subject)}" does not verify with its issuer's key`);
    path.push(next);
  }
  // Structure and time, leaf to anchor (OpenSSL reports these after the chain is built).
  const intermediates = path.length - 1;
  path.forEach((c, i) => {
    const what = i === 0 ? 'client certificate' : 'intermediate CA';
    checkValidity(c.cert, nowMs, what);
    checkCritical(c.fields, what);
    if (i > 0) checkIssuer(c.fields, i - 1, `intermediate CA "${normalizeSubject(c.cert.subject)}"`);
  });
  // The anchor itself: in date, and its pathLen (OpenSSL checks a root's constraints too).
  // A pinned self-signed client certificate is its own anchor and was checked above.
  if (!anchor.cert.raw.equals(leaf.cert.raw)) {
    checkValidity(anchor.cert, nowMs, 'trusted CA');
    const bc = basicConstraints(anchor.fields.extensions.get(Oid.basicConstraints));
    if (bc.pathLen !== undefined && intermediates > bc.pathLen) throw fatal('bad_certificate', `trusted CA "${normalizeSubject(anchor.cert.subject)}" allows ${bc.pathLen} intermediate(s), the chain has ${intermediates}`);
  }
  const ku = keyUsageBits(leaf.fields.extensions.get(Oid.keyUsage));
  if (ku && !ku.has(KeyUsageBit.digitalSignature)) throw fatal('unsupported_certificate', 'client certificate keyUsage lacks digitalSignature');
  const eku = leaf.cert.keyUsage;
  const ekuOk = !leaf.fields.extensions.has(Oid.extKeyUsage)
    || eku?.includes(Oid.clientAuth) || eku?.includes(Oid.anyExtendedKeyUsage);
  if (!ekuOk) {
    throw fatal('unsupported_certificate', 'client certificate extendedKeyUsage does not allow clientAuth');
  }
  const identity: PeerIdentity = {
    subject: normalizeSubject(leaf.cert.subject), issuer: normalizeSubject(leaf.cert.issuer),
    sans: parseSans(leaf.cert.subjectAltName),
    fingerprint256: createHash('sha256').update(presented[0]!).digest('hex'), serialNumber: leaf.cert.serialNumber,
    chain: presented.map((c) => Buffer.from(c)), publicKey: leaf.cert.publicKey,
  };
  checkAllowed(policy, identity);
  // The result holds while every certificate on the path (anchor included) is within its dates.
  const window = [...path.map((c) => c.cert), anchor.cert];
  if (policy.verified.size >= VERIFIED_CACHE) policy.verified.delete(policy.verified.keys().next().value!);
  const from = Math.max(...window.map((c) => Date.parse(c.validFrom)));
  const to = Math.min(...window.map((c) => Date.parse(c.validTo)));
  policy.verified.set(cacheKey, { identity, from, to });
  return identity;
}

function checkAllowed(policy: ClientAuthPolicy, id: PeerIdentity): void {
  const { allowedSubjects, allowedSans } = policy;
  if (!allowedSubjects && !allowedSans) return;
  if (allowedSubjects?.has(id.subject)) return;
  if (allowedSans?.some((p) => id.sans.some((s) => sanMatches(p, s)))) return;
  throw fatal('access_denied', `client "${id.subject}" is not in the listener's allowed subjects or SANs`);
}

/** Schemes we offer for the client's CertificateVerify in TLS 1.3 (no PKCS#1 v1.5, no SHA-1). */
export const CLIENT_SCHEMES_13: readonly number[] = [
  SignatureScheme.ecdsa_secp256r1_sha256, SignatureScheme.ecdsa_secp384r1_sha384,
  SignatureScheme.ecdsa_secp521r1_sha512,
  SignatureScheme.ed25519, SignatureScheme.rsa_pss_rsae_sha256, SignatureScheme.rsa_pss_rsae_sha384,
  SignatureScheme.rsa_pss_rsae_sha512,
  SignatureScheme.rsa_pss_pss_sha256, SignatureScheme.rsa_pss_pss_sha384, SignatureScheme.rsa_pss_pss_sha512,
];

/** TLS 1.2 adds PKCS#1 v1.5 (still no SHA-1). */
export const CLIENT_SCHEMES_12: readonly number[] = [
  ...CLIENT_SCHEMES_13, SignatureScheme.rsa_pkcs1_sha256, SignatureScheme.rsa_pkcs1_sha384,
  SignatureScheme.rsa_pkcs1_sha512,
];

/**
 * Checks the client's CertificateVerify: the scheme must be one we offered and fit the leaf key
 * (illegal_parameter otherwise); a signature that does not verify is decrypt_error.
 * `tls12` relaxes the curve binding of ECDSA schemes, which TLS 1.2 does not have.
 */
export function verifyClientSignature(
  key: KeyObject, offered: readonly number[], scheme: number, content: Buffer, signature: Buffer, tls12 = false,
): void {
  const spec = schemeSpec(scheme);
  if (!spec || !offered.includes(scheme)) throw fatal('illegal_parameter', `client CertificateVerify uses scheme 0x${scheme.toString(16).padStart(4, '0')}, which we did not offer`);
  const type = key.asymmetricKeyType;
  const curve = 'namedCurve' in spec ? spec.namedCurve : undefined;
  const curveOk = tls12 || !curve || key.asymmetricKeyDetails?.namedCurve === curve;
  if (type !== spec.keyType || !curveOk) throw fatal('illegal_parameter', `client CertificateVerify scheme 0x${scheme.toString(16)} does not fit the certificate's ${type} key`);
  // A malformed DER signature or a wrong length is the same to the peer as a wrong signature.
  const ok = verifyScheme(key, scheme, content, signature);
  if (!ok) throw fatal('decrypt_error', 'client CertificateVerify signature does not verify with the certificate key');
}

const CLIENT_CV_PREFIX = Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS 1.3, client CertificateVerify\0', 'latin1')]);

/** The content a TLS 1.3 client CertificateVerify signs (RFC 8446 §4.4.3). */
export function clientCertificateVerifyContent(transcriptHash: Buffer): Buffer {
  return Buffer.concat([CLIENT_CV_PREFIX, transcriptHash]);
}
