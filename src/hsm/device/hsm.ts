// The Hsm class: one simulated appliance, the facade over the layers. Each entry point checks
// the session, then delegates (key-ops.ts, replication.ts, users.ts); policy.ts decides, every
// refusal is audited, and durable changes are on disk before the promise resolves.
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { AUDIT_KEY_LABEL, AuditLog, type AuditEntry } from './audit.js';
import { CapacityModel, type CapacityProfile, type CapacityProfileName } from './capacity.js';
import { SigningThreads, type SigningThreadStats } from './signing-threads.js';
import type { DeviceContext } from './context.js';
import {
  AlreadyLoggedInError, ClosedError, InvalidArgumentError, MustChangePasswordError, PermissionDeniedError, StoreError,
} from './errors.js';
import { Certificates, CERTIFICATES_TABLE } from './certificates.js';
import { KeyOps } from './key-ops.js';
import { Leases } from './leases.js';
import { fromRecord, infoOf, ObjectStore } from './objects.js';
import { DeviceStore } from './persist.js';
import { requireRole } from './policy.js';
import { QuorumState } from './quorum.js';
import { QuorumOps } from './quorum-ops.js';
import type { QuorumApprover, QuorumService, QuorumStatus, QuorumTokenInfo } from '../protocol/quorum.js';
import { readSnapshot, Replication } from './replication.js';
import type { UsersImport } from './user-replication.js';
import type {
  CertificateInfo, LeaseGrant, LeaseInfo, StoreCertificateRequest,
  CryptoResult, DecryptRequest, EncryptRequest, HsmInfo, ImportPrivateKeyRequest, KeyAttributeChanges, KeyFilter,
  ImportPublicKeyRequest,
  KeyInfo, KeyPairInfo, KeyPairSpec, KeyTemplate, Occupancy, Role, SecretKeySpec, Session, SignRequest, StateDigest,
  UnwrapRequest, UserInfo, VerifyRequest, WrapRequest,
} from './types.js';
import { SessionTable } from './sessions.js';
import { UserOps, type LoginAttempt } from './user-ops.js';
import { UserTable } from './users.js';
import { removeSharee, Tombstones, userVersion } from './versions.js';

/** Options of `Hsm.open`. */
export interface HsmOpenOptions {
  /** Data directory of this HSM (created if missing). */
  dir: string;
  /** This HSM's id within the cluster, e.g. 'hsm-1'. */
  hsmId: string;
  /** 32-byte masking key shared by every HSM of the cluster; kept sealed in `dir` (random if never given). */
  clusterKey?: Buffer;
  /** Required when `dir` holds no HSM yet: the PRECO `admin`'s one-time password. */
  initialPassword?: string;
  capacity?: CapacityProfileName | CapacityProfile;
  /** Consecutive failed logins that lock an account (default 5). */
  lockoutThreshold?: number;
  /** Key objects per HSM, token + session (default 3,500). */
  maxKeys?: number;
  /** Users per HSM (default 1,024). */
  maxUsers?: number;
  /** scrypt cost N (default 2^14); tests may lower it. */
  scryptCost?: number;
  /**
   * Worker threads that compute signatures beside the main thread, at most the profile's units
   * less one (default 0, or HSMPROXY_HSM_SIGN_WORKERS). Off by default: on the 2-core machine
   * measured, with the client on the same cores, a worker lowered signs/s (bench/FINDINGS.md);
   * it is for an HSM process with cores of its own to spare.
   */
  signWorkers?: number;
}

/** Signing workers for a profile: HSMPROXY_HSM_SIGN_WORKERS if set, else 0; at most its units less one. */
export function defaultSignWorkers(units: number): number {
  const env = process.env.HSMPROXY_HSM_SIGN_WORKERS;
  const n = env !== undefined && env !== '' && Number.isInteger(Number(env)) && Number(env) >= 0 ? Number(env) : 0;
  return Math.min(n, Math.max(0, units - 1));
}

