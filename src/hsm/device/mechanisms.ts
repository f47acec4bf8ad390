// Mechanisms with node:crypto: signatures (RSA PKCS#1 v1.5 and PSS, ECDSA, HMAC) over a
// message or a digest, RSA-OAEP and AES-GCM (device-chosen IV), key wrapping (RSA-OAEP and
// AES key wrap with padding, RFC 5649). Checks that the mechanism suits the key; the policy
// on who may use the key is decided before these are called.
import {
  constants, createCipheriv, createDecipheriv, createHmac, createPublicKey, privateDecrypt, publicEncrypt, randomBytes,
  sign as nodeSign, timingSafeEqual, verify as nodeVerify, type KeyObject,
} from 'node:crypto';
import { ecdsaSignDigest, ecdsaVerifyDigest } from './ecdsa-digest.js';
import { DecryptError, InvalidArgumentError, MechanismNotAllowedError } from './errors.js';
import type { StoredKey } from './objects.js';
import { HASH_LEN, pkcs1SignDigest, pkcs1VerifyDigest, pssSignDigest, pssVerifyDigest, type Hash } from './pss.js';
import type { CipherMechanism, KeyType, SignMechanism, WrapMechanism } from './types.js';

interface SignScheme { family: 'rsa-pkcs1' | 'rsa-pss' | 'ecdsa' | 'hmac'; hash: Hash }

const SIGN_SCHEMES: Record<SignMechanism, SignScheme> = {
  'rsa-pkcs1-sha256': { family: 'rsa-pkcs1', hash: 'sha256' },
  'rsa-pkcs1-sha384': { family: 'rsa-pkcs1', hash: 'sha384' },
  'rsa-pkcs1-sha512': { family: 'rsa-pkcs1', hash: 'sha512' },
  'rsa-pss-sha256': { family: 'rsa-pss', hash: 'sha256' },
  'rsa-pss-sha384': { family: 'rsa-pss', hash: 'sha384' },
  'rsa-pss-sha512': { family: 'rsa-pss', hash: 'sha512' },
  'ecdsa-sha256': { family: 'ecdsa', hash: 'sha256' },
  'ecdsa-sha384': { family: 'ecdsa', hash: 'sha384' },
  'ecdsa-sha512': { family: 'ecdsa', hash: 'sha512' },
  'hmac-sha256': { family: 'hmac', hash: 'sha256' },
  'hmac-sha384': { family: 'hmac', hash: 'sha384' },
  'hmac-sha512': { family: 'hmac', hash: 'sha512' },
};

const FAMILY_KEY: Record<SignScheme['family'], KeyType> = { 'rsa-pkcs1': 'rsa', 'rsa-pss': 'rsa', ecdsa: 'ec', hmac: 'generic-secret' };

/** The capacity model's operation key, e.g. 'sign:rsa-2048', 'sign:ec-p256', 'encrypt:aes-256'. */
export function opKey(op: string, key: StoredKey): string {
  const a = key.attrs;
  return `${op}:${a.type === 'ec' ? `ec-p${a.size}` : `${a.type}-${a.size}`}`;
}

function signScheme(mechanism: string, key: StoredKey): SignScheme {
  const s = SIGN_SCHEMES[mechanism as SignMechanism];
  if (!s) throw new InvalidArgumentError(`unknown signature mechanism ${mechanism}; use one of ${Object.keys(SIGN_SCHEMES).join(', ')}`);
  if (FAMILY_KEY[s.family] !== key.attrs.type) {
    throw new MechanismNotAllowedError(mechanism, key.attrs.keyId, `it needs a ${FAMILY_KEY[s.family]} key, this is a ${key.attrs.type} key`);
  }
  return s;
}

function checkDigest(s: SignScheme, data: Buffer, prehashed: boolean | undefined, mechanism: string): void {
  if (!prehashed) return;
  if (s.family === 'hmac') throw new InvalidArgumentError(`${mechanism} works on messages, not digests`);
  if (data.length !== HASH_LEN[s.hash]) throw new InvalidArgumentError(`a ${s.hash} digest is ${HASH_LEN[s.hash]} bytes, got ${data.length}`);
}

function publicOf(key: StoredKey): KeyObject {
  return key.attrs.class === 'private' ? createPublicKey(key.keyObject) : key.keyObject;
}

/**
 * An asymmetric signature checked and ready to compute: what `signRaw` needs besides the key and
 * the data. Plain data (no KeyObject, no Buffer), so it crosses to a signing worker as is.
 */
export interface SignPlan {
  family: 'rsa-pkcs1' | 'rsa-pss' | 'ecdsa';
  hash: Hash;
  prehashed: boolean;
  format: 'der' | 'raw';
}

/**
 * Checks that `mechanism` suits the key and the data; answers the plan of an asymmetric
 * signature, or undefined for an HMAC (cheap enough to compute where it is asked for).
 */
