// TLS 1.3 cipher suites and named groups (RFC 8446 §B.4, §4.2.7), and the ephemeral ECDHE
// key for one handshake. Imports node:crypto and alert.ts only.
import crypto from 'node:crypto';
import { fatal } from './alert.js';

/** One cipher suite: the AEAD and the hash of its key schedule (TLS 1.2 suites: suites12.ts). */
export interface CipherSuite {
  id: number;
  /** IANA name, e.g. 'TLS_AES_128_GCM_SHA256'. */
  name: string;
  version: 'TLSv1.3' | 'TLSv1.2';
  hash: 'sha256' | 'sha384';
  hashLen: 32 | 48;
  keyLen: 16 | 32;
  ivLen: 12;
  aead: 'aes-128-gcm' | 'aes-256-gcm' | 'chacha20-poly1305';
}

/** The TLS 1.3 suites we offer, in server preference order. */
export const TLS13_SUITES: readonly CipherSuite[] = Object.freeze([
  { id: 0x1301, name: 'TLS_AES_128_GCM_SHA256', version: 'TLSv1.3', hash: 'sha256', hashLen: 32, keyLen: 16, ivLen: 12, aead: 'aes-128-gcm' },
  { id: 0x1302, name: 'TLS_AES_256_GCM_SHA384', version: 'TLSv1.3', hash: 'sha384', hashLen: 48, keyLen: 32, ivLen: 12, aead: 'aes-256-gcm' },
  { id: 0x1303, name: 'TLS_CHACHA20_POLY1305_SHA256', version: 'TLSv1.3', hash: 'sha256', hashLen: 32, keyLen: 32, ivLen: 12, aead: 'chacha20-poly1305' },
] as const satisfies readonly CipherSuite[]);

/** The suite with this code point, or undefined if we do not implement it. */
export function suiteById(id: number): CipherSuite | undefined {
  return TLS13_SUITES.find((s) => s.id === id);
}

/**
 * NamedGroup code points we implement (RFC 8446 §4.2.7, RFC 7919 §A, draft-ietf-tls-ecdhe-mlkem §4), under
 * their IANA names: these are also the names of the `groups:` listener option and of the metrics label.
 */
export const NamedGroup = {
  x25519: 0x001d, secp256r1: 0x0017, secp384r1: 0x0018, secp521r1: 0x0019, x448: 0x001e,
  ffdhe2048: 0x0100, ffdhe3072: 0x0101, ffdhe4096: 0x0102,
  SecP256r1MLKEM768: 0x11eb, X25519MLKEM768: 0x11ec,
} as const;
export type NamedGroupName = keyof typeof NamedGroup;

/** The (EC)DH groups EphemeralKey implements, in server preference order (x25519 is the cheapest). */
export const SUPPORTED_GROUPS: readonly number[] = Object.freeze([
  NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.x448, NamedGroup.secp384r1, NamedGroup.secp521r1,
]);

/** Name of a group code point ('x25519', …) or '' when it is not one of ours. */
export function groupName(group: number): NamedGroupName | '' {
  for (const [k, v] of Object.entries(NamedGroup)) if (v === group) return k as NamedGroupName;
  return '';
}

interface GroupInfo {
  /** Keys kept ready: a burst of ClientHellos takes them instead of generating on the event loop. */
  poolSize: number;
  /** Length of the wire-form public key. */
  shareLen: number;
  /** JWK curve name: keys cross the node:crypto boundary as JWK, ~10× cheaper than DER in OpenSSL 3. */
  crv: 'X25519' | 'X448' | 'P-256' | 'P-384' | 'P-521';
  /** Sync keygen (the pool is empty): the public key comes back as a JWK encoded by the keygen job itself. */
  keygen: () => { publicKey: crypto.JsonWebKey; privateKey: crypto.KeyObject };
  /** Pool keygen on the thread pool: the public key comes back as a JWK encoded by the job too. */
  keygenAsync: (cb: (err: Error | null, pair?: JwkPair) => void) => void;
}

/** A key pair whose public half the keygen job encoded as a JWK. */
interface JwkPair { publicKey: crypto.JsonWebKey; privateKey: crypto.KeyObject }

/** A pooled or fresh key pair with its public key already in wire form. */
interface ReadyPair { wire: Buffer; privateKey: crypto.KeyObject }

