// The TLS record layer (RFC 8446 §5): framing of the byte stream into records, and TLS 1.3
// record protection. This is the hot path for every proxied byte: AEAD is synchronous
// node:crypto, each sealed flight is one allocation, nonces are built in a reused scratch buffer.
// Imports node:crypto, alert.ts and suites.ts.
import crypto from 'node:crypto';
import { TlsError, fatal } from './alert.js';
import type { CipherSuite } from './suites.js';

/** TLS record content types (RFC 8446 §5.1). */
export const ContentType = { change_cipher_spec: 20, alert: 21, handshake: 22, application_data: 23 } as const;

/** Largest TLSPlaintext.fragment (and TLSInnerPlaintext.content). */
export const MAX_PLAINTEXT = 2 ** 14;
/** Largest TLS 1.3 TLSCiphertext.encrypted_record. */
export const MAX_CIPHERTEXT_13 = 2 ** 14 + 256;
/** Largest TLS 1.2 ciphertext fragment (RFC 5246 §6.2.3). */
export const MAX_CIPHERTEXT_12 = 2 ** 14 + 2048;

const HEADER_LEN = 5;
const TAG_LEN = 16;

/** One record as framed off the wire; `fragment` is a view, valid until the caller drops it. */
export interface RecordFrame {
  type: number;
  version: number;
  fragment: Buffer;
}

/** Plain HTTP on the TLS port: the socket layer may answer 400 and close instead of alerting. */
export class HttpOnTlsPortError extends TlsError {
  constructor() {
    super('received plain HTTP on a TLS port; use https://', 'TLS_ERR_HTTP_ON_TLS_PORT');
    this.name = 'HttpOnTlsPortError';
  }
}

const HTTP_METHODS = ['GET ', 'POST', 'HEAD', 'PUT ', 'DELE', 'OPTI', 'PATC', 'CONN', 'TRAC', 'PRI '];

/**
 * Splits a TCP byte stream into records. Every header is validated the moment its 5 bytes
 * are here, before the body is buffered; only one incomplete record is ever held, in a
 * buffer allocated at its exact size. Complete records in a chunk are returned as views.
 */
export class RecordDeframer {
  private maxCiphertext: number;
  private plaintextLimit: boolean;
  private readonly ready: RecordFrame[] = [];
  private readyHead = 0;
  private readyBytes = 0;
  private readonly header = Buffer.alloc(HEADER_LEN);
  private headerFill = 0;
  private body: Buffer | null = null;
  private bodyFill = 0;
  private bodyType = 0;
  private bodyVersion = 0;
  private seenFirst = false;
  private failed: Error | null = null;

  /**
   * `maxCiphertext` defaults to the TLS 1.3 limit. With `plaintextLimit` (default true, right for
   * TLS 1.3 where only application_data is encrypted) any other outer type over 2^14 is refused too.
   */
  constructor(opts: { maxCiphertext?: number; plaintextLimit?: boolean } = {}) {
    this.maxCiphertext = opts.maxCiphertext ?? MAX_CIPHERTEXT_13;
    this.plaintextLimit = opts.plaintextLimit ?? true;
  }

  /**
   * Switches to TLS 1.2 framing once 1.2 is negotiated: every record type may be encrypted, so the
   * header allows 2^14+2048 for all of them (RFC 5246 §6.2.3); the caller checks plaintext records.
   */
  useTls12Limits(): void {
    this.maxCiphertext = MAX_CIPHERTEXT_12;
    this.plaintextLimit = false;
  }

  /** Bytes held: complete records not yet taken by next() plus the partial record. */
  get bufferedBytes(): number {
    return this.readyBytes + this.headerFill + this.bodyFill;
  }

  /** Adds bytes from the wire; throws the alert a malformed header deserves (and keeps throwing). */
  push(chunk: Buffer): void {
    if (this.failed) throw this.failed;
    try {
      this.consume(chunk);
    } catch (e) {
      this.failed = e as Error;
      throw e;
    }
  }

  /** The next complete record, or null until more bytes arrive. */
  next(): RecordFrame | null {
    if (this.readyHead >= this.ready.length) return null;
    const rec = this.ready[this.readyHead]!;
    this.ready[this.readyHead++] = undefined as unknown as RecordFrame; // drop the reference early
    if (this.readyHead === this.ready.length) { this.ready.length = 0; this.readyHead = 0; }
    this.readyBytes -= rec.fragment.length;
    return rec;
  }

