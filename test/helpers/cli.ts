// Runs the hsmproxy CLI from source in a child process, as a user would run it.
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
export const cliEntry = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
/** tsx's loader by path: node resolves a bare `--import=tsx` from the working directory, which may be outside the clone. */
export const tsxLoader = createRequire(import.meta.url).resolve('tsx');

export interface CliResult { code: number | null; stdout: string; stderr: string }

/** Spawns `hsmproxy ...args` (through tsx) and collects its output; bounded by `timeoutMs`. */
export function runCli(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; cwd?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [`--import=${tsxLoader}`, cliEntry, ...args], {
      cwd: opts.cwd ?? repoRoot,
      env: { ...process.env, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
    child.stdin.end(opts.input ?? '');
  });
}

/** A CLI failure as users should see it: non-zero exit, nothing on stdout, one stderr line matching `pattern`, no stack trace. */
export function oneLineError(t: Test, r: CliResult, pattern: RegExp): void {
  t.not(r.code, 0, 'non-zero exit');
  t.equal(r.stdout, '', 'nothing on stdout');
  t.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  t.match(r.stderr, pattern);
}

/**
 * Spawns `cluster start` (`command` `args`) and waits up to 60 s for "cluster running" (or an
 * early exit); the child is SIGKILLed at the end of the test if still running.
 */
export async function startClusterCommand(
  t: Test, command: string, args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv },
): Promise<{ child: ChildProcess; output(): string }> {
  const child = spawn(command, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  const deadline = Date.now() + 60_000;
  while (!/cluster running/.test(out) && child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  return { child, output: () => out };
}
