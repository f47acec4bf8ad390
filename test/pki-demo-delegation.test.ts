// The demo PKI and delegated credentials: a fresh demo issues both localhost leaves with
// DelegationUsage; demo files from before it existed get their leaves issued again on the next
// start, for the same keys and by the same dev CA (so whoever trusts the dev CA keeps working),
// and the files are left alone once they carry it. The sim backend is an in-memory FakeHsm.
import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine, SimBackend } from '../src/engine/index.js';
import { ensureDemoPki } from '../src/pki/demo.js';
import { certPem, selfSign, signingKey } from '../src/pki/index.js';
import { canDelegate } from '../src/tls/delegated.js';
import { FakeHsm } from './helpers/fake-hsm.js';

const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-demo-dc-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const hsm = new FakeHsm();
const creds = { user: 'cu1', password: 'secret1' };
await hsm.login(creds.user, creds.password);
const backend = new SimBackend({ client: hsm, clusterId: '3e'.repeat(32), credentials: creds });
const engine = new Engine({ backends: { sim: backend } });
t.teardown(() => engine.close());

const leaf = async (file: string) => new X509Certificate(await readFile(file));

t.test('fresh demo leaves can delegate; old ones are reissued by the same CA for the same keys', async (t) => {
  const first = await ensureDemoPki(engine, backend, dir);
  t.equal(first.created, true);
  const f = first.files;
  for (const chain of [f.rsaChain, f.ecdsaChain]) t.ok(canDelegate(Buffer.from((await leaf(chain)).raw)), `${chain} can delegate`);
  const caBefore = await readFile(f.caCert, 'utf8');
  const keyBefore = await readFile(f.ecdsaKey, 'utf8');

  // A demo leaf as made before DelegationUsage: same key, no extension.
  const key = await signingKey(await engine.signer(f.ecdsaKey), engine.webcrypto());
  await writeFile(f.ecdsaChain, certPem(await selfSign(key, { subject: 'CN=localhost', sans: ['DNS:localhost'], days: 2 })));
  t.equal(canDelegate(Buffer.from((await leaf(f.ecdsaChain)).raw)), false, 'the old-style leaf cannot');
  const rsaBefore = await readFile(f.rsaChain, 'utf8');

  const second = await ensureDemoPki(engine, backend, dir);
  t.equal(second.created, true, 'reported as made');
  const reissued = await leaf(f.ecdsaChain);
  t.ok(canDelegate(Buffer.from(reissued.raw)), 'the reissued leaf can delegate');
  t.equal(await readFile(f.caCert, 'utf8'), caBefore, 'the dev CA is unchanged');
  t.equal(await readFile(f.ecdsaKey, 'utf8'), keyBefore, 'the key reference is unchanged');
  t.ok(reissued.checkIssued(new X509Certificate(caBefore)) && reissued.verify(new X509Certificate(caBefore).publicKey), 'issued by the same dev CA');
  t.ok(reissued.publicKey.equals((await engine.signer(f.ecdsaKey)).key.publicKey), 'for the same key the HSM holds');
  t.equal(await readFile(f.rsaChain, 'utf8'), rsaBefore, 'a leaf that already delegates is left alone');

  const third = await ensureDemoPki(engine, backend, dir);
  t.equal(third.created, false, 'nothing to do the next time');
});
