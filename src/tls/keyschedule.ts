// The TLS 1.3 key schedule (RFC 8446 §7.1) and the running transcript hash (§4.4.1).
// Pure functions over node:crypto HMAC/hash; imports suites.ts for the CipherSuite shape only.
import crypto from 'node:crypto';
import type { CipherSuite } from './suites.js';

export type HashName = 'sha256' | 'sha384';

const HASH_LEN: Record<HashName, number> = { sha256: 32, sha384: 48 };
const emptyHashes = new Map<HashName, Buffer>();

/** Hash("") for the suite's hash: the context of the "derived" steps. */
export function emptyHash(hash: HashName): Buffer {
  let h = emptyHashes.get(hash);
  if (!h) { h = crypto.createHash(hash).digest(); emptyHashes.set(hash, h); }
  return h;
}

/** HKDF-Extract(salt, IKM) = HMAC-Hash(salt, IKM); an empty salt means HashLen zeros (RFC 5869). */
export function hkdfExtract(hash: HashName, salt: Buffer, ikm: Buffer): Buffer {
  const s = salt.length === 0 ? Buffer.alloc(HASH_LEN[hash]) : salt;
  return crypto.createHmac(hash, s).update(ikm).digest();
}

const LABEL_PREFIX = Buffer.from('tls13 ', 'latin1');

/** HKDF-Expand-Label(Secret, Label, Context, Length) with the "tls13 " prefix (RFC 8446 §7.1). */
export function hkdfExpandLabel(
  hash: HashName, secret: Buffer, label: string, context: Buffer, length: number,
): Buffer {
  const labelLen = LABEL_PREFIX.length + label.length;
  const infoLen = 2 + 1 + labelLen + 1 + context.length;
  // One spare byte at the end for HKDF's block counter, so each block is a single HMAC update.
  const info = Buffer.allocUnsafe(infoLen + 1);
  info.writeUInt16BE(length, 0);
  info[2] = labelLen;
  LABEL_PREFIX.copy(info, 3);
  info.write(label, 3 + LABEL_PREFIX.length, 'latin1');
  info[3 + labelLen] = context.length;
  context.copy(info, 4 + labelLen);
  return hkdfExpand(hash, secret, info, length);
}

/** HKDF-Expand (RFC 5869 §2.3); `infoAndCounter` is info plus one spare byte; `length` ≤ 255 × HashLen. */
function hkdfExpand(hash: HashName, prk: Buffer, infoAndCounter: Buffer, length: number): Buffer {
  const hashLen = HASH_LEN[hash];
  const last = infoAndCounter.length - 1;
  infoAndCounter[last] = 1;
  const first = crypto.createHmac(hash, prk).update(infoAndCounter).digest();
  if (length === hashLen) return first; // the common case: every secret in the schedule
  if (length < hashLen) return first.subarray(0, length);
  const out = Buffer.allocUnsafe(length);
  first.copy(out, 0);
  let prev = first;
  for (let off = hashLen, i = 2; off < length; i++) {
    infoAndCounter[last] = i;
    prev = crypto.createHmac(hash, prk).update(prev).update(infoAndCounter).digest();
    prev.copy(out, off, 0, Math.min(hashLen, length - off));
    off += hashLen;
  }
  return out;
}

/** Derive-Secret(Secret, Label, Messages), given the transcript hash of Messages. */
export function deriveSecret(hash: HashName, secret: Buffer, label: string, transcriptHash: Buffer): Buffer {
  return hkdfExpandLabel(hash, secret, label, transcriptHash, HASH_LEN[hash]);
}

/** The record-protection key and IV for one direction's traffic secret (RFC 8446 §7.3). */
export function trafficKeys(suite: CipherSuite, secret: Buffer): { key: Buffer; iv: Buffer } {
  const empty = Buffer.alloc(0);
  return {
    key: hkdfExpandLabel(suite.hash, secret, 'key', empty, suite.keyLen),
    iv: hkdfExpandLabel(suite.hash, secret, 'iv', empty, suite.ivLen),
  };
}

/** Finished verify_data (and PSK binder) = HMAC(finished_key, transcriptHash) (RFC 8446 §4.4.4). */
export function finishedVerifyData(hash: HashName, baseSecret: Buffer, transcriptHash: Buffer): Buffer {
  const finishedKey = hkdfExpandLabel(hash, baseSecret, 'finished', Buffer.alloc(0), HASH_LEN[hash]);
  return crypto.createHmac(hash, finishedKey).update(transcriptHash).digest();
}

/** application_traffic_secret_N+1 for KeyUpdate (RFC 8446 §7.2). */
export function nextTrafficSecret(hash: HashName, secret: Buffer): Buffer {
  return hkdfExpandLabel(hash, secret, 'traffic upd', Buffer.alloc(0), HASH_LEN[hash]);
}

