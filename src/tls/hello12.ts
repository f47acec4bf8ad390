// Version selection for every ClientHello, and ClientHello negotiation for TLS 1.2 (RFC 5246
// with the modern profile): extended_master_secret (RFC 7627, required unless configured off), secure renegotiation
// indication (RFC 5746), ec_point_formats and supported_groups (RFC 8422), signature_algorithms
// required (no implicit SHA-1), then suite + certificate + scheme, and the ECDHE group.
import { fatal } from './alert.js';
import { certificatesForName, type CertChoice, type CertEntry } from './certselect.js';
import { Reader } from './codec.js';
import { ExtensionType, TLS12_VERSION, TLS13_VERSION } from './extensions.js';
import type { HandshakeConfig } from './handshake13.js';
import { TLS_FALLBACK_SCSV } from './hello13.js';
import type { ClientHello } from './messages.js';
import { SignatureScheme, type Signer } from './signer.js';
import { DEFAULT_GROUPS, isTls12Group } from './kex.js';
import { NamedGroup, groupName } from './suites.js';
import { suitePreference12, type CipherSuite12 } from './suites12.js';

/** A protocol version a listener can enable. */
export type TlsVersionName = '1.2' | '1.3';

/** The versions a server accepts (default 1.2–1.3). */
export interface VersionRange {
  minVersion?: TlsVersionName;
  maxVersion?: TlsVersionName;
}

/** TLS 1.2 policy beyond the version range. */
export interface Tls12Policy {
  /**
   * Refuse clients without RFC 7627 extended_master_secret (default true). false lets old clients
   * in with the RFC 5246 master secret, which a man in the middle can synchronise across two
   * sessions (the triple handshake attack): for operators who must serve such clients.
   */
  requireExtendedMasterSecret?: boolean;
}

/** The handshake configuration with the version range: what ServerConnection is given. */
export type ServerHandshakeConfig = HandshakeConfig & VersionRange & Tls12Policy;

/** RFC 5746 §3.3 signalling cipher suite value. */
export const EMPTY_RENEGOTIATION_INFO_SCSV = 0x00ff;

/** Whether TLS 1.2 and 1.3 are enabled under this range. */
export function enabledVersions(range: VersionRange): { tls12: boolean; tls13: boolean } {
  const min = range.minVersion ?? '1.2';
  const max = range.maxVersion ?? '1.3';
  return { tls12: min === '1.2', tls13: max === '1.3' };
}

/**
 * The version for this hello (RFC 8446 §4.2.1, §D.2): supported_versions when present (1.3 first), else
 * legacy_version ≥ 0x0303 means 1.2; 1.3 is never chosen without supported_versions.
 * TLS_FALLBACK_SCSV with a client maximum below ours → inappropriate_fallback.
 */
export function selectVersion(ch: ClientHello, range: VersionRange): 'TLSv1.3' | 'TLSv1.2' {
  const { tls12, tls13 } = enabledVersions(range);
  const offered = ch.ext.supportedVersions;
  // RFC 7507 §3 comes first: a client that fell back below our highest version is told so,
  // whether or not we would accept the version it fell back to. GREASE values are not versions.
  const clientMax = offered ? Math.max(
    0, ...offered.filter((v) => v >> 8 === 3 && v <= TLS13_VERSION)
  ) : ch.legacyVersion;
  if (ch.cipherSuites.includes(TLS_FALLBACK_SCSV) && clientMax < (tls13 ? TLS13_VERSION : TLS12_VERSION)) {
    throw fatal('inappropriate_fallback', `client fell back to version 0x${clientMax.toString(16)} although ${tls13 ? 'TLS 1.3' : 'TLS 1.2'} is available (TLS_FALLBACK_SCSV)`);
  }
  if (offered) {
    if (tls13 && offered.includes(TLS13_VERSION)) return 'TLSv1.3';
    if (tls12 && offered.includes(TLS12_VERSION)) return 'TLSv1.2';
    throw fatal('protocol_version', `client offers none of the enabled versions (${[tls12 && 'TLS 1.2', tls13 && 'TLS 1.3'].filter(Boolean).join(', ')})`);
  }
  if (ch.legacyVersion >= TLS12_VERSION && tls12) return 'TLSv1.2';
  throw fatal('protocol_version', ch.legacyVersion < TLS12_VERSION
    ? `client offers only SSL 3.0 / TLS 1.0 / TLS 1.1 (0x${ch.legacyVersion.toString(16)}); TLS 1.2 or later is required`
    : 'client offers only TLS 1.2, which this listener does not enable');
}

