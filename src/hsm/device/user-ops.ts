// User management and login for one HSM: CloudHSM's rules (PRECO → CO on first password
// change, CO manages users, lockout and its reset), persisted before each call resolves and
// audited. Sessions come already validated from hsm.ts.
import { createHmac } from 'node:crypto';
import type { DeviceContext } from './context.js';
import { BadCredentialsError, InvalidArgumentError, PermissionDeniedError, type HsmError } from './errors.js';
import { requireUserManager } from './policy.js';
import { checkApproverRemoval, withQuorum } from './quorum.js';
import type { SessionTable } from './sessions.js';
import type { Role, Session, UserInfo } from './types.js';
import { checkPasswordShape, type LoginVerdict } from './users.js';
import { removeSharee, userVersion } from './versions.js';

// The PRECO's password change (activation) salts with this nonce when the caller gives none:
// every HSM of the cluster activated with the same password then stores the same record, so
// the first HSM's user table, copied to the others, is not refused as a conflicting version.
const ACTIVATION_NONCE = Buffer.from('hsmproxy activation of the crypto officer');

/** What the caller (the appliance) knows of a login attempt beyond the credentials. */
export interface LoginAttempt {
  /** Takes a place under the caller's caps on logins in progress (throws if none is free); returns its release. */
  admit?: () => () => void;
  /** Who is trying, for the audit log (the appliance: its client certificate's fingerprint). */
  client?: string;
}

/** Login and user management. */
export class UserOps {
  constructor(private readonly ctx: DeviceContext, private readonly sessions: SessionTable) {}

  private persist(): Promise<void> {
    return this.ctx.store.writeUsers(() => this.ctx.users.records());
  }

  /**
   * Checks the password (attempts counted and persisted, lockout) and starts a session. Every
   * refusal is the same BadCredentialsError; the audit entry says why (`reason`). `attempt`
   * comes from the network layer: its caps on logins in progress and the peer's name.
   */
  async login(user: string, password: string, attempt: LoginAttempt = {}): Promise<Session> {
    if (typeof user !== 'string' || typeof password !== 'string') throw new InvalidArgumentError('login needs a user name and a password');
    const from = attempt.client !== undefined ? { client: attempt.client } : {};
    let release: () => void;
    try {
      release = attempt.admit?.() ?? (() => undefined);
    } catch (e) {
      this.ctx.audit({ event: 'login', user, ok: false, code: (e as HsmError).code, reason: 'busy', ...from });
      throw e;
    }
    let v: LoginVerdict;
    try {
      v = await this.ctx.users.authenticate(user, password, () => this.persist());
    } catch (e) {
      // The user table could not be written: refused, since the attempt may not be on disk.
      this.ctx.audit({ event: 'login', user, ok: false, code: (e as HsmError).code, ...from });
      throw e;
    } finally {
      release();
    }
    if (v.ok) {
      this.ctx.audit({ event: 'login', user, ok: true, role: v.user.role, ...from });
      return this.sessions.start(v.user.name, v.user.role);
    }
    const e = new BadCredentialsError();
    this.ctx.audit({ event: 'login', user, ok: false, code: e.code, reason: v.reason, failedLogins: v.failedLogins, ...(v.lockedNow ? { lockedNow: true } : {}), ...from });
    throw e;
  }

  /**
   * The session user's own password; a PRECO becomes CO. With `saltNonce` (the same random bytes
   * sent to every HSM of the cluster) the salt is derived from the cluster key, so each HSM
   * stores the same hash and the clones stay identical without a user-table copy, which a CU
   * may not make.
   */
  async changePassword(s: Session, newPassword: string, saltNonce?: Buffer): Promise<Session> {
    if (s.role === 'AU') throw new PermissionDeniedError('change password', 'appliance users are managed by a crypto officer');
    checkPasswordShape(newPassword);
    const role: Role = s.role === 'PRECO' ? 'CO' : s.role;
    const nonce = saltNonce ?? (s.role === 'PRECO' ? ACTIVATION_NONCE : undefined);
    const rec = await this.ctx.users.setPassword(
      s.user, newPassword, role, nonce === undefined ? undefined : clusterSalt(this.ctx.clusterKey, s.user, nonce),
    );
    await this.persist();
    this.ctx.audit({ event: 'user.password', user: s.user, ok: true, target: s.user, version: userVersion(rec), ...(role !== s.role ? { promotedTo: role } : {}) });
    return role === s.role ? s : this.sessions.promote(s, role);
  }

