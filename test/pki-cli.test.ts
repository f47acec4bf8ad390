// The PKI and key-reference commands as a user runs them: `key import`, `key reference`, `csr`,
// `cert self-sign`, `ca init`, `ca sign`, with openssl checking the results, and every mistake a
// one-line error with a non-zero exit. The sim backend is a FakeHsm persisted in a temp dir.
import t from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCliWithFakeHsm } from './helpers/cli-fake-hsm.js';
import { FakeHsm } from './helpers/fake-hsm.js';
import { openssl } from './helpers/openssl.js';
import { oneLineError, type CliResult } from './helpers/cli.js';

const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-pki-cli-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const CLUSTER = '7c'.repeat(32);
const PIN = { HSMPROXY_PIN: 'cu1:secret1' };
const f = (name: string): string => join(dir, name);
const cli = (args: string[], env: NodeJS.ProcessEnv = PIN, clusterId = CLUSTER): Promise<CliResult> => runCliWithFakeHsm(args, { hsmDir: dir, clusterId, env });

// A key made inside the (fake) HSM before the CLI runs, found later by label.
const hsm = new FakeHsm(dir);
await hsm.login('cu1', 'secret1');
await hsm.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-384' }, label: 'issuing-ca' });
const real = generateKeyPairSync('rsa', { modulusLength: 2048 });
await writeFile(f('real.pem'), real.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });

t.test('key import moves a software key into the HSM and writes its reference', async (t) => {
  const r = await cli(['key', 'import', '--in', f('real.pem'), '--label', 'web', '--out', f('web.key.pem')]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /imported .*real\.pem as key \w+ \("web"\)/);
  t.match(r.stdout, /destroy the original/);
  const pub = await openssl(['pkey', '-in', f('web.key.pem'), '-pubout']);
  t.equal(pub.stdout, real.publicKey.export({ type: 'spki', format: 'pem' }), 'the reference carries the real public key');
  t.notMatch(await readFile(f('web.key.pem'), 'utf8'), /secret1/, 'no credentials in the reference');
});

t.test('key reference writes a reference for an existing key found by label', async (t) => {
  const r = await cli(['key', 'reference', '--key', 'issuing-ca', '--out', f('ca.key.pem'), '--json']);
  t.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { label: string; type: string; clusterId: string };
  t.match(out, { label: 'issuing-ca', type: 'ec:p384', clusterId: CLUSTER });
  const again = await cli(['key', 'reference', '--key', 'issuing-ca', '--out', f('ca.key.pem')]);
  oneLineError(t, again, /already exists/);
});

t.test('csr, cert self-sign, ca init and ca sign --chain produce what openssl accepts', async (t) => {
  const csr = await cli(['csr', '--key', f('web.key.pem'), '--subject', 'CN=www.example.com,O=Example Ltd,C=GB', '--san', 'DNS:www.example.com,DNS:example.com', '--san', 'IP:127.0.0.1', '--out', f('web.csr')]);
  t.equal(csr.code, 0, csr.stderr);
  const v = await openssl(['req', '-verify', '-noout', '-in', f('web.csr')]);
  t.equal(v.code, 0, v.stderr);

  const self = await cli(['cert', 'self-sign', '--key', f('web.key.pem'), '--subject', 'CN=www.example.com', '--san', 'DNS:www.example.com', '--days', '30', '--out', f('self.pem')]);
  t.equal(self.code, 0, self.stderr);
  t.equal((await openssl(['x509', '-noout', '-text', '-in', f('self.pem')])).code, 0);

  const init = await cli(['ca', 'init', '--key', f('ca.key.pem'), '--subject', 'CN=Example Issuing CA,O=Example Ltd', '--days', '365', '--out', f('ca.crt')]);
  t.equal(init.code, 0, init.stderr);
  const sign = await cli(['ca', 'sign', '--ca-key', f('ca.key.pem'), '--ca-cert', f('ca.crt'), '--csr', f('web.csr'), '--days', '90', '--out', f('web.chain.pem'), '--chain', '--json']);
  t.equal(sign.code, 0, sign.stderr);
  const rec = JSON.parse(sign.stdout) as { serial: string; profile: string };
  t.equal(rec.profile, 'server');
  const chain = await readFile(f('web.chain.pem'), 'utf8');
  t.equal(chain.match(/BEGIN CERTIFICATE/g)?.length, 2, 'leaf + CA');
  await writeFile(f('web.crt'), chain.slice(0, chain.indexOf('-----END CERTIFICATE-----') + 26));
  const ok = await openssl(['verify', '-CAfile', f('ca.crt'), f('web.crt')]);
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, /web\.crt: OK/);
  const certPub = await openssl(['x509', '-in', f('web.crt'), '-pubkey', '-noout']);
  t.equal(certPub.stdout, (await openssl(['pkey', '-in', f('web.key.pem'), '-pubout'])).stdout, 'certificate and reference carry the same public key');
  t.match(await readFile(f('ca.crt.issued.jsonl'), 'utf8'), new RegExp(rec.serial));
  oneLineError(t, await cli(['ca', 'init', '--key', f('ca.key.pem'), '--subject', 'CN=x', '--days', '1', '--out', f('ca.crt')]), /ca\.crt already exists/);
});