/** Defaults, as CloudHSM documents them. */
export const DEFAULT_MAX_KEYS = 3500;
export const DEFAULT_MAX_USERS = 1024;
export const DEFAULT_LOCKOUT_THRESHOLD = 5;
/** The user created at init, with a one-time password. */
export const PRECO_USER = 'admin';
const DEFAULT_SCRYPT_COST = 1 << 14;

/** One simulated HSM: users, key objects, real crypto behind a capacity model, audit, persistence. */
export class Hsm {
  private readonly sessions: SessionTable;
  private readonly keys: KeyOps;
  private readonly userOps: UserOps;
  private readonly replication: Replication;
  private readonly certificates: Certificates;
  private readonly quorumOps: QuorumOps;
  private closed = false;

  private constructor(
    private readonly ctx: DeviceContext,
    private readonly auditLog: AuditLog,
    private readonly leases: Leases,
  ) {
    this.keys = new KeyOps(ctx);
    this.certificates = new Certificates(ctx, this.keys, leases);
    this.replication = new Replication(ctx);
    this.sessions = new SessionTable((id) => this.dropSessionKeys(id));
    this.userOps = new UserOps(ctx, this.sessions);
    this.quorumOps = new QuorumOps(ctx);
  }

  /** Opens (or initialises, given `initialPassword`) the HSM whose data lives in `opts.dir`. */
  static async open(opts: HsmOpenOptions): Promise<Hsm> {
    if (!opts || typeof opts.dir !== 'string' || typeof opts.hsmId !== 'string' || opts.hsmId === '') {
      throw new InvalidArgumentError('Hsm.open needs a data directory (dir) and an HSM id (hsmId)');
    }
    if (opts.clusterKey !== undefined && (!Buffer.isBuffer(opts.clusterKey) || opts.clusterKey.length !== 32)) {
      throw new InvalidArgumentError('the cluster key must be 32 bytes');
    }
    const lockoutThreshold = opts.lockoutThreshold ?? DEFAULT_LOCKOUT_THRESHOLD;
    if (!Number.isInteger(lockoutThreshold) || lockoutThreshold < 1) throw new InvalidArgumentError('lockoutThreshold must be a positive integer');
    const capacity = new CapacityModel(opts.capacity);
    const signWorkers = opts.signWorkers ?? defaultSignWorkers(capacity.profile.units);
    if (!Number.isInteger(signWorkers) || signWorkers < 0) throw new InvalidArgumentError('signWorkers must be a non-negative integer');
    const store = await DeviceStore.open(opts.dir);
    try {
      const users = new UserTable({
        maxUsers: opts.maxUsers ?? DEFAULT_MAX_USERS, lockoutThreshold,
        scryptCost: opts.scryptCost ?? DEFAULT_SCRYPT_COST,
      });
      const recs = await store.readUsers();
      let fresh = false;
      if (recs) {
        users.replaceAll(recs);
      } else {
        if (opts.initialPassword === undefined) {
          throw new InvalidArgumentError(`${opts.dir} holds no HSM yet; initialise it with the one-time PRECO password (hsmproxy cluster init)`);
        }
        users.add(await users.makeRecord(PRECO_USER, 'PRECO', opts.initialPassword));
        await store.writeUsers(() => users.records());
        fresh = true;
      }
      const clusterKey = await resolveClusterKey(store, opts.clusterKey);
      const objects = new ObjectStore(opts.maxKeys ?? DEFAULT_MAX_KEYS);
      for (const r of await store.readKeys()) {
        const k = fromRecord(r);
        if (objects.get(k.attrs.keyId)) throw new StoreError(`duplicate key ${k.attrs.keyId} in ${opts.dir}`);
        objects.put(k);
      }
      const tombstones = Tombstones.from(await store.readTombstones(), join(opts.dir, 'tombstones.sealed'));
      const saveTombstones = (): Promise<void> => store.writeTombstones(() => tombstones.toRecord());
      await finishDeletions(users, objects, tombstones, store, saveTombstones);
      const quorum = QuorumState.from(await store.readQuorum(), join(opts.dir, 'quorum.sealed'));
      const auditLog = AuditLog.open(join(opts.dir, 'audit.log'), store.deriveKey(AUDIT_KEY_LABEL), { hsm: opts.hsmId });
      const ctx: DeviceContext = {
        hsmId: opts.hsmId, users, objects, store, capacity, clusterKey, tombstones, saveTombstones,
        signing: new SigningThreads({ workers: signWorkers }),
        quorum, saveQuorum: () => store.writeQuorum(() => quorum.toRecord()),
        audit: (e: AuditEntry) => auditLog.append(e),
      };
      const hsm = new Hsm(ctx, auditLog, await Leases.open(ctx));
      await hsm.certificates.load();
      ctx.audit({ event: fresh ? 'hsm.init' : 'hsm.open', ok: true, keys: objects.occupancy().token, users: users.size });
      return hsm;
    } catch (e) {
      await store.release();
      throw e;
    }
  }