  private consume(chunk: Buffer): void {
    let pos = 0;
    const end = chunk.length;
    while (pos < end) {
      if (this.body) {
        const n = Math.min(end - pos, this.body.length - this.bodyFill);
        chunk.copy(this.body, this.bodyFill, pos, pos + n);
        this.bodyFill += n;
        pos += n;
        if (this.bodyFill === this.body.length) {
          this.emit(this.bodyType, this.bodyVersion, this.body);
          this.body = null;
          this.bodyFill = 0;
        }
        continue;
      }
      if (this.headerFill === 0 && end - pos >= HEADER_LEN) {
        // Fast path: the header is inside this chunk; the body may be too (zero-copy view).
        const type = chunk[pos]!;
        const version = chunk.readUInt16BE(pos + 1);
        const len = chunk.readUInt16BE(pos + 3);
        this.checkHeader(type, version, len, chunk.subarray(pos, pos + HEADER_LEN));
        pos += HEADER_LEN;
        if (end - pos >= len) {
          this.emit(type, version, chunk.subarray(pos, pos + len));
          pos += len;
        } else {
          this.startBody(type, version, len);
        }
        continue;
      }
      // Slow path: the header straddles chunks.
      const n = Math.min(end - pos, HEADER_LEN - this.headerFill);
      chunk.copy(this.header, this.headerFill, pos, pos + n);
      this.headerFill += n;
      pos += n;
      if (!this.seenFirst && this.headerFill >= 1 && this.header[0]! & 0x80) this.checkSslv2();
      if (this.headerFill < HEADER_LEN) continue;
      const type = this.header[0]!;
      const version = this.header.readUInt16BE(1);
      const len = this.header.readUInt16BE(3);
      this.headerFill = 0;
      this.checkHeader(type, version, len, this.header);
      if (len === 0) this.emit(type, version, Buffer.alloc(0));
      else this.startBody(type, version, len);
    }
  }

  private startBody(type: number, version: number, len: number): void {
    this.body = Buffer.allocUnsafe(len);
    this.bodyFill = 0;
    this.bodyType = type;
    this.bodyVersion = version;
  }

  private emit(type: number, version: number, fragment: Buffer): void {
    this.ready.push({ type, version, fragment });
    this.readyBytes += fragment.length;
  }

  private checkSslv2(): never {
    throw fatal('protocol_version', 'received an SSLv2-format ClientHello; SSLv2 is not supported');
  }

  private checkHeader(type: number, version: number, len: number, raw: Buffer): void {
    if (!this.seenFirst) {
      this.seenFirst = true;
      if (type & 0x80) this.checkSslv2();
      const text = raw.toString('latin1', 0, 4);
      if (HTTP_METHODS.includes(text)) throw new HttpOnTlsPortError();
    }
    if (type < ContentType.change_cipher_spec || type > ContentType.application_data) {
      throw fatal('unexpected_message', `unknown record content type ${type}`);
    }
    // legacy_record_version: lenient (0x0300/0x0301 occur in first records) but must be SSL3-family.
    if (version >> 8 !== 0x03) throw fatal('protocol_version', `record version 0x${version.toString(16)} is not TLS`);
    if (len > this.maxCiphertext) throw fatal('record_overflow', `record of ${len} bytes exceeds ${this.maxCiphertext}`);
    if (this.plaintextLimit && type !== ContentType.application_data && len > MAX_PLAINTEXT) {
      throw fatal('record_overflow', `plaintext record of ${len} bytes exceeds ${MAX_PLAINTEXT}`);
    }
    if (len === 0 && (type === ContentType.handshake || type === ContentType.alert)) {
      throw fatal('unexpected_message', `zero-length ${type === ContentType.handshake ? 'handshake' : 'alert'} record`);
    }
  }
}

/** Per-direction record counts at which to rekey (soft) and to refuse (hard). */
export interface SeqLimits {
  soft: bigint;
  hard: bigint;
}

/**
 * Default limits. RFC 8446 §5.5: AES-GCM keys may protect about 2^24.5 full-size records;
 * ask for a KeyUpdate at 2^23 and stop at 2^24. ChaCha20-Poly1305 has no practical bound
 * short of the 64-bit counter.
 */
export function defaultSeqLimits(suite: CipherSuite): SeqLimits {
  return suite.aead === 'chacha20-poly1305'
    ? { soft: 2n ** 62n, hard: 2n ** 64n - 1n }
    : { soft: 2n ** 23n, hard: 2n ** 24n };
}

/**
 * TLS 1.2 limits: 1.2 cannot rekey, and RFC 5246 §6.1 / RFC 5288 bound a key only by the 64-bit
 * sequence number, which must not wrap. The soft limit equals the hard one: there is nothing to ask for.
 */
