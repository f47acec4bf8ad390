// Users of one HSM: roles, scrypt password hashes with a per-user salt, constant-time checks,
// lockout after consecutive failures, the user limit. Knows nothing of keys or sessions'
// rights (policy.ts) nor of disk (persist.ts, reached through the caller's `persist`): it is a
// table with rules about itself.
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { InvalidArgumentError, NoSuchUserError, UserExistsError, UserLimitError } from './errors.js';
import type { Role, UserInfo } from './types.js';

/** A user as stored (and persisted, and masked for replication). */
export interface UserRecord {
  name: string;
  role: Role;
  /** scrypt parameters and output, hex. */
  salt: string;
  hash: string;
  cost: number;
  failedLogins: number;
  locked: boolean;
  /**
   * Raised by one on every cluster-wide change of the user (password, role, unlock); absent (0)
   * in records written before versions existed. Failed logins and the lock itself are this
   * HSM's own and do not change it: a replicated table never lowers them (replication.ts).
   */
  version?: number;
  /** A crypto officer's quorum public key (SPKI PEM), registered to approve quorum tokens (quorum.ts). */
  quorumKey?: string;
}

/** Limits and costs of a user table. */
export interface UserTableOptions {
  maxUsers: number;
  lockoutThreshold: number;
  scryptCost: number;
}

/**
 * The verdict on one login attempt. Every refusal looks the same to the peer; `reason` is the
 * truth, for the audit log only.
 */
export type LoginVerdict =
  | { ok: true; user: UserRecord }
  | {
    ok: false;
    /** `changed`: the record was reset, replaced or deleted while the password was hashed. */
    reason: 'no-such-user' | 'wrong-password' | 'locked' | 'changed';
    /** The user's consecutive failures after this attempt (0 for an unknown user). */
    failedLogins: number;
    /** This attempt locked the account. */
    lockedNow: boolean;
  };

const HASH_LEN = 32;
const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

function derive(password: string, salt: Buffer, cost: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(
      password, salt, HASH_LEN, { N: cost, r: 8, p: 1, maxmem: 256 * cost * 8 + 1024 * 1024 },
      (err, key) => (err ? reject(err) : resolve(key)),
    );
  });
}

/** Checks a password is acceptable (CloudHSM: 7 to 32 characters). */
export function checkPasswordShape(password: string): void {
  if (typeof password !== 'string' || password.length < 7 || password.length > 32) {
    throw new InvalidArgumentError('passwords must be 7 to 32 characters long');
  }
}

/** The user table with its own rules: unique names, limit, hashing, lockout. */
export class UserTable {
  private readonly users = new Map<string, UserRecord>();
  // A fixed dummy so an unknown user costs the same scrypt time as a known one.
  private readonly dummySalt = randomBytes(16);
  // The tail of each user name's queue of login attempts (settled promises only, never rejected).
  private readonly attempts = new Map<string, Promise<void>>();

  constructor(readonly opts: UserTableOptions) {}

  /** Builds a record with a fresh salt (or the given one) and hash (async: scrypt runs off the event loop). */
  async makeRecord(
    name: string, role: Role, password: string, salt: Buffer = randomBytes(16), version = 1,
  ): Promise<UserRecord> {
    if (!NAME_RE.test(name)) throw new InvalidArgumentError(`user name ${JSON.stringify(name)} is invalid: use 1-64 letters, digits, '_', '.', '-'`);
    checkPasswordShape(password);
    const hash = await derive(password, salt, this.opts.scryptCost);
    return { name, role, salt: salt.toString('hex'), hash: hash.toString('hex'), cost: this.opts.scryptCost, failedLogins: 0, locked: false, version };
  }

  /** Adds a new record; refuses duplicates and the 1,025th user. */
  add(rec: UserRecord): void {
    if (this.users.has(rec.name)) throw new UserExistsError(rec.name);
    if (this.users.size >= this.opts.maxUsers) throw new UserLimitError(this.opts.maxUsers);
    this.users.set(rec.name, rec);
  }

  /** The record of `name`, or NoSuchUserError. */
  get(name: string): UserRecord {
    const u = this.users.get(name);
    if (!u) throw new NoSuchUserError(name);
    return u;
  }

  has(name: string): boolean {
    return this.users.has(name);
  }

  /** Removes a user; returns its record. */
  remove(name: string): UserRecord {
    const u = this.get(name);
    this.users.delete(name);
    return u;
  }

  /** Puts a replicated record in place of the user's (or adds it), keeping nothing of the old one. */
  put(rec: UserRecord): void {
    const { maxUsers } = this.opts;
    if (!this.users.has(rec.name) && this.users.size >= maxUsers) throw new UserLimitError(maxUsers);
    this.users.set(rec.name, { ...rec });
  }

