// Errors of acme/: one class with a stable code per failure a user (or the CA) can cause.

/** An ACME failure: the CA, the account, a challenge or the certificate it returned. */
export class AcmeError extends Error {
  constructor(message: string, readonly code: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AcmeError';
  }
}

/** The account key file cannot be used (mode, format). */
export class AcmeAccountKeyError extends AcmeError {
  constructor(file: string, reason: string) {
    super(`acme.accountKey ${file}: ${reason}`, 'ACME_ERR_ACCOUNT_KEY');
    this.name = 'AcmeAccountKeyError';
  }
}

/** The CA's directory cannot be reached or refused a request. */
export class AcmeCaError extends AcmeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'ACME_ERR_CA', options);
    this.name = 'AcmeCaError';
  }
}

/** A challenge failed: the CA could not validate a name. */
export class AcmeChallengeError extends AcmeError {
  constructor(readonly identifier: string, message: string, options?: { cause?: unknown }) {
    super(message, 'ACME_ERR_CHALLENGE', options);
    this.name = 'AcmeChallengeError';
  }
}

/** The CA returned a certificate that does not certify the HSM key, misses a name, or does not parse. */
export class AcmeInvalidCertificateError extends AcmeError {
  constructor(message: string) {
    super(message, 'ACME_ERR_INVALID_CERTIFICATE');
    this.name = 'AcmeInvalidCertificateError';
  }
}

/** The text of an acme-client / axios failure: the CA's problem document when there is one. */
export function describeAcmeFailure(err: unknown): string {
  type Problem = { type?: string; detail?: string };
  const e = err as { message?: string; response?: { status?: number; data?: Problem }; code?: string };
  const problem = e.response?.data;
  if (problem?.detail) {
    const type = problem.type ? `${problem.type.replace('urn:ietf:params:acme:error:', '')}: ` : '';
    return `${type}${problem.detail}`;
  }
  if (e.code && e.message && !e.message.includes(e.code)) return `${e.message} (${e.code})`;
  return e.message ?? String(err);
}

/** A result stored under an order lease that lapsed: a newer lease was granted, nothing was overwritten. */
export class AcmeFencedError extends AcmeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'ACME_ERR_FENCED', options);
    this.name = 'AcmeFencedError';
  }
}
