// Usage errors of the hsmproxy command: one line with the `hsmproxy:` prefix naming the command's
// help, exit 2; with --json also one JSON document on stdout ({"error": {code, message}}).
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './helpers/cli.js';

t.test('a bad flag is one line naming the command, exit 2', async (t) => {
  const r = await runCli(['key', 'list', '--bogus']);
  t.equal(r.code, 2);
  t.equal(r.stderr, "hsmproxy: unknown option '--bogus' (run 'hsmproxy key list --help')\n");
  t.equal(r.stdout, '');
});

t.test('with --json the error is also a JSON document on stdout', async (t) => {
  const r = await runCli(['key', 'list', '--bogus', '--json']);
  t.equal(r.code, 2);
  t.same(JSON.parse(r.stdout), { error: { code: 'CLI_ERR_USAGE', message: "unknown option '--bogus' (run 'hsmproxy key list --help')" } });
  t.equal(r.stderr.trim().split('\n').length, 1, 'stderr stays one human line');
});

t.test('a missing required option and an unknown subcommand read the same way', async (t) => {
  const missing = await runCli(['key', 'generate', '--label', 'x']);
  t.equal(missing.code, 2);
  t.match(missing.stderr, /^hsmproxy: required option '--type <type>' not specified \(run 'hsmproxy key generate --help'\)\n$/);
  const unknown = await runCli(['key', 'frob']);
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, /^hsmproxy: unknown command 'frob' \(run 'hsmproxy key --help'\)\n$/);
});

t.test('other errors with --json: a JSON document with the error code, and a non-zero exit', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-usage-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const r = await runCli(['key', 'list', '--dir', join(dir, 'none'), '--json'], { env: { HSMPROXY_PIN: 'alice:x' } });
  t.not(r.code, 0);
  const doc = JSON.parse(r.stdout) as { error: { code: string; message: string } };
  t.type(doc.error.code, 'string');
  t.equal(r.stderr, `hsmproxy: ${doc.error.message}\n`);
});
