// `hsmproxy config check|show`: what a user sees for valid and invalid configs.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-config-cli-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const bad = join(dir, 'bad.yaml');
writeFileSync(bad, 'listeners:\n  - port: 99999\n    certificates: [{ cert: c.pem, key: k.pem }]\n    colour: blue\nroutes: [{ upstream: [http://127.0.0.1:8080] }]\n');

t.test('config check accepts the default example (files skipped)', async (t) => {
  const r = await runCli(['config', 'check', '--no-files', 'config/hsmproxy.yaml']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /config\/hsmproxy\.yaml: valid \(1 listener, 1 route, hsm mode embedded\)/);
});

t.test('config check lists every bad field by path and exits 1', async (t) => {
  const r = await runCli(['config', 'check', '--no-files', bad]);
  t.equal(r.code, 1);
  t.match(r.stderr, /2 problems:/);
  t.match(r.stderr, /listeners\[0\]\.port: expected a TCP port from 0 to 65535, got number 99999/);
  t.match(r.stderr, /listeners\[0\]\.colour: unknown key/);
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
});

t.test('config check --json gives the issues as data', async (t) => {
  const r = await runCli(['config', 'check', '--no-files', '--json', bad]);
  t.equal(r.code, 1);
  const out = JSON.parse(r.stdout);
  t.equal(out.valid, false);
  t.same(out.issues.map((i: { path: string }) => i.path).sort(), ['listeners[0].colour', 'listeners[0].port']);
});

t.test('a missing config file is one line and a non-zero exit', async (t) => {
  const r = await runCli(['config', 'check', join(dir, 'nope.yaml')]);
  t.equal(r.code, 1);
  t.equal(r.stderr.trim().split('\n').length, 1);
  t.match(r.stderr, /nope\.yaml: config file not found/);
});

t.test('config show prints defaults filled in', async (t) => {
  const r = await runCli(['config', 'show', '--no-files', 'config/cluster.yaml']);
  t.equal(r.code, 0, r.stderr);
  const c = JSON.parse(r.stdout);
  t.equal(c.hsm.mode, 'cluster');
  t.equal(c.timeouts.shutdownMs, 15000);
  t.equal(c.timeouts.headersMs, 15000, 'a default filled in');
});
