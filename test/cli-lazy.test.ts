// `hsmproxy --help` answers fast: the top-level command list comes from main.ts's table of
// command modules, and a module (with pino, undici, prom-client, @peculiar/x509 behind it) is
// loaded only when its command runs. The table must say what the modules themselves register.
import t, { type Test } from 'tap';
import type { Command } from 'commander';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { COMMAND_MODULES, buildProgram, requestedCommand } from '../src/cli/main.js';
import { cliEntry, repoRoot } from './helpers/cli.js';
import { HEAVY_PACKAGES, heavyIn, importRecorder, recordedImports } from './helpers/import-recorder.js';

/** The URLs `hsmproxy ...args` (from source) resolves before it exits. */
async function importsOf(t: Test, args: string[]): Promise<{ urls: string[]; stdout: string; code: number | null }> {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-imports-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'imports.txt');
  const env: NodeJS.ProcessEnv = { ...process.env, HSMPROXY_TEST_IMPORTS: file };
  delete env.NODE_OPTIONS;
  const child = spawn(process.execPath, [`--import=${importRecorder}`, '--import=tsx', cliEntry, ...args], { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
  const code = await new Promise<number | null>((r) => child.on('close', r));
  const urls = await recordedImports(file);
  return { urls, stdout, code };
}

t.test('hsmproxy --help lists every command but loads no command module nor heavy dependency', async (t) => {
  const r = await importsOf(t, ['--help']);
  t.equal(r.code, 0);
  t.ok(r.urls.some((u) => u.endsWith('/src/cli/main.ts')), 'the recorder saw the CLI load (the test can see imports)');
  t.same(r.urls.filter((u) => u.includes('/src/cli/commands/')), [], 'no command module');
  t.same(heavyIn(r.urls), [], 'none of ' + HEAVY_PACKAGES.join(', '));
  for (const name of new Set(COMMAND_MODULES.flatMap((m) => Object.keys(m.commands)))) t.match(r.stdout, new RegExp(`^  ${name} `, 'm'), `lists ${name}`);
});

t.test('a command loads its own modules only', async (t) => {
  const r = await importsOf(t, ['config', 'check', 'config/hsmproxy.yaml', '--no-files']);
  t.equal(r.code, 0);
  t.match(r.stdout, /valid/);
  t.same(r.urls.filter((u) => u.includes('/src/cli/commands/')).map((u) => u.replace(/.*\/commands\//, '')), ['config.ts']);
});

t.test('the table of command modules names and describes what the modules register, in order', async (t) => {
  const full = await buildProgram();
  const registered = full.commands.map((c) => [c.name(), c.description()]);
  const listed = (await buildProgram(['--help'])).commands.map((c) => [c.name(), c.description()]);
  t.same(listed, registered);
  for (const m of COMMAND_MODULES) {
    const names = Object.keys(m.commands);
    const alone = await buildProgram([names[0]!]);
    for (const name of names) {
      const sub = (p: Command) => p.commands.find((c) => c.name() === name)!.commands.map((c) => c.name());
      t.same(sub(alone), sub(full), `${name}: every subcommand is there when ${name} is asked for`);
    }
  }
});

t.test('the requested command is the first word that is not an option, or the one help asks about', async (t) => {
  t.equal(requestedCommand(['--help']), undefined);
  t.equal(requestedCommand(['key', 'list', '--json']), 'key');
  t.equal(requestedCommand(['help', 'cluster']), 'cluster');
  t.equal(requestedCommand(['-h', 'serve']), 'serve');
});