  /**
   * Checks a password, one attempt per user name at a time: attempts on a name queue behind each
   * other, so parallel guesses cannot all pass the lock check before any failure is counted.
   * The attempt is counted, and `persist` awaited, before the password is hashed, so neither a
   * racing attempt nor a crash during the hash leaves it uncounted; a success resets the count.
   * Unknown users and locked accounts hash too, so every answer costs the same time.
   */
  authenticate(name: string, password: string, persist: () => Promise<void>): Promise<LoginVerdict> {
    return this.oneAtATime(name, () => this.check(name, String(password), persist));
  }

  private async check(name: string, password: string, persist: () => Promise<void>): Promise<LoginVerdict> {
    const u = this.users.get(name);
    if (!u) {
      await derive(password, this.dummySalt, this.opts.scryptCost);
      return { ok: false, reason: 'no-such-user', failedLogins: 0, lockedNow: false };
    }
    // A count at the threshold without the flag is a crash during the threshold-th attempt's hash.
    if (u.locked || u.failedLogins >= this.opts.lockoutThreshold) {
      const lockedNow = !u.locked;
      if (lockedNow) {
        u.locked = true;
        await persist();
      }
      await derive(password, Buffer.from(u.salt, 'hex'), u.cost);
      return { ok: false, reason: 'locked', failedLogins: u.failedLogins, lockedNow };
    }
    u.failedLogins++;
    await persist();
    const got = await derive(password, Buffer.from(u.salt, 'hex'), u.cost);
    // A password reset or a replicated user table replaces the record: this hash checked the old one.
    if (this.users.get(name) !== u) return { ok: false, reason: 'changed', failedLogins: 0, lockedNow: false };
    const want = Buffer.from(u.hash, 'hex');
    if (got.length === want.length && timingSafeEqual(got, want)) {
      u.failedLogins = 0;
      await persist();
      return { ok: true, user: u };
    }
    // (A CO's unlock during the hash reset the count: this failure stays forgiven with it.)
    const lockedNow = u.failedLogins >= this.opts.lockoutThreshold && !u.locked;
    if (lockedNow) {
      u.locked = true;
      await persist();
    }
    return { ok: false, reason: 'wrong-password', failedLogins: u.failedLogins, lockedNow };
  }

  // Runs `fn` once every earlier call for `name` has settled. Unknown names queue too, so an
  // unknown user answers as slowly under parallel guesses as a real one does.
  private oneAtATime<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const before = this.attempts.get(name) ?? Promise.resolve();
    const run = before.then(fn);
    const settled = run.then(() => undefined, () => undefined);
    this.attempts.set(name, settled);
    void settled.then(() => {
      if (this.attempts.get(name) === settled) this.attempts.delete(name);
    });
    return run;
  }

  /** Replaces a user's password (and clears its lockout) as a new version; may change its role (PRECO → CO). */
  async setPassword(name: string, password: string, role?: Role, salt?: Buffer): Promise<UserRecord> {
    const u = this.get(name);
    const fresh = await this.makeRecord(name, role ?? u.role, password, salt);
    // The record may have changed while scrypt ran: the new version follows the current one.
    const current = this.get(name);
    fresh.version = (current.version ?? 0) + 1;
    if (current.quorumKey) fresh.quorumKey = current.quorumKey; // a new password keeps the quorum key
    this.users.set(name, fresh);
    return fresh;
  }

  /** Clears the lockout and failure counter, as a new version (so a replicated table carries the unlock). */
  unlock(name: string): UserRecord {
    const u = this.get(name);
    u.locked = false;
    u.failedLogins = 0;
    u.version = (u.version ?? 0) + 1;
    return u;
  }

  /** Registers a crypto officer's quorum public key, as a new version (replicated like a password change). */
  setQuorumKey(name: string, pem: string): UserRecord {
    const u = this.get(name);
    u.quorumKey = pem;
    u.version = (u.version ?? 0) + 1;
    return u;
  }

  /** Public view of every user, sorted by name. */
  list(): UserInfo[] {
    return [...this.users.values()]
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .map((u) => ({ name: u.name, role: u.role, locked: u.locked, failedLogins: u.failedLogins }));
  }

  /** Every record (for persistence, masking and the state digest). */
  records(): UserRecord[] {
    return [...this.users.values()];
  }

  /** Replaces the table (load from disk, or a replicated user table). */
  replaceAll(recs: UserRecord[]): void {
    if (recs.length > this.opts.maxUsers) throw new UserLimitError(this.opts.maxUsers);
    this.users.clear();
    for (const r of recs) this.users.set(r.name, { ...r });
  }

  get size(): number {
    return this.users.size;
  }
}
