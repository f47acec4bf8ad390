// Quorum (M of N) state of one HSM: the M value per service (a replicated, versioned policy, like
// a user record) and the quorum tokens with their approvals. Tokens travel in the masked user
// table (user-replication.ts), so a token issued on one HSM, its approvals and its use reach every
// HSM of the cluster the way user changes do; each HSM merges them by union (approvals) and
// one-way flags (used, replaced), and checks every approval's signature itself. The gate
// (`withQuorum`) is what user management and key-policy operations call; with M = 1 it does nothing.
import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import type { DeviceContext } from './context.js';
import { InvalidArgumentError, QuorumRequiredError, QuorumTokenExpiredError } from './errors.js';
import {
  MAX_QUORUM_M, QUORUM_SERVICES, quorumTokenText, type QuorumMValues, type QuorumService, type QuorumTokenInfo,
} from '../protocol/quorum.js';
import type { Session } from './types.js';
import { checkVersion } from './versions.js';

/** One approval on record: the approver, the key it signed with (fingerprint), the signature. */
export interface ApprovalRecord {
  approver: string;
  fingerprint: string;
  /** Base64 of the signature over the token text. */
  signature: string;
}

/** A quorum token as stored, persisted and replicated. */
export interface TokenRecord {
  id: string;
  service: QuorumService;
  user: string;
  issuedBy: string;
  /** ISO times, kept as text so the token text is reproduced byte for byte. */
  issuedAt: string;
  expiresAt: string;
  approvals: ApprovalRecord[];
  /** One-way: used by the operation it approved, or replaced by a newer token of the same user and service. */
  closed?: 'used' | 'replaced';
}

/** The M values and the version each change raises (replicated like a user record). */
export interface QuorumPolicy {
  version: number;
  m: QuorumMValues;
}

/** What is persisted (quorum.sealed) and carried in the masked user table. */
export interface QuorumRecord {
  policy: QuorumPolicy;
  tokens: TokenRecord[];
}

/** Tokens one HSM holds at most (CloudHSM's 1,024); expired ones are purged first. */
export const MAX_QUORUM_TOKENS = 1024;

const DEFAULT_M: QuorumMValues = { user: 1, key: 1, quorum: 1 };

/** Whether `v` names a quorum service. */
export function isQuorumService(v: unknown): v is QuorumService {
  return typeof v === 'string' && (QUORUM_SERVICES as readonly string[]).includes(v);
}

/** The M values and tokens of one HSM. */
export class QuorumState {
  policy: QuorumPolicy = { version: 0, m: { ...DEFAULT_M } };
  readonly tokens = new Map<string, TokenRecord>();
  /** Tokens taken by an operation in progress (not yet used or released): one use at a time. */
  readonly reserved = new Set<string>();

  /** From a persisted or replicated record (absent: M = 1 everywhere, no tokens). */
  static from(raw: unknown, what: string): QuorumState {
    const q = new QuorumState();
    if (raw === undefined || raw === null) return q;
    const r = raw as Partial<QuorumRecord>;
    if (typeof r !== 'object' || typeof r.policy !== 'object' || r.policy === null || !Array.isArray(r.tokens)) {
      throw new InvalidArgumentError(`${what} has a malformed quorum section`);
    }
    const m = { ...DEFAULT_M };
    for (const s of QUORUM_SERVICES) {
      const v = (r.policy.m as Partial<QuorumMValues> | undefined)?.[s] ?? 1;
      if (!Number.isInteger(v) || v < 1 || v > MAX_QUORUM_M) throw new InvalidArgumentError(`${what} has a malformed quorum M for ${s}`);
      m[s] = v;
    }
    q.policy = { version: checkVersion(r.policy.version, `${what} (quorum policy)`), m };
    for (const t of r.tokens) q.tokens.set(checkToken(t, what).id, t as TokenRecord);
    return q;
  }

  /** The record to persist or replicate; expired tokens are left out (they can no longer be used). */
  toRecord(now = Date.now()): QuorumRecord {
    this.purgeExpired(now);
    return { policy: { version: this.policy.version, m: { ...this.policy.m } }, tokens: [...this.tokens.values()] };
  }

