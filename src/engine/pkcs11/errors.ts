// Errors of the PKCS#11 backend. One base class with a stable ENGINE_ERR_* code and a subclass
// per failure, so callers (CLI, proxy) branch on `code`; messages say what to do next.
// Raw PKCS#11 return values (CKR_*) are kept on `ckr` for logs, never shown alone.

/** Base class of every error the PKCS#11 backend throws. */
export class Pkcs11EngineError extends Error {
  constructor(message: string, readonly code: string, readonly ckr?: string) {
    super(message);
    this.name = 'Pkcs11EngineError';
  }
}

/** The PKCS#11 module (.so) could not be loaded or initialised. */
export class ModuleLoadError extends Pkcs11EngineError {
  constructor(modulePath: string, reason: string) {
    super(`cannot load PKCS#11 module ${modulePath}: ${reason}`, 'ENGINE_ERR_PKCS11_MODULE');
    this.name = 'ModuleLoadError';
  }
}

/** No slot holds a token with the requested label, serial or slot id. */
export class TokenNotFoundError extends Pkcs11EngineError {
  constructor(what: string, available: string[]) {
    const list = available.length ? `tokens present: ${available.map((l) => JSON.stringify(l)).join(', ')}` : 'no initialised token is present';
    super(`PKCS#11 token ${what} not found (${list}); check --token or initialise the token`, 'ENGINE_ERR_TOKEN_NOT_FOUND');
    this.name = 'TokenNotFoundError';
  }
}

/** The PIN was missing, wrong, or the user is locked out. */
export class BadCredentialsError extends Pkcs11EngineError {
  constructor(message: string, ckr?: string) {
    super(message, 'ENGINE_ERR_BAD_CREDENTIALS', ckr);
    this.name = 'BadCredentialsError';
  }
}

/** No private key on the token matches the reference (deleted, or another token). */
export class KeyNotFoundError extends Pkcs11EngineError {
  constructor(what: string) {
    super(`no private key ${what} on the PKCS#11 token; it may have been deleted, or the reference points to another token`, 'ENGINE_ERR_KEY_NOT_FOUND');
    this.name = 'KeyNotFoundError';
  }
}

/** The token or this backend cannot do what was asked (key type, scheme, mechanism). */
export class UnsupportedError extends Pkcs11EngineError {
  constructor(message: string) {
    super(message, 'ENGINE_ERR_UNSUPPORTED');
    this.name = 'UnsupportedError';
  }
}

/** A malformed `pkcs11:` URI (RFC 7512). */
export class Pkcs11UriError extends Pkcs11EngineError {
  constructor(message: string) {
    super(`invalid pkcs11: URI: ${message}`, 'ENGINE_ERR_PKCS11_URI');
    this.name = 'Pkcs11UriError';
  }
}

/** The token failed an operation, even after re-establishing the session once. */
export class TokenOperationError extends Pkcs11EngineError {
  constructor(operation: string, ckr: string) {
    super(`PKCS#11 ${operation} failed: ${ckr}`, 'ENGINE_ERR_PKCS11_OPERATION', ckr);
    this.name = 'TokenOperationError';
  }
}

/** The backend was closed; no further operations are possible. */
export class BackendClosedError extends Pkcs11EngineError {
  constructor() {
    super('the PKCS#11 backend is closed', 'ENGINE_ERR_CLOSED');
    this.name = 'BackendClosedError';
  }
}

/** The caller's AbortSignal fired before the operation started. */
export class AbortedError extends Pkcs11EngineError {
  constructor() {
    super('the PKCS#11 operation was cancelled', 'ENGINE_ERR_ABORTED');
    this.name = 'AbortedError';
  }
}
