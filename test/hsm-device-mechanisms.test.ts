// Every mechanism of the simulated HSM round-trips with real cryptography; signatures verify
// with node:crypto and with the openssl command line on the exported public key.
import t from 'tap';
import { execFile } from 'node:child_process';
import { createHash, createPublicKey, generateKeyPairSync, verify as nodeVerify, constants } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { KeyPairSpec, Session, SignMechanism } from '../src/hsm/device/index.js';
import { freshHsm, tempDir, type Fixture } from './helpers/hsm-device.js';

const run = promisify(execFile);
const MSG = Buffer.from('The quick brown fox signs over the lazy HSM.\n');

let f: Fixture;
let alice: Session;
const pairs = new Map<KeyPairSpec, string>();

t.before(async () => {
  f = await freshHsm(t);
  alice = await f.cu('alice');
  const specs: KeyPairSpec[] = ['rsa:2048', 'rsa:3072', 'rsa:4096', 'ec:p256', 'ec:p384'];
  // RSA-4096 keygen takes about a second: generate every pair once, concurrently.
  const made = await Promise.all(specs.map((s) => f.hsm.generateKeyPair(alice, s, { label: s })));
  specs.forEach((s, i) => pairs.set(s, made[i]!.result.privateKey.keyId));
});

async function opensslVerify(dir: string, pem: string, sig: Buffer, hash: string, pss: boolean): Promise<string> {
  const pub = join(dir, 'pub.pem');
  const sigFile = join(dir, 'sig.bin');
  const msgFile = join(dir, 'msg.txt');
  await writeFile(pub, pem);
  await writeFile(sigFile, sig);
  await writeFile(msgFile, MSG);
  const pssArgs = pss ? ['-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:-1'] : [];
  const { stdout } = await run('openssl', ['dgst', `-${hash}`, '-verify', pub, ...pssArgs, '-signature', sigFile, msgFile]);
  return stdout.trim();
}

const cases: Array<[KeyPairSpec, SignMechanism, string, 'pkcs1' | 'pss' | 'ec']> = [
  ['rsa:2048', 'rsa-pkcs1-sha256', 'sha256', 'pkcs1'],
  ['rsa:2048', 'rsa-pkcs1-sha384', 'sha384', 'pkcs1'],
  ['rsa:2048', 'rsa-pkcs1-sha512', 'sha512', 'pkcs1'],
  ['rsa:2048', 'rsa-pss-sha256', 'sha256', 'pss'],
  ['rsa:2048', 'rsa-pss-sha384', 'sha384', 'pss'],
  ['rsa:3072', 'rsa-pss-sha512', 'sha512', 'pss'],
  ['rsa:4096', 'rsa-pkcs1-sha256', 'sha256', 'pkcs1'],
  ['rsa:4096', 'rsa-pss-sha256', 'sha256', 'pss'],
  ['ec:p256', 'ecdsa-sha256', 'sha256', 'ec'],
  ['ec:p384', 'ecdsa-sha384', 'sha384', 'ec'],
];

for (const [spec, mech, hash, kind] of cases) {
  t.test(`${mech} with ${spec}: the signature verifies with node:crypto, openssl, and the HSM`, async (t) => {
    const keyId = pairs.get(spec)!;
    const sig = (await f.hsm.sign(alice, { keyId, mechanism: mech, data: MSG })).result;
    const { pem } = f.hsm.exportPublicKey(alice, keyId);
    const opts = kind === 'pss' ? { key: createPublicKey(pem), padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO } : createPublicKey(pem);
    t.ok(nodeVerify(hash, MSG, opts, sig), 'node:crypto verifies');
    t.equal(await opensslVerify(await tempDir(t), pem, sig, hash, kind === 'pss'), 'Verified OK', 'openssl verifies');
    const pubId = f.hsm.getKey(alice, keyId).pairKeyId!;
    t.equal((await f.hsm.verify(alice, { keyId: pubId, mechanism: mech, data: MSG, signature: sig })).result, true, 'the HSM verifies with the public key');
    t.equal((await f.hsm.verify(alice, { keyId: pubId, mechanism: mech, data: Buffer.from('other'), signature: sig })).result, false, 'a different message fails');
  });
}

