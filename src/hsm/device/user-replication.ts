// Merging a masked user table from another HSM of the cluster (see versions.ts). The table is
// not copied over this HSM's: each user record replaces the one held here only when its version
// is newer, a deleted user (tombstone) never comes back from an older record, and the lockout
// state (failed logins, locked) is this HSM's own — a replayed table cannot clear it. The
// table also carries the cluster's deletions of token keys, which resync applies with it.
import type { DeviceContext } from './context.js';
import { InvalidArgumentError, StaleObjectError, UserLimitError } from './errors.js';
import { mergeQuorum, QuorumState, stalePolicy, type QuorumRecord } from './quorum.js';
import type { Session } from './types.js';
import type { UserRecord } from './users.js';
import { checkVersion, removeSharee, sameUser, Tombstones, userVersion, type TombstoneRecord } from './versions.js';

/** The masked user table: every user and the deletions the exporting HSM knows. */
export interface MaskedUsers {
  users: UserRecord[];
  deleted: TombstoneRecord;
  /** M values and quorum tokens (absent in tables from before quorum existed: nothing to merge). */
  quorum?: QuorumRecord;
}

/** What an import of a user table did (the audit log has the same). */
export interface UsersImport {
  /** Users added or replaced by a newer version. */
  applied: number;
  /** Users and keys deleted (newer deletions). */
  deleted: number;
  /** What the table held that is older than this HSM's state, and was ignored. */
  stale: string[];
}

const ROLES = new Set(['PRECO', 'CO', 'CU', 'AU']);

/** Reads an unsealed table: the current shape, or the first format (a bare array of users, no deletions). */
export function readMaskedUsers(body: unknown): { users: UserRecord[]; deleted: Tombstones; quorum?: QuorumState } {
  const what = 'the masked user table';
  const raw = Array.isArray(body) ? {
    users: body as unknown[], deleted: undefined, quorum: undefined,
  } : (body as { users?: unknown; deleted?: TombstoneRecord; quorum?: unknown } | null);
  if (!raw || !Array.isArray(raw.users)) throw new InvalidArgumentError(`${what} is malformed`);
  const users = raw.users.map((u): UserRecord => {
    const r = u as UserRecord;
    if (!r || typeof r.name !== 'string' || !ROLES.has(r.role) || typeof r.salt !== 'string' || typeof r.hash !== 'string' || typeof r.cost !== 'number') {
      throw new InvalidArgumentError(`${what} is malformed`);
    }
    if (r.quorumKey !== undefined && typeof r.quorumKey !== 'string') throw new InvalidArgumentError(`${what} is malformed`);
    return { ...r, failedLogins: Number(r.failedLogins) || 0, locked: r.locked === true, version: checkVersion(r.version, `${what} (user ${r.name})`) };
  });
  return {
    users, deleted: Tombstones.from(raw.deleted, what),
    ...(raw.quorum !== undefined ? { quorum: QuorumState.from(raw.quorum, what) } : {}),
  };
}

/**
 * Applies what is newer in `table` to this HSM, persisted before it resolves. Refused as a whole
 * (StaleObjectError, audited) when nothing in it is newer and something is older: a replay.
 */