t.test('ca sign with an unwritable --out logs no issued certificate', async (t) => {
  const before = await readFile(f('ca.crt.issued.jsonl'), 'utf8');
  const r = await cli(['ca', 'sign', '--ca-key', f('ca.key.pem'), '--ca-cert', f('ca.crt'), '--csr', f('web.csr'), '--days', '90', '--out', f('no-such-dir/web.pem')]);
  oneLineError(t, r, /cannot write .*no-such-dir\/web\.pem \(ENOENT\)/);
  t.equal(await readFile(f('ca.crt.issued.jsonl'), 'utf8'), before, 'the issued log is unchanged');
});

t.test('csr, cert self-sign, ca csr and ca sign refuse an existing --out unless --force', async (t) => {
  const taken = f('taken.pem');
  await writeFile(taken, 'precious');
  const cases: string[][] = [
    ['csr', '--key', f('web.key.pem'), '--subject', 'CN=x'],
    ['cert', 'self-sign', '--key', f('web.key.pem'), '--subject', 'CN=x', '--days', '1'],
    ['ca', 'csr', '--key', f('ca.key.pem'), '--subject', 'CN=x'],
    ['ca', 'sign', '--ca-key', f('ca.key.pem'), '--ca-cert', f('ca.crt'), '--csr', f('web.csr'), '--days', '1'],
  ];
  for (const args of cases) {
    const r = await cli([...args, '--out', taken]);
    oneLineError(t, r, /taken\.pem already exists; remove it, choose another --out, or pass --force/);
    t.equal(r.code, 2, `${args.slice(0, 2).join(' ')}: a usage error`);
  }
  t.equal(await readFile(taken, 'utf8'), 'precious');
  const forced = await cli([...cases[0]!, '--out', taken, '--force']);
  t.equal(forced.code, 0, forced.stderr);
  t.match(await readFile(taken, 'utf8'), /BEGIN CERTIFICATE REQUEST/);
});

t.test('--pss with an EC key is a usage error', async (t) => {
  const r = await cli(['csr', '--key', f('ca.key.pem'), '--subject', 'CN=x', '--pss', '--out', f('pss.csr')]);
  oneLineError(t, r, /--pss needs an RSA key; .*ca\.key\.pem is an EC key/);
  t.equal(r.code, 2);
});

t.test('--backend soft signs with a real key file and refuses a reference', async (t) => {
  const ok = await cli(['csr', '--backend', 'soft', '--key', f('real.pem'), '--subject', 'CN=soft', '--out', f('soft.csr')], {});
  t.equal(ok.code, 0, ok.stderr);
  oneLineError(t, await cli(['csr', '--backend', 'soft', '--key', f('web.key.pem'), '--subject', 'CN=soft', '--out', f('soft2.csr')], {}), /web\.key\.pem is a key reference.*soft backend only loads real/);
});

