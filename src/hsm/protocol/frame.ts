// Frames of the client↔HSM protocol: a fixed 20-byte header and a body.
//
//   offset size  field
//   0      u32   body length (bytes after the header)
//   4      u32   request id (echoed in the response; responses come in any order)
//   8      u16   opcode (request) or status (response: 0 ok, 1 error)
//   10     u16   flags (FLAG_RESPONSE, FLAG_JSON)
//   12     u32   queueWaitUs (response: time the request waited for a crypto unit)
//   16     u32   serviceUs (response: time it was served on a unit)
//
// Writers encode frames back to back into a FrameOutbox, which hands each batch to the socket as
// one view of its slab: one write per batch, no per-frame buffer, no concatenation.
// The decoder keeps one growing buffer with a read offset and hands out frame bodies as views
// into it, never copies: a region handed out is never written again (when the buffer fills,
// the unread tail moves to a fresh buffer and the old one lives on while bodies reference it).
import { ProtocolError } from './errors.js';

export const HEADER_BYTES = 20;
/** Default limit on a request body: anything larger closes the connection. */
export const DEFAULT_MAX_FRAME = 1024 * 1024;
/** Responses may be larger (snapshots, masked user tables); clients accept up to this. */
export const DEFAULT_MAX_RESPONSE_FRAME = 64 * 1024 * 1024;

export const FLAG_RESPONSE = 0x1;
/** The body is UTF-8 JSON (management ops, error responses); else op-specific binary. */
export const FLAG_JSON = 0x2;

export const STATUS_OK = 0;
export const STATUS_ERROR = 1;

/** One decoded frame; `body` is a view into the decoder's buffer (valid for ever, never reused). */
export interface Frame {
  requestId: number;
  /** Opcode for requests, status for responses. */
  code: number;
  flags: number;
  queueWaitUs: number;
  serviceUs: number;
  body: Buffer;
}

/** Writes a header into `buf` at `offset` (the body follows it). */
export function writeHeader(
  buf: Buffer, offset: number, bodyLength: number, requestId: number, code: number, flags: number,
  queueWaitUs = 0, serviceUs = 0,
): void {
  buf.writeUInt32BE(bodyLength, offset);
  buf.writeUInt32BE(requestId >>> 0, offset + 4);
  buf.writeUInt16BE(code, offset + 8);
  buf.writeUInt16BE(flags, offset + 10);
  buf.writeUInt32BE(clampU32(queueWaitUs), offset + 12);
  buf.writeUInt32BE(clampU32(serviceUs), offset + 16);
}

/** Encodes one whole frame (header + body) into a new buffer. */
export function encodeFrame(
  requestId: number, code: number, flags: number, body: Buffer, queueWaitUs = 0, serviceUs = 0,
): Buffer {
  const out = Buffer.allocUnsafe(HEADER_BYTES + body.length);
  writeHeader(out, 0, body.length, requestId, code, flags, queueWaitUs, serviceUs);
  body.copy(out, HEADER_BYTES);
  return out;
}

/** Default size of a FrameOutbox slab: a few hundred small frames; larger batches get a larger one. */
export const OUTBOX_SLAB_BYTES = 64 * 1024;

/**
 * Frames waiting for one socket write, encoded back to back into a slab. `take()` hands the batch
 * out as one view and the next batch continues after it in the same slab: bytes handed out are
 * never written again (a full slab is replaced, the untaken bytes moved to the new one), so the
 * socket may hold a view for as long as it likes.
 */
export class FrameOutbox {
  private slab: Buffer;
  private start = 0;
  private end = 0;
  private count = 0;

  constructor(private readonly slabBytes = OUTBOX_SLAB_BYTES) {
    this.slab = Buffer.allocUnsafe(slabBytes);
  }

  /** Bytes queued and not yet taken. */
  get bytes(): number {
    return this.end - this.start;
  }

  /** Frames queued and not yet taken. */
  get frames(): number {
    return this.count;
  }

  /** The buffer `reserve` wrote its offset into (valid until the next `reserve`). */
  get buf(): Buffer {
    return this.slab;
  }

  /** Makes room for one frame of `size` bytes and returns its offset in `buf`; fill all of it before the next call. */
  reserve(size: number): number {
    if (this.end + size > this.slab.length) {
      const queued = this.end - this.start;
      const next = Buffer.allocUnsafe(Math.max(this.slabBytes, (queued + size) * 2));
      this.slab.copy(next, 0, this.start, this.end);
      this.slab = next;
      this.start = 0;
      this.end = queued;
    }
    const at = this.end;
    this.end += size;
    this.count++;
    return at;
  }