  /** Creates an HSM in the empty `opts.dir` from another's `snapshot()` (clone/restore); needs `opts.clusterKey`. */
  static async restore(snapshot: Buffer, opts: HsmOpenOptions): Promise<Hsm> {
    if (!opts?.clusterKey || opts.clusterKey.length !== 32) throw new InvalidArgumentError('restoring a snapshot needs the 32-byte cluster key');
    const contents = readSnapshot(opts.clusterKey, snapshot);
    const store = await DeviceStore.open(opts.dir);
    try {
      if (await store.readUsers()) throw new InvalidArgumentError(`${opts.dir} already holds an HSM; restore into an empty directory`);
      if ((await readdir(join(opts.dir, 'keys'))).length > 0) throw new InvalidArgumentError(`${opts.dir} already holds keys; restore into an empty directory`);
      for (const r of contents.keys) await store.writeKey(r);
      await store.writeUsers(() => contents.users);
      if (contents.deleted) await store.writeTombstones(() => contents.deleted!);
      if (contents.quorum) await store.writeQuorum(() => contents.quorum);
      if (contents.certificates) await store.writeTable(CERTIFICATES_TABLE, () => contents.certificates);
    } catch (e) {
      await store.release();
      throw e;
    }
    const hsm = await Hsm.open({ ...opts, initialPassword: undefined });
    hsm.ctx.audit({ event: 'hsm.restore', ok: true, from: contents.sourceHsm, takenAt: contents.takenAt, keys: contents.keys.length });
    return hsm;
  }

  /** The signing threads' counters (signatures on the main thread and on workers, batches). */
  get signingStats(): Readonly<SigningThreadStats> {
    return { ...this.ctx.signing.stats };
  }

  /** Starts the signing workers now (else at the first batch of signatures); resolves when they are ready. */
  warmSigningThreads(): Promise<void> {
    return this.ctx.signing.warm();
  }

  /** Releases the HSM; every session ends (session keys vanish). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.sessions.endAll();
    this.ctx.audit({ event: 'hsm.close', ok: true });
    this.closed = true;
    this.auditLog.close();
    await this.ctx.signing.close();
    await this.ctx.store.release();
  }

  // ---- users and sessions ----

  /**
   * Logs a user in; throws BadCredentialsError for an unknown user, a wrong password and a locked
   * account alike (the audit log tells them apart). `current`: the session the caller's
   * connection already holds. While it is live the login is refused (and audited as denied)
   * before the password is checked: a connection logs in once and then works as that user. A
   * session the HSM has ended (user deleted, role changed) does not count. `attempt`: the
   * caller's admission to its caps on logins in progress, and the peer to name in the audit log.
   */
  login(user: string, password: string, current?: Session, attempt?: LoginAttempt): Promise<Session> {
    this.open();
    const live = current ? this.liveSession(current) : undefined;
    if (live) {
      const e = new AlreadyLoggedInError(live.user);
      this.audited(live, `log in as ${user}`, e);
      return Promise.reject(e);
    }
    return this.userOps.login(user, password, attempt);
  }

