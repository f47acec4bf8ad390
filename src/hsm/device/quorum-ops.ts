// Quorum entry points of one HSM (CloudHSM's registerQuorumPubKey, setMValue, getToken,
// approveToken, getTokenStatus): a crypto officer registers a quorum public key, sets M per
// service, a user gets a token, approvers' signatures over it are submitted and verified here.
// Every change is persisted before the call resolves and audited, refusals too.
import { randomBytes } from 'node:crypto';
import type { DeviceContext } from './context.js';
import {
  InvalidArgumentError, PermissionDeniedError, QuorumSignatureError, QuorumTokenExpiredError, QuorumTokenInvalidError,
  type HsmError,
} from './errors.js';
import { requireRole } from './policy.js';
import {
  MAX_QUORUM_M, QUORUM_SERVICES, QUORUM_TOKEN_TTL_S, quorumRegistrationText, type QuorumApprover, type QuorumService,
  type QuorumStatus, type QuorumTokenInfo,
} from '../protocol/quorum.js';
import {
  approverKey, isQuorumService, keyFingerprint, MAX_QUORUM_TOKENS, mergeTokens, readQuorumPublicKey, readTokenRecord,
  registeredApprovers, tokenInfo, verifyQuorumSignature, withQuorum, type TokenRecord,
} from './quorum.js';
import { sealJson, unsealJson } from './sealing.js';
import type { Session } from './types.js';
import { userVersion } from './versions.js';

const MASKED_TOKEN = 'hsmproxy masked quorum token v1';

/** Registration, M values, tokens and approvals. */
export class QuorumOps {
  constructor(private readonly ctx: DeviceContext) {}

  /**
   * CO: registers (or replaces) the session user's quorum public key. `proof` is a signature by
   * the private half over quorumRegistrationText, so nobody registers a key they do not hold.
   */
  async registerKey(s: Session, publicKeyPem: string, proof: Buffer): Promise<QuorumApprover> {
    return this.audited(s, 'quorum.register', {}, async () => {
      requireRole(s, ['CO'], 'register a quorum key');
      const key = readQuorumPublicKey(publicKeyPem);
      const spki = key.export({ format: 'der', type: 'spki' });
      if (!verifyQuorumSignature(key, quorumRegistrationText(s.user, spki), proof)) {
        throw new InvalidArgumentError('the registration proof does not verify under this public key: sign the registration text with its private half (hsmproxy quorum register does)');
      }
      const rec = this.ctx.users.setQuorumKey(s.user, key.export({ format: 'pem', type: 'spki' }).toString());
      await this.ctx.store.writeUsers(() => this.ctx.users.records());
      const fingerprint = keyFingerprint(key);
      this.ctx.audit({ event: 'quorum.register', user: s.user, ok: true, fingerprint, keyType: key.asymmetricKeyType, version: userVersion(rec) });
      return { name: s.user, keyType: key.asymmetricKeyType ?? '', fingerprint };
    });
  }

  /**
   * CO: sets M for a service. Needs a `quorum` token approved by the larger of the quorum
   * service's M and the target service's current M (so one officer cannot lower another
   * service's quorum alone); M cannot exceed the crypto officers with a registered key.
   */
  async setM(s: Session, service: QuorumService, m: number): Promise<QuorumStatus> {
    return this.audited(s, 'quorum.set-m', { service, m }, async () => {
      requireRole(s, ['CO'], 'set a quorum M value');
      if (!isQuorumService(service)) throw new InvalidArgumentError(`the quorum service must be one of ${QUORUM_SERVICES.join(', ')}, not ${String(service)}`);
      if (!Number.isInteger(m) || m < 1 || m > MAX_QUORUM_M) throw new InvalidArgumentError(`M must be an integer from 1 (no quorum) to ${MAX_QUORUM_M}, not ${String(m)}`);
      const approvers = registeredApprovers(this.ctx);
      if (m > approvers.length && m > 1) {
        throw new InvalidArgumentError(`M=${m} for ${service} exceeds the ${approvers.length} crypto officer(s) with a registered quorum key${approvers.length > 0 ? ` (${approvers.join(', ')})` : ''}; register more keys first (hsmproxy quorum register)`);
      }
      const q = this.ctx.quorum;
      const need = Math.max(q.m('quorum'), q.m(service));
      return withQuorum(this.ctx, s, 'quorum', `set quorum M of ${service}`, async () => {
        const prev = q.policy;
        q.policy = { version: prev.version + 1, m: { ...prev.m, [service]: m } };
        try {
          await this.ctx.saveQuorum();
        } catch (e) {
          q.policy = prev;
          throw e;
        }
        this.ctx.audit({ event: 'quorum.set-m', user: s.user, ok: true, service, m, was: prev.m[service], version: q.policy.version });
        return this.statusOf();
      }, need);
    });
  }

