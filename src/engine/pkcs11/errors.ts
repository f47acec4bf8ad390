// Errors of the PKCS#11 backend. Failures the engine already names (bad credentials, key not
// found, unsupported, aborted, closed) use the engine's classes and ENGINE_ERR_* codes; the
// PKCS#11-specific ones below extend EngineError, so callers branch on `code` alone.
// Raw PKCS#11 return values (CKR_*) are kept on `ckr` for logs, never shown alone.
import { EngineError } from '../errors.js';

export { AbortedError, BadCredentialsError, ClosedError, KeyNotFoundError, UnsupportedError } from '../errors.js';

/** Base class of the PKCS#11-specific errors. */
export class Pkcs11EngineError extends EngineError {
  constructor(message: string, code: string, readonly ckr?: string) {
    super(message, code);
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

/**
 * A key reference names a PKCS#11 module nobody allowed. References hold no secret and are copied
 * between machines, so the module they record is never loaded on their word alone.
 */
export class ModuleNotAllowedError extends Pkcs11EngineError {
  constructor(message: string) {
    super(message, 'ENGINE_ERR_PKCS11_MODULE_NOT_ALLOWED');
    this.name = 'ModuleNotAllowedError';
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

/** A malformed `pkcs11:` URI (RFC 7512), or one naming another token. */
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

/** A reference names a key on another token than the one this backend opened. */
export class OtherTokenError extends Pkcs11EngineError {
  constructor(file: string, refToken: string, ourToken: string) {
    super(`${file} refers to a key on PKCS#11 token ${refToken}, but the open token is ${ourToken}; use the token the reference names`, 'ENGINE_ERR_OTHER_CLUSTER');
    this.name = 'OtherTokenError';
  }
}
