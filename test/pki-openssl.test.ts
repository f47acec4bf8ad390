// openssl accepts what pki/ makes with HSM-held keys (the sim backend over a FakeHsm whose keys
// never appear in the reference files): CSRs, self-signed certificates, a CA and issued certificates.
import t from 'tap';
import { createPublicKey } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine, SimBackend, writeKeyReference, type KeyAlgorithm } from '../src/engine/index.js';
import { caCsr, caInit, caSign, certPem, chainPem, createCsr, issuedLogPath, parseCertificate, parseCsr, selfSign, signingKey } from '../src/pki/index.js';
import { randomSerial } from '../src/pki/cert.js';
import { FakeHsm } from './helpers/fake-hsm.js';
import { openssl } from './helpers/openssl.js';

const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-pki-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const CLUSTER = '5a'.repeat(32);
const hsm = new FakeHsm();
const backend = new SimBackend({ client: hsm, clusterId: CLUSTER, credentials: { user: 'cu1', password: 'secret1' } });
const engine = new Engine({ backends: { sim: backend } });
t.teardown(() => engine.close());

async function newKey(alg: KeyAlgorithm, name: string, pss = false) {
  const made = await backend.generateKeyPair({ algorithm: alg, label: name });
  const refFile = join(dir, `${name}.key.pem`);
  await writeKeyReference(made, refFile);
  const signer = await engine.signer(refFile); // through the file, as the CLI does
  return { refFile, key: await signingKey(signer, engine.webcrypto(), { pss }), made };
}

const CASES: Array<[string, KeyAlgorithm, RegExp]> = [
  ['RSA-2048', { type: 'rsa', bits: 2048 }, /sha256WithRSAEncryption/],
  ['RSA-3072', { type: 'rsa', bits: 3072 }, /sha256WithRSAEncryption/],
  ['P-256', { type: 'ec', curve: 'P-256' }, /ecdsa-with-SHA256/],
  ['P-384', { type: 'ec', curve: 'P-384' }, /ecdsa-with-SHA384/],
];