  /** CO: a new user. */
  async createUser(s: Session, name: string, role: Exclude<Role, 'PRECO'>, password: string): Promise<UserInfo> {
    requireUserManager(s, `create user ${name}`);
    if (!['CO', 'CU', 'AU'].includes(role)) throw new InvalidArgumentError(`role must be CO, CU or AU, not ${String(role)}`);
    return withQuorum(this.ctx, s, 'user', `create user ${name}`, () => this.create(s, name, role, password));
  }

  private async create(s: Session, name: string, role: Exclude<Role, 'PRECO'>, password: string): Promise<UserInfo> {
    // A name deleted before comes back one version above its tombstone, so the old user's
    // masked records stay older than the new user's.
    const rec = await this.ctx.users.makeRecord(
      name, role, password, undefined, (this.ctx.tombstones.users.get(name) ?? 0) + 1,
    );
    this.ctx.users.add(rec);
    try {
      await this.persist();
    } catch (e) {
      this.ctx.users.remove(name);
      throw e;
    }
    if (this.ctx.tombstones.users.delete(name)) await this.ctx.saveTombstones();
    this.ctx.audit({ event: 'user.create', user: s.user, ok: true, target: name, role, version: userVersion(rec) });
    return { name, role, locked: false, failedLogins: 0 };
  }

  /** CO: removes a user that owns no token keys, and takes it off keys shared with it. */
  async deleteUser(s: Session, name: string): Promise<void> {
    requireUserManager(s, `delete user ${name}`);
    this.ctx.users.get(name);
    if (name === s.user) throw new InvalidArgumentError('a crypto officer cannot delete itself; log in as another CO');
    checkApproverRemoval(this.ctx, name);
    return withQuorum(this.ctx, s, 'user', `delete user ${name}`, () => this.remove(s, name));
  }

  private async remove(s: Session, name: string): Promise<void> {
    const owned = this.ctx.objects.all().filter((k) => k.attrs.owner === name && k.attrs.token).length;
    if (owned > 0) throw new InvalidArgumentError(`user ${name} owns ${owned} key(s); they must delete them first`);
    // The tombstone first: a crash after it finishes the deletion at the next open (hsm.ts).
    const version = userVersion(this.ctx.users.get(name)) + 1;
    this.ctx.tombstones.users.set(name, version);
    try {
      await this.ctx.saveTombstones();
    } catch (e) {
      this.ctx.tombstones.users.delete(name);
      throw e;
    }
    await removeSharee(this.ctx, name);
    this.ctx.users.remove(name);
    await this.persist();
    this.sessions.endUser(name);
    this.ctx.audit({ event: 'user.delete', user: s.user, ok: true, target: name, version });
  }

  /** CO: every user. */
  list(s: Session): UserInfo[] {
    requireUserManager(s, 'list users');
    return this.ctx.users.list();
  }

  /** CO: another user's new password (clears its lockout). */
  async resetPassword(s: Session, name: string, newPassword: string): Promise<void> {
    requireUserManager(s, `reset password of ${name}`);
    if (this.ctx.users.get(name).role === 'PRECO') throw new InvalidArgumentError('the PRECO sets its own password at activation');
    return withQuorum(this.ctx, s, 'user', `reset password of ${name}`, () => this.reset(s, name, newPassword));
  }

  private async reset(s: Session, name: string, newPassword: string): Promise<void> {
    const rec = await this.ctx.users.setPassword(name, newPassword);
    await this.persist();
    this.ctx.audit({ event: 'user.password', user: s.user, ok: true, target: name, version: userVersion(rec) });
  }

  /** CO: clears a lockout. */
  async unlock(s: Session, name: string): Promise<void> {
    requireUserManager(s, `unlock user ${name}`);
    const rec = this.ctx.users.unlock(name);
    await this.persist();
    this.ctx.audit({ event: 'user.unlock', user: s.user, ok: true, target: name, version: userVersion(rec) });
  }
}

// A password salt every HSM of the cluster derives alike from the client's nonce: keyed by the
// cluster key, so a client picks the nonce but never the salt itself.
function clusterSalt(clusterKey: Buffer, user: string, nonce: Buffer): Buffer {
  if (!Buffer.isBuffer(nonce) || nonce.length < 16 || nonce.length > 64) throw new InvalidArgumentError('the password salt nonce must be 16 to 64 random bytes');
  return createHmac('sha256', clusterKey).update('hsmproxy password salt\0').update(user).update('\0').update(nonce).digest().subarray(0, 16);
}
