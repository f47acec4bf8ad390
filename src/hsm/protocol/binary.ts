// Compact binary bodies of the hot operations (sign, verify, encrypt, decrypt, random, hmac).
// Each request kind has a BodyCodec that encodes in place, straight into the sender's outbox (no
// buffer per frame); bodies are read with offsets from the frame's view, so data fields stay views
// too (no copy).
//
//   SIGN / HMAC  u8 mech, u8 flags(1 prehashed, 2 raw ECDSA), str8 keyId, data…
//   VERIFY       u8 mech, u8 flags, str8 keyId, u16 sigLen, sig, data…
//   ENCRYPT      u8 mech, u8 flags(1 iv present), str8 keyId, u32 aadLen, aad, u8 ivLen, iv, plaintext…
//   DECRYPT      u8 mech, u8 flags, str8 keyId, u32 aadLen, aad, ciphertext…
//   RANDOM       u32 length
//   responses    the result bytes (verify: u8 1/0)
import { ProtocolError } from './errors.js';
import { HEADER_BYTES } from './frame.js';
import type { CipherMechanism, DecryptRequest, EncryptRequest, SignMechanism, SignRequest, VerifyRequest } from './types.js';

const SIGN_MECHS: readonly SignMechanism[] = [
  'rsa-pkcs1-sha256', 'rsa-pkcs1-sha384', 'rsa-pkcs1-sha512',
  'rsa-pss-sha256', 'rsa-pss-sha384', 'rsa-pss-sha512',
  'ecdsa-sha256', 'ecdsa-sha384',
  'hmac-sha256', 'hmac-sha384', 'hmac-sha512',
  // Appended, not inserted: a mechanism's wire code is its index here.
  'ecdsa-sha512',
];
const CIPHER_MECHS: readonly CipherMechanism[] = ['rsa-oaep-sha256', 'aes-gcm'];

/** Largest random request served in one frame. */
export const MAX_RANDOM_BYTES = 64 * 1024;

/**
 * Encodes one kind of request body in place: `size` checks the value (a ProtocolError for one the
 * wire cannot carry) and returns the body's length; `write` then fills exactly that many bytes at
 * `at` and cannot fail. Stateless, so a request is encoded straight into a FrameOutbox.
 */
export interface BodyCodec<T> {
  size(v: T): number;
  write(buf: Buffer, at: number, v: T): void;
}

// Writers over (buf, at): each returns the offset after what it wrote.
function putU32(buf: Buffer, at: number, n: number): number {
  buf.writeUInt32BE(n, at);
  return at + 4;
}
function putStr8(buf: Buffer, at: number, s: string): number {
  const n = s.length === 0 ? 0 : buf.write(s, at + 1, 'latin1');
  buf[at] = n;
  return at + 1 + n;
}
function putBytes(buf: Buffer, at: number, b: Buffer): number {
  return at + b.copy(buf, at);
}

/** Bounded reader over a body view; every read checks the remaining length. */
class BodyReader {
  private at = 0;
  constructor(private readonly b: Buffer) {}
  private need(n: number, what: string): void {
    if (this.at + n > this.b.length) throw new ProtocolError('HSM_ERR_PROTOCOL', `truncated request body (reading ${what})`);
  }
  u8(what: string): number { this.need(1, what); return this.b[this.at++] as number; }
  u16(what: string): number { this.need(2, what); const v = this.b.readUInt16BE(this.at); this.at += 2; return v; }
  u32(what: string): number { this.need(4, what); const v = this.b.readUInt32BE(this.at); this.at += 4; return v; }
  bytes(n: number, what: string): Buffer {
    this.need(n, what); const v = this.b.subarray(this.at, this.at + n); this.at += n; return v;
  }
  str8(what: string): string { return this.bytes(this.u8(what), what).toString('latin1'); }
  rest(): Buffer { const v = this.b.subarray(this.at); this.at = this.b.length; return v; }
  end(): void { if (this.at !== this.b.length) throw new ProtocolError('HSM_ERR_PROTOCOL', 'trailing bytes after the request body'); }
}

