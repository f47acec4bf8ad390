// `npm link` (or `npm install -g .`) from the clone makes `hsmproxy` a command: `prepare` builds
// dist/, the bin is the built launcher, and it runs from any directory with paths taken from
// there, without tsx (a dependency of the tests only) in it or in the processes it starts.
import t from 'tap';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { repoRoot, startClusterCommand } from './helpers/cli.js';
import { freePort } from './helpers/hsm-cluster.js';
import { heavyIn, importRecorder, recordedImports } from './helpers/import-recorder.js';

const run = promisify(execFile);
const pkg = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')) as { bin: Record<string, string>; scripts: Record<string, string> };

t.test('prepare builds the bin, so a link or a global install from the clone has it', async (t) => {
  t.match(pkg.scripts.prepare, /^npm run build$/, 'prepare runs the build');
  t.equal(pkg.bin.hsmproxy, 'dist/src/cli/entry.cjs');
  const build = JSON.parse(await readFile(join(repoRoot, 'tsconfig.build.json'), 'utf8')) as { include: string[] };
  t.ok(build.include.includes('src/cli/entry.cjs'), 'the build copies the launcher to dist/');
});

t.test('the linked command runs from another directory, from dist/ only', async (t) => {
  const tmp = await mkdtemp(join(tmpdir(), 'hsmproxy-installed-'));
  t.teardown(() => rm(tmp, { recursive: true, force: true }));
  // What prepare does (incremental: quick when dist/ is current), then the link into a private prefix.
  await run('npm', ['run', 'build', '--silent'], { cwd: repoRoot, timeout: 150_000 });
  const prefix = join(tmp, 'prefix');
  await run('npm', ['link', '--ignore-scripts', '--offline', '--no-audit', '--no-fund'], { cwd: repoRoot, env: { ...process.env, NPM_CONFIG_PREFIX: prefix }, timeout: 60_000 });
  const bin = join(prefix, 'bin', 'hsmproxy');
  t.ok(existsSync(bin), 'npm link made the command');
  const work = join(tmp, 'work');
  await mkdir(work);
  const imports = join(tmp, 'imports.txt');
  // NODE_OPTIONS reaches the processes the command starts too; none of the test runner's loaders.
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_OPTIONS: `--import=${importRecorder}`, HSMPROXY_TEST_IMPORTS: imports };
  delete env.HSMPROXY_DIR;
  const hsmproxy = (args: string[]) => run(bin, args, { cwd: work, env, timeout: 60_000 });

  const help = await hsmproxy(['--help']);
  t.match(help.stdout, /^ {2}cluster /m, 'hsmproxy --help lists the commands');
  const helpImports = await recordedImports(imports);
  t.ok(helpImports.some((u) => u.endsWith('/dist/src/cli/main.js')), 'the built CLI ran');
  t.same(helpImports.filter((u) => u.includes('/cli/commands/')), [], '--help loads no command module');
  t.same(heavyIn(helpImports), [], '--help loads no heavy dependency');

  const init = JSON.parse((await hsmproxy(['cluster', 'init', '--dir', 'rel', '--hsms', '1', '--base-port', String(await freePort()), '--json'])).stdout) as { dir: string };
  t.equal(init.dir, join(work, 'rel'), '--dir is relative to the caller');
  t.ok(existsSync(join(work, 'rel', 'cluster.json')));

  // cluster start forks an HSM node process: from dist/, its entry is built JS, no loader needed.
  const { child, output } = await startClusterCommand(t, bin, ['cluster', 'start', '--dir', 'rel'], { cwd: work, env });
  const out = output();
  t.match(out, /hsm-1 running \(pid \d+\)/, 'the HSM node process started');
  child.kill('SIGTERM');
  const code = await new Promise<number | null>((r) => (child.exitCode !== null ? r(child.exitCode) : child.once('exit', (c) => r(c))));
  t.equal(code, 0, 'SIGTERM stops the cluster');
  const all = await recordedImports(imports);
  t.ok(all.some((u) => /\/dist\/src\/hsm\/cluster\/node-process\.js$/.test(u)), 'the node ran its built entry');
  t.same(all.filter((u) => /\/node_modules\/tsx\/|\/src\/.*\.ts$/.test(u)), [], 'no tsx and no TypeScript source, in any process');
});

t.test("README installs the command and gives the quick start a directory of its own", async (t) => {
  const readme = await readFile(join(repoRoot, 'README.md'), 'utf8');
  t.match(readme, /## Two commands\n\n```sh\nnpm install && npm start {5}# install, then start the proxy on the embedded default\nnpm test {21}# lint, type-check and run the test suite\n```/, 'the two commands, unchanged');
  t.match(readme, /`npm link` \(or `npm install -g \.`\)/, 'the command is installed');
  const quick = /### Quick start with one HSM[\s\S]*?```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
  t.notMatch(quick, /alias hsmproxy|npm run/, 'no alias that fails outside the clone');
  t.match(quick, /^mkdir (\S+) && cd \1$/m, 'its own directory');
  t.notMatch(quick, /HSMPROXY_DIR=\S*\/data\b/, "not ./data, which npm start's demo uses");
});
