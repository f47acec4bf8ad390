// Resolving key references on a backend: fail early and clearly (missing key, other cluster,
// wrong or missing credentials), and load credentials only from the environment or a 0600 file.
import t from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine, SimBackend, loadCredentials, parseCredentials, writeKeyReference, type KeyRef } from '../src/engine/index.js';
import { FakeHsm } from './helpers/fake-hsm.js';

const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-backends-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const CLUSTER = 'ef'.repeat(32);

async function setup(credentials = { user: 'cu1', password: 'secret1' }) {
  const hsm = new FakeHsm();
  const maker = new SimBackend({ client: hsm, clusterId: CLUSTER, credentials: { user: 'cu1', password: 'secret1' }, ownsClient: false });
  const made = await maker.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'web' });
  const file = join(dir, `ref-${made.keyId}.pem`);
  await writeKeyReference(made, file);
  const engine = new Engine({ openers: { sim: async () => new SimBackend({ client: hsm, clusterId: CLUSTER, credentials }) } });
  return { hsm, maker, made, file, engine };
}

t.test('a reference resolves to the HSM key it names, with the same public key', async (t) => {
  const { made, file, engine } = await setup();
  const handle = await engine.loadKey(file);
  t.equal(handle.keyId, made.keyId);
  t.equal(handle.label, 'web');
  t.ok(handle.publicKey.equals(made.publicKey));
  await engine.close();
});

t.test('a reference to a deleted key fails with ENGINE_ERR_KEY_NOT_FOUND naming the file', async (t) => {
  const { made, maker, file, engine } = await setup();
  await maker.delete(made);
  await t.rejects(engine.loadKey(file), { code: 'ENGINE_ERR_KEY_NOT_FOUND', message: new RegExp(`key ${made.keyId} \\("web"\\) named by ${file} was not found`) });
  await engine.close();
});

t.test('a reference from another cluster fails with ENGINE_ERR_OTHER_CLUSTER naming the file', async (t) => {
  const { made, engine } = await setup();
  const foreign: KeyRef = { ...made.ref!, clusterId: '12'.repeat(32) } as KeyRef;
  const file = join(dir, 'foreign.pem');
  await writeKeyReference(foreign, file);
  const engine2 = new Engine({ backends: { sim: new SimBackend({ client: new FakeHsm(), clusterId: CLUSTER, credentials: { user: 'cu1', password: 'secret1' } }) } });
  await t.rejects(engine2.loadKey(file), { code: 'ENGINE_ERR_OTHER_CLUSTER', message: new RegExp(`${file} refers to a key in cluster 1212`) });
  await engine.close();
  await engine2.close();
});

t.test('wrong credentials fail with ENGINE_ERR_BAD_CREDENTIALS before anything is signed', async (t) => {
  const { file, engine, hsm } = await setup({ user: 'cu1', password: 'wrong' });
  await t.rejects(engine.loadKey(file), { code: 'ENGINE_ERR_BAD_CREDENTIALS', message: /refused the crypto-user login.*HSMPROXY_PIN/ });
  t.equal(hsm.signCalls, 0);
  await engine.close();
});

t.test('a key whose public key differs from the reference is refused', async (t) => {
  const { made, engine } = await setup();
  const swapped = { ...made.ref!, publicKey: generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey } as KeyRef;
  const file = join(dir, 'swapped.pem');
  await writeKeyReference(swapped, file);
  await t.rejects(engine.loadKey(file), { code: 'ENGINE_ERR_KEY_MISMATCH' });
  await engine.close();
});

t.test('an engine with no backend for the reference says which backend is missing', async (t) => {
  const { file } = await setup();
  const engine = new Engine();
  await t.rejects(engine.loadKey(file), { code: 'ENGINE_ERR_UNSUPPORTED', message: /names a sim key, but no sim backend is configured/ });
});

t.test('credentials come from HSMPROXY_PIN as user:password', async (t) => {
  t.same(await loadCredentials({ env: { HSMPROXY_PIN: 'cu1:pa:ss' } }), { user: 'cu1', password: 'pa:ss' });
  await t.rejects(loadCredentials({ env: {} }), { code: 'ENGINE_ERR_BAD_CREDENTIALS', message: /set HSMPROXY_PIN=user:password/ });
  await t.rejects(loadCredentials({ env: { HSMPROXY_PIN: 'nocolon' } }), { code: 'ENGINE_ERR_BAD_CREDENTIALS' });
  t.same(parseCredentials('1234', 'pin', true), { password: '1234' }, 'a plain PIN where allowed (PKCS#11)');
});

t.test('a credentials file must be mode 0600', async (t) => {
  const file = join(dir, 'creds');
  await writeFile(file, 'cu1:secret1\n');
  await chmod(file, 0o644);
  await t.rejects(loadCredentials({ env: { HSMPROXY_CREDENTIALS: file } }), { code: 'ENGINE_ERR_BAD_CREDENTIALS', message: /readable by others.*chmod 600/ });
  await chmod(file, 0o600);
  t.same(await loadCredentials({ env: { HSMPROXY_CREDENTIALS: file } }), { user: 'cu1', password: 'secret1' });
  await t.rejects(loadCredentials({ file: join(dir, 'nope') }), { code: 'ENGINE_ERR_BAD_CREDENTIALS', message: /cannot read credentials file/ });
});