  /** Ends a session and destroys its session keys. */
  async logout(session: Session): Promise<void> {
    const s = this.session(session);
    this.sessions.end(s.id);
    this.ctx.audit({ event: 'logout', user: s.user, ok: true });
  }

  /** Changes the session user's own password (a PRECO becomes CO); returns the new session. See UserOps. */
  changePassword(session: Session, newPassword: string, saltNonce?: Buffer): Promise<Session> {
    const s = this.session(session);
    return this.guard(s, 'change password', () => this.userOps.changePassword(s, newPassword, saltNonce));
  }

  /** CO: creates a user. */
  createUser(session: Session, name: string, role: Exclude<Role, 'PRECO'>, password: string): Promise<UserInfo> {
    const s = this.session(session);
    return this.guard(s, `create user ${name}`, () => this.userOps.createUser(s, name, role, password));
  }

  /** CO: deletes a user (refused while it owns keys; it is removed from keys shared with it). */
  deleteUser(session: Session, name: string): Promise<void> {
    const s = this.session(session);
    return this.guard(s, `delete user ${name}`, () => this.userOps.deleteUser(s, name));
  }

  /** CO: lists users. */
  listUsers(session: Session): UserInfo[] {
    const s = this.session(session);
    return this.guardSync(s, 'list users', () => this.userOps.list(s));
  }

  /** CO: sets another user's password and clears its lockout. */
  resetPassword(session: Session, name: string, newPassword: string): Promise<void> {
    const s = this.session(session);
    return this.guard(s, `reset password of ${name}`, () => this.userOps.resetPassword(s, name, newPassword));
  }

  /** CO: clears a user's lockout without changing its password. */
  unlockUser(session: Session, name: string): Promise<void> {
    const s = this.session(session);
    return this.guard(s, `unlock user ${name}`, () => this.userOps.unlock(s, name));
  }

  // ---- key management (CU) ----

  /** Generates an RSA or EC key pair owned by the session user. */
  generateKeyPair(session: Session, spec: KeyPairSpec, template: KeyTemplate): Promise<CryptoResult<KeyPairInfo>> {
    const s = this.session(session);
    return this.guard(s, 'generate a key pair', () => this.keys.generateKeyPair(s, spec, template));
  }

  /** Generates an AES or generic secret key owned by the session user. */
  generateKey(session: Session, spec: SecretKeySpec, template: KeyTemplate): Promise<CryptoResult<KeyInfo>> {
    const s = this.session(session);
    return this.guard(s, 'generate a key', () => this.keys.generateKey(s, spec, template));
  }

  /** Imports an existing private key (and derives its public half) as a key pair. */
  importPrivateKey(session: Session, req: ImportPrivateKeyRequest): Promise<CryptoResult<KeyPairInfo>> {
    const s = this.session(session);
    return this.guard(s, 'import a key', () => this.keys.importPrivateKey(s, req));
  }

  /** Imports a public key alone (e.g. another cluster's RSA key, to wrap keys for it). */
  importPublicKey(session: Session, req: ImportPublicKeyRequest): Promise<CryptoResult<KeyInfo>> {
    const s = this.session(session);
    return this.guard(s, 'import a key', () => this.keys.importPublicKey(s, req));
  }

  /** Keys the session user may see (own + shared with it; CO/AU see all token keys), filtered. */
  listKeys(session: Session, filter?: KeyFilter): KeyInfo[] {
    const s = this.session(session);
    return this.guardSync(s, 'list keys', () => this.keys.list(s, filter));
  }

  /** One key's attributes; NoSuchKeyError if not visible. */
  getKey(session: Session, keyId: string): KeyInfo {
    const s = this.session(session);
    return this.guardSync(s, `read key ${keyId}`, () => {
      return infoOf(this.keys.visible(s, keyId));
    });
  }

