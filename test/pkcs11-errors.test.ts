// What a user sees when the module, token, PIN or key is wrong: one clear, coded error.
import t from 'tap';
import { createSoftHsm, softhsmSkipReason, TEST_PIN } from './helpers/softhsm.js';
import { openPkcs11Backend } from '../src/engine/pkcs11/backend.js';
import { SignatureScheme as Scheme } from '../src/tls/schemes.js';

t.test('a missing module file is named with "file not found"', async (t) => {
  await t.rejects(openPkcs11Backend({ module: '/nonexistent/libnothing.so', token: 'x', pin: '1' }), {
    code: 'ENGINE_ERR_PKCS11_MODULE',
    message: 'cannot load PKCS#11 module /nonexistent/libnothing.so: file not found',
  });
});

t.test('no PIN anywhere asks for HSMPROXY_PIN', async (t) => {
  const saved = process.env.HSMPROXY_PIN;
  delete process.env.HSMPROXY_PIN;
  t.teardown(() => { if (saved !== undefined) process.env.HSMPROXY_PIN = saved; });
  await t.rejects(openPkcs11Backend({ module: '/nonexistent.so', token: 'x' }), { code: 'ENGINE_ERR_BAD_CREDENTIALS', message: /set HSMPROXY_PIN/ });
});

const skip = softhsmSkipReason();
if (skip) {
  t.test('SoftHSM error tests', { skip }, async () => {});
} else {
  const hsm = createSoftHsm();
  hsm.addToken('errors');
  hsm.addToken('second');
  t.teardown(() => hsm.cleanup());
  const open = (extra: Partial<Parameters<typeof openPkcs11Backend>[0]> = {}): ReturnType<typeof openPkcs11Backend> =>
    openPkcs11Backend({ module: hsm.module, token: 'errors', pin: TEST_PIN, poolSize: 2, ...extra });

  t.test('a file that is not a shared library is refused as not loadable', async (t) => {
    await t.rejects(open({ module: hsm.conf }), { code: 'ENGINE_ERR_PKCS11_MODULE', message: /cannot load PKCS#11 module .*softhsm2\.conf: not a loadable PKCS#11 library/ });
  });

  t.test('a missing token is named, with the tokens that are present', async (t) => {
    const err = await open({ token: 'no-such-token' }).then(() => undefined, (e: Error & { code?: string }) => e);
    t.equal(err?.code, 'ENGINE_ERR_TOKEN_NOT_FOUND');
    t.match(err?.message, /^PKCS#11 token with label "no-such-token" not found \(tokens present: .*\); check --token/);
    t.match(err?.message, /"errors"/);
    t.match(err?.message, /"second"/);
  });

  t.test('a token can be chosen by serial or slot id instead of label', async (t) => {
    const b = await open();
    const { serial, slotId, label } = b.token.info;
    await b.close();
    const bySerial = await open({ token: { serial } });
    t.equal(bySerial.token.info.label, label);
    await bySerial.close();
    const bySlot = await open({ token: { slot: slotId } });
    t.equal(bySlot.token.info.label, label);
    await bySlot.close();
  });

  t.test('a wrong PIN is ENGINE_ERR_BAD_CREDENTIALS and names CKR_PIN_INCORRECT', async (t) => {
    await t.rejects(open({ pin: '9999' }), { code: 'ENGINE_ERR_BAD_CREDENTIALS', message: /wrong PIN for token "errors" \(CKR_PIN_INCORRECT\); check HSMPROXY_PIN/ });
    const b = await open();
    t.ok(b, 'the right PIN still works afterwards');
    await b.close();
  });

  t.test('the PIN comes from HSMPROXY_PIN when not given', async (t) => {
    const saved = process.env.HSMPROXY_PIN;
    process.env.HSMPROXY_PIN = TEST_PIN;
    t.teardown(() => { if (saved === undefined) delete process.env.HSMPROXY_PIN; else process.env.HSMPROXY_PIN = saved; });
    const b = await openPkcs11Backend({ module: hsm.module, token: 'errors' });
    t.ok(b);
    await b.close();
  });

  t.test('a CloudHSM-style user:password PIN is passed whole by default, or as its password part', async (t) => {
    await t.rejects(open({ pin: `crypto_user:${TEST_PIN}` }), { code: 'ENGINE_ERR_BAD_CREDENTIALS' }, 'SoftHSM does not know user:password');
    const b = await open({ pin: `crypto_user:${TEST_PIN}`, pinFormat: 'password' });
    t.ok(b, 'pinFormat "password" logs in with the part after the colon');
    await b.close();
  });

  t.test('signing with a key deleted by someone else fails with ENGINE_ERR_KEY_NOT_FOUND', async (t) => {
    const a = await open();
    const other = await open();
    const key = await a.generateKey({ type: 'ec', curve: 'P-256' }, 'doomed');
    const signer = await a.signer(key);
    await signer.sign(Scheme.ecdsa_secp256r1_sha256, Buffer.from('before'));
    await other.deleteKey({ id: key.id });
    await t.rejects(signer.sign(Scheme.ecdsa_secp256r1_sha256, Buffer.from('after')), { code: 'ENGINE_ERR_KEY_NOT_FOUND', message: /may have been deleted/ });
    await t.rejects(a.signer(key.uri), { code: 'ENGINE_ERR_KEY_NOT_FOUND' }, 'loading a reference to it fails too');
    await a.close();
    await other.close();
  });

  t.test('a closed backend refuses work with ENGINE_ERR_CLOSED', async (t) => {
    const b = await open();
    const key = await b.generateKey({ type: 'ec', curve: 'P-256' }, 'closing');
    const signer = await b.signer(key);
    await b.deleteKey({ id: key.id }).catch(() => undefined);
    await b.close();
    await t.rejects(signer.sign(Scheme.ecdsa_secp256r1_sha256, Buffer.from('x')), { code: 'ENGINE_ERR_CLOSED' });
    await t.rejects(b.listKeys(), { code: 'ENGINE_ERR_CLOSED' });
  });

  t.test('a pool size that is not a positive integer is refused', async (t) => {
    await t.rejects(open({ poolSize: 0 }), { message: /poolSize must be a positive integer/ });
  });
}
