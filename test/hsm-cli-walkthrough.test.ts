// README "Quick start with one HSM", end to end through the CLI: init, activate, hsm serve as a
// child process, create a CU, generate RSA-2048 and P-256 keys, sign, export the public keys,
// and verify the signatures with the openssl command line. Then the audit log's MAC chain.
// Steps run the CLI in-process (same code as the binary, no spawn cost) except where the real
// process matters: `hsm serve`, and failures whose exit code and stderr line are the point.
import t from 'tap';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliEntry, runCli } from './helpers/cli.js';
import { cliInProcess, freePort, killChild } from './helpers/hsm-cluster.js';

const work = await mkdtemp(join(tmpdir(), 'hsmproxy-cli-'));
const dir = join(work, 'cluster');
t.teardown(() => rm(work, { recursive: true, force: true }));
const env = { HSMPROXY_DIR: dir, HSMPROXY_PIN: '', HSMPROXY_NEW_PASSWORD: '' };
let preco = '';
const keys: Record<string, string> = {};

t.test('cluster init creates the cluster and shows the one-time PRECO password once', async (t) => {
  const r = await cliInProcess(['cluster', 'init', '--base-port', String(await freePort()), '--json'], env);
  t.error(r.error);
  const out = JSON.parse(r.stdout) as { clusterId: string; precoUser: string; precoPassword: string; hsms: Array<{ id: string }> };
  t.match(out.clusterId, /^[0-9a-f]{64}$/);
  t.equal(out.precoUser, 'admin');
  t.ok(out.precoPassword.length >= 12);
  t.same(out.hsms.map((h) => h.id), ['hsm-1']);
  preco = out.precoPassword;
  const manifest = await readFile(join(dir, 'cluster.json'), 'utf8');
  t.notMatch(manifest, preco, 'the one-time password is not stored');
  for (const f of ['pki/customer-ca.key', 'pki/cluster.key', 'pki/client.key', 'pki/hsm-1.key', 'cluster-masking.key']) {
    t.equal((await stat(join(dir, f))).mode & 0o777, 0o600, `${f} is 0600`);
  }
});