export async function mergeUserTable(
  ctx: DeviceContext, s: Session, table: { users: UserRecord[]; deleted: Tombstones; quorum?: QuorumState },
): Promise<UsersImport> {
  const put: UserRecord[] = [];
  const stale: string[] = [];
  const offered = new Map(table.users.map((r) => [r.name, userVersion(r)]));
  for (const r of table.users) {
    const v = userVersion(r);
    const local = ctx.users.has(r.name) ? ctx.users.get(r.name) : undefined;
    if (local) {
      const lv = userVersion(local);
      // Version 0 on both sides: records from before versions existed keep the old behaviour.
      if (v > lv || (v === 0 && lv === 0 && !sameUser(r, local))) {
        // Same version (only 0): this HSM's lockout state stays; a newer version is a change
        // (password, unlock) that clears it, as it did on the HSM that made it.
        put.push(v === lv ? { ...r, failedLogins: local.failedLogins, locked: local.locked } : r);
      } else if (v < lv || !sameUser(r, local)) {
        stale.push(`user ${r.name} at version ${v} (this HSM holds version ${lv})`);
      }
      continue;
    }
    const deletedAt = ctx.tombstones.users.get(r.name);
    if (deletedAt !== undefined && v <= deletedAt) stale.push(`user ${r.name} at version ${v} (deleted here at version ${deletedAt})`);
    else put.push(r);
  }
  const dropUsers: Array<[string, number]> = [];
  const learnUsers: Array<[string, number]> = [];
  for (const [name, tv] of table.deleted.users) {
    if ((offered.get(name) ?? -1) > tv) continue; // the table holds the name re-created after this deletion
    const local = ctx.users.has(name) ? ctx.users.get(name) : undefined;
    if (local) {
      if (userVersion(local) < tv) dropUsers.push([name, tv]);
      else stale.push(`the deletion of user ${name} at version ${tv} (this HSM holds version ${userVersion(local)})`);
    } else if ((ctx.tombstones.users.get(name) ?? -1) < tv) learnUsers.push([name, tv]);
  }
  const dropKeys: Array<[string, number]> = [];
  const learnKeys: Array<[string, number]> = [];
  for (const [id, tv] of table.deleted.keys) {
    const local = ctx.objects.get(id);
    if (local?.attrs.token) {
      if (local.version < tv) dropKeys.push([id, tv]);
      else stale.push(`the deletion of key ${id} at version ${tv} (this HSM holds version ${local.version})`);
    } else if ((ctx.tombstones.keys.get(id) ?? -1) < tv) learnKeys.push([id, tv]);
  }

  const quorumNews = table.quorum ? quorumHasNews(ctx, table.quorum) : false;
  const olderPolicy = table.quorum ? stalePolicy(ctx, table.quorum) : undefined;
  if (olderPolicy) stale.push(olderPolicy);
  const changes = put.length + dropUsers.length + learnUsers.length + dropKeys.length + learnKeys.length
    + (quorumNews ? 1 : 0);
  if (changes === 0 && stale.length > 0) {
    ctx.audit({ event: 'user.replicate', user: s.user, ok: false, code: 'HSM_ERR_STALE_OBJECT', stale });
    throw new StaleObjectError('import of a masked user table', stale);
  }
  const added = put.filter((r) => !ctx.users.has(r.name)).length;
  const { maxUsers } = ctx.users.opts;
  if (ctx.users.size - dropUsers.length + added > maxUsers) throw new UserLimitError(maxUsers);

  // Deletions are recorded before they are made (a crash in between is finished at open).
  for (const [name, tv] of [...dropUsers, ...learnUsers]) ctx.tombstones.users.set(name, tv);
  for (const [id, tv] of [...dropKeys, ...learnKeys]) ctx.tombstones.keys.set(id, tv);
  if (dropUsers.length + learnUsers.length + dropKeys.length + learnKeys.length > 0) await ctx.saveTombstones();
  for (const [id] of dropKeys) {
    await ctx.store.deleteKey(id);
    ctx.objects.delete(id);
  }
  for (const [name] of dropUsers) {
    await removeSharee(ctx, name);
    ctx.users.remove(name);
  }
  let revived = false;
  for (const r of put) {
    ctx.users.put(r);
    revived = ctx.tombstones.users.delete(r.name) || revived; // a re-created name supersedes its tombstone
  }
  await ctx.store.writeUsers(() => ctx.users.records());
  if (revived) await ctx.saveTombstones();
  // After the users: approvals are checked against the quorum keys the table just brought.
  if (table.quorum && mergeQuorum(ctx, table.quorum) > 0) await ctx.saveQuorum();
  const result: UsersImport = { applied: put.length, deleted: dropUsers.length + dropKeys.length, stale };
  ctx.audit({ event: 'user.replicate', user: s.user, ok: true, users: table.users.length, applied: result.applied, deleted: result.deleted, ...(stale.length > 0 ? { stale } : {}) });
  return result;
}

// Whether another HSM's quorum section holds anything this HSM lacks (a newer policy, an open
// token, an approval, a use): counted as a change, so a table carrying only token news is no replay.
function quorumHasNews(ctx: DeviceContext, incoming: QuorumState): boolean {
  if (incoming.policy.version > ctx.quorum.policy.version) return true;
  const now = Date.now();
  for (const t of incoming.tokens.values()) {
    if (Date.parse(t.expiresAt) <= now) continue;
    const local = ctx.quorum.tokens.get(t.id);
    if (!local) return true;
    if (t.closed && t.closed !== local.closed && local.closed !== 'used') return true;
    const held = (a: { approver: string; fingerprint: string }): boolean =>
      local.approvals.some((x) => x.approver === a.approver && x.fingerprint === a.fingerprint);
    if (!t.approvals.every(held)) return true;
  }
  return false;
}