/** What a TLS 1.2 ClientHello asked for beyond the common extension record. */
export interface Hello12Options {
  /** RFC 5746: SCSV or an empty renegotiation_info; we answer with an empty one. */
  secureRenegotiation: boolean;
  /** ec_point_formats was present (and lists uncompressed). */
  pointFormats: boolean;
  /** session_ticket was present: the ticket (empty = asks for a new one). */
  sessionTicket?: Buffer;
  /** The client offered extended_master_secret (RFC 7627): the session uses it. */
  extendedMasterSecret: boolean;
}

/** Legacy fields and the extensions TLS 1.2 needs; throws the alert each violation deserves. */
export function checkClientHello12(ch: ClientHello, policy: Tls12Policy = {}): Hello12Options {
  if (!ch.compressionMethods.includes(0)) throw fatal('illegal_parameter', 'ClientHello does not offer null compression (TLS 1.2 requires it in the list)');
  const raw = ch.ext.raw;
  let secureRenegotiation = ch.cipherSuites.includes(EMPTY_RENEGOTIATION_INFO_SCSV);
  const reneg = raw.get(ExtensionType.renegotiation_info);
  if (reneg) {
    const r = new Reader(reneg);
    const verifyData = r.vec8('renegotiated_connection');
    r.expectEnd('renegotiation_info');
    if (verifyData.length > 0) throw fatal('handshake_failure', 'renegotiation_info carries verify data in an initial handshake (RFC 5746 §3.6)');
    secureRenegotiation = true;
  }
  const ems = raw.get(ExtensionType.extended_master_secret);
  if (ems === undefined && (policy.requireExtendedMasterSecret ?? true)) {
    throw fatal('handshake_failure', 'client does not offer extended_master_secret (RFC 7627), which this server requires');
  }
  if (ems !== undefined && ems.length > 0) throw fatal('decode_error', 'extended_master_secret must be empty');
  if (!ch.ext.signatureAlgorithms) throw fatal('handshake_failure', 'ClientHello lacks signature_algorithms; the implicit SHA-1 default of TLS 1.2 is refused');
  let pointFormats = false;
  const pf = raw.get(ExtensionType.ec_point_formats);
  if (pf) {
    const r = new Reader(pf);
    const formats = r.vec8('ec_point_formats');
    r.expectEnd('ec_point_formats');
    if (formats.length === 0) throw fatal('decode_error', 'empty ec_point_formats');
    // RFC 8422 §5.1.2: without uncompressed in the list we cannot send our point.
    if (!formats.includes(0)) throw fatal('illegal_parameter', 'ec_point_formats does not include uncompressed');
    pointFormats = true;
  }
  const sessionTicket = raw.get(ExtensionType.session_ticket);
  return {
    secureRenegotiation, pointFormats, extendedMasterSecret: ems !== undefined,
    ...(sessionTicket ? { sessionTicket } : {})
  };
}

/** The ECDHE group: our first preference (of `ours`) among the client's supported_groups (RFC 8422 §5.1.1). */
export function chooseGroup12(ch: ClientHello, ours: readonly number[] = DEFAULT_GROUPS): number {
  const offered = ch.ext.supportedGroups;
  if (!offered) throw fatal('handshake_failure', 'ClientHello lacks supported_groups: no ECDHE group can be chosen');
  const usable = ours.filter(isTls12Group);
  const group = usable.find((g) => offered.includes(g));
  if (group === undefined) throw fatal('handshake_failure', `no ECDHE group in common (${usable.map(groupName).join(', ')})`);
  return group;
}

