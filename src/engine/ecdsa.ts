// ECDSA signature encodings: TLS and X.509 carry DER ECDSA-Sig-Value { r INTEGER, s INTEGER };
// PKCS#11 (CKM_ECDSA) and WebCrypto use raw r‖s, each half left-padded to the curve size.
import { DerError, DerReader, Tag, tlv, uint } from '../tls/der.js';

/** Converts raw r‖s (2 × size bytes) to DER. Leading zero bytes are stripped, sign bytes added. */
export function rawToDer(raw: Buffer, size: number): Buffer {
  if (raw.length !== 2 * size) throw new DerError(`raw ECDSA signature must be ${2 * size} bytes, got ${raw.length}`);
  return tlv(Tag.SEQUENCE, uint(raw.subarray(0, size)), uint(raw.subarray(size)));
}

/** Converts DER ECDSA-Sig-Value to raw r‖s, each half left-padded to `size` bytes. Strict. */
export function derToRaw(der: Buffer, size: number): Buffer {
  const outer = new DerReader(der);
  const seq = outer.sub(Tag.SEQUENCE, 'ECDSA-Sig-Value');
  outer.end('ECDSA-Sig-Value');
  const r = seq.uint('r');
  const s = seq.uint('s');
  seq.end('ECDSA-Sig-Value');
  if (r.length > size || s.length > size) throw new DerError(`ECDSA r or s is longer than ${size} bytes`);
  const out = Buffer.alloc(2 * size);
  r.copy(out, size - r.length);
  s.copy(out, 2 * size - s.length);
  return out;
}
