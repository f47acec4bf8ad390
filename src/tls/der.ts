// The one DER codec: a strict reader (bounded sub-readers; definite, minimal lengths; trailing data
// is an error) and a writer, for the few structures on the handshake path and in key references.
// Single-byte tags only. Not a general ASN.1 library on purpose: docs/design.md, "DER", says why.

/** Thrown for malformed DER; callers wrap it in their own coded error. */
export class DerError extends RangeError {
  constructor(message: string) {
    super(message);
    this.name = 'DerError';
  }
}

export const Tag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  SEQUENCE: 0x30,
  CONTEXT_0: 0xa0,
  CONTEXT_1: 0xa1,
  CONTEXT_3: 0xa3,
} as const;

/** One TLV: its tag, its content, and the whole encoding (header included). */
export interface DerElement { tag: number; content: Buffer; raw: Buffer }

/** Reads consecutive TLVs from a buffer, with bounded sub-readers. */
export class DerReader {
  private pos = 0;
  // The TLV last passed by advance(): first byte of its content and one past its end.
  private start = 0;
  private stop = 0;
  constructor(private readonly buf: Buffer) {}

  /** Moves past the next TLV (checking its header) and returns its tag. */
  private advance(what: string): number {
    if (this.pos + 2 > this.buf.length) throw new DerError(`${what}: truncated`);
    const tag = this.buf[this.pos]!;
    let len = this.buf[this.pos + 1]!;
    let off = this.pos + 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n === 0 || n > 4) throw new DerError(`${what}: unsupported length encoding`);
      if (off + n > this.buf.length) throw new DerError(`${what}: truncated length`);
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + this.buf[off + i]!;
      if (this.buf[off] === 0 || len < 0x80) throw new DerError(`${what}: non-minimal length`);
      off += n;
    }
    if (off + len > this.buf.length) throw new DerError(`${what}: truncated (needs ${len} bytes)`);
    this.start = off;
    this.stop = off + len;
    this.pos = off + len;
    return tag;
  }

  /** Reads the next TLV, whatever its tag. */
  next(what: string): DerElement {
    const from = this.pos;
    const tag = this.advance(what);
    return { tag, content: this.buf.subarray(this.start, this.stop), raw: this.buf.subarray(from, this.stop) };
  }

  /** Skips the next TLV, whatever its tag; returns the tag. */
  skip(what: string): number {
    return this.advance(what);
  }

  /** Reads the next TLV, which must carry `tag`; returns its content. */
  read(tag: number, what: string): Buffer {
    if (this.pos + 2 > this.buf.length) throw new DerError(`${what}: truncated`);
    const actual = this.buf[this.pos]!;
    if (actual !== tag) throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, found 0x${actual.toString(16)}`);
    this.advance(what);
    return this.buf.subarray(this.start, this.stop);
  }

  /** Reads a nested TLV and returns a reader over its content. */
  sub(tag: number, what: string): DerReader {
    return new DerReader(this.read(tag, what));
  }

  /** Reads a non-negative INTEGER; returns its unsigned big-endian magnitude (no sign byte). */
  uint(what: string): Buffer {
    const c = this.read(Tag.INTEGER, what);
    if (c.length === 0) throw new DerError(`${what}: empty INTEGER`);
    if (c[0]! & 0x80) throw new DerError(`${what}: negative INTEGER`);
    if (c.length > 1 && c[0] === 0 && !(c[1]! & 0x80)) throw new DerError(`${what}: non-minimal INTEGER`);
    return c[0] === 0 && c.length > 1 ? c.subarray(1) : c;
  }

  /** True when the next TLV has this tag. */
  peek(tag: number): boolean {
    return this.pos < this.buf.length && this.buf[this.pos] === tag;
  }

  /** True when every byte was consumed. */
  atEnd(): boolean {
    return this.pos === this.buf.length;
  }

  /** Asserts that every byte was consumed. */
  end(what: string): void {
    if (this.pos !== this.buf.length) throw new DerError(`${what}: ${this.buf.length - this.pos} trailing bytes`);
  }
}

function encodeLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** Encodes one TLV. */
export function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), encodeLength(body.length), body]);
}

/** Encodes an unsigned big-endian magnitude as a minimal, non-negative DER INTEGER. */
export function uint(magnitude: Buffer): Buffer {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  let v = magnitude.subarray(i);
  if (v.length === 0) v = Buffer.from([0]);
  if (v[0]! & 0x80) v = Buffer.concat([Buffer.from([0]), v]);
  return tlv(Tag.INTEGER, v);
}

/** Encodes a small non-negative integer. */
export function smallUint(n: number): Buffer {
  return uint(Buffer.from([n]));
}
