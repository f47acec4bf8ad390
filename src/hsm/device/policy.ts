// The one place with the access rules: who may manage users, see, use, delete, share, export
// or change a key, and which attribute changes are allowed. Every refusal is a typed error
// that says what was tried and why. Callers ask before acting; nothing else decides.
import { InvalidArgumentError, MechanismNotAllowedError, MustChangePasswordError, NoSuchKeyError, PermissionDeniedError } from './errors.js';
import type { KeyAttributes } from './objects.js';
import type { KeyAttributeChanges, KeyUsage, Role, Session } from './types.js';

/** Refuses everything but a password change to a PRECO, and roles not in `allowed`. */
export function requireRole(session: Session, allowed: readonly Role[], action: string): void {
  if (session.role === 'PRECO') throw new MustChangePasswordError();
  if (!allowed.includes(session.role)) {
    throw new PermissionDeniedError(action, `a ${session.role} may not do this (only ${allowed.join(' or ')})`);
  }
}

/** CO, and only CO, manages users. */
export function requireUserManager(session: Session, action: string): void {
  requireRole(session, ['CO'], action);
}

/**
 * Whether the session may see a key's attributes: its owner and the CUs it is shared with;
 * CO and AU see every key (to manage and replicate them) but may never use one.
 * A CU gets NoSuchKeyError, not a denial, for another CU's unshared key: it must not learn it exists.
 */
export function canSee(session: Session, key: KeyAttributes): boolean {
  if (session.role === 'CO' || session.role === 'AU') return true;
  if (session.role !== 'CU') return false;
  return key.owner === session.user || key.sharedWith.includes(session.user);
}

/** Throws NoSuchKeyError unless the session may see the key. */
export function requireVisible(
  session: Session, key: KeyAttributes | undefined, keyId: string,
): asserts key is KeyAttributes {
  if (session.role === 'PRECO') throw new MustChangePasswordError();
  if (!key || !canSee(session, key)) throw new NoSuchKeyError(keyId);
}

/** Use of a key by a mechanism: owner or sharee CU, and the key's usage attribute set. */
export function requireUse(session: Session, key: KeyAttributes, usage: keyof KeyUsage, mechanism: string): void {
  requireVisible(session, key, key.keyId);
  if (session.role !== 'CU') throw new PermissionDeniedError(`use key ${key.keyId}`, `only crypto users use keys; a ${session.role} cannot`);
  if (!key[usage]) throw new MechanismNotAllowedError(mechanism, key.keyId, `the key's ${usage} attribute is false`);
}

/** Delete, share, unshare or change a key: its owner only (sharees may only use it). */
export function requireOwner(session: Session, key: KeyAttributes, action: string): void {
  requireVisible(session, key, key.keyId);
  if (session.role !== 'CU' || key.owner !== session.user) {
    const why = session.role === 'CU' ? `the key belongs to ${key.owner}; a user it is shared with may use it but not ${action} it` : `only the owning crypto user may ${action} a key`;
    throw new PermissionDeniedError(`${action} key ${key.keyId}`, why);
  }
}

/** Export of key material (wrapping): the owner, and only if the key is extractable. */
export function requireExport(session: Session, key: KeyAttributes): void {
  requireOwner(session, key, 'export');
  if (!key.extractable) throw new PermissionDeniedError(`export key ${key.keyId}`, 'the key is not extractable');
  if (key.class === 'public') throw new InvalidArgumentError('public keys are exported with exportPublicKey, not wrapped');
}

/** Sharing: the owner, with an existing other CU, of a token key. */
export function requireShareTarget(
  owner: Session, key: KeyAttributes, targetRole: Role | undefined, target: string,
): void {
  requireOwner(owner, key, 'share');
  if (targetRole !== 'CU') throw new InvalidArgumentError(`keys can only be shared with crypto users; ${target} is ${targetRole ?? 'not a user'}`);
  if (target === key.owner) throw new InvalidArgumentError(`${target} owns key ${key.keyId}; no need to share it`);
  if (!key.token) throw new InvalidArgumentError('session keys cannot be shared; generate a token key to share it');
}

/** Masked export/import of key objects and user tables for replication: CO, AU, or the key's owner. */
export function requireReplication(session: Session, key: KeyAttributes | undefined, action: string): void {
  if (session.role === 'PRECO') throw new MustChangePasswordError();
  if (session.role === 'CO' || session.role === 'AU') return;
  if (key && session.role === 'CU' && key.owner === session.user) return;
  throw new PermissionDeniedError(action, 'only a crypto officer, an appliance user, or the key owner may replicate it');
}

/**
 * Attribute changes: owner only; `sensitive` may only go false→true and `extractable` only
 * true→false (one-way, as PKCS#11); class, type, size, owner, token and ids never change.
 * `trusted` may only be set by a crypto officer (the one change a CO may make).
 */
export function checkAttributeChanges(session: Session, key: KeyAttributes, changes: KeyAttributeChanges): void {
  const allowed = new Set(['label', 'id', 'extractable', 'sensitive', 'trusted', 'sign', 'verify', 'encrypt', 'decrypt', 'wrap', 'unwrap']);
  for (const k of Object.keys(changes)) {
    if (!allowed.has(k)) throw new InvalidArgumentError(`attribute ${k} cannot be changed after creation`);
  }
  if (session.role === 'CO') {
    requireVisible(session, key, key.keyId);
    const other = Object.keys(changes).filter((k) => k !== 'trusted');
    if (other.length > 0) throw new PermissionDeniedError(`change key ${key.keyId}`, `a crypto officer may only set trusted, not ${other.join(', ')}`);
    return;
  }
  requireOwner(session, key, 'change');
  if (changes.trusted !== undefined && changes.trusted !== key.trusted) {
    throw new PermissionDeniedError(`change key ${key.keyId}`, 'only a crypto officer may set trusted');
  }
  if (changes.sensitive === false && key.sensitive) {
    throw new PermissionDeniedError(`change key ${key.keyId}`, 'sensitive is one-way: once true it cannot be cleared');
  }
  if (changes.extractable === true && !key.extractable) {
    throw new PermissionDeniedError(`change key ${key.keyId}`, 'extractable is one-way: once false it cannot be set again');
  }
}

/** Default attributes by class: private and secret keys non-extractable and sensitive. */
export function defaultsFor(cls: KeyAttributes['class']): Pick<KeyAttributes, 'extractable' | 'sensitive'> {
  return cls === 'public' ? { extractable: true, sensitive: false } : { extractable: false, sensitive: true };
}
