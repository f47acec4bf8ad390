// Errors of the engine: one base class with a stable ENGINE_ERR_* code and a subclass per failure,
// so callers (CLI, proxy, tls) branch on `code`; messages are written for the person reading them.
// The PKCS#11 backend (pkcs11/errors.ts) uses the same codes for the same failures. The codes that
// tls/ answers with handshake_failure come from tls/signer.ts.
import { NoCompatibleKeyCode } from '../tls/signer.js';

/** Base class of every error the engine throws. */
export class EngineError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
    this.name = 'EngineError';
  }
}

/** A key reference file is not a well-formed hsmproxy key reference. */
export class MalformedKeyRefError extends EngineError {
  constructor(readonly file: string, reason: string) {
    super(`${file} is not a valid hsmproxy key reference: ${reason}`, 'ENGINE_ERR_MALFORMED_KEYREF');
    this.name = 'MalformedKeyRefError';
  }
}

/** A real private key was given where a key reference was expected. */
export class RealPrivateKeyError extends EngineError {
  constructor(readonly file: string) {
    super(
      `${file} holds a real private key, not a key reference; import it into the HSM with ` +
        '`hsmproxy key import --in FILE --label L --out ref.pem` (then destroy the original), or use --backend soft for tests',
      'ENGINE_ERR_REAL_PRIVATE_KEY',
    );
    this.name = 'RealPrivateKeyError';
  }
}

/** The soft backend was handed a key reference: it only holds in-process software keys. */
export class NotASoftKeyError extends EngineError {
  constructor(readonly file: string) {
    super(`${file} is a key reference to an HSM key; the soft backend only loads real software private keys (drop --backend soft)`, 'ENGINE_ERR_NOT_SOFT_KEY');
    this.name = 'NotASoftKeyError';
  }
}

/** The key the reference names does not exist on the backend (deleted, or never replicated). */
export class KeyNotFoundError extends EngineError {
  constructor(what: string) {
    super(`${what} was not found in the HSM; it may have been deleted — list keys with \`hsmproxy key list\``, NoCompatibleKeyCode.keyNotFound);
    this.name = 'KeyNotFoundError';
  }
}

/** The reference names a key in another cluster (or token) than the one configured. */
export class OtherClusterError extends EngineError {
  constructor(file: string, refCluster: string, ourCluster: string) {
    super(`${file} refers to a key in cluster ${short(refCluster)}, but this cluster is ${short(ourCluster)}; point --dir (serve: hsm.dir or hsm.manifest) at the cluster that holds the key`, 'ENGINE_ERR_OTHER_CLUSTER');
    this.name = 'OtherClusterError';
  }
}

/** The HSM holds a key with that id, but its public key differs from the reference's. */
export class KeyMismatchError extends EngineError {
  constructor(what: string) {
    super(`${what}: the HSM key's public key differs from the one in the reference; regenerate the reference with \`hsmproxy key reference\``, 'ENGINE_ERR_KEY_MISMATCH');
    this.name = 'KeyMismatchError';
  }
}

/** Credentials are missing, malformed, unreadable or rejected by the HSM. */
export class BadCredentialsError extends EngineError {
  constructor(message: string) {
    super(message, 'ENGINE_ERR_BAD_CREDENTIALS');
    this.name = 'BadCredentialsError';
  }
}

/** The key or backend cannot do what was asked (key type, curve, scheme, mechanism). */
export class UnsupportedError extends EngineError {
  constructor(message: string) {
    super(message, NoCompatibleKeyCode.unsupported);
    this.name = 'UnsupportedError';
  }
}

/** Too many signatures in flight and the queue is full, or the queue wait passed its deadline. */
export class OverloadedError extends EngineError {
  constructor(message: string) {
    super(message, 'ENGINE_ERR_OVERLOADED');
    this.name = 'OverloadedError';
  }
}

/** The signature did not arrive within the engine's deadline (the HSM request is cancelled). */
export class SignTimeoutError extends EngineError {
  constructor(ms: number) {
    super(`no signature from the HSM within ${ms} ms; the request was cancelled (the HSMs are slow or unreachable)`, 'ENGINE_ERR_TIMEOUT');
    this.name = 'SignTimeoutError';
  }
}

/** The caller's AbortSignal fired before the signature was produced. */
export class AbortedError extends EngineError {
  constructor() {
    super('the signature request was cancelled', 'ENGINE_ERR_ABORTED');
    this.name = 'AbortedError';
  }
}

/** A signature from the backend did not verify under the key's public key (HSM fault). */
export class BadSignatureError extends EngineError {
  constructor(what: string) {
    super(`the HSM returned a signature that does not verify for ${what}; it was withheld (possible HSM fault)`, 'ENGINE_ERR_BAD_SIGNATURE');
    this.name = 'BadSignatureError';
  }
}

/** The backend failed for a reason of its own (HSM unreachable, internal error). */
export class BackendError extends EngineError {
  constructor(message: string, override readonly cause?: unknown) {
    super(message, 'ENGINE_ERR_BACKEND');
    this.name = 'BackendError';
  }
}

/** A file could not be written (exists already, no permission). */
export class OutputFileError extends EngineError {
  constructor(message: string) {
    super(message, 'ENGINE_ERR_FILE');
    this.name = 'OutputFileError';
  }
}

/** The engine or backend was closed. */
export class ClosedError extends EngineError {
  constructor(what = 'the engine') {
    super(`${what} is closed`, 'ENGINE_ERR_CLOSED');
    this.name = 'ClosedError';
  }
}

function short(id: string): string {
  return id.length > 16 ? `${id.slice(0, 16)}…` : id;
}
