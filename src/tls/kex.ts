// The server side of the key exchange for every named group we implement: (EC)DHE through
// EphemeralKey (x25519, x448, P-256/384/521), finite-field DHE (RFC 7919, TLS 1.3 only) and the
// hybrid post-quantum groups of draft-ietf-tls-ecdhe-mlkem (TLS 1.3 only). ML-KEM-768 comes from
// @noble/post-quantum: Node 20's crypto has no ML-KEM, and a KEM is not something to write by hand.
import crypto from 'node:crypto';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { fatal } from './alert.js';
import type { KeyShareEntry } from './extensions.js';
import { FFDHE2048_P, FFDHE3072_P, FFDHE4096_P } from './ffdhe.js';
import { EphemeralKey, NamedGroup, groupName, type NamedGroupName } from './suites.js';

const G = NamedGroup;

/**
 * Server preference when a listener names no `groups`: the hybrids first (a harvested classical
 * exchange can be broken later, a HelloRetryRequest only costs a round trip), then OpenSSL's order.
 */
export const DEFAULT_GROUPS: readonly number[] = Object.freeze([
  G.X25519MLKEM768, G.SecP256r1MLKEM768,
  G.x25519, G.secp256r1, G.x448, G.secp384r1, G.secp521r1,
  G.ffdhe2048, G.ffdhe3072, G.ffdhe4096,
]);

const ML_KEM_EK = 1184;
const ML_KEM_CT = 1088;
const P256_SHARE = 65;
const X25519_SHARE = 32;

/** Primes of the RFC 7919 groups. */
const FFDHE = new Map<number, { p: Buffer; pBig: bigint; exponentBytes: number }>([
  // RFC 7919 §5.2: a short exponent of at least twice the group's security strength (103, 125, 150 bits).
  [G.ffdhe2048, { p: FFDHE2048_P, pBig: BigInt(`0x${FFDHE2048_P.toString('hex')}`), exponentBytes: 32 }],
  [G.ffdhe3072, { p: FFDHE3072_P, pBig: BigInt(`0x${FFDHE3072_P.toString('hex')}`), exponentBytes: 40 }],
  [G.ffdhe4096, { p: FFDHE4096_P, pBig: BigInt(`0x${FFDHE4096_P.toString('hex')}`), exponentBytes: 48 }],
]);

/** Exact length of a client's key_exchange for a group we implement; undefined for other groups. */
const CLIENT_SHARE_LEN = new Map<number, number>([
  [G.x25519, 32], [G.x448, 56], [G.secp256r1, 65], [G.secp384r1, 97], [G.secp521r1, 133],
  [G.ffdhe2048, 256], [G.ffdhe3072, 384], [G.ffdhe4096, 512],
  // draft-ietf-tls-ecdhe-mlkem §4.1: encapsulation key ‖ X25519 share; P-256 point ‖ encapsulation key.
  [G.X25519MLKEM768, ML_KEM_EK + X25519_SHARE], [G.SecP256r1MLKEM768, P256_SHARE + ML_KEM_EK],
]);

/** True for the hybrid ML-KEM groups (TLS 1.3 only; preferred when offered). */
export function isHybridGroup(group: number): boolean {
  return group === G.X25519MLKEM768 || group === G.SecP256r1MLKEM768;
}

/** Groups TLS 1.2 ECDHE can use (RFC 8422, RFC 7748): no hybrid, no finite field (we have no DHE suites). */
export function isTls12Group(group: number): boolean {
  return group === G.x25519 || group === G.x448
    || group === G.secp256r1 || group === G.secp384r1 || group === G.secp521r1;
}

/** Every group name a listener may list in `groups`. */
export const GROUP_NAMES: readonly NamedGroupName[] = Object.freeze(
  DEFAULT_GROUPS.map((g) => groupName(g) as NamedGroupName),
);

/** A listener's `groups` (names, in preference order) as code points; TypeError names what is wrong. */
export function parseGroups(names: readonly string[]): number[] {
  if (names.length === 0) throw new TypeError('groups must name at least one group');
  const out: number[] = [];
  for (const n of names) {
    const g = (NamedGroup as Record<string, number>)[n];
    if (g === undefined || !Object.hasOwn(NamedGroup, n)) throw new TypeError(`unknown group '${n}' (known: ${GROUP_NAMES.join(', ')})`);
    if (out.includes(g)) throw new TypeError(`group '${n}' is listed twice`);
    out.push(g);
  }
  return out;
}

