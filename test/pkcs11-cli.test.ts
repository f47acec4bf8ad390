// `hsmproxy pkcs11 …` as a user runs it, against a throwaway SoftHSMv2 token.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './helpers/cli.js';
import { createSoftHsm, softhsmSkipReason, TEST_PIN } from './helpers/softhsm.js';

const skip = softhsmSkipReason();
if (skip) {
  t.test('SoftHSM CLI tests', { skip }, async () => {});
} else {
  const hsm = createSoftHsm();
  hsm.addToken('cli');
  const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-pkcs11-cli-'));
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }); hsm.cleanup(); });
  const env = { ...hsm.env, HSMPROXY_PIN: TEST_PIN };
  const on = ['--module', hsm.module, '--token', 'cli'];

  t.test('key generate writes a reference whose public key openssl reads', async (t) => {
    const out = join(dir, 'web.pem');
    const r = await runCli(['pkcs11', 'key', 'generate', ...on, '--type', 'ec:p256', '--label', 'web', '--out', out], { env });
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /generated ec:p256 key "web" \(id [0-9a-f]{32}\) on token "cli"\nkey reference written to .*web\.pem/);
    t.match(readFileSync(out, 'utf8'), /-----BEGIN EC PRIVATE KEY-----/);
    try {
      const pub = execFileSync('openssl', ['pkey', '-in', out, '-pubout'], { encoding: 'utf8' });
      t.match(pub, /-----BEGIN PUBLIC KEY-----/);
    } catch {
      t.comment('openssl not available');
    }
  });

  t.test('key generate --json reports id, type, URI and module', async (t) => {
    const out = join(dir, 'rsa.pem');
    const r = await runCli(['pkcs11', 'key', 'generate', ...on, '--type', 'rsa:2048', '--label', 'api', '--out', out, '--json'], { env });
    t.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout) as Record<string, string>;
    t.equal(j.type, 'rsa:2048');
    t.equal(j.label, 'api');
    t.match(j.uri, /^pkcs11:.*token=cli;.*object=api;id=/);
    t.equal(j.module, hsm.module);
    t.equal(j.out, out);
  });

  t.test('key list shows the generated keys, as text and as JSON', async (t) => {
    const text = await runCli(['pkcs11', 'key', 'list', ...on], { env });
    t.equal(text.code, 0, text.stderr);
    t.match(text.stdout, /^[0-9a-f]{32} +ec:p256 +web$/m);
    t.match(text.stdout, /^[0-9a-f]{32} +rsa:2048 +api$/m);
    const json = await runCli(['pkcs11', 'key', 'list', ...on, '--json'], { env });
    const keys = JSON.parse(json.stdout) as Array<{ label: string }>;
    t.same(keys.map((k) => k.label).sort(), ['api', 'web']);
  });

  t.test('pkcs11 tokens lists the token without a PIN', async (t) => {
    const r = await runCli(['pkcs11', 'tokens', '--module', hsm.module, '--json'], { env: hsm.env });
    t.equal(r.code, 0, r.stderr);
    t.match(JSON.parse(r.stdout), [{ label: 'cli', manufacturer: 'SoftHSM project' }]);
  });

  t.test('key delete --key removes the key the reference names, using the module it records', async (t) => {
    const out = join(dir, 'web.pem');
    const r = await runCli(['pkcs11', 'key', 'delete', '--key', out], { env });
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /deleted key "web"/);
    const list = await runCli(['pkcs11', 'key', 'list', ...on, '--json'], { env });
    t.same((JSON.parse(list.stdout) as Array<{ label: string }>).map((k) => k.label), ['api']);
    const again = await runCli(['pkcs11', 'key', 'delete', '--key', out], { env });
    t.equal(again.code, 1);
    t.match(again.stderr, /^hsmproxy: .*was not found in the HSM; it may have been deleted/);
    t.notMatch(again.stderr, /\n\s+at /, 'no stack trace');
  });

  t.test('key delete --label removes a key by its label', async (t) => {
    const r = await runCli(['pkcs11', 'key', 'delete', ...on, '--label', 'api'], { env });
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /deleted key "api"/);
  });

  t.test('the PIN can come from a 0600 credentials file', async (t) => {
    const file = join(dir, 'pin');
    writeFileSync(file, `${TEST_PIN}\n`);
    chmodSync(file, 0o600);
    const r = await runCli(['pkcs11', 'key', 'list', ...on], { env: { ...hsm.env, HSMPROXY_PIN: '', HSMPROXY_CREDENTIALS: file } });
    t.equal(r.code, 0, r.stderr);
  });

  t.test('a wrong PIN is one line naming CKR_PIN_INCORRECT', async (t) => {
    const r = await runCli(['pkcs11', 'key', 'list', ...on], { env: { ...hsm.env, HSMPROXY_PIN: '0000' } });
    t.equal(r.code, 1);
    t.equal(r.stderr, 'hsmproxy: wrong PIN for token "cli" (CKR_PIN_INCORRECT); check HSMPROXY_PIN\n');
  });

  t.test('no PIN at all says how to give one', async (t) => {
    const r = await runCli(['pkcs11', 'key', 'list', ...on], { env: { ...hsm.env, HSMPROXY_PIN: '' } });
    t.equal(r.code, 1);
    t.match(r.stderr, /^hsmproxy: no crypto-user credentials: set HSMPROXY_PIN/);
  });

  t.test('a missing module is "file not found"', async (t) => {
    const r = await runCli(['pkcs11', 'key', 'list', '--module', '/nonexistent/lib.so', '--token', 'cli'], { env });
    t.equal(r.code, 1);
    t.equal(r.stderr, 'hsmproxy: cannot load PKCS#11 module /nonexistent/lib.so: file not found\n');
  });

  t.test('a missing token lists the tokens present', async (t) => {
    const r = await runCli(['pkcs11', 'key', 'list', '--module', hsm.module, '--token', 'nope'], { env });
    t.equal(r.code, 1);
    t.match(r.stderr, /^hsmproxy: PKCS#11 token with label "nope" not found \(tokens present: "cli"\)/);
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });

  t.test('usage mistakes are one line with exit code 2 and touch nothing', async (t) => {
    const out = join(dir, 'never.pem');
    const cases: Array<[string[], RegExp]> = [
      [['pkcs11', 'key', 'generate', '--token', 'cli', '--type', 'ec:p256', '--label', 'x', '--out', out], /no PKCS#11 module: pass --module/],
      [['pkcs11', 'key', 'generate', '--module', hsm.module, '--type', 'ec:p256', '--label', 'x', '--out', out], /no token: pass --token LABEL/],
      [['pkcs11', 'key', 'generate', ...on, '--type', 'rsa:1024', '--label', 'x', '--out', out], /unsupported key type "rsa:1024": use rsa:2048/],
      [['pkcs11', 'key', 'generate', ...on, '--type', 'ec:p256', '--out', out], /no label: pass --label/],
      [['pkcs11', 'key', 'generate', ...on, '--type', 'ec:p256', '--label', 'x'], /no output file: pass --out/],
      [['pkcs11', 'key', 'delete', ...on], /name exactly one key/],
      [['pkcs11', 'key', 'delete', ...on, '--id', 'xyz'], /--id must be the key's CKA_ID in hex/],
      [['pkcs11', 'key', 'list', '--module', hsm.module, '--slot', 'one'], /--slot must be a slot id number/],
    ];
    for (const [args, message] of cases) {
      const r = await runCli(args, { env });
      t.equal(r.code, 2, args.join(' '));
      t.match(r.stderr, message);
      t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    }
    t.notOk(existsSync(out));
  });

  t.test('generate refuses to overwrite an existing reference before creating a key', async (t) => {
    const out = join(dir, 'taken.pem');
    writeFileSync(out, 'precious');
    const r = await runCli(['pkcs11', 'key', 'generate', ...on, '--type', 'ec:p256', '--label', 'taken', '--out', out], { env });
    t.equal(r.code, 2);
    t.match(r.stderr, /taken\.pem already exists; remove it, choose another --out, or pass --force/);
    t.equal(readFileSync(out, 'utf8'), 'precious');
    const list = await runCli(['pkcs11', 'key', 'list', ...on, '--json'], { env });
    t.notOk((JSON.parse(list.stdout) as Array<{ label: string }>).some((k) => k.label === 'taken'), 'no orphan key on the token');
  });
}
