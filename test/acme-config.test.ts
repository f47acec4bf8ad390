// The acme block and acme certificates in the config: defaults, and every mistake reported with its
// field's path and what to do (termsOfServiceAgreed above all: ACME servers refuse accounts without it).
import t from 'tap';
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigInvalidError, parseConfig } from '../src/config/index.js';
import { cliEntry } from './helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-acme-config-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(join(dir, 'a.pem'), 'x');
writeFileSync(join(dir, 'a.key'), 'x');
writeFileSync(join(dir, 'ca.pem'), 'x');

const ACME = 'acme: { directory: https://acme.example/dir, directoryCa: ca.pem, email: ops@example.com, termsOfServiceAgreed: true }';

function config(certs: string, acme = ACME, extra = ''): string {
  return `
listeners:
  - port: 8443
    certificates:
${certs}
routes: [{ upstream: [http://127.0.0.1:8080] }]
hsm: { mode: embedded, dir: data }
${acme}
${extra}
`;
}
const ONE = '      - acme: { names: [shop.example.com, www.shop.example.com] }';

function issues(yaml: string): Array<{ path: string; message: string }> {
  try {
    parseConfig(yaml, { baseDir: dir });
  } catch (err) {
    if (err instanceof ConfigInvalidError) return err.issues;
    throw err;
  }
  throw new Error('expected the config to be refused');
}

t.test('an acme certificate gets the defaults: ec:p256, tls-alpn-01, state and account key in hsm.dir', async (t) => {
  const c = parseConfig(config(`${ONE}\n      - { cert: a.pem, key: a.key }`), { baseDir: dir });
  t.same(c.listeners[0]!.acme, [{ names: ['shop.example.com', 'www.shop.example.com'], keyType: 'ec:p256', challenge: 'tls-alpn-01', reuseKey: false }]);
  t.equal(c.listeners[0]!.certificates.length, 1, 'file and ACME certificates mix on one listener');
  t.equal(c.acme!.dir, join(dir, 'data'));
  t.equal(c.acme!.accountKey, join(dir, 'data', 'acme-account.key'));
  t.equal(c.acme!.directoryCa, join(dir, 'ca.pem'));
  t.equal(c.acme!.redirect, false);
});

t.test('termsOfServiceAgreed missing or false is refused, saying why', async (t) => {
  for (const tos of ['', ', termsOfServiceAgreed: false']) {
    const got = issues(config(ONE, `acme: { directory: https://acme.example/dir${tos} }`));
    t.match(got, [{ path: 'acme.termsOfServiceAgreed', message: /must be true: ACME servers refuse to create an account/ }]);
  }
});

t.test('bad fields are named with their path', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    [config('      - acme: { names: ["*.shop.example.com"] }'), 'listeners[0].certificates[0].acme.names[0]', /wildcard.*dns-01/],
    [config('      - acme: { names: [127.0.0.1] }'), 'listeners[0].certificates[0].acme.names[0]', /IP address/],
    [config('      - acme: { names: [bad_name.example] }'), 'listeners[0].certificates[0].acme.names[0]', /DNS name/],
    [config('      - acme: { names: [] }'), 'listeners[0].certificates[0].acme.names', /at least 1/],
    [config('      - acme: { names: [a.example], keyType: rsa:1024 }'), 'listeners[0].certificates[0].acme.keyType', /'rsa:2048', 'ec:p256', 'ec:p384'/],
    [config('      - acme: { names: [a.example], challenge: dns-01 }'), 'listeners[0].certificates[0].acme.challenge', /'tls-alpn-01', 'http-01'/],
    [config('      - acme: { names: [a.example], challenge: http-01 }'), 'listeners[0].certificates[0].acme.challenge', /needs acme.httpPort/],
    [config(ONE, ''), 'listeners[0].certificates[0].acme', /needs the top-level acme block/],
    [config(ONE, 'acme: { directory: http://acme.example/dir, termsOfServiceAgreed: true }'), 'acme.directory', /https:\/\//],
    [config(ONE, 'acme: { directory: https://a.example/dir, termsOfServiceAgreed: true, directoryCa: missing.pem }'), 'acme.directoryCa', /file not found/],
    [config(ONE, 'acme: { directory: https://a.example/dir, termsOfServiceAgreed: true, email: ops }'), 'acme.email', /e-mail address/],
    [config(ONE, 'acme: { directory: https://a.example/dir, termsOfServiceAgreed: true, redirect: true }'), 'acme.redirect', /needs acme.httpPort/],
    [config(`${ONE}\n      - acme: { names: [www.shop.example.com] }`), 'listeners[0].certificates[1].acme.names', /also in another acme certificate/],
    [config('      - acme: { names: [a.example], reuseKey: yes please }'), 'listeners[0].certificates[0].acme.reuseKey', /true or false|boolean/],
    [config(ONE, ACME, 'workers: 2').replace('mode: embedded, dir: data', 'mode: pkcs11, module: /usr/lib/softhsm/libsofthsm2.so'), 'workers', /must be 1 with acme certificates and hsm.mode pkcs11/],
    [config(ONE, ACME).replace('mode: embedded', 'mode: cluster'), 'acme.dir', /required with hsm.mode cluster/],
  ];
  for (const [yaml, path, message] of cases) {
    const got = issues(yaml);
    t.ok(got.some((i) => i.path === path && message.test(i.message)), `${path}: ${message}`, { got });
  }
});

