// TLS 1.3 cipher suites and named groups (RFC 8446 §B.4, §4.2.7), and the ephemeral ECDHE
// key for one handshake. Imports node:crypto and alert.ts only.
import crypto from 'node:crypto';
import { fatal } from './alert.js';

/** One TLS 1.3 cipher suite: the AEAD and the hash of its key schedule. */
export interface CipherSuite {
  id: number;
  /** IANA name, e.g. 'TLS_AES_128_GCM_SHA256'. */
  name: string;
  version: 'TLSv1.3';
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

/** NamedGroup code points we implement (RFC 8446 §4.2.7). */
export const NamedGroup = { x25519: 0x001d, secp256r1: 0x0017, secp384r1: 0x0018 } as const;
export type NamedGroupName = keyof typeof NamedGroup;

/** Groups in server preference order (x25519 is the cheapest and the most common share). */
export const SUPPORTED_GROUPS: readonly number[] = Object.freeze([NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1]);

/** Name of a group code point ('x25519', …) or '' when it is not one of ours. */
export function groupName(group: number): NamedGroupName | '' {
  for (const [k, v] of Object.entries(NamedGroup)) if (v === group) return k as NamedGroupName;
  return '';
}

interface GroupInfo {
  /** Length of the wire-form public key. */
  shareLen: number;
  /** DER prefix that turns the wire-form point into a SubjectPublicKeyInfo. */
  spkiPrefix: Buffer;
  keygen: () => crypto.KeyPairKeyObjectResult;
  keygenAsync: (cb: (err: Error | null, pair?: crypto.KeyPairKeyObjectResult) => void) => void;
}

function ecInfo(curve: 'prime256v1' | 'secp384r1', shareLen: number, spkiPrefix: string): GroupInfo {
  return {
    shareLen,
    spkiPrefix: Buffer.from(spkiPrefix, 'hex'),
    keygen: () => crypto.generateKeyPairSync('ec', { namedCurve: curve }),
    keygenAsync: (cb) => crypto.generateKeyPair('ec', { namedCurve: curve }, (err, publicKey, privateKey) => cb(err, { publicKey, privateKey })),
  };
}

const GROUPS = new Map<number, GroupInfo>([
  [NamedGroup.x25519, {
    shareLen: 32,
    spkiPrefix: Buffer.from('302a300506032b656e032100', 'hex'),
    keygen: () => crypto.generateKeyPairSync('x25519'),
    keygenAsync: (cb) => crypto.generateKeyPair('x25519', {}, (err, publicKey, privateKey) => cb(err, { publicKey, privateKey })),
  }],
  [NamedGroup.secp256r1, ecInfo('prime256v1', 65, '3059301306072a8648ce3d020106082a8648ce3d030107034200')],
  [NamedGroup.secp384r1, ecInfo('secp384r1', 97, '3076301006072a8648ce3d020106052b81040022036200')],
]);

/** Pre-generated key pairs per group, filled on the libuv thread pool so a handshake rarely pays for keygen. */
const POOL_TARGET = 16;
const pools = new Map<number, crypto.KeyPairKeyObjectResult[]>();
const refilling = new Set<number>();

function refill(group: number, info: GroupInfo): void {
  if (refilling.has(group)) return;
  refilling.add(group);
  const pool = pools.get(group) ?? [];
  pools.set(group, pool);
  let pending = POOL_TARGET - pool.length;
  if (pending <= 0) { refilling.delete(group); return; }
  for (let i = pending; i > 0; i--) {
    info.keygenAsync((err, pair) => {
      if (!err && pair && pool.length < POOL_TARGET) pool.push(pair);
      if (--pending === 0) refilling.delete(group);
    });
  }
}

/** The ephemeral (EC)DHE key of one handshake: used for exactly one key exchange. */
export class EphemeralKey {
  private used = false;
  private constructor(readonly group: number, private readonly info: GroupInfo, private readonly pair: crypto.KeyPairKeyObjectResult) {}

  /** A fresh key for `group`, taken from the pool when one is ready. Throws for a group we do not implement. */
  static generate(group: number): EphemeralKey {
    const info = GROUPS.get(group);
    if (!info) throw fatal('illegal_parameter', `unsupported named group 0x${group.toString(16).padStart(4, '0')}`);
    const pool = pools.get(group);
    const pair = pool?.pop() ?? info.keygen();
    if (!pool || pool.length < POOL_TARGET / 2) refill(group, info);
    return new EphemeralKey(group, info, pair);
  }

  /** Our key share in wire form: 32 bytes for x25519, 0x04 ‖ X ‖ Y for the NIST curves. */
  publicBytes(): Buffer {
    // The uncompressed point (or the x25519 key) is the tail of the SPKI's BIT STRING.
    const spki = this.pair.publicKey.export({ format: 'der', type: 'spki' });
    return spki.subarray(spki.length - this.info.shareLen);
  }

  /** The shared secret with the peer's share; malformed, off-curve or degenerate shares are illegal_parameter. */
  deriveShared(peer: Buffer): Buffer {
    if (this.used) throw fatal('internal_error', 'ephemeral key reused');
    this.used = true;
    const { shareLen, spkiPrefix } = this.info;
    if (peer.length !== shareLen) throw fatal('illegal_parameter', `key share is ${peer.length} bytes, expected ${shareLen}`);
    if (this.group !== NamedGroup.x25519 && peer[0] !== 0x04) throw fatal('illegal_parameter', 'key share is not an uncompressed point');
    let shared: Buffer;
    try {
      const publicKey = crypto.createPublicKey({ key: Buffer.concat([spkiPrefix, peer]), format: 'der', type: 'spki' });
      shared = crypto.diffieHellman({ privateKey: this.pair.privateKey, publicKey });
    } catch {
      // node:crypto rejects points not on the curve (and the point at infinity) here.
      throw fatal('illegal_parameter', 'key share is not a valid point on the curve');
    }
    // RFC 8446 §7.4.2: a low-order x25519 point yields all zeros; abort rather than use it.
    if (this.group === NamedGroup.x25519 && isAllZero(shared)) throw fatal('illegal_parameter', 'x25519 shared secret is all zero (low-order point)');
    return shared;
  }
}

function isAllZero(b: Buffer): boolean {
  let acc = 0;
  for (let i = 0; i < b.length; i++) acc |= b[i]!;
  return acc === 0;
}
