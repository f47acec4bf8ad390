// Replication and backup hooks: token key objects, the user table and whole-HSM
// snapshots leave the HSM only sealed under the cluster key that every member shares, so
// key material is never in the clear outside an HSM. Every object carries its version inside
// the masking (versions.ts): an import is applied only when it is newer than what this HSM
// holds, so replaying an old masked object cannot undo a change. Also the
// state digest and change sequence that tell whether two HSMs hold the same users and keys.
import { createHash } from 'node:crypto';
import type { DeviceContext } from './context.js';
import { InvalidArgumentError, NoSuchKeyError, StaleObjectError } from './errors.js';
import { fromRecord, infoOf, toRecord, type KeyRecord, type StoredKey } from './objects.js';
import { requireReplication } from './policy.js';
import { sealJson, unsealJson } from './sealing.js';
import type { KeyInfo, Session } from './types.js';
import { mergeUserTable, readMaskedUsers, type MaskedUsers, type UsersImport } from './user-replication.js';
import { checkCertificateRecords, type CertificateRecord } from './certificates.js';
import { QuorumState, type QuorumRecord } from './quorum.js';
import type { UserRecord } from './users.js';
import { changeSequence, sameKey, Tombstones, userVersion, type TombstoneRecord } from './versions.js';

const MASKED_KEY = 'hsmproxy masked key v1';
const MASKED_USERS = 'hsmproxy masked users v1';
const SNAPSHOT = 'hsmproxy snapshot v1';

/** Contents of a snapshot once unsealed. */
export interface SnapshotContents {
  sourceHsm: string;
  takenAt: string;
  users: UserRecord[];
  keys: KeyRecord[];
  /** The source's deletions (absent in snapshots taken before versions existed). */
  deleted?: TombstoneRecord;
  /** The M values (tokens are not backed up: they live minutes). Absent in older snapshots. */
  quorum?: QuorumRecord;
  /**
   * Certificate objects, tombstones included (leases are not: they live seconds). Absent in older
   * snapshots. Kept so a cluster restored from a backup serves its certificates at once instead
   * of ordering them again (ACME CAs rate-limit duplicate orders).
   */
  certificates?: CertificateRecord[];
}

/** Masked export/import of key objects and users, snapshots, digests. */
export class Replication {
  constructor(private readonly ctx: DeviceContext) {}

  /** A token key, with its version, sealed under the cluster key. */
  exportMasked(s: Session, keyId: string): Buffer {
    const k = this.ctx.objects.get(keyId);
    if (!k || !k.attrs.token) throw new NoSuchKeyError(keyId);
    requireReplication(s, k.attrs, `export key ${keyId} masked`);
    return sealJson(this.ctx.clusterKey, MASKED_KEY, toRecord(k));
  }

  /**
   * Installs a masked key, keeping its key id, owner and sharing; this HSM picks the handle.
   * Only a newer version replaces the key held here; the same version is already held (a
   * no-op, as resync copies every key again); an older one, or any version of a deleted key, is
   * refused (StaleObjectError) and audited. Keys stored before versions existed are version 0,
   * and a version-0 copy still replaces a version-0 key (the old behaviour) until either changes.
   */
  async importMasked(s: Session, masked: Buffer): Promise<KeyInfo> {
    const rec = unsealJson<KeyRecord>(this.ctx.clusterKey, MASKED_KEY, masked, 'the masked key');
    const k = fromRecord(rec);
    try {
      void k.keyObject; // refuse unusable material now, not at first use
    } catch {
      throw new InvalidArgumentError(`the masked key ${k.attrs.keyId} holds unusable key material`);
    }
    if (!k.attrs.token) throw new InvalidArgumentError('session keys are never replicated');
    requireReplication(s, k.attrs, `import key ${k.attrs.keyId}`);
    const id = k.attrs.keyId;
    const existing = this.ctx.objects.get(id);
    const deletedAt = this.ctx.tombstones.keys.get(id);
    if (existing && existing.version === k.version && sameKey(existing, k)) return infoOf(existing);
    const stale = existing
      ? (k.version < existing.version || (k.version === existing.version && k.version > 0)) && `version ${k.version} of key ${id} is not newer than the version ${existing.version} this HSM holds`
      : deletedAt !== undefined && `key ${id} was deleted here (at version ${deletedAt}); version ${k.version} cannot bring it back`;
    if (stale) {
      this.ctx.audit({ event: 'key.replicate', user: s.user, ok: false, keyId: id, code: 'HSM_ERR_STALE_OBJECT', offered: k.version, held: existing?.version ?? deletedAt });
      throw new StaleObjectError('import of a masked key', [stale]);
    }
    k.handle = existing ? existing.handle : this.ctx.objects.allocateHandle();
    await this.ctx.store.writeKey(toRecord(k));
    this.ctx.objects.put(k);
    this.ctx.audit({ event: 'key.replicate', user: s.user, ok: true, keyId: id, owner: k.attrs.owner, version: k.version });
    return infoOf(k);
  }

