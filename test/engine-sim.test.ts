// The sim backend against real simulated HSM node processes (embedded cluster): keys generated
// inside the HSM, key references written for them, and CSRs/certificates that openssl accepts —
// through the library and through the CLI as a user runs it.
import t, { type Test } from 'tap';
import { createPublicKey, verify, constants } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine, SimBackend, simClientFrom, writeKeyReference, type KeyAlgorithm, type SimKeyRef } from '../src/engine/index.js';
import { startEmbeddedCluster } from '../src/hsm/cluster/embedded.js';
import { readManifest } from '../src/hsm/cluster/manifest.js';
import { caInit, caSign, certPem, createCsr, parseCsr, selfSign, signingKey } from '../src/pki/index.js';
import { runCli, type CliResult } from './helpers/cli.js';
import { openssl } from './helpers/openssl.js';

const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-engine-sim-'));
const work = await mkdtemp(join(tmpdir(), 'hsmproxy-engine-sim-work-'));
const cluster = await startEmbeddedCluster({ dir, hsms: 2, scryptCost: 1024 });
const pids = [...cluster.supervisor.pids().values()];
t.teardown(async () => {
  await cluster.stop();
  for (const pid of pids) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
  }
  await rm(dir, { recursive: true, force: true });
  await rm(work, { recursive: true, force: true });
});
const { clusterId } = await readManifest(dir);
const cu = cluster.credentials.cu;
const PIN = { HSMPROXY_PIN: `${cu.user}:${cu.password}`, HSMPROXY_DIR: dir };
// The test's own view of the cluster: a SimBackend over the embedded ClusterClient (not closed by the engine).
const backend = new SimBackend({ client: simClientFrom(cluster.client), clusterId, credentials: cu, ownsClient: false });
const engine = new Engine({ backends: { sim: backend } });
const f = (name: string): string => join(work, name);

function oneLineError(t: Test, r: CliResult, pattern: RegExp): void {
  t.not(r.code, 0, 'non-zero exit');
  t.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  t.match(r.stderr, pattern);
}

const CASES: Array<[string, KeyAlgorithm, RegExp, number[]]> = [
  ['RSA-2048', { type: 'rsa', bits: 2048 }, /sha256WithRSAEncryption/, [0x0804, 0x0401]],
  ['RSA-3072', { type: 'rsa', bits: 3072 }, /sha256WithRSAEncryption/, [0x0805]],
  ['P-256', { type: 'ec', curve: 'P-256' }, /ecdsa-with-SHA256/, [0x0403]],
  ['P-384', { type: 'ec', curve: 'P-384' }, /ecdsa-with-SHA384/, [0x0503]],
];

for (const [name, alg, sigAlg, schemes] of CASES) {
  t.test(`${name} in the simulated HSM: reference, TLS signatures, CSR and certificates openssl accepts`, async (t) => {
    const made = await backend.generateKeyPair({ algorithm: alg, label: `${name}-leaf` });
    const caMade = await backend.generateKeyPair({ algorithm: alg, label: `${name}-ca` });
    await writeKeyReference(made, f(`${name}.key.pem`));
    await writeKeyReference(caMade, f(`${name}.ca.key.pem`));

    const hsmPub = createPublicKey({ key: (await cluster.client.exportPublicKey(made.keyId)).der, format: 'der', type: 'spki' });
    const refPub = await openssl(['pkey', '-in', f(`${name}.key.pem`), '-pubout']);
    t.equal(refPub.stdout, hsmPub.export({ type: 'spki', format: 'pem' }), 'openssl: the reference carries the HSM key\'s public key');

    const signer = await engine.signer(f(`${name}.key.pem`));
    for (const scheme of schemes) {
      const data = Buffer.from(`handshake transcript ${scheme}`);
      const sig = await signer.sign(scheme, data);
      const hash = scheme === 0x0805 || scheme === 0x0503 ? 'sha384' : 'sha256';
      const key = scheme >= 0x0804 ? { key: hsmPub, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 + (hash === 'sha384' ? 16 : 0) } : hsmPub;
      t.ok(verify(hash, data, key, sig), `TLS scheme 0x${scheme.toString(16)} signature from the HSM verifies`);
    }

    const key = await signingKey(signer, engine.webcrypto());
    const caKey = await signingKey(await engine.signer(f(`${name}.ca.key.pem`)), engine.webcrypto());
    await writeFile(f(`${name}.csr`), await createCsr(key, { subject: `CN=${name.toLowerCase()}.example.com,O=Example Ltd,C=GB`, sans: [`DNS:${name.toLowerCase()}.example.com,IP:127.0.0.1`] }));
    const req = await openssl(['req', '-verify', '-noout', '-in', f(`${name}.csr`)]);
    t.equal(req.code, 0, `openssl req -verify: ${req.stderr}`);

    await writeFile(f(`${name}.self.pem`), certPem(await selfSign(key, { subject: `CN=${name.toLowerCase()}.example.com`, sans: [`DNS:${name.toLowerCase()}.example.com`], days: 7 })));
    const selfText = await openssl(['x509', '-noout', '-text', '-in', f(`${name}.self.pem`)]);
    t.equal(selfText.code, 0);
    t.match(selfText.stdout, sigAlg);

    const caCert = await caInit(caKey, { subject: `CN=${name} Issuing CA`, days: 30 });
    await writeFile(f(`${name}.ca.crt`), certPem(caCert));
    const { cert } = await caSign(caKey, { caCert, caCertFile: f(`${name}.ca.crt`), csr: parseCsr(await readFile(f(`${name}.csr`), 'utf8'), 'req'), csrFile: f(`${name}.csr`), days: 7, profile: 'server' });
    await writeFile(f(`${name}.crt`), certPem(cert));
    const v = await openssl(['verify', '-CAfile', f(`${name}.ca.crt`), f(`${name}.crt`)]);
    t.equal(v.code, 0, v.stderr);
    t.match(v.stdout, /: OK/, 'openssl verify -CAfile ca.crt cert.pem');
    const certPub = await openssl(['x509', '-in', f(`${name}.crt`), '-pubkey', '-noout']);
    t.equal(certPub.stdout, refPub.stdout, 'certificate public key = reference public key = HSM public key');
  });
}

