// The TLS 1.2 key derivation (RFC 5246 §5, §6.3, §7.4.9) with the extended master secret
// (RFC 7627): PRF = P_<hash> over HMAC, where the hash is the suite's (SHA-384 suites use
// SHA-384). Imports node:crypto and suites12.ts only.
import crypto from 'node:crypto';
import type { CipherSuite12 } from './suites12.js';

type HashName = 'sha256' | 'sha384';

/** PRF(secret, label, seed) truncated to `length` bytes (RFC 5246 §5). */
export function prf12(hash: HashName, secret: Buffer, label: string, seed: Buffer, length: number): Buffer {
  const labelSeed = Buffer.concat([Buffer.from(label, 'latin1'), seed]);
  const out = Buffer.allocUnsafe(length);
  let a = labelSeed; // A(0)
  for (let off = 0; off < length;) {
    a = crypto.createHmac(hash, secret).update(a).digest();
    const block = crypto.createHmac(hash, secret).update(a).update(labelSeed).digest();
    off += block.copy(out, off, 0, Math.min(block.length, length - off));
  }
  return out;
}

/** master_secret = PRF(pre_master_secret, "extended master secret", session_hash)[0..47] (RFC 7627 §4). */
export function extendedMasterSecret(hash: HashName, preMaster: Buffer, sessionHash: Buffer): Buffer {
  return prf12(hash, preMaster, 'extended master secret', sessionHash, 48);
}

/**
 * The RFC 5246 §8.1 master secret, PRF(pre_master_secret, "master secret", client_random ‖
 * server_random)[0..47]: only for clients without extended_master_secret, where the operator allows them.
 */
export function legacyMasterSecret(
  hash: HashName, preMaster: Buffer, clientRandom: Buffer, serverRandom: Buffer,
): Buffer {
  return prf12(hash, preMaster, 'master secret', Buffer.concat([clientRandom, serverRandom]), 48);
}

/** One direction's AEAD key and implicit IV. */
export interface DirectionKeys { key: Buffer; iv: Buffer }

/** The key block (RFC 5246 §6.3) split into client and server write keys and IVs; AEAD suites have no MAC keys. */
export function keyBlock12(
  suite: CipherSuite12, master: Buffer, clientRandom: Buffer, serverRandom: Buffer,
): { client: DirectionKeys; server: DirectionKeys } {
  const k = suite.keyLen;
  const iv = suite.fixedIvLen;
  const block = prf12(suite.hash, master, 'key expansion', Buffer.concat([serverRandom, clientRandom]), 2 * (k + iv));
  return {
    client: { key: block.subarray(0, k), iv: block.subarray(2 * k, 2 * k + iv) },
    server: { key: block.subarray(k, 2 * k), iv: block.subarray(2 * k + iv, 2 * k + 2 * iv) },
  };
}

/** Finished verify_data: PRF(master_secret, "<side> finished", Hash(handshake_messages))[0..11]. */
export function finishedVerifyData12(hash: HashName, master: Buffer, side: 'client' | 'server', transcriptHash: Buffer): Buffer {
  return prf12(hash, master, `${side} finished`, transcriptHash, 12);
}