for (const [mech, hash, pss] of [['rsa-pkcs1-sha256', 'sha256', false], ['rsa-pss-sha256', 'sha256', true], ['rsa-pss-sha384', 'sha384', true], ['rsa-pkcs1-sha512', 'sha512', false]] as const) {
  t.test(`${mech} over a precomputed digest equals a signature over the message (openssl verifies)`, async (t) => {
    const keyId = pairs.get('rsa:2048')!;
    const digest = createHash(hash).update(MSG).digest();
    const sig = (await f.hsm.sign(alice, { keyId, mechanism: mech, data: digest, prehashed: true })).result;
    const { pem } = f.hsm.exportPublicKey(alice, keyId);
    t.equal(await opensslVerify(await tempDir(t), pem, sig, hash, pss), 'Verified OK');
    const pubId = f.hsm.getKey(alice, keyId).pairKeyId!;
    t.equal((await f.hsm.verify(alice, { keyId: pubId, mechanism: mech, data: digest, signature: sig, prehashed: true })).result, true);
  });
}

t.test('a precomputed digest of the wrong length is refused', async (t) => {
  await t.rejects(f.hsm.sign(alice, { keyId: pairs.get('rsa:2048')!, mechanism: 'rsa-pss-sha256', data: Buffer.alloc(20), prehashed: true }), {
    code: 'HSM_ERR_INVALID_ARGUMENT', message: /32 bytes/,
  });
});

t.test('ECDSA can return raw r||s, which verifies as IEEE P1363', async (t) => {
  const keyId = pairs.get('ec:p384')!;
  const sig = (await f.hsm.sign(alice, { keyId, mechanism: 'ecdsa-sha384', data: MSG, format: 'raw' })).result;
  t.equal(sig.length, 96);
  t.ok(nodeVerify('sha384', MSG, { key: createPublicKey(f.hsm.exportPublicKey(alice, keyId).pem), dsaEncoding: 'ieee-p1363' }, sig));
  const pubId = f.hsm.getKey(alice, keyId).pairKeyId!;
  t.equal((await f.hsm.verify(alice, { keyId: pubId, mechanism: 'ecdsa-sha384', data: MSG, signature: sig, format: 'raw' })).result, true);
});

t.test('the exported public key is the SPKI openssl reads', async (t) => {
  const { pem, der } = f.hsm.exportPublicKey(alice, pairs.get('ec:p256')!);
  t.match(pem, /^-----BEGIN PUBLIC KEY-----/);
  t.same(createPublicKey(pem).export({ format: 'der', type: 'spki' }), der);
  t.same(createPublicKey(pem).asymmetricKeyDetails, { namedCurve: 'prime256v1' });
});

t.test('RSA-OAEP encrypts with the public key and decrypts with the private key', async (t) => {
  const keyId = pairs.get('rsa:2048')!;
  const pubId = f.hsm.getKey(alice, keyId).pairKeyId!;
  const ct = (await f.hsm.encrypt(alice, { keyId: pubId, mechanism: 'rsa-oaep-sha256', plaintext: Buffer.from('secret') })).result;
  t.equal(ct.length, 256);
  t.same((await f.hsm.decrypt(alice, { keyId, mechanism: 'rsa-oaep-sha256', ciphertext: ct })).result, Buffer.from('secret'));
  const bad = Buffer.from(ct);
  bad[10] ^= 1;
  await t.rejects(f.hsm.decrypt(alice, { keyId, mechanism: 'rsa-oaep-sha256', ciphertext: bad }), { code: 'HSM_ERR_DECRYPT' });
});

for (const spec of ['aes:128', 'aes:256'] as const) {
  t.test(`AES-GCM (${spec}) round-trips with a device-chosen IV, and detects tampering`, async (t) => {
    const k = (await f.hsm.generateKey(alice, spec, { label: spec })).result;
    const pt = Buffer.from('attack at dawn');
    const aad = Buffer.from('header');
    const a = (await f.hsm.encrypt(alice, { keyId: k.keyId, mechanism: 'aes-gcm', plaintext: pt, aad })).result;
    const b = (await f.hsm.encrypt(alice, { keyId: k.keyId, mechanism: 'aes-gcm', plaintext: pt, aad })).result;
    t.equal(a.length, 12 + pt.length + 16);
    t.not(a.subarray(0, 12).toString('hex'), b.subarray(0, 12).toString('hex'), 'a fresh IV each time');
    t.same((await f.hsm.decrypt(alice, { keyId: k.keyId, mechanism: 'aes-gcm', ciphertext: a, aad })).result, pt);
    await t.rejects(f.hsm.decrypt(alice, { keyId: k.keyId, mechanism: 'aes-gcm', ciphertext: a, aad: Buffer.from('other') }), { code: 'HSM_ERR_DECRYPT' });
  });
}

