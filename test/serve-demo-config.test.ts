// `serve --config` on a copy of config/hsmproxy.yaml (the default, here on other ports) is the
// demo too: the demo PKI and upstream follow from the config's `demo: true`, not from --config
// being absent. Before, an explicit --config skipped them, and the proxy answered 502 (or the
// config check failed on the certificates the demo makes) while /readyz said ready.
// Loopback, ephemeral listener and admin ports, a free port for the demo upstream, a temp directory.
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../src/app/serve.js';
import { cliEntry } from './helpers/cli.js';

const tsxLoader = createRequire(import.meta.url).resolve('tsx');

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const { port } = s.address() as net.AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => execFile('curl', ['-sS', '--max-time', '15', ...args], { timeout: 20_000 }, (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr })));
}

t.test('serve --config with a copy of the default on other ports makes the demo PKI and upstream and proxies to it', async (t) => {
  const cwd = await mkdtemp(join(tmpdir(), 'hsmproxy-demo-config-'));
  t.teardown(() => rm(cwd, { recursive: true, force: true }));
  const upstreamPort = await freePort();
  const original = await readFile(join(packageRoot(), 'config', 'hsmproxy.yaml'), 'utf8');
  t.match(original, /^demo: true$/m, 'the default config says it is the demo');
  const copy = original.replace(/port: 8443/, 'port: 0').replace(/port: 9464/, 'port: 0').replace(/127\.0\.0\.1:8080/, `127.0.0.1:${upstreamPort}`);
  t.not(copy, original);
  await writeFile(join(cwd, 'mine.yaml'), copy);

  const child = spawn(process.execPath, [`--import=${tsxLoader}`, cliEntry, 'serve', '--config', 'mine.yaml', '--log-level', 'warn'], { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  for (const deadline = Date.now() + 60_000; !/admin: http:/.test(err);) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`serve did not start:\n${err}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  t.match(err, /made a dev CA and localhost certificates/);
  t.match(err, new RegExp(`demo upstream: http://127\\.0\\.0\\.1:${upstreamPort}`));
  const port = Number(/serving https:\/\/[^/]+:(\d+)\//.exec(err)![1]);
  const admin = Number(/admin: http:\/\/[^/]+:(\d+)\//.exec(err)![1]);

  const got = await curl(['--cacert', join(cwd, 'certs', 'dev-ca.crt'), '--resolve', `localhost:${port}:127.0.0.1`, `https://localhost:${port}/hello`]);
  t.equal(got.code, 0, got.stderr);
  t.equal((JSON.parse(got.stdout) as { path: string }).path, '/hello', 'the demo upstream answered through the proxy');
  t.equal((await fetch(`http://127.0.0.1:${admin}/readyz`)).status, 200);

  child.kill('SIGTERM');
  t.equal(await exited, 0);
});
