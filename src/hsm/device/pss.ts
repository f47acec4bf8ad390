// RSA signatures over a precomputed digest: node:crypto signs messages, so for the
// "prehashed" mechanisms the encodings (PKCS#1 v1.5 DigestInfo, EMSA-PSS per RFC 8017 §9.1)
// are built here and applied with the raw RSA private operation.
import { createHash, privateEncrypt, publicDecrypt, randomBytes, constants, timingSafeEqual, type KeyObject } from 'node:crypto';

export type Hash = 'sha256' | 'sha384' | 'sha512';

/** Output length of each hash in bytes. */
export const HASH_LEN: Record<Hash, number> = { sha256: 32, sha384: 48, sha512: 64 };

const DIGEST_INFO: Record<Hash, Buffer> = {
  sha256: Buffer.from('3031300d060960864801650304020105000420', 'hex'),
  sha384: Buffer.from('3041300d060960864801650304020205000430', 'hex'),
  sha512: Buffer.from('3051300d060960864801650304020305000440', 'hex'),
};

/** PKCS#1 v1.5 signature of a digest. */
export function pkcs1SignDigest(key: KeyObject, hash: Hash, digest: Buffer): Buffer {
  return privateEncrypt({ key, padding: constants.RSA_PKCS1_PADDING }, Buffer.concat([DIGEST_INFO[hash], digest]));
}

/** Verifies a PKCS#1 v1.5 signature against a digest. */
export function pkcs1VerifyDigest(key: KeyObject, hash: Hash, digest: Buffer, sig: Buffer): boolean {
  try {
    const got = publicDecrypt({ key, padding: constants.RSA_PKCS1_PADDING }, sig);
    const want = Buffer.concat([DIGEST_INFO[hash], digest]);
    return got.length === want.length && timingSafeEqual(got, want);
  } catch {
    return false;
  }
}

function mgf1(hash: Hash, seed: Buffer, len: number): Buffer {
  const out: Buffer[] = [];
  let got = 0;
  for (let c = 0; got < len; c++) {
    const ctr = Buffer.alloc(4);
    ctr.writeUInt32BE(c);
    const block = createHash(hash).update(seed).update(ctr).digest();
    out.push(block);
    got += block.length;
  }
  return Buffer.concat(out).subarray(0, len);
}

function modulusBits(key: KeyObject): number {
  return key.asymmetricKeyDetails?.modulusLength ?? 0;
}

/** RSASSA-PSS signature of a digest, salt length = hash length, MGF1 with the same hash. */
export function pssSignDigest(key: KeyObject, hash: Hash, digest: Buffer): Buffer {
  const hLen = HASH_LEN[hash];
  const modBits = modulusBits(key);
  const emBits = modBits - 1;
  const emLen = Math.ceil(emBits / 8);
  const salt = randomBytes(hLen);
  const h = createHash(hash).update(Buffer.alloc(8)).update(digest).update(salt).digest();
  const db = Buffer.alloc(emLen - hLen - 1);
  db[emLen - 2 * hLen - 2] = 0x01;
  salt.copy(db, emLen - 2 * hLen - 1);
  const mask = mgf1(hash, h, db.length);
  for (let i = 0; i < db.length; i++) db[i] = (db[i] ?? 0) ^ (mask[i] ?? 0);
  db[0] = (db[0] ?? 0) & (0xff >> (8 * emLen - emBits));
  const em = Buffer.concat([db, h, Buffer.from([0xbc])]);
  const k = Math.ceil(modBits / 8);
  const block = Buffer.concat([Buffer.alloc(k - em.length), em]);
  return privateEncrypt({ key, padding: constants.RSA_NO_PADDING }, block);
}

/** Verifies an RSASSA-PSS signature (salt length = hash length) against a digest. */
export function pssVerifyDigest(key: KeyObject, hash: Hash, digest: Buffer, sig: Buffer): boolean {
  const hLen = HASH_LEN[hash];
  const modBits = modulusBits(key);
  const emBits = modBits - 1;
  const emLen = Math.ceil(emBits / 8);
  let block: Buffer;
  try {
    block = publicDecrypt({ key, padding: constants.RSA_NO_PADDING }, sig);
  } catch {
    return false;
  }
  const em = block.subarray(block.length - emLen);
  if (block.length - emLen > 0 && block.subarray(0, block.length - emLen).some((b) => b !== 0)) return false;
  if (em[em.length - 1] !== 0xbc) return false;
  const db = Buffer.from(em.subarray(0, emLen - hLen - 1));
  const h = em.subarray(emLen - hLen - 1, emLen - 1);
  if (((db[0] ?? 0) & ~(0xff >> (8 * emLen - emBits)) & 0xff) !== 0) return false;
  const mask = mgf1(hash, h, db.length);
  for (let i = 0; i < db.length; i++) db[i] = (db[i] ?? 0) ^ (mask[i] ?? 0);
  db[0] = (db[0] ?? 0) & (0xff >> (8 * emLen - emBits));
  const psLen = emLen - 2 * hLen - 2;
  if (db.subarray(0, psLen).some((b) => b !== 0) || db[psLen] !== 0x01) return false;
  const salt = db.subarray(db.length - hLen);
  const h2 = createHash(hash).update(Buffer.alloc(8)).update(digest).update(salt).digest();
  return timingSafeEqual(h, h2);
}
