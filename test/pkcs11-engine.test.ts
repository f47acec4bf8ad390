// The PKCS#11 backend behind the engine: key references, Signers, and CSR/certificate built with
// @peculiar/x509 through the engine's WebCrypto provider, verified by openssl.
import 'reflect-metadata';
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { generateKeyPairSync, verify, constants, webcrypto } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { createSoftHsm, softhsmSkipReason, TEST_PIN } from './helpers/softhsm.js';
import { openPkcs11Backend, pkcs11Opener } from '../src/engine/pkcs11/backend.js';
import type { Pkcs11Backend } from '../src/engine/pkcs11/backend.js';
import { Engine } from '../src/engine/engine.js';
import { formatKeyRef, readKeyRef, writeKeyReference } from '../src/engine/keyref.js';
import type { Pkcs11KeyRef } from '../src/engine/keyref.js';
import { SignatureScheme } from '../src/engine/schemes.js';

const skip = softhsmSkipReason();
let hasOpenssl = true;
try { execFileSync('openssl', ['version'], { stdio: 'ignore' }); } catch { hasOpenssl = false; }

if (skip) {
  t.test('SoftHSM engine tests', { skip }, async () => {});
} else {
  const hsm = createSoftHsm();
  hsm.addToken('engine');
  hsm.addToken('elsewhere');
  const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-pkcs11-engine-'));
  let backend: Pkcs11Backend;
  t.before(async () => {
    backend = await openPkcs11Backend({ module: hsm.module, token: 'engine', pin: TEST_PIN, poolSize: 4 });
  });
  t.teardown(async () => { await backend?.close(); rmSync(dir, { recursive: true, force: true }); hsm.cleanup(); });
  // References record hsm.module; an opener loads a recorded module only if it is allowed.
  const engine = (): Engine => new Engine({ openers: { pkcs11: pkcs11Opener({ pin: TEST_PIN, poolSize: 2, allowedModules: [hsm.module] }) } });

  t.test('a generated key gets a reference that the engine loads into a signer for every scheme', async (t) => {
    const handle = await backend.generateKeyPair({ algorithm: { type: 'rsa', bits: 2048 }, label: 'engine-rsa' });
    const file = join(dir, 'rsa.pem');
    await writeKeyReference(handle, file);
    const e = engine();
    t.teardown(() => e.close());
    const signer = await e.signer(file);
    t.same(signer.schemes, [0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601]);
    for (const scheme of signer.schemes) {
      const data = Buffer.from(`scheme ${scheme}`);
      const sig = await signer.sign(scheme, data);
      const hash = ({ 0x0804: 'sha256', 0x0805: 'sha384', 0x0806: 'sha512', 0x0401: 'sha256', 0x0501: 'sha384', 0x0601: 'sha512' } as Record<number, string>)[scheme]!;
      const key = scheme >= 0x0804 ? { key: handle.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST } : handle.publicKey;
      t.ok(verify(hash, data, key, sig), `0x${scheme.toString(16)} verifies`);
    }
  });

  t.test('an EC reference yields DER ECDSA signatures through the engine (raw r||s converted)', async (t) => {
    for (const curve of ['P-256', 'P-384'] as const) {
      const handle = await backend.generateKeyPair({ algorithm: { type: 'ec', curve }, label: `engine-${curve}` });
      const file = join(dir, `${curve}.pem`);
      await writeKeyReference(handle, file);
      const e = engine();
      const signer = await e.signer(file);
      const scheme = curve === 'P-256' ? SignatureScheme.ecdsa_secp256r1_sha256 : SignatureScheme.ecdsa_secp384r1_sha384;
      for (let i = 0; i < 10; i++) {
        const data = Buffer.from(`ec ${i}`);
        const sig = await signer.sign(scheme, data);
        if (!verify(curve === 'P-256' ? 'sha256' : 'sha384', data, handle.publicKey, sig)) t.fail(`${curve} signature ${i}`);
      }
      t.pass(`${curve}: 10 signatures verify`);
      await e.close();
    }
  });

  t.test('the reference records module, token URI and CKA_ID, and openssl reads the real public key from it', async (t) => {
    const handle = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'openssl-view' });
    const file = join(dir, 'view.pem');
    await writeKeyReference(handle, file);
    const ref = await readKeyRef(file) as Pkcs11KeyRef;
    t.equal(ref.backend, 'pkcs11');
    t.equal(ref.module, backend.modulePath);
    t.match(ref.uri, /^pkcs11:.*token=engine;type=private;object=openssl-view;id=(%[0-9A-F]{2}){16}$/);
    t.equal(ref.keyId, handle.keyId);
    t.notMatch(readFileSync(file, 'utf8'), new RegExp(TEST_PIN + '(?![0-9a-f])'), 'no PIN in the file');
    if (!hasOpenssl) { t.comment('openssl not installed: the openssl view is not checked'); return; }
    const pub = execFileSync('openssl', ['pkey', '-in', file, '-pubout'], { encoding: 'utf8' });
    t.equal(pub, handle.publicKey.export({ type: 'spki', format: 'pem' }));
  });

  t.test('a self-signed certificate and a CSR made through the engine verify with openssl', { skip: !hasOpenssl }, async (t) => {
    for (const [algorithm, web] of [
      [{ type: 'ec', curve: 'P-256' }, { name: 'ECDSA', hash: 'SHA-256' }],
      [{ type: 'rsa', bits: 2048 }, { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }],
      [{ type: 'rsa', bits: 2048 }, { name: 'RSA-PSS', hash: 'SHA-256' }],
    ] as const) {
      const handle = await backend.generateKeyPair({ algorithm, label: `cert-${web.name}` });
      const e = engine();
      e.adopt(handle, backend);
      const signer = await e.signer(handle);
      const crypto = e.webcrypto();
      const keys = await crypto.keyPair(signer, web);
      const signingAlgorithm = web.name === 'RSA-PSS' ? { ...web, saltLength: 32 } : web;
      const cert = await x509.X509CertificateGenerator.createSelfSigned({
        serialNumber: '01', name: 'CN=pkcs11.test', notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 86_400_000),
        signingAlgorithm, keys: keys as unknown as webcrypto.CryptoKeyPair,
        extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
      }, crypto as unknown as webcrypto.Crypto);
      const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: 'CN=pkcs11.test', keys: keys as unknown as webcrypto.CryptoKeyPair, signingAlgorithm }, crypto as unknown as webcrypto.Crypto);
      const certFile = join(dir, 'cert.pem');
      const csrFile = join(dir, 'csr.pem');
      writeFileSync(certFile, cert.toString('pem'));
      writeFileSync(csrFile, csr.toString('pem'));
      const verified = execFileSync('openssl', ['verify', '-CAfile', certFile, certFile], { encoding: 'utf8' });
      t.match(verified, /: OK/, `${web.name} certificate verifies`);
      const req = spawnSync('openssl', ['req', '-in', csrFile, '-verify', '-noout'], { encoding: 'utf8' });
      t.equal(req.status, 0, `${web.name}: openssl req -verify exits 0 (${req.stderr.trim()})`);
      t.match(req.stderr, /self-signature verify OK|^verify OK/m, `${web.name} CSR verifies`);
      await e.close();
    }
  });

  t.test('signing a digest computed by the caller verifies (CKM_ECDSA / CKM_RSA_PKCS_PSS / CKM_RSA_PKCS)', async (t) => {
    const { createHash } = await import('node:crypto');
    const data = Buffer.from('pre-hashed');
    const digest = createHash('sha384').update(data).digest();
    const rsa = await backend.generateKeyPair({ algorithm: { type: 'rsa', bits: 2048 }, label: 'digest-rsa' });
    const ec = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-384' }, label: 'digest-ec' });
    const pss = await backend.signDigest(rsa, 'rsa-pss-sha384', digest);
    t.ok(verify('sha384', data, { key: rsa.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 }, pss));
    const pkcs1 = await backend.signDigest(rsa, 'rsa-pkcs1-sha384', digest);
    t.ok(verify('sha384', data, rsa.publicKey, pkcs1));
    const raw = await backend.signDigest(ec, 'ecdsa-sha384', digest);
    t.ok(verify('sha384', data, { key: ec.publicKey, dsaEncoding: 'ieee-p1363' }, raw));
    await t.rejects(backend.signDigest(ec, 'ecdsa-sha384', digest.subarray(1)), { code: 'ENGINE_ERR_UNSUPPORTED', message: /48 bytes/ });
  });

  t.test('an imported software key signs on the token and cannot be read back', async (t) => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const handle = await backend.importKey(privateKey, 'migrated');
    t.ok(handle.publicKey.equals(publicKey), 'same public key');
    const sig = await backend.sign(handle, 'ecdsa-sha256', Buffer.from('migrated'));
    t.ok(verify('sha256', Buffer.from('migrated'), { key: publicKey, dsaEncoding: 'ieee-p1363' }, sig));
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const rsaHandle = await backend.importKey(rsa.privateKey, 'migrated-rsa');
    t.ok(verify('sha256', Buffer.from('x'), rsa.publicKey, await backend.sign(rsaHandle, 'rsa-pkcs1-sha256', Buffer.from('x'))));
    await t.rejects(backend.importKey(publicKey, 'public'), { code: 'ENGINE_ERR_UNSUPPORTED' });
  });

  t.test('list and delete through the Backend interface use hex CKA_IDs', async (t) => {
    const handle = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'listed' });
    const listed = await backend.list();
    const entry = listed.find((k) => k.keyId === handle.keyId);
    t.same(entry?.algorithm, { type: 'ec', curve: 'P-256' });
    t.equal(entry?.label, 'listed');
    await backend.delete(handle.keyId);
    t.notOk((await backend.list()).some((k) => k.keyId === handle.keyId));
    await t.rejects(backend.delete('not-hex'), { code: 'ENGINE_ERR_KEY_NOT_FOUND' });
  });

  t.test('a reference to a deleted key fails at load time, naming the file', async (t) => {
    const handle = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'gone' });
    const file = join(dir, 'gone.pem');
    await writeKeyReference(handle, file);
    await backend.delete(handle);
    const e = engine();
    t.teardown(() => e.close());
    await t.rejects(e.loadKey(file), { code: 'ENGINE_ERR_KEY_NOT_FOUND', message: new RegExp(`key "gone" \\(id ${handle.keyId}\\) named by .*gone\\.pem`) });
  });

  t.test('a reference whose public key differs from the token key is refused', async (t) => {
    const handle = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'swapped' });
    const ref = { ...(handle.ref as Pkcs11KeyRef), publicKey: generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey, source: 'swapped.pem' };
    await t.rejects(backend.resolve(ref), { code: 'ENGINE_ERR_KEY_MISMATCH' });
  });

  t.test('a reference to a key on another token is refused by this token', async (t) => {
    const handle = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'mine' });
    const ref = handle.ref as Pkcs11KeyRef;
    const foreign = { ...ref, uri: ref.uri.replace('token=engine', 'token=elsewhere').replace(/serial=[^;]*;/, ''), source: 'foreign.pem' };
    await t.rejects(backend.resolve(foreign), { code: 'ENGINE_ERR_OTHER_CLUSTER', message: /foreign\.pem refers to a key on PKCS#11 token "elsewhere"/ });
  });

  t.test('--module overrides the module path recorded in a reference', async (t) => {
    const handle = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'moved-module' });
    const ref = { ...(handle.ref as Pkcs11KeyRef), module: '/old/path/libsofthsm2.so' };
    const file = join(dir, 'moved.pem');
    writeFileSync(file, formatKeyRef(ref));
    const stale = engine();
    await t.rejects(stale.loadKey(file), { code: 'ENGINE_ERR_PKCS11_MODULE', message: /^cannot load PKCS#11 module \/old\/path\/libsofthsm2\.so: file not found \(recorded in .*moved\.pem; pass --module, or set hsm\.module for serve, to use the module where it is now\)$/ });
    const noToken = join(dir, 'no-token.pem');
    writeFileSync(noToken, formatKeyRef({ ...(handle.ref as Pkcs11KeyRef), uri: (handle.ref as Pkcs11KeyRef).uri.replace(/(token|serial)=[^;]*;/g, '') }));
    await t.rejects(engine().loadKey(noToken), { code: 'ENGINE_ERR_PKCS11_URI', message: /^invalid pkcs11: URI: pkcs11:\S+ in .*no-token\.pem names no token/ });
    await stale.close();
    const e = new Engine({ openers: { pkcs11: pkcs11Opener({ pin: TEST_PIN, module: hsm.module }) } });
    t.teardown(() => e.close());
    const signer = await e.signer(file);
    t.ok(verify('sha256', Buffer.from('m'), handle.publicKey, await signer.sign(SignatureScheme.ecdsa_secp256r1_sha256, Buffer.from('m'))));
  });

  t.test('the opener shares one backend per (module, token), and a token override looks keys up there', async (t) => {
    const a = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'shared-a' });
    const b = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'shared-b' });
    // b's reference recorded under another module path and token label: the overrides make it the same token.
    const refB = { ...(b.ref as Pkcs11KeyRef), module: '/old/path/libsofthsm2.so' };
    refB.uri = refB.uri.replace('token=engine', 'token=renamed').replace(/serial=[^;]*;/, '');
    const open = pkcs11Opener({ pin: TEST_PIN, poolSize: 1, module: hsm.module, token: 'engine' });
    const [ba, bb] = await Promise.all([open(a.ref!), open(refB)]);
    t.teardown(() => ba.close());
    t.equal(ba, bb, 'one backend for both references');
    t.equal((await bb.resolve(refB)).keyId, b.keyId, 'the key is found on the overriding token');
    const plain = pkcs11Opener({ pin: TEST_PIN, poolSize: 1, module: hsm.module });
    await t.rejects(plain(refB), { code: 'ENGINE_ERR_TOKEN_NOT_FOUND' }, 'without the override the recorded token is looked for');
  });
}
