// The TLS byte codec: a Reader whose sub-readers are bounded by a length prefix and must be
// consumed exactly (trailing data → decode_error), and a Writer whose length prefixes are
// back-patched when the nested part closes. Every message and extension codec is built on it.
import { fatal } from './alert.js';

/** Reads big-endian TLS vectors from a Buffer; any overrun or leftover is decode_error. */
export class Reader {
  private pos: number;
  constructor(private readonly buf: Buffer, start = 0, private readonly end = buf.length) {
    this.pos = start;
  }

  /** Bytes not yet consumed. */
  get remaining(): number { return this.end - this.pos; }

  /** Offset of the next byte within the underlying buffer (for transcript slicing). */
  get offset(): number { return this.pos; }

  private need(n: number, what: string): void {
    if (n > this.end - this.pos) throw fatal('decode_error', `truncated ${what}`);
  }

  u8(what = 'u8'): number { this.need(1, what); return this.buf[this.pos++]!; }
  u16(what = 'u16'): number { this.need(2, what); const v = this.buf.readUInt16BE(this.pos); this.pos += 2; return v; }
  u24(what = 'u24'): number { this.need(3, what); const v = this.buf.readUIntBE(this.pos, 3); this.pos += 3; return v; }
  u32(what = 'u32'): number { this.need(4, what); const v = this.buf.readUInt32BE(this.pos); this.pos += 4; return v; }

  /** n raw bytes, as a view (no copy) into the input. */
  bytes(n: number, what = 'bytes'): Buffer {
    this.need(n, what);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  /** The unread bytes as a view, without consuming them. */
  peekRest(): Buffer { return this.buf.subarray(this.pos, this.end); }

  /** A u8/u16/u24-length-prefixed opaque vector, as a view. */
  vec8(what = 'vector'): Buffer { return this.bytes(this.u8(what), what); }
  vec16(what = 'vector'): Buffer { return this.bytes(this.u16(what), what); }
  vec24(what = 'vector'): Buffer { return this.bytes(this.u24(what), what); }

  /** A sub-reader over a length-prefixed region; the parent skips past it at once. */
  sub(lenBytes: 1 | 2 | 3, what = 'vector'): Reader {
    const n = lenBytes === 1 ? this.u8(what) : lenBytes === 2 ? this.u16(what) : this.u24(what);
    this.need(n, what);
    const r = new Reader(this.buf, this.pos, this.pos + n);
    this.pos += n;
    return r;
  }

  /** Throws decode_error if anything is left: trailing data is never ignored. */
  expectEnd(what = 'message'): void {
    if (this.pos !== this.end) throw fatal('decode_error', `${this.end - this.pos} trailing bytes after ${what}`);
  }
}

/** Appends TLS vectors to a growable buffer; `lengthPrefixed` back-patches the prefix. */
export class Writer {
  private buf: Buffer;
  private pos = 0;
  constructor(initial = 256) { this.buf = Buffer.allocUnsafe(initial); }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  u8(v: number): this { this.ensure(1); this.buf[this.pos++] = v & 0xff; return this; }
  u16(v: number): this { this.ensure(2); this.buf.writeUInt16BE(v, this.pos); this.pos += 2; return this; }
  u24(v: number): this { this.ensure(3); this.buf.writeUIntBE(v, this.pos, 3); this.pos += 3; return this; }
  u32(v: number): this { this.ensure(4); this.buf.writeUInt32BE(v >>> 0, this.pos); this.pos += 4; return this; }
  bytes(b: Uint8Array): this { this.ensure(b.length); this.buf.set(b, this.pos); this.pos += b.length; return this; }

  vec8(b: Uint8Array): this { return this.lengthPrefixed(1, (w) => w.bytes(b)); }
  vec16(b: Uint8Array): this { return this.lengthPrefixed(2, (w) => w.bytes(b)); }
  vec24(b: Uint8Array): this { return this.lengthPrefixed(3, (w) => w.bytes(b)); }

  /** Writes a placeholder length, runs `body`, then patches the length it wrote. */
  lengthPrefixed(lenBytes: 1 | 2 | 3, body: (w: this) => void): this {
    this.ensure(lenBytes);
    const at = this.pos;
    this.pos += lenBytes;
    body(this);
    const n = this.pos - at - lenBytes;
    if (n >= 2 ** (8 * lenBytes)) throw new RangeError(`vector of ${n} bytes overflows a u${8 * lenBytes} length`);
    this.buf.writeUIntBE(n, at, lenBytes);
    return this;
  }

  /** The bytes written so far (a view: don't keep writing after taking it). */
  finish(): Buffer { return this.buf.subarray(0, this.pos); }
}
