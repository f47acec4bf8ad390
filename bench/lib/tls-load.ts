// Builds and runs bench/lib/tls-load.c, the C handshake load generator every TLS server is
// measured with. Needs a C compiler and the OpenSSL headers (apt-get install gcc libssl-dev).
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** What one tls-load run printed. */
export interface TlsLoadResult {
  connections: number;
  resumed: number;
  errors: number;
  seconds: number;
  perSecond: number;
  latencyMs: { p50: number; p95: number; p99: number; max: number; mean: number };
}

/** The compiled client (in a temp dir removed by `cleanup`). */
export interface TlsLoadClient {
  /** `servername`: the SNI sent (default localhost). */
  run(port: number, seconds: number, threads: number, mode: 'full' | 'resumed', servername?: string): Promise<TlsLoadResult>;
  cleanup(): void;
}

/** Compiles the client; throws a message saying what to install when that fails. */
export function buildTlsLoad(): TlsLoadClient {
  const source = join(dirname(fileURLToPath(import.meta.url)), 'tls-load.c');
  const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-bench-tlsload-'));
  const bin = join(dir, 'tls-load');
  try {
    execFileSync(process.env.CC ?? 'cc', ['-O2', '-o', bin, source, '-lssl', '-lcrypto', '-lpthread'], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`cannot build the C load generator (${(err as Error).message.split('\n')[0]}); install a C compiler and OpenSSL headers: apt-get install gcc libssl-dev`);
  }
  return {
    async run(port, seconds, threads, mode, servername = 'localhost') {
      const child = spawn(bin, ['127.0.0.1', String(port), String(seconds), String(threads), mode, servername], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
      await once(child, 'close');
      return JSON.parse(out) as TlsLoadResult;
    },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
