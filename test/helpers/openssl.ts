// Runs the openssl command line tool in tests (bounded in time); never throws on a non-zero exit.
import { execFile } from 'node:child_process';

export interface OpensslResult { code: number; stdout: string; stderr: string }

/** `openssl ...args`, with optional stdin; resolves with exit code and output. */
export function openssl(args: string[], input?: string | Buffer): Promise<OpensslResult> {
  return new Promise((resolve, reject) => {
    const child = execFile('openssl', args, { timeout: 30_000, encoding: 'buffer', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') return reject(new Error('openssl is not installed'));
      resolve({ code, stdout: stdout.toString('utf8'), stderr: stderr.toString('utf8') });
    });
    // openssl may exit before reading stdin (most commands take files): ignore EPIPE there.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input);
  });
}