export function signPlan(key: StoredKey, mechanism: SignMechanism, data: Buffer, prehashed?: boolean, format?: 'der' | 'raw'): SignPlan | undefined {
  const s = signScheme(mechanism, key);
  checkDigest(s, data, prehashed, mechanism);
  if (s.family === 'hmac') return undefined;
  if (key.attrs.class !== 'private') throw new MechanismNotAllowedError(mechanism, key.attrs.keyId, 'signing needs the private key');
  // One frozen plan per (mechanism, prehashed, format): no object per request, and a signing
  // pool can number plans by identity.
  const i = (prehashed === true ? 2 : 0) + (format === 'raw' ? 1 : 0);
  let plans = PLANS.get(s);
  if (!plans) PLANS.set(s, plans = []);
  return plans[i] ??= Object.freeze({ family: s.family, hash: s.hash, prehashed: prehashed === true, format: format ?? 'der' });
}
const PLANS = new Map<SignScheme, SignPlan[]>();

/** Computes a planned signature with a private KeyObject (on the main thread or a signing worker). */
export function signRaw(key: KeyObject, p: SignPlan, data: Buffer): Buffer {
  switch (p.family) {
    case 'rsa-pkcs1':
      return p.prehashed
        ? pkcs1SignDigest(key, p.hash, data)
        : nodeSign(p.hash, data, { key, padding: constants.RSA_PKCS1_PADDING });
    case 'rsa-pss':
      return p.prehashed
        ? pssSignDigest(key, p.hash, data)
        : nodeSign(p.hash, data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: HASH_LEN[p.hash] });
    case 'ecdsa':
      return p.prehashed
        ? ecdsaSignDigest(key, data, p.format)
        : nodeSign(p.hash, data, { key, dsaEncoding: p.format === 'raw' ? 'ieee-p1363' : 'der' });
  }
}

/** The MAC of an HMAC mechanism (signPlan answered undefined for it). */
export function hmacWith(key: StoredKey, mechanism: SignMechanism, data: Buffer): Buffer {
  return createHmac(signScheme(mechanism, key).hash, key.keyObject).update(data).digest();
}

/** Signs (or MACs) with a private or generic secret key. */
export function signWith(key: StoredKey, mechanism: SignMechanism, data: Buffer, prehashed?: boolean, format?: 'der' | 'raw'): Buffer {
  const p = signPlan(key, mechanism, data, prehashed, format);
  return p ? signRaw(key.keyObject, p, data) : hmacWith(key, mechanism, data);
}

/** Verifies a signature (public or private key object) or an HMAC (constant time). */
export function verifyWith(key: StoredKey, mechanism: SignMechanism, data: Buffer, signature: Buffer, prehashed?: boolean, format?: 'der' | 'raw'): boolean {
  const s = signScheme(mechanism, key);
  checkDigest(s, data, prehashed, mechanism);
  if (s.family === 'hmac') {
    const mac = createHmac(s.hash, key.keyObject).update(data).digest();
    return mac.length === signature.length && timingSafeEqual(mac, signature);
  }
  const pub = publicOf(key);
  try {
    switch (s.family) {
      case 'rsa-pkcs1':
        if (prehashed) return pkcs1VerifyDigest(pub, s.hash, data, signature);
        return nodeVerify(s.hash, data, { key: pub, padding: constants.RSA_PKCS1_PADDING }, signature);
      case 'rsa-pss':
        if (prehashed) return pssVerifyDigest(pub, s.hash, data, signature);
        return nodeVerify(
          s.hash, data, { key: pub, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: HASH_LEN[s.hash] }, signature,
        );
      case 'ecdsa':
        return prehashed
          ? ecdsaVerifyDigest(pub, data, signature, format ?? 'der')
          : nodeVerify(s.hash, data, { key: pub, dsaEncoding: format === 'raw' ? 'ieee-p1363' : 'der' }, signature);
    }
  } catch {
    return false; // a malformed signature is simply not valid
  }
}

const GCM_IV = 12;
const GCM_TAG = 16;

function requireType(key: StoredKey, mechanism: string, type: KeyType): void {
  if (key.attrs.type !== type) throw new MechanismNotAllowedError(mechanism, key.attrs.keyId, `it needs a ${type} key, this is a ${key.attrs.type} key`);
}

function checkCipher(mechanism: string): asserts mechanism is CipherMechanism {
  if (mechanism !== 'rsa-oaep-sha256' && mechanism !== 'aes-gcm') throw new InvalidArgumentError(`unknown cipher mechanism ${mechanism}; use rsa-oaep-sha256 or aes-gcm`);
}