  /** Owner: deletes a key and the other half of its pair. */
  deleteKey(session: Session, keyId: string): Promise<void> {
    const s = this.session(session);
    return this.guard(s, `delete key ${keyId}`, () => this.keys.delete(s, keyId));
  }

  /** Owner: shares a key (and its pair half) with another CU. */
  shareKey(session: Session, keyId: string, user: string): Promise<KeyInfo> {
    const s = this.session(session);
    return this.guard(s, `share key ${keyId}`, () => this.keys.share(s, keyId, user, this.ctx.users.has(user) ? this.ctx.users.get(user).role : undefined));
  }

  /** Owner: stops sharing a key (and its pair half) with a CU. */
  unshareKey(session: Session, keyId: string, user: string): Promise<KeyInfo> {
    const s = this.session(session);
    return this.guard(s, `unshare key ${keyId}`, () => this.keys.unshare(s, keyId, user));
  }

  /** Owner: changes attributes within the one-way rules (a CO may only set `trusted`). */
  setAttributes(session: Session, keyId: string, changes: KeyAttributeChanges): Promise<KeyInfo> {
    const s = this.session(session);
    return this.guard(s, `change key ${keyId}`, () => this.keys.setAttributes(s, keyId, changes));
  }

  /** Public key (SPKI) of a private or public key object: DER and PEM. */
  exportPublicKey(session: Session, keyId: string): { der: Buffer; pem: string } {
    const s = this.session(session);
    return this.guardSync(s, `export public key ${keyId}`, () => this.keys.exportPublicKey(s, keyId));
  }

  // ---- crypto (CU), all through the capacity model ----

  /** Signs (or MACs) data; every signature verifies under the key's public key. */
  sign(session: Session, req: SignRequest): Promise<CryptoResult<Buffer>> {
    const s = this.session(session);
    // The hot path: no async frame of its own, and the action is only spelled out for a refusal.
    try {
      return this.keys.sign(s, req).catch((e: unknown) => {
        this.audited(s, `sign with ${req?.keyId}`, e);
        throw e;
      });
    } catch (e) {
      this.audited(s, `sign with ${req?.keyId}`, e);
      return Promise.reject(e);
    }
  }

  /** Verifies a signature or MAC. */
  verify(session: Session, req: VerifyRequest): Promise<CryptoResult<boolean>> {
    const s = this.session(session);
    return this.guard(s, `verify with ${req?.keyId}`, () => this.keys.verify(s, req));
  }

  /** Encrypts (RSA-OAEP, AES-GCM with a device-chosen IV). */
  encrypt(session: Session, req: EncryptRequest): Promise<CryptoResult<Buffer>> {
    const s = this.session(session);
    return this.guard(s, `encrypt with ${req?.keyId}`, () => this.keys.encrypt(s, req));
  }

  /** Decrypts; DecryptError if authentication fails. */
  decrypt(session: Session, req: DecryptRequest): Promise<CryptoResult<Buffer>> {
    const s = this.session(session);
    return this.guard(s, `decrypt with ${req?.keyId}`, () => this.keys.decrypt(s, req));
  }

  /** Wraps an extractable key under a wrapping key (owner of the wrapped key only). */
  wrapKey(session: Session, req: WrapRequest): Promise<CryptoResult<Buffer>> {
    const s = this.session(session);
    return this.guard(s, `wrap key ${req?.keyId}`, () => this.keys.wrap(s, req));
  }

  /** Unwraps into a new key owned by the session user (a private key gets its public half; returns the private one). */
  unwrapKey(session: Session, req: UnwrapRequest): Promise<CryptoResult<KeyInfo>> {
    const s = this.session(session);
    return this.guard(s, 'unwrap a key', () => this.keys.unwrap(s, req));
  }

