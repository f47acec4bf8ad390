// A raw HTTP/2 client for tests that must misbehave where node:http2 would not let them: frames
// built by hand (RFC 9113 §4.1), header blocks with HPACK literals and table-size updates
// (RFC 7541 §6), every received frame recorded. Responses are not HPACK-decoded; tests look at
// frame types, stream ids, error codes and SETTINGS.
import { readFileSync } from 'node:fs';
import tls from 'node:tls';

export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const FLAG = { END_STREAM: 1, ACK: 1, END_HEADERS: 4 } as const;
export const ERROR = {
  NO_ERROR: 0, PROTOCOL_ERROR: 1, INTERNAL_ERROR: 2, FLOW_CONTROL_ERROR: 3, SETTINGS_TIMEOUT: 4, REFUSED_STREAM: 7,
  CANCEL: 8, COMPRESSION_ERROR: 9, ENHANCE_YOUR_CALM: 11,
} as const;
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export interface Frame { type: number; flags: number; stream: number; payload: Buffer }

/** One frame on the wire. */
export function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

/** An HPACK integer with an N-bit prefix (RFC 7541 §5.1); `first` holds the bits above the prefix. */
export function hpackInt(value: number, prefixBits: number, first = 0): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([first | value]);
  const out = [first | max];
  let v = value - max;
  while (v >= 128) { out.push((v % 128) + 128); v = Math.floor(v / 128); }
  out.push(v);
  return Buffer.from(out);
}

const str = (s: string) => { const b = Buffer.from(s, 'latin1'); return Buffer.concat([hpackInt(b.length, 7), b]); };

/** Literal header field without indexing, new name (RFC 7541 §6.2.2). */
export const literal = (name: string, value: string) => Buffer.concat([Buffer.from([0x00]), str(name), str(value)]);
/** Literal header field with incremental indexing, new name (§6.2.1): enters the dynamic table. */
export const literalIndexed = (name: string, value: string) => Buffer.concat([Buffer.from([0x40]), str(name), str(value)]);
/** Indexed header field (§6.1). */
export const indexed = (index: number) => hpackInt(index, 7, 0x80);
/** Dynamic table size update (§6.3). */
export const tableSizeUpdate = (size: number) => hpackInt(size, 5, 0x20);

/** A GET header block for `path` on `authority`. */
export function getBlock(authority: string, path: string, extra: Array<[string, string]> = []): Buffer {
  return Buffer.concat([
    literal(':method', 'GET'), literal(':scheme', 'https'), literal(':authority', authority), literal(':path', path),
    ...extra.map(([n, v]) => literal(n, v)),
  ]);
}

export function settingsPayload(s: Record<number, number>): Buffer {
  const out = Buffer.alloc(6 * Object.keys(s).length);
  Object.entries(s).forEach(([id, v], i) => { out.writeUInt16BE(Number(id), i * 6); out.writeUInt32BE(v, i * 6 + 2); });
  return out;
}

export function parseSettings(p: Buffer): Map<number, number> {
  const m = new Map<number, number>();
  for (let i = 0; i + 6 <= p.length; i += 6) m.set(p.readUInt16BE(i), p.readUInt32BE(i + 2));
  return m;
}

export interface RawH2 {
  socket: tls.TLSSocket;
  frames: Frame[];
  closed: Promise<void>;
  isClosed(): boolean;
  send(...bufs: Buffer[]): void;
  /** Resolves with the first frame (received so far or later) that matches, or rejects after `ms`. */
  waitFor(match: (f: Frame) => boolean, ms?: number): Promise<Frame>;
  goaway(ms?: number): Promise<{ lastStream: number; code: number }>;
  close(): void;
}

export interface RawOptions {
  /** Send the preface and an empty SETTINGS at once (default true). */
  preface?: boolean;
  /** Acknowledge the server's SETTINGS (default true). */
  ackSettings?: boolean;
}

/** Connects with ALPN h2 only. */
export function rawH2(port: number, caFile: string, opts: RawOptions = {}): Promise<RawH2> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: readFileSync(caFile), ALPNProtocols: ['h2'] });
    const frames: Frame[] = [];
    const waiters: Array<{ match: (f: Frame) => boolean; resolve: (f: Frame) => void }> = [];
    let buf: Buffer = Buffer.alloc(0);
    let closed = false;
    const closedP = new Promise<void>((r) => socket.once('close', () => { closed = true; r(); }));
    socket.on('error', () => undefined);
    socket.on('data', (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const f: Frame = { type: buf[3]!, flags: buf[4]!, stream: buf.readUInt32BE(5) & 0x7fffffff, payload: buf.subarray(9, 9 + len) };
        buf = buf.subarray(9 + len);
        frames.push(f);
        if (f.type === FRAME.SETTINGS && !(f.flags & FLAG.ACK) && opts.ackSettings !== false && !socket.destroyed) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
        for (const w of [...waiters]) if (w.match(f)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(f); }
      }
    });
    socket.once('secureConnect', () => {
      if (socket.alpnProtocol !== 'h2') { socket.destroy(); reject(new Error(`ALPN ${socket.alpnProtocol}`)); return; }
      if (opts.preface !== false) socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0)]));
      const raw: RawH2 = {
        socket, frames, closed: closedP, isClosed: () => closed,
        send: (...bufs) => { if (!socket.destroyed) socket.write(Buffer.concat(bufs)); },
        waitFor: (match, ms = 10_000) => new Promise((res, rej) => {
          const seen = frames.find(match);
          if (seen) { res(seen); return; }
          const timer = setTimeout(() => rej(new Error('frame not received in time')), ms);
          waiters.push({ match, resolve: (f) => { clearTimeout(timer); res(f); } });
        }),
        goaway: async (ms) => {
          const f = await raw.waitFor((x) => x.type === FRAME.GOAWAY, ms);
          return { lastStream: f.payload.readUInt32BE(0) & 0x7fffffff, code: f.payload.readUInt32BE(4) };
        },
        close: () => socket.destroy(),
      };
      resolve(raw);
    });
    socket.once('error', reject);
  });
}

/** The error code of an RST_STREAM frame. */
export const rstCode = (f: Frame) => f.payload.readUInt32BE(0);
