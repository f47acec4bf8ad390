// Leases and certificate objects across the cluster. Every HSM decides a lease for itself
// (device/leases.ts); the client holds one only when a strict majority of the manifest grants it
// (the rule current.ts uses for state), so two holders can never both have a majority. The grants
// are then confirmed at the highest token among them, so every HSM of that majority refuses
// anything stored under an older token: a holder whose lease lapsed cannot reach a majority again.
// A certificate is stored on every HSM that answers and counts once a majority accepted it; a
// read asks every HSM and keeps the newest (highest token), copying it to the ones that lag.
import type { CertificateInfo, LeaseChallenge, LeaseInfo, StoreCertificateRequest } from '../protocol/types.js';
import type { ClusterClient } from './cluster-client.js';
import type { HsmConnection } from './connection.js';

/** A lease the cluster granted: a majority confirmed `token`. */
export interface ClusterLease {
  name: string;
  holder: string;
  token: number;
  ttlMs: number;
}

/** Why a lease was not granted: who holds it (as the HSMs that refused said). */
export interface LeaseRefusal {
  heldBy?: string;
  expiresInMs?: number;
  /** HSMs that granted, and the manifest's size. */
  granted: number;
  members: number;
}

/** A cluster-wide lease or certificate operation that a majority did not accept. */
export class ClusterQuorumError extends Error {
  readonly code: string;
  constructor(message: string, code = 'HSM_ERR_NO_MAJORITY', readonly causes: unknown[] = []) {
    super(message);
    this.name = 'ClusterQuorumError';
    this.code = code;
  }
}

type Answer<T> = { id: string; ok: true; value: T } | { id: string; ok: false; err: unknown };

const codeOf = (err: unknown): string | undefined => {
  const c = (err as { code?: unknown })?.code;
  return typeof c === 'string' ? c : undefined;
};

/** Majority leases and certificate objects over one cluster client. */
export class ClusterLeases {
  constructor(private readonly client: ClusterClient) {}

  /** The manifest's size: a majority is more than half of it, whatever is reachable. */
  private get members(): number {
    return this.client.members().length;
  }

  private majority(n: number): boolean {
    return n * 2 > this.members;
  }

  // Runs `fn` on every connected HSM (or those in `only`) at once; each answer or failure is kept.
  private async each<T>(
    fn: (c: HsmConnection, id: string) => Promise<T>, only?: ReadonlySet<string>,
  ): Promise<Array<Answer<T>>> {
    const ids = this.client.members().map((m) => m.id).filter((id) => !only || only.has(id));
    return Promise.all(ids.map(async (id): Promise<Answer<T>> => {
      const node = this.client.node(id);
      if (!node || node.status !== 'up') return { id, ok: false, err: Object.assign(new Error(`${id} is not connected`), { code: 'HSM_ERR_CONNECTION' }) };
      try {
        return { id, ok: true, value: await node.run((c) => fn(c, id)) };
      } catch (err) {
        return { id, ok: false, err };
      }
    }));
  }

  /**
   * Takes `name` for `holder`: granted by a strict majority of the manifest and confirmed there at
   * the highest token granted; otherwise every partial grant is released and the refusal returned.
   */
  async acquire(name: string, holder: string, ttlMs: number): Promise<ClusterLease | LeaseRefusal> {
    const answers = await this.each((c) => c.leaseAcquire(name, holder, ttlMs));
    const grants = answers.flatMap((a) => (a.ok && a.value.granted ? [{ id: a.id, token: a.value.token }] : []));
    const other = answers.flatMap((a) => (a.ok && !a.value.granted ? [a.value] : []))
      .sort((a, b) => b.token - a.token)[0];
    const refusal = (granted: number): LeaseRefusal => ({
      granted, members: this.members, ...(other ? { heldBy: other.holder, expiresInMs: other.expiresInMs } : {}),
    });
    if (!this.majority(grants.length)) {
      await this.releaseOn(name, holder, grants);
      return refusal(grants.length);
    }
    const token = Math.max(...grants.map((g) => g.token));
    const granters = new Set(grants.map((g) => g.id));
    const confirmed = await this.each((c) => c.leaseRenew(name, holder, token, ttlMs), granters);
    const ok = confirmed.filter((a) => a.ok).length;
    if (!this.majority(ok)) {
      await this.releaseOn(name, holder, grants.map((g) => ({ ...g, token })).concat(grants));
      return refusal(ok);
    }
    return { name, holder, token, ttlMs };
  }

  private async releaseOn(name: string, holder: string, grants: Array<{ id: string; token: number }>): Promise<void> {
    await Promise.all(grants.map(async (g) => {
      await this.each((c) => c.leaseRelease(name, holder, g.token), new Set([g.id]));
    }));
  }