  /** Random bytes from the device (any logged-in user but the PRECO). */
  random(session: Session, length: number): Promise<CryptoResult<Buffer>> {
    const s = this.session(session);
    return this.guard(s, 'random', () => {
      requireRole(s, ['CO', 'CU', 'AU'], 'random');
      return this.keys.random(length);
    });
  }

  /** SHA-256/384/512 digest (any logged-in user but the PRECO). */
  digest(session: Session, algorithm: 'sha256' | 'sha384' | 'sha512', data: Buffer): Promise<CryptoResult<Buffer>> {
    const s = this.session(session);
    return this.guard(s, 'digest', () => {
      requireRole(s, ['CO', 'CU', 'AU'], 'digest');
      return this.keys.digest(algorithm, data);
    });
  }

  // ---- replication and backup ----

  /** A token key object (attributes + material) sealed under the cluster key. Owner, CO or AU. */
  exportMasked(session: Session, keyId: string): Buffer {
    const s = this.session(session);
    return this.guardSync(s, `export key ${keyId} masked`, () => this.replication.exportMasked(s, keyId));
  }

  /** Installs a masked key object with its id, owner and sharing; replaces only an older version. Owner, CO or AU. */
  importMasked(session: Session, masked: Buffer): Promise<KeyInfo> {
    const s = this.session(session);
    return this.guard(s, 'import a masked key', () => this.replication.importMasked(s, masked));
  }

  /** The user table (with password hashes) sealed under the cluster key. CO or AU. */
  exportUsers(session: Session): Buffer {
    const s = this.session(session);
    return this.guardSync(s, 'export users', () => this.replication.exportUsers(s));
  }

  /**
   * Merges a masked user table from another HSM of the cluster: newer users and deletions only (sessions of users
   * gone or re-roled end). CO or AU.
   */
  importUsers(session: Session, masked: Buffer): Promise<UsersImport> {
    const s = this.session(session);
    return this.guard(s, 'import users', async () => {
      const r = await this.replication.importUsers(s, masked);
      this.sessions.reconcile((u) => (this.ctx.users.has(u) ? this.ctx.users.get(u).role : undefined));
      return r;
    });
  }

  /** Users, token keys and certificate objects sealed under the cluster key, for `Hsm.restore`. CO or AU. */
  snapshot(session: Session): Buffer {
    const s = this.session(session);
    return this.guardSync(s, 'take a snapshot', () => this.replication.snapshot(s, this.certificates.snapshotRecords()));
  }

  /** Change sequence (see versions.ts) + hash over users, token keys and deletions: equal digests mean in sync. */
  stateDigest(): StateDigest {
    return this.replication.stateDigest();
  }

  /** Key ids of every token key (for resync: compare, then export/import the difference). Owner, CO or AU. */
  listTokenKeyIds(session: Session): string[] {
    const s = this.session(session);
    return this.guardSync(s, 'list token key ids', () => this.replication.tokenKeyIds(s));
  }

  // ---- leases and certificate objects (ACME across proxies) ----

  /** Grants the lease `name` to `holder` for `ttlMs` if free or expired, with a fencing token above every earlier. */
  leaseAcquire(session: Session, name: string, holder: string, ttlMs: number): Promise<LeaseGrant> {
    const s = this.session(session);
    return this.guard(s, `take lease ${name}`, () => this.leases.acquire(s, name, holder, ttlMs));
  }

  /** Extends `holder`'s lease under `token` (at least the newest granted here), replacing its challenges if given. */
  leaseRenew(
    session: Session, name: string, holder: string, token: number, ttlMs: number, challenges?: unknown,
  ): Promise<LeaseGrant> {
    const s = this.session(session);
    return this.guard(s, `renew lease ${name}`, () => this.leases.renew(s, name, holder, token, ttlMs, challenges));
  }

  /** Ends `holder`'s lease; false when it held none under `token`. */
  leaseRelease(session: Session, name: string, holder: string, token: number): Promise<boolean> {
    const s = this.session(session);
    return this.guard(s, `release lease ${name}`, () => this.leases.release(s, name, holder, token));
  }

