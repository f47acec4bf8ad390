// `config check` checks what serve will: each listener certificate against the public key its
// key reference carries (serve refused a mismatch that check called valid), and a demo config
// before its first start is valid (serve makes its certificates then).
import t from 'tap';
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatKeyRef } from '../src/engine/index.js';
import { repoRoot, runCli } from './helpers/cli.js';
import { issue, makeCa } from './helpers/proxy-certs.js';

const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-config-check-keys-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
makeCa(dir);
const a = issue(dir, 'a', ['a.example']);
const b = issue(dir, 'b', ['b.example']);

/** A key reference (as `key reference` writes it) for the public key of `keyFile`. */
function reference(keyFile: string, out: string): string {
  const publicKey = createPublicKey(createPrivateKey(readFileSync(keyFile)));
  writeFileSync(out, formatKeyRef({ backend: 'sim', clusterId: randomBytes(32).toString('hex'), keyId: randomBytes(16).toString('hex'), label: 'web', publicKey }));
  return out;
}
const refA = reference(a.key, join(dir, 'a.ref.pem'));

function config(name: string, cert: string, key: string): string {
  const file = join(dir, name);
  writeFileSync(file, `listeners:\n  - port: 8443\n    certificates: [{ cert: ${cert}, key: ${key} }]\nroutes: [{ upstream: [http://127.0.0.1:8080] }]\nhsm: { mode: cluster, manifest: ${join(dir, 'ca.pem')} }\n`);
  return file;
}

t.test('a certificate with its own key reference is valid', async (t) => {
  const r = await runCli(['config', 'check', config('good.yaml', a.cert, refA)]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /good\.yaml: valid/);
});

t.test("a certificate whose key reference holds another key's public key is invalid, with the entry's path", async (t) => {
  const r = await runCli(['config', 'check', config('swapped.yaml', b.cert, refA)]);
  t.equal(r.code, 1);
  t.match(r.stderr, /swapped\.yaml: 1 problem:\n {2}listeners\[0\]\.certificates\[0\]: the key .*a\.ref\.pem does not match the certificate .*b\.pem\n$/);
  const json = await runCli(['config', 'check', '--json', join(dir, 'swapped.yaml')]);
  t.same((JSON.parse(json.stdout) as { valid: boolean; issues: Array<{ path: string }> }).issues.map((i) => i.path), ['listeners[0].certificates[0]']);
  t.equal((await runCli(['config', 'check', '--no-files', join(dir, 'swapped.yaml')])).code, 0, '--no-files skips it');
});

t.test('a key entry that is no key reference is named at its .key path', async (t) => {
  const r = await runCli(['config', 'check', config('realkey.yaml', a.cert, a.key)]);
  t.equal(r.code, 1);
  t.match(r.stderr, /listeners\[0\]\.certificates\[0\]\.key: .*a\.key/);
});

t.test('the demo config is valid before its first start, and says its certificates come then', async (t) => {
  const fresh = mkdtempSync(join(tmpdir(), 'hsmproxy-config-check-fresh-'));
  t.teardown(() => rmSync(fresh, { recursive: true, force: true }));
  copyFileSync(join(repoRoot, 'config', 'hsmproxy.yaml'), join(fresh, 'hsmproxy.yaml'));
  const r = await runCli(['config', 'check', 'hsmproxy.yaml'], { cwd: fresh });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /hsmproxy\.yaml: valid .*\n {2}demo: its certificates and key references are made by the first `hsmproxy serve`/);
});
