// node:http2 client helpers for the HTTP/2 proxy tests: one request on a session, read whole.
import http2, { type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { readFileSync } from 'node:fs';

export interface H2Response { status: number; headers: IncomingHttpHeaders; trailers: IncomingHttpHeaders; body: Buffer }

/** Opens an HTTP/2 session to the proxy on 127.0.0.1:`port` with SNI localhost, trusting `caFile`. */
export function h2connect(port: number, caFile: string, opts: http2.SecureClientSessionOptions = {}): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(`https://localhost:${port}`, {
      host: '127.0.0.1', servername: 'localhost', ca: readFileSync(caFile), ...opts,
    });
    s.once('connect', () => { s.off('error', reject); resolve(s); });
    s.once('error', reject);
  });
}

/** Sends one request and reads the whole answer (bounded by `timeoutMs`). */
export function h2request(
  s: ClientHttp2Session, headers: OutgoingHttpHeaders, body?: Buffer | string, timeoutMs = 20_000,
): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const req = s.request({ ':method': body === undefined ? 'GET' : 'POST', ...headers }, { endStream: body === undefined });
    const chunks: Buffer[] = [];
    let head: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders = {};
    const timer = setTimeout(() => { req.close(); reject(new Error('h2 request timed out')); }, timeoutMs);
    req.on('response', (h) => { head = h; });
    req.on('trailers', (t) => { trailers = t; });
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => { clearTimeout(timer); resolve({ status: Number(head[':status']), headers: head, trailers, body: Buffer.concat(chunks) }); });
    req.on('error', (err) => { clearTimeout(timer); reject(err); });
    if (body !== undefined) req.end(body);
  });
}