function keyIdLen(keyId: string): number {
  const n = Buffer.byteLength(keyId, 'latin1');
  if (n > 255) throw new ProtocolError('HSM_ERR_PROTOCOL', 'key id longer than 255 bytes');
  return n;
}

const SIGN_MECH_NUMBER = new Map<string, number>(SIGN_MECHS.map((m, i) => [m, i]));

function signMech(m: string): number {
  const i = SIGN_MECH_NUMBER.get(m);
  if (i === undefined) throw new ProtocolError('HSM_ERR_PROTOCOL', `unknown signature mechanism ${m}; use one of ${SIGN_MECHS.join(', ')}`);
  return i;
}
function cipherMech(m: string): number {
  const i = CIPHER_MECHS.indexOf(m as CipherMechanism);
  if (i < 0) throw new ProtocolError('HSM_ERR_PROTOCOL', `unknown cipher mechanism ${m}; use one of ${CIPHER_MECHS.join(', ')}`);
  return i;
}
function readSignMech(r: BodyReader): SignMechanism {
  const m = SIGN_MECHS[r.u8('mechanism')];
  if (!m) throw new ProtocolError('HSM_ERR_PROTOCOL', 'unknown signature mechanism number');
  return m;
}
function readCipherMech(r: BodyReader): CipherMechanism {
  const m = CIPHER_MECHS[r.u8('mechanism')];
  if (!m) throw new ProtocolError('HSM_ERR_PROTOCOL', 'unknown cipher mechanism number');
  return m;
}

/** SIGN/HMAC request body. */
export const SIGN_BODY: BodyCodec<SignRequest> = {
  size: (req) => (signMech(req.mechanism), 3 + keyIdLen(req.keyId) + req.data.length),
  write(buf, at, req) {
    buf[at] = signMech(req.mechanism);
    buf[at + 1] = (req.prehashed ? 1 : 0) | (req.format === 'raw' ? 2 : 0);
    putBytes(buf, putStr8(buf, at + 2, req.keyId), req.data);
  },
};
/** SIGN/HMAC request frame (header left for the caller to fill). */
export function writeSign(req: SignRequest): Buffer {
  return frameOf(SIGN_BODY, req);
}
/** Decodes a SIGN/HMAC body. */
export function readSign(body: Buffer): SignRequest {
  const r = new BodyReader(body);
  const mechanism = readSignMech(r);
  const flags = r.u8('flags');
  const keyId = r.str8('key id');
  return { keyId, mechanism, data: r.rest(), prehashed: (flags & 1) !== 0, format: (flags & 2) !== 0 ? 'raw' : 'der' };
}

/** VERIFY request body. */
export const VERIFY_BODY: BodyCodec<VerifyRequest> = {
  size(req) {
    if (req.signature.length > 0xffff) throw new ProtocolError('HSM_ERR_PROTOCOL', 'signature longer than 65535 bytes');
    signMech(req.mechanism);
    return 5 + keyIdLen(req.keyId) + req.signature.length + req.data.length;
  },
  write(buf, at, req) {
    buf[at] = signMech(req.mechanism);
    buf[at + 1] = (req.prehashed ? 1 : 0) | (req.format === 'raw' ? 2 : 0);
    const p = buf.writeUInt16BE(req.signature.length, putStr8(buf, at + 2, req.keyId));
    putBytes(buf, putBytes(buf, p, req.signature), req.data);
  },
};
/** VERIFY request frame. */
export function writeVerify(req: VerifyRequest): Buffer {
  return frameOf(VERIFY_BODY, req);
}
/** Decodes a VERIFY body. */
export function readVerify(body: Buffer): VerifyRequest {
  const r = new BodyReader(body);
  const mechanism = readSignMech(r);
  const flags = r.u8('flags');
  const keyId = r.str8('key id');
  const signature = r.bytes(r.u16('signature length'), 'signature');
  return { keyId, mechanism, signature, data: r.rest(), prehashed: (flags & 1) !== 0, format: (flags & 2) !== 0 ? 'raw' : 'der' };
}

const EMPTY = Buffer.alloc(0);