  /** Live leases and the challenges published beside them. */
  leaseList(session: Session): LeaseInfo[] {
    const s = this.session(session);
    return this.guardSync(s, 'list leases', () => this.leases.list(s));
  }

  /** Stores a certificate object for a key the CU may see; refused under a fencing token older than the newest. */
  storeCertificate(session: Session, req: StoreCertificateRequest): Promise<CertificateInfo> {
    const s = this.session(session);
    return this.guard(s, `store certificate ${req?.label}`, () => this.certificates.store(s, req));
  }

  /** One certificate object (visible to those who may see its key). */
  getCertificate(session: Session, label: string): CertificateInfo {
    const s = this.session(session);
    return this.guardSync(s, `read certificate ${label}`, () => this.certificates.get(s, label));
  }

  /** Deletes a certificate object under a fencing token, leaving a tombstone. Its key's owner only. */
  deleteCertificate(session: Session, label: string, token: number): Promise<CertificateInfo> {
    const s = this.session(session);
    return this.guard(s, `delete certificate ${label}`, () => this.certificates.delete(s, label, token));
  }

  /** Labels of the certificate objects the session may see. */
  listCertificates(session: Session): string[] {
    const s = this.session(session);
    return this.guardSync(s, 'list certificates', () => this.certificates.list(s));
  }

  // ---- quorum (M of N) ----

  /** CO: registers the session user's quorum public key (`proof`: its signature over the registration text). */
  registerQuorumKey(session: Session, publicKeyPem: string, proof: Buffer): Promise<QuorumApprover> {
    const s = this.session(session);
    return this.guard(s, 'register a quorum key', () => this.quorumOps.registerKey(s, publicKeyPem, proof));
  }

  /** CO: sets M for a quorum service (itself quorum-protected). */
  setQuorumM(session: Session, service: QuorumService, m: number): Promise<QuorumStatus> {
    const s = this.session(session);
    return this.guard(s, `set quorum M of ${service}`, () => this.quorumOps.setM(s, service, m));
  }

  /** A quorum token for `service`, bound to the session user. */
  getQuorumToken(session: Session, service: QuorumService, ttlSeconds?: number): Promise<QuorumTokenInfo> {
    const s = this.session(session);
    return this.guard(s, `get a quorum token for ${service}`, () => this.quorumOps.getToken(s, service, ttlSeconds));
  }

  /** Records a crypto officer's verified signature over a quorum token. */
  approveQuorumToken(
    session: Session, tokenId: string, approver: string, signature: Buffer,
  ): Promise<QuorumTokenInfo & { duplicate: boolean }> {
    const s = this.session(session);
    return this.guard(s, `approve quorum token ${tokenId}`, () => this.quorumOps.approve(s, tokenId, approver, signature));
  }

  /** A quorum token's approvals, M, expiry and state. */
  quorumTokenStatus(session: Session, tokenId: string): QuorumTokenInfo {
    const s = this.session(session);
    return this.guardSync(s, `read quorum token ${tokenId}`, () => this.quorumOps.tokenStatus(s, tokenId));
  }

  /** A quorum token sealed under the cluster key, for another HSM (owner, CO or AU). */
  exportQuorumToken(session: Session, tokenId: string): Buffer {
    const s = this.session(session);
    return this.guardSync(s, `export quorum token ${tokenId}`, () => this.quorumOps.exportToken(s, tokenId));
  }

  /** Merges a masked quorum token from another HSM of the cluster (its approvals are verified here). */
  importQuorumToken(session: Session, masked: Buffer): Promise<QuorumTokenInfo> {
    const s = this.session(session);
    return this.guard(s, 'import a quorum token', () => this.quorumOps.importToken(s, masked));
  }

