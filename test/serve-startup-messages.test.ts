// What `hsmproxy serve` says when it starts: the banner names where the keys are ("embedded
// cluster in DIR", "cluster in DIR", never "cluster cluster") and every listener as it is bound;
// a port that is taken is named with its purpose and config field, in one line, in both modes.
// Loopback, ephemeral ports, a temp directory.
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../src/app/serve.js';
import { startDemoUpstream } from '../src/proxy/index.js';
import { cliEntry, oneLineError, runCli, type CliResult } from './helpers/cli.js';
import { pids, prepareServeDir, serveYaml, startServe } from './helpers/serve-fixture.js';

const d = await prepareServeDir();
t.teardown(() => d.cleanup());
const upstream = await startDemoUpstream();
t.teardown(() => upstream.close());

// Run outside the clone, where a bare `--import=tsx` would not resolve.
const tsxLoader = createRequire(import.meta.url).resolve('tsx');

function serveIn(cwd: string, args: string[]): Promise<CliResult> {
  return new Promise((resolve) => execFile(process.execPath, [`--import=${tsxLoader}`, cliEntry, 'serve', ...args], { cwd, timeout: 90_000 }, (err, stdout, stderr) => {
    resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
  }));
}

/** Holds a port on `host` for the test's lifetime: what "another program" looks like. */
async function occupy(t: Test, host = '127.0.0.1'): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve, reject) => s.once('error', reject).listen(0, host, () => resolve()));
  t.teardown(() => new Promise<void>((r) => s.close(() => r())));
  return (s.address() as net.AddressInfo).port;
}

async function hasIpv6Loopback(): Promise<boolean> {
  const s = net.createServer();
  return new Promise((resolve) => {
    s.once('error', () => resolve(false)).listen(0, '::1', () => s.close(() => resolve(true)));
  });
}

t.test('the banner prints each listener as bound and says where the keys are', async (t) => {
  const second = (await hasIpv6Loopback()) ? '::1' : '127.0.0.1';
  const yaml = serveYaml(d, upstream.url).replace(/^routes:/m, `  - name: second
    address: '${second}'
    port: 0
    certificates:
      - { cert: ${d.pki.ecdsaChain}, key: ${d.pki.ecdsaKey} }
routes:`);
  const s = await startServe(d, yaml);
  t.teardown(() => s.stop());
  const first = s.stderr().split('\n')[0]!;
  t.match(first, new RegExp(`^hsmproxy is serving https://localhost:${s.port}/ \\(keys in embedded cluster in ${d.data.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(2 HSMs\\)\\)$`));
  t.notMatch(s.stderr(), /cluster cluster/);
  t.match(s.stderr(), /^ {2}and https:\/\/localhost:(\d+)\/ \(listener "second"\)$/m, 'the second listener, by the name it is reached at locally');
  const port = Number(/and https:\/\/localhost:(\d+)\//.exec(s.stderr())![1]);
  t.not(port, s.port, 'its own bound port (port: 0), not the first listener\'s or 8443');
  t.not(port, 8443);
});

for (const workers of [1, 2]) {
  t.test(`workers: ${workers}: an admin port in use is named with admin.port, and nothing is left running`, async (t) => {
    const taken = await occupy(t);
    const yaml = serveYaml(d, upstream.url, `workers: ${workers}`).replace('admin: { address: 127.0.0.1, port: 0 }', `admin: { address: 127.0.0.1, port: ${taken} }`);
    const file = join(d.dir, 'admin-taken.yaml');
    await writeFile(file, yaml);
    const r = await runCli(['serve', '--config', file, '--log-level', 'warn'], { timeoutMs: 60_000 });
    t.equal(r.code, 1);
    t.equal(r.stdout, '');
    const line = r.stderr.split('\n').filter((l) => l.startsWith('hsmproxy: '));
    t.equal(line.length, 1, r.stderr);
    t.match(line[0], new RegExp(`^hsmproxy: admin port 127\\.0\\.0\\.1:${taken} \\(admin\\.port\\) is in use: .*set another admin\\.port$`));
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
    t.same(await pids(d.data), [], 'no HSM process left running');
  });
}

t.test('the demo upstream\'s port in use is named with upstreams.demo.targets', async (t) => {
  const cwd = await mkdtemp(join(tmpdir(), 'hsmproxy-demo-taken-'));
  t.teardown(() => rm(cwd, { recursive: true, force: true }));
  const taken = await occupy(t);
  const original = await readFile(join(packageRoot(), 'config', 'hsmproxy.yaml'), 'utf8');
  const copy = original.replace(/port: 8443/, 'port: 0').replace(/port: 9464/, 'port: 0').replace(/127\.0\.0\.1:8080/, `127.0.0.1:${taken}`);
  await writeFile(join(cwd, 'mine.yaml'), copy);
  const r = await serveIn(cwd, ['--config', 'mine.yaml', '--log-level', 'warn']);
  oneLineError(t, r, new RegExp(`^hsmproxy: demo upstream port 127\\.0\\.0\\.1:${taken} \\(upstreams\\.demo\\.targets\\) is in use: .*point upstreams\\.demo\\.targets at a free port\\n$`));
  t.same(await pids(join(cwd, 'data')), [], 'no HSM process left running');
});
