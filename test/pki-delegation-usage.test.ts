// `cert self-sign --delegation-usage` and `ca sign --delegation-usage` as a user runs them: the
// DelegationUsage extension (RFC 9345 §4.2: OID 1.3.6.1.4.1.44363.44, non-critical, NULL) next to
// keyUsage digitalSignature, as openssl prints it; refused off the server profile. The sim
// backend is a FakeHsm persisted in a temp dir.
import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine, SimBackend, writeKeyReference } from '../src/engine/index.js';
import { caInit, certPem, createCsr, signingKey } from '../src/pki/index.js';
import { canDelegate } from '../src/tls/delegated.js';
import { readCertFields } from '../src/tls/x509-der.js';
import { runCliWithFakeHsm } from './helpers/cli-fake-hsm.js';
import { FakeHsm } from './helpers/fake-hsm.js';
import { oneLineError } from './helpers/cli.js';
import { openssl } from './helpers/openssl.js';

const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-pki-dc-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const CLUSTER = '5d'.repeat(32);
const f = (name: string): string => join(dir, name);
const cli = (args: string[]) => runCliWithFakeHsm(args, { hsmDir: dir, clusterId: CLUSTER, env: { HSMPROXY_PIN: 'cu1:secret1' } });

// Keys, references, the CSR and the CA certificate are made in process (the library the CLI
// calls); only the commands under test run as the CLI.
const hsm = new FakeHsm(dir);
await hsm.login('cu1', 'secret1');
const backend = new SimBackend({ client: hsm, clusterId: CLUSTER, credentials: { user: 'cu1', password: 'secret1' } });
const engine = new Engine({ backends: { sim: backend } });
t.teardown(() => engine.close());
for (const label of ['web', 'ca']) {
  const made = engine.adopt(await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label }), backend);
  await writeKeyReference(made, f(`${label}.key.pem`));
}
const web = await signingKey(await engine.signer(f('web.key.pem')), engine.webcrypto());
await writeFile(f('web.csr'), await createCsr(web, { subject: 'CN=localhost', sans: ['DNS:localhost'] }));
const caKey = await signingKey(await engine.signer(f('ca.key.pem')), engine.webcrypto());
await writeFile(f('ca.crt'), certPem(await caInit(caKey, { subject: 'CN=DC test CA', days: 60 })));

async function leafDer(file: string): Promise<Buffer> {
  return Buffer.from(new X509Certificate(await readFile(file)).raw);
}

t.test('cert self-sign and ca sign with --delegation-usage; refused off the server profile', async (t) => {
  const self = await cli(['cert', 'self-sign', '--key', f('web.key.pem'), '--subject', 'CN=localhost', '--san', 'DNS:localhost', '--days', '30', '--delegation-usage', '--out', f('self.pem')]);
  t.equal(self.code, 0, self.stderr);
  const text = await openssl(['x509', '-noout', '-text', '-in', f('self.pem')]);
  t.match(text.stdout, /1\.3\.6\.1\.4\.1\.44363\.44:\s*\n\s*\.\./, 'openssl shows the DelegationUsage extension, non-critical');
  t.match(text.stdout, /Key Usage: critical\s*\n\s*Digital Signature/, 'with keyUsage digitalSignature');
  const ext = readCertFields(await leafDer(f('self.pem'))).extensions.get('1.3.6.1.4.1.44363.44');
  t.same(ext && { critical: ext.critical, value: [...ext.value] }, { critical: false, value: [0x05, 0x00] }, 'value NULL, not critical');
  t.equal(canDelegate(await leafDer(f('self.pem'))), true);

  const signed = await cli(['ca', 'sign', '--ca-key', f('ca.key.pem'), '--ca-cert', f('ca.crt'), '--csr', f('web.csr'), '--days', '30', '--profile', 'server', '--delegation-usage', '--out', f('issued.pem')]);
  t.equal(signed.code, 0, signed.stderr);
  t.equal(canDelegate(await leafDer(f('issued.pem'))), true, 'ca sign --delegation-usage');
  t.equal((await openssl(['verify', '-CAfile', f('ca.crt'), f('issued.pem')])).code, 0, 'openssl verifies the issued certificate');

  const client = await cli(['ca', 'sign', '--ca-key', f('ca.key.pem'), '--ca-cert', f('ca.crt'), '--csr', f('web.csr'), '--days', '30', '--profile', 'client', '--delegation-usage', '--out', f('client.pem')]);
  oneLineError(t, client, /--delegation-usage is for server certificates only/);
});
