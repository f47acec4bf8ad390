// HTTP/1.1 request heads and bodies, parsed strictly (RFC 9112). The proxy owns framing end to
// end: a request is refused (and its connection closed) whenever two parties could disagree on
// where it ends — Content-Length with Transfer-Encoding, duplicate or malformed lengths, any
// coding but a lone `chunked`, obs-fold, bare CR or LF, control characters — because each such
// disagreement is a request-smuggling vector between us and the upstream.

/** A parse failure: the status the client gets (400, 414, 431, 501, 505) and why (for the log). */
export class HttpParseError extends Error {
  readonly code = 'PROXY_ERR_BAD_REQUEST';
  constructor(readonly status: number, message: string) {
    super(message);
    this.name = 'HttpParseError';
  }
}

/** One parsed request head. Header names are lower case; values are latin1 with OWS trimmed. */
export interface RequestHead {
  method: string;
  /** The request-target exactly as sent. */
  target: string;
  /** 1 for HTTP/1.1, 0 for HTTP/1.0. */
  minor: 0 | 1;
  headers: Array<[string, string]>;
  /** How the body is framed: none, a length, or chunked. */
  body: { kind: 'none' } | { kind: 'length'; length: number } | { kind: 'chunked' };
  /** Bytes of the head (request line through the empty line). */
  size: number;
}

/** Size limits of a request head. */
export interface HeadLimits {
  /** Request line plus headers, bytes (431 past it). */
  maxHeadBytes: number;
  /** Header lines (431 past it). */
  maxHeaders: number;
}

export const DEFAULT_HEAD_LIMITS: HeadLimits = { maxHeadBytes: 16 * 1024, maxHeaders: 100 };

const CR = 0x0d;
const LF = 0x0a;
// tchar (RFC 9110 §5.6.2): the only bytes allowed in a method or a field name.
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TCHAR[c] = 1;
// field-value bytes (RFC 9110 §5.5): VCHAR, SP, HTAB, obs-text; never NUL, CR, LF or other controls.
const FIELD = new Uint8Array(256);
for (let c = 0x20; c <= 0xff; c++) FIELD[c] = c === 0x7f ? 0 : 1;
FIELD[0x09] = 1;

/**
 * Finds the end of a request head in `buf` (the index just past the empty line), or -1 while
 * incomplete. Throws on a bare LF or a head over the limit, so a client cannot park an
 * unterminated or LF-only head in our buffer until the timeout.
 */
export function headEnd(buf: Buffer, limits: HeadLimits): number {
  let from = 0;
  for (;;) {
    const lf = buf.indexOf(LF, from);
    if (lf < 0) break;
    if (lf === 0 || buf[lf - 1] !== CR) throw new HttpParseError(400, 'bare LF in the request head');
    if (lf >= 3 && buf[lf - 2] === LF && buf[lf - 3] === CR) {
      if (lf + 1 > limits.maxHeadBytes) throw new HttpParseError(431, `request head over ${limits.maxHeadBytes} bytes`);
      return lf + 1;
    }
    from = lf + 1;
  }
  if (buf.length > limits.maxHeadBytes) {
    // A request line alone past the limit is a long URI (414); otherwise the headers are too big.
    throw new HttpParseError(buf.indexOf(LF) < 0 ? 414 : 431, `request head over ${limits.maxHeadBytes} bytes`);
  }
  return -1;
}