t.test('the README walkthrough works against a node started with hsm serve', async (t) => {
  const serve = spawn(process.execPath, ['--import=tsx', cliEntry, 'hsm', 'serve', '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => killChild(serve));
  let log = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`hsm serve did not start: ${log}`)), 20_000);
    serve.stdout.setEncoding('utf8').on('data', (d: string) => { log += d; if (log.includes('HSM listening')) { clearTimeout(timer); resolve(); } });
    serve.stderr.setEncoding('utf8').on('data', (d: string) => { log += d; });
  });

  const ok = async (args: string[], extra: Record<string, string> = {}): Promise<string> => {
    const r = await cliInProcess(args, { ...env, ...extra });
    t.error(r.error, args.slice(0, 2).join(' '));
    return r.stdout;
  };
  await t.test('cluster activate makes the PRECO the crypto officer', async (t) => {
    t.match(await ok(['cluster', 'activate'], { HSMPROXY_PIN: `admin:${preco}`, HSMPROXY_NEW_PASSWORD: 'co-secret-1' }), /activated/);
  });
  await t.test('the CO creates a crypto user', async (t) => {
    await ok(['user', 'create', '--name', 'alice'], { HSMPROXY_PIN: 'admin:co-secret-1', HSMPROXY_NEW_PASSWORD: 'alice-secret-1' });
    const users = JSON.parse(await ok(['user', 'list', '--json'], { HSMPROXY_PIN: 'admin:co-secret-1' })) as Array<{ name: string; role: string }>;
    t.same(users.map((u) => `${u.name}:${u.role}`).sort(), ['admin:CO', 'alice:CU', 'sync:AU'], 'activate made the appliance user');
  });
  const cu = { HSMPROXY_PIN: 'alice:alice-secret-1' };
  await t.test('the CU generates an RSA-2048 and a P-256 key', async (t) => {
    for (const [type, label] of [['rsa:2048', 'web-rsa'], ['ec:p256', 'web-ec']] as const) {
      const out = JSON.parse(await ok(['key', 'generate', '--type', type, '--label', label, '--json'], cu)) as { keyId: string };
      t.match(out.keyId, /^[0-9a-f]{32}$/);
      keys[label] = out.keyId;
    }
  });
  await t.test('signatures made in the HSM verify with openssl on the exported public keys', async (t) => {
    const msg = join(work, 'msg.txt');
    await writeFile(msg, 'hello from the quick start\n');
    for (const [label, mech, sigopts] of [
      ['web-rsa', 'rsa-pss-sha256', ['-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:-1']],
      ['web-ec', 'ecdsa-sha256', []],
    ] as const) {
      const sig = join(work, `${label}.sig`);
      const pub = join(work, `${label}.pub.pem`);
      await ok(['crypto', 'sign', '--key', label, '--in', msg, '--mech', mech, '--out', sig], cu);
      await ok(['key', 'export-pub', '--key', label, '--out', pub], cu);
      const out = execFileSync('openssl', ['dgst', '-sha256', '-verify', pub, ...sigopts, '-signature', sig, msg], { encoding: 'utf8' });
      t.match(out, /Verified OK/, `openssl verifies the ${mech} signature`);
    }
    t.match(await ok(['crypto', 'verify', '--key', keys['web-ec'] as string, '--in', msg, '--sig', join(work, 'web-ec.sig'), '--mech', 'ecdsa-sha256'], cu), /signature OK/,
      'hsmproxy crypto verify agrees (given the private key id, it verifies with the public half)');
  });
  await t.test('a signature over other data does not verify: one line, exit 1', async (t) => {
    const other = join(work, 'other.txt');
    await writeFile(other, 'something else\n');
    const r = await runCli(['crypto', 'verify', '--key', 'web-ec', '--in', other, '--sig', join(work, 'web-ec.sig'), '--mech', 'ecdsa-sha256'], { env: { ...env, ...cu } });
    t.equal(r.code, 1);
    t.match(r.stderr, /^hsmproxy: signature does NOT verify[^\n]*\n$/);
  });

  await killChild(serve, 'SIGTERM');
  t.equal(serve.exitCode, 0, 'hsm serve stops cleanly on SIGTERM');
  t.match(log, /HSM stopped/);
});

t.test('hsm audit --verify checks the MAC chain, refuses a log without its head and names an edited line', async (t) => {
  const ok = await cliInProcess(['hsm', 'audit', '--verify', '--json'], env);
  t.error(ok.error);
  t.match(JSON.parse(ok.stdout), { ok: true, entries: Number });
  const listing = await cliInProcess(['hsm', 'audit'], env);
  t.match(listing.stdout, /ok +key\.create user=alice/, 'key creations are audited');
  t.notMatch(listing.stdout, /mac=/, 'the listing leaves out the chain fields');
  const path = join(dir, 'hsms', 'hsm-1', 'audit.log');
  await rename(path + '.head', path + '.head.saved');
  const headless = await runCli(['hsm', 'audit', '--verify'], { env });
  await rename(path + '.head.saved', path + '.head');
  t.equal(headless.code, 1, 'a missing head file is a failure, not a skipped check');
  t.match(headless.stderr, /^hsmproxy: audit log of hsm-1 was tampered with: line \d+: its head file audit\.log\.head is missing[^\n]*\n$/);
  const lines = (await readFile(path, 'utf8')).split('\n');
  lines[2] = (lines[2] as string).replace('"ok":true', '"ok":false');
  await writeFile(path, lines.join('\n'));
  const bad = await runCli(['hsm', 'audit', '--verify'], { env });
  t.equal(bad.code, 1);
  t.match(bad.stderr, /^hsmproxy: audit log of hsm-1 was tampered with: line 3: [^\n]*\n$/);
});
