// Key generation and import with node:crypto: RSA 2048/3072/4096, EC P-256/P-384, AES and
// generic secrets, and import of an existing private key (the migration path). Returns
// material and the attributes it determines (type, size, curve); policy adds the rest.
import { createPrivateKey, createPublicKey, generateKeyPair, randomBytes, type KeyObject } from 'node:crypto';
import { InvalidArgumentError } from './errors.js';
import type { KeyMaterial } from './objects.js';
import type { Curve, KeyPairSpec, KeyType, SecretKeySpec } from './types.js';

/** Generated or imported key pair material with the attributes it fixes. */
export interface PairMaterial {
  type: 'rsa' | 'ec';
  size: number;
  curve?: Curve;
  priv: KeyMaterial;
  pub: KeyMaterial;
}

/** Generated secret material. */
export interface SecretMaterial {
  type: KeyType;
  size: number;
  material: KeyMaterial;
}

const PAIR_SPECS: Record<KeyPairSpec, { type: 'rsa' | 'ec'; size: number; curve?: Curve }> = {
  'rsa:2048': { type: 'rsa', size: 2048 },
  'rsa:3072': { type: 'rsa', size: 3072 },
  'rsa:4096': { type: 'rsa', size: 4096 },
  'ec:p256': { type: 'ec', size: 256, curve: 'P-256' },
  'ec:p384': { type: 'ec', size: 384, curve: 'P-384' },
};

/** Parses a key pair spec like 'rsa:2048' or 'ec:p256'. */
export function pairSpec(spec: string): { type: 'rsa' | 'ec'; size: number; curve?: Curve } {
  const s = PAIR_SPECS[spec as KeyPairSpec];
  if (!s) throw new InvalidArgumentError(`unknown key pair type ${spec}; use one of ${Object.keys(PAIR_SPECS).join(', ')}`);
  return s;
}

function materialOf(privateKey: KeyObject, publicKey: KeyObject): { priv: KeyMaterial; pub: KeyMaterial } {
  return {
    priv: { format: 'pkcs8', bytes: privateKey.export({ format: 'der', type: 'pkcs8' }) },
    pub: { format: 'spki', bytes: publicKey.export({ format: 'der', type: 'spki' }) },
  };
}

/** Generates a key pair on the libuv thread pool (RSA-4096 takes about a second). */
export function generatePairMaterial(spec: KeyPairSpec): Promise<PairMaterial> {
  const s = pairSpec(spec);
  return new Promise((resolve, reject) => {
    const done = (err: Error | null, publicKey: KeyObject, privateKey: KeyObject): void => {
      if (err) reject(err);
      else resolve({ ...s, ...materialOf(privateKey, publicKey) });
    };
    if (s.type === 'rsa') generateKeyPair('rsa', { modulusLength: s.size, publicExponent: 65537 }, done);
    else generateKeyPair('ec', { namedCurve: s.curve === 'P-256' ? 'prime256v1' : 'secp384r1' }, done);
  });
}

/** Generates AES or generic secret material from a spec like 'aes:256'. */
export function generateSecretMaterial(spec: SecretKeySpec): SecretMaterial {
  const m = /^(aes|generic-secret):(\d+)$/.exec(spec);
  const bits = m ? Number(m[2]) : NaN;
  const type = m?.[1] as KeyType | undefined;
  const ok = type === 'aes' ? bits === 128 || bits === 256 : type === 'generic-secret' && [128, 256, 384, 512].includes(bits);
  if (!ok || !type) throw new InvalidArgumentError(`unknown secret key type ${spec}; use aes:128, aes:256 or generic-secret:128|256|384|512`);
  return { type, size: bits, material: { format: 'raw', bytes: randomBytes(bits / 8) } };
}

/** Material for an unwrapped secret: AES if 16/32 bytes unless told otherwise. */
export function secretFromBytes(bytes: Buffer, type?: KeyType): SecretMaterial {
  const t = type ?? (bytes.length === 16 || bytes.length === 32 ? 'aes' : 'generic-secret');
  if (t === 'aes' && bytes.length !== 16 && bytes.length !== 32) throw new InvalidArgumentError(`an AES key must be 16 or 32 bytes, not ${bytes.length}`);
  if (t !== 'aes' && t !== 'generic-secret') throw new InvalidArgumentError(`unwrapped secret type must be aes or generic-secret, not ${t}`);
  if (bytes.length < 1) throw new InvalidArgumentError('an empty secret cannot be a key');
  return { type: t, size: bytes.length * 8, material: { format: 'raw', bytes } };
}