t.test('bad input: each is a clear one-line error and a non-zero exit', async (t) => {
  await writeFile(f('garbage.pem'), 'not a key\n');
  const tampered = (await readFile(f('web.csr'), 'utf8')).split('\n');
  const der = Buffer.from(tampered.slice(1, -2).join(''), 'base64');
  der[der.indexOf(Buffer.from('www.example.com'))] = 'x'.charCodeAt(0);
  await writeFile(f('forged.csr'), `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`);
  const csrArgs = (key: string): string[] => ['csr', '--key', key, '--subject', 'CN=x', '--out', f('x.csr')];
  const cases: Array<[string, Promise<CliResult>, RegExp]> = [
    ['malformed PEM', cli(csrArgs(f('garbage.pem'))), /garbage\.pem is not a valid hsmproxy key reference: no PEM block found/],
    ['a real private key where a reference is expected', cli(csrArgs(f('real.pem'))), /real\.pem holds a real private key, not a key reference; import it .*key import/],
    ['a reference from another cluster', cli(csrArgs(f('web.key.pem')), PIN, '99'.repeat(32)), /web\.key\.pem refers to a key in cluster 7c7c.*but this cluster is 9999/],
    ['wrong credentials', cli(csrArgs(f('web.key.pem')), { HSMPROXY_PIN: 'cu1:wrong' }), /refused the crypto-user login.*HSMPROXY_PIN/],
    ['no credentials', cli(csrArgs(f('web.key.pem')), {}), /no crypto-user credentials: set HSMPROXY_PIN=user:password/],
    ['a CSR whose signature does not verify', cli(['ca', 'sign', '--ca-key', f('ca.key.pem'), '--ca-cert', f('ca.crt'), '--csr', f('forged.csr'), '--days', '9', '--out', f('forged.crt')]), /forged\.csr: the CSR's signature does not verify/],
    ['an unknown SAN type', cli([...csrArgs(f('web.key.pem')), '--san', 'FOO:bar']), /bad --san entry "FOO:bar": unknown SAN type "FOO" \(use DNS:name, IP:address/],
    ['a bad subject', cli(['csr', '--key', f('web.key.pem'), '--subject', 'CN=a,XX=b', '--out', f('x.csr')]), /bad --subject .*unknown attribute type "XX"/],
    ['a bad --days', cli(['cert', 'self-sign', '--key', f('web.key.pem'), '--subject', 'CN=a', '--days', 'ten', '--out', f('x.pem')]), /--days must be a whole number/],
    ['a CA key that does not match the CA certificate', cli(['ca', 'sign', '--ca-key', f('web.key.pem'), '--ca-cert', f('ca.crt'), '--csr', f('web.csr'), '--days', '9', '--out', f('p.crt')]), /CA key does not match the CA certificate/],
  ];
  const results = await Promise.all(cases.map(([, p]) => p));
  cases.forEach(([what, , pattern], i) => t.test(what, async (t) => oneLineError(t, results[i]!, pattern)));
});

t.test('a reference to a deleted key is a clear one-line error', async (t) => {
  const del = new FakeHsm(dir);
  await del.login('cu1', 'secret1');
  const [web] = await del.findKeys({ label: 'web' });
  await del.deleteKey(web!.id);
  oneLineError(t, await cli(['csr', '--key', f('web.key.pem'), '--subject', 'CN=x', '--out', f('x.csr')]), new RegExp(`key ${web!.id} \\("web"\\) named by .*web\\.key\\.pem was not found in the HSM`));
});

t.test('a credentials file readable by others is refused', async (t) => {
  await writeFile(f('creds'), 'cu1:secret1\n');
  await chmod(f('creds'), 0o644);
  oneLineError(t, await cli(['csr', '--key', f('ca.key.pem'), '--subject', 'CN=x', '--out', f('x.csr'), '--credentials', f('creds')], {}), /readable by others.*chmod 600/);
});
