// `cluster init` says when a port it gives an HSM is taken already (by an earlier quick start's
// HSM, say), instead of the HSM failing to start later with nothing having pointed at it.
import t, { type Test } from 'tap';
import { createServer, type Server } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './helpers/cli.js';
import { freePort } from './helpers/hsm-cluster.js';

function listen(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
}

async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-init-ports-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return join(dir, 'cluster');
}

t.test('a taken port is named with its HSM, and the cluster is still made', async (t) => {
  const base = await freePort();
  const other = await listen(base + 1);
  t.teardown(() => new Promise<void>((r) => other.close(() => r())));
  const dir = await tempDir(t);
  const r = await runCli(['cluster', 'init', '--dir', dir, '--hsms', '2', '--base-port', String(base)]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, new RegExp(`warning: port ${base + 1} on 127\\.0\\.0\\.1 \\(hsm-2\\) is already in use`));
  t.match(r.stderr, /--base-port/, 'says how to pick other ports');
  t.notMatch(r.stderr, new RegExp(`port ${base} `), 'the free port is not named');
  t.match(r.stdout, /created in/);
});

t.test('free ports: no warning; --json lists the taken ones', async (t) => {
  const base = await freePort();
  const r = await runCli(['cluster', 'init', '--dir', await tempDir(t), '--base-port', String(base), '--json']);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr, '');
  t.same((JSON.parse(r.stdout) as { portsInUse: unknown[] }).portsInUse, []);
  const held = await listen(base + 10);
  t.teardown(() => new Promise<void>((res) => held.close(() => res())));
  const busy = await runCli(['cluster', 'init', '--dir', await tempDir(t), '--base-port', String(base + 10), '--json']);
  t.same((JSON.parse(busy.stdout) as { portsInUse: unknown[] }).portsInUse, [{ hsm: 'hsm-1', address: '127.0.0.1', port: base + 10 }]);
});
