// hsm/client: the cluster client as a library. This file: HsmConnection, one mTLS connection to
// one HSM, pipelined (many requests in flight, answers in any order), logged in once as one user,
// with typed methods per operation. No reconnect here: HsmNode (reconnect, health) and
// ClusterClient (balancing, failover, replication) build on it. Emits `hsmproxy:hsm:request`
// per request on node:diagnostics_channel. May import hsm/protocol and node built-ins only.
import { channel } from 'node:diagnostics_channel';
import { performance } from 'node:perf_hooks';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import {
  DECRYPT_BODY, ENCRYPT_BODY, Op, RANDOM_BODY, SIGN_BODY, TEXT_BODY, VERIFY_BODY, jsonText, opName, readJson,
  type BodyCodec,
  type CryptoResult, type DecryptRequest, type EncryptRequest, type HsmInfo, type ImportPrivateKeyRequest,
  type ImportPublicKeyRequest,
  type KeyAttributeChanges, type KeyFilter, type KeyInfo, type KeyPairInfo, type KeyPairSpec, type KeyTemplate,
  type Occupancy, type Role, type SecretKeySpec, type SignRequest, type StateDigest, type UnwrapRequest, type UserInfo,
  type VerifyRequest, type WrapRequest,
  type CertificateInfo, type LeaseChallenge, type LeaseGrant, type LeaseInfo, type StoreCertificateRequest,
} from '../protocol/index.js';
import type { QuorumApproval, QuorumApprover, QuorumService, QuorumStatus, QuorumTokenInfo } from '../protocol/index.js';
import { FrameChannel, type Reply, type RequestOptions } from './channel.js';
import { HsmClientError, HsmConnectionClosedError, HsmTlsError, HsmUnreachableError } from './errors.js';

export type { RequestOptions } from './channel.js';

/** Where an HSM listens and the mTLS material to reach it (PEM strings or buffers). */
export interface HsmConnectionOptions {
  /** The HSM's id in the cluster manifest, e.g. 'hsm-1' (used in errors and metrics). */
  hsmId: string;
  host: string;
  port: number;
  /** The cluster's customer CA certificate: the HSM's certificate must chain to it. */
  ca: string | Buffer;
  /** Client certificate (issued by the customer CA at init) and its private key. */
  cert: string | Buffer;
  key: string | Buffer;
  connectTimeoutMs?: number;
  /** Default per-request deadline (default 30 s; 0 = none). */
  requestTimeoutMs?: number;
}

/** The user a connection is logged in as. */
export interface LoginInfo {
  user: string;
  role: Role;
}

/** The `hsmproxy:hsm:request` message (contract shared with metrics/; keep the fields in step). */
export interface HsmRequestEvent {
  op: string;
  mechanism: string;
  hsm: string;
  rttMs: number;
  queueWaitMs: number;
  serviceMs: number;
  outcome: string;
}

const requestChannel = channel('hsmproxy:hsm:request');

/** One pipelined, mutually authenticated connection to one HSM. */
export class HsmConnection {
  private loggedIn: LoginInfo | undefined;
  /** Resolves once the connection is gone (closed by either side, or failed). */
  readonly closed: Promise<void>;

  private constructor(
    readonly hsmId: string,
    readonly address: string,
    private readonly ch: FrameChannel,
  ) {
    this.closed = new Promise((resolve) => ch.onClose(() => { this.loggedIn = undefined; resolve(); }));
  }