  /**
   * A token for `service`, bound to the session user, valid `ttlSeconds` (default and at most
   * 600). One open token per user and service: an earlier one still open is marked replaced.
   * User and quorum tokens are for crypto officers; key tokens for whoever changes the key.
   */
  async getToken(s: Session, service: QuorumService, ttlSeconds = QUORUM_TOKEN_TTL_S): Promise<QuorumTokenInfo> {
    return this.audited(s, 'quorum.token.get', { service }, async () => {
      if (!isQuorumService(service)) throw new InvalidArgumentError(`the quorum service must be one of ${QUORUM_SERVICES.join(', ')}, not ${String(service)}`);
      requireRole(s, service === 'key' ? ['CO', 'CU'] : ['CO'], `get a quorum token for ${service}`);
      if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > QUORUM_TOKEN_TTL_S) {
        throw new InvalidArgumentError(`a quorum token lives 1 to ${QUORUM_TOKEN_TTL_S} seconds, not ${String(ttlSeconds)}`);
      }
      const q = this.ctx.quorum;
      const now = Date.now();
      q.purgeExpired(now);
      if (q.tokens.size >= MAX_QUORUM_TOKENS) throw new InvalidArgumentError(`the HSM holds its maximum of ${MAX_QUORUM_TOKENS} open quorum tokens; wait for some to expire (at most ${QUORUM_TOKEN_TTL_S} s)`);
      const replaced: string[] = [];
      for (const t of q.tokens.values()) {
        if (t.user === s.user && t.service === service && !t.closed && !q.reserved.has(t.id)) {
          t.closed = 'replaced';
          replaced.push(t.id);
        }
      }
      const t: TokenRecord = {
        id: randomBytes(16).toString('hex'), service, user: s.user, issuedBy: this.ctx.hsmId,
        issuedAt: new Date(now).toISOString(), expiresAt: new Date(now + ttlSeconds * 1000).toISOString(),
        approvals: [],
      };
      q.tokens.set(t.id, t);
      await this.ctx.saveQuorum();
      this.ctx.audit({ event: 'quorum.token.get', user: s.user, ok: true, tokenId: t.id, service, expiresAt: t.expiresAt, ...(replaced.length > 0 ? { replaced } : {}) });
      return tokenInfo(this.ctx, t, now);
    });
  }

  /**
   * Records `approver`'s signature over a token, after verifying it under the approver's
   * registered quorum key. Submitted by a crypto officer, or by the token's owner. An approver
   * already on record counts once (`duplicate: true`, nothing changes).
   */
  async approve(
    s: Session, tokenId: string, approver: string, signature: Buffer,
  ): Promise<QuorumTokenInfo & { duplicate: boolean }> {
    return this.audited(s, 'quorum.approve', { tokenId, approver }, async () => {
      const t = this.visibleToken(s, tokenId, 'approve');
      if (t.closed) throw new QuorumTokenInvalidError(`quorum token ${t.id} was ${t.closed === 'used' ? 'used already (a token approves one operation)' : 'replaced by a newer token of the same user and service'}; get a new one`);
      const now = Date.now();
      if (Date.parse(t.expiresAt) <= now) throw new QuorumTokenExpiredError(t.id, t.expiresAt);
      if (typeof approver !== 'string' || approver === '') throw new InvalidArgumentError('the approval must name its approver');
      if (!Buffer.isBuffer(signature) || signature.length === 0 || signature.length > 1024) throw new InvalidArgumentError('the approval signature must be 1 to 1024 bytes');
      const k = approverKey(this.ctx, approver);
      if (!k) {
        const role = this.ctx.users.has(approver) ? this.ctx.users.get(approver).role : undefined;
        throw new PermissionDeniedError(`approve quorum token ${t.id} as ${approver}`, role !== 'CO'
          ? `${approver} is ${role ? `a ${role}, not a crypto officer` : 'not a user'}; only crypto officers approve quorum tokens`
          : `${approver} has no registered quorum key; register one first (hsmproxy quorum register)`);
      }
      const text = tokenInfo(this.ctx, t, now).text;
      if (!verifyQuorumSignature(k.key, text, signature)) throw new QuorumSignatureError(approver, t.id);
      const held = t.approvals.find((a) => a.approver === approver);
      const duplicate = held?.fingerprint === k.fingerprint;
      if (!duplicate) {
        // An approval made with a key since replaced no longer counts: the new one takes its place.
        t.approvals = [...t.approvals.filter((a) => a.approver !== approver), { approver, fingerprint: k.fingerprint, signature: signature.toString('base64') }];
        await this.ctx.saveQuorum();
      }
      const info = tokenInfo(this.ctx, t, now);
      this.ctx.audit({ event: 'quorum.approve', user: s.user, ok: true, tokenId: t.id, approver, approvals: info.approvals.length, m: info.m, ...(duplicate ? { duplicate } : {}) });
      return { ...info, duplicate };
    });
  }

  /**
   * A token with its approvals sealed under the cluster key, for another HSM of the cluster
   * (`importToken`): how a token issued or approved on one HSM reaches the others. Its owner, a
   * CO or an AU (a CU cannot copy the user table, which also carries tokens).
   */
  exportToken(s: Session, tokenId: string): Buffer {
    const t = s.role === 'AU' ? this.ctx.quorum.tokens.get(tokenId) : this.visibleToken(s, tokenId, 'export');
    if (!t) throw new QuorumTokenInvalidError(`no quorum token ${tokenId} on this HSM`);
    return sealJson(this.ctx.clusterKey, MASKED_TOKEN, t);
  }

  /** Merges a masked token from another HSM: new approvals (each verified here), used/replaced. */
  async importToken(s: Session, masked: Buffer): Promise<QuorumTokenInfo> {
    requireRole(s, ['CO', 'CU', 'AU'], 'import a quorum token');
    const t = readTokenRecord(unsealJson<unknown>(this.ctx.clusterKey, MASKED_TOKEN, masked, 'the masked quorum token'), 'the masked quorum token');
    if (s.role === 'CU' && t.user !== s.user) throw new PermissionDeniedError('import a quorum token', `the token belongs to ${t.user}; a crypto user copies only its own tokens`);
    if (mergeTokens(this.ctx, [t]) > 0) await this.ctx.saveQuorum();
    // An expired token is not kept (it approves nothing): nothing to copy, and no error, so a copy
    // that arrives late does not take this HSM out of rotation.
    return tokenInfo(this.ctx, this.ctx.quorum.tokens.get(t.id) ?? t);
  }

  /** A token's approvals against M, expiry and state: any crypto officer, or the token's owner. */
  tokenStatus(s: Session, tokenId: string): QuorumTokenInfo {
    return tokenInfo(this.ctx, this.visibleToken(s, tokenId, 'read'));
  }

  /** M per service and the registered approvers (any user but the PRECO). */
  status(s: Session): QuorumStatus {
    requireRole(s, ['CO', 'CU', 'AU'], 'read the quorum settings');
    return this.statusOf();
  }

  private statusOf(): QuorumStatus {
    const approvers = registeredApprovers(this.ctx).map((name) => {
      const k = approverKey(this.ctx, name)!;
      return { name, keyType: k.key.asymmetricKeyType ?? '', fingerprint: k.fingerprint };
    });
    return { m: { ...this.ctx.quorum.policy.m }, approvers };
  }

  private visibleToken(s: Session, tokenId: string, what: string): TokenRecord {
    requireRole(s, ['CO', 'CU'], `${what} a quorum token`);
    if (typeof tokenId !== 'string' || !/^[0-9a-f]{32}$/.test(tokenId)) throw new InvalidArgumentError('a quorum token id is 32 hex digits (the id: line of the token file)');
    const t = this.ctx.quorum.tokens.get(tokenId);
    // A CU may not learn of other users' tokens: the same answer as an unknown id.
    if (!t || (s.role === 'CU' && t.user !== s.user)) {
      throw new QuorumTokenInvalidError(`no quorum token ${tokenId} on this HSM: never issued in this cluster, or expired and purged; get a new one (hsmproxy quorum token get)`);
    }
    return t;
  }

  // Runs an entry point; a refusal is audited under the entry point's event with its code.
  private async audited<T>(
    s: Session, event: string, fields: Record<string, unknown>, fn: () => Promise<T>,
  ): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      const err = e as HsmError;
      // withQuorum audits its own refusals, and the Hsm facade policy refusals, as 'denied'; the
      // rest are written here.
      const deniedElsewhere = err.code === 'HSM_ERR_QUORUM_REQUIRED' || err.code === 'HSM_ERR_PERMISSION_DENIED'
        || err.code === 'HSM_ERR_MUST_CHANGE_PASSWORD' || (err.code === 'HSM_ERR_QUORUM_TOKEN_EXPIRED' && event === 'quorum.set-m');
      if (!deniedElsewhere) {
        this.ctx.audit({ event, user: s.user, ok: false, ...fields, code: err.code ?? 'HSM_ERR_INTERNAL', reason: err.message });
      }
      throw e;
    }
  }
}