  /**
   * Extends the lease on every HSM (with `challenges` published beside it when given); rejects
   * when fewer than a majority still hold it for this holder at this token: the lease is lost.
   */
  async renew(lease: ClusterLease, challenges?: LeaseChallenge[]): Promise<void> {
    const { name, holder, token, ttlMs } = lease;
    const answers = await this.each((c) => c.leaseRenew(name, holder, token, ttlMs, challenges));
    const ok = answers.filter((a) => a.ok).length;
    if (this.majority(ok)) return;
    const why = answers.flatMap((a) => (a.ok ? [] : [`${a.id}: ${(a.err as Error).message}`])).join('; ');
    const stale = answers.some((a) => !a.ok && codeOf(a.err) === 'HSM_ERR_STALE_LEASE');
    throw new ClusterQuorumError(
      `the lease of ${lease.name} (token ${lease.token}) is held by only ${ok} of ${this.members} HSMs, not a majority: it is lost (${why})`,
      stale ? 'HSM_ERR_STALE_LEASE' : 'HSM_ERR_NO_MAJORITY', answers.flatMap((a) => (a.ok ? [] : [a.err])),
    );
  }

  /** Gives the lease up on every HSM that answers. */
  async release(lease: ClusterLease): Promise<void> {
    await this.each((c) => c.leaseRelease(lease.name, lease.holder, lease.token));
  }

  /** Live leases across the cluster (per name, the highest token any HSM reports, with its challenges). */
  async list(): Promise<LeaseInfo[]> {
    const best = new Map<string, LeaseInfo>();
    for (const a of await this.each((c) => c.leaseList())) {
      if (!a.ok) continue;
      for (const l of a.value) {
        const cur = best.get(l.name);
        const newer = !cur || l.token > cur.token
          || (l.token === cur.token && l.challenges.length > cur.challenges.length);
        if (newer) best.set(l.name, l);
      }
    }
    return [...best.values()];
  }

  /**
   * Stores a certificate object on every HSM; done once a majority accepted it. A refusal for an
   * older fencing token is reported as such (HSM_ERR_STALE_LEASE): nothing newer was overwritten.
   */
  async storeCertificate(req: StoreCertificateRequest): Promise<void> {
    const answers = await this.each((c) => c.storeCertificate(req));
    const ok = answers.filter((a) => a.ok).length;
    if (this.majority(ok)) return;
    const failures = answers.flatMap((a) => (a.ok ? [] : [{ id: a.id, err: a.err }]));
    const stale = failures.find((f) => codeOf(f.err) === 'HSM_ERR_STALE_LEASE');
    if (stale) throw new ClusterQuorumError((stale.err as Error).message.replace(/^certificate /, `${stale.id}: certificate `), 'HSM_ERR_STALE_LEASE', failures.map((f) => f.err));
    throw new ClusterQuorumError(
      `certificate ${req.label} was stored on ${ok} of ${this.members} HSMs, not a majority (${failures.map((f) => `${f.id}: ${(f.err as Error).message}`).join('; ')})`,
      'HSM_ERR_NO_MAJORITY', failures.map((f) => f.err),
    );
  }

  /** Deletes certificate `label` under `token` on every HSM; done once a majority did (tombstones stay). */
  async deleteCertificate(label: string, token: number): Promise<void> {
    const answers = await this.each((c) => c.deleteCertificate(label, token));
    const ok = answers.filter((a) => a.ok).length;
    if (this.majority(ok)) return;
    const failures = answers.flatMap((a) => (a.ok ? [] : [`${a.id}: ${(a.err as Error).message}`]));
    throw new ClusterQuorumError(`certificate ${label} was deleted on ${ok} of ${this.members} HSMs, not a majority (${failures.join('; ')})`);
  }

  /**
   * The newest copy of certificate `label` among the HSMs that answer (undefined when none holds
   * it); HSMs holding an older copy (one was down while it was stored) get the newest.
   */
  async getCertificate(label: string): Promise<CertificateInfo | undefined> {
    const answers = await this.each((c) => c.getCertificate(label));
    let best: CertificateInfo | undefined;
    for (const a of answers) {
      if (!a.ok) continue;
      const v = a.value;
      if (!best || v.token > best.token || (v.token === best.token && v.storedAt > best.storedAt)) best = v;
    }
    if (!best) {
      const failed = answers.filter((a) => !a.ok && codeOf(a.err) !== 'HSM_ERR_NO_SUCH_KEY');
      if (failed.length === answers.length && failed.length > 0) {
        throw new ClusterQuorumError(`no HSM answered for certificate ${label}: ${failed.map((a) => `${a.id}: ${(a as { err: Error }).err.message}`).join('; ')}`, 'HSM_ERR_NO_MAJORITY');
      }
      return undefined;
    }
    const newest = best;
    if (newest.deleted) {
      // Deleted: HSMs still holding an older live copy are given the tombstone.
      const older = answers.filter((a) => a.ok && !a.value.deleted && a.value.token < newest.token);
      const live = new Set(older.map((a) => a.id));
      if (live.size > 0) await this.each((c) => c.deleteCertificate(label, newest.token), live);
      return undefined;
    }
    const lagging = new Set(answers.filter((a) => !a.ok ? codeOf(a.err) === 'HSM_ERR_NO_SUCH_KEY' : a.value.token < newest.token).map((a) => a.id));
    if (lagging.size > 0) {
      // Best effort: a copy that fails now is made at the next read.
      const copy = { label, keyId: newest.keyId, chain: newest.chain, note: newest.note, token: newest.token };
      await this.each((c) => c.storeCertificate(copy), lagging);
    }
    return best;
  }
}