/**
 * Length check of a client share for a group we implement (RFC 8446 §4.2.8; draft-ietf-tls-ecdhe-mlkem
 * §4.2 requires exact lengths): a malformed share is illegal_parameter even if another share is chosen.
 */
export function checkShareLength(share: KeyShareEntry): void {
  const want = CLIENT_SHARE_LEN.get(share.group);
  if (want !== undefined && share.key.length !== want) {
    throw fatal('illegal_parameter', `${groupName(share.group)} key share is ${share.key.length} bytes, expected ${want}`);
  }
}

/** Our answer to a client share: the server's key_exchange and the shared secret for the key schedule. */
export interface ServerKeyShare { key: Buffer; shared: Buffer }

/** Runs the key exchange for the chosen client share; a malformed or degenerate share is illegal_parameter. */
export function serverKeyShare(share: KeyShareEntry): ServerKeyShare {
  checkShareLength(share);
  const { group, key } = share;
  if (group === G.X25519MLKEM768) {
    // Server share: ciphertext ‖ X25519 share; secret: ML-KEM secret ‖ X25519 secret (§4.1, §4.3).
    const ecdh = ecdhe(G.x25519, key.subarray(ML_KEM_EK));
    const kem = encapsulate(key.subarray(0, ML_KEM_EK));
    return { key: Buffer.concat([kem.ct, ecdh.key]), shared: Buffer.concat([kem.ss, ecdh.shared]) };
  }
  if (group === G.SecP256r1MLKEM768) {
    // Server share: P-256 point ‖ ciphertext; secret: ECDH secret ‖ ML-KEM secret.
    const ecdh = ecdhe(G.secp256r1, key.subarray(0, P256_SHARE));
    const kem = encapsulate(key.subarray(P256_SHARE));
    return { key: Buffer.concat([ecdh.key, kem.ct]), shared: Buffer.concat([ecdh.shared, kem.ss]) };
  }
  const ff = FFDHE.get(group);
  if (ff) return ffdhe(ff, key);
  return ecdhe(group, key);
}

function ecdhe(group: number, peer: Buffer): ServerKeyShare {
  const eph = EphemeralKey.generate(group);
  return { shared: eph.deriveShared(peer), key: eph.publicBytes() };
}

function encapsulate(ek: Buffer): { ct: Buffer; ss: Buffer } {
  if (ek.length !== ML_KEM_EK) throw fatal('illegal_parameter', `ML-KEM-768 encapsulation key is ${ek.length} bytes, expected ${ML_KEM_EK}`);
  let r: { cipherText: Uint8Array; sharedSecret: Uint8Array };
  try {
    // Runs the FIPS 203 §7.2 encapsulation key (modulus) check before encapsulating.
    r = ml_kem768.encapsulate(ek);
  } catch {
    throw fatal('illegal_parameter', 'ML-KEM-768 encapsulation key fails the FIPS 203 modulus check');
  }
  if (r.cipherText.length !== ML_KEM_CT) throw fatal('internal_error', 'ML-KEM-768 ciphertext has the wrong length');
  return { ct: Buffer.from(r.cipherText), ss: Buffer.from(r.sharedSecret) };
}

/** Left-pads to `len` bytes (RFC 8446 §4.2.8.1 and §7.4.1 pad Y and Z to the size of p). */
function pad(b: Buffer, len: number): Buffer {
  if (b.length === len) return b;
  const out = Buffer.alloc(len);
  b.copy(out, len - b.length);
  return out;
}

function ffdhe(ff: { p: Buffer; pBig: bigint; exponentBytes: number }, peer: Buffer): ServerKeyShare {
  // RFC 7919 §5.1: the peer's Y must satisfy 1 < Y < p - 1 (0, 1 and p - 1 force a known secret).
  const y = BigInt(`0x${peer.toString('hex')}`);
  if (y <= 1n || y >= ff.pBig - 1n) throw fatal('illegal_parameter', 'finite-field key share is out of range (RFC 7919 §5.1)');
  const dh = crypto.createDiffieHellman(ff.p, Buffer.from([2]));
  dh.setPrivateKey(crypto.randomBytes(ff.exponentBytes));
  const ours = dh.generateKeys();
  let z: Buffer;
  try {
    z = dh.computeSecret(peer);
  } catch {
    throw fatal('illegal_parameter', 'finite-field key share is not a valid public value');
  }
  return { key: pad(ours, ff.p.length), shared: pad(z, ff.p.length) };
}
