// Signatures from SoftHSMv2 through the PKCS#11 backend, each verified with node:crypto.
import t from 'tap';
import { constants, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createSoftHsm, softhsmSkipReason, TEST_PIN } from './helpers/softhsm.js';
import { openPkcs11Backend } from '../src/engine/pkcs11/backend.js';
import type { Pkcs11Backend, Pkcs11Key } from '../src/engine/pkcs11/backend.js';
import { ck } from '../src/engine/pkcs11/module.js';
import { planSignature } from '../src/engine/pkcs11/mechanisms.js';
import { SignatureScheme as Scheme } from '../src/tls/schemes.js';
import type { HashName } from '../src/engine/pkcs11/mechanisms.js';

const skip = softhsmSkipReason();
const data = Buffer.from('TLS 1.3, server CertificateVerify\0' + 'x'.repeat(64));

/** Verifies a TLS-wire-form signature for `scheme` with node:crypto. */
function verifies(scheme: number, publicKey: KeyObject, msg: Buffer, sig: Buffer): boolean {
  const hash: Record<number, HashName> = {
    [Scheme.rsa_pkcs1_sha256]: 'sha256', [Scheme.rsa_pkcs1_sha384]: 'sha384', [Scheme.rsa_pkcs1_sha512]: 'sha512',
    [Scheme.rsa_pss_rsae_sha256]: 'sha256', [Scheme.rsa_pss_rsae_sha384]: 'sha384', [Scheme.rsa_pss_rsae_sha512]: 'sha512',
    [Scheme.ecdsa_secp256r1_sha256]: 'sha256', [Scheme.ecdsa_secp384r1_sha384]: 'sha384', [Scheme.ecdsa_secp521r1_sha512]: 'sha512',
  };
  const pss = scheme >= 0x0804 && scheme <= 0x0806;
  // TLS 1.3 requires the PSS salt to be as long as the digest.
  const key = pss ? { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST } : publicKey;
  return verify(hash[scheme]!, msg, key, sig);
}

