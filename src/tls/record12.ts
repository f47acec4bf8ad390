// TLS 1.2 AEAD record protection (RFC 5246 §6.2.3.3): the real content type stays in the
// header, AAD = seq ‖ type ‖ version ‖ plaintext length. AES-GCM (RFC 5288) nonce = 4-byte
// salt ‖ 8-byte explicit nonce carried in the record (we send our sequence number, never a
// random value, RFC 5288 §3); ChaCha20-Poly1305 (RFC 7905) nonce = 12-byte IV XOR seq, as in 1.3.
// Reuses record.ts's nonce and sequence bookkeeping by subclassing its sealer and opener.
import crypto from 'node:crypto';
import { fatal } from './alert.js';
import { ContentType, MAX_PLAINTEXT, RecordOpener, RecordSealer, SEQ_LIMITS_12, type RecordFrame, type SeqLimits } from './record.js';
import type { CipherSuite12 } from './suites12.js';

const HEADER_LEN = 5;
const TAG_LEN = 16;
const EXPLICIT_LEN = 8;
const TLS12 = 0x0303;

// record.ts computes nonce = iv XOR seq over the last 8 bytes. Padding the 4-byte GCM salt with
// zeros makes that salt ‖ seq: exactly the GCM nonce whose explicit part is the sequence number.
function nonceBase(suite: CipherSuite12, fixedIv: Buffer): Buffer {
  if (fixedIv.length !== suite.fixedIvLen) throw new RangeError(`${suite.name} needs a ${suite.fixedIvLen}-byte IV, got ${fixedIv.length}`);
  return suite.fixedIvLen === 4 ? Buffer.concat([fixedIv, Buffer.alloc(8)]) : Buffer.from(fixedIv);
}

function writeAad(aad: Buffer, seq: number, type: number, length: number): Buffer {
  aad.writeUInt32BE(Math.floor(seq / 0x1_0000_0000), 0);
  aad.writeUInt32BE(seq >>> 0, 4);
  aad[8] = type;
  aad.writeUInt16BE(TLS12, 9);
  aad.writeUInt16BE(length, 11);
  return aad;
}

/** Protects outgoing TLS 1.2 records under one direction's key. */
export class RecordSealer12 extends RecordSealer {
  private readonly explicitLen: number;
  private readonly aad12 = Buffer.alloc(13);

  constructor(private readonly suite12: CipherSuite12, key: Buffer, fixedIv: Buffer, limits?: SeqLimits) {
    super(suite12, key, nonceBase(suite12, fixedIv), limits ?? SEQ_LIMITS_12);
    this.explicitLen = suite12.fixedIvLen === 4 ? EXPLICIT_LEN : 0;
  }

  /** Encrypts `content` as one or more records of outer type `type`, fragmenting at 2^14. */
  override seal(type: number, content: Buffer): Buffer {
    const records = Math.max(1, Math.ceil(content.length / MAX_PLAINTEXT));
    this.reserve(records, 'write');
    const overhead = HEADER_LEN + this.explicitLen + TAG_LEN;
    const out = Buffer.allocUnsafe(content.length + records * overhead);
    let inPos = 0;
    let outPos = 0;
    for (let r = 0; r < records; r++) {
      const fragLen = Math.min(MAX_PLAINTEXT, content.length - inPos);
      const seq = this.seqNumber;
      const nonce = this.nextNonce();
      out[outPos] = type;
      out.writeUInt16BE(TLS12, outPos + 1);
      out.writeUInt16BE(this.explicitLen + fragLen + TAG_LEN, outPos + 3);
      if (this.explicitLen) nonce.copy(out, outPos + HEADER_LEN, 4, 12);
      const ctStart = outPos + HEADER_LEN + this.explicitLen;
      // chacha20-poly1305 shares the GCM overload's AEAD interface (setAAD/getAuthTag).
      const cipher = crypto.createCipheriv(
        this.suite12.aead as crypto.CipherGCMTypes, this.key, nonce, { authTagLength: TAG_LEN },
      );
      cipher.setAAD(writeAad(this.aad12, seq, type, fragLen));
      cipher.update(content.subarray(inPos, inPos + fragLen)).copy(out, ctStart);
      cipher.final(); // stream modes: nothing held back
      cipher.getAuthTag().copy(out, ctStart + fragLen);
      inPos += fragLen;
      outPos += HEADER_LEN + this.explicitLen + fragLen + TAG_LEN;
    }
    return out;
  }
}

/** Removes TLS 1.2 record protection; the content type is the record's own. */
export class RecordOpener12 extends RecordOpener {
  private readonly explicitLen: number;
  private readonly aad12 = Buffer.alloc(13);

  constructor(private readonly suite12: CipherSuite12, key: Buffer, fixedIv: Buffer, limits?: SeqLimits) {
    super(suite12, key, nonceBase(suite12, fixedIv), limits ?? SEQ_LIMITS_12);
    this.explicitLen = suite12.fixedIvLen === 4 ? EXPLICIT_LEN : 0;
  }

  /** Decrypts one record. Any authentication or length failure is the same bad_record_mac. */
  override open(record: RecordFrame): { type: number; content: Buffer } {
    const { type } = record;
    if (type !== ContentType.handshake && type !== ContentType.alert && type !== ContentType.application_data) {
      throw fatal('unexpected_message', `record type ${type} is not allowed after ChangeCipherSpec`);
    }
    // After negotiation the header must say TLS 1.2 (Go's rule; the AAD uses the negotiated version).
    if (record.version !== TLS12) throw fatal('protocol_version', `record version 0x${record.version.toString(16)} after TLS 1.2 was negotiated`);
    const frag = record.fragment;
    const overhead = this.explicitLen + TAG_LEN;
    if (frag.length < overhead) throw fatal('bad_record_mac', 'record authentication failed');
    const ctLen = frag.length - overhead;
    // A peer never needs more than 2^14 plaintext per record (RFC 5246 §6.2.3).
    if (ctLen > MAX_PLAINTEXT) throw fatal('record_overflow', `encrypted record of ${frag.length} bytes exceeds ${MAX_PLAINTEXT + overhead}`);
    this.reserve(1, 'read'); // outside the AEAD try: exhaustion is not bad_record_mac
    const seq = this.seqNumber;
    const nonce = this.nextNonce();
    if (this.explicitLen) frag.copy(nonce, 4, 0, EXPLICIT_LEN); // the sender's explicit nonce
    let content: Buffer;
    try {
      const d = crypto.createDecipheriv(
        this.suite12.aead as crypto.CipherGCMTypes, this.key, nonce, { authTagLength: TAG_LEN },
      );
      d.setAAD(writeAad(this.aad12, seq, type, ctLen));
      d.setAuthTag(frag.subarray(frag.length - TAG_LEN));
      content = d.update(frag.subarray(this.explicitLen, this.explicitLen + ctLen));
      d.final();
    } catch {
      throw fatal('bad_record_mac', 'record authentication failed');
    }
    if (content.length === 0 && type !== ContentType.application_data) {
      throw fatal('unexpected_message', `zero-length ${type === ContentType.handshake ? 'handshake' : 'alert'} record`);
    }
    return { type, content };
  }
}