t.test('the CLI signs a CSR with a key held in the running cluster', async (t) => {
  const r = await runCli(['csr', '--key', f('P-256.key.pem'), '--subject', 'CN=cli.example.com', '--san', 'DNS:cli.example.com', '--out', f('cli.csr')], { env: PIN });
  t.equal(r.code, 0, r.stderr);
  t.equal((await openssl(['req', '-verify', '-noout', '-in', f('cli.csr')])).code, 0);
  const ca = await runCli(['ca', 'sign', '--ca-key', f('P-256.ca.key.pem'), '--ca-cert', f('P-256.ca.crt'), '--csr', f('cli.csr'), '--days', '3', '--out', f('cli.crt')], { env: PIN });
  t.equal(ca.code, 0, ca.stderr);
  t.equal((await openssl(['verify', '-CAfile', f('P-256.ca.crt'), f('cli.crt')])).code, 0, 'openssl verifies the CLI-issued certificate');
});

t.test('key import through the CLI lands in the cluster and its reference signs', async (t) => {
  const { generateKeyPairSync } = await import('node:crypto');
  const soft = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  await writeFile(f('migrate.pem'), soft.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
  const r = await runCli(['key', 'import', '--in', f('migrate.pem'), '--label', 'migrated', '--out', f('migrated.key.pem'), '--json'], { env: PIN });
  t.equal(r.code, 0, r.stderr);
  const { keyId } = JSON.parse(r.stdout) as { keyId: string };
  const hsmPub = createPublicKey({ key: (await cluster.client.exportPublicKey(keyId)).der, format: 'der', type: 'spki' });
  t.ok(hsmPub.equals(soft.publicKey), 'the HSM holds the imported key');
  const signer = await engine.signer(f('migrated.key.pem'));
  t.ok(verify('sha256', Buffer.from('m'), soft.publicKey, await signer.sign(0x0403, Buffer.from('m'))));
  const ref = await runCli(['key', 'reference', '--key', 'migrated', '--out', f('migrated2.key.pem')], { env: PIN });
  t.equal(ref.code, 0, ref.stderr);
  t.equal(await readFile(f('migrated2.key.pem'), 'utf8'), await readFile(f('migrated.key.pem'), 'utf8'), 'key reference re-creates the same file');
});

t.test('key generate --out writes the key reference at creation, carrying the HSM key\'s public key', async (t) => {
  const r = await runCli(['key', 'generate', '--type', 'rsa:2048', '--label', 'made-with-out', '--out', f('made.key.pem'), '--json'], { env: PIN });
  t.equal(r.code, 0, r.stderr);
  const { keyId } = JSON.parse(r.stdout) as { keyId: string };
  const hsmPub = createPublicKey({ key: (await cluster.client.exportPublicKey(keyId)).der, format: 'der', type: 'spki' });
  t.equal((await openssl(['pkey', '-in', f('made.key.pem'), '-pubout'])).stdout, hsmPub.export({ type: 'spki', format: 'pem' }), 'openssl reads the HSM key\'s public key from it');
  const signer = await engine.signer(f('made.key.pem'));
  t.ok(verify('sha256', Buffer.from('g'), hsmPub, await signer.sign(0x0401, Buffer.from('g'))), 'and it signs through the engine');
});

t.test('key generate --out refuses an existing file before making a key', async (t) => {
  await writeFile(f('taken.key.pem'), 'precious\n');
  const before = (await cluster.client.findKeys({ label: 'not-made' })).length;
  oneLineError(t, await runCli(['key', 'generate', '--type', 'ec:p256', '--label', 'not-made', '--out', f('taken.key.pem')], { env: PIN }), /taken\.key\.pem already exists; choose another --out or add --force/);
  t.equal((await cluster.client.findKeys({ label: 'not-made' })).length, before, 'no key was generated');
  t.equal(await readFile(f('taken.key.pem'), 'utf8'), 'precious\n', 'the file is untouched');
});

t.test('against the running cluster: wrong credentials, a deleted key and another cluster are one-line errors', async (t) => {
  const args = (key: string): string[] => ['csr', '--key', key, '--subject', 'CN=x', '--out', f('x.csr')];
  oneLineError(t, await runCli(args(f('P-384.key.pem')), { env: { ...PIN, HSMPROXY_PIN: `${cu.user}:wrong-password` } }), /login|password|credentials/i);
  const doomed = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'doomed' });
  await writeKeyReference(doomed, f('doomed.key.pem'));
  await backend.delete(doomed);
  oneLineError(t, await runCli(args(f('doomed.key.pem')), { env: PIN }), new RegExp(`key ${doomed.keyId} \\("doomed"\\) named by .*doomed\\.key\\.pem was not found`));
  await writeKeyReference({ ...(doomed.ref as SimKeyRef), clusterId: 'ab'.repeat(32) }, f('foreign.key.pem'));
  oneLineError(t, await runCli(args(f('foreign.key.pem')), { env: PIN }), /foreign\.key\.pem refers to a key in cluster abab.*this cluster is/);
  oneLineError(t, await runCli(args(f('P-384.key.pem')), { env: { HSMPROXY_DIR: dir, HSMPROXY_PIN: '' } }), /no crypto-user credentials/);
});
