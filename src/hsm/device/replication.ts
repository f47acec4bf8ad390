// Replication and backup hooks (issue 3): token key objects, the user table and whole-HSM
// snapshots leave the HSM only sealed under the cluster key that every member shares, so
// key material is never in the clear outside an HSM. Also the state digest that tells
// whether two HSMs hold the same users and token keys.
import { createHash } from 'node:crypto';
import type { DeviceContext } from './context.js';
import { InvalidArgumentError, NoSuchKeyError } from './errors.js';
import { fromRecord, infoOf, toRecord, type KeyRecord } from './objects.js';
import { requireReplication } from './policy.js';
import { sealJson, unsealJson } from './sealing.js';
import type { KeyInfo, Session } from './types.js';
import type { UserRecord } from './users.js';

const MASKED_KEY = 'hsmproxy masked key v1';
const MASKED_USERS = 'hsmproxy masked users v1';
const SNAPSHOT = 'hsmproxy snapshot v1';

/** Contents of a snapshot once unsealed. */
export interface SnapshotContents {
  sourceHsm: string;
  takenAt: string;
  users: UserRecord[];
  keys: KeyRecord[];
}

/** Masked export/import of key objects and users, snapshots, digests. */
export class Replication {
  private version = 0;

  constructor(private readonly ctx: DeviceContext) {}

  /** Called on every durable change. */
  bump(): void {
    this.version++;
  }

  /** A token key sealed under the cluster key. */
  exportMasked(s: Session, keyId: string): Buffer {
    const k = this.ctx.objects.get(keyId);
    if (!k || !k.attrs.token) throw new NoSuchKeyError(keyId);
    requireReplication(s, k.attrs, `export key ${keyId} masked`);
    return sealJson(this.ctx.clusterKey, MASKED_KEY, toRecord(k));
  }

  /** Installs a masked key, keeping its key id, owner and sharing; this HSM picks the handle. */
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
    const existing = this.ctx.objects.get(k.attrs.keyId);
    k.handle = existing ? existing.handle : this.ctx.objects.allocateHandle();
    await this.ctx.store.writeKey(toRecord(k));
    this.ctx.objects.put(k);
    this.ctx.bump();
    this.ctx.audit({ event: 'key.replicate', user: s.user, ok: true, keyId: k.attrs.keyId, owner: k.attrs.owner });
    return infoOf(k);
  }

  /** The user table sealed under the cluster key. */
  exportUsers(s: Session): Buffer {
    requireReplication(s, undefined, 'export users');
    return sealJson(this.ctx.clusterKey, MASKED_USERS, this.ctx.users.records());
  }

  /** Replaces the user table with a masked one. */
  async importUsers(s: Session, masked: Buffer): Promise<void> {
    requireReplication(s, undefined, 'import users');
    const recs = unsealJson<UserRecord[]>(this.ctx.clusterKey, MASKED_USERS, masked, 'the masked user table');
    if (!Array.isArray(recs)) throw new InvalidArgumentError('the masked user table is malformed');
    this.ctx.users.replaceAll(recs);
    await this.ctx.store.writeUsers(() => this.ctx.users.records());
    this.ctx.bump();
    this.ctx.audit({ event: 'user.replicate', user: s.user, ok: true, users: recs.length });
  }

  /** Users and token keys sealed under the cluster key. */
  snapshot(s: Session): Buffer {
    requireReplication(s, undefined, 'take a snapshot');
    const contents: SnapshotContents = {
      sourceHsm: this.ctx.hsmId,
      takenAt: new Date().toISOString(),
      users: this.ctx.users.records(),
      keys: this.ctx.objects.all().filter((k) => k.attrs.token).map(toRecord),
    };
    this.ctx.audit({ event: 'hsm.snapshot', user: s.user, ok: true, keys: contents.keys.length });
    return sealJson(this.ctx.clusterKey, SNAPSHOT, contents);
  }

  /** Token key ids (for resync). */
  tokenKeyIds(s: Session): string[] {
    requireReplication(s, undefined, 'list token key ids');
    return this.ctx.objects.all().filter((k) => k.attrs.token).map((k) => k.attrs.keyId).sort();
  }

  /** Version + hash over users (name, role, password hash) and token keys (id, attributes, material hash). */
  stateDigest(): { version: number; digest: string; users: number; tokenKeys: number } {
    const lines: string[] = [];
    for (const u of this.ctx.users.records()) lines.push(`u ${u.name} ${u.role} ${u.hash}`);
    let tokenKeys = 0;
    for (const k of this.ctx.objects.all()) {
      if (!k.attrs.token) continue;
      tokenKeys++;
      const attrs = JSON.stringify(Object.entries(k.attrs).sort(([a], [b]) => (a < b ? -1 : 1)));
      lines.push(`k ${k.attrs.keyId} ${createHash('sha256').update(attrs).update(k.material.bytes).digest('hex')}`);
    }
    lines.sort();
    return { version: this.version, digest: createHash('sha256').update(lines.join('\n')).digest('hex'), users: this.ctx.users.size, tokenKeys };
  }
}

/** Opens a snapshot with the cluster key. */
export function readSnapshot(clusterKey: Buffer, snapshot: Buffer): SnapshotContents {
  const c = unsealJson<SnapshotContents>(clusterKey, SNAPSHOT, snapshot, 'the snapshot');
  if (!c || !Array.isArray(c.users) || !Array.isArray(c.keys)) throw new InvalidArgumentError('the snapshot is malformed');
  return c;
}