for (const [name, alg, sigAlg] of CASES) {
  t.test(`${name}: CSR, self-signed and CA-issued certificates made in the HSM verify with openssl`, async (t) => {
    const leaf = await newKey(alg, `${name}-leaf`);
    const ca = await newKey(alg, `${name}-ca`);
    const csrFile = join(dir, `${name}.csr`);
    await writeFile(csrFile, await createCsr(leaf.key, { subject: 'CN=www.example.com,O=Example Ltd,C=GB', sans: ['DNS:www.example.com,DNS:example.com,IP:127.0.0.1'] }));
    const req = await openssl(['req', '-verify', '-noout', '-in', csrFile]);
    t.equal(req.code, 0, req.stderr);
    t.match(req.stdout + req.stderr, /verify OK/i, 'openssl req -verify');
    const reqText = await openssl(['req', '-noout', '-text', '-in', csrFile]);
    t.match(reqText.stdout, /Subject: C ?= ?GB, O ?= ?Example Ltd, CN ?= ?www\.example\.com/);
    t.match(reqText.stdout, /DNS:www\.example\.com, DNS:example\.com, IP Address:127\.0\.0\.1/);
    t.match(reqText.stdout, sigAlg);

    const selfFile = join(dir, `${name}.self.pem`);
    await writeFile(selfFile, certPem(await selfSign(leaf.key, { subject: 'CN=www.example.com', sans: ['DNS:www.example.com'], days: 30 })));
    const selfText = await openssl(['x509', '-noout', '-text', '-in', selfFile]);
    t.equal(selfText.code, 0, selfText.stderr);
    t.match(selfText.stdout, sigAlg);
    t.match(selfText.stdout, /TLS Web Server Authentication/);
    const selfVerify = await openssl(['verify', '-CAfile', selfFile, selfFile]);
    t.equal(selfVerify.code, 0, `self-signed verifies against itself: ${selfVerify.stdout}${selfVerify.stderr}`);

    const caFile = join(dir, `${name}.ca.crt`);
    const caCert = await caInit(ca.key, { subject: 'CN=Example Issuing CA,O=Example Ltd', days: 365 });
    await writeFile(caFile, certPem(caCert));
    const caText = await openssl(['x509', '-noout', '-text', '-in', caFile]);
    t.match(caText.stdout, /CA:TRUE/);
    t.match(caText.stdout, /Certificate Sign, CRL Sign/);

    const csr = parseCsr(await readFile(csrFile, 'utf8'), csrFile);
    const { cert, record } = await caSign(ca.key, { caCert, caCertFile: caFile, csr, csrFile, days: 90, profile: 'server' });
    const certFile = join(dir, `${name}.crt`);
    await writeFile(certFile, certPem(cert));
    const v = await openssl(['verify', '-CAfile', caFile, certFile]);
    t.equal(v.code, 0, v.stderr);
    t.match(v.stdout, /OK/, 'openssl verify -CAfile ca.crt cert.pem');
    const text = (await openssl(['x509', '-noout', '-text', '-in', certFile])).stdout;
    t.match(text, /DNS:www\.example\.com, DNS:example\.com, IP Address:127\.0\.0\.1/, 'SANs copied from the CSR');
    t.match(text, /CA:FALSE/);
    t.match(text, /TLS Web Server Authentication/);
    t.match(text, /X509v3 Subject Key Identifier/);
    t.match(text, /X509v3 Authority Key Identifier/);
    t.match(text, sigAlg);
    t.ok(record.serial.length <= 32, 'at most 128 bits');
    t.match((await openssl(['x509', '-noout', '-serial', '-in', certFile])).stdout, new RegExp(`serial=${record.serial}`, 'i'));
    const log = (await readFile(issuedLogPath(caFile), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { serial: string });
    t.equal(log.at(-1)!.serial, record.serial, 'appended to the issued-certificates log');

    // The reference's public key = the HSM key's = the certificate's.
    const refPub = (await openssl(['pkey', '-in', leaf.refFile, '-pubout'])).stdout;
    const certPub = (await openssl(['x509', '-in', certFile, '-pubkey', '-noout'])).stdout;
    t.equal(refPub, certPub, 'openssl: reference public key = certificate public key');
    t.equal(refPub, leaf.made.publicKey.export({ type: 'spki', format: 'pem' }), 'reference public key = HSM key');
    const hsmPub = createPublicKey({ key: await hsm.exportPublicKey(leaf.made.keyId), format: 'der', type: 'spki' });
    t.equal(certPub, hsmPub.export({ type: 'spki', format: 'pem' }), 'certificate public key = what the HSM exports');

    const chainFile = join(dir, `${name}.chain.pem`);
    await writeFile(chainFile, chainPem(cert, caCert));
    t.equal(parseCertificate(await readFile(chainFile, 'utf8'), chainFile).serialNumber.toLowerCase(), record.serial, 'chain starts with the leaf');
  });
}

t.test('an RSA key signs certificates with RSASSA-PSS on request', async (t) => {
  const k = await newKey({ type: 'rsa', bits: 2048 }, 'pss', true);
  const file = join(dir, 'pss.crt');
  await writeFile(file, certPem(await selfSign(k.key, { subject: 'CN=pss.example', days: 1 })));
  t.match((await openssl(['x509', '-noout', '-text', '-in', file])).stdout, /rsassaPss/);
  const v = await openssl(['verify', '-CAfile', file, file]);
  t.equal(v.code, 0, v.stderr);
});

t.test('a client profile gets clientAuth, and a CSR with a broken signature is refused', async (t) => {
  const leaf = await newKey({ type: 'ec', curve: 'P-256' }, 'client-leaf');
  const ca = await newKey({ type: 'ec', curve: 'P-256' }, 'client-ca');
  const caCert = await caInit(ca.key, { subject: 'CN=Client CA', days: 30 });
  const caFile = join(dir, 'client-ca.crt');
  await writeFile(caFile, certPem(caCert));
  const pem = await createCsr(leaf.key, { subject: 'CN=alice', sans: ['email:alice@example.com'] });
  const { cert } = await caSign(ca.key, { caCert, caCertFile: caFile, csr: parseCsr(pem, 'alice.csr'), csrFile: 'alice.csr', days: 10, profile: 'client' });
  const f = join(dir, 'alice.crt');
  await writeFile(f, certPem(cert));
  const text = (await openssl(['x509', '-noout', '-text', '-in', f])).stdout;
  t.match(text, /TLS Web Client Authentication/);
  t.match(text, /email:alice@example\.com/);
  // Flip one byte of the subject inside the CSR: its signature no longer verifies.
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  const at = der.indexOf(Buffer.from('alice'));
  der[at] = 'm'.charCodeAt(0);
  const forged = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
  await t.rejects(caSign(ca.key, { caCert, caCertFile: caFile, csr: parseCsr(forged, 'forged.csr'), csrFile: 'forged.csr', days: 10, profile: 'server' }), { code: 'PKI_ERR_CSR_SIGNATURE', message: /forged\.csr: the CSR's signature does not verify/ });
  await t.rejects(caSign(leaf.key, { caCert, caCertFile: caFile, csr: parseCsr(pem, 'alice.csr'), csrFile: 'alice.csr', days: 10, profile: 'server' }), { code: 'PKI_ERR_CA', message: /CA key does not match/ });
});

t.test('ca csr: an offline openssl root signs the HSM intermediate, which then issues leaves openssl verifies', async (t) => {
  const root = { key: join(dir, 'root.key'), crt: join(dir, 'root.crt') };
  const mk = await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', root.key, '-out', root.crt, '-subj', '/CN=Offline Root', '-days', '30']);
  t.equal(mk.code, 0, mk.stderr);
  const inter = await newKey({ type: 'ec', curve: 'P-384' }, 'intermediate');
  const csrFile = join(dir, 'intermediate.csr');
  await writeFile(csrFile, await caCsr(inter.key, { subject: 'CN=HSM Issuing CA,O=Example Ltd', pathLength: 0 }));
  t.match((await openssl(['req', '-noout', '-text', '-in', csrFile])).stdout, /CA:TRUE, pathlen:0/, 'the CSR requests CA:TRUE');
  const interCrt = join(dir, 'intermediate.crt');
  const signed = await openssl(['x509', '-req', '-in', csrFile, '-CA', root.crt, '-CAkey', root.key, '-CAcreateserial', '-copy_extensions', 'copy', '-days', '20', '-out', interCrt]);
  t.equal(signed.code, 0, signed.stderr);
  const leaf = await newKey({ type: 'rsa', bits: 2048 }, 'under-intermediate');
  const leafCsr = parseCsr(await createCsr(leaf.key, { subject: 'CN=deep.example.com', sans: ['DNS:deep.example.com'] }), 'deep.csr');
  const interCert = parseCertificate(await readFile(interCrt, 'utf8'), interCrt);
  const { cert } = await caSign(inter.key, { caCert: interCert, caCertFile: interCrt, csr: leafCsr, csrFile: 'deep.csr', days: 5, profile: 'server' });
  const leafFile = join(dir, 'deep.crt');
  await writeFile(leafFile, certPem(cert));
  const v = await openssl(['verify', '-CAfile', root.crt, '-untrusted', interCrt, leafFile]);
  t.equal(v.code, 0, v.stderr);
  t.match(v.stdout, /deep\.crt: OK/, 'root → HSM intermediate → leaf verifies');
});

t.test('node:tls (OpenSSL) accepts a reference with its certificate as a matching pair, and refuses a mismatched one', async (t) => {
  const { createSecureContext } = await import('node:tls');
  const rsa = await newKey({ type: 'rsa', bits: 2048 }, 'tls-rsa');
  const ec = await newKey({ type: 'ec', curve: 'P-256' }, 'tls-ec');
  const rsaCert = certPem(await selfSign(rsa.key, { subject: 'CN=rsa', days: 1 }));
  const ecCert = certPem(await selfSign(ec.key, { subject: 'CN=ec', days: 1 }));
  const rsaRef = await readFile(rsa.refFile, 'utf8');
  const ecRef = await readFile(ec.refFile, 'utf8');
  t.doesNotThrow(() => createSecureContext({ key: rsaRef, cert: rsaCert }), 'RSA reference + its certificate');
  t.doesNotThrow(() => createSecureContext({ key: ecRef, cert: ecCert }), 'EC reference + its certificate');
  const other = await newKey({ type: 'ec', curve: 'P-256' }, 'tls-ec-other');
  const otherCert = certPem(await selfSign(other.key, { subject: 'CN=other', days: 1 }));
  t.throws(() => createSecureContext({ key: ecRef, cert: otherCert }), /key values mismatch/, 'the usual key/certificate mismatch check still works');
});

t.test('serials are 128 random bits: the top bit is random too (DER adds the 0x00)', async (t) => {
  const serials = Array.from({ length: 256 }, () => randomSerial());
  for (const s of serials) {
    t.ok(/^([0-9a-f]{2})+$/.test(s) && s.length <= 32 && !s.startsWith('00'), `${s}: a minimal 1..16-octet magnitude`);
  }
  // Forcing the top two bits (as before) made every first octet 0x40..0x7f.
  t.ok(serials.some((s) => s.length === 32 && parseInt(s.slice(0, 2), 16) >= 0x80), 'some have the top bit set');
  t.ok(serials.some((s) => s.length === 32 && parseInt(s.slice(0, 2), 16) < 0x40), 'some have the second bit clear');
});
