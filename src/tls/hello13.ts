// ClientHello negotiation for TLS 1.3, in the order Go's handshake_server_tls13.go reads:
// version, legacy fields, mandatory extensions, cipher suite, group and key share, ALPN,
// and the "otherwise identical" check for the ClientHello that answers a HelloRetryRequest.
import { fatal } from './alert.js';
import { PSK_DHE_KE, TLS13_VERSION, type KeyShareEntry } from './extensions.js';
import type { ClientHello } from './messages.js';
import { DEFAULT_GROUPS, checkShareLength, isHybridGroup } from './kex.js';
import { TLS13_SUITES, type CipherSuite } from './suites.js';

/** RFC 7507 signalling cipher suite value. */
export const TLS_FALLBACK_SCSV = 0x5600;

/**
 * The TLS 1.3 states' own version check. The version is chosen in hello12.ts `selectVersion`
 * (ExpectClientHelloAny); this still guards the ClientHello that answers a HelloRetryRequest.
 */
export function negotiateVersion(ch: ClientHello): 'TLSv1.3' {
  const versions = ch.ext.supportedVersions;
  if (versions?.includes(TLS13_VERSION)) return 'TLSv1.3';
  // RFC 7507 §3: a retry below our highest version is a downgrade (attack or broken middlebox).
  if (ch.cipherSuites.includes(TLS_FALLBACK_SCSV)) throw fatal('inappropriate_fallback', 'client fell back below TLS 1.3 (TLS_FALLBACK_SCSV)');
  throw fatal('protocol_version', 'client does not offer TLS 1.3 (TLS 1.2 is not enabled)');
}

/** Legacy fields and mandatory extensions for a TLS 1.3 ClientHello (RFC 8446 §4.1.2, §9.2). */
export function checkClientHello13(ch: ClientHello): void {
  // RFC 8446 D.5: a hello claiming SSL 3.0 or older is refused even when supported_versions offers 1.3.
  if (ch.legacyVersion <= 0x0300) throw fatal('protocol_version', `ClientHello legacy_version 0x${ch.legacyVersion.toString(16).padStart(4, '0')} is SSL 3.0 or older`);
  if (ch.compressionMethods.length !== 1 || ch.compressionMethods[0] !== 0) {
    throw fatal('illegal_parameter', 'TLS 1.3 requires compression_methods to be exactly [null]');
  }
  const e = ch.ext;
  if (e.preSharedKey && !e.pskModes) throw fatal('missing_extension', 'pre_shared_key offered without psk_key_exchange_modes');
  // Our HelloRetryRequest never carries a cookie, so any cookie is unsolicited (TLS-Anvil 8446-i1e2R9UFD2).
  if (e.cookie) throw fatal('illegal_parameter', 'ClientHello carries a cookie this server never sent');
  if (!e.supportedGroups) throw fatal('missing_extension', 'ClientHello lacks supported_groups');
  if (!e.keyShares) throw fatal('missing_extension', 'ClientHello lacks key_share');
  const groups = new Set(e.supportedGroups);
  for (const ks of e.keyShares) {
    if (!groups.has(ks.group)) throw fatal('illegal_parameter', `key_share for group ${ks.group} not listed in supported_groups`);
    checkShareLength(ks);
  }
  // Without an acceptable PSK the certificate path needs signature_algorithms; checked by the
  // caller once PSK acceptance is known (RFC 8446 §9.2 makes it unconditional without PSK).
}

/** True when the client allows the only PSK mode we accept (psk_dhe_ke). */
export function allowsPskDhe(ch: ClientHello): boolean {
  return ch.ext.pskModes?.includes(PSK_DHE_KE) ?? false;
}

/** First of our suites (server preference) the client offers; none → handshake_failure. */
export function chooseSuite(ch: ClientHello): CipherSuite {
  const offered = new Set(ch.cipherSuites);
  const suite = TLS13_SUITES.find((s) => offered.has(s.id));
  if (!suite) throw fatal('handshake_failure', 'no TLS 1.3 cipher suite in common');
  return suite;
}