/** Encrypts; AES-GCM output is iv(12) || ciphertext || tag(16) with an IV the device chose. */
export function encryptWith(
  key: StoredKey, mechanism: CipherMechanism, plaintext: Buffer, aad?: Buffer, iv?: Buffer,
): Buffer {
  checkCipher(mechanism);
  if (mechanism === 'rsa-oaep-sha256') {
    requireType(key, mechanism, 'rsa');
    const max = key.attrs.size / 8 - 2 * 32 - 2;
    if (plaintext.length > max) throw new InvalidArgumentError(`RSA-OAEP with a ${key.attrs.size}-bit key encrypts at most ${max} bytes, got ${plaintext.length}`);
    return publicEncrypt({ key: publicOf(key), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, plaintext);
  }
  requireType(key, mechanism, 'aes');
  if (iv !== undefined) throw new InvalidArgumentError('AES-GCM IVs are chosen by the HSM (FIPS mode); do not pass one — it is returned in front of the ciphertext');
  const nonce = randomBytes(GCM_IV);
  const c = createCipheriv(`aes-${key.attrs.size}-gcm` as 'aes-256-gcm', key.keyObject, nonce);
  if (aad) c.setAAD(aad);
  return Buffer.concat([nonce, c.update(plaintext), c.final(), c.getAuthTag()]);
}

/** Decrypts; authentication failures are DecryptError. */
export function decryptWith(key: StoredKey, mechanism: CipherMechanism, ciphertext: Buffer, aad?: Buffer): Buffer {
  checkCipher(mechanism);
  if (mechanism === 'rsa-oaep-sha256') {
    requireType(key, mechanism, 'rsa');
    if (key.attrs.class !== 'private') throw new MechanismNotAllowedError(mechanism, key.attrs.keyId, 'decryption needs the private key');
    try {
      return privateDecrypt({ key: key.keyObject, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, ciphertext);
    } catch {
      throw new DecryptError('RSA-OAEP decryption');
    }
  }
  requireType(key, mechanism, 'aes');
  if (ciphertext.length < GCM_IV + GCM_TAG) throw new InvalidArgumentError(`AES-GCM input is iv(12) || ciphertext || tag(16): at least 28 bytes, got ${ciphertext.length}`);
  const d = createDecipheriv(`aes-${key.attrs.size}-gcm` as 'aes-256-gcm', key.keyObject, ciphertext.subarray(0, GCM_IV));
  if (aad) d.setAAD(aad);
  d.setAuthTag(ciphertext.subarray(ciphertext.length - GCM_TAG));
  try {
    return Buffer.concat([d.update(ciphertext.subarray(GCM_IV, ciphertext.length - GCM_TAG)), d.final()]);
  } catch {
    throw new DecryptError('AES-GCM decryption');
  }
}

// RFC 5649 alternative initial value.
const KWP_IV = Buffer.from('a65959a6', 'hex');

function checkWrap(mechanism: string): asserts mechanism is WrapMechanism {
  if (mechanism !== 'rsa-oaep-wrap' && mechanism !== 'aes-key-wrap-pad') throw new InvalidArgumentError(`unknown wrap mechanism ${mechanism}; use aes-key-wrap-pad or rsa-oaep-wrap`);
}

/** Wraps key bytes (PKCS#8 or raw secret) under a wrapping key. */
export function wrapWith(wrapping: StoredKey, mechanism: WrapMechanism, bytes: Buffer): Buffer {
  checkWrap(mechanism);
  if (mechanism === 'aes-key-wrap-pad') {
    requireType(wrapping, mechanism, 'aes');
    const c = createCipheriv(`id-aes${wrapping.attrs.size}-wrap-pad`, wrapping.keyObject, KWP_IV);
    return Buffer.concat([c.update(bytes), c.final()]);
  }
  requireType(wrapping, mechanism, 'rsa');
  const max = wrapping.attrs.size / 8 - 66;
  if (bytes.length > max) throw new InvalidArgumentError(`rsa-oaep-wrap carries at most ${max} bytes (a secret key); wrap private keys with aes-key-wrap-pad`);
  return publicEncrypt({ key: publicOf(wrapping), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, bytes);
}

/** Unwraps key bytes; a wrong key or altered input is DecryptError. */
export function unwrapWith(unwrapping: StoredKey, mechanism: WrapMechanism, wrapped: Buffer): Buffer {
  checkWrap(mechanism);
  try {
    if (mechanism === 'aes-key-wrap-pad') {
      requireType(unwrapping, mechanism, 'aes');
      const d = createDecipheriv(`id-aes${unwrapping.attrs.size}-wrap-pad`, unwrapping.keyObject, KWP_IV);
      return Buffer.concat([d.update(wrapped), d.final()]);
    }
    requireType(unwrapping, mechanism, 'rsa');
    if (unwrapping.attrs.class !== 'private') throw new MechanismNotAllowedError(mechanism, unwrapping.attrs.keyId, 'unwrapping needs the private key');
    return privateDecrypt({ key: unwrapping.keyObject, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, wrapped);
  } catch (e) {
    if (e instanceof MechanismNotAllowedError) throw e;
    throw new DecryptError('unwrapping');
  }
}

