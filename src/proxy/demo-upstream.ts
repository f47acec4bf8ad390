// A small upstream for the default setup and tests: echoes its name, method, path, headers and
// body as JSON; /chunked streams a chunked body; /slow waits; /status/NNN answers NNN; /healthz; and a
// WebSocket echo on any path.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { DemoUpstreamListenError } from './errors.js';

/** A running demo upstream. */
export interface DemoUpstream { url: string; port: number; close(): Promise<void> }

const MAX_SLOW_MS = 30_000;
const MAX_BODY = 1 << 20;

function handle(name: string, req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://demo');
  if (url.pathname === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    return;
  }
  if (url.pathname === '/chunked') {
    const n = Math.min(Number(url.searchParams.get('n') ?? 5) || 5, 1000);
    res.writeHead(200, { 'content-type': 'text/plain' }); // no content-length: chunked encoding
    let i = 0;
    const step = () => {
      if (i === n) return res.end();
      res.write(`chunk ${i++}\n`);
      setImmediate(step);
    };
    step();
    return;
  }
  const status = /^\/status\/(\d{3})$/.exec(url.pathname);
  const chunks: Buffer[] = [];
  let size = 0;
  req.on('data', (c: Buffer) => {
    size += c.length;
    if (size <= MAX_BODY) chunks.push(c);
  });
  req.on('end', () => {
    const body = JSON.stringify({ upstream: name, method: req.method, path: req.url, headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), bytes: size });
    const reply = () => {
      if (res.destroyed) return;
      res.writeHead(status ? Number(status[1]) : 200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    if (url.pathname !== '/slow') return reply();
    // A client that gives up cancels the wait, so a stopped upstream holds no timers.
    const timer = setTimeout(reply, Math.min(Number(url.searchParams.get('ms') ?? 1000) || 0, MAX_SLOW_MS));
    res.once('close', () => clearTimeout(timer));
  });
}

/** Starts the demo upstream on `host:port` (port 0 picks a free one); `name` is echoed back as `upstream`. */
export async function startDemoUpstream(
  opts: { host?: string; port?: number; name?: string } = {},
): Promise<DemoUpstream> {
  const host = opts.host ?? '127.0.0.1';
  const name = opts.name ?? 'demo';
  const server = http.createServer((req, res) => handle(name, req, res));
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_BODY });
  server.on('upgrade', (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      ws.on('error', () => ws.terminate());
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new DemoUpstreamListenError(host, opts.port ?? 0, err)));
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    port,
    close: () => new Promise<void>((resolve) => {
      for (const ws of wss.clients) ws.terminate();
      wss.close();
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