  /** M per service and the registered approvers. */
  quorumStatus(session: Session): QuorumStatus {
    const s = this.session(session);
    return this.guardSync(s, 'read the quorum settings', () => this.quorumOps.status(s));
  }

  // ---- status ----

  /** Key slots in use against the limit. */
  occupancy(): Occupancy {
    return this.ctx.objects.occupancy();
  }

  /** Id, profile, utilisation, queue, occupancy, state digest. */
  info(): HsmInfo {
    const c = this.ctx.capacity;
    return {
      hsmId: this.ctx.hsmId, profile: c.profile.name, units: c.profile.units, utilisation: c.utilisation(),
      queued: c.queued,
      inService: c.active, occupancy: this.occupancy(), users: this.ctx.users.size, state: this.stateDigest(),
    };
  }

  /** Path of the MAC-chained audit log (verify it with verifyAuditLog and readAuditKey). */
  get auditLogPath(): string {
    return this.auditLog.path;
  }

  // ---- internals ----

  private open(): void {
    if (this.closed) throw new ClosedError();
  }

  // The live session for a caller's session object (a stale or forged one is refused).
  private session(session: Session): Session {
    this.open();
    return this.sessions.resolve(session);
  }

  private liveSession(session: Session): Session | undefined {
    try {
      return this.sessions.resolve(session);
    } catch {
      return undefined;
    }
  }

  private dropSessionKeys(sessionId: string): void {
    for (const k of this.ctx.objects.all()) if (k.session === sessionId) this.ctx.objects.delete(k.attrs.keyId);
  }

  private audited(s: Session, action: string, e: unknown): void {
    if (e instanceof PermissionDeniedError || e instanceof MustChangePasswordError
      || e instanceof AlreadyLoggedInError) {
      this.ctx.audit({ event: 'denied', user: s.user, ok: false, action, code: e.code, reason: e.message });
    }
  }

  // Runs an operation; policy refusals are written to the audit log before they propagate.
  private async guard<T>(s: Session, action: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      this.audited(s, action, e);
      throw e;
    }
  }

  private guardSync<T>(s: Session, action: string, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      this.audited(s, action, e);
      throw e;
    }
  }
}

// Finishes deletions a crash interrupted (the tombstone is written first): objects at or below
// their tombstone go, a deleted user leaves the keys shared with it, and a tombstone of a name
// re-created since is dropped.
async function finishDeletions(
  users: UserTable, objects: ObjectStore, tombstones: Tombstones, store: DeviceStore,
  saveTombstones: () => Promise<void>,
): Promise<void> {
  let usersChanged = false;
  let tombstonesChanged = false;
  for (const u of users.records()) {
    const deletedAt = tombstones.users.get(u.name);
    if (deletedAt === undefined) continue;
    if (userVersion(u) < deletedAt) {
      users.remove(u.name);
      usersChanged = true;
    } else {
      tombstones.users.delete(u.name);
      tombstonesChanged = true;
    }
  }
  for (const k of objects.all()) {
    const deletedAt = tombstones.keys.get(k.attrs.keyId);
    if (deletedAt === undefined || !k.attrs.token || k.version >= deletedAt) continue;
    await store.deleteKey(k.attrs.keyId);
    objects.delete(k.attrs.keyId);
  }
  const sharees = new Set(objects.all().flatMap((k) => k.attrs.sharedWith));
  for (const name of sharees) {
    if (!users.has(name) && tombstones.users.has(name)) await removeSharee({ objects, store }, name);
  }
  if (usersChanged) await store.writeUsers(() => users.records());
  if (tombstonesChanged) await saveTombstones();
}

async function resolveClusterKey(store: DeviceStore, given: Buffer | undefined): Promise<Buffer> {
  const kept = await store.readClusterKey();
  if (kept && given && !kept.equals(given)) throw new StoreError(`this HSM belongs to another cluster: its stored cluster key differs from the one given`);
  if (kept) return kept;
  const key = given ?? randomBytes(32);
  await store.writeClusterKey(key);
  return key;
}
