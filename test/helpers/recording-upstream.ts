// A raw-socket HTTP/1.1 upstream for smuggling tests: it keeps every byte each connection sent and
// parses requests itself, strictly and one after another (head, then a body framed by
// Content-Length or chunked Transfer-Encoding, none otherwise), so a test can say exactly which
// requests reached it. node:http would normalise or reject the very framing a test checks for.
// Anything it cannot parse becomes a parse error (and the connection is closed), never a guess.
import net from 'node:net';

/** One request as the upstream parsed it off the wire. */
export interface RecordedRequest {
  method: string;
  target: string;
  version: string;
  /** Lower-cased name → values in the order received. */
  headers: Map<string, string[]>;
  /** The payload: the Content-Length bytes, or the chunks' data joined (decoded). */
  body: Buffer;
  /** How the body was framed on the upstream connection. */
  framing: 'content-length' | 'chunked' | 'none';
  /** Which accepted connection carried it (0, 1, … in accept order; never reset). */
  connectionIndex: number;
}

/** Something the upstream could not parse; the connection it came on is closed. */
export interface ParseError { connectionIndex: number; message: string }

export interface RecordingUpstreamOptions {
  /** Answer each request this many ms after it is complete (to count concurrent requests). */
  delayMs?: number;
}

export interface RecordingUpstream {
  /** http://127.0.0.1:<port> */
  url: string;
  port: number;
  /** Requests received since the last reset, in the order they completed. */
  readonly requests: RecordedRequest[];
  readonly parseErrors: ParseError[];
  /** Raw bytes received per connection index since the last reset. */
  readonly raw: Map<number, Buffer>;
  /** Total bytes received since the last reset, on every connection. */
  readonly bytesReceived: number;
  /** Connections accepted so far (not reset). */
  readonly connectionCount: number;
  /** Requests whose head has arrived and whose answer is not written yet. */
  readonly inFlight: number;
  /** The most requests in flight at once since the last reset. */
  readonly peakInFlight: number;
  /** Forgets the records (requests, bytes, errors, peak); open connections stay open. */
  reset(): void;
  close(): Promise<void>;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) (HTTP\/1\.[01])$/;
const MAX_HEAD = 1 << 20;
const MAX_BODY = 16 << 20;
const ANSWER = 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n';

class ParseFailure extends Error {}

/** Bytes of a header value that no HTTP/1.1 message may carry (CR, LF, NUL, other controls but tab, DEL). */
function badValueByte(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) return true;
  }
  return false;
}

/** Splits a head at CRLF; a bare LF or bare CR is an error (the strictness is the point). */
function crlfLines(head: Buffer): string[] {
  const text = head.toString('latin1');
  const lines = text.split('\r\n');
  for (const l of lines) if (l.includes('\n') || l.includes('\r')) throw new ParseFailure('bare CR or LF in the head');
  return lines;
}

interface Conn {
  index: number;
  socket: net.Socket;
  buf: Buffer;
  /** The parsed head of the request whose body is being read. */
  pending: Omit<RecordedRequest, 'body'> & { length?: number; chunks?: Buffer[] } | undefined;
  /** Answers are written in request order, each after the one before. */
  answers: Promise<void>;
  failed: boolean;
}