t.test('AES-GCM refuses a caller-supplied IV (FIPS mode)', async (t) => {
  const k = (await f.hsm.generateKey(alice, 'aes:256', { label: 'fips' })).result;
  await t.rejects(f.hsm.encrypt(alice, { keyId: k.keyId, mechanism: 'aes-gcm', plaintext: Buffer.from('x'), iv: Buffer.alloc(12) }), {
    code: 'HSM_ERR_INVALID_ARGUMENT', message: /chosen by the HSM/,
  });
});

for (const mech of ['hmac-sha256', 'hmac-sha384', 'hmac-sha512'] as const) {
  t.test(`${mech} with a generic secret verifies, and a wrong MAC does not`, async (t) => {
    const k = (await f.hsm.generateKey(alice, 'generic-secret:256', { label: mech })).result;
    const mac = (await f.hsm.sign(alice, { keyId: k.keyId, mechanism: mech, data: MSG })).result;
    t.equal(mac.length, { 'hmac-sha256': 32, 'hmac-sha384': 48, 'hmac-sha512': 64 }[mech]);
    t.equal((await f.hsm.verify(alice, { keyId: k.keyId, mechanism: mech, data: MSG, signature: mac })).result, true);
    mac[0] ^= 1;
    t.equal((await f.hsm.verify(alice, { keyId: k.keyId, mechanism: mech, data: MSG, signature: mac })).result, false);
  });
}

t.test('AES key wrap with padding moves an extractable private key to a new object that signs the same', async (t) => {
  const kek = (await f.hsm.generateKey(alice, 'aes:256', { label: 'kek' })).result;
  const src = (await f.hsm.generateKeyPair(alice, 'ec:p256', { label: 'movable', extractable: true })).result;
  const wrapped = (await f.hsm.wrapKey(alice, { wrappingKeyId: kek.keyId, keyId: src.privateKey.keyId, mechanism: 'aes-key-wrap-pad' })).result;
  const copy = (await f.hsm.unwrapKey(alice, { unwrappingKeyId: kek.keyId, mechanism: 'aes-key-wrap-pad', wrapped, keyClass: 'private', template: { label: 'copy' } })).result;
  t.not(copy.keyId, src.privateKey.keyId);
  const sig = (await f.hsm.sign(alice, { keyId: copy.keyId, mechanism: 'ecdsa-sha256', data: MSG })).result;
  t.ok(nodeVerify('sha256', MSG, createPublicKey(f.hsm.exportPublicKey(alice, src.privateKey.keyId).pem), sig), 'same key material');
  wrapped[5] ^= 1;
  await t.rejects(f.hsm.unwrapKey(alice, { unwrappingKeyId: kek.keyId, mechanism: 'aes-key-wrap-pad', wrapped, keyClass: 'private', template: { label: 'x' } }), { code: 'HSM_ERR_DECRYPT' });
});

t.test('RSA-OAEP wrap moves an extractable AES key; the copy decrypts what the original encrypted', async (t) => {
  const rsa = pairs.get('rsa:2048')!;
  const rsaPub = f.hsm.getKey(alice, rsa).pairKeyId!;
  const aes = (await f.hsm.generateKey(alice, 'aes:128', { label: 'data', extractable: true })).result;
  const wrapped = (await f.hsm.wrapKey(alice, { wrappingKeyId: rsaPub, keyId: aes.keyId, mechanism: 'rsa-oaep-wrap' })).result;
  const copy = (await f.hsm.unwrapKey(alice, { unwrappingKeyId: rsa, mechanism: 'rsa-oaep-wrap', wrapped, keyClass: 'secret', template: { label: 'copy' } })).result;
  t.equal(copy.type, 'aes');
  t.equal(copy.size, 128);
  const ct = (await f.hsm.encrypt(alice, { keyId: aes.keyId, mechanism: 'aes-gcm', plaintext: MSG })).result;
  t.same((await f.hsm.decrypt(alice, { keyId: copy.keyId, mechanism: 'aes-gcm', ciphertext: ct })).result, MSG);
});

