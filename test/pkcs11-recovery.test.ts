// Sessions, logins and the module itself lost underneath the backend: detected, re-established,
// the request retried once; a loss that persists fails cleanly.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { verify } from 'node:crypto';
import { createSoftHsm, softhsmSkipReason, TEST_PIN, TEST_SO_PIN } from './helpers/softhsm.js';
import { openPkcs11Backend } from '../src/engine/pkcs11/backend.js';
import type { Pkcs11Backend, Pkcs11Key } from '../src/engine/pkcs11/backend.js';
import type { Pkcs11Signer } from '../src/engine/pkcs11/signer.js';
import type { RecoveryEvent } from '../src/engine/pkcs11/token.js';
import { ck, ckrOf } from '../src/engine/pkcs11/module.js';
import { SignatureScheme as Scheme } from '../src/tls/schemes.js';

const skip = softhsmSkipReason();
if (skip) {
  t.test('SoftHSM recovery tests', { skip }, async () => {});
} else {
  const hsm = createSoftHsm();
  hsm.addToken('recovery');
  hsm.addToken('reinit');
  const events: RecoveryEvent[] = [];
  let backend: Pkcs11Backend;
  let key: Pkcs11Key;
  let signer: Pkcs11Signer;
  t.before(async () => {
    backend = await openPkcs11Backend({ module: hsm.module, token: 'recovery', pin: TEST_PIN, poolSize: 4, onRecovery: (e) => events.push(e) });
    key = await backend.generateKey({ type: 'ec', curve: 'P-256' }, 'survivor');
    signer = await backend.signer(key);
  });
  t.teardown(async () => { await backend?.close(); hsm.cleanup(); });

  /** A second, independent handle on the same module, as another part of the process would hold. */
  function secondHandle(): InstanceType<typeof ck.PKCS11> {
    const other = new ck.PKCS11();
    other.load(hsm.module);
    try { other.C_Initialize(); } catch (err) { if (ckrOf(err) !== ck.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw err; }
    return other;
  }

  async function signsAndVerifies(n: number): Promise<boolean> {
    const sigs = await Promise.all(Array.from({ length: n }, (_, i) => signer.sign(Scheme.ecdsa_secp256r1_sha256, Buffer.from(`m${i}`))));
    return sigs.every((sig, i) => verify('sha256', Buffer.from(`m${i}`), key.publicKey, sig));
  }

  t.test('after C_CloseAllSessions from another handle, signing recovers and succeeds', async (t) => {
    t.ok(await signsAndVerifies(8), 'warm: sessions open');
    events.length = 0;
    const other = secondHandle();
    other.C_CloseAllSessions(backend.token.info.slot);
    other.close();
    t.ok(await signsAndVerifies(8), 'all signatures after the loss verify');
    t.equal(events.filter((e) => e.kind === 'session').length, 1, 'recovered once for the whole pool');
    t.equal(events[0]?.ckr, 'CKR_SESSION_HANDLE_INVALID');
  });

  t.test('after the module is finalised and re-initialised underneath, signing recovers', async (t) => {
    t.ok(await signsAndVerifies(4));
    events.length = 0;
    const other = secondHandle();
    other.C_Finalize();
    other.close();
    t.ok(await signsAndVerifies(8), 'signatures after re-initialisation verify');
    t.same(events.map((e) => [e.kind, e.ckr]), [['module', 'CKR_CRYPTOKI_NOT_INITIALIZED']]);
    t.ok(await backend.findKey({ id: key.id }), 'key operations work too');
  });

  t.test('after a logout from another session, the backend logs in again', async (t) => {
    t.ok(await signsAndVerifies(2));
    events.length = 0;
    const other = secondHandle();
    const s = other.C_OpenSession(backend.token.info.slot, ck.CKF_SERIAL_SESSION);
    other.C_Logout(s);
    other.C_CloseSession(s);
    other.close();
    t.ok(await signsAndVerifies(4));
    t.ok(events.some((e) => e.kind === 'login' || e.kind === 'session'), `recovered (${events.map((e) => e.kind).join(',')})`);
  });

  // SoftHSM itself crashes (double free) if C_CloseAllSessions races C_Sign on worker threads, so
  // the loss of sessions with signatures in flight is injected at the binding instead.
  t.test('signatures in flight when the sessions are lost are retried once and all succeed', async (t) => {
    const api = backend.token.api;
    const original = api.C_SignAsync;
    const real = original.bind(api);
    let failures = 0;
    api.C_SignAsync = (session, input, out) => {
      if (failures < 4) {
        failures++;
        return new Promise((_, reject) => setImmediate(() => reject(new ck.Pkcs11Error('CKR_SESSION_HANDLE_INVALID:179', ck.CKR_SESSION_HANDLE_INVALID, 'C_Sign'))));
      }
      return real(session, input, out);
    };
    t.teardown(() => { api.C_SignAsync = original; });
    events.length = 0;
    t.ok(await signsAndVerifies(64), 'all 64 verify');
    t.equal(failures, 4, 'the signatures in flight on all 4 sessions failed');
    t.equal(events.filter((e) => e.kind === 'session').length, 1, 'one recovery for the whole pool');
    t.ok(backend.stats().open <= 4, 'pool still bounded');
  });

  t.test('a token removed under signatures in flight (CKR_DEVICE_REMOVED) is found again by label; they are retried and verify', async (t) => {
    const api = backend.token.api;
    const original = api.C_SignAsync;
    const originalSlots = api.C_GetSlotList;
    const real = original.bind(api);
    let failures = 0;
    let slotSearches = 0;
    api.C_SignAsync = (session, input, out) => {
      if (failures < 4) {
        failures++;
        return new Promise((_, reject) => setImmediate(() => reject(new ck.Pkcs11Error('CKR_DEVICE_REMOVED:50', ck.CKR_DEVICE_REMOVED, 'C_Sign'))));
      }
      return real(session, input, out);
    };
    api.C_GetSlotList = (...args: Parameters<typeof originalSlots>) => {
      slotSearches++;
      return originalSlots.apply(api, args);
    };
    t.teardown(() => { api.C_SignAsync = original; api.C_GetSlotList = originalSlots; });
    events.length = 0;
    t.ok(await signsAndVerifies(16), 'all 16 verify');
    t.equal(failures, 4, 'the signatures in flight on all 4 sessions failed');
    t.same(events.map((e) => [e.kind, e.ckr]), [['token', 'CKR_DEVICE_REMOVED']], 'one token recovery for the whole pool');
    t.ok(slotSearches >= 1, `the token was looked up again by its label (${slotSearches} slot list calls)`);
    t.ok(backend.stats().open <= 4, 'pool still bounded');
  });

  t.test('a token re-initialised underneath: its old keys fail as not found, new keys work, nothing else breaks', async (t) => {
    const b = await openPkcs11Backend({ module: hsm.module, token: 'reinit', pin: TEST_PIN, poolSize: 2 });
    t.teardown(() => b.close());
    const old = await b.generateKey({ type: 'ec', curve: 'P-256' }, 'before-reinit');
    const oldSigner = await b.signer(old);
    await oldSigner.sign(Scheme.ecdsa_secp256r1_sha256, Buffer.from('before'));
    // What an operator does with the token's own tools: wipe it and set it up again, same label and PIN.
    execFileSync('softhsm2-util', ['--init-token', '--token', 'reinit', '--label', 'reinit', '--so-pin', TEST_SO_PIN, '--pin', TEST_PIN], { env: { ...process.env, ...hsm.env }, stdio: 'ignore' });
    await t.rejects(oldSigner.sign(Scheme.ecdsa_secp256r1_sha256, Buffer.from('after')), { code: 'ENGINE_ERR_KEY_NOT_FOUND', message: /not found in the HSM/ }, 'the wiped key is a clear not-found error');
    t.same(await b.listKeys(), [], 'the token lists no keys');
    const fresh = await b.generateKey({ type: 'ec', curve: 'P-256' }, 'after-reinit');
    const msg = Buffer.from('signed after the token was re-initialised');
    t.ok(verify('sha256', msg, fresh.publicKey, await (await b.signer(fresh)).sign(Scheme.ecdsa_secp256r1_sha256, msg)), 'a key made afterwards signs and verifies');
    t.ok(await signsAndVerifies(4), 'the backend of the other token was not disturbed');
  });

  t.test('a loss that persists after one retry fails cleanly with the CKR name', async (t) => {
    let calls = 0;
    const err = await backend.token.run('signing', () => {
      calls++;
      throw new ck.Pkcs11Error('CKR_SESSION_HANDLE_INVALID:179', ck.CKR_SESSION_HANDLE_INVALID, 'C_Sign');
    }).then(() => undefined, (e: Error & { code?: string }) => e);
    t.equal(calls, 2, 'tried, recovered, retried once');
    t.equal(err?.code, 'ENGINE_ERR_PKCS11_OPERATION');
    t.equal(err?.message, 'PKCS#11 signing failed: CKR_SESSION_HANDLE_INVALID');
    t.ok(await signsAndVerifies(2), 'the backend still works afterwards');
  });

  t.test('an ordinary token error is not retried', async (t) => {
    let calls = 0;
    await t.rejects(backend.token.run('signing', () => {
      calls++;
      throw new ck.Pkcs11Error('CKR_DATA_LEN_RANGE:33', ck.CKR_DATA_LEN_RANGE, 'C_Sign');
    }), { code: 'ENGINE_ERR_PKCS11_OPERATION', message: /CKR_DATA_LEN_RANGE/ });
    t.equal(calls, 1);
  });

  t.test('recovery leaves no more sessions open than the pool size', async (t) => {
    const other = secondHandle();
    other.C_CloseAllSessions(backend.token.info.slot);
    t.ok(await signsAndVerifies(16));
    other.close();
    t.ok(backend.stats().open <= 4, `${backend.stats().open} sessions open`);
  });
}