/** Parses the head `buf[0, end)` (as found by headEnd). */
export function parseHead(buf: Buffer, end: number, limits: HeadLimits): RequestHead {
  let pos = 0;
  const line = (): number => {
    const lf = buf.indexOf(LF, pos);
    // headEnd guarantees every line ends in CRLF before `end`.
    return lf - 1;
  };
  // Request line: method SP request-target SP HTTP-version.
  let eol = line();
  const sp1 = buf.indexOf(0x20, pos);
  if (sp1 <= pos || sp1 > eol) throw new HttpParseError(400, 'malformed request line');
  for (let i = pos; i < sp1; i++) if (!TCHAR[buf[i]!]) throw new HttpParseError(400, 'malformed method');
  const sp2 = buf.indexOf(0x20, sp1 + 1);
  if (sp2 <= sp1 + 1 || sp2 > eol) throw new HttpParseError(400, 'malformed request line');
  for (let i = sp1 + 1; i < sp2; i++) {
    const c = buf[i]!;
    if (c <= 0x20 || c >= 0x7f) throw new HttpParseError(400, 'invalid byte in the request target');
  }
  const version = buf.toString('latin1', sp2 + 1, eol);
  let minor: 0 | 1;
  if (version === 'HTTP/1.1') minor = 1;
  else if (version === 'HTTP/1.0') minor = 0;
  else if (/^HTTP\/\d\.\d$/.test(version)) throw new HttpParseError(505, `unsupported version ${version}`);
  else throw new HttpParseError(400, 'malformed request line');
  const method = buf.toString('latin1', pos, sp1);
  const target = buf.toString('latin1', sp1 + 1, sp2);
  pos = eol + 2;

  const headers: Array<[string, string]> = [];
  let contentLength: string | undefined;
  let transferEncoding: string | undefined;
  while (pos < end - 2) {
    eol = line();
    const first = buf[pos]!;
    if (first === 0x20 || first === 0x09) throw new HttpParseError(400, 'obsolete line folding in the request head');
    const colon = buf.indexOf(0x3a, pos);
    if (colon <= pos || colon > eol) throw new HttpParseError(400, 'header line without a name and colon');
    for (let i = pos; i < colon; i++) if (!TCHAR[buf[i]!]) throw new HttpParseError(400, 'invalid byte in a header name');
    let vs = colon + 1;
    let ve = eol;
    while (vs < ve && (buf[vs] === 0x20 || buf[vs] === 0x09)) vs++;
    while (ve > vs && (buf[ve - 1] === 0x20 || buf[ve - 1] === 0x09)) ve--;
    for (let i = vs; i < ve; i++) if (!FIELD[buf[i]!]) throw new HttpParseError(400, 'control character in a header value');
    if (headers.length >= limits.maxHeaders) throw new HttpParseError(431, `more than ${limits.maxHeaders} header lines`);
    const name = buf.toString('latin1', pos, colon).toLowerCase();
    const value = buf.toString('latin1', vs, ve);
    if (name === 'content-length') {
      if (contentLength !== undefined) throw new HttpParseError(400, 'more than one Content-Length');
      contentLength = value;
    } else if (name === 'transfer-encoding') {
      if (transferEncoding !== undefined) throw new HttpParseError(400, 'more than one Transfer-Encoding');
      transferEncoding = value;
    }
    headers.push([name, value]);
    pos = eol + 2;
  }
  return { method, target, minor, headers, body: framing(contentLength, transferEncoding, minor), size: end };
}

function framing(cl: string | undefined, te: string | undefined, minor: 0 | 1): RequestHead['body'] {
  if (te !== undefined) {
    if (cl !== undefined) throw new HttpParseError(400, 'both Content-Length and Transfer-Encoding');
    // RFC 9112 §6.1: HTTP/1.0 has no chunked coding; a 1.0 request with it is not trusted.
    if (minor === 0) throw new HttpParseError(400, 'Transfer-Encoding in an HTTP/1.0 request');
    if (te.toLowerCase() !== 'chunked') throw new HttpParseError(400, `Transfer-Encoding "${te}" (only a lone chunked is accepted)`);
    return { kind: 'chunked' };
  }
  if (cl === undefined) return { kind: 'none' };
  if (!/^\d{1,15}$/.test(cl)) throw new HttpParseError(400, 'malformed Content-Length');
  const length = Number(cl);
  return length === 0 ? { kind: 'none' } : { kind: 'length', length };
}

