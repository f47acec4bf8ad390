// Leases this HSM decides for itself (docs/hsm-cluster.md, "Leases"): a named lease is granted
// when free or expired, with a fencing token one above the newest this HSM ever granted (or saw a
// certificate stored under) for the name. Grants, renewals and the newest tokens are on disk
// before the answer, so a restart never hands out a lower token. Expiry is measured on this
// HSM's own clock from the ttl the client sends: no clock agreement between machines is needed.
// The client takes a lease only when a majority of the cluster grants it (client/leases.ts).
// Pending ACME challenges ride on the lease (memory only: they live for one order).
import type { DeviceContext } from './context.js';
import { InvalidArgumentError, LeaseHeldError, StaleLeaseError } from './errors.js';
import { requireRole } from './policy.js';
import type { LeaseChallenge, LeaseGrant, LeaseInfo, Session } from './types.js';

const TABLE = 'leases.sealed';
/** Names with a lease or a token remembered, per HSM (one per ACME certificate in practice). */
export const MAX_LEASE_NAMES = 4096;
const MAX_TTL_MS = 24 * 3600_000;
const MAX_CHALLENGES = 100;
const NAME = /^[\x21-\x7e]{1,255}$/;

interface Held { holder: string; token: number; expiresAt: number }
interface LeaseTable { held: Record<string, Held>; newest: Record<string, number> }

/** Checks a lease or certificate name (printable ASCII, no spaces). */
export function checkLeaseName(name: unknown): string {
  if (typeof name !== 'string' || !NAME.test(name)) throw new InvalidArgumentError('a lease or certificate name must be 1 to 255 printable ASCII characters without spaces');
  return name;
}

function checkHolder(holder: unknown): string {
  if (typeof holder !== 'string' || holder.length === 0 || holder.length > 255) throw new InvalidArgumentError('a lease holder must be a string of 1 to 255 characters');
  return holder;
}

function checkTtl(ttlMs: unknown): number {
  if (typeof ttlMs !== 'number' || !Number.isInteger(ttlMs) || ttlMs < 100 || ttlMs > MAX_TTL_MS) {
    throw new InvalidArgumentError(`a lease ttl must be an integer number of milliseconds between 100 and ${MAX_TTL_MS}`);
  }
  return ttlMs;
}

function checkToken(token: unknown): number {
  if (typeof token !== 'number' || !Number.isSafeInteger(token) || token < 1) throw new InvalidArgumentError('a fencing token must be a positive integer');
  return token;
}

/** Challenges are public values (what the CA fetches), bounded in number and size. */
function checkChallenges(v: unknown): LeaseChallenge[] {
  if (!Array.isArray(v) || v.length > MAX_CHALLENGES) throw new InvalidArgumentError(`challenges must be a list of at most ${MAX_CHALLENGES}`);
  const text = (x: unknown, what: string): string => {
    if (typeof x !== 'string' || x.length === 0 || x.length > 1024) throw new InvalidArgumentError(`challenge ${what} must be a string of 1 to 1024 characters`);
    return x;
  };
  return v.map((c: unknown) => {
    const o = (typeof c === 'object' && c !== null ? c : {}) as Record<string, unknown>;
    if (o.type === 'tls-alpn-01') return { type: 'tls-alpn-01', name: text(o.name, 'name'), keyAuthorization: text(o.keyAuthorization, 'keyAuthorization') };
    if (o.type === 'http-01') return { type: 'http-01', token: text(o.token, 'token'), keyAuthorization: text(o.keyAuthorization, 'keyAuthorization') };
    throw new InvalidArgumentError('a challenge type must be tls-alpn-01 or http-01');
  });
}

/** The lease table of one HSM. */
export class Leases {
  private held = new Map<string, Held>();
  private newest = new Map<string, number>();
  private readonly challenges = new Map<string, LeaseChallenge[]>();

  private constructor(private readonly ctx: DeviceContext, private readonly now: () => number) {}

  /** Reads the persisted grants and tokens. */
  static async open(ctx: DeviceContext, now: () => number = Date.now): Promise<Leases> {
    const l = new Leases(ctx, now);
    const t = await ctx.store.readTable<LeaseTable>(TABLE);
    if (t) {
      for (const [name, h] of Object.entries(t.held ?? {})) l.held.set(name, h);
      for (const [name, v] of Object.entries(t.newest ?? {})) l.newest.set(name, v);
    }
    return l;
  }

