// `hsmproxy pkcs11 …` as a user runs it, against a throwaway SoftHSMv2 token.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './helpers/cli.js';
import { createSoftHsm, softhsmSkipReason, TEST_PIN } from './helpers/softhsm.js';
import { openPkcs11Backend } from '../src/engine/pkcs11/backend.js';

const skip = softhsmSkipReason();

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
if (skip) {
  t.test('SoftHSM CLI tests', { skip }, async () => {});
} else {
  const hsm = createSoftHsm();
  hsm.addToken('cli');
  // The CA test's keys live on their own token, so the listing tests below see only theirs.
  hsm.addToken('ca');
  const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-pkcs11-cli-'));
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }); hsm.cleanup(); });
  // As an operator would: the module these references record may be loaded without --module
  // (set in process.env, so spawned runs inherit it too).
  process.env.HSMPROXY_PKCS11_MODULES = hsm.module;
  const env = { ...hsm.env, HSMPROXY_PIN: TEST_PIN };
  const on = ['--module', hsm.module, '--token', 'cli'];

  /**
   * Runs the CLI in this process with stdout captured and `vars` set in process.env: the same
   * command tree and code as the spawned CLI, without paying a tsx start-up per command.
   * Spawned runs (runCli) cover what only a real process shows: exit codes and stderr lines.
   */
  async function inProcess(args: string[], vars: Record<string, string | undefined> = { HSMPROXY_PIN: TEST_PIN }): Promise<{ stdout: string; error?: Error & { code?: string } }> {
    const { buildProgram } = await import('../src/cli/main.js');
    const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
    for (const [k, v] of Object.entries(vars)) { if (v === undefined) delete process.env[k]; else process.env[k] = v; }
    const write = process.stdout.write;
    let stdout = '';
    process.stdout.write = ((chunk: string | Uint8Array) => { stdout += String(chunk); return true; }) as typeof process.stdout.write;
    try {
      await (await buildProgram()).parseAsync(['node', 'hsmproxy', ...args]);
      return { stdout };
    } catch (error) {
      return { stdout, error: error as Error & { code?: string } };
    } finally {
      process.stdout.write = write;
      for (const [k, v] of Object.entries(saved)) { if (v === undefined) delete process.env[k]; else process.env[k] = v; }
    }
  }

  t.test('key generate writes a reference from which openssl prints the token key', async (t) => {
    const out = join(dir, 'web.pem');
    const r = await runCli(['pkcs11', 'key', 'generate', ...on, '--type', 'ec:p256', '--label', 'web', '--out', out], { env });
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /generated ec:p256 key "web" \(id [0-9a-f]{32}\) on token "cli"\nkey reference written to .*web\.pem/);
    t.match(readFileSync(out, 'utf8'), /-----BEGIN EC PRIVATE KEY-----/);
    // Nested, so the key the later tests use is made even without openssl.
    t.test('openssl pkey -pubout prints the SPKI of the key on the token', { skip: !hasOpenssl() && 'openssl not available' }, async (t) => {
      // openssl failing to read the reference throws here, and fails the test.
      const pub = execFileSync('openssl', ['pkey', '-in', out, '-pubout'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      const backend = await openPkcs11Backend({ module: hsm.module, token: 'cli', pin: TEST_PIN, poolSize: 1 });
      t.teardown(() => backend.close());
      t.equal(pub, (await backend.findKey({ label: 'web' })).publicKey.export({ type: 'spki', format: 'pem' }));
    });
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

  t.test('csr and cert self-sign with PKCS#11 references produce files openssl verifies', async (t) => {
    let openssl = true;
    try { execFileSync('openssl', ['version'], { stdio: 'ignore' }); } catch { openssl = false; }
    for (const [name, extra] of [['web', []], ['rsa', ['--pss']]] as const) {
      const ref = join(dir, `${name}.pem`);
      const csr = join(dir, `${name}${extra.length}.csr`);
      const cert = join(dir, `${name}${extra.length}.crt`);
      const a = await runCli(['csr', '--key', ref, '--subject', `CN=${name}.example`, '--san', `DNS:${name}.example`, '--out', csr, ...extra], { env });
      t.equal(a.code, 0, a.stderr);
      const b = await runCli(['cert', 'self-sign', '--key', ref, '--subject', `CN=${name}.example`, '--san', `DNS:${name}.example`, '--days', '30', '--out', cert, ...extra], { env });
      t.equal(b.code, 0, b.stderr);
      if (!openssl) continue;
      const req = spawnSync('openssl', ['req', '-in', csr, '-verify', '-noout'], { encoding: 'utf8' });
      t.equal(req.status, 0, `${name} ${extra.join(' ')}: openssl req -verify exits 0 (${req.stderr.trim()})`);
      t.match(req.stderr, /self-signature verify OK|^verify OK/m, `${name} ${extra.join(' ')} CSR verifies`);
      t.match(execFileSync('openssl', ['verify', '-CAfile', cert, cert], { encoding: 'utf8' }), /: OK/, `${name} ${extra.join(' ')} certificate verifies`);
      const certKey = execFileSync('openssl', ['x509', '-in', cert, '-noout', '-pubkey'], { encoding: 'utf8' });
      t.equal(certKey, execFileSync('openssl', ['pkey', '-in', ref, '-pubout'], { encoding: 'utf8' }), 'the certificate carries the token key');
    }
  });

  t.test('ca init and ca sign with a CA key on the token issue a chain openssl verifies', { skip: !hasOpenssl() && 'openssl not available' }, async (t) => {
    const onCa = ['--module', hsm.module, '--token', 'ca'];
    const caRef = join(dir, 'ca.pem');
    const caCert = join(dir, 'ca.crt');
    const leafRef = join(dir, 'leaf.pem');
    const csr = join(dir, 'leaf.csr');
    const leaf = join(dir, 'leaf.crt');
    for (const [args, what] of [
      [['pkcs11', 'key', 'generate', ...onCa, '--type', 'ec:p384', '--label', 'issuing-ca', '--out', caRef], 'CA key on the token'],
      [['ca', 'init', '--key', caRef, '--subject', 'CN=Token CA', '--days', '365', '--out', caCert], 'CA certificate'],
      [['pkcs11', 'key', 'generate', ...onCa, '--type', 'ec:p256', '--label', 'leaf', '--out', leafRef], 'leaf key on the token'],
      [['csr', '--key', leafRef, '--subject', 'CN=leaf.example', '--san', 'DNS:leaf.example', '--out', csr], 'leaf CSR'],
      [['ca', 'sign', '--ca-key', caRef, '--ca-cert', caCert, '--csr', csr, '--days', '30', '--out', leaf], 'leaf issued by the token CA'],
    ] as const) {
      const r = await inProcess([...args]);
      t.error(r.error, what);
    }
    t.match(execFileSync('openssl', ['verify', '-CAfile', caCert, leaf], { encoding: 'utf8' }), /: OK/, 'openssl verifies the leaf against the CA');
    const issuerKey = execFileSync('openssl', ['x509', '-in', caCert, '-noout', '-pubkey'], { encoding: 'utf8' });
    t.equal(issuerKey, execFileSync('openssl', ['pkey', '-in', caRef, '-pubout'], { encoding: 'utf8' }), 'the CA certificate carries the token CA key');
    t.match(execFileSync('openssl', ['x509', '-in', leaf, '-noout', '-subject', '-issuer'], { encoding: 'utf8' }), /subject=CN\s*=\s*leaf\.example\nissuer=CN\s*=\s*Token CA/);
  });

  t.test('key reference writes a reference for a key made by another tool', async (t) => {
    const backend = await openPkcs11Backend({ module: hsm.module, token: 'cli', pin: TEST_PIN, poolSize: 1 });
    const made = await backend.generateKey({ type: 'ec', curve: 'P-384' }, 'from-elsewhere');
    await backend.close();
    const out = join(dir, 'elsewhere.pem');
    const r = await inProcess(['pkcs11', 'key', 'reference', ...on, '--label', 'from-elsewhere', '--out', out, '--json']);
    t.error(r.error);
    t.equal((JSON.parse(r.stdout) as { keyId: string }).keyId, made.id.toString('hex'));
    const { readKeyRef } = await import('../src/engine/keyref.js');
    t.ok((await readKeyRef(out)).publicKey.equals(made.publicKey), 'the reference carries the token key');
    const again = await openPkcs11Backend({ module: hsm.module, token: 'cli', pin: TEST_PIN, poolSize: 1 });
    await again.deleteKey({ id: made.id });
    await again.close();
  });

  t.test('the key group takes --backend pkcs11 for generate, list and delete', async (t) => {
    const out = join(dir, 'via-key-group.pem');
    const gen = await inProcess(['key', 'generate', '--backend', 'pkcs11', ...on, '--type', 'ec:p384', '--label', 'via-key-group', '--out', out, '--json']);
    t.error(gen.error);
    const made = JSON.parse(gen.stdout) as { keyId: string; type: string };
    t.equal(made.type, 'ec:p384');
    const list = await inProcess(['key', 'list', '--backend', 'pkcs11', ...on, '--json']);
    t.ok((JSON.parse(list.stdout) as Array<{ keyId: string }>).some((k) => k.keyId === made.keyId), 'listed');
    const del = await inProcess(['key', 'delete', '--backend', 'pkcs11', '--key', out, '--json']);
    t.error(del.error);
    t.equal((JSON.parse(del.stdout) as { deleted: { keyId: string } }).deleted.keyId, made.keyId);
  });

  t.test('key generate --backend pkcs11 --session is refused and makes no key', async (t) => {
    const out = join(dir, 'session.pem');
    const r = await runCli(['key', 'generate', '--backend', 'pkcs11', ...on, '--type', 'ec:p256', '--label', 'session-key', '--session', '--out', out], { env });
    t.equal(r.code, 2);
    t.equal(r.stderr, 'hsmproxy: --session is not available with --backend pkcs11: a session key is gone when this command ends; drop --session for a token key\n');
    t.notOk(existsSync(out), 'no reference written');
    const backend = await openPkcs11Backend({ module: hsm.module, token: 'cli', pin: TEST_PIN, poolSize: 1 });
    t.teardown(() => backend.close());
    t.notOk((await backend.listKeys()).some((k) => k.label === 'session-key'), 'no key on the token');
  });

  t.test('key list shows the generated keys, as text and as JSON', async (t) => {
    const text = await inProcess(['pkcs11', 'key', 'list', ...on]);
    t.error(text.error);
    t.match(text.stdout, /^[0-9a-f]{32} +ec:p256 +web$/m);
    t.match(text.stdout, /^[0-9a-f]{32} +rsa:2048 +api$/m);
    const json = await inProcess(['pkcs11', 'key', 'list', ...on, '--json']);
    const keys = JSON.parse(json.stdout) as Array<{ label: string }>;
    t.same(keys.map((k) => k.label).sort(), ['api', 'web']);
  });

  t.test('pkcs11 tokens lists the token without a PIN', async (t) => {
    const r = await inProcess(['pkcs11', 'tokens', '--module', hsm.module, '--json'], { HSMPROXY_PIN: undefined });
    t.error(r.error);
    const tokens = (JSON.parse(r.stdout) as Array<{ label: string; manufacturer: string }>).sort((x, y) => x.label.localeCompare(y.label));
    t.match(tokens, [{ label: 'ca', manufacturer: 'SoftHSM project' }, { label: 'cli', manufacturer: 'SoftHSM project' }], 'both tokens of this file (slot order varies)');
  });

  t.test('key delete --key removes the key the reference names, using the module it records (listed in HSMPROXY_PKCS11_MODULES)', async (t) => {
    const out = join(dir, 'web.pem');
    const r = await inProcess(['pkcs11', 'key', 'delete', '--key', out]);
    t.error(r.error);
    t.match(r.stdout, /deleted key "web"/);
    const list = await inProcess(['pkcs11', 'key', 'list', ...on, '--json']);
    t.same((JSON.parse(list.stdout) as Array<{ label: string }>).map((k) => k.label), ['api']);
    const again = await inProcess(['pkcs11', 'key', 'delete', '--key', out]);
    t.equal(again.error?.code, 'ENGINE_ERR_KEY_NOT_FOUND');
    t.match(again.error?.message, /was not found in the HSM; it may have been deleted/);
  });

  t.test('key delete --label removes a key by its label', async (t) => {
    const r = await inProcess(['pkcs11', 'key', 'delete', ...on, '--label', 'api']);
    t.error(r.error);
    t.match(r.stdout, /deleted key "api"/);
  });

  t.test('the PIN can come from a 0600 credentials file', async (t) => {
    const file = join(dir, 'pin');
    writeFileSync(file, `${TEST_PIN}\n`);
    chmodSync(file, 0o600);
    const r = await inProcess(['pkcs11', 'key', 'list', ...on], { HSMPROXY_PIN: undefined, HSMPROXY_CREDENTIALS: file });
    t.error(r.error);
    t.match(r.stdout, /no keys on this token|[0-9a-f]{32}/);
  });

  t.test('--credentials FILE gives the PIN for a PKCS#11 reference, and wins over HSMPROXY_PIN', async (t) => {
    const ref = join(dir, 'creds.pem');
    t.error((await inProcess(['pkcs11', 'key', 'generate', ...on, '--type', 'ec:p256', '--label', 'creds', '--out', ref])).error);
    t.teardown(() => inProcess(['pkcs11', 'key', 'delete', '--key', ref]));
    const good = join(dir, 'good-pin');
    writeFileSync(good, `${TEST_PIN}\n`, { mode: 0o600 });
    const bad = join(dir, 'bad-pin');
    writeFileSync(bad, '0000\n', { mode: 0o600 });
    const csr = (pin: string, n: number) => ['csr', '--key', ref, '--credentials', pin, '--subject', 'CN=creds.example', '--out', join(dir, `creds${n}.csr`)];
    const a = await inProcess(csr(good, 1), { HSMPROXY_PIN: undefined, HSMPROXY_CREDENTIALS: undefined });
    t.error(a.error, 'the file alone is enough');
    t.ok(existsSync(join(dir, 'creds1.csr')));
    const b = await inProcess(csr(bad, 2), { HSMPROXY_PIN: TEST_PIN, HSMPROXY_CREDENTIALS: undefined });
    t.match(b.error, { code: 'ENGINE_ERR_BAD_CREDENTIALS', message: /wrong PIN for token "cli"/ }, 'the wrong PIN in the file is used, not HSMPROXY_PIN');
    t.notOk(existsSync(join(dir, 'creds2.csr')));
  });

  t.test('a wrong PIN is one line naming CKR_PIN_INCORRECT', async (t) => {
    const r = await runCli(['pkcs11', 'key', 'list', ...on], { env: { ...hsm.env, HSMPROXY_PIN: '0000' } });
    t.equal(r.code, 1);
    t.equal(r.stderr, 'hsmproxy: wrong PIN for token "cli" (CKR_PIN_INCORRECT); check HSMPROXY_PIN\n');
  });

  t.test('no PIN, a missing module or a missing token: coded errors naming the fix', async (t) => {
    // In-process: these fail before printing anything; the wrong-PIN test covers the one-line stderr.
    const { buildProgram } = await import('../src/cli/main.js');
    const saved = process.env.HSMPROXY_PIN;
    t.teardown(() => { if (saved === undefined) delete process.env.HSMPROXY_PIN; else process.env.HSMPROXY_PIN = saved; });
    const run = async (args: string[]): Promise<unknown> => (await buildProgram()).parseAsync(['node', 'hsmproxy', ...args]);
    delete process.env.HSMPROXY_PIN;
    await t.rejects(run(['pkcs11', 'key', 'list', ...on]), { code: 'ENGINE_ERR_BAD_CREDENTIALS', message: /^no crypto-user credentials: set HSMPROXY_PIN/ });
    process.env.HSMPROXY_PIN = TEST_PIN;
    await t.rejects(run(['pkcs11', 'key', 'list', '--module', '/nonexistent/lib.so', '--token', 'cli']), { code: 'ENGINE_ERR_PKCS11_MODULE', message: 'cannot load PKCS#11 module /nonexistent/lib.so: file not found' });
    await t.rejects(run(['pkcs11', 'key', 'list', '--module', hsm.module, '--token', 'nope']), { code: 'ENGINE_ERR_TOKEN_NOT_FOUND', message: /^PKCS#11 token with label "nope" not found \(tokens present: ("cli", "ca"|"ca", "cli")\)/ });
  });

  t.test('usage mistakes are UsageErrors (one line, exit code 2) and touch nothing', async (t) => {
    // In-process: each case fails before any PKCS#11 call, so spawning a CLI per case buys nothing.
    const { buildProgram } = await import('../src/cli/main.js');
    const out = join(dir, 'never.pem');
    const cases: Array<[string[], RegExp]> = [
      [['pkcs11', 'key', 'generate', '--token', 'cli', '--type', 'ec:p256', '--label', 'x', '--out', out], /^no PKCS#11 module: pass --module/],
      [['pkcs11', 'key', 'generate', '--module', hsm.module, '--type', 'ec:p256', '--label', 'x', '--out', out], /^no token: pass --token LABEL/],
      [['pkcs11', 'key', 'generate', ...on, '--type', 'rsa:1024', '--label', 'x', '--out', out], /^unsupported key type "rsa:1024": use rsa:2048/],
      [['pkcs11', 'key', 'generate', ...on, '--type', 'ec:p256', '--out', out], /^no label: pass --label/],
      [['pkcs11', 'key', 'generate', ...on, '--type', 'ec:p256', '--label', 'x'], /^no output file: pass --out/],
      [['pkcs11', 'key', 'delete', ...on], /^name exactly one key/],
      [['pkcs11', 'key', 'delete', ...on, '--id', 'xyz'], /^--id must be the key's CKA_ID in hex/],
      [['pkcs11', 'key', 'list', '--module', hsm.module, '--slot', 'one'], /^--slot must be a slot id number/],
      [['pkcs11', 'key', 'reference', ...on, '--out', out], /^name the key with exactly one of --id HEX or --label NAME/],
    ];
    for (const [args, message] of cases) {
      const program = await buildProgram();
      await t.rejects(program.parseAsync(['node', 'hsmproxy', ...args]), { code: 'CLI_ERR_USAGE', exitCode: 2, message }, args.join(' '));
    }
    t.notOk(existsSync(out));
  });

  t.test('a usage mistake from the real CLI is one line on stderr with exit code 2', async (t) => {
    const r = await runCli(['pkcs11', 'key', 'generate', ...on, '--type', 'ec:p256', '--label', 'x'], { env });
    t.equal(r.code, 2);
    t.equal(r.stderr, 'hsmproxy: no output file: pass --out ref.pem (where the key reference is written)\n');
  });

  t.test('generate refuses to overwrite an existing reference before creating a key', async (t) => {
    const { buildProgram } = await import('../src/cli/main.js');
    const out = join(dir, 'taken.pem');
    writeFileSync(out, 'precious');
    const program = await buildProgram();
    await t.rejects(program.parseAsync(['node', 'hsmproxy', 'pkcs11', 'key', 'generate', ...on, '--type', 'ec:p256', '--label', 'taken', '--out', out]), {
      code: 'CLI_ERR_USAGE', message: /taken\.pem already exists; remove it, choose another --out, or pass --force/,
    });
    t.equal(readFileSync(out, 'utf8'), 'precious');
    const backend = await openPkcs11Backend({ module: hsm.module, token: 'cli', pin: TEST_PIN, poolSize: 1 });
    t.teardown(() => backend.close());
    t.notOk((await backend.listKeys()).some((k) => k.label === 'taken'), 'no orphan key on the token');
  });
}
