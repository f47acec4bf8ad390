// ClientHello extensions (RFC 8446 §4.2): decoded into one typed record, each body read by
// a bounded sub-reader that must be consumed exactly. Duplicates, a pre_shared_key that is
// not last, empty must-not-be-empty lists and malformed SNI are rejected here.
import { isIP } from 'node:net';
import { fatal } from './alert.js';
import { Reader, Writer } from './codec.js';
import { readDelegatedCredentialExtension } from './delegated.js';

/** Extension type code points this server reads or writes. */
export const ExtensionType = {
  server_name: 0,
  supported_groups: 10,
  ec_point_formats: 11,
  signature_algorithms: 13,
  alpn: 16,
  extended_master_secret: 23,
  delegated_credential: 34,
  session_ticket: 35,
  pre_shared_key: 41,
  early_data: 42,
  supported_versions: 43,
  cookie: 44,
  psk_key_exchange_modes: 45,
  signature_algorithms_cert: 50,
  key_share: 51,
  renegotiation_info: 0xff01,
} as const;

/** Recognised but never valid in a ClientHello: the §4.2 rule makes that illegal_parameter. */
const OID_FILTERS = 48;

export const TLS13_VERSION = 0x0304;
export const TLS12_VERSION = 0x0303;
/** psk_key_exchange_modes value for PSK with (EC)DHE, the only mode we accept. */
export const PSK_DHE_KE = 1;

export interface KeyShareEntry { group: number; key: Buffer }
export interface PskIdentity { identity: Buffer; obfuscatedAge: number }
export interface OfferedPsks {
  identities: PskIdentity[];
  binders: Buffer[];
  /** Offset in the ClientHello message (header included) where the binders list starts. */
  bindersStart: number;
}

/** What a ClientHello offered, extension by extension (undefined = absent). */
export interface ClientHelloExtensions {
  /** Extension types in the order received (for HRR comparison and diagnostics). */
  types: number[];
  serverName?: string;
  supportedGroups?: number[];
  signatureAlgorithms?: number[];
  signatureAlgorithmsCert?: number[];
  alpn?: string[];
  supportedVersions?: number[];
  keyShares?: KeyShareEntry[];
  pskModes?: number[];
  preSharedKey?: OfferedPsks;
  earlyData: boolean;
  cookie?: Buffer;
  /** delegated_credential (RFC 9345): the schemes the client accepts for CertificateVerify under a credential. */
  delegatedCredential?: number[];
  /** Raw bodies kept for the HelloRetryRequest "otherwise identical" check. */
  raw: Map<number, Buffer>;
}

function u16List(r: Reader, what: string, lenBytes: 1 | 2 = 2): number[] {
  const sub = r.sub(lenBytes, what);
  if (sub.remaining === 0 || sub.remaining % 2 !== 0) throw fatal('decode_error', `${what} must be a non-empty list of u16`);
  const out: number[] = [];
  while (sub.remaining > 0) out.push(sub.u16(what));
  return out;
}

/** The SNI host name, lowercased; undefined for an IP literal, which counts as no SNI. */
function readServerName(r: Reader): string | undefined {
  const list = r.sub(2, 'server_name list');
  let name: string | undefined;
  while (list.remaining > 0) {
    const type = list.u8('server_name type');
    const value = list.vec16('server_name');
    if (type !== 0) continue; // only host_name (0) is defined; RFC 6066 says ignore others
    if (name !== undefined) throw fatal('illegal_parameter', 'server_name carries more than one host_name');
    if (value.length === 0) throw fatal('decode_error', 'empty host_name in server_name');
    name = value.toString('latin1');
    // RFC 6066 §3 says HostName is never an IP literal, yet clients (testssl, some libraries
    // connecting by address) send one: treat it as no SNI rather than as a name to refuse.
    if (mayBeIpLiteral(name) && isIP(name.startsWith('[') && name.endsWith(']') ? name.slice(1, -1) : name) !== 0) return undefined;
    // RFC 6066 §3: ASCII hostname, no trailing dot; reject anything that is not a DNS name.
    if (!/^[A-Za-z0-9_.-]+$/.test(name) || name.endsWith('.') || name.startsWith('.')) {
      throw fatal('illegal_parameter', 'server_name is not a valid DNS host name');
    }
  }
  if (name === undefined) throw fatal('decode_error', 'server_name has no host_name');
  return name.toLowerCase();
}

/**
 * False for names that cannot be an IP literal (no ':' nor '[', not only digits and dots):
 * isIP runs two large regular expressions, and almost every SNI is a DNS name.
 */
function mayBeIpLiteral(name: string): boolean {
  if (name.includes(':') || name.includes('[')) return true;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c !== 0x2e && (c < 0x30 || c > 0x39)) return false;
  }
  return true;
}

