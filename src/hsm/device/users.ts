// Users of one HSM: roles, scrypt password hashes with a per-user salt, constant-time checks,
// lockout after consecutive failures, the user limit. Knows nothing of keys or sessions'
// rights (policy.ts) nor of disk (persist.ts): it is a table with rules about itself.
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { BadCredentialsError, InvalidArgumentError, LockedOutError, NoSuchUserError, UserExistsError, UserLimitError } from './errors.js';
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
}

/** Limits and costs of a user table. */
export interface UserTableOptions {
  maxUsers: number;
  lockoutThreshold: number;
  scryptCost: number;
}

const HASH_LEN = 32;
const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

function derive(password: string, salt: Buffer, cost: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, HASH_LEN, { N: cost, r: 8, p: 1, maxmem: 256 * cost * 8 + 1024 * 1024 }, (err, key) => (err ? reject(err) : resolve(key)));
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

  constructor(readonly opts: UserTableOptions) {}

  /** Builds a record with a fresh salt (or the given one) and hash (async: scrypt runs off the event loop). */
  async makeRecord(name: string, role: Role, password: string, salt: Buffer = randomBytes(16)): Promise<UserRecord> {
    if (!NAME_RE.test(name)) throw new InvalidArgumentError(`user name ${JSON.stringify(name)} is invalid: use 1-64 letters, digits, '_', '.', '-'`);
    checkPasswordShape(password);
    const hash = await derive(password, salt, this.opts.scryptCost);
    return { name, role, salt: salt.toString('hex'), hash: hash.toString('hex'), cost: this.opts.scryptCost, failedLogins: 0, locked: false };
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

  /** Removes a user. */
  remove(name: string): void {
    if (!this.users.delete(name)) throw new NoSuchUserError(name);
  }

  /**
   * Checks a password. Mutates the failure counter/lock (the caller persists the record);
   * unknown users and wrong passwords give the same error.
   */
  async authenticate(name: string, password: string): Promise<UserRecord> {
    const u = this.users.get(name);
    if (!u) {
      await derive(String(password), this.dummySalt, this.opts.scryptCost);
      throw new BadCredentialsError();
    }
    if (u.locked) throw new LockedOutError(name);
    const got = await derive(String(password), Buffer.from(u.salt, 'hex'), u.cost);
    const want = Buffer.from(u.hash, 'hex');
    if (got.length === want.length && timingSafeEqual(got, want)) {
      u.failedLogins = 0;
      return u;
    }
    u.failedLogins++;
    if (u.failedLogins >= this.opts.lockoutThreshold) {
      u.locked = true;
      throw new LockedOutError(name);
    }
    throw new BadCredentialsError(this.opts.lockoutThreshold - u.failedLogins);
  }

  /** Replaces a user's password (and clears its lockout); may change its role (PRECO → CO). */
  async setPassword(name: string, password: string, role?: Role, salt?: Buffer): Promise<UserRecord> {
    const u = this.get(name);
    const fresh = await this.makeRecord(name, role ?? u.role, password, salt);
    this.users.set(name, fresh);
    return fresh;
  }

  /** Clears the lockout and failure counter. */
  unlock(name: string): UserRecord {
    const u = this.get(name);
    u.locked = false;
    u.failedLogins = 0;
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
