// A key reference holds no secret and is copied between machines, so the PKCS#11 module it records
// must not choose the code loaded into the process that holds the PIN (issue 19, item 1): only
// hsm.module / hsm.allowedModules (serve), --module / HSMPROXY_PKCS11_MODULES (CLI) are loaded.
// The foreign module is a copy of libsofthsm2.so: a real PKCS#11 library that would work if it
// were loaded, at a path nothing else maps. "Not loaded" is checked in /proc/self/maps in this
// process, and for spawned commands in the dynamic linker's own trace (LD_DEBUG=files), which
// also sees a library that was loaded and unloaded again before the command ended.
import t, { type Test } from 'tap';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { verify } from 'node:crypto';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { pino } from 'pino';
import { runCli } from './helpers/cli.js';
import { cliInProcess } from './helpers/hsm-cluster.js';
import { createSoftHsm, softhsmSkipReason, TEST_PIN } from './helpers/softhsm.js';
import { openPkcs11Backend, pkcs11Opener } from '../src/engine/pkcs11/backend.js';
import { Engine } from '../src/engine/engine.js';
import { formatKeyRef, type Pkcs11KeyRef } from '../src/engine/keyref.js';
import { SignatureScheme } from '../src/engine/schemes.js';
import { ConfigInvalidError, loadConfig, parseConfig } from '../src/config/index.js';
import { openHsmSide } from '../src/app/hsm-side.js';
import { certPem, selfSign, signingKey } from '../src/pki/index.js';

const skip = softhsmSkipReason();

/** Whether a file is mapped into this process, i.e. was dlopen'ed and not unloaded. */
function mapped(file: string): boolean {
  return readFileSync('/proc/self/maps', 'utf8').includes(realpathSync(file));
}

/** Runs the CLI in a child process with the dynamic linker tracing every file it loads. */
async function runTraced(args: string[], env: NodeJS.ProcessEnv, traceDir: string): Promise<{ code: number | null; stderr: string; loaded: string }> {
  mkdirSync(traceDir);
  const r = await runCli(args, { env: { ...env, LD_DEBUG: 'files', LD_DEBUG_OUTPUT: join(traceDir, 'ld') }, timeoutMs: 30_000 });
  const loaded = readdirSync(traceDir).map((f) => readFileSync(join(traceDir, f), 'utf8')).join('');
  return { code: r.code, stderr: r.stderr, loaded };
}