export const SEQ_LIMITS_12: SeqLimits = { soft: 2n ** 64n - 1n, hard: 2n ** 64n - 1n };

/** The record sequence number of a key ran out: no alert can mean it, so the connection just closes. */
export class SeqExhaustedError extends TlsError {
  constructor(direction: 'read' | 'write') {
    super(`record sequence limit reached for the ${direction} key; the connection must rekey or close`, 'TLS_ERR_SEQ_EXHAUSTED');
    this.name = 'SeqExhaustedError';
  }
}

/** Shared nonce/sequence handling for one direction's traffic key. */
abstract class RecordProtection {
  protected readonly nonce = Buffer.alloc(12);
  // The IV's last 8 bytes as two 32-bit halves, and the sequence number as a double: exact up to
  // 2^53 records, far beyond what any key carries, and without BigInt's allocations per record.
  private readonly ivHi: number;
  private readonly ivLo: number;
  private seqNo = 0;
  private readonly soft: number;
  private readonly hard: number;
  /** The soft and hard record limits of this key. */
  readonly limits: SeqLimits;

  constructor(
    protected readonly suite: CipherSuite,
    protected readonly key: Buffer,
    protected readonly iv: Buffer,
    limits?: SeqLimits,
  ) {
    if (key.length !== suite.keyLen) throw new TlsError(`${suite.name} needs a ${suite.keyLen}-byte key, got ${key.length}`, 'TLS_ERR_BAD_KEY');
    if (iv.length !== 12) throw new TlsError(`TLS 1.3 needs a 12-byte IV, got ${iv.length}`, 'TLS_ERR_BAD_KEY');
    iv.copy(this.nonce, 0, 0, 4);
    this.ivHi = iv.readUInt32BE(4);
    this.ivLo = iv.readUInt32BE(8);
    this.limits = limits ?? defaultSeqLimits(suite);
    this.soft = Number(this.limits.soft);
    this.hard = Number(this.limits.hard);
  }

  /** Records processed under this key so far (the next record's sequence number). */
  get seq(): bigint {
    return BigInt(this.seqNo);
  }

  /** The next record's sequence number, as a number. */
  protected get seqNumber(): number {
    return this.seqNo;
  }

  /** True once this key has protected enough records that it should be replaced (KeyUpdate). */
  get needsKeyUpdate(): boolean {
    return this.seqNo >= this.soft;
  }

  /** Refuses (SeqExhaustedError) unless `records` more records fit under the hard limit. */
  protected reserve(records: number, direction: 'read' | 'write'): void {
    if (this.seqNo + records > this.hard) throw new SeqExhaustedError(direction);
  }

  /** Sets `nonce` to iv XOR seq (RFC 8446 §5.3) and advances seq; callers reserve() first. */
  protected nextNonce(): Buffer {
    const seq = this.seqNo++;
    this.nonce.writeUInt32BE((this.ivHi ^ Math.floor(seq / 0x1_0000_0000)) >>> 0, 4);
    this.nonce.writeUInt32BE((this.ivLo ^ seq) >>> 0, 8);
    return this.nonce;
  }
}

/** Protects outgoing records under one traffic key (RFC 8446 §5.2). */
export class RecordSealer extends RecordProtection {
  constructor(suite: CipherSuite, key: Buffer, iv: Buffer, limits?: SeqLimits) {
    super(suite, key, iv, limits);
  }

  /**
   * Encrypts `content` of inner type `type` as one or more full records (header included),
   * fragmenting at 2^14 and adding `padding` zero bytes per record (clamped to fit the limit).
   */
  seal(type: number, content: Buffer, padding = 0): Buffer {
    const pad = Math.max(0, Math.min(padding, MAX_PLAINTEXT - 1));
    const perRecord = MAX_PLAINTEXT - pad;
    const records = Math.max(1, Math.ceil(content.length / perRecord));
    this.reserve(records, 'write'); // all or nothing: no half-sealed content
    const out = Buffer.allocUnsafe(content.length + records * (HEADER_LEN + 1 + pad + TAG_LEN));
    let inPos = 0;
    let outPos = 0;
    for (let r = 0; r < records; r++) {
      const fragLen = Math.min(perRecord, content.length - inPos);
      const innerLen = fragLen + 1 + pad;
      const recLen = innerLen + TAG_LEN;
      out[outPos] = ContentType.application_data;
      out[outPos + 1] = 3;
      out[outPos + 2] = 3;
      out.writeUInt16BE(recLen, outPos + 3);
      const header = out.subarray(outPos, outPos + HEADER_LEN);
      // Build TLSInnerPlaintext in place, then encrypt it over itself.
      const innerStart = outPos + HEADER_LEN;
      content.copy(out, innerStart, inPos, inPos + fragLen);
      out[innerStart + fragLen] = type;
      if (pad > 0) out.fill(0, innerStart + fragLen + 1, innerStart + innerLen);
      // chacha20-poly1305 shares the GCM overload's AEAD interface (setAAD/getAuthTag).
      const cipher = crypto.createCipheriv(
        this.suite.aead as crypto.CipherGCMTypes, this.key, this.nextNonce(), { authTagLength: TAG_LEN },
      );
      cipher.setAAD(header);
      const ct = cipher.update(out.subarray(innerStart, innerStart + innerLen));
      ct.copy(out, innerStart);
      cipher.final(); // GCM and ChaCha20-Poly1305 are stream modes: nothing is held back
      cipher.getAuthTag().copy(out, innerStart + innerLen);
      inPos += fragLen;
      outPos += HEADER_LEN + recLen;
    }
    return out;
  }
}

