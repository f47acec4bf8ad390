// Object versions (docs/hsm-cluster.md, "Versions"): every replicated object — a token key, a user — carries a
// version that each cluster-wide change raises by one, and a deletion leaves a tombstone one
// above the object's last version. Versions travel inside the masked blobs, so they are
// authenticated by the cluster key, and an import is applied only when it is newer than what
// the HSM holds: an old masked object can never undo a change. Per-object counters (not one
// global counter) keep the clones identical: an operation repeated on every HSM raises the same
// object from the same version everywhere. Also the HSM's change sequence derived from them.
import type { DeviceContext } from './context.js';
import { InvalidArgumentError } from './errors.js';
import { toRecord, type StoredKey } from './objects.js';
import type { UserRecord } from './users.js';

/** Deleted users and token keys and the version each deletion had, as persisted and masked. */
export interface TombstoneRecord {
  users: Record<string, number>;
  keys: Record<string, number>;
}

/** The version of a user record: records written before versions existed count as 0. */
export function userVersion(u: UserRecord): number {
  return u.version ?? 0;
}

/** Checks a version read from a blob or a file. */
export function checkVersion(v: unknown, what: string): number {
  if (v === undefined) return 0;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new InvalidArgumentError(`${what} has a malformed version`);
  return v;
}

/** The deletions one HSM remembers, so that no replayed blob brings a deleted object back. */
export class Tombstones {
  readonly users = new Map<string, number>();
  readonly keys = new Map<string, number>();

  /** From a persisted or masked record (absent: none). */
  static from(rec: TombstoneRecord | undefined, what: string): Tombstones {
    const t = new Tombstones();
    if (rec === undefined) return t;
    if (typeof rec !== 'object' || rec === null || typeof rec.users !== 'object' || typeof rec.keys !== 'object' || rec.users === null || rec.keys === null) {
      throw new InvalidArgumentError(`${what} has malformed deletions`);
    }
    for (const [name, v] of Object.entries(rec.users)) t.users.set(name, checkVersion(v, `${what} (deleted user ${name})`));
    for (const [id, v] of Object.entries(rec.keys)) t.keys.set(id, checkVersion(v, `${what} (deleted key ${id})`));
    return t;
  }

  /** Sorted, for disk and masking. */
  toRecord(): TombstoneRecord {
    const sorted = (m: Map<string, number>): Record<string, number> =>
      Object.fromEntries([...m].sort(([a], [b]) => (a < b ? -1 : 1)));
    return { users: sorted(this.users), keys: sorted(this.keys) };
  }

  /** Sum of the deletions' versions (part of the change sequence). */
  sum(): number {
    let s = 0;
    for (const v of this.users.values()) s += v;
    for (const v of this.keys.values()) s += v;
    return s;
  }
}

/** Whether two user records hold the same replicated state (lockout counters are per HSM). */
export function sameUser(a: UserRecord, b: UserRecord): boolean {
  return a.name === b.name && a.role === b.role && a.salt === b.salt && a.hash === b.hash && a.cost === b.cost
    && userVersion(a) === userVersion(b) && (a.quorumKey ?? '') === (b.quorumKey ?? '');
}

/** Whether two key objects hold the same replicated state (the handle is per HSM). */
export function sameKey(a: StoredKey, b: StoredKey): boolean {
  const ra = toRecord(a);
  const rb = toRecord(b);
  return a.version === b.version && canonical(ra.attrs) === canonical(rb.attrs)
    && ra.material.format === rb.material.format && ra.material.b64 === rb.material.b64;
}

function canonical(attrs: object): string {
  return JSON.stringify(Object.entries(attrs).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/**
 * Takes a deleted user off the keys shared with it, raising each such key's version. The
 * origin of the deletion and every HSM that later learns of it (a masked user table with the
 * tombstone) do the same from the same versions, so the clones keep identical keys.
 */
export async function removeSharee(ctx: Pick<DeviceContext, 'objects' | 'store'>, name: string): Promise<void> {
  for (const k of ctx.objects.all().filter((x) => x.attrs.sharedWith.includes(name))) {
    k.attrs = { ...k.attrs, sharedWith: k.attrs.sharedWith.filter((u) => u !== name) };
    if (!k.attrs.token) continue;
    k.version++;
    await ctx.store.writeKey(toRecord(k));
  }
}

/**
 * The HSM's change sequence: the sum of the versions of its users, token keys and deletions.
 * Every change raises it and nothing lowers it; it lives in the encrypted store (each term is
 * persisted with its object) and travels with the masked objects, so it survives restarts, and
 * HSMs that took the same changes report the same number whatever the order they took them in
 * — which a separately kept counter would not (concurrent changes reach the HSMs in different
 * orders). An HSM that took a change its peer missed reports a higher one: that decides which of
 * two disagreeing HSMs is current (client/current.ts).
 */
export function changeSequence(
  users: readonly UserRecord[], keys: readonly StoredKey[], tombstones: Tombstones, quorumVersion = 0,
): number {
  // The quorum policy's version (M values, quorum.ts) is a replicated object's version too.
  let s = tombstones.sum() + quorumVersion;
  for (const u of users) s += userVersion(u);
  for (const k of keys) if (k.attrs.token) s += k.version;
  return s;
}