  /** Appends one whole frame: a header and `body` (copied). */
  push(requestId: number, code: number, flags: number, body: Buffer, queueWaitUs = 0, serviceUs = 0): void {
    const at = this.reserve(HEADER_BYTES + body.length);
    writeHeader(this.slab, at, body.length, requestId, code, flags, queueWaitUs, serviceUs);
    body.copy(this.slab, at + HEADER_BYTES);
  }

  /** Appends one whole frame whose body is `text` as UTF-8. */
  pushText(requestId: number, code: number, flags: number, text: string, queueWaitUs = 0, serviceUs = 0): void {
    const len = Buffer.byteLength(text);
    const at = this.reserve(HEADER_BYTES + len);
    writeHeader(this.slab, at, len, requestId, code, flags, queueWaitUs, serviceUs);
    if (len > 0) this.slab.write(text, at + HEADER_BYTES, len, 'utf8');
  }

  /** The queued frames as one buffer (a view of the slab), or undefined if none; the outbox is empty after. */
  take(): Buffer | undefined {
    if (this.end === this.start) return undefined;
    const out = this.slab.subarray(this.start, this.end);
    this.start = this.end;
    this.count = 0;
    return out;
  }

  /** Drops the queued frames (the connection is gone). */
  clear(): void {
    this.end = this.start;
    this.count = 0;
  }
}

function clampU32(n: number): number {
  if (!(n > 0)) return 0;
  return n >= 0xffffffff ? 0xffffffff : Math.round(n);
}

/** Incremental frame parser over a byte stream (the socket's chunks, in order). */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);
  private readAt = 0;
  private writeAt = 0;
  private failure: ProtocolError | undefined;

  /** `maxBody`: the largest body accepted; a larger one throws ProtocolError (close the connection). */
  constructor(private readonly maxBody = DEFAULT_MAX_FRAME) {}

  /** Bytes received but not yet part of a whole frame. */
  get pending(): number {
    return this.writeAt - this.readAt;
  }

  /**
   * Set once an oversized frame header arrives: the stream cannot be resynchronised, so the
   * caller serves the frames decoded before it and then closes the connection.
   */
  get error(): ProtocolError | undefined {
    return this.failure;
  }

  /** Feeds a chunk and returns every whole frame it completes (check `error` afterwards). */
  push(chunk: Buffer): Frame[] {
    if (this.failure) throw this.failure;
    const frames: Frame[] = [];
    let src: Buffer;
    let at: number;
    let end: number;
    if (this.pending === 0) {
      // Fast path: parse straight from the socket's chunk (Node gives each read its own buffer).
      src = chunk;
      at = 0;
      end = chunk.length;
    } else {
      this.append(chunk);
      src = this.buf;
      at = this.readAt;
      end = this.writeAt;
    }
    while (end - at >= HEADER_BYTES) {
      const len = src.readUInt32BE(at);
      if (len > this.maxBody) {
        this.failure = new ProtocolError('HSM_ERR_FRAME_TOO_LARGE', `frame of ${len} bytes exceeds the limit of ${this.maxBody} bytes`, src.readUInt32BE(at + 4));
        return frames;
      }
      if (end - at < HEADER_BYTES + len) break;
      frames.push({
        requestId: src.readUInt32BE(at + 4),
        code: src.readUInt16BE(at + 8),
        flags: src.readUInt16BE(at + 10),
        queueWaitUs: src.readUInt32BE(at + 12),
        serviceUs: src.readUInt32BE(at + 16),
        body: src.subarray(at + HEADER_BYTES, at + HEADER_BYTES + len),
      });
      at += HEADER_BYTES + len;
    }
    if (src === chunk) {
      if (at < end) this.append(chunk.subarray(at));
    } else {
      // No rewind to 0 even when all is read: bodies handed out still live there.
      this.readAt = at;
    }
    return frames;
  }

  // Appends after writeAt. Bytes before readAt may be referenced by handed-out bodies, so a full
  // buffer is replaced (unread tail copied), never compacted in place.
  private append(chunk: Buffer): void {
    if (this.writeAt + chunk.length > this.buf.length) {
      const unread = this.writeAt - this.readAt;
      const size = Math.max(64 * 1024, (unread + chunk.length) * 2);
      const next = Buffer.allocUnsafe(size);
      this.buf.copy(next, 0, this.readAt, this.writeAt);
      this.buf = next;
      this.readAt = 0;
      this.writeAt = unread;
    }
    chunk.copy(this.buf, this.writeAt);
    this.writeAt += chunk.length;
  }
}
