// Shared setup for interop tests: a TlsServer on loopback with RSA, P-256 and P-384
// certificates, and a bounded child-process runner (killed by PID on timeout).
import { spawn } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createServer, type TlsServer, type TlsServerOptions } from '../../src/tls/index.js';
import type { TlsSocket } from '../../src/tls/socket.js';
import { makeTestCerts, type TestCerts } from './tls-certs.js';
import { softCertifiedKey } from './soft-signer.js';

export interface InteropServer { server: TlsServer; port: number; certs: TestCerts; caFile: string; sockets: TlsSocket[]; close(): Promise<void> }

/** Starts a server; `onSecure` defaults to a banner ("hello <suite> resumed=<bool>") plus a line echo. */
export async function startInteropServer(opts: Partial<TlsServerOptions> = {}, onSecure?: (s: TlsSocket) => void): Promise<InteropServer> {
  const certs = makeTestCerts();
  const sockets: TlsSocket[] = [];
  const server = createServer({
    certificates: [
      softCertifiedKey(certs.ec.chain, certs.ec.key, { latencyMs: 1 }),
      softCertifiedKey(certs.ec384.chain, certs.ec384.key),
      softCertifiedKey(certs.rsa.chain, certs.rsa.key),
    ],
    alpnProtocols: ['http/1.1'], handshakeTimeoutMs: 5000, ...opts,
  }, (s) => {
    sockets.push(s);
    if (onSecure) return onSecure(s);
    s.on('data', (d: Buffer) => s.write(`echo ${d.toString()}`));
    s.on('end', () => s.end());
    s.on('error', () => undefined);
    s.write(`hello ${s.getCipher()?.name} resumed=${s.isSessionReused()}\n`);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    server, port, certs, caFile: join(certs.dir, 'all-ca.crt'), sockets,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      certs.cleanup();
    },
  };
}

export interface RunResult { code: number | null; stdout: string; stderr: string }

/**
 * Runs a client. Once its output matches `waitFor` (at once if not given), the `steps`
 * ([delayMs, text]) are written to stdin in order, then stdin closes. Killed by PID on timeout.
 */
export function runClient(cmd: string, args: string[], opts: { waitFor?: RegExp; steps?: Array<[number, string]>; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timers: NodeJS.Timeout[] = [];
    let started = false;
    const startSteps = (): void => {
      if (started) return;
      started = true;
      let at = 0;
      for (const [delay, text] of opts.steps ?? []) {
        at += delay;
        timers.push(setTimeout(() => child.stdin.write(text), at));
      }
      timers.push(setTimeout(() => child.stdin.end(), at + 50));
    };
    const check = (): void => { if (!opts.waitFor || opts.waitFor.test(stdout + stderr)) startSteps(); };
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; check(); });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; check(); });
    child.stdin.on('error', () => undefined);
    const kill = setTimeout(() => { if (child.pid) process.kill(child.pid, 'SIGKILL'); }, opts.timeoutMs ?? 10_000);
    check();
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(kill);
      timers.forEach(clearTimeout);
      resolve({ code, stdout, stderr });
    });
  });
}
