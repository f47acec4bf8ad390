// The upstream of bench/stream.ts, in its own process: POST /sink reads the body, counting and
// hashing it, and answers {"bytes":…,"sha256":…}; GET /source?bytes=N&framing=length|chunked
// streams the first N bytes of bench/lib/stream-data.ts with Content-Length or chunked coding.
// Prints its port (a JSON number) on stdout; exits on SIGTERM or when its parent goes away.
import { createHash } from 'node:crypto';
import http from 'node:http';
import { Readable } from 'node:stream';
import { streamBlocks } from './stream-data.js';

// A bound on what one request may ask for: the benchmark's sizes are a few GiB at most.
const MAX_SOURCE_BYTES = 16 * 2 ** 30;

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://upstream');
  if (req.method === 'POST' && url.pathname === '/sink') {
    const hash = createHash('sha256');
    let bytes = 0;
    req.on('data', (c: Buffer) => { bytes += c.length; hash.update(c); });
    req.on('end', () => {
      const body = JSON.stringify({ bytes, sha256: hash.digest('hex'), framing: req.headers['content-length'] !== undefined ? 'length' : 'chunked' });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
    });
    req.on('error', () => res.destroy());
    return;
  }
  if (req.method === 'GET' && url.pathname === '/source') {
    const bytes = Number(url.searchParams.get('bytes'));
    if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes > MAX_SOURCE_BYTES) {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('bytes must be an integer from 0 to 16 GiB\n');
      return;
    }
    const chunked = url.searchParams.get('framing') === 'chunked';
    res.writeHead(200, { 'content-type': 'application/octet-stream', ...(chunked ? {} : { 'content-length': bytes }) });
    Readable.from(streamBlocks(bytes), { objectMode: false }).pipe(res);
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain' }).end('POST /sink or GET /source?bytes=N\n');
});
// A GiB upload at a slow rate must not meet node's default 300 s request timeout here: the proxy's limits are measured, not ours.
server.requestTimeout = 0;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${(server.address() as { port: number }).port}\n`);
});
const stop = () => { server.close(() => process.exit(0)); server.closeAllConnections(); };
process.on('SIGTERM', stop);
process.on('disconnect', stop);
process.stdin.on('close', stop);
process.stdin.resume();
