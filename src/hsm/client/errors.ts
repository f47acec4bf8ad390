// Errors the HSM client raises: one base class with a stable HSM_ERR_* code, and a subclass per
// failure, so callers (HsmNode, ClusterClient, the CLI) branch on `code`, never on messages.

/** Base class of every error from hsm/client. */
export class HsmClientError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
    this.name = 'HsmClientError';
  }
}

/** The HSM answered with an error: `code` is its HSM_ERR_* code, `message` its explanation. */
export class HsmRemoteError extends HsmClientError {
  constructor(code: string, message: string, readonly hsmId: string) {
    super(message, code);
    this.name = 'HsmRemoteError';
  }
}

/** No connection could be made (refused, unreachable, connect timeout). */
export class HsmUnreachableError extends HsmClientError {
  constructor(readonly hsmId: string, readonly address: string, reason: string) {
    super(`cannot reach HSM ${hsmId} at ${address} (${reason}): is it running?`, 'HSM_ERR_UNREACHABLE');
    this.name = 'HsmUnreachableError';
  }
}

/** The TLS handshake failed or the HSM refused our client certificate. */
export class HsmTlsError extends HsmClientError {
  constructor(readonly hsmId: string, readonly address: string, reason: string) {
    super(`mutual TLS with HSM ${hsmId} at ${address} failed (${reason}): use the CA and client certificate from this cluster's init`, 'HSM_ERR_TLS');
    this.name = 'HsmTlsError';
  }
}

/** The connection closed (or was closed) while the request was in flight or before it was sent. */
export class HsmConnectionClosedError extends HsmClientError {
  constructor(readonly hsmId: string, reason: string) {
    super(`connection to HSM ${hsmId} closed: ${reason}`, 'HSM_ERR_CONNECTION_CLOSED');
    this.name = 'HsmConnectionClosedError';
  }
}

/** No answer within the request's deadline; the HSM may still complete it. */
export class HsmTimeoutError extends HsmClientError {
  constructor(readonly hsmId: string, readonly op: string, readonly timeoutMs: number) {
    super(`HSM ${hsmId} did not answer ${op} within ${timeoutMs} ms`, 'HSM_ERR_TIMEOUT');
    this.name = 'HsmTimeoutError';
  }
}

/** The caller's AbortSignal fired. */
export class HsmAbortedError extends HsmClientError {
  constructor(readonly op: string) {
    super(`${op} was aborted by the caller`, 'HSM_ERR_ABORTED');
    this.name = 'HsmAbortedError';
  }
}

/** The HSM sent something that does not decode; the connection is closed. */
export class HsmProtocolViolationError extends HsmClientError {
  constructor(readonly hsmId: string, reason: string) {
    super(`HSM ${hsmId} sent a malformed response (${reason}); the connection was closed`, 'HSM_ERR_PROTOCOL');
    this.name = 'HsmProtocolViolationError';
  }
}