  /** M of one service. */
  m(service: QuorumService): number {
    return this.policy.m[service];
  }

  /** The largest M in force (what a crypto officer's deletion must not go below). */
  maxM(): number {
    return Math.max(...QUORUM_SERVICES.map((s) => this.policy.m[s]));
  }

  /** Drops expired tokens (unless an operation holds one). */
  purgeExpired(now = Date.now()): void {
    for (const [id, t] of this.tokens) {
      if (Date.parse(t.expiresAt) <= now && !this.reserved.has(id)) this.tokens.delete(id);
    }
  }
}

function checkToken(t: unknown, what: string): TokenRecord {
  const r = t as TokenRecord;
  const bad = !r || typeof r.id !== 'string' || !/^[0-9a-f]{32}$/.test(r.id) || !isQuorumService(r.service)
    || typeof r.user !== 'string' || typeof r.issuedBy !== 'string' || Number.isNaN(Date.parse(r.issuedAt))
    || Number.isNaN(Date.parse(r.expiresAt)) || !Array.isArray(r.approvals)
    || !r.approvals.every((a) => a && typeof a.approver === 'string' && typeof a.fingerprint === 'string' && typeof a.signature === 'string')
    || (r.closed !== undefined && r.closed !== 'used' && r.closed !== 'replaced');
  if (bad) throw new InvalidArgumentError(`${what} has a malformed quorum token`);
  return r;
}

/** SHA-256 of a public key's SPKI DER, hex: how approvals name the key they were made with. */
export function keyFingerprint(key: KeyObject): string {
  return createHash('sha256').update(key.export({ format: 'der', type: 'spki' })).digest('hex');
}

/**
 * A quorum public key from PEM, refused unless it is RSA (2048 to 4096 bits) or EC P-256: the
 * kinds CloudHSM accepts and `openssl dgst -sha256 -sign` signs with.
 */
export function readQuorumPublicKey(pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    throw new InvalidArgumentError('the quorum public key is not a PEM public key (SPKI); make one with `hsmproxy quorum keygen` or `openssl pkey -pubout`');
  }
  const d = key.asymmetricKeyDetails ?? {};
  const rsa = key.asymmetricKeyType === 'rsa' && (d.modulusLength ?? 0) >= 2048 && (d.modulusLength ?? 0) <= 4096;
  const p256 = key.asymmetricKeyType === 'ec' && d.namedCurve === 'prime256v1';
  if (!rsa && !p256) throw new InvalidArgumentError(`a quorum key must be RSA 2048 to 4096 bits or EC P-256, not ${key.asymmetricKeyType ?? 'this'}${d.namedCurve ? ` ${d.namedCurve}` : d.modulusLength ? ` ${d.modulusLength}` : ''}`);
  return key;
}

/** Verifies a SHA-256 signature (RSA PKCS#1 v1.5 or DER ECDSA) over `text`; never throws. */
export function verifyQuorumSignature(key: KeyObject, text: string, signature: Buffer): boolean {
  try {
    return verify('sha256', Buffer.from(text, 'utf8'), key, signature);
  } catch {
    return false;
  }
}

/** The registered quorum key of a crypto officer, or undefined (not a CO, or no key registered). */
export function approverKey(ctx: DeviceContext, name: string): { key: KeyObject; fingerprint: string } | undefined {
  if (!ctx.users.has(name)) return undefined;
  const u = ctx.users.get(name);
  if (u.role !== 'CO' || !u.quorumKey) return undefined;
  try {
    const key = createPublicKey(u.quorumKey);
    return { key, fingerprint: keyFingerprint(key) };
  } catch {
    return undefined; // an unreadable key approves nothing (registration refuses such keys anyway)
  }
}

/** Crypto officers with a registered quorum key: the N of M of N. */
export function registeredApprovers(ctx: DeviceContext): string[] {
  return ctx.users.records().filter((u) => u.role === 'CO' && approverKey(ctx, u.name)).map((u) => u.name).sort();
}

/**
 * The approvals of a token that count now: one per crypto officer who still is one, made with
 * the key it has registered now, and whose signature verifies over the token text.
 */