/** The values of header `name` (lower case) in order. */
export function headerValues(headers: ReadonlyArray<[string, string]>, name: string): string[] {
  const out: string[] = [];
  for (const [n, v] of headers) if (n === name) out.push(v);
  return out;
}

/** Comma-separated tokens of every `name` header, lower case (Connection, Upgrade…). */
export function headerTokens(headers: ReadonlyArray<[string, string]>, name: string): string[] {
  const out: string[] = [];
  for (const [n, v] of headers) {
    if (n !== name) continue;
    for (const t of v.split(',')) {
      const s = t.trim().toLowerCase();
      if (s) out.push(s);
    }
  }
  return out;
}

/**
 * Decodes a request body framed by Content-Length or chunked coding, incrementally. `feed`
 * returns the payload bytes found and how many input bytes it consumed; input past the body's
 * end is left for the next request (pipelining). Chunk extensions are skipped, trailers dropped
 * (nothing upstream of us can be told about them without re-framing).
 */
export class BodyDecoder {
  private remaining: number;
  private readonly chunked: boolean;
  private state: 'data' | 'size' | 'data-crlf' | 'trailer' | 'done';
  private line = '';
  private trailerBytes = 0;

  constructor(framing: Exclude<RequestHead['body'], { kind: 'none' }>, private readonly maxLineBytes = 4096) {
    this.chunked = framing.kind === 'chunked';
    this.remaining = framing.kind === 'length' ? framing.length : 0;
    this.state = this.chunked ? 'size' : 'data';
  }

  get done(): boolean { return this.state === 'done'; }

  /** Consumes from `buf`; throws HttpParseError on bad chunked framing. */
  feed(buf: Buffer): { payload: Buffer[]; consumed: number } {
    const payload: Buffer[] = [];
    let pos = 0;
    while (pos < buf.length && this.state !== 'done') {
      if (this.state === 'data') {
        const n = Math.min(this.remaining, buf.length - pos);
        if (n > 0) payload.push(buf.subarray(pos, pos + n));
        pos += n;
        this.remaining -= n;
        if (this.remaining === 0) this.state = this.chunked ? 'data-crlf' : 'done';
        continue;
      }
      // Line-oriented states: collect one CRLF-terminated line (bounded).
      const lf = buf.indexOf(LF, pos);
      const stop = lf < 0 ? buf.length : lf + 1;
      this.line += buf.toString('latin1', pos, stop);
      this.trailerBytes += stop - pos;
      pos = stop;
      if (this.line.length > this.maxLineBytes || this.trailerBytes > 16 * this.maxLineBytes) throw new HttpParseError(400, 'chunk framing line too long');
      if (lf < 0) break;
      if (this.line.length < 2 || this.line.charCodeAt(this.line.length - 2) !== CR) throw new HttpParseError(400, 'bare LF in chunked framing');
      const text = this.line.slice(0, -2);
      this.line = '';
      this.step(text);
    }
    return { payload, consumed: pos };
  }

  private step(text: string): void {
    if (this.state === 'data-crlf') {
      if (text !== '') throw new HttpParseError(400, 'chunk data longer than its size');
      this.state = 'size';
      return;
    }
    if (this.state === 'size') {
      // chunk-size [ chunk-ext ]; extensions are ignored but must hold no control characters.
      const m = /^([0-9a-fA-F]{1,12})(?:[ \t]*;[\t\x20-\x7e\x80-\xff]*)?$/.exec(text);
      if (!m) throw new HttpParseError(400, 'malformed chunk size');
      this.remaining = parseInt(m[1]!, 16);
      this.trailerBytes = 0;
      this.state = this.remaining === 0 ? 'trailer' : 'data';
      return;
    }
    // Trailer section: field lines until the empty line.
    if (text === '') this.state = 'done';
    else if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*$/.test(text)) throw new HttpParseError(400, 'malformed trailer');
  }
}
