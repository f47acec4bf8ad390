// Errors of the simulated HSM: one base class with a stable HSM_ERR_* code and a subclass per
// failure, so the protocol layer maps codes to wire errors and callers branch on `code`.
// Messages are written for the person at the terminal: what went wrong and what to do.

/** Base class of every error the simulated HSM throws. */
export class HsmError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
    this.name = 'HsmError';
  }
}

/** The operation needs a logged-in session (none given, logged out, or unknown session). */
export class NotLoggedInError extends HsmError {
  constructor() {
    super('not logged in (or the session ended); log in first, e.g. HSMPROXY_PIN=user:password', 'HSM_ERR_NOT_LOGGED_IN');
    this.name = 'NotLoggedInError';
  }
}

/** A connection logs in once: a second login on a connection that is still logged in is refused. */
export class AlreadyLoggedInError extends HsmError {
  constructor(readonly user: string) {
    super(`this connection is already logged in as ${user}; a connection logs in once: open a new connection to log in as another user`, 'HSM_ERR_ALREADY_LOGGED_IN');
    this.name = 'AlreadyLoggedInError';
  }
}

/**
 * A refused login, whatever the reason: unknown user, wrong password, or a locked account. One
 * message for all, so a peer learns neither which names exist nor how close one is to locking
 * (the audit log records the real reason). The hint about locking is for the rightful user.
 */
export class BadCredentialsError extends HsmError {
  constructor() {
    super(
      'login failed: wrong user name or password, or the account is locked after too many failed logins (a crypto officer can unlock it: hsmproxy user unlock)',
      'HSM_ERR_BAD_CREDENTIALS',
    );
    this.name = 'BadCredentialsError';
  }
}

/** The PRECO (first login after init) may only change its password, which makes it a CO. */
export class MustChangePasswordError extends HsmError {
  constructor() {
    super('the pre-crypto-officer must change its password first (hsmproxy cluster activate); that makes it the crypto officer', 'HSM_ERR_MUST_CHANGE_PASSWORD');
    this.name = 'MustChangePasswordError';
  }
}

/** The policy refused the request; `action` is what was tried, `reason` why it was refused. */
export class PermissionDeniedError extends HsmError {
  constructor(readonly action: string, readonly reason: string) {
    super(`permission denied: ${action}: ${reason}`, 'HSM_ERR_PERMISSION_DENIED');
    this.name = 'PermissionDeniedError';
  }
}

/** No key with that id is visible to the session (absent, or another CU's unshared key). */
export class NoSuchKeyError extends HsmError {
  constructor(readonly keyId: string) {
    super(`no key ${keyId} visible to this user; list keys with \`hsmproxy key list\``, 'HSM_ERR_NO_SUCH_KEY');
    this.name = 'NoSuchKeyError';
  }
}

/** No user with that name. */
export class NoSuchUserError extends HsmError {
  constructor(readonly user: string) {
    super(`no user named ${user}; list users with \`hsmproxy user list\``, 'HSM_ERR_NO_SUCH_USER');
    this.name = 'NoSuchUserError';
  }
}

/** A user with that name already exists. */
export class UserExistsError extends HsmError {
  constructor(readonly user: string) {
    super(`a user named ${user} already exists; pick another name or delete it first`, 'HSM_ERR_USER_EXISTS');
    this.name = 'UserExistsError';
  }
}

/** The HSM already holds its maximum number of key objects (token + session). */
export class KeyLimitError extends HsmError {
  constructor(readonly max: number) {
    super(`the HSM holds its maximum of ${max} keys (token + session); delete unused keys or add an HSM`, 'HSM_ERR_KEY_LIMIT');
    this.name = 'KeyLimitError';
  }
}

/** The HSM already holds its maximum number of users. */
export class UserLimitError extends HsmError {
  constructor(readonly max: number) {
    super(`the HSM holds its maximum of ${max} users; delete unused users first`, 'HSM_ERR_USER_LIMIT');
    this.name = 'UserLimitError';
  }
}

/** The capacity queue is full (CloudHSM answers 0xBB): retry later or on another HSM. */
export class BusyError extends HsmError {
  constructor(readonly queued: number) {
    super(`the HSM is busy (${queued} requests queued); retry later or send the request to another HSM`, 'HSM_ERR_BUSY');
    this.name = 'BusyError';
  }
}

/**
 * Too many logins in progress from one connection or one client certificate (each costs a
 * password hash): refused before hashing. HSM_ERR_BUSY like a full queue: retry later.
 */
export class LoginBusyError extends HsmError {
  constructor(readonly scope: 'connection' | 'certificate', readonly max: number) {
    super(
      scope === 'connection'
        ? `this connection already has a login in progress (at most ${max} at once); wait for its answer`
        : `too many logins in progress with this client certificate (at most ${max} at once on this HSM); retry in a moment`,
      'HSM_ERR_BUSY',
    );
    this.name = 'LoginBusyError';
  }
}