  /** The newest token granted or seen for `name` (0: none). */
  newestToken(name: string): number {
    return this.newest.get(name) ?? 0;
  }

  /** Grants `name` to `holder` when free or expired, with a token above every earlier one. */
  async acquire(s: Session, name: string, holder: string, ttlMs: number): Promise<LeaseGrant> {
    requireRole(s, ['CU', 'CO'], 'take a lease');
    checkLeaseName(name);
    checkHolder(holder);
    checkTtl(ttlMs);
    const now = this.now();
    const cur = this.held.get(name);
    if (cur && cur.expiresAt > now && cur.holder !== holder) {
      return { granted: false, name, holder: cur.holder, token: cur.token, expiresInMs: cur.expiresAt - now };
    }
    this.room(name);
    const token = this.newestToken(name) + 1;
    this.held.set(name, { holder, token, expiresAt: now + ttlMs });
    this.newest.set(name, token);
    this.challenges.delete(name);
    await this.save();
    this.ctx.audit({ event: 'lease.grant', user: s.user, ok: true, lease: name, holder, token });
    return { granted: true, name, holder, token, expiresInMs: ttlMs };
  }

  /**
   * Extends `holder`'s lease under `token` (which must be at least the newest this HSM knows: the
   * client confirms a lease at the highest token its majority granted). Replaces the published
   * challenges when `challenges` is given. Refused when another holder's lease is live.
   */
  async renew(
    s: Session, name: string, holder: string, token: number, ttlMs: number, challenges?: unknown,
  ): Promise<LeaseGrant> {
    requireRole(s, ['CU', 'CO'], 'renew a lease');
    checkLeaseName(name);
    checkHolder(holder);
    checkToken(token);
    checkTtl(ttlMs);
    const list = challenges === undefined ? undefined : checkChallenges(challenges);
    const now = this.now();
    const cur = this.held.get(name);
    if (cur && cur.expiresAt > now && cur.holder !== holder) throw new LeaseHeldError(name, cur.holder);
    const newest = this.newestToken(name);
    if (token < newest) throw new StaleLeaseError(name, token, newest);
    this.room(name);
    this.held.set(name, { holder, token, expiresAt: now + ttlMs });
    this.newest.set(name, token);
    if (list) this.challenges.set(name, list);
    await this.save();
    return { granted: true, name, holder, token, expiresInMs: ttlMs };
  }

  /** Ends `holder`'s lease (its challenges go with it); false when it holds none under `token`. */
  async release(s: Session, name: string, holder: string, token: number): Promise<boolean> {
    requireRole(s, ['CU', 'CO'], 'release a lease');
    checkLeaseName(name);
    const cur = this.held.get(name);
    if (!cur || cur.holder !== holder || cur.token !== token) return false;
    this.held.delete(name);
    this.challenges.delete(name);
    await this.save();
    this.ctx.audit({ event: 'lease.release', user: s.user, ok: true, lease: name, holder, token });
    return true;
  }

  /** Live leases with their published challenges. */
  list(s: Session): LeaseInfo[] {
    requireRole(s, ['CU', 'CO', 'AU'], 'list leases');
    const now = this.now();
    const out: LeaseInfo[] = [];
    for (const [name, h] of this.held) {
      if (h.expiresAt <= now) continue;
      const challenges = this.challenges.get(name) ?? [];
      out.push({ name, holder: h.holder, token: h.token, expiresInMs: h.expiresAt - now, challenges });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /** Remembers a token seen on a stored certificate, so no later grant goes below it. */
  async raise(name: string, token: number): Promise<void> {
    if (token <= this.newestToken(name)) return;
    this.room(name);
    this.newest.set(name, token);
    await this.save();
  }

  // Bounded. A name's newest token is never forgotten (forgetting it is how a lower one would
  // be handed out again), so a full table refuses new names.
  private room(name: string): void {
    if (this.newest.has(name) || this.newest.size < MAX_LEASE_NAMES) return;
    throw new InvalidArgumentError(`this HSM keeps at most ${MAX_LEASE_NAMES} lease names`);
  }

  private save(): Promise<void> {
    return this.ctx.store.writeTable(TABLE, (): LeaseTable => ({
      held: Object.fromEntries(this.held), newest: Object.fromEntries(this.newest),
    }));
  }
}