// Node 20 deadlock (seen under load, gdb: ExportJWKEdKey → GC → ~KeyGenJob → the same key mutex):
// exporting a generated key while the garbage collector destroys the keygen job that made it
// blocks the event loop for ever. So a key's public half is read only while its job is alive: in
// the generateKeyPair callback, or encoded by the keygen job itself (both pool and sync keygen do that).
const JWK_PUBLIC = { publicKeyEncoding: { format: 'jwk' } } as const;
// node's typings know both encodings or neither; with only publicKeyEncoding the private key is a KeyObject.
const keygenJwk = crypto.generateKeyPairSync as unknown as (type: 'ec' | 'x25519' | 'x448', options: object) => JwkPair;
// The same for the pool: the job encodes the JWK on the thread pool. Exporting a KeyObject in the
// callback instead cost ~17-24 µs of event-loop time per key (measured, Node 20), this ~3-4 µs.
const keygenJwkAsync = crypto.generateKeyPair as unknown as (
  type: 'ec' | 'x25519' | 'x448', options: object,
  cb: (err: Error | null, publicKey: crypto.JsonWebKey, privateKey: crypto.KeyObject) => void,
) => void;
function jwkPairAsync(type: 'ec' | 'x25519' | 'x448', options: object, cb: (err: Error | null, pair?: JwkPair) => void): void {
  keygenJwkAsync(type, { ...options, ...JWK_PUBLIC }, (err, publicKey, privateKey) => {
    cb(err, err ? undefined : { publicKey, privateKey });
  });
}

function ecInfo(
  curve: 'prime256v1' | 'secp384r1' | 'secp521r1', crv: 'P-256' | 'P-384' | 'P-521', shareLen: number, poolSize: number,
): GroupInfo {
  return {
    poolSize,
    shareLen,
    crv,
    keygen: () => keygenJwk('ec', { namedCurve: curve, ...JWK_PUBLIC }),
    keygenAsync: (cb) => jwkPairAsync('ec', { namedCurve: curve }, cb),
  };
}

const GROUPS = new Map<number, GroupInfo>([
  [NamedGroup.x25519, {
    poolSize: 128,
    shareLen: 32,
    crv: 'X25519',
    keygen: () => keygenJwk('x25519', JWK_PUBLIC),
    keygenAsync: (cb) => jwkPairAsync('x25519', {}, cb),
  }],
  [NamedGroup.secp256r1, ecInfo('prime256v1', 'P-256', 65, 64)],
  [NamedGroup.secp384r1, ecInfo('secp384r1', 'P-384', 97, 16)],
  // P-521 coordinates are 66 bytes (521 bits rounded up), so the share is 1 + 2 × 66.
  [NamedGroup.secp521r1, ecInfo('secp521r1', 'P-521', 133, 8)],
  [NamedGroup.x448, {
    poolSize: 8,
    shareLen: 56,
    crv: 'X448',
    keygen: () => keygenJwk('x448', JWK_PUBLIC),
    keygenAsync: (cb) => jwkPairAsync('x448', {}, cb),
  }],
]);

/** RFC 7748 Montgomery curves: the share is the raw u-coordinate, the JWK is OKP. */
const isMontgomery = (group: number): boolean => group === NamedGroup.x25519 || group === NamedGroup.x448;

/** Decodes a base64url JWK coordinate, left-padded to `len` bytes, into `out` at `at`. */
function putCoord(out: Buffer, at: number, b64: string | undefined, len: number): void {
  const v = Buffer.from(b64 ?? '', 'base64url');
  v.copy(out, at + len - Math.min(len, v.length), Math.max(0, v.length - len));
}

/** Wire form of a public key from its JWK (x for X25519/X448, 0x04 ‖ x ‖ y for the NIST curves). */
function wireFromJwk(group: number, info: GroupInfo, jwk: crypto.JsonWebKey): Buffer {
  const out = Buffer.alloc(info.shareLen);
  if (isMontgomery(group)) {
    putCoord(out, 0, jwk.x, info.shareLen);
  } else {
    const coordLen = (info.shareLen - 1) / 2;
    out[0] = 0x04;
    putCoord(out, 1, jwk.x, coordLen);
    putCoord(out, 1 + coordLen, jwk.y, coordLen);
  }
  return out;
}