/** A ticket's PSK: HKDF-Expand-Label(resumption_master_secret, "resumption", ticket_nonce, Hash.length). */
export function resumptionPsk(hash: HashName, resumptionMasterSecret: Buffer, ticketNonce: Buffer): Buffer {
  return hkdfExpandLabel(hash, resumptionMasterSecret, 'resumption', ticketNonce, HASH_LEN[hash]);
}

/**
 * One connection's key schedule: Early → Handshake → Master secret. Each stage's secret stays
 * inside; callers get only the traffic secrets they need, in protocol order.
 */
export class KeySchedule13 {
  private readonly hash: HashName;
  private readonly earlySecret: Buffer;
  private handshakeSecret: Buffer | null = null;
  private masterSecret: Buffer | null = null;

  /** Starts from `psk` (resumption) or from HashLen zeros (full handshake). */
  constructor(readonly suite: CipherSuite, psk?: Buffer) {
    this.hash = suite.hash;
    const zeros = Buffer.alloc(suite.hashLen);
    this.earlySecret = hkdfExtract(this.hash, zeros, psk ?? zeros);
  }

  /** binder_key for a resumption ('res') or external ('ext') PSK. */
  binderKey(kind: 'res' | 'ext'): Buffer {
    return deriveSecret(this.hash, this.earlySecret, `${kind} binder`, emptyHash(this.hash));
  }

  /** client/server handshake traffic secrets, given the (EC)DHE secret and Hash(ClientHello..ServerHello). */
  handshakeSecrets(ecdhe: Buffer, helloHash: Buffer): { client: Buffer; server: Buffer } {
    const derived = deriveSecret(this.hash, this.earlySecret, 'derived', emptyHash(this.hash));
    this.handshakeSecret = hkdfExtract(this.hash, derived, ecdhe);
    return {
      client: deriveSecret(this.hash, this.handshakeSecret, 'c hs traffic', helloHash),
      server: deriveSecret(this.hash, this.handshakeSecret, 's hs traffic', helloHash),
    };
  }

  /** Application traffic secrets and exporter secret, given Hash(ClientHello..server Finished). */
  applicationSecrets(serverFinishedHash: Buffer): { client: Buffer; server: Buffer; exporter: Buffer } {
    if (!this.handshakeSecret) throw new Error('KeySchedule13: applicationSecrets before handshakeSecrets');
    const derived = deriveSecret(this.hash, this.handshakeSecret, 'derived', emptyHash(this.hash));
    this.masterSecret = hkdfExtract(this.hash, derived, Buffer.alloc(this.suite.hashLen));
    return {
      client: deriveSecret(this.hash, this.masterSecret, 'c ap traffic', serverFinishedHash),
      server: deriveSecret(this.hash, this.masterSecret, 's ap traffic', serverFinishedHash),
      exporter: deriveSecret(this.hash, this.masterSecret, 'exp master', serverFinishedHash),
    };
  }

  /** resumption_master_secret, given Hash(ClientHello..client Finished). */
  resumptionMasterSecret(clientFinishedHash: Buffer): Buffer {
    if (!this.masterSecret) throw new Error('KeySchedule13: resumptionMasterSecret before applicationSecrets');
    return deriveSecret(this.hash, this.masterSecret, 'res master', clientFinishedHash);
  }
}

/** The running transcript hash of the handshake messages. */
export class Transcript {
  private h: crypto.Hash;
  private closed = false;
  /** Messages appended so far (a message_hash counts as one): tells whether the transcript moved. */
  private count = 0;

  constructor(readonly hash: HashName) {
    this.h = crypto.createHash(hash);
  }

  /** How many messages the transcript holds: equal counts mean the same transcript (it only grows). */
  get appended(): number {
    return this.count;
  }

  /** Appends one handshake message (with its 4-byte header). */
  update(msg: Buffer): void {
    if (this.closed) throw new Error('Transcript: update after finish');
    this.h.update(msg);
    this.count++;
  }

  /** The hash so far; the transcript stays open for more messages. */
  digest(): Buffer {
    if (this.closed) throw new Error('Transcript: digest after finish');
    return this.h.copy().digest();
  }

  /** The final hash: the transcript's last use (no copy of the hash state is made; it is closed). */
  finish(): Buffer {
    if (this.closed) throw new Error('Transcript: finish twice');
    this.closed = true;
    return this.h.digest();
  }

  /** After HelloRetryRequest: replace ClientHello1 by message_hash(254) ‖ u24 len ‖ Hash(CH1) (RFC 8446 §4.4.1). */
  replaceWithMessageHash(): void {
    const ch1 = this.h.digest();
    this.h = crypto.createHash(this.hash);
    this.h.update(Buffer.of(254, 0, 0, ch1.length));
    this.h.update(ch1);
    this.count = 1;
  }
}