  /** Connects and completes the mTLS handshake; HsmUnreachableError / HsmTlsError on failure. */
  static connect(opts: HsmConnectionOptions): Promise<HsmConnection> {
    const address = `${opts.host}:${opts.port}`;
    return new Promise((resolve, reject) => {
      let settled = false;
      const socket: TLSSocket = tlsConnect({
        host: opts.host, port: opts.port, ca: opts.ca, cert: opts.cert, key: opts.key,
        minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3',
        servername: isIp(opts.host) ? undefined : opts.host,
      });
      socket.setNoDelay(true);
      const timer = setTimeout(() => fail(new HsmUnreachableError(opts.hsmId, address, 'connect timed out')), opts.connectTimeoutMs ?? 5000);
      const fail = (err: HsmClientError): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      };
      socket.once('error', (err: NodeJS.ErrnoException) => fail(classifySocketError(opts.hsmId, address, err)));
      socket.once('secureConnect', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.removeAllListeners('error');
        const ch = new FrameChannel(
          socket, opts.hsmId, opts.requestTimeoutMs ?? 30_000, undefined,
          (err) => classifySocketError(opts.hsmId, address, err),
        );
        resolve(new HsmConnection(opts.hsmId, address, ch));
      });
    });
  }

  /** Requests in flight on this connection. */
  get inFlight(): number {
    return this.ch.inFlight;
  }

  /** Whether the connection is closed (then every call fails; make a new one). */
  get isClosed(): boolean {
    return this.ch.closedError !== undefined;
  }

  /** The logged-in user, if any. */
  get user(): LoginInfo | undefined {
    return this.loggedIn;
  }

  /** Calls `listener` once when the connection closes, with the reason. */
  onClose(listener: (err: HsmClientError) => void): void {
    this.ch.onClose(listener);
  }

  /** Closes gracefully; requests still in flight fail with HSM_ERR_CONNECTION_CLOSED. */
  close(): Promise<void> {
    return this.ch.end();
  }

  /** Closes at once. */
  destroy(): void {
    this.ch.destroy(new HsmConnectionClosedError(this.hsmId, 'closed by the client'));
  }

  // ---- session and users ----

  /** Logs the connection in; every later request runs as this user. */
  async login(user: string, password: string, opts?: RequestOptions): Promise<LoginInfo> {
    this.loggedIn = await this.json<LoginInfo>(Op.LOGIN, { user, password }, opts);
    return this.loggedIn;
  }
  /** Logs out (session keys of this login vanish). */
  async logout(opts?: RequestOptions): Promise<void> {
    await this.json(Op.LOGOUT, undefined, opts);
    this.loggedIn = undefined;
  }
  /** Changes the logged-in user's password; a PRECO becomes the CO. Same `saltNonce` on all HSMs → same stored hash. */
  async changePassword(newPassword: string, opts?: RequestOptions, saltNonce?: Buffer): Promise<LoginInfo> {
    this.loggedIn = await this.json<LoginInfo>(
      Op.CHANGE_PASSWORD, { newPassword, ...(saltNonce ? { saltNonce } : {}) }, opts,
    );
    return this.loggedIn;
  }
  /** CO: creates a user. */
  createUser(name: string, role: Exclude<Role, 'PRECO'>, password: string, opts?: RequestOptions): Promise<UserInfo> {
    return this.json(Op.CREATE_USER, { name, role, password }, opts);
  }
  /** CO: deletes a user. */
  async deleteUser(name: string, opts?: RequestOptions): Promise<void> {
    await this.json(Op.DELETE_USER, { name }, opts);
  }
  /** CO: lists users. */
  listUsers(opts?: RequestOptions): Promise<UserInfo[]> {
    return this.json(Op.LIST_USERS, undefined, opts);
  }
  /** CO: sets another user's password (and clears its lockout). */
  async resetPassword(name: string, newPassword: string, opts?: RequestOptions): Promise<void> {
    await this.json(Op.RESET_PASSWORD, { name, newPassword }, opts);
  }
  /** CO: clears a user's lockout. */
  async unlockUser(name: string, opts?: RequestOptions): Promise<void> {
    await this.json(Op.UNLOCK_USER, { name }, opts);
  }

  // ---- quorum (M of N); client/quorum.ts has the signing and the cluster-wide versions ----

  /** CO: registers the logged-in CO's quorum public key; `proof` signs the registration text. */
  registerQuorumKey(publicKey: string, proof: Buffer, opts?: RequestOptions): Promise<QuorumApprover> {
    return this.json(Op.QUORUM_REGISTER_KEY, { publicKey, proof }, opts);
  }
  /** CO: sets M of a quorum service (needs an approved `quorum` token when a quorum is in force). */
  setQuorumM(service: QuorumService, m: number, opts?: RequestOptions): Promise<QuorumStatus> {
    return this.json(Op.QUORUM_SET_M, { service, m }, opts);
  }
  /** A quorum token for `service`, bound to the logged-in user. */
  getQuorumToken(service: QuorumService, ttlSeconds?: number, opts?: RequestOptions): Promise<QuorumTokenInfo> {
    return this.json(Op.QUORUM_TOKEN_GET, { service, ...(ttlSeconds !== undefined ? { ttlSeconds } : {}) }, opts);
  }
  /** Submits an approver's signature over a token; the HSM verifies it and records the approval. */
  approveQuorumToken(a: QuorumApproval, opts?: RequestOptions): Promise<QuorumTokenInfo & { duplicate: boolean }> {
    const body = { tokenId: a.tokenId, approver: a.approver, signature: a.signature };
    return this.json(Op.QUORUM_TOKEN_APPROVE, body, opts);
  }
  /** A token's approvals against M, expiry and state. */
  quorumTokenStatus(tokenId: string, opts?: RequestOptions): Promise<QuorumTokenInfo> {
    return this.json(Op.QUORUM_TOKEN_STATUS, { tokenId }, opts);
  }
  /** A quorum token sealed under the cluster key (owner, CO or AU), for `importQuorumToken` on another HSM. */
  async exportQuorumToken(tokenId: string, opts?: RequestOptions): Promise<Buffer> {
    return (await this.json<{ masked: Buffer }>(Op.QUORUM_TOKEN_EXPORT, { tokenId }, opts)).masked;
  }
  /** Merges a masked quorum token from another HSM of the cluster. */
  importQuorumToken(masked: Buffer, opts?: RequestOptions): Promise<QuorumTokenInfo> {
    return this.json(Op.QUORUM_TOKEN_IMPORT, { masked }, opts);
  }
  /** M per service and the registered approvers. */
  quorumStatus(opts?: RequestOptions): Promise<QuorumStatus> {
    return this.json(Op.QUORUM_STATUS, undefined, opts);
  }

  // ---- keys ----

  /** CU: generates an RSA or EC key pair inside the HSM. */
  generateKeyPair(spec: KeyPairSpec, template: KeyTemplate, opts?: RequestOptions): Promise<KeyPairInfo> {
    return this.json(Op.GENERATE_KEY_PAIR, { spec, template }, opts, spec);
  }
  /** CU: generates an AES or generic secret key inside the HSM. */
  generateKey(spec: SecretKeySpec, template: KeyTemplate, opts?: RequestOptions): Promise<KeyInfo> {
    return this.json(Op.GENERATE_KEY, { spec, template }, opts, spec);
  }
  /** CU: imports an existing private key as a key pair. */
  importKey(req: ImportPrivateKeyRequest, opts?: RequestOptions): Promise<KeyPairInfo> {
    return this.json(Op.IMPORT_KEY, req, opts);
  }
  /** CU: imports a public key alone (SPKI PEM or DER). */
  importPublicKey(req: ImportPublicKeyRequest, opts?: RequestOptions): Promise<KeyInfo> {
    return this.json(Op.IMPORT_PUBLIC_KEY, req, opts);
  }
  /** Keys visible to the user (own and shared), filtered. */
  findKeys(filter: KeyFilter = {}, opts?: RequestOptions): Promise<KeyInfo[]> {
    return this.json(Op.FIND_KEYS, { filter }, opts);
  }
  /** One key's attributes. */
  getKey(keyId: string, opts?: RequestOptions): Promise<KeyInfo> {
    return this.json(Op.GET_KEY, { keyId }, opts);
  }
  /** Owner: deletes a key object. */
  async deleteKey(keyId: string, opts?: RequestOptions): Promise<void> {
    await this.json(Op.DELETE_KEY, { keyId }, opts);
  }
  /** Owner: shares a key with another CU. */
  shareKey(keyId: string, user: string, opts?: RequestOptions): Promise<KeyInfo> {
    return this.json(Op.SHARE_KEY, { keyId, user }, opts);
  }
  /** Owner: stops sharing a key with a CU. */
  unshareKey(keyId: string, user: string, opts?: RequestOptions): Promise<KeyInfo> {
    return this.json(Op.UNSHARE_KEY, { keyId, user }, opts);
  }
  /** Owner: changes attributes within the one-way rules. */
  setAttributes(keyId: string, changes: KeyAttributeChanges, opts?: RequestOptions): Promise<KeyInfo> {
    return this.json(Op.SET_ATTRIBUTES, { keyId, changes }, opts);
  }
  /** The public key (SPKI) of a key pair half, DER and PEM. */
  exportPublicKey(keyId: string, opts?: RequestOptions): Promise<{ der: Buffer; pem: string }> {
    return this.json(Op.EXPORT_PUBLIC_KEY, { keyId }, opts);
  }

  // ---- crypto (hot path: binary bodies) ----

  /** Signs data (or a digest, `prehashed`); resolves with the signature. */
  async sign(req: SignRequest, opts?: RequestOptions): Promise<Buffer> {
    return (await this.timed(Op.SIGN, SIGN_BODY, req, false, req.mechanism, opts)).body;
  }
  /** Same as sign, with the HSM's queue wait and service time. */
  async signTimed(req: SignRequest, opts?: RequestOptions): Promise<CryptoResult<Buffer>> {
    const r = await this.timed(Op.SIGN, SIGN_BODY, req, false, req.mechanism, opts);
    return { result: r.body, queueWaitUs: r.queueWaitUs, serviceUs: r.serviceUs };
  }
  /** Verifies a signature or MAC: true when it matches. */
  async verify(req: VerifyRequest, opts?: RequestOptions): Promise<boolean> {
    return (await this.timed(Op.VERIFY, VERIFY_BODY, req, false, req.mechanism, opts)).body[0] === 1;
  }
  /** HMAC with a secret key (mechanism hmac-sha*). */
  async hmac(req: SignRequest, opts?: RequestOptions): Promise<Buffer> {
    return (await this.timed(Op.HMAC, SIGN_BODY, req, false, req.mechanism, opts)).body;
  }
  /** Encrypts; AES-GCM output is iv || ciphertext || tag with a device-chosen IV. */
  async encrypt(req: EncryptRequest, opts?: RequestOptions): Promise<Buffer> {
    return (await this.timed(Op.ENCRYPT, ENCRYPT_BODY, req, false, req.mechanism, opts)).body;
  }
  /** Decrypts. */
  async decrypt(req: DecryptRequest, opts?: RequestOptions): Promise<Buffer> {
    return (await this.timed(Op.DECRYPT, DECRYPT_BODY, req, false, req.mechanism, opts)).body;
  }
  /** Random bytes from the HSM (at most 64 KiB per call). */
  async random(length: number, opts?: RequestOptions): Promise<Buffer> {
    return (await this.timed(Op.RANDOM, RANDOM_BODY, length, false, '', opts)).body;
  }
  /** Wraps an extractable key under a wrapping key. */
  async wrap(req: WrapRequest, opts?: RequestOptions): Promise<Buffer> {
    return (await this.json<{ wrapped: Buffer }>(Op.WRAP, req, opts, req.mechanism)).wrapped;
  }
  /** Unwraps into a new key owned by the logged-in user. */
  unwrap(req: UnwrapRequest, opts?: RequestOptions): Promise<KeyInfo> {
    return this.json(Op.UNWRAP, req, opts, req.mechanism);
  }

  // ---- status, replication and backup ----

  /** What the HSM reports about itself (no login needed). */
  info(opts?: RequestOptions): Promise<HsmInfo> {
    return this.json(Op.INFO, undefined, opts);
  }
  /** Key slots in use against the limit (no login needed). */
  occupancy(opts?: RequestOptions): Promise<Occupancy> {
    return this.json(Op.OCCUPANCY, undefined, opts);
  }
  /** Version + hash of users and token keys: equal digests mean in sync (no login needed). */
  stateDigest(opts?: RequestOptions): Promise<StateDigest> {
    return this.json(Op.STATE_DIGEST, undefined, opts);
  }
  /** A token key encrypted under the cluster masking key (owner, CO or AU). */
  async exportMasked(keyId: string, opts?: RequestOptions): Promise<Buffer> {
    return (await this.json<{ masked: Buffer }>(Op.EXPORT_MASKED, { keyId }, opts)).masked;
  }
  /** Installs a masked key from another HSM of the cluster. */
  importMasked(masked: Buffer, opts?: RequestOptions): Promise<KeyInfo> {
    return this.json(Op.IMPORT_MASKED, { masked }, opts);
  }
  /** The masked user table (CO or AU). */
  async exportUsers(opts?: RequestOptions): Promise<Buffer> {
    return (await this.json<{ masked: Buffer }>(Op.EXPORT_USERS, undefined, opts)).masked;
  }
  /** Replaces the user table with a masked one (CO or AU). */
  async importUsers(masked: Buffer, opts?: RequestOptions): Promise<void> {
    await this.json(Op.IMPORT_USERS, { masked }, opts);
  }
  /** Everything durable, masked under the cluster key (CO or AU). */
  async snapshot(opts?: RequestOptions): Promise<Buffer> {
    return (await this.json<{ snapshot: Buffer }>(Op.SNAPSHOT, undefined, opts)).snapshot;
  }
  /** Ids of every token key (CO or AU), for resync. */
  listTokenKeyIds(opts?: RequestOptions): Promise<string[]> {
    return this.json(Op.LIST_TOKEN_KEY_IDS, undefined, opts);
  }

  // ---- leases and certificate objects: this HSM's own decision (client/leases.ts asks a majority) ----

  /** Takes the lease `name` on this HSM if free or expired. */
  leaseAcquire(name: string, holder: string, ttlMs: number, opts?: RequestOptions): Promise<LeaseGrant> {
    return this.json(Op.LEASE_ACQUIRE, { name, holder, ttlMs }, opts);
  }
  /** Extends `holder`'s lease under `token`; replaces its challenges when given. */
  leaseRenew(
    name: string, holder: string, token: number, ttlMs: number, challenges?: LeaseChallenge[], opts?: RequestOptions,
  ): Promise<LeaseGrant> {
    return this.json(Op.LEASE_RENEW, { name, holder, token, ttlMs, ...(challenges ? { challenges } : {}) }, opts);
  }
  /** Ends `holder`'s lease on this HSM. */
  async leaseRelease(name: string, holder: string, token: number, opts?: RequestOptions): Promise<boolean> {
    return (await this.json<{ released: boolean }>(Op.LEASE_RELEASE, { name, holder, token }, opts)).released;
  }
  /** Live leases on this HSM with their challenges. */
  leaseList(opts?: RequestOptions): Promise<LeaseInfo[]> {
    return this.json(Op.LEASE_LIST, undefined, opts);
  }
  /** Stores a certificate object under a fencing token. */
  storeCertificate(req: StoreCertificateRequest, opts?: RequestOptions): Promise<CertificateInfo> {
    return this.json(Op.STORE_CERTIFICATE, req, opts);
  }
  /** One certificate object. */
  getCertificate(label: string, opts?: RequestOptions): Promise<CertificateInfo> {
    return this.json(Op.GET_CERTIFICATE, { label }, opts);
  }
  /** Deletes a certificate object under a fencing token (a tombstone stays). */
  deleteCertificate(label: string, token: number, opts?: RequestOptions): Promise<CertificateInfo> {
    return this.json(Op.DELETE_CERTIFICATE, { label, token }, opts);
  }
  /** Labels of the certificate objects this user may see. */
  listCertificates(opts?: RequestOptions): Promise<string[]> {
    return this.json(Op.LIST_CERTIFICATES, undefined, opts);
  }

  // ---- plumbing ----

  private async json<T>(op: number, body: unknown, opts?: RequestOptions, mechanism = ''): Promise<T> {
    const r = await this.timed(op, TEXT_BODY, jsonText(body), true, mechanism, opts);
    return readJson(r.body) as T;
  }

  private async timed<T>(
    op: number, codec: BodyCodec<T>, value: T, json: boolean, mechanism: string, opts?: RequestOptions,
  ): Promise<Reply> {
    const name = opName(op) ?? String(op);
    if (!requestChannel.hasSubscribers) return this.ch.request(op, codec, value, json, name, opts);
    const t0 = performance.now();
    try {
      const r = await this.ch.request(op, codec, value, json, name, opts);
      this.publish(name, mechanism, t0, 'ok', r.queueWaitUs, r.serviceUs);
      return r;
    } catch (err) {
      const e = err as { code?: unknown; queueWaitUs?: number; serviceUs?: number };
      this.publish(name, mechanism, t0, typeof e.code === 'string' ? e.code : 'HSM_ERR_INTERNAL', e.queueWaitUs ?? 0, e.serviceUs ?? 0);
      throw err;
    }
  }

  private publish(
    op: string, mechanism: string, t0: number, outcome: string, queueWaitUs: number, serviceUs: number,
  ): void {
    const ev: HsmRequestEvent = {
      op, mechanism, hsm: this.hsmId, rttMs: performance.now() - t0,
      queueWaitMs: queueWaitUs / 1000, serviceMs: serviceUs / 1000, outcome,
    };
    requestChannel.publish(ev);
  }
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}

// Connection-level failures, in words the operator can act on.
function classifySocketError(hsmId: string, address: string, err: NodeJS.ErrnoException): HsmClientError {
  const code = err.code ?? '';
  if (code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'ETIMEDOUT' || code === 'ENOTFOUND') {
    return new HsmUnreachableError(hsmId, address, code);
  }
  if (code.startsWith('ERR_SSL') || code.startsWith('ERR_TLS') || /alert|certificate|SSL/i.test(err.message) || code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' || code === 'DEPTH_ZERO_SELF_SIGNED_CERT' || code === 'SELF_SIGNED_CERT_IN_CHAIN') {
    return new HsmTlsError(hsmId, address, err.message.replace(/^error:[0-9A-F]+:SSL routines::/, ''));
  }
  return new HsmConnectionClosedError(hsmId, err.message || code || 'socket error');
}
