// NSS's tstclnt (Debian libnss3-tools): the delegated-credential client nobody here wrote. An NSS
// database made with certutil trusts the CA a test names; tstclnt runs bounded and is killed by PID.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runClient, type RunResult } from './tls-interop.js';

/** A tap `skip` reason when tstclnt or certutil is missing (never under CI, which installs them). */
export function skipWithoutNss(): string | false {
  const ok = ['tstclnt', 'certutil'].every((b) => spawnSync('sh', ['-c', `command -v ${b}`], { stdio: 'ignore' }).status === 0);
  if (ok || process.env.CI) return false;
  return 'NSS tools are not installed (apt-get install libnss3-tools)';
}

/** An NSS database in a temp dir that trusts `caFile` (PEM) for TLS servers. */
export interface NssDb { dir: string; cleanup(): void }

export function makeNssDb(caFile: string): NssDb {
  const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-nss-'));
  execFileSync('certutil', ['-N', '-d', `sql:${dir}`, '--empty-password'], { stdio: 'ignore' });
  execFileSync('certutil', ['-A', '-d', `sql:${dir}`, '-n', 'hsmproxy-test-ca', '-t', 'C,,', '-i', caFile], { stdio: 'ignore' });
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** One tstclnt run: the outcome and whether NSS reported a delegated credential. */
export interface TstclntResult extends RunResult { ok: boolean; delegated: boolean }

/**
 * Connects with TLS 1.3 only, sends `request` (HTTP/1.0 by default, so the server closes) and
 * reads until close. `delegated`: offer the delegated_credential extension (-B).
 */
export async function tstclnt(db: NssDb, port: number, opts: { delegated: boolean; request?: string; timeoutMs?: number }): Promise<TstclntResult> {
  const req = join(db.dir, `req-${process.pid}-${Math.random().toString(36).slice(2)}`);
  writeFileSync(req, opts.request ?? 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n');
  const args = ['-h', '127.0.0.1', '-p', String(port), '-d', `sql:${db.dir}`, '-V', 'tls1.3:tls1.3', '-a', 'localhost', '-A', req];
  if (opts.delegated) args.push('-B');
  try {
    const r = await runClient('tstclnt', args, { timeoutMs: opts.timeoutMs ?? 20_000 });
    const all = `${r.stdout}\n${r.stderr}`;
    return { ...r, ok: r.code === 0 && /HTTP\/1\.[01] 200/.test(all), delegated: /Received a Delegated Credential/.test(all) };
  } finally {
    rmSync(req, { force: true });
  }
}