/** Pre-generated key pairs per group, filled on the libuv thread pool so a handshake rarely pays for keygen. */
const pools = new Map<number, ReadyPair[]>();
const refilling = new Set<number>();

function refill(group: number, info: GroupInfo): void {
  if (refilling.has(group)) return;
  refilling.add(group);
  const pool = pools.get(group) ?? [];
  pools.set(group, pool);
  let pending = info.poolSize - pool.length;
  if (pending <= 0) { refilling.delete(group); return; }
  for (let i = pending; i > 0; i--) {
    info.keygenAsync((err, pair) => {
      if (!err && pair && pool.length < info.poolSize) {
        pool.push({ wire: wireFromJwk(group, info, pair.publicKey), privateKey: pair.privateKey });
      }
      if (--pending === 0) refilling.delete(group);
    });
  }
}

/** The ephemeral (EC)DHE key of one handshake: used for exactly one key exchange. */
export class EphemeralKey {
  private used = false;
  private constructor(
    readonly group: number, private readonly info: GroupInfo, private readonly pair: ReadyPair,
  ) {}

  /** A fresh key for `group`, taken from the pool when one is ready. Throws for a group we do not implement. */
  static generate(group: number): EphemeralKey {
    const info = GROUPS.get(group);
    if (!info) throw fatal('illegal_parameter', `unsupported named group 0x${group.toString(16).padStart(4, '0')}`);
    const pool = pools.get(group);
    let pair = pool?.pop();
    if (!pair) {
      const fresh = info.keygen();
      pair = { wire: wireFromJwk(group, info, fresh.publicKey), privateKey: fresh.privateKey };
    }
    if (!pool || pool.length < info.poolSize / 2) refill(group, info);
    return new EphemeralKey(group, info, pair);
  }

  /** Key pairs ready in `group`'s pool (diagnostics and tests). */
  static pooled(group: number): number {
    return pools.get(group)?.length ?? 0;
  }

  /** Starts filling the key pools (off the event loop) so the first burst of handshakes finds keys ready. */
  static prewarm(groups: readonly number[] = SUPPORTED_GROUPS): void {
    for (const g of groups) {
      const info = GROUPS.get(g);
      if (info) refill(g, info);
    }
  }

  /** Our key share in wire form: 32 / 56 bytes for x25519 / x448, 0x04 ‖ X ‖ Y for the NIST curves. */
  publicBytes(): Buffer {
    return this.pair.wire;
  }

  /** The shared secret with the peer's share; malformed, off-curve or degenerate shares are illegal_parameter. */
  deriveShared(peer: Buffer): Buffer {
    if (this.used) throw fatal('internal_error', 'ephemeral key reused');
    this.used = true;
    const { shareLen, crv } = this.info;
    if (peer.length !== shareLen) throw fatal('illegal_parameter', `key share is ${peer.length} bytes, expected ${shareLen}`);
    if (!isMontgomery(this.group) && peer[0] !== 0x04) throw fatal('illegal_parameter', 'key share is not an uncompressed point');
    let shared: Buffer;
    try {
      const coordLen = (shareLen - 1) / 2;
      const jwk: crypto.JsonWebKey = isMontgomery(this.group)
        ? { kty: 'OKP', crv, x: peer.toString('base64url') }
        : { kty: 'EC', crv, x: peer.toString('base64url', 1, 1 + coordLen), y: peer.toString('base64url', 1 + coordLen) };
      const publicKey = crypto.createPublicKey({ key: jwk, format: 'jwk' });
      shared = crypto.diffieHellman({ privateKey: this.pair.privateKey, publicKey });
    } catch {
      // node:crypto rejects points not on the curve (and the point at infinity) here.
      throw fatal('illegal_parameter', 'key share is not a valid point on the curve');
    }
    // RFC 8446 §7.4.2 (RFC 7748 §6): a low-order point yields all zeros; abort rather than use it.
    if (isMontgomery(this.group) && isAllZero(shared)) throw fatal('illegal_parameter', 'X25519/X448 shared secret is all zero (low-order point)');
    return shared;
  }
}

function isAllZero(b: Buffer): boolean {
  let acc = 0;
  for (let i = 0; i < b.length; i++) acc |= b[i]!;
  return acc === 0;
}