export function validApprovals(ctx: DeviceContext, t: TokenRecord): string[] {
  const text = quorumTokenText(t);
  const names = new Set<string>();
  for (const a of t.approvals) {
    const k = approverKey(ctx, a.approver);
    if (k && k.fingerprint === a.fingerprint && verifyQuorumSignature(k.key, text, Buffer.from(a.signature, 'base64'))) names.add(a.approver);
  }
  return [...names].sort();
}

/** A token as the HSM reports it. */
export function tokenInfo(ctx: DeviceContext, t: TokenRecord, now = Date.now()): QuorumTokenInfo {
  const approvals = validApprovals(ctx, t);
  const m = ctx.quorum.m(t.service);
  const state = t.closed ?? (Date.parse(t.expiresAt) <= now ? 'expired' : approvals.length >= m ? 'approved' : 'pending');
  return {
    id: t.id, service: t.service, user: t.user, issuedBy: t.issuedBy, issuedAt: t.issuedAt, expiresAt: t.expiresAt,
    approvals, m, state, text: quorumTokenText(t),
  };
}

/**
 * Runs a quorum-protected operation: with M > 1 for `service`, the session user's newest open
 * token for it must hold M valid approvals and not have expired. The token is marked used (and
 * persisted) before the operation runs, so neither a second operation nor a crash can reuse it,
 * and reopened if the operation fails; a success is audited. Tokens are single-use, as CloudHSM's.
 * `m`: the approvals needed (default the service's M; setting M asks for more, quorum-ops.ts).
 */
export async function withQuorum<T>(
  ctx: DeviceContext, s: Session, service: QuorumService, action: string, fn: () => Promise<T>,
  m = ctx.quorum.m(service),
): Promise<T> {
  if (m <= 1) return fn();
  const t = usableToken(ctx, s, service, m, action);
  const approvals = validApprovals(ctx, t);
  // Used (on disk) before the operation runs: a crash in between leaves it used, never reusable.
  t.closed = 'used';
  ctx.quorum.reserved.add(t.id);
  try {
    await ctx.saveQuorum();
    const result = await fn();
    ctx.audit({ event: 'quorum.use', user: s.user, ok: true, tokenId: t.id, service, action, approvals });
    return result;
  } catch (e) {
    // The operation did not happen: the token may approve another attempt.
    t.closed = undefined;
    await ctx.saveQuorum().catch(() => undefined);
    throw e;
  } finally {
    ctx.quorum.reserved.delete(t.id);
  }
}

// The token an operation of `service` may use, or the error that says why there is none (audited).
function usableToken(ctx: DeviceContext, s: Session, service: QuorumService, m: number, action: string): TokenRecord {
  const now = Date.now();
  const q = ctx.quorum;
  const mine = [...q.tokens.values()].filter((t) => t.user === s.user && !t.closed);
  const newest = (ts: TokenRecord[]): TokenRecord | undefined =>
    ts.sort((a, b) => Date.parse(b.issuedAt) - Date.parse(a.issuedAt))[0];
  const t = newest(mine.filter((x) => x.service === service));
  let err: Error | undefined;
  if (!t) {
    const other = newest(mine.filter((x) => Date.parse(x.expiresAt) > now));
    err = new QuorumRequiredError(service, m, other
      ? `your open quorum token ${other.id} is for the ${other.service} service, not ${service}; get one for ${service} (hsmproxy quorum token get --service ${service})`
      : `you hold no quorum token for it: get one (hsmproxy quorum token get --service ${service}), have ${m} crypto officers sign it (hsmproxy quorum token sign) and approve the signatures (hsmproxy quorum token approve)`);
  } else if (Date.parse(t.expiresAt) <= now) {
    err = new QuorumTokenExpiredError(t.id, t.expiresAt);
  } else {
    const n = validApprovals(ctx, t).length;
    if (n < m) err = new QuorumRequiredError(service, m, `your quorum token ${t.id} has ${n} of ${m} approvals; have ${m - n} more crypto officer(s) sign and approve it`);
  }
  if (err) {
    ctx.audit({ event: 'denied', user: s.user, ok: false, action, code: (err as { code?: string }).code, reason: err.message, service });
    throw err;
  }
  return t!;
}

