// Key pairs generated on a throwaway SoftHSMv2 token through the PKCS#11 backend.
import t from 'tap';
import { createHash } from 'node:crypto';
import { createSoftHsm, softhsmSkipReason, TEST_PIN } from './helpers/softhsm.js';
import type { SoftHsmFixture } from './helpers/softhsm.js';
import { openPkcs11Backend } from '../src/engine/pkcs11/backend.js';
import type { Pkcs11Backend } from '../src/engine/pkcs11/backend.js';
import { ck } from '../src/engine/pkcs11/module.js';
import { parseKeySpec } from '../src/engine/pkcs11/keys.js';
import { parsePkcs11Uri } from '../src/engine/pkcs11/uri.js';

const skip = softhsmSkipReason();
let hsm: SoftHsmFixture | undefined;
let backend: Pkcs11Backend;

if (skip) {
  t.test('SoftHSM key tests', { skip }, async () => {});
} else {
  hsm = createSoftHsm();
  hsm.addToken('keys');
  hsm.addToken('other');
  t.teardown(async () => { await backend?.close(); hsm?.cleanup(); });

  t.before(async () => {
    backend = await openPkcs11Backend({ module: hsm!.module, token: 'keys', pin: TEST_PIN, poolSize: 2 });
  });

  t.test('an RSA-2048 key is generated on the token with the real public key', async (t) => {
    const key = await backend.generateKey({ type: 'rsa', bits: 2048 }, 'web-rsa');
    t.equal(key.keyType, 'rsa');
    t.equal(key.bits, 2048);
    t.equal(key.label, 'web-rsa');
    t.equal(key.id.length, 16, 'random 16-byte CKA_ID');
    t.equal(key.publicKey.asymmetricKeyType, 'rsa');
    t.equal(key.publicKey.asymmetricKeyDetails?.modulusLength, 2048);
    t.equal(key.publicKey.asymmetricKeyDetails?.publicExponent, 65537n);
  });

  t.test('a P-256 key is generated with its public point readable as SPKI', async (t) => {
    const key = await backend.generateKey({ type: 'ec', curve: 'P-256' }, 'web-ec');
    t.equal(key.keyType, 'ec');
    t.equal(key.curve, 'P-256');
    t.equal(key.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    const spki = key.publicKey.export({ type: 'spki', format: 'der' });
    t.equal(spki.length, 91, 'P-256 SPKI is 91 bytes');
  });

  t.test('RSA-3072, RSA-4096 and P-384 keys can be generated', async (t) => {
    const r3 = await backend.generateKey({ type: 'rsa', bits: 3072 }, 'r3072');
    t.equal(r3.publicKey.asymmetricKeyDetails?.modulusLength, 3072);
    const r4 = await backend.generateKey({ type: 'rsa', bits: 4096 }, 'r4096');
    t.equal(r4.publicKey.asymmetricKeyDetails?.modulusLength, 4096);
    const p384 = await backend.generateKey({ type: 'ec', curve: 'P-384' }, 'p384');
    t.equal(p384.publicKey.asymmetricKeyDetails?.namedCurve, 'secp384r1');
    for (const k of [r3, r4, p384]) await backend.deleteKey({ id: k.id });
  });

  t.test('private keys are token objects, private, sensitive, never extractable, sign-only', async (t) => {
    const key = await backend.generateKey({ type: 'ec', curve: 'P-256' }, 'attrs');
    const attrs = await backend.token.run('test', (s) => {
      const api = backend.token.api;
      api.C_FindObjectsInit(s, [{ type: ck.CKA_CLASS, value: ck.CKO_PRIVATE_KEY }, { type: ck.CKA_ID, value: key.id }]);
      const [h] = api.C_FindObjects(s, 2);
      api.C_FindObjectsFinal(s);
      const read = (type: number): boolean => api.C_GetAttributeValue(s, h!, [{ type }])[0]!.value[0] === 1;
      let valueReadable = true;
      try { api.C_GetAttributeValue(s, h!, [{ type: ck.CKA_VALUE }]); } catch { valueReadable = false; }
      return {
        token: read(ck.CKA_TOKEN), private: read(ck.CKA_PRIVATE), sensitive: read(ck.CKA_SENSITIVE),
        extractable: read(ck.CKA_EXTRACTABLE), neverExtractable: read(ck.CKA_NEVER_EXTRACTABLE),
        sign: read(ck.CKA_SIGN), decrypt: read(ck.CKA_DECRYPT), valueReadable,
      };
    });
    t.same(attrs, { token: true, private: true, sensitive: true, extractable: false, neverExtractable: true, sign: true, decrypt: false, valueReadable: false });
    await backend.deleteKey({ id: key.id });
  });

  t.test('list shows every key with its label, type and URI', async (t) => {
    const keys = await backend.listKeys();
    const byLabel = new Map(keys.map((k) => [k.label, k]));
    t.ok(byLabel.has('web-rsa'));
    t.ok(byLabel.has('web-ec'));
    t.equal(byLabel.get('web-rsa')!.keyType, 'rsa');
    const uri = parsePkcs11Uri(byLabel.get('web-ec')!.uri);
    t.equal(uri.token, 'keys');
    t.equal(uri.object, 'web-ec');
    t.equal(uri.type, 'private');
    t.same(uri.id, byLabel.get('web-ec')!.id);
  });

  t.test('list leaves out keys hsmproxy cannot use instead of failing', async (t) => {
    // An EC private key without its public key object, as some tools import them.
    const id = Buffer.from('0badc0de0badc0de', 'hex');
    await backend.token.run('test', (s) => backend.token.api.C_CreateObject(s, [
      { type: ck.CKA_CLASS, value: ck.CKO_PRIVATE_KEY }, { type: ck.CKA_KEY_TYPE, value: ck.CKK_EC }, { type: ck.CKA_TOKEN, value: false },
      { type: ck.CKA_PRIVATE, value: true }, { type: ck.CKA_SIGN, value: true }, { type: ck.CKA_ID, value: id }, { type: ck.CKA_LABEL, value: 'lonely' },
      { type: ck.CKA_EC_PARAMS, value: Buffer.from('06082a8648ce3d030107', 'hex') }, { type: ck.CKA_VALUE, value: Buffer.alloc(32, 7) },
    ]));
    const labels = (await backend.listKeys()).map((k) => k.label);
    t.notOk(labels.includes('lonely'), 'the unusable key is not listed');
    t.ok(labels.includes('web-rsa'), 'the others still are');
    await t.rejects(backend.findKey({ id }), { code: 'ENGINE_ERR_UNSUPPORTED', message: /no public key object/ }, 'naming it directly says why');
  });

  t.test('a key is found by label, by CKA_ID and by its pkcs11: URI, with the same public key', async (t) => {
    const byLabel = await backend.findKey({ label: 'web-rsa' });
    const byId = await backend.findKey({ id: byLabel.id });
    const byUri = await backend.findKey(byLabel.uri);
    const fp = (k: typeof byLabel): string => createHash('sha256').update(k.publicKey.export({ type: 'spki', format: 'der' })).digest('hex');
    t.equal(fp(byId), fp(byLabel));
    t.equal(fp(byUri), fp(byLabel));
  });

  t.test('a label shared by two keys is refused as ambiguous', async (t) => {
    const a = await backend.generateKey({ type: 'ec', curve: 'P-256' }, 'twin');
    const b = await backend.generateKey({ type: 'ec', curve: 'P-256' }, 'twin');
    await t.rejects(backend.findKey({ label: 'twin' }), { code: 'ENGINE_ERR_AMBIGUOUS_KEY', message: /2 keys match \(private key labelled "twin"\); name the key by its id/ });
    t.ok(await backend.findKey({ id: a.id }), 'the id still names one');
    await backend.deleteKey({ id: a.id });
    await backend.deleteKey({ id: b.id });
  });

  t.test('a URI naming another token is refused with both token names', async (t) => {
    const key = await backend.findKey({ label: 'web-ec' });
    const foreign = key.uri.replace('token=keys', 'token=other').replace(/serial=[^;]*;/, '');
    await t.rejects(backend.findKey(foreign), { code: 'ENGINE_ERR_PKCS11_URI', message: /names token "other".*open token is "keys"/ });
  });

  t.test('delete removes the private and public key objects', async (t) => {
    const key = await backend.generateKey({ type: 'rsa', bits: 2048 }, 'short-lived');
    const deleted = await backend.deleteKey(key.uri);
    t.same(deleted.id, key.id);
    await t.rejects(backend.findKey({ id: key.id }), { code: 'ENGINE_ERR_KEY_NOT_FOUND' });
    const publics = await backend.token.run('test', (s) => {
      backend.token.api.C_FindObjectsInit(s, [{ type: ck.CKA_ID, value: key.id }]);
      const found = backend.token.api.C_FindObjects(s, 10);
      backend.token.api.C_FindObjectsFinal(s);
      return found.length;
    });
    t.equal(publics, 0, 'no object with that id is left');
  });

  t.test('keys persist on the token across close and reopen', async (t) => {
    const before = (await backend.listKeys()).map((k) => k.id.toString('hex')).sort();
    await backend.close();
    backend = await openPkcs11Backend({ module: hsm!.module, token: 'keys', pin: TEST_PIN, poolSize: 2 });
    const after = (await backend.listKeys()).map((k) => k.id.toString('hex')).sort();
    t.same(after, before);
  });

  t.test('a key needs a label', async (t) => {
    await t.rejects(backend.generateKey({ type: 'rsa', bits: 2048 }, ''), { message: /needs a label/ });
  });
}

t.test('key types parse as the CLI spells them, and bad ones say what is accepted', async (t) => {
  t.same(parseKeySpec('rsa:2048'), { type: 'rsa', bits: 2048 });
  t.same(parseKeySpec('RSA:4096'), { type: 'rsa', bits: 4096 });
  t.same(parseKeySpec('ec:p256'), { type: 'ec', curve: 'P-256' });
  t.same(parseKeySpec('ec:P-384'), { type: 'ec', curve: 'P-384' });
  t.throws(() => parseKeySpec('rsa:1024'), { code: 'ENGINE_ERR_UNSUPPORTED', message: /use rsa:2048, rsa:3072, rsa:4096, ec:p256 or ec:p384/ });
  t.throws(() => parseKeySpec('ed25519'), { code: 'ENGINE_ERR_UNSUPPORTED' });
});