/** Parses an existing private key (PEM of any kind, or PKCS#8 DER) into pair material. */
/** A public key to import (SPKI PEM or DER): RSA 2048-4096 or EC P-256/P-384. */
export function importPublicMaterial(key: string | Buffer): { type: 'rsa' | 'ec'; size: number; curve?: Curve; pub: KeyMaterial } {
  let publicKey: KeyObject;
  try {
    publicKey = typeof key === 'string' || key.subarray(0, 11).toString('latin1') === '-----BEGIN '
      ? createPublicKey({ key: key.toString(), format: 'pem' })
      : createPublicKey({ key, format: 'der', type: 'spki' });
  } catch (e) {
    throw new InvalidArgumentError(`the key to import is not a readable public key (SPKI PEM or DER): ${(e as Error).message}`);
  }
  if (publicKey.type !== 'public') throw new InvalidArgumentError('the key to import must be a public key');
  const d = publicKey.asymmetricKeyDetails ?? {};
  const pub: KeyMaterial = { format: 'spki', bytes: publicKey.export({ format: 'der', type: 'spki' }) };
  if (publicKey.asymmetricKeyType === 'rsa') {
    const size = d.modulusLength ?? 0;
    if (![2048, 3072, 4096].includes(size)) throw new InvalidArgumentError(`RSA keys of ${size} bits are not supported; use 2048, 3072 or 4096`);
    return { type: 'rsa', size, pub };
  }
  if (publicKey.asymmetricKeyType === 'ec') {
    const curve: Curve | undefined = d.namedCurve === 'prime256v1' ? 'P-256' : d.namedCurve === 'secp384r1' ? 'P-384' : undefined;
    if (!curve) throw new InvalidArgumentError(`EC curve ${d.namedCurve ?? '?'} is not supported; use P-256 or P-384`);
    return { type: 'ec', size: curve === 'P-256' ? 256 : 384, curve, pub };
  }
  throw new InvalidArgumentError(`keys of type ${publicKey.asymmetricKeyType ?? '?'} are not supported; import an RSA or EC key`);
}

export function importPairMaterial(key: string | Buffer): PairMaterial {
  let privateKey: KeyObject;
  try {
    privateKey =
      typeof key === 'string' || key.subarray(0, 11).toString('latin1') === '-----BEGIN '
        ? createPrivateKey({ key: key.toString(), format: 'pem' })
        : createPrivateKey({ key, format: 'der', type: 'pkcs8' });
  } catch (e) {
    throw new InvalidArgumentError(`the key to import is not a readable private key (PEM or PKCS#8 DER): ${(e as Error).message}`);
  }
  const d = privateKey.asymmetricKeyDetails ?? {};
  const publicKey = createPublicKey(privateKey);
  if (privateKey.asymmetricKeyType === 'rsa') {
    const size = d.modulusLength ?? 0;
    if (![2048, 3072, 4096].includes(size)) throw new InvalidArgumentError(`RSA keys of ${size} bits are not supported; use 2048, 3072 or 4096`);
    return { type: 'rsa', size, ...materialOf(privateKey, publicKey) };
  }
  if (privateKey.asymmetricKeyType === 'ec') {
    const curve: Curve | undefined = d.namedCurve === 'prime256v1' ? 'P-256' : d.namedCurve === 'secp384r1' ? 'P-384' : undefined;
    if (!curve) throw new InvalidArgumentError(`EC curve ${d.namedCurve ?? '?'} is not supported; use P-256 or P-384`);
    return { type: 'ec', size: curve === 'P-256' ? 256 : 384, curve, ...materialOf(privateKey, publicKey) };
  }
  throw new InvalidArgumentError(`keys of type ${privateKey.asymmetricKeyType ?? '?'} are not supported; import an RSA or EC key`);
}