t.test('random returns the requested number of fresh bytes', async (t) => {
  const a = (await f.hsm.random(alice, 32)).result;
  const b = (await f.hsm.random(alice, 32)).result;
  t.equal(a.length, 32);
  t.not(a.toString('hex'), b.toString('hex'));
  await t.rejects(f.hsm.random(alice, 0), { code: 'HSM_ERR_INVALID_ARGUMENT' });
});

t.test('digest matches node:crypto', async (t) => {
  t.same((await f.hsm.digest(alice, 'sha384', MSG)).result, createHash('sha384').update(MSG).digest());
});

t.test('an imported RSA private key keeps its public key and signs verifiably', async (t) => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pem = privateKey.export({ format: 'pem', type: 'pkcs1' }).toString();
  const imported = (await f.hsm.importPrivateKey(alice, { key: pem, template: { label: 'migrated' } })).result;
  t.equal(imported.privateKey.size, 2048);
  t.equal(imported.privateKey.extractable, false);
  t.same(f.hsm.exportPublicKey(alice, imported.privateKey.keyId).der, publicKey.export({ format: 'der', type: 'spki' }));
  const sig = (await f.hsm.sign(alice, { keyId: imported.privateKey.keyId, mechanism: 'rsa-pkcs1-sha256', data: MSG })).result;
  t.ok(nodeVerify('sha256', MSG, publicKey, sig));
});

t.test('importing something that is not a private key says so', async (t) => {
  await t.rejects(f.hsm.importPrivateKey(alice, { key: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', template: { label: 'x' } }), {
    code: 'HSM_ERR_INVALID_ARGUMENT', message: /not a readable private key/,
  });
});

t.test('unknown key types and mechanisms are refused with the choices', async (t) => {
  await t.rejects(f.hsm.generateKeyPair(alice, 'rsa:1024' as KeyPairSpec, { label: 'x' }), { code: 'HSM_ERR_INVALID_ARGUMENT', message: /rsa:2048/ });
  await t.rejects(f.hsm.sign(alice, { keyId: pairs.get('ec:p256')!, mechanism: 'md5' as SignMechanism, data: MSG }), { code: 'HSM_ERR_INVALID_ARGUMENT', message: /ecdsa-sha256/ });
});

t.test('every crypto answer reports its queue wait and service time', async (t) => {
  const r = await f.hsm.sign(alice, { keyId: pairs.get('ec:p256')!, mechanism: 'ecdsa-sha256', data: MSG });
  t.type(r.queueWaitUs, 'number');
  t.ok(r.serviceUs > 0);
});

for (const [spec, mech, hash] of [['ec:p256', 'ecdsa-sha256', 'sha256'], ['ec:p384', 'ecdsa-sha384', 'sha384']] as const) {
  t.test(`${mech} over a precomputed digest verifies with openssl on the message (${spec})`, async (t) => {
    const keyId = pairs.get(spec)!;
    const digest = createHash(hash).update(MSG).digest();
    const sig = (await f.hsm.sign(alice, { keyId, mechanism: mech, data: digest, prehashed: true })).result;
    const { pem } = f.hsm.exportPublicKey(alice, keyId);
    t.equal(await opensslVerify(await tempDir(t), pem, sig, hash, false), 'Verified OK');
    const raw = (await f.hsm.sign(alice, { keyId, mechanism: mech, data: digest, prehashed: true, format: 'raw' })).result;
    t.ok(nodeVerify(hash, MSG, { key: createPublicKey(pem), dsaEncoding: 'ieee-p1363' }, raw), 'raw r||s verifies too');
    const pubId = f.hsm.getKey(alice, keyId).pairKeyId!;
    t.equal((await f.hsm.verify(alice, { keyId: pubId, mechanism: mech, data: digest, signature: sig, prehashed: true })).result, true);
    const other = createHash(hash).update('other').digest();
    t.equal((await f.hsm.verify(alice, { keyId: pubId, mechanism: mech, data: other, signature: sig, prehashed: true })).result, false);
  });
}