/** A malformed or out-of-range argument (the message names the argument). */
export class InvalidArgumentError extends HsmError {
  constructor(message: string) {
    super(message, 'HSM_ERR_INVALID_ARGUMENT');
    this.name = 'InvalidArgumentError';
  }
}

/** The mechanism does not suit the key (wrong type/size) or the key's attributes forbid it. */
export class MechanismNotAllowedError extends HsmError {
  constructor(readonly mechanism: string, readonly keyId: string, reason: string) {
    super(`mechanism ${mechanism} cannot be used with key ${keyId}: ${reason}`, 'HSM_ERR_MECHANISM_NOT_ALLOWED');
    this.name = 'MechanismNotAllowedError';
  }
}

/** Decryption, unwrapping or unmasking failed authentication (wrong key or tampered data). */
export class DecryptError extends HsmError {
  constructor(what: string) {
    super(`${what} failed: wrong key, or the data was altered`, 'HSM_ERR_DECRYPT');
    this.name = 'DecryptError';
  }
}

/** The data directory is unusable (corrupt file, wrong master key, not writable). */
export class StoreError extends HsmError {
  constructor(message: string) {
    super(message, 'HSM_ERR_STORE');
    this.name = 'StoreError';
  }
}

/** The HSM was closed; open it again. */
export class ClosedError extends HsmError {
  constructor() {
    super('the HSM was closed', 'HSM_ERR_CLOSED');
    this.name = 'ClosedError';
  }
}

/**
 * A replicated object (masked key, user record, deletion) that is not newer than what the HSM
 * holds: applying it would undo a change (see versions.ts), so it is refused and audited.
 */
export class StaleObjectError extends HsmError {
  constructor(readonly what: string, readonly details: string[]) {
    super(
      `${what} refused: ${details.join('; ')}; an older masked object never replaces a newer one (nor brings back a deleted one) — if this HSM missed changes, resync it from an HSM that holds them`,
      'HSM_ERR_STALE_OBJECT',
    );
    this.name = 'StaleObjectError';
  }
}

/**
 * A certificate object offered under a fencing token older than the newest this HSM granted (or
 * stored) for its name: the lease of whoever ordered it lapsed and a newer holder took over.
 */
export class StaleLeaseError extends HsmError {
  constructor(readonly lease: string, readonly offered: number, readonly newest: number) {
    super(
      `certificate ${lease} refused: fencing token ${offered} is older than token ${newest}, granted since by this HSM; the order lease lapsed and a newer holder orders ${lease}: nothing was overwritten`,
      'HSM_ERR_STALE_LEASE',
    );
    this.name = 'StaleLeaseError';
  }
}

/** The lease is held by another holder (renewing or releasing someone else's lease). */
export class LeaseHeldError extends HsmError {
  constructor(readonly lease: string, readonly holder: string) {
    super(`the lease of ${lease} is held by ${holder}; take it when it is released or expires`, 'HSM_ERR_LEASE_HELD');
    this.name = 'LeaseHeldError';
  }
}

/**
 * A quorum-protected operation without enough approvals: no token for the service, or one with
 * fewer than M valid approvals. The message says what is missing and how to get it.
 */
export class QuorumRequiredError extends HsmError {
  constructor(readonly service: string, readonly m: number, detail: string) {
    super(
      `quorum required: ${service} operations need ${m} approvals from crypto officers; ${detail}`,
      'HSM_ERR_QUORUM_REQUIRED',
    );
    this.name = 'QuorumRequiredError';
  }
}

/** The quorum token's lifetime is over: get a new one. */
export class QuorumTokenExpiredError extends HsmError {
  constructor(readonly tokenId: string, expiredAt: string) {
    super(`quorum token ${tokenId} expired at ${expiredAt}; get a new one (hsmproxy quorum token get) and have it approved again`, 'HSM_ERR_QUORUM_TOKEN_EXPIRED');
    this.name = 'QuorumTokenExpiredError';
  }
}

/** The quorum token is unknown, used, replaced, or not for this user or service. */
export class QuorumTokenInvalidError extends HsmError {
  constructor(message: string) {
    super(message, 'HSM_ERR_QUORUM_TOKEN_INVALID');
    this.name = 'QuorumTokenInvalidError';
  }
}

/** An approval whose signature does not verify under the approver's registered quorum key. */
export class QuorumSignatureError extends HsmError {
  constructor(readonly approver: string, readonly tokenId: string) {
    super(
      `the approval of quorum token ${tokenId} by ${approver} does not verify under ${approver}'s registered quorum key: signed with another key, or over other text than the token (sign the token file unchanged)`,
      'HSM_ERR_QUORUM_BAD_SIGNATURE',
    );
    this.name = 'QuorumSignatureError';
  }
}