  /** The user table and the deletions this HSM knows, sealed under the cluster key. */
  exportUsers(s: Session): Buffer {
    requireReplication(s, undefined, 'export users');
    const body: MaskedUsers = {
      users: this.ctx.users.records(), deleted: this.ctx.tombstones.toRecord(), quorum: this.ctx.quorum.toRecord(),
    };
    return sealJson(this.ctx.clusterKey, MASKED_USERS, body);
  }

  /**
   * Merges a masked user table from another HSM of the cluster: newer user records and
   * deletions are applied, the rest is kept (user-replication.ts has the rules). A table that
   * holds nothing newer but something older is refused (StaleObjectError): a replay.
   */
  async importUsers(s: Session, masked: Buffer): Promise<UsersImport> {
    requireReplication(s, undefined, 'import users');
    const table = readMaskedUsers(unsealJson<unknown>(this.ctx.clusterKey, MASKED_USERS, masked, 'the masked user table'));
    return mergeUserTable(this.ctx, s, table);
  }

  /** Users, token keys, deletions and certificate objects sealed under the cluster key. */
  snapshot(s: Session, certificates: CertificateRecord[]): Buffer {
    requireReplication(s, undefined, 'take a snapshot');
    const contents: SnapshotContents = {
      sourceHsm: this.ctx.hsmId,
      takenAt: new Date().toISOString(),
      users: this.ctx.users.records(),
      keys: this.tokenKeys().map(toRecord),
      deleted: this.ctx.tombstones.toRecord(),
      quorum: { policy: this.ctx.quorum.toRecord().policy, tokens: [] },
      certificates,
    };
    this.ctx.audit({ event: 'hsm.snapshot', user: s.user, ok: true, keys: contents.keys.length, certificates: certificates.length });
    return sealJson(this.ctx.clusterKey, SNAPSHOT, contents);
  }

  /** Token key ids (for resync). */
  tokenKeyIds(s: Session): string[] {
    requireReplication(s, undefined, 'list token key ids');
    return this.tokenKeys().map((k) => k.attrs.keyId).sort();
  }

  /**
   * The change sequence (versions.ts) + a hash over users (name, role, password hash, version)
   * and token keys (id, attributes, material, version). Version 0 adds nothing to a line, so
   * state written before versions existed keeps the digest it had (old backups restore).
   * Deletions are not hashed: an HSM that alone deleted a key only it had (made behind the
   * client's back) holds the same users and keys as its peers, and no resync could give them
   * that tombstone; resync copies the tombstones anyway, with the user table.
   */
  stateDigest(): { version: number; digest: string; users: number; tokenKeys: number } {
    const lines: string[] = [];
    const users = this.ctx.users.records();
    for (const u of users) lines.push(`u ${u.name} ${u.role} ${u.hash}${userVersion(u) ? ` v${userVersion(u)}` : ''}`);
    const keys = this.tokenKeys();
    for (const k of keys) {
      const attrs = JSON.stringify(Object.entries(k.attrs).sort(([a], [b]) => (a < b ? -1 : 1)));
      lines.push(`k ${k.attrs.keyId} ${createHash('sha256').update(attrs).update(k.material.bytes).digest('hex')}${k.version ? ` v${k.version}` : ''}`);
    }
    // The M values, once set (so state from before quorum keeps its digest).
    const q = this.ctx.quorum.policy;
    if (q.version > 0) lines.push(`q ${Object.entries(q.m).map(([k, v]) => `${k}=${v}`).join(' ')} v${q.version}`);
    lines.sort();
    return {
      version: changeSequence(users, keys, this.ctx.tombstones, q.version),
      digest: createHash('sha256').update(lines.join('\n')).digest('hex'),
      users: this.ctx.users.size,
      tokenKeys: keys.length,
    };
  }

  private tokenKeys(): StoredKey[] {
    return this.ctx.objects.all().filter((k) => k.attrs.token);
  }
}

/** Opens a snapshot with the cluster key. */
export function readSnapshot(clusterKey: Buffer, snapshot: Buffer): SnapshotContents {
  const c = unsealJson<SnapshotContents>(clusterKey, SNAPSHOT, snapshot, 'the snapshot');
  if (!c || !Array.isArray(c.users) || !Array.isArray(c.keys)) throw new InvalidArgumentError('the snapshot is malformed');
  Tombstones.from(c.deleted, 'the snapshot'); // refuse malformed deletions before anything is written
  QuorumState.from(c.quorum, 'the snapshot');
  if (c.certificates !== undefined) checkCertificateRecords(c.certificates, 'the snapshot');
  return c;
}
