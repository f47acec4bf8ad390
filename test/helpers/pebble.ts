// Debian's Pebble (a test ACME CA) and pebble-challtestsrv (its DNS stub) on loopback, started by
// PID and stopped by PID. Pebble's own HTTPS certificate is made here (the package ships none):
// `ca` is what a client's directoryCa trusts. Pebble validates names at 127.0.0.1 on the given
// tlsPort/httpPort, where the proxy under test listens.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { request } from 'node:https';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A running Pebble. */
export interface Pebble {
  directory: string;
  /** PEM file trusting Pebble's HTTPS (for acme.directoryCa). */
  caFile: string;
  /** Pebble's HTTPS certificate and key (a stub in front of Pebble presents them too). */
  certFile: string;
  keyFile: string;
  /** Pebble's own HTTPS port. */
  port: number;
  /** Management port (/roots/0). */
  management: number;
  /** challtestsrv's management port (/add-a, ...). */
  challtestsrv: number;
  /** The root that issues Pebble's certificates (PEM). */
  root(): Promise<string>;
  /** What Pebble and challtestsrv printed (for failure messages). */
  output(): string;
  stop(): Promise<void>;
}

/** Free loopback TCP ports (bound then released). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, async () => {
    const s = createServer();
    s.listen(0, '127.0.0.1');
    await once(s, 'listening');
    return s;
  }));
  const ports = servers.map((s) => (s.address() as AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** GET over HTTPS trusting `ca`; resolves with status and body. */
export function httpsGet(url: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject).on('timeout', () => req.destroy(new Error(`GET ${url} timed out`))).end();
  });
}

function spawnLogged(cmd: string, args: string[], env: NodeJS.ProcessEnv, log: string[]): ChildProcess {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.setEncoding('utf8').on('data', (s: string) => log.push(s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => log.push(s));
  const guard = (): void => { if (child.exitCode === null) child.kill('SIGKILL'); };
  process.once('exit', guard);
  child.once('exit', () => process.off('exit', guard));
  return child;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

/** Starts challtestsrv and Pebble; Pebble validates tls-alpn-01 on `tlsPort` and http-01 on `httpPort`. */
export async function startPebble(opts: { tlsPort: number; httpPort: number; blocklist?: string[] }): Promise<Pebble> {
  const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-pebble-'));
  const ssl = (args: string[]): void => { execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] }); };
  ssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-subj', '/CN=pebble test HTTPS CA', '-days', '2']);
  writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n');
  ssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'key.pem', '-out', 'cert.csr', '-subj', '/CN=localhost']);
  ssl(['x509', '-req', '-in', 'cert.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'cert.pem', '-days', '2', '-extfile', 'ext.cnf']);
  const [listen, management, dns, ctsMgmt] = await freePorts(4) as [number, number, number, number];
  writeFileSync(join(dir, 'pebble.json'), JSON.stringify({
    pebble: {
      listenAddress: `127.0.0.1:${listen}`, managementListenAddress: `127.0.0.1:${management}`,
      certificate: join(dir, 'cert.pem'), privateKey: join(dir, 'key.pem'),
      httpPort: opts.httpPort, tlsPort: opts.tlsPort, ocspResponderURL: '', externalAccountBindingRequired: false,
      ...(opts.blocklist ? { domainBlocklist: opts.blocklist } : {}),
    },
  }));
  const log: string[] = [];
  // Pebble 2.4 asks for AAAA first: no IPv6 answer, so it validates at 127.0.0.1 where the proxy listens.
  const cts = spawnLogged('pebble-challtestsrv', [
    '-defaultIPv4', '127.0.0.1', '-defaultIPv6', '', '-http01', '', '-https01', '', '-tlsalpn01', '',
    '-dns01', `127.0.0.1:${dns}`, '-management', `127.0.0.1:${ctsMgmt}`,
  ], {}, log);
  // Nonce rejection (5%) and authorization reuse (50%) stay at Pebble's defaults.
  const pebble = spawnLogged('pebble', ['-config', join(dir, 'pebble.json'), '-dnsserver', `127.0.0.1:${dns}`], { PEBBLE_VA_NOSLEEP: '1' }, log);
  const caFile = join(dir, 'ca.pem');
  const ca = readFileSync(caFile, 'utf8');
  const directory = `https://127.0.0.1:${listen}/dir`;
  const stop = async (): Promise<void> => {
    await stopChild(pebble);
    await stopChild(cts);
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await httpsGet(directory, ca)).status === 200) break;
    } catch { /* not listening yet */ }
    if (pebble.exitCode !== null || cts.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`pebble did not start:\n${log.join('')}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    directory, caFile, certFile: join(dir, 'cert.pem'), keyFile: join(dir, 'key.pem'), port: listen,
    management, challtestsrv: ctsMgmt,
    root: async () => (await httpsGet(`https://127.0.0.1:${management}/roots/0`, ca)).body,
    output: () => log.join(''),
    stop,
  };
}