/** ENCRYPT request body. */
export const ENCRYPT_BODY: BodyCodec<EncryptRequest> = {
  size(req) {
    const ivLen = req.iv?.length ?? 0;
    if (ivLen > 255) throw new ProtocolError('HSM_ERR_PROTOCOL', 'IV longer than 255 bytes');
    cipherMech(req.mechanism);
    return 8 + keyIdLen(req.keyId) + (req.aad?.length ?? 0) + ivLen + req.plaintext.length;
  },
  write(buf, at, req) {
    const aad = req.aad ?? EMPTY;
    const iv = req.iv ?? EMPTY;
    buf[at] = cipherMech(req.mechanism);
    buf[at + 1] = req.iv ? 1 : 0;
    let p = putBytes(buf, putU32(buf, putStr8(buf, at + 2, req.keyId), aad.length), aad);
    buf[p++] = iv.length;
    putBytes(buf, putBytes(buf, p, iv), req.plaintext);
  },
};
/** ENCRYPT request frame. */
export function writeEncrypt(req: EncryptRequest): Buffer {
  return frameOf(ENCRYPT_BODY, req);
}
/** Decodes an ENCRYPT body. */
export function readEncrypt(body: Buffer): EncryptRequest {
  const r = new BodyReader(body);
  const mechanism = readCipherMech(r);
  const flags = r.u8('flags');
  const keyId = r.str8('key id');
  const aad = r.bytes(r.u32('aad length'), 'aad');
  const iv = r.bytes(r.u8('iv length'), 'iv');
  const plaintext = r.rest();
  return { keyId, mechanism, plaintext, ...(aad.length > 0 ? { aad } : {}), ...((flags & 1) !== 0 ? { iv } : {}) };
}

/** DECRYPT request body. */
export const DECRYPT_BODY: BodyCodec<DecryptRequest> = {
  size: (req) => (cipherMech(req.mechanism), 7 + keyIdLen(req.keyId) + (req.aad?.length ?? 0) + req.ciphertext.length),
  write(buf, at, req) {
    const aad = req.aad ?? EMPTY;
    buf[at] = cipherMech(req.mechanism);
    buf[at + 1] = 0;
    putBytes(buf, putBytes(buf, putU32(buf, putStr8(buf, at + 2, req.keyId), aad.length), aad), req.ciphertext);
  },
};
/** DECRYPT request frame. */
export function writeDecrypt(req: DecryptRequest): Buffer {
  return frameOf(DECRYPT_BODY, req);
}
/** Decodes a DECRYPT body. */
export function readDecrypt(body: Buffer): DecryptRequest {
  const r = new BodyReader(body);
  const mechanism = readCipherMech(r);
  r.u8('flags');
  const keyId = r.str8('key id');
  const aad = r.bytes(r.u32('aad length'), 'aad');
  return { keyId, mechanism, ciphertext: r.rest(), ...(aad.length > 0 ? { aad } : {}) };
}

/** RANDOM request body: the number of bytes asked for. */
export const RANDOM_BODY: BodyCodec<number> = {
  size: () => 4,
  write(buf, at, length) {
    buf.writeUInt32BE(length, at);
  },
};
/** RANDOM request frame. */
export function writeRandom(length: number): Buffer {
  return frameOf(RANDOM_BODY, length);
}
/** Decodes a RANDOM body: the number of bytes asked for. */
export function readRandom(body: Buffer): number {
  const r = new BodyReader(body);
  const n = r.u32('length');
  r.end();
  if (n > MAX_RANDOM_BYTES) throw new ProtocolError('HSM_ERR_PROTOCOL', `random request of ${n} bytes exceeds ${MAX_RANDOM_BYTES}`);
  return n;
}

/** A body of raw bytes (hot responses, or a request with a pre-encoded body). */
export const RAW_BODY: BodyCodec<Buffer> = {
  size: (body) => body.length,
  write(buf, at, body) {
    body.copy(buf, at);
  },
};
/** A frame whose body is raw bytes. */
export function writeRaw(body: Buffer): Buffer {
  return frameOf(RAW_BODY, body);
}

/** A frame of its own (header reserved, left for the caller) with `v`'s body. */
export function frameOf<T>(codec: BodyCodec<T>, v: T): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_BYTES + codec.size(v));
  codec.write(buf, HEADER_BYTES, v);
  return buf;
}