/** Starts a recording upstream on 127.0.0.1 (ephemeral port). */
export async function startRecordingUpstream(opts: RecordingUpstreamOptions = {}): Promise<RecordingUpstream> {
  const delayMs = opts.delayMs ?? 0;
  let requests: RecordedRequest[] = [];
  let parseErrors: ParseError[] = [];
  let raw = new Map<number, Buffer>();
  let bytesReceived = 0;
  let connectionCount = 0;
  let inFlight = 0;
  let peakInFlight = 0;
  const sockets = new Set<net.Socket>();

  const fail = (c: Conn, message: string) => {
    c.failed = true;
    parseErrors.push({ connectionIndex: c.index, message });
    c.socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
  };

  /** Reads the next request head off `c.buf`; false when more bytes are needed. */
  const readHead = (c: Conn): boolean => {
    const end = c.buf.indexOf('\r\n\r\n');
    if (end < 0) {
      if (c.buf.length > MAX_HEAD) throw new ParseFailure(`no end of head within ${MAX_HEAD} bytes`);
      // A bare LF that ends a line can never become valid: report it now rather than wait forever.
      if (/(^|[^\r])\n/.test(c.buf.toString('latin1'))) throw new ParseFailure('bare LF in the head');
      return false;
    }
    const lines = crlfLines(c.buf.subarray(0, end));
    c.buf = c.buf.subarray(end + 4);
    const m = REQUEST_LINE.exec(lines[0]!);
    if (!m) throw new ParseFailure(`bad request line ${JSON.stringify(lines[0])}`);
    const headers = new Map<string, string[]>();
    for (const line of lines.slice(1)) {
      if (line.startsWith(' ') || line.startsWith('\t')) throw new ParseFailure(`obs-fold line ${JSON.stringify(line)}`);
      const colon = line.indexOf(':');
      const name = colon > 0 ? line.slice(0, colon) : '';
      if (!TOKEN.test(name)) throw new ParseFailure(`bad header name in ${JSON.stringify(line)}`);
      const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
      if (badValueByte(value)) throw new ParseFailure(`control byte in header ${name}`);
      const key = name.toLowerCase();
      headers.set(key, [...(headers.get(key) ?? []), value]);
    }
    const te = headers.get('transfer-encoding');
    const cl = headers.get('content-length');
    if (te && cl) throw new ParseFailure('both Transfer-Encoding and Content-Length');
    const base = { method: m[1]!, target: m[2]!, version: m[3]!, headers, connectionIndex: c.index };
    if (te) {
      if (te.length !== 1 || te[0]!.toLowerCase() !== 'chunked') throw new ParseFailure(`Transfer-Encoding other than one "chunked": ${JSON.stringify(te)}`);
      c.pending = { ...base, framing: 'chunked', chunks: [] };
    } else if (cl) {
      if (cl.length !== 1 || !/^\d{1,9}$/.test(cl[0]!)) throw new ParseFailure(`bad Content-Length ${JSON.stringify(cl)}`);
      const length = Number(cl[0]);
      if (length > MAX_BODY) throw new ParseFailure(`Content-Length ${length} too large`);
      c.pending = { ...base, framing: 'content-length', length };
    } else {
      c.pending = { ...base, framing: 'none', length: 0 };
    }
    inFlight++;
    peakInFlight = Math.max(peakInFlight, inFlight);
    return true;
  };

  /** Reads (part of) the pending body; the finished request or undefined when more bytes are needed. */
  const readBody = (c: Conn): RecordedRequest | undefined => {
    const p = c.pending!;
    const { length, chunks, ...fields } = p;
    if (length !== undefined) {
      if (c.buf.length < length) return undefined;
      const body = Buffer.from(c.buf.subarray(0, length));
      c.buf = c.buf.subarray(length);
      return { ...fields, body };
    }
    // Chunked: size line, data, CRLF … a zero size, then trailers up to an empty line.
    for (let guard = 0; guard < 100_000; guard++) {
      const eol = c.buf.indexOf('\r\n');
      if (eol < 0) {
        if (c.buf.length > 1024) throw new ParseFailure('chunk size line too long');
        return undefined;
      }
      const sizeLine = c.buf.subarray(0, eol).toString('latin1');
      const sm = /^([0-9a-fA-F]{1,8})(;[^\r\n]*)?$/.exec(sizeLine);
      if (!sm) throw new ParseFailure(`bad chunk size line ${JSON.stringify(sizeLine)}`);
      const size = parseInt(sm[1]!, 16);
      if (size === 0) {
        // The last chunk: optional trailer lines, then an empty line (found at `eol` when there are none).
        const end = c.buf.indexOf('\r\n\r\n', eol);
        if (end < 0) return undefined;
        if (end > eol) crlfLines(c.buf.subarray(eol + 2, end));
        c.buf = c.buf.subarray(end + 4);
        return { ...fields, body: Buffer.concat(chunks!) };
      }
      if (c.buf.length < eol + 2 + size + 2) return undefined;
      if (c.buf[eol + 2 + size] !== 0x0d || c.buf[eol + 3 + size] !== 0x0a) throw new ParseFailure('chunk data not followed by CRLF');
      chunks!.push(Buffer.from(c.buf.subarray(eol + 2, eol + 2 + size)));
      if (chunks!.reduce((n, b) => n + b.length, 0) > MAX_BODY) throw new ParseFailure('chunked body too large');
      c.buf = c.buf.subarray(eol + 4 + size);
    }
    throw new ParseFailure('too many chunks');
  };

  const answer = (c: Conn, req: RecordedRequest) => {
    const close = (req.headers.get('connection') ?? []).some((v) => /(^|,)\s*close\s*(,|$)/i.test(v)) || req.version === 'HTTP/1.0';
    const reply = () => {
      inFlight--;
      if (c.socket.destroyed) return;
      // A HEAD answer has the GET answer's headers and no body.
      const text = `${ANSWER.slice(0, -2)}${close ? 'connection: close\r\n' : ''}\r\n${req.method === 'HEAD' ? '' : 'ok'}`;
      if (close) c.socket.end(text);
      else c.socket.write(text);
    };
    c.answers = c.answers.then(() => new Promise<void>((resolve) => {
      if (delayMs === 0) {
        reply();
        resolve();
      } else setTimeout(() => { reply(); resolve(); }, delayMs);
    }));
  };

  const onData = (c: Conn, data: Buffer) => {
    bytesReceived += data.length;
    raw.set(c.index, Buffer.concat([raw.get(c.index) ?? Buffer.alloc(0), data]));
    if (c.failed) return;
    c.buf = Buffer.concat([c.buf, data]);
    try {
      // Bounded: each turn consumes a head or a body from the buffer, or stops for more bytes.
      for (let guard = 0; guard < 100_000; guard++) {
        if (!c.pending) {
          if (c.buf.length === 0 || !readHead(c)) return;
        }
        const req = readBody(c);
        if (!req) return;
        c.pending = undefined;
        requests.push(req);
        answer(c, req);
      }
    } catch (err) {
      if (!(err instanceof ParseFailure)) throw err;
      fail(c, err.message);
    }
  };

  const server = net.createServer((socket) => {
    const c: Conn = { index: connectionCount++, socket, buf: Buffer.alloc(0), pending: undefined, answers: Promise.resolve(), failed: false };
    sockets.add(socket);
    socket.on('data', (d: Buffer) => onData(c, d));
    socket.on('error', () => undefined); // a proxy resetting its connection is not the test's failure
    socket.on('close', () => {
      sockets.delete(socket);
      // A request cut off mid-body is never answered: it no longer counts as in flight.
      if (c.pending) inFlight--;
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as net.AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    get requests() { return requests; },
    get parseErrors() { return parseErrors; },
    get raw() { return raw; },
    get bytesReceived() { return bytesReceived; },
    get connectionCount() { return connectionCount; },
    get inFlight() { return inFlight; },
    get peakInFlight() { return peakInFlight; },
    reset() {
      requests = [];
      parseErrors = [];
      raw = new Map();
      bytesReceived = 0;
      peakInFlight = inFlight;
    },
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}
