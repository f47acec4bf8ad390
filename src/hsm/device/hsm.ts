// The Hsm class: one simulated appliance. Entry points check the session, ask policy.ts,
// run crypto through the capacity model, persist before acknowledging, and audit.
import type { CapacityProfile, CapacityProfileName } from './capacity.js';
import type {
  CryptoResult, DecryptRequest, EncryptRequest, HsmInfo, ImportPrivateKeyRequest, KeyAttributeChanges, KeyFilter,
  KeyInfo, KeyPairInfo, KeyPairSpec, KeyTemplate, Occupancy, Role, SecretKeySpec, Session, SignRequest, StateDigest,
  UnwrapRequest, UserInfo, VerifyRequest, WrapRequest,
} from './types.js';

/** Options of `Hsm.open`. */
export interface HsmOpenOptions {
  /** Data directory of this HSM (created if missing). */
  dir: string;
  /** This HSM's id within the cluster, e.g. 'hsm-1'. */
  hsmId: string;
  /** 32-byte cluster masking key shared by every HSM of the cluster (masked export/import, snapshots). */
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
}

/** Defaults, as CloudHSM documents them. */
export const DEFAULT_MAX_KEYS = 3500;
export const DEFAULT_MAX_USERS = 1024;
export const DEFAULT_LOCKOUT_THRESHOLD = 5;
/** The user created at init, with a one-time password. */
export const PRECO_USER = 'admin';

function todo(): never {
  throw new Error('not implemented yet');
}

/** One simulated HSM: users, key objects, real crypto behind a capacity model, audit, persistence. */
export class Hsm {
  /** Opens (or initialises, given `initialPassword`) the HSM whose data lives in `opts.dir`. */
  static async open(opts: HsmOpenOptions): Promise<Hsm> {
    void opts;
    return todo();
  }

  /** Creates a new HSM in the empty `opts.dir` from a `snapshot()` of another (clone/restore). */
  static async restore(snapshot: Buffer, opts: HsmOpenOptions): Promise<Hsm> {
    void snapshot; void opts;
    return todo();
  }

  /** Flushes and releases the HSM; every session ends. */
  async close(): Promise<void> { return todo(); }

  // ---- users and sessions ----

  /** Logs a user in; throws BadCredentialsError / LockedOutError. */
  async login(user: string, password: string): Promise<Session> { void user; void password; return todo(); }
  /** Ends a session and destroys its session keys. */
  async logout(session: Session): Promise<void> { void session; return todo(); }
  /** Changes the session user's own password; a PRECO becomes CO by doing so. */
  async changePassword(session: Session, newPassword: string): Promise<Session> { void session; void newPassword; return todo(); }
  /** CO: creates a user. */
  async createUser(session: Session, name: string, role: Exclude<Role, 'PRECO'>, password: string): Promise<UserInfo> { void session; void name; void role; void password; return todo(); }
  /** CO: deletes a user (refused while it owns keys). */
  async deleteUser(session: Session, name: string): Promise<void> { void session; void name; return todo(); }
  /** CO: lists users. */
  listUsers(session: Session): UserInfo[] { void session; return todo(); }
  /** CO: sets another user's password and clears its lockout. */
  async resetPassword(session: Session, name: string, newPassword: string): Promise<void> { void session; void name; void newPassword; return todo(); }
  /** CO: clears a user's lockout without changing its password. */
  async unlockUser(session: Session, name: string): Promise<void> { void session; void name; return todo(); }

  // ---- key management (CU) ----