function readAlpn(r: Reader): string[] {
  const list = r.sub(2, 'ALPN list');
  if (list.remaining === 0) throw fatal('decode_error', 'empty ALPN protocol list');
  const out: string[] = [];
  while (list.remaining > 0) {
    const p = list.vec8('ALPN protocol');
    if (p.length === 0) throw fatal('decode_error', 'empty ALPN protocol name');
    out.push(p.toString('latin1'));
  }
  return out;
}

function readKeyShares(r: Reader): KeyShareEntry[] {
  const list = r.sub(2, 'key_share list');
  const out: KeyShareEntry[] = [];
  const seen = new Set<number>();
  while (list.remaining > 0) {
    const group = list.u16('key_share group');
    const key = list.vec16('key_share key');
    if (key.length === 0) throw fatal('decode_error', 'empty key_exchange in key_share');
    if (seen.has(group)) throw fatal('illegal_parameter', 'duplicate key_share group');
    seen.add(group);
    out.push({ group, key });
  }
  return out;
}

function readPsk(r: Reader, extStart: number): OfferedPsks {
  const ids = r.sub(2, 'PSK identities');
  if (ids.remaining === 0) throw fatal('decode_error', 'empty PSK identity list');
  const identities: PskIdentity[] = [];
  while (ids.remaining > 0) {
    const identity = ids.vec16('PSK identity');
    if (identity.length === 0) throw fatal('decode_error', 'empty PSK identity');
    identities.push({ identity, obfuscatedAge: ids.u32('obfuscated_ticket_age') });
  }
  const bindersStart = r.offset - extStart;
  const bl = r.sub(2, 'PSK binders');
  if (bl.remaining === 0) throw fatal('decode_error', 'empty PSK binder list'); // binders<33..2^16-1>
  const binders: Buffer[] = [];
  while (bl.remaining > 0) {
    const b = bl.vec8('PSK binder');
    if (b.length < 32) throw fatal('decode_error', 'PSK binder shorter than 32 bytes');
    binders.push(b);
  }
  if (binders.length !== identities.length) throw fatal('illegal_parameter', 'PSK binder count differs from identity count');
  return { identities, binders, bindersStart };
}

/**
 * Decodes the ClientHello extension block. `r` reads the block body; `msgStart` is the offset
 * of the ClientHello message header in r's buffer (so PSK binder offsets are message-relative).
 */
export function readClientHelloExtensions(r: Reader, msgStart: number): ClientHelloExtensions {
  const ext: ClientHelloExtensions = { types: [], earlyData: false, raw: new Map() };
  while (r.remaining > 0) {
    if (ext.preSharedKey) throw fatal('illegal_parameter', 'pre_shared_key must be the last extension');
    const type = r.u16('extension type');
    if (ext.raw.has(type)) throw fatal('illegal_parameter', `duplicate extension ${type}`);
    const er = r.sub(2, `extension ${type}`);
    ext.types.push(type);
    ext.raw.set(type, er.peekRest());
    switch (type) {
      case ExtensionType.server_name: ext.serverName = readServerName(er); break;
      case ExtensionType.supported_groups: ext.supportedGroups = u16List(er, 'supported_groups'); break;
      case ExtensionType.signature_algorithms: ext.signatureAlgorithms = u16List(er, 'signature_algorithms'); break;
      case ExtensionType.signature_algorithms_cert: ext.signatureAlgorithmsCert = u16List(er, 'signature_algorithms_cert'); break;
      case ExtensionType.alpn: ext.alpn = readAlpn(er); break;
      case ExtensionType.supported_versions: ext.supportedVersions = u16List(er, 'supported_versions', 1); break;
      case ExtensionType.key_share: ext.keyShares = readKeyShares(er); break;
      case ExtensionType.psk_key_exchange_modes: {
        const modes = er.vec8('psk_key_exchange_modes');
        if (modes.length === 0) throw fatal('decode_error', 'empty psk_key_exchange_modes');
        ext.pskModes = [...modes];
        break;
      }
      case ExtensionType.pre_shared_key: ext.preSharedKey = readPsk(er, msgStart); break;
      case ExtensionType.early_data: ext.earlyData = true; break;
      case ExtensionType.delegated_credential: ext.delegatedCredential = readDelegatedCredentialExtension(er); break;
      case ExtensionType.cookie:
        ext.cookie = er.vec16('cookie');
        if (ext.cookie.length === 0) throw fatal('decode_error', 'empty cookie'); // cookie<1..2^16-1>
        break;
      case OID_FILTERS: throw fatal('illegal_parameter', 'oid_filters is only allowed in CertificateRequest (RFC 8446 §4.2)');
      default: er.bytes(er.remaining); // unknown extensions are ignored (RFC 8446 §4.2)
    }
    er.expectEnd(`extension ${type}`);
  }
  return ext;
}

/** Writes one extension: u16 type, u16-length-prefixed body. */
export function writeExtension(w: Writer, type: number, body: (w: Writer) => void): void {
  w.u16(type).lengthPrefixed(2, body);
}
