// The plain-HTTP listener of `acme.httpPort`: answers http-01 validations at
// /.well-known/acme-challenge/TOKEN (RFC 8555 §8.3) and, with `redirect`, sends every other
// request to HTTPS with 308 (method and body kept, as Caddy does); otherwise 404.
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { PendingChallenges } from './challenges.js';

/** How the http-01 listener is opened. */
export interface HttpChallengeOptions {
  address: string;
  port: number;
  challenges: PendingChallenges;
  redirect: boolean;
  /** The HTTPS port redirects point at (omitted from the URL when 443). */
  httpsPort: number;
}

const PREFIX = '/.well-known/acme-challenge/';
// RFC 8555 §8.1: a token is base64url; anything else cannot be one of ours.
const TOKEN = /^[A-Za-z0-9_-]{1,256}$/;
const HOST = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253})(:\d{1,5})?$/;

/** The running http-01 listener. */
export interface HttpChallengeServer { server: Server; address(): AddressInfo; close(): Promise<void> }

/** Opens the http-01 listener; resolves once it listens. */
export async function startHttpChallengeServer(opts: HttpChallengeOptions): Promise<HttpChallengeServer> {
  const server = createServer({ maxHeaderSize: 8192 }, (req, res) => {
    const url = req.url ?? '/';
    const path = url.split('?')[0]!;
    if (path.startsWith(PREFIX)) {
      const token = path.slice(PREFIX.length);
      const answer = TOKEN.test(token) ? opts.challenges.httpKeyAuthorization(token) : undefined;
      if (answer !== undefined && (req.method === 'GET' || req.method === 'HEAD')) {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': Buffer.byteLength(answer) });
        res.end(req.method === 'HEAD' ? undefined : answer);
        return;
      }
      res.writeHead(404, { 'content-type': 'text/plain' }).end('no such ACME challenge\n');
      return;
    }
    const host = req.headers.host;
    if (opts.redirect && host && HOST.test(host) && url.startsWith('/')) {
      const name = host.replace(/:\d+$/, '');
      const port = opts.httpsPort === 443 ? '' : `:${opts.httpsPort}`;
      res.writeHead(308, { location: `https://${name}${port}${url}`, 'content-length': 0 }).end();
      return;
    }
    res.writeHead(opts.redirect ? 400 : 404, { 'content-type': 'text/plain' })
      .end(opts.redirect ? 'a Host header is required\n' : 'not found: this port answers ACME http-01 challenges only\n');
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  server.listen(opts.port, opts.address);
  await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => { throw err as Error; })]);
  return {
    server,
    address: () => server.address() as AddressInfo,
    close: () => new Promise<void>((resolve) => { server.close(() => resolve()); server.closeAllConnections(); }),
  };
}