/** What the stub in front of Pebble does with requests. */
export type StubMode = 'pass' | 'down' | 'bad-cert';

/** An HTTPS stub in front of Pebble (see startAcmeStub). */
export interface AcmeStub {
  directory: string;
  mode: StubMode;
  /** Payloads of the newOrder requests that passed through (decoded JWS payloads). */
  orders: Array<Record<string, unknown>>;
  /** RFC 9773 certificate ids renewalInfo was asked about. */
  renewalInfoAsked: string[];
  close(): void;
}

/**
 * An HTTPS stub in front of Pebble, with Pebble's certificate: passes requests on with their Host
 * (so Pebble's URLs name the stub), hangs up on every request ('down'), or swaps a downloaded
 * certificate for `bogusPem` ('bad-cert'). With `renewalInfo`, the directory offers ARI (Pebble 2.4
 * has none) and the stub answers it: `renewalInfo(certId)` gives the suggested window.
 */
export async function startAcmeStub(pebble: Pebble, opts: {
  bogusPem?: string; renewalInfo?: (certId: string) => { start: Date; end: Date };
} = {}): Promise<AcmeStub> {
  const { createServer: createHttpsServer, request: httpsRequest } = await import('node:https');
  const ca = readFileSync(pebble.caFile);
  const stub: AcmeStub = { directory: '', mode: 'pass', orders: [], renewalInfoAsked: [], close: () => undefined };
  const server = createHttpsServer({ cert: readFileSync(pebble.certFile), key: readFileSync(pebble.keyFile) }, (req, res) => {
    if (stub.mode === 'down') { req.socket.destroy(); return; }
    const url = req.url ?? '/';
    if (opts.renewalInfo && url.startsWith('/renewal-info/')) {
      const certId = url.slice('/renewal-info/'.length);
      stub.renewalInfoAsked.push(certId);
      const w = opts.renewalInfo(certId);
      res.writeHead(200, { 'content-type': 'application/json', 'retry-after': '3600' })
        .end(JSON.stringify({ suggestedWindow: { start: w.start.toISOString(), end: w.end.toISOString() } }));
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c)).on('end', () => {
      const sent = Buffer.concat(chunks);
      if (url.startsWith('/order-plz')) {
        try {
          const jws = JSON.parse(sent.toString()) as { payload: string };
          stub.orders.push(JSON.parse(Buffer.from(jws.payload, 'base64url').toString()) as Record<string, unknown>);
        } catch { /* not ours to judge */ }
      }
      const up = httpsRequest({ host: '127.0.0.1', port: pebble.port, method: req.method, path: url, headers: req.headers, ca }, (upRes) => {
        const body: Buffer[] = [];
        upRes.on('data', (c: Buffer) => body.push(c)).on('end', () => {
          let out = Buffer.concat(body);
          if (stub.mode === 'bad-cert' && opts.bogusPem && url.startsWith('/certZ/')) out = Buffer.from(opts.bogusPem);
          if (opts.renewalInfo && url === '/dir') {
            const dir = JSON.parse(out.toString()) as Record<string, unknown>;
            out = Buffer.from(JSON.stringify({ ...dir, renewalInfo: `https://${req.headers.host}/renewal-info` }));
          }
          const headers = { ...upRes.headers, 'content-length': String(out.length) };
          delete headers['transfer-encoding'];
          res.writeHead(upRes.statusCode ?? 502, headers).end(out);
        });
      });
      up.on('error', () => res.destroy()).end(sent);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  stub.directory = `https://127.0.0.1:${(server.address() as AddressInfo).port}/dir`;
  stub.close = () => { server.closeAllConnections(); server.close(); };
  return stub;
}
