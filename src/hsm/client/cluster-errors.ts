// Errors of the cluster client (balancing, failover, replication). Codes are stable HSM_ERR_*
// strings so callers branch on `code`; messages say what happened and what to do.

/** Base class of errors raised by HsmNode and ClusterClient themselves. */
export class ClusterClientError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
    this.name = 'ClusterClientError';
  }
}

/** No HSM of the cluster is in rotation (all down, out of sync, or none configured). */
export class NoHealthyHsmError extends ClusterClientError {
  constructor(detail: string) {
    super(`no HSM of the cluster is available (${detail}); check \`hsmproxy cluster status\` and start the HSMs with \`hsmproxy cluster start\``, 'HSM_ERR_NO_HEALTHY_HSM');
    this.name = 'NoHealthyHsmError';
  }
}

/**
 * A change of keys or users while the HSMs serving cannot prove they hold the cluster's latest
 * state (peers unreachable): refused, so a stale HSM never takes changes the others lack.
 */
export class UnprovenStateError extends ClusterClientError {
  constructor(op: string, why: string) {
    super(`${op} refused: ${why}; signing and other uses of existing keys go on meanwhile`, 'HSM_ERR_UNPROVEN_STATE');
    this.name = 'UnprovenStateError';
  }
}

/** An HSM failed while running an operation that is not safe to repeat; it was not retried. */
export class NotRepeatedError extends ClusterClientError {
  constructor(readonly op: string, readonly hsm: string, override readonly cause: unknown) {
    super(
      `HSM ${hsm} failed during ${op} (${(cause as Error)?.message ?? String(cause)}); it was not repeated because ${op} must not happen twice — ` +
        'check with `hsmproxy key list` / `hsmproxy user list` whether it took effect before trying again',
      'HSM_ERR_NOT_REPEATED',
    );
    this.name = 'NotRepeatedError';
  }
}

/** Every attempt answered busy (after the configured retries with backoff). */
export class ClusterBusyError extends ClusterClientError {
  constructor(attempts: number) {
    super(`every HSM answered busy (${attempts} attempts with backoff); the cluster is saturated — add an HSM or lower the load`, 'HSM_ERR_BUSY');
    this.name = 'ClusterBusyError';
  }
}

/** A session key lives on one HSM; that HSM went away, and the key with it. */
export class SessionKeyLostError extends ClusterClientError {
  constructor(readonly keyId: string, readonly hsm: string) {
    super(`session key ${keyId} lived on HSM ${hsm}, which is no longer available; session keys are not replicated — create the key again`, 'HSM_ERR_SESSION_KEY_LOST');
    this.name = 'SessionKeyLostError';
  }
}

/** The client was closed. */
export class ClientClosedError extends ClusterClientError {
  constructor() {
    super('the cluster client was closed', 'HSM_ERR_CLIENT_CLOSED');
    this.name = 'ClientClosedError';
  }
}

/** An HSM could not be brought in sync with its peers. */
export class ResyncError extends ClusterClientError {
  constructor(readonly hsm: string, reason: string) {
    super(`HSM ${hsm} could not be brought in sync: ${reason}`, 'HSM_ERR_RESYNC');
    this.name = 'ResyncError';
  }
}