const RSA12 = new Set<number>([
  SignatureScheme.rsa_pss_rsae_sha256, SignatureScheme.rsa_pss_rsae_sha384, SignatureScheme.rsa_pss_rsae_sha512,
  SignatureScheme.rsa_pkcs1_sha256, SignatureScheme.rsa_pkcs1_sha384, SignatureScheme.rsa_pkcs1_sha512,
]);
// RFC 8422 §5.1.1 / RFC 5246 §7.4.1.4.1: in TLS 1.2 the ECDSA hash is the client's choice, whatever the curve.
const ECDSA12 = new Set<number>([
  SignatureScheme.ecdsa_secp256r1_sha256, SignatureScheme.ecdsa_secp384r1_sha384,
  SignatureScheme.ecdsa_secp521r1_sha512,
]);

/**
 * ServerKeyExchange schemes this signer can produce, in its preference order. In TLS 1.2 the
 * ECDSA hash is not bound to the curve, so whatever ECDSA scheme the key-holder lists is usable;
 * PKCS#1 v1.5 is allowed here (not in 1.3); SHA-1 never.
 */
export function schemesForKey12(signer: Signer): number[] {
  const allowed = signer.keyType === 'rsa' ? RSA12 : ECDSA12;
  return signer.schemes.filter((s) => allowed.has(s));
}

/** The suite, certificate and ServerKeyExchange scheme chosen for a TLS 1.2 hello. */
export interface Choice12 { suite: CipherSuite12; cert: CertChoice }

/**
 * Walks our suites in preference order (suitePreference12) and takes the first the client
 * offers for which a certificate serving its SNI can sign with a scheme the client accepts
 * (and, for ECDSA, whose curve is in supported_groups). Among certificates of the same key type, a chain the
 * client says it can verify wins.
 */
export function chooseSuiteAndCertificate12(
  ch: ClientHello, entries: readonly CertEntry[], sniStrict = false,
): Choice12 {
  const candidates = certificatesForName(entries, ch.ext.serverName, sniStrict);
  const offeredSuites = new Set(ch.cipherSuites);
  const sigAlgs = new Set(ch.ext.signatureAlgorithms ?? []);
  const certOk = new Set(ch.ext.signatureAlgorithmsCert ?? ch.ext.signatureAlgorithms ?? []);
  const groups = new Set(ch.ext.supportedGroups ?? []);
  const byType = new Map<'ec' | 'rsa', CertChoice | null>();
  const pick = (keyType: 'ec' | 'rsa'): CertChoice | null => {
    let best: { choice: CertChoice; chainOk: boolean } | undefined;
    for (const entry of candidates) {
      if (entry.keyType !== keyType) continue;
      // RFC 8422 §5.1: in TLS 1.2 supported_groups also limits the curve of an ECDSA certificate.
      if (keyType === 'ec' && !groups.has(entry.curve === 'P-384' ? NamedGroup.secp384r1 : NamedGroup.secp256r1)) continue;
      const scheme = schemesForKey12(entry.certified.signer).find((s) => sigAlgs.has(s));
      if (scheme === undefined) continue;
      const chainOk = entry.chainSchemes.every((s) => certOk.has(s));
      if (!best || (chainOk && !best.chainOk)) best = { choice: { entry, scheme }, chainOk };
    }
    return best?.choice ?? null;
  };
  let commonSuite = false;
  for (const suite of suitePreference12(ch.cipherSuites)) {
    if (!offeredSuites.has(suite.id)) continue;
    commonSuite = true;
    if (!byType.has(suite.auth)) byType.set(suite.auth, pick(suite.auth));
    const cert = byType.get(suite.auth);
    if (cert) return { suite, cert };
  }
  if (!commonSuite) throw fatal('handshake_failure', 'no TLS 1.2 cipher suite in common: only ECDHE with AES-GCM or ChaCha20-Poly1305 is served (no CBC, no RSA key exchange)');
  throw fatal('handshake_failure', 'no certificate whose key can sign with a scheme the client offered for the suites in common');
}