/**
 * Refuses to delete (or otherwise remove as an approver) crypto officer `name` when fewer
 * registered approvers than the largest M would be left: the quorum could never be met again.
 */
export function checkApproverRemoval(ctx: DeviceContext, name: string): void {
  const approvers = registeredApprovers(ctx);
  if (!approvers.includes(name)) return;
  const left = approvers.length - 1;
  const max = ctx.quorum.maxM();
  if (left < max) {
    const which = QUORUM_SERVICES.filter((s) => ctx.quorum.m(s) === max).join(', ');
    throw new InvalidArgumentError(`deleting crypto officer ${name} would leave ${left} registered quorum approver(s), fewer than M=${max} (${which}); lower M first (hsmproxy quorum set-m) or register another crypto officer's quorum key`);
  }
}

/** Why another HSM's M values are older than this one's (a replay), or undefined when they are not. */
export function stalePolicy(ctx: DeviceContext, incoming: QuorumState): string | undefined {
  const lv = ctx.quorum.policy.version;
  const iv = incoming.policy.version;
  const sameM = QUORUM_SERVICES.every((s) => ctx.quorum.policy.m[s] === incoming.policy.m[s]);
  if (iv < lv || (iv === lv && !sameM)) return `the quorum M values at version ${iv} (this HSM holds version ${lv})`;
  return undefined;
}

/**
 * Merges another HSM's quorum section into this one's (not yet persisted: the caller saves); returns
 * the changes made. A newer policy version replaces the M values (an older one is for the caller to
 * refuse: stalePolicy); tokens are joined as mergeTokens does.
 */
export function mergeQuorum(ctx: DeviceContext, incoming: QuorumState): number {
  const q = ctx.quorum;
  let changes = 0;
  if (incoming.policy.version > q.policy.version) {
    q.policy = { version: incoming.policy.version, m: { ...incoming.policy.m } };
    changes++;
  }
  return changes + mergeTokens(ctx, incoming.tokens.values());
}

/**
 * Joins tokens from another HSM into this one's; returns the changes made. Unknown tokens are
 * added (unless expired), approvals are added (each verified here, so a bad one is never
 * recorded), used/replaced are one-way, and a new token replaces its owner's older open one for
 * the service here too (one open token per user and service on every HSM).
 */
export function mergeTokens(ctx: DeviceContext, tokens: Iterable<TokenRecord>): number {
  const q = ctx.quorum;
  let changes = 0;
  const now = Date.now();
  for (const t of tokens) {
    if (Date.parse(t.expiresAt) <= now) continue;
    const local = q.tokens.get(t.id);
    if (!local) {
      q.tokens.set(t.id, { ...t, approvals: t.approvals.filter((a) => approvalVerifies(ctx, t, a)) });
      changes++;
      for (const x of q.tokens.values()) {
        if (x.id !== t.id && x.user === t.user && x.service === t.service && !x.closed && !q.reserved.has(x.id)
          && Date.parse(x.issuedAt) < Date.parse(t.issuedAt)) x.closed = 'replaced';
      }
      continue;
    }
    for (const a of t.approvals) {
      if (local.approvals.some((x) => x.approver === a.approver && x.fingerprint === a.fingerprint)) continue;
      if (!approvalVerifies(ctx, local, a)) continue;
      local.approvals.push(a);
      changes++;
    }
    if (t.closed && local.closed !== 'used' && t.closed !== local.closed) {
      local.closed = t.closed === 'used' ? 'used' : local.closed ?? 'replaced';
      changes++;
    }
  }
  if (q.tokens.size > MAX_QUORUM_TOKENS) q.purgeExpired(now);
  return changes;
}

/** Reads one token record from a masked blob's contents (refusing a malformed one). */
export function readTokenRecord(raw: unknown, what: string): TokenRecord {
  return checkToken(raw, what);
}

function approvalVerifies(ctx: DeviceContext, t: TokenRecord, a: ApprovalRecord): boolean {
  const k = approverKey(ctx, a.approver);
  return k !== undefined && k.fingerprint === a.fingerprint && verifyQuorumSignature(k.key, quorumTokenText(t), Buffer.from(a.signature, 'base64'));
}