if (skip || !existsSync('/proc/self/maps')) {
  t.test('PKCS#11 module allow-list tests', { skip: skip || 'needs /proc/self/maps' }, async () => {});
} else {
  const hsm = createSoftHsm();
  hsm.addToken('allow');
  process.env.HSMPROXY_PIN = TEST_PIN;
  const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-pkcs11-allow-'));
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }); hsm.cleanup(); });

  // The foreign module: a working PKCS#11 library, so loading it would succeed and show in maps.
  const foreign = join(dir, 'foreign', 'libforeign-pkcs11.so');
  mkdirSync(dirname(foreign));
  copyFileSync(hsm.module, foreign);
  const linkToAllowed = join(dir, 'link-to-allowed.so');
  symlinkSync(hsm.module, linkToAllowed);
  const linkToForeign = join(dir, 'link-to-foreign.so');
  symlinkSync(foreign, linkToForeign);
  // Not normalised on purpose: `/usr/lib/softhsm/../softhsm/libsofthsm2.so`.
  const dotted = `${dirname(hsm.module)}/../${basename(dirname(hsm.module))}/${basename(hsm.module)}`;

  let ref: Pkcs11KeyRef;
  const refFile = (name: string, module: string): string => {
    const file = join(dir, `${name}.pem`);
    writeFileSync(file, formatKeyRef({ ...ref, module }));
    return file;
  };
  const files: Record<string, string> = {};
  t.before(async () => {
    const backend = await openPkcs11Backend({ module: hsm.module, token: 'allow', pin: TEST_PIN, poolSize: 1 });
    const engine = new Engine({ backends: { pkcs11: backend } });
    const handle = engine.adopt(await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'site' }), backend);
    ref = handle.ref as Pkcs11KeyRef;
    files.good = refFile('good', hsm.module);
    files.tampered = refFile('tampered', foreign);
    files.viaLink = refFile('via-link', linkToAllowed);
    files.viaDots = refFile('via-dots', dotted);
    files.linkToForeign = refFile('link-to-foreign', linkToForeign);
    // Relative to the test's working directory, so code that resolved it would find the library.
    files.relative = refFile('relative', relative(process.cwd(), foreign));
    files.cert = join(dir, 'site.crt');
    writeFileSync(files.cert, certPem(await selfSign(await signingKey(await engine.signer(handle), engine.webcrypto()), { subject: 'CN=localhost', sans: ['DNS:localhost'], days: 2 })));
    await engine.close();
  });

  const engineAllowing = (allowedModules?: string[]): Engine =>
    new Engine({ openers: { pkcs11: pkcs11Opener({ pin: TEST_PIN, poolSize: 1, ...(allowedModules ? { allowedModules } : {}) }) } });

  async function signs(t: Test, engine: Engine, file: string): Promise<void> {
    const signer = await engine.signer(file);
    const data = Buffer.from(`signed through ${file}`);
    t.ok(verify('sha256', data, ref.publicKey, await signer.sign(SignatureScheme.ecdsa_secp256r1_sha256, data)), `${basename(file)} signs`);
  }

  t.test('the engine refuses a reference naming a module that is not allowed, names both paths, and never loads it', async (t) => {
    const e = engineAllowing([hsm.module]);
    t.teardown(() => e.close());
    const err = await e.loadKey(files.tampered!).then(() => undefined, (x: unknown) => x as Error & { code?: string });
    t.equal(err?.code, 'ENGINE_ERR_PKCS11_MODULE_NOT_ALLOWED');
    t.equal(err?.message, `${files.tampered} names PKCS#11 module ${foreign}, which is not allowed (allowed: ${hsm.module}); a key reference cannot choose the code this process loads: if you trust that module, name it with the opener's module option or add it to its allowedModules`);
    t.notOk(mapped(foreign), 'the foreign library is not mapped into the process');
    const none = engineAllowing();
    t.teardown(() => none.close());
    await t.rejects(none.loadKey(files.good!), { code: 'ENGINE_ERR_PKCS11_MODULE_NOT_ALLOWED', message: /\(allowed: none\)/ }, 'an opener with no allow-list loads no recorded module');
  });

  t.test('an allowed module still works, also when named through a symlink or `..`', async (t) => {
    const e = engineAllowing([hsm.module]);
    t.teardown(() => e.close());
    await signs(t, e, files.good!);
    await signs(t, e, files.viaLink!);
    await signs(t, e, files.viaDots!);
    const byLink = engineAllowing([linkToAllowed]);
    t.teardown(() => byLink.close());
    await signs(t, byLink, files.good!);
  });

  t.test('a symlink to a foreign module is judged by its target, and a relative path is refused', async (t) => {
    const e = engineAllowing([hsm.module]);
    t.teardown(() => e.close());
    await t.rejects(e.loadKey(files.linkToForeign!), {
      code: 'ENGINE_ERR_PKCS11_MODULE_NOT_ALLOWED',
      message: `${files.linkToForeign} names PKCS#11 module ${linkToForeign} (${realpathSync(foreign)}), which is not allowed (allowed: ${hsm.module}); a key reference cannot choose the code this process loads: if you trust that module, name it with the opener's module option or add it to its allowedModules`,
    });
    await t.rejects(e.loadKey(files.relative!), {
      code: 'ENGINE_ERR_PKCS11_MODULE_NOT_ALLOWED',
      message: `${files.relative} names PKCS#11 module "${relative(process.cwd(), foreign)}", a relative path, which is never loaded; name the module by its absolute path with the opener's module option or in its allowedModules`,
    });
    t.notOk(mapped(foreign));
  });

  t.test('config: hsm.allowedModules takes absolute paths, pkcs11 mode needs it or hsm.module, not both', async (t) => {
    const base = 'listeners: [{ port: 8443, certificates: [{ cert: c.pem, key: k.pem }] }]\nroutes: [{ upstream: app }]\nupstreams: { app: { targets: ["http://127.0.0.1:9"] } }\n';
    const parse = (hsmYaml: string) => parseConfig(base + hsmYaml, { baseDir: dir, checkFiles: false });
    const issue = (hsmYaml: string): string => {
      try { parse(hsmYaml); } catch (err) { if (err instanceof ConfigInvalidError) return err.message; throw err; }
      return 'valid';
    };
    t.same(parse(`hsm: { mode: pkcs11, allowedModules: [${hsm.module}, /opt/cloudhsm/lib/libcloudhsm_pkcs11.so] }\n`).hsm.allowedModules, [hsm.module, '/opt/cloudhsm/lib/libcloudhsm_pkcs11.so'], 'listed modules need not exist on this machine');
    t.match(issue('hsm: { mode: pkcs11, allowedModules: [lib/softhsm.so] }\n'), /hsm\.allowedModules\[0\]: expected the absolute path of a PKCS#11 module \(e\.g\. \/usr\/lib\/softhsm\/libsofthsm2\.so\), got "lib\/softhsm\.so"/);
    t.match(issue('hsm: { mode: pkcs11 }\n'), /hsm: mode pkcs11 needs module \(the PKCS#11 module every key reference is opened through\) or allowedModules \(the modules key references may name\)/);
    t.match(issue(`hsm: { mode: pkcs11, module: ${hsm.module}, allowedModules: [${hsm.module}] }\n`), /hsm\.allowedModules: not used with hsm\.module/);
    t.match(issue(`hsm: { mode: embedded, allowedModules: [${hsm.module}] }\n`), /hsm\.allowedModules: only used with mode: pkcs11/);
  });

  /** A serve config for one listener whose key is `key`, with the given hsm: lines. */
  const serveConfig = (name: string, key: string, hsmLines: string[]): string => {
    const file = join(dir, `${name}.yaml`);
    writeFileSync(file, [
      'listeners:',
      `  - { name: main, address: 127.0.0.1, port: 0, certificates: [{ cert: ${files.cert}, key: ${key} }] }`,
      'routes: [{ upstream: app }]',
      'upstreams: { app: { targets: ["http://127.0.0.1:9"] } }',
      'hsm:',
      '  mode: pkcs11',
      ...hsmLines,
      'admin: { address: 127.0.0.1, port: 0 }',
      '',
    ].join('\n'));
    return file;
  };

  t.test('serve: hsm.allowedModules admits the listed module and refuses, unloaded, the one a tampered reference names', async (t) => {
    const side = await openHsmSide(loadConfig(serveConfig('allowed', files.good!, [`  allowedModules: [${hsm.module}]`])), pino({ level: 'silent' }));
    t.teardown(() => side.stop());
    await signs(t, side.engine, files.good!);
    await t.rejects(side.engine.loadKey(files.tampered!), {
      code: 'ENGINE_ERR_PKCS11_MODULE_NOT_ALLOWED',
      message: `${files.tampered} names PKCS#11 module ${foreign}, which is not allowed (allowed: ${hsm.module}); a key reference cannot choose the code this process loads: if you trust that module, name it with hsm.module or add it to hsm.allowedModules`,
    });
    t.notOk(mapped(foreign));
    // hsm.module opens every reference through the configured module: the recorded path is never used.
    const overridden = await openHsmSide(loadConfig(serveConfig('module', files.tampered!, [`  module: ${hsm.module}`])), pino({ level: 'silent' }));
    t.teardown(() => overridden.stop());
    await signs(t, overridden.engine, files.tampered!);
    t.notOk(mapped(foreign));
  });

  t.test('serve refuses to start on a tampered reference with one line naming the key field and both paths', async (t) => {
    const r = await runTraced(['serve', '--config', serveConfig('tampered', files.tampered!, [`  allowedModules: [${hsm.module}]`])], hsm.env, join(dir, 'trace-serve'));
    t.not(r.code, 0);
    t.match(r.loaded, 'pkcs11js/build/Release/pkcs11.node', 'the trace sees the PKCS#11 binding load');
    t.notMatch(r.loaded, foreign, 'the foreign module was never loaded, not even briefly');
    const lines = r.stderr.trim().split('\n');
    t.equal(lines.length, 1, r.stderr);
    t.match(lines[0], 'listeners[main].certificates[0].key: ');
    t.match(lines[0], `names PKCS#11 module ${foreign}, which is not allowed (allowed: ${hsm.module})`);
    t.match(lines[0], /add it to hsm\.allowedModules$/);
  });

  // The CLI runs in this process (cliInProcess), so /proc/self/maps is ours.
  const inProcess = cliInProcess;

  t.test('CLI: a reference\'s module is loaded only if it is --module or listed in HSMPROXY_PKCS11_MODULES', async (t) => {
    const csr = (key: string, n: number, extra: string[] = []) => ['csr', '--key', key, '--subject', 'CN=allow.example', '--out', join(dir, `cli${n}.csr`), ...extra];
    const listed = await inProcess(csr(files.tampered!, 1), { HSMPROXY_PKCS11_MODULES: `/opt/other/lib.so:${hsm.module}` });
    t.equal(listed.error?.code, 'ENGINE_ERR_PKCS11_MODULE_NOT_ALLOWED');
    t.equal(listed.error?.message, `${files.tampered} names PKCS#11 module ${foreign}, which is not allowed (allowed: /opt/other/lib.so, ${hsm.module}); a key reference cannot choose the code this process loads: if you trust that module, name it with --module or add it to HSMPROXY_PKCS11_MODULES (absolute paths separated by ":")`);
    t.notOk(existsSync(join(dir, 'cli1.csr')));
    const unset = await inProcess(csr(files.good!, 2), { HSMPROXY_PKCS11_MODULES: undefined });
    t.match(unset.error, { code: 'ENGINE_ERR_PKCS11_MODULE_NOT_ALLOWED', message: /names PKCS#11 module .*, which is not allowed \(allowed: none\)/ }, 'nothing listed: even the usual module needs --module or the variable');
    const del = await inProcess(['pkcs11', 'key', 'delete', '--key', files.tampered!], { HSMPROXY_PKCS11_MODULES: hsm.module });
    t.match(del.error, { code: 'ENGINE_ERR_PKCS11_MODULE_NOT_ALLOWED', message: `names PKCS#11 module ${foreign}, which is not allowed` }, 'key delete --key too');
    t.notOk(mapped(foreign), 'the foreign library is not mapped (the spawned test below traces every load)');

    t.error((await inProcess(csr(files.good!, 3), { HSMPROXY_PKCS11_MODULES: hsm.module })).error, 'a listed module is loaded');
    t.error((await inProcess(csr(files.viaLink!, 4), { HSMPROXY_PKCS11_MODULES: hsm.module })).error, 'through a symlink too');
    t.error((await inProcess(csr(files.tampered!, 5, ['--module', hsm.module]), { HSMPROXY_PKCS11_MODULES: undefined })).error, '--module replaces the recorded module');
    t.ok(existsSync(join(dir, 'cli5.csr')));
    t.notOk(mapped(foreign));
    const rel = await inProcess(csr(files.good!, 6), { HSMPROXY_PKCS11_MODULES: 'softhsm/libsofthsm2.so' });
    t.match(rel.error, { code: 'CLI_ERR_USAGE', message: 'HSMPROXY_PKCS11_MODULES lists "softhsm/libsofthsm2.so", not an absolute path; list PKCS#11 modules by absolute path, separated by ":" (e.g. /usr/lib/softhsm/libsofthsm2.so)' });
  });

  t.test('CLI: the refusal is one line on stderr, exit code 1, and the module is never loaded, not even briefly', async (t) => {
    const env = { ...hsm.env, HSMPROXY_PIN: TEST_PIN, HSMPROXY_PKCS11_MODULES: hsm.module };
    const commands: Array<[string, string[]]> = [
      ['csr', ['csr', '--key', files.tampered!, '--subject', 'CN=x', '--out', join(dir, 'spawned.csr')]],
      ['key-delete', ['pkcs11', 'key', 'delete', '--key', files.tampered!]],
    ];
    for (const [name, args] of commands) {
      const r = await runTraced(args, env, join(dir, `trace-${name}`));
      t.equal(r.code, 1, name);
      t.equal(r.stderr, `hsmproxy: ${files.tampered} names PKCS#11 module ${foreign}, which is not allowed (allowed: ${hsm.module}); a key reference cannot choose the code this process loads: if you trust that module, name it with --module or add it to HSMPROXY_PKCS11_MODULES (absolute paths separated by ":")\n`, name);
      t.match(r.loaded, 'pkcs11js/build/Release/pkcs11.node', `${name}: the trace sees the PKCS#11 binding load`);
      t.notMatch(r.loaded, foreign, `${name}: the foreign module was never loaded`);
    }
  });

  // Last: it loads the foreign copy into this process. It shows that the maps check above would
  // have seen a load, and that allowing a module is all it takes to use it.
  t.test('control: once allowed, the same foreign module loads and shows in /proc/self/maps', async (t) => {
    const e = engineAllowing([foreign]);
    t.teardown(() => e.close());
    await signs(t, e, files.tampered!);
    t.ok(mapped(foreign), 'the load is visible');
  });
}