/** Removes protection from incoming records under one traffic key (RFC 8446 §5.2, §5.4). */
export class RecordOpener extends RecordProtection {
  private readonly aad = Buffer.alloc(HEADER_LEN);

  constructor(suite: CipherSuite, key: Buffer, iv: Buffer, limits?: SeqLimits) {
    super(suite, key, iv, limits);
  }

  /** Decrypts one record; returns the inner content type and the content (padding removed). */
  open(record: RecordFrame): { type: number; content: Buffer } {
    if (record.type !== ContentType.application_data) {
      throw fatal('unexpected_message', `encrypted record has outer type ${record.type}, expected application_data`);
    }
    const frag = record.fragment;
    // Too short to hold a tag and the inner type: an authentication failure like any other.
    if (frag.length <= TAG_LEN) throw fatal('bad_record_mac', 'record authentication failed');
    if (frag.length > MAX_CIPHERTEXT_13) throw fatal('record_overflow', `record of ${frag.length} bytes exceeds ${MAX_CIPHERTEXT_13}`);
    this.aad[0] = record.type;
    this.aad.writeUInt16BE(record.version, 1);
    this.aad.writeUInt16BE(frag.length, 3);
    const ctLen = frag.length - TAG_LEN;
    // Outside the AEAD try: an exhausted key is not an authentication failure.
    this.reserve(1, 'read');
    const nonce = this.nextNonce();
    let inner: Buffer;
    try {
      const decipher = crypto.createDecipheriv(
        this.suite.aead as crypto.CipherGCMTypes, this.key, nonce, { authTagLength: TAG_LEN },
      );
      decipher.setAAD(this.aad);
      decipher.setAuthTag(frag.subarray(ctLen));
      inner = decipher.update(frag.subarray(0, ctLen));
      decipher.final();
    } catch {
      // Same alert whatever failed (tag, length): never give the peer an oracle.
      throw fatal('bad_record_mac', 'record authentication failed');
    }
    if (inner.length > MAX_PLAINTEXT + 1) throw fatal('record_overflow', `decrypted record of ${inner.length} bytes exceeds ${MAX_PLAINTEXT + 1}`);
    let i = inner.length - 1;
    while (i >= 0 && inner[i] === 0) i--;
    if (i < 0) throw fatal('unexpected_message', 'decrypted record has no content type (all padding)');
    const type = inner[i]!;
    const content = inner.subarray(0, i);
    if (content.length === 0 && (type === ContentType.handshake || type === ContentType.alert)) {
      throw fatal('unexpected_message', `zero-length ${type === ContentType.handshake ? 'handshake' : 'alert'} record`);
    }
    return { type, content };
  }
}

/** Unprotected records (before handshake keys): `content` framed at 2^14 per record, one allocation. */
export function plaintextRecords(type: number, content: Buffer): Buffer {
  const records = Math.max(1, Math.ceil(content.length / MAX_PLAINTEXT));
  const out = Buffer.allocUnsafe(content.length + records * HEADER_LEN);
  let inPos = 0;
  let outPos = 0;
  for (let r = 0; r < records; r++) {
    const n = Math.min(MAX_PLAINTEXT, content.length - inPos);
    out[outPos] = type;
    out[outPos + 1] = 3;
    out[outPos + 2] = 3;
    out.writeUInt16BE(n, outPos + 3);
    content.copy(out, outPos + HEADER_LEN, inPos, inPos + n);
    inPos += n;
    outPos += HEADER_LEN + n;
  }
  return out;
}