t.test('reuseKey: true is read; one certificate on two listeners needs the same settings', async (t) => {
  const c = parseConfig(config('      - acme: { names: [a.example], reuseKey: true }'), { baseDir: dir });
  t.equal(c.listeners[0]!.acme![0]!.reuseKey, true);
  const two = `
listeners:
  - { port: 8443, certificates: [{ acme: { names: [a.example], reuseKey: true } }] }
  - { port: 9443, certificates: [{ acme: { names: [a.example] } }] }
routes: [{ upstream: [http://127.0.0.1:8080] }]
hsm: { mode: embedded, dir: data }
${ACME}
`;
  t.match(issues(two), [{ path: 'listeners[1].certificates[0].acme', message: /a\.example is also on another listener with keyType ec:p256, challenge tls-alpn-01, reuseKey true; give both the same settings/ }]);
});

t.test('workers share acme certificates through the simulated cluster: more than one is accepted', async (t) => {
  const c = parseConfig(config(ONE, ACME, 'workers: 2'), { baseDir: dir });
  t.equal(c.workers, 2);
});

t.test('acme.leaseSeconds must be a whole number of seconds', async (t) => {
  const bad = issues(config(ONE, ACME.replace('termsOfServiceAgreed: true', 'termsOfServiceAgreed: true, leaseSeconds: 0')));
  t.ok(bad.some((i) => i.path === 'acme.leaseSeconds'), 'zero is refused', { bad });
  const c = parseConfig(config(ONE, ACME.replace('termsOfServiceAgreed: true', 'termsOfServiceAgreed: true, leaseSeconds: 5')), { baseDir: dir });
  t.equal(c.acme?.leaseSeconds, 5);
});

t.test('an account key readable by others is refused with the chmod to run', async (t) => {
  const key = join(dir, 'account.key');
  writeFileSync(key, 'x');
  chmodSync(key, 0o644);
  const got = issues(config(ONE, `acme: { directory: https://a.example/dir, termsOfServiceAgreed: true, accountKey: ${key} }`));
  t.match(got, [{ path: 'acme.accountKey', message: new RegExp(`readable by others \\(mode 644\\); run: chmod 600 ${key}`) }]);
});

t.test('config check prints the acme problems with their paths and exits 1', async (t) => {
  const file = join(dir, 'bad.yaml');
  writeFileSync(file, config(ONE, 'acme: { directory: https://a.example/dir }'));
  const tsx = createRequire(import.meta.url).resolve('tsx');
  const { code, stderr } = await new Promise<{ code: number; stderr: string }>((resolve) => {
    execFile(process.execPath, [`--import=${tsx}`, cliEntry, 'config', 'check', file], { cwd: dir }, (err, _out, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code) : 0, stderr });
    });
  });
  t.equal(code, 1);
  t.match(stderr, /acme\.termsOfServiceAgreed: must be true/);
});