export type GroupChoice = { share: KeyShareEntry } | { retryWith: number };

/**
 * The group, from `ours` (server preference order) and the client's supported_groups. When our most
 * preferred common group is a hybrid (ML-KEM) group, only hybrids are candidates: the client's
 * hybrid share if it sent one, else HelloRetryRequest to that group (a classical share is not
 * worth a later harvest-now-decrypt-later break). Otherwise any common group the client already
 * sent a share for wins, in our order (saves a round trip, as Go does), else HRR to the first.
 */
export function chooseGroup(ch: ClientHello, ours: readonly number[] = DEFAULT_GROUPS): GroupChoice {
  const clientGroups = new Set(ch.ext.supportedGroups ?? []);
  const common = ours.filter((g) => clientGroups.has(g));
  const first = common[0];
  if (first === undefined) throw fatal('handshake_failure', 'no key exchange group in common');
  const candidates = isHybridGroup(first) ? common.filter(isHybridGroup) : common;
  const shares = ch.ext.keyShares ?? [];
  for (const g of candidates) {
    const share = shares.find((s) => s.group === g);
    if (share) return { share };
  }
  return { retryWith: first };
}

/** ALPN: our first protocol the client also offers; no overlap → no_application_protocol. */
export function chooseAlpn(ch: ClientHello, ours: readonly string[] | undefined): string | undefined {
  const offered = ch.ext.alpn;
  if (!offered || !ours || ours.length === 0) return undefined;
  const proto = ours.find((p) => offered.includes(p));
  if (proto === undefined) throw fatal('no_application_protocol', `none of the client's ALPN protocols (${offered.join(', ')}) is served here`);
  return proto;
}

// Extensions ClientHello2 may change (RFC 8446 §4.1.2): key_share (checked below), early_data
// (removed), pre_shared_key (ages, binders, dropped identities) and padding. Every other
// extension, cookie included (our HRR never sends one), must come back byte for byte.
const MAY_CHANGE = new Set([51 /* key_share */, 42 /* early_data */, 41 /* pre_shared_key */, 21 /* padding */]);

/** ClientHello2 must answer our HRR and otherwise repeat ClientHello1 (RFC 8446 §4.1.2). */
export function checkRetryHello(ch1: ClientHello, ch2: ClientHello, requestedGroup: number): void {
  const shares = ch2.ext.keyShares;
  if (!shares) throw fatal('missing_extension', 'second ClientHello lacks key_share');
  if (shares.length !== 1 || shares[0]!.group !== requestedGroup) {
    throw fatal('illegal_parameter', 'second ClientHello must carry exactly one key share, for the group the HelloRetryRequest named');
  }
  if (ch2.ext.earlyData) throw fatal('illegal_parameter', 'second ClientHello offers early_data');
  if (ch2.ext.preSharedKey && !ch1.ext.preSharedKey) throw fatal('illegal_parameter', 'second ClientHello adds pre_shared_key');
  if (ch1.legacyVersion !== ch2.legacyVersion || !ch1.random.equals(ch2.random) || !ch1.sessionId.equals(ch2.sessionId)
    || ch1.cipherSuites.join() !== ch2.cipherSuites.join() || !ch1.compressionMethods.equals(ch2.compressionMethods)) {
    throw fatal('illegal_parameter', 'second ClientHello changed fields other than key_share');
  }
  for (const t of new Set([...ch1.ext.raw.keys(), ...ch2.ext.raw.keys()])) {
    if (MAY_CHANGE.has(t)) continue;
    const a = ch1.ext.raw.get(t);
    const b = ch2.ext.raw.get(t);
    if (a === undefined || b === undefined || !a.equals(b)) throw fatal('illegal_parameter', `second ClientHello ${a === undefined ? 'added' : b === undefined ? 'dropped' : 'changed'} extension ${t}`);
  }
}
