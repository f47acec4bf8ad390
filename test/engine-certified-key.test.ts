// loadCertifiedKey: a key reference and its certificate chain become the CertifiedKey tls/ uses,
// and a certificate for another key is refused at load time, not at the first handshake.
import t from 'tap';
import { verify } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine, SimBackend, loadCertifiedKey, writeKeyReference } from '../src/engine/index.js';
import { certPem, selfSign, signingKey } from '../src/pki/index.js';
import { FakeHsm } from './helpers/fake-hsm.js';

const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-certified-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const backend = new SimBackend({ client: new FakeHsm(), clusterId: '3e'.repeat(32), credentials: { user: 'cu1', password: 'secret1' } });
const engine = new Engine({ backends: { sim: backend } });
t.teardown(() => engine.close());

async function keyWithCert(name: string): Promise<{ ref: string; cert: string }> {
  const made = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: name });
  const ref = join(dir, `${name}.key.pem`);
  await writeKeyReference(made, ref);
  const cert = join(dir, `${name}.crt`);
  await writeFile(cert, certPem(await selfSign(await signingKey(await engine.signer(ref), engine.webcrypto()), { subject: `CN=${name}`, days: 1 })));
  return { ref, cert };
}

t.test('a reference and its certificate load as a CertifiedKey whose signer signs for the leaf key', async (t) => {
  const a = await keyWithCert('a');
  const ck = await loadCertifiedKey(engine, a.ref, a.cert);
  t.equal(ck.chain.length, 1);
  t.equal(ck.leaf.subject, 'CN=a');
  const sig = await ck.signer.sign(0x0403, Buffer.from('cv'));
  t.ok(verify('sha256', Buffer.from('cv'), ck.leaf.publicKey, sig), 'verifies under the certificate');
});

t.test('a certificate for another key is refused with ENGINE_ERR_KEY_MISMATCH naming both files', async (t) => {
  const a = await keyWithCert('b');
  const other = await keyWithCert('c');
  await t.rejects(loadCertifiedKey(engine, a.ref, other.cert), { code: 'ENGINE_ERR_KEY_MISMATCH', message: /c\.crt does not certify the key in .*b\.key\.pem/ });
});

t.test('a missing or non-certificate chain file is refused with ENGINE_ERR_CHAIN', async (t) => {
  const a = await keyWithCert('d');
  await t.rejects(loadCertifiedKey(engine, a.ref, join(dir, 'nope.crt')), { code: 'ENGINE_ERR_CHAIN', message: /nope\.crt: cannot read it \(ENOENT\)/ });
  await writeFile(join(dir, 'junk.crt'), 'junk');
  await t.rejects(loadCertifiedKey(engine, a.ref, join(dir, 'junk.crt')), { code: 'ENGINE_ERR_CHAIN', message: /no PEM certificate/ });
});
