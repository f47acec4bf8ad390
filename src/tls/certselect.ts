// Certificate choice for a ClientHello: by SNI (exact name, then a one-label wildcard), then
// by what the client can verify (ECDSA when offered, else RSA-PSS), preferring a chain signed
// only with algorithms in signature_algorithms_cert (RFC 8446 §4.4.2.2 makes that a SHOULD).
import { X509Certificate, type KeyObject } from 'node:crypto';
import { fatal } from './alert.js';
import type { ClientHello } from './messages.js';
import { DerReader, Tag } from './der.js';
import { SignatureScheme } from './schemes.js';
import type { CertifiedKey, Signer } from './signer.js';

/** A CertifiedKey prepared for selection: names, leaf public key, chain signature schemes. */
export interface CertEntry {
  readonly certified: CertifiedKey;
  /** Lower-case DNS names or `*.suffix` patterns this entry serves. */
  readonly names: readonly string[];
  readonly leafPublicKey: KeyObject;
  readonly keyType: 'rsa' | 'ec';
  readonly curve?: 'P-256' | 'P-384';
  /** Signature schemes of the chain's signatures (leaf and intermediates), undefined if unknown. */
  readonly chainSchemes: readonly number[];
}

/** The certificate and CertificateVerify scheme chosen for one handshake. */
export interface CertChoice { entry: CertEntry; scheme: number }

const RSA_PSS = [
  SignatureScheme.rsa_pss_rsae_sha256, SignatureScheme.rsa_pss_rsae_sha384, SignatureScheme.rsa_pss_rsae_sha512,
];

/** TLS 1.3 CertificateVerify schemes a key can produce (no PKCS#1 v1.5, no SHA-1). */
export function schemesForKey(signer: Signer): number[] {
  const own = new Set(signer.schemes);
  if (signer.keyType === 'rsa') return RSA_PSS.filter((s) => own.has(s));
  if (signer.curve === 'P-256') return own.has(SignatureScheme.ecdsa_secp256r1_sha256) ? [SignatureScheme.ecdsa_secp256r1_sha256] : [];
  if (signer.curve === 'P-384') return own.has(SignatureScheme.ecdsa_secp384r1_sha384) ? [SignatureScheme.ecdsa_secp384r1_sha384] : [];
  return [];
}

// Signature-algorithm OIDs (DER content bytes, hex) → TLS SignatureScheme.
const SIG_OIDS: Record<string, number[]> = {
  '2a864886f70d01010b': [SignatureScheme.rsa_pkcs1_sha256],
  '2a864886f70d01010c': [SignatureScheme.rsa_pkcs1_sha384],
  '2a864886f70d01010d': [SignatureScheme.rsa_pkcs1_sha512],
  '2a8648ce3d040302': [SignatureScheme.ecdsa_secp256r1_sha256],
  '2a8648ce3d040303': [SignatureScheme.ecdsa_secp384r1_sha384],
  '2a8648ce3d040304': [SignatureScheme.ecdsa_secp521r1_sha512],
  // RSASSA-PSS: the hash sits in the parameters; accept any PSS scheme as a match.
  '2a864886f70d01010a': [...RSA_PSS, SignatureScheme.rsa_pss_pss_sha256, SignatureScheme.rsa_pss_pss_sha384, SignatureScheme.rsa_pss_pss_sha512],
};

/** Schemes of a certificate's outer signatureAlgorithm (Certificate ::= SEQ { tbs, sigAlg, sig }). */
export function certSignatureSchemes(der: Buffer): number[] {
  try {
    const cert = new DerReader(der).sub(Tag.SEQUENCE, 'Certificate');
    cert.skip('tbsCertificate');
    const oid = cert.sub(Tag.SEQUENCE, 'signatureAlgorithm').read(Tag.OID, 'algorithm');
    return SIG_OIDS[oid.toString('hex')] ?? [];
  } catch {
    return [];
  }
}