  /** Generates an RSA or EC key pair owned by the session user. */
  async generateKeyPair(session: Session, spec: KeyPairSpec, template: KeyTemplate): Promise<CryptoResult<KeyPairInfo>> { void session; void spec; void template; return todo(); }
  /** Generates an AES or generic secret key owned by the session user. */
  async generateKey(session: Session, spec: SecretKeySpec, template: KeyTemplate): Promise<CryptoResult<KeyInfo>> { void session; void spec; void template; return todo(); }
  /** Imports an existing private key (and derives its public half) as a key pair. */
  async importPrivateKey(session: Session, req: ImportPrivateKeyRequest): Promise<CryptoResult<KeyPairInfo>> { void session; void req; return todo(); }
  /** Keys the session user may see (own + shared with it), filtered. */
  listKeys(session: Session, filter?: KeyFilter): KeyInfo[] { void session; void filter; return todo(); }
  /** One key's attributes; NoSuchKeyError if not visible. */
  getKey(session: Session, keyId: string): KeyInfo { void session; void keyId; return todo(); }
  /** Owner: deletes a key (only that object; delete the pair's other half separately). */
  async deleteKey(session: Session, keyId: string): Promise<void> { void session; void keyId; return todo(); }
  /** Owner: shares a key with another CU. */
  async shareKey(session: Session, keyId: string, user: string): Promise<KeyInfo> { void session; void keyId; void user; return todo(); }
  /** Owner: stops sharing a key with a CU. */
  async unshareKey(session: Session, keyId: string, user: string): Promise<KeyInfo> { void session; void keyId; void user; return todo(); }
  /** Owner: changes attributes within the one-way rules. */
  async setAttributes(session: Session, keyId: string, changes: KeyAttributeChanges): Promise<KeyInfo> { void session; void keyId; void changes; return todo(); }
  /** Public key (SPKI) of a private or public key object: DER and PEM. Owner or sharee. */
  exportPublicKey(session: Session, keyId: string): { der: Buffer; pem: string } { void session; void keyId; return todo(); }

  // ---- crypto (CU), all through the capacity model ----

  /** Signs (or MACs) data; every signature verifies under the key's public key. */
  async sign(session: Session, req: SignRequest): Promise<CryptoResult<Buffer>> { void session; void req; return todo(); }
  /** Verifies a signature or MAC. */
  async verify(session: Session, req: VerifyRequest): Promise<CryptoResult<boolean>> { void session; void req; return todo(); }
  /** Encrypts (RSA-OAEP, AES-GCM with a device-chosen IV). */
  async encrypt(session: Session, req: EncryptRequest): Promise<CryptoResult<Buffer>> { void session; void req; return todo(); }
  /** Decrypts; DecryptError if authentication fails. */
  async decrypt(session: Session, req: DecryptRequest): Promise<CryptoResult<Buffer>> { void session; void req; return todo(); }
  /** Wraps an extractable key under a wrapping key (owner of the wrapped key only). */
  async wrapKey(session: Session, req: WrapRequest): Promise<CryptoResult<Buffer>> { void session; void req; return todo(); }
  /** Unwraps into a new key object owned by the session user. */
  async unwrapKey(session: Session, req: UnwrapRequest): Promise<CryptoResult<KeyInfo>> { void session; void req; return todo(); }
  /** Random bytes from the device (any logged-in user). */
  async random(session: Session, length: number): Promise<CryptoResult<Buffer>> { void session; void length; return todo(); }
  /** SHA-256/384/512 digest (any logged-in user). */
  async digest(session: Session, algorithm: 'sha256' | 'sha384' | 'sha512', data: Buffer): Promise<CryptoResult<Buffer>> { void session; void algorithm; void data; return todo(); }

  // ---- replication and backup (issue 3) ----

  /** A token key object (attributes + material) encrypted under the cluster key. Owner, CO or AU. */
  exportMasked(session: Session, keyId: string): Buffer { void session; void keyId; return todo(); }
  /** Installs a masked key object, keeping key id, owner and sharing; replaces an older copy. Owner, CO or AU. */
  async importMasked(session: Session, masked: Buffer): Promise<KeyInfo> { void session; void masked; return todo(); }
  /** The user table (with password hashes) masked under the cluster key. CO or AU. */
  exportUsers(session: Session): Buffer { void session; return todo(); }
  /** Replaces the user table with a masked one from another HSM of the cluster. CO or AU. */
  async importUsers(session: Session, masked: Buffer): Promise<void> { void session; void masked; return todo(); }
  /** Everything durable (users, token keys) masked under the cluster key. CO or AU. */
  snapshot(session: Session): Buffer { void session; return todo(); }
  /** Version counter + hash over users and token keys: equal digests mean in sync. */
  stateDigest(): StateDigest { return todo(); }
  /** Key ids of every token key (for resync: compare, then export/import the difference). AU or CO. */
  listTokenKeyIds(session: Session): string[] { void session; return todo(); }

  // ---- status ----

  /** Key slots in use against the limit. */
  occupancy(): Occupancy { return todo(); }
  /** Id, profile, utilisation, queue, occupancy, state digest. */
  info(): HsmInfo { return todo(); }
  /** Path of the hash-chained audit log. */
  get auditLogPath(): string { return todo(); }
}