if (skip) {
  t.test('SoftHSM signing tests', { skip }, async () => {});
} else {
  const hsm = createSoftHsm();
  hsm.addToken('sign');
  let backend: Pkcs11Backend;
  let rsa: Pkcs11Key;
  let p256: Pkcs11Key;
  let p384: Pkcs11Key;
  t.before(async () => {
    backend = await openPkcs11Backend({ module: hsm.module, token: 'sign', pin: TEST_PIN, poolSize: 4 });
    rsa = await backend.generateKey({ type: 'rsa', bits: 2048 }, 'rsa');
    p256 = await backend.generateKey({ type: 'ec', curve: 'P-256' }, 'p256');
    p384 = await backend.generateKey({ type: 'ec', curve: 'P-384' }, 'p384');
  });
  t.teardown(async () => { await backend?.close(); hsm.cleanup(); });

  t.test('opening the backend opens the whole session pool up front, all idle', async (t) => {
    const b = await openPkcs11Backend({ module: hsm.module, token: 'sign', pin: TEST_PIN, poolSize: 3 });
    t.same(b.stats(), { size: 3, open: 3, idle: 3, busy: 0, waiting: 0 });
    await b.close();
  });

  t.test('an RSA key offers PSS first, then PKCS#1 v1.5, for SHA-256/384/512', async (t) => {
    const signer = await backend.signer(rsa);
    t.same(signer.schemes, [0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601]);
    t.equal(signer.keyType, 'rsa');
    t.equal(signer.bits, 2048);
  });

  // The schemes an RSA key offers (rsa_pss_pss_* need an RSASSA-PSS key, which the backend does not make).
  const rsaSchemes = Object.entries(Scheme).filter(([name]) => name.startsWith('rsa_pkcs1_') || name.startsWith('rsa_pss_rsae_'));
  for (const [name, scheme] of rsaSchemes) {
    t.test(`RSA-2048 ${name} signatures verify with node:crypto`, async (t) => {
      const signer = await backend.signer(rsa);
      const sig = await signer.sign(scheme, data);
      t.equal(sig.length, 256);
      t.ok(verifies(scheme, rsa.publicKey, data, sig), 'verifies');
      t.notOk(verifies(scheme, rsa.publicKey, Buffer.concat([data, Buffer.from('!')]), sig), 'not for other data');
    });
  }

  t.test('P-256 ECDSA signatures are DER and verify with node:crypto', async (t) => {
    const signer = await backend.signer(p256);
    // Its own curve's scheme first (the one TLS 1.3 uses), then the other ECDSA hashes TLS 1.2 may ask for.
    t.same(signer.schemes, [Scheme.ecdsa_secp256r1_sha256, Scheme.ecdsa_secp384r1_sha384, Scheme.ecdsa_secp521r1_sha512]);
    for (const scheme of [Scheme.ecdsa_secp384r1_sha384, Scheme.ecdsa_secp521r1_sha512]) {
      const msg = Buffer.from('TLS 1.2 ServerKeyExchange');
      t.ok(verifies(scheme, p256.publicKey, msg, await signer.sign(scheme, msg)), `scheme 0x${scheme.toString(16)} verifies`);
    }
    for (let i = 0; i < 20; i++) {
      const msg = Buffer.from(`message ${i}`);
      const sig = await signer.sign(Scheme.ecdsa_secp256r1_sha256, msg);
      t.equal(sig[0], 0x30, 'DER SEQUENCE');
      if (!verifies(Scheme.ecdsa_secp256r1_sha256, p256.publicKey, msg, sig)) t.fail(`signature ${i} does not verify`);
    }
  });

  t.test('P-384 ECDSA signatures with SHA-384 verify with node:crypto', async (t) => {
    const signer = await backend.signer(p384.uri);
    t.same(signer.schemes, [Scheme.ecdsa_secp384r1_sha384, Scheme.ecdsa_secp256r1_sha256, Scheme.ecdsa_secp521r1_sha512]);
    for (let i = 0; i < 20; i++) {
      const msg = Buffer.from(`message ${i}`);
      const sig = await signer.sign(Scheme.ecdsa_secp384r1_sha384, msg);
      if (!verifies(Scheme.ecdsa_secp384r1_sha384, p384.publicKey, msg, sig)) t.fail(`signature ${i} does not verify`);
    }
    t.pass('20 signatures verified');
  });

  t.test('ECDSA with a hash other than the curve default works for X.509 use', async (t) => {
    const signer = await backend.signer(p384);
    const sig = await signer.signWith({ kind: 'ecdsa', hash: 'sha256' }, data);
    t.ok(verify('sha256', data, p384.publicKey, sig));
  });

  t.test('tokens without hashing mechanisms get digest + CKM_RSA_PKCS(_PSS), still verifying', async (t) => {
    const rawOnly = new Set([ck.CKM_RSA_PKCS, ck.CKM_RSA_PKCS_PSS]);
    for (const [kind, scheme] of [['rsa-pss', Scheme.rsa_pss_rsae_sha384], ['rsa-pkcs1', Scheme.rsa_pkcs1_sha512]] as const) {
      const plan = planSignature({ kind, hash: scheme === Scheme.rsa_pss_rsae_sha384 ? 'sha384' : 'sha512' }, 'rsa', 256, data, rawOnly);
      t.ok(plan.mechanism.mechanism === ck.CKM_RSA_PKCS || plan.mechanism.mechanism === ck.CKM_RSA_PKCS_PSS, 'raw mechanism chosen');
      const sig = await backend.token.run('test', (s) => {
        backend.token.api.C_FindObjectsInit(s, [{ type: ck.CKA_CLASS, value: ck.CKO_PRIVATE_KEY }, { type: ck.CKA_ID, value: rsa.id }]);
        const [h] = backend.token.api.C_FindObjects(s, 1);
        backend.token.api.C_FindObjectsFinal(s);
        backend.token.api.C_SignInit(s, plan.mechanism, h!);
        return backend.token.api.C_SignAsync(s, plan.input, Buffer.alloc(plan.outLength));
      });
      t.ok(verifies(scheme, rsa.publicKey, data, plan.finish(sig)), `${kind} verifies`);
    }
  });

  t.test('a scheme the backend does not produce is refused', async (t) => {
    const signer = await backend.signer(rsa);
    await t.rejects(signer.sign(0x0807, data), { code: 'ENGINE_ERR_UNSUPPORTED', message: /scheme 0x0807/ });
  });

  t.test('an ECDSA scheme on an RSA key is refused', async (t) => {
    const signer = await backend.signer(rsa);
    await t.rejects(signer.sign(Scheme.ecdsa_secp256r1_sha256, data), { code: 'ENGINE_ERR_UNSUPPORTED' });
  });

  t.test('64 concurrent signatures all verify while the event loop stays responsive', async (t) => {
    const signers = [await backend.signer(rsa), await backend.signer(p256)];
    const delay = monitorEventLoopDelay({ resolution: 10 });
    let ticks = 0;
    const ticker = setInterval(() => { ticks++; }, 5);
    delay.enable();
    const started = performance.now();
    const results = await Promise.all(Array.from({ length: 64 }, async (_, i) => {
      const signer = signers[i % 2]!;
      const scheme = i % 2 ? Scheme.ecdsa_secp256r1_sha256 : Scheme.rsa_pss_rsae_sha256;
      const msg = Buffer.from(`concurrent ${i}`);
      const sig = await signer.sign(scheme, msg);
      return verifies(scheme, i % 2 ? p256.publicKey : rsa.publicKey, msg, sig);
    }));
    const elapsed = performance.now() - started;
    delay.disable();
    clearInterval(ticker);
    t.equal(results.filter(Boolean).length, 64, 'all 64 verify');
    const maxMs = delay.max / 1e6;
    t.ok(maxMs < 500, `event loop delay max ${maxMs.toFixed(1)} ms stays well under 1 s`);
    t.ok(elapsed < 20 || ticks > 0, 'timers kept firing during the run');
    t.ok(backend.stats().open <= 4, 'never more sessions than the pool size');
  });

  t.test('key management while signatures are in flight never shares a session (no CKR_OPERATION_ACTIVE)', async (t) => {
    // Watch the binding: a session is busy from the start of an asynchronous call until it
    // settles; any call on a busy session is the overlap that PKCS#11 answers with CKR_OPERATION_ACTIVE.
    const api = backend.token.api as unknown as Record<string, (...a: unknown[]) => unknown>;
    const busy = new Set<string>();
    const overlaps: string[] = [];
    let calls = 0;
    const saved = new Map<string, (...a: unknown[]) => unknown>();
    const watch = (name: string, async: boolean): void => {
      const original = api[name]!;
      saved.set(name, original);
      api[name] = (...args: unknown[]) => {
        const session = (args[0] as Buffer).toString('hex');
        calls++;
        if (busy.has(session)) overlaps.push(`${name} on a session busy with another call`);
        if (!async) return original.apply(backend.token.api, args);
        busy.add(session);
        return (original.apply(backend.token.api, args) as Promise<unknown>).finally(() => busy.delete(session));
      };
    };
    for (const name of ['C_SignAsync', 'C_GenerateKeyPairAsync']) watch(name, true);
    for (const name of ['C_SignInit', 'C_FindObjectsInit', 'C_GetAttributeValue', 'C_DestroyObject']) watch(name, false);
    t.teardown(() => { for (const [name, fn] of saved) api[name] = fn; });

    const signer = await backend.signer(p256);
    const signs = Array.from({ length: 48 }, async (_, i) => {
      const msg = Buffer.from(`mixed ${i}`);
      return verifies(Scheme.ecdsa_secp256r1_sha256, p256.publicKey, msg, await signer.sign(Scheme.ecdsa_secp256r1_sha256, msg));
    });
    const management = (async () => {
      const made = await backend.generateKey({ type: 'ec', curve: 'P-256' }, 'made-while-signing');
      const listed = await backend.listKeys();
      const found = await backend.findKey({ label: 'made-while-signing' });
      await backend.deleteKey({ label: 'made-while-signing' });
      return { made, listed, found };
    })();
    const [verified, m] = await Promise.all([Promise.all(signs), management]);
    t.equal(verified.filter(Boolean).length, 48, 'all 48 signatures verify');
    t.ok(m.listed.some((k) => k.label === 'made-while-signing'), 'the key made meanwhile was listed');
    t.same(m.found.id, m.made.id, 'and found');
    t.ok(calls > 48 * 2, `the watch saw the calls (${calls})`);
    t.same(overlaps, [], 'no call ever ran on a session busy with another');
    t.ok(saved.size === 6 && busy.size === 0, 'every watched call settled');
    t.ok(backend.stats().open <= 4, 'never more sessions than the pool size');
  });

  t.test('an already-aborted signal rejects without signing', async (t) => {
    const signer = await backend.signer(p256);
    await t.rejects(signer.sign(Scheme.ecdsa_secp256r1_sha256, data, AbortSignal.abort()), { code: 'ENGINE_ERR_ABORTED' });
    t.equal(backend.stats().busy, 0, 'no session left busy');
  });
}
