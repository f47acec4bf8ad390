// The signer error contract between engine/ and tls/: the codes tls/ answers with handshake_failure
// are the ones the engine throws for "no compatible key or mechanism"; every other engine failure
// is internal_error. Guards against the two sides drifting apart.
import t from 'tap';
import {
  AbortedError, BackendError, BadCredentialsError, BadSignatureError, ClosedError, Engine, KeyNotFoundError,
  OverloadedError, SignTimeoutError, SimBackend, UnsupportedError,
} from '../src/engine/index.js';
import * as pkcs11Errors from '../src/engine/pkcs11/errors.js';
import { NoCompatibleKeyCode, NoCompatibleKeyError, signFailureAlert } from '../src/tls/signer.js';
import { SignatureScheme } from '../src/tls/schemes.js';
import { FakeHsm } from './helpers/fake-hsm.js';

t.test('engine errors meaning "no compatible key" carry the codes tls/ maps to handshake_failure', async (t) => {
  t.equal(new UnsupportedError('x').code, NoCompatibleKeyCode.unsupported);
  t.equal(new KeyNotFoundError('x').code, NoCompatibleKeyCode.keyNotFound);
  t.equal(new NoCompatibleKeyError('x').code, NoCompatibleKeyCode.noCompatibleKey);
  for (const err of [new UnsupportedError('x'), new KeyNotFoundError('x'), new NoCompatibleKeyError('x')]) {
    t.equal(signFailureAlert(err), 'handshake_failure', err.name);
  }
});

t.test('every other engine failure of a signature is internal_error', async (t) => {
  const others = [
    new OverloadedError('x'), new SignTimeoutError(10), new AbortedError(), new BadSignatureError('x'),
    new BackendError('x'), new ClosedError(), new BadCredentialsError('x'), new Error('plain'),
  ];
  for (const err of others) t.equal(signFailureAlert(err), 'internal_error', err.name);
});

t.test('the PKCS#11 backend throws the same classes, so the same codes', async (t) => {
  t.equal(pkcs11Errors.UnsupportedError, UnsupportedError);
  t.equal(pkcs11Errors.KeyNotFoundError, KeyNotFoundError);
});

t.test('an engine signer asked for a scheme its key cannot make is refused with handshake_failure', async (t) => {
  const hsm = new FakeHsm();
  const backend = new SimBackend({ client: hsm, clusterId: 'cd'.repeat(32), credentials: { user: 'cu1', password: 'secret1' } });
  const engine = new Engine({ backends: { sim: backend } });
  t.teardown(() => engine.close());
  const made = await backend.generateKeyPair({ algorithm: { type: 'ec', curve: 'P-256' }, label: 'test' });
  const signer = await engine.signer(made.ref!);
  const err = await signer.sign(SignatureScheme.rsa_pss_rsae_sha256, Buffer.from('x')).catch((e: unknown) => e);
  t.equal(signFailureAlert(err), 'handshake_failure');
});