/** Builds the selection entry for a CertifiedKey; names default to the leaf's DNS SANs. */
export function prepareCertEntry(certified: CertifiedKey, servernames?: readonly string[]): CertEntry {
  const leafDer = certified.chain[0];
  if (!leafDer) throw new TypeError('CertifiedKey.chain is empty: the leaf certificate is required');
  const leaf = new X509Certificate(leafDer);
  const names = servernames ?? (leaf.subjectAltName ?? '')
    .split(/,\s*/)
    .filter((s) => s.startsWith('DNS:'))
    .map((s) => s.slice(4));
  const keyType = leaf.publicKey.asymmetricKeyType === 'rsa' ? 'rsa' : 'ec';
  if (keyType !== certified.signer.keyType) {
    throw new TypeError(`certificate key is ${leaf.publicKey.asymmetricKeyType} but its signer holds a ${certified.signer.keyType} key`);
  }
  const nc = leaf.publicKey.asymmetricKeyDetails?.namedCurve;
  const curve = nc === 'prime256v1' ? 'P-256' as const : nc === 'secp384r1' ? 'P-384' as const : undefined;
  // The root's self-signature is never verified by a client: only leaf and intermediates count.
  const signed = certified.chain.length > 1 && isSelfSigned(certified.chain[certified.chain.length - 1]!)
    ? certified.chain.slice(0, -1) : certified.chain;
  const chainSchemes = [...new Set(signed.flatMap((c) => certSignatureSchemes(c)))];
  return {
    certified, names: names.map((n) => n.toLowerCase()), leafPublicKey: leaf.publicKey, keyType, curve, chainSchemes,
  };
}

function isSelfSigned(der: Buffer): boolean {
  const c = new X509Certificate(der);
  return c.issuer === c.subject;
}

function matchesName(entry: CertEntry, sni: string, wildcard: boolean): boolean {
  if (!wildcard) return entry.names.includes(sni);
  const dot = sni.indexOf('.');
  if (dot <= 0) return false;
  return entry.names.includes(`*${sni.slice(dot)}`);
}

/** Entries serving `sni` (exact name, else a one-label wildcard); all of them without SNI. None → unrecognized_name. */
export function certificatesForName(entries: readonly CertEntry[], sni: string | undefined): readonly CertEntry[] {
  if (sni === undefined) return entries;
  let candidates = entries.filter((e) => matchesName(e, sni, false));
  if (candidates.length === 0) candidates = entries.filter((e) => matchesName(e, sni, true));
  if (candidates.length === 0) throw fatal('unrecognized_name', `no certificate for server name "${sni}"`);
  return candidates;
}

/**
 * Picks a certificate and scheme. SNI given but served by no entry → unrecognized_name
 * (RFC 6066 §3 names this alert; sending a certificate for another name only moves the
 * failure to a vaguer client-side error). No entry the client can verify → handshake_failure.
 */
export function selectCertificate(
  entries: readonly CertEntry[], sni: string | undefined, sigAlgs: readonly number[], sigAlgsCert?: readonly number[],
): CertChoice {
  const candidates = certificatesForName(entries, sni);
  const offered = new Set(sigAlgs);
  const certOk = new Set(sigAlgsCert ?? sigAlgs);
  let best: { choice: CertChoice; rank: number } | undefined;
  for (const entry of candidates) {
    const scheme = schemesForKey(entry.certified.signer).find((s) => offered.has(s));
    if (scheme === undefined) continue;
    const chainOk = entry.chainSchemes.every((s) => certOk.has(s));
    // ECDSA first (cheaper for HSM and client), then chains the client says it can verify.
    const rank = (entry.keyType === 'ec' ? 0 : 2) + (chainOk ? 0 : 1);
    if (!best || rank < best.rank) best = { choice: { entry, scheme }, rank };
  }
  if (!best) throw fatal('handshake_failure', 'no certificate whose key can sign with a scheme the client offered');
  return best.choice;
}

/** The ALPN protocol of ACME tls-alpn-01 validation (RFC 8737 §6.2). */
export const ACME_TLS_ALPN = 'acme-tls/1';

/**
 * RFC 8737 §3: a ClientHello that offers acme-tls/1 with the server name of a pending challenge gets
 * that challenge's validation certificate (and acme-tls/1). Every other hello, including acme-tls/1
 * for a name with nothing pending, goes through the listener's own certificates and ALPN list.
 */
export function acmeChallenge(
  ch: ClientHello, config: { acmeChallenge?: (servername: string) => CertEntry | undefined },
): CertEntry | undefined {
  const sni = ch.ext.serverName;
  if (!config.acmeChallenge || sni === undefined || !ch.ext.alpn?.includes(ACME_TLS_ALPN)) return undefined;
  return config.acmeChallenge(sni);
}
