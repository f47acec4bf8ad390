// Compact binary bodies of the hot operations (sign, verify, encrypt, decrypt, random, hmac).
// Requests are written straight after a reserved header (one allocation per frame); bodies are
// read with offsets from the frame's view, so data fields stay views too (no copy).
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
];
const CIPHER_MECHS: readonly CipherMechanism[] = ['rsa-oaep-sha256', 'aes-gcm'];

/** Largest random request served in one frame. */
export const MAX_RANDOM_BYTES = 64 * 1024;

/** A frame under construction: `buf` has HEADER_BYTES reserved at the front. */
class FrameWriter {
  readonly buf: Buffer;
  private at = HEADER_BYTES;
  constructor(bodySize: number) {
    this.buf = Buffer.allocUnsafe(HEADER_BYTES + bodySize);
  }
  u8(n: number): this { this.buf[this.at++] = n; return this; }
  u16(n: number): this { this.buf.writeUInt16BE(n, this.at); this.at += 2; return this; }
  u32(n: number): this { this.buf.writeUInt32BE(n, this.at); this.at += 4; return this; }
  str8(s: string): this {
    const n = this.buf.write(s, this.at + 1, 'latin1');
    this.buf[this.at] = n;
    this.at += 1 + n;
    return this;
  }
  bytes(b: Buffer): this { b.copy(this.buf, this.at); this.at += b.length; return this; }
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
  bytes(n: number, what: string): Buffer { this.need(n, what); const v = this.b.subarray(this.at, this.at + n); this.at += n; return v; }
  str8(what: string): string { return this.bytes(this.u8(what), what).toString('latin1'); }
  rest(): Buffer { const v = this.b.subarray(this.at); this.at = this.b.length; return v; }
  end(): void { if (this.at !== this.b.length) throw new ProtocolError('HSM_ERR_PROTOCOL', 'trailing bytes after the request body'); }
}

function keyIdLen(keyId: string): number {
  const n = Buffer.byteLength(keyId, 'latin1');
  if (n > 255) throw new ProtocolError('HSM_ERR_PROTOCOL', 'key id longer than 255 bytes');
  return n;
}

function signMech(m: string): number {
  const i = SIGN_MECHS.indexOf(m as SignMechanism);
  if (i < 0) throw new ProtocolError('HSM_ERR_PROTOCOL', `unknown signature mechanism ${m}; use one of ${SIGN_MECHS.join(', ')}`);
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

/** SIGN/HMAC request frame (header left for the caller to fill). */
export function writeSign(req: SignRequest): Buffer {
  const w = new FrameWriter(3 + keyIdLen(req.keyId) + req.data.length);
  return w.u8(signMech(req.mechanism)).u8((req.prehashed ? 1 : 0) | (req.format === 'raw' ? 2 : 0)).str8(req.keyId).bytes(req.data).buf;
}
/** Decodes a SIGN/HMAC body. */
export function readSign(body: Buffer): SignRequest {
  const r = new BodyReader(body);
  const mechanism = readSignMech(r);
  const flags = r.u8('flags');
  const keyId = r.str8('key id');
  return { keyId, mechanism, data: r.rest(), prehashed: (flags & 1) !== 0, format: (flags & 2) !== 0 ? 'raw' : 'der' };
}

/** VERIFY request frame. */
export function writeVerify(req: VerifyRequest): Buffer {
  if (req.signature.length > 0xffff) throw new ProtocolError('HSM_ERR_PROTOCOL', 'signature longer than 65535 bytes');
  const w = new FrameWriter(5 + keyIdLen(req.keyId) + req.signature.length + req.data.length);
  return w.u8(signMech(req.mechanism)).u8((req.prehashed ? 1 : 0) | (req.format === 'raw' ? 2 : 0)).str8(req.keyId)
    .u16(req.signature.length).bytes(req.signature).bytes(req.data).buf;
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

/** ENCRYPT request frame. */
export function writeEncrypt(req: EncryptRequest): Buffer {
  const aad = req.aad ?? Buffer.alloc(0);
  const iv = req.iv ?? Buffer.alloc(0);
  if (iv.length > 255) throw new ProtocolError('HSM_ERR_PROTOCOL', 'IV longer than 255 bytes');
  const w = new FrameWriter(8 + keyIdLen(req.keyId) + aad.length + iv.length + req.plaintext.length);
  return w.u8(cipherMech(req.mechanism)).u8(req.iv ? 1 : 0).str8(req.keyId).u32(aad.length).bytes(aad)
    .u8(iv.length).bytes(iv).bytes(req.plaintext).buf;
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

/** DECRYPT request frame. */
export function writeDecrypt(req: DecryptRequest): Buffer {
  const aad = req.aad ?? Buffer.alloc(0);
  const w = new FrameWriter(7 + keyIdLen(req.keyId) + aad.length + req.ciphertext.length);
  return w.u8(cipherMech(req.mechanism)).u8(0).str8(req.keyId).u32(aad.length).bytes(aad).bytes(req.ciphertext).buf;
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

/** RANDOM request frame. */
export function writeRandom(length: number): Buffer {
  return new FrameWriter(4).u32(length).buf;
}
/** Decodes a RANDOM body: the number of bytes asked for. */
export function readRandom(body: Buffer): number {
  const r = new BodyReader(body);
  const n = r.u32('length');
  r.end();
  if (n > MAX_RANDOM_BYTES) throw new ProtocolError('HSM_ERR_PROTOCOL', `random request of ${n} bytes exceeds ${MAX_RANDOM_BYTES}`);
  return n;
}

/** A frame whose body is raw bytes (hot responses, or a request with a pre-encoded body). */
export function writeRaw(body: Buffer): Buffer {
  return new FrameWriter(body.length).bytes(body).buf;
}
