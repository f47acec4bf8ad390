// Key management and crypto entry points for an authenticated session: look the key up,
// ask policy.ts, run the mechanism through the capacity model, persist token objects before
// resolving, audit. The session was already validated by hsm.ts.
import { createHash, createPublicKey, randomBytes } from 'node:crypto';
import type { DeviceContext } from './context.js';
import { InvalidArgumentError, NoSuchKeyError } from './errors.js';
import { pairSpec, generatePairMaterial, generateSecretMaterial, importPairMaterial, importPublicMaterial, secretFromBytes, type PairMaterial, type SecretMaterial } from './keygen.js';
import { decryptWith, encryptWith, hmacWith, opKey, signPlan, unwrapWith, verifyWith, wrapWith } from './mechanisms.js';
import { infoOf, keyObjectOf, toRecord, type KeyAttributes, type StoredKey } from './objects.js';
import { withQuorum } from './quorum.js';
import { checkAttributeChanges, defaultsFor, requireExport, requireOwner, requireRole, requireShareTarget, requireUse, requireVisible } from './policy.js';
import type {
  CryptoResult, DecryptRequest, EncryptRequest, ImportPrivateKeyRequest, KeyAttributeChanges, KeyFilter, KeyInfo,
  ImportPublicKeyRequest,
  KeyPairInfo, KeyPairSpec, KeyTemplate, SecretKeySpec, Session, SignRequest, UnwrapRequest, VerifyRequest, WrapRequest,
} from './types.js';

const HEX = /^(?:[0-9a-fA-F]{2})*$/;

function checkTemplate(t: KeyTemplate | undefined): KeyTemplate {
  if (!t || typeof t.label !== 'string' || t.label.length === 0 || t.label.length > 127) {
    throw new InvalidArgumentError('a key needs a label of 1 to 127 characters');
  }
  if (t.id !== undefined && (typeof t.id !== 'string' || !HEX.test(t.id))) throw new InvalidArgumentError('a key id (CKA_ID) must be hex bytes');
  return t;
}

function newKeyId(): string {
  return randomBytes(16).toString('hex');
}

/** Key and crypto operations of one HSM. */
export class KeyOps {
  constructor(private readonly ctx: DeviceContext) {}

  /** A key the session may see (session keys only in their own session). */
  visible(s: Session, keyId: string): StoredKey {
    if (typeof keyId !== 'string') throw new InvalidArgumentError('a key id is required');
    const k = this.ctx.objects.get(keyId);
    requireVisible(s, k?.attrs, keyId);
    if (!k || (k.session !== undefined && k.session !== s.id)) throw new NoSuchKeyError(keyId);
    return k;
  }

  private attrsFor(s: Session, t: KeyTemplate, cls: KeyAttributes['class'], m: { type: KeyAttributes['type']; size: number; curve?: KeyAttributes['curve'] }): KeyAttributes {
    const d = defaultsFor(cls);
    const rsa = m.type === 'rsa';
    const aes = m.type === 'aes';
    const hmac = m.type === 'generic-secret';
    const pick = (v: boolean | undefined, allowed: boolean): boolean => allowed && (v ?? true);
    return {
      keyId: newKeyId(),
      label: t.label,
      id: (t.id ?? '').toLowerCase(),
      class: cls,
      type: m.type,
      size: m.size,
      ...(m.curve ? { curve: m.curve } : {}),
      token: t.token ?? true,
      extractable: cls === 'public' ? true : (t.extractable ?? d.extractable),
      sensitive: cls === 'public' ? false : (t.sensitive ?? d.sensitive),
      trusted: false,
      sign: pick(t.sign, cls === 'private' || hmac),
      verify: pick(t.verify, cls === 'public' || hmac),
      encrypt: pick(t.encrypt, (cls === 'public' && rsa) || aes),
      decrypt: pick(t.decrypt, (cls === 'private' && rsa) || aes),
      wrap: pick(t.wrap, (cls === 'public' && rsa) || aes),
      unwrap: pick(t.unwrap, (cls === 'private' && rsa) || aes),
      owner: s.user,
      sharedWith: [],
    };
  }

  // Adds objects, persisting token ones before returning (undone if the disk write fails).
  private async install(s: Session, keys: StoredKey[], event: string): Promise<void> {
    this.ctx.objects.ensureRoom(keys.length);
    for (const k of keys) this.ctx.objects.put(k);
    try {
      await Promise.all(keys.filter((k) => k.attrs.token).map((k) => this.ctx.store.writeKey(toRecord(k))));
    } catch (e) {
      for (const k of keys) this.ctx.objects.delete(k.attrs.keyId);
      throw e;
    }
    for (const k of keys) {
      this.ctx.audit({
        event, user: s.user, ok: true, keyId: k.attrs.keyId, label: k.attrs.label, class: k.attrs.class,
        type: k.attrs.type, token: k.attrs.token,
      });
    }
  }

  private pairObjects(s: Session, t: KeyTemplate, m: PairMaterial): [StoredKey, StoredKey] {
    const privA = this.attrsFor(s, t, 'private', m);
    const pubA = this.attrsFor(s, t, 'public', m);
    privA.pairKeyId = pubA.keyId;
    pubA.pairKeyId = privA.keyId;
    const session = privA.token ? undefined : s.id;
    const mk = (attrs: KeyAttributes, material: PairMaterial['priv']): StoredKey => ({
      handle: this.ctx.objects.allocateHandle(), attrs, material, keyObject: keyObjectOf(material), version: 1,
      ...(session ? { session } : {}),
    });
    return [mk(privA, m.priv), mk(pubA, m.pub)];
  }

  /** Generates a key pair owned by the CU. */
  async generateKeyPair(s: Session, spec: KeyPairSpec, template: KeyTemplate): Promise<CryptoResult<KeyPairInfo>> {
    requireRole(s, ['CU'], 'generate a key');
    const t = checkTemplate(template);
    pairSpec(spec);
    this.ctx.objects.ensureRoom(2);
    const r = await this.ctx.capacity.run(`generate:${String(spec).replace(':', '-')}`, () => generatePairMaterial(spec));
    const [priv, pub] = this.pairObjects(s, t, r.result);
    await this.install(s, [priv, pub], 'key.create');
    return { ...r, result: { privateKey: infoOf(priv), publicKey: infoOf(pub) } };
  }

  /** Generates an AES or generic secret key owned by the CU. */
  async generateKey(s: Session, spec: SecretKeySpec, template: KeyTemplate): Promise<CryptoResult<KeyInfo>> {
    requireRole(s, ['CU'], 'generate a key');
    const t = checkTemplate(template);
    this.ctx.objects.ensureRoom(1);
    const r = await this.ctx.capacity.run(`generate:${String(spec).replace(':', '-')}`, () => generateSecretMaterial(spec));
    const k = this.secretObject(s, t, r.result);
    await this.install(s, [k], 'key.create');
    return { ...r, result: infoOf(k) };
  }

  private secretObject(s: Session, t: KeyTemplate, m: SecretMaterial): StoredKey {
    const attrs = this.attrsFor(s, t, 'secret', m);
    return {
      handle: this.ctx.objects.allocateHandle(), attrs, material: m.material, keyObject: keyObjectOf(m.material),
      version: 1, ...(attrs.token ? {} : { session: s.id })
    };
  }

  /** Imports an existing private key as a key pair (migration). */
  async importPrivateKey(s: Session, req: ImportPrivateKeyRequest): Promise<CryptoResult<KeyPairInfo>> {
    requireRole(s, ['CU'], 'import a key');
    const t = checkTemplate(req?.template);
    this.ctx.objects.ensureRoom(2);
    const r = await this.ctx.capacity.run('import', () => importPairMaterial(req.key));
    const [priv, pub] = this.pairObjects(s, t, r.result);
    await this.install(s, [priv, pub], 'key.import');
    return { ...r, result: { privateKey: infoOf(priv), publicKey: infoOf(pub) } };
  }

  /** Imports a public key alone (verify, encrypt and wrap with it; e.g. another cluster's wrapping key). */
  async importPublicKey(s: Session, req: ImportPublicKeyRequest): Promise<CryptoResult<KeyInfo>> {
    requireRole(s, ['CU'], 'import a key');
    const t = checkTemplate(req?.template);
    this.ctx.objects.ensureRoom(1);
    const r = await this.ctx.capacity.run('import', () => importPublicMaterial(req.key));
    const attrs = this.attrsFor(s, t, 'public', r.result);
    const k: StoredKey = {
      handle: this.ctx.objects.allocateHandle(), attrs, material: r.result.pub, keyObject: keyObjectOf(r.result.pub),
      version: 1, ...(attrs.token ? {} : { session: s.id }),
    };
    await this.install(s, [k], 'key.import');
    return { ...r, result: infoOf(k) };
  }

  /** Keys the session may see, filtered. */
  list(s: Session, f: KeyFilter = {}): KeyInfo[] {
    requireRole(s, ['CU', 'CO', 'AU'], 'list keys');
    return this.ctx.objects
      .all()
      .filter((k) => (k.session === undefined || k.session === s.id) && (s.role !== 'CU' || k.attrs.owner === s.user || k.attrs.sharedWith.includes(s.user)))
      .filter((k) => (f.label === undefined || k.attrs.label === f.label)
        && (f.id === undefined || k.attrs.id === f.id.toLowerCase())
        && (f.class === undefined || k.attrs.class === f.class) && (f.type === undefined || k.attrs.type === f.type)
        && (f.token === undefined || k.attrs.token === f.token))
      .sort((a, b) => a.handle - b.handle)
      .map(infoOf);
  }

  private pairOf(k: StoredKey): StoredKey | undefined {
    const p = k.attrs.pairKeyId ? this.ctx.objects.get(k.attrs.pairKeyId) : undefined;
    return p && p.attrs.owner === k.attrs.owner ? p : undefined;
  }

  /** Deletes a key and the other half of its pair (owner only). */
  async delete(s: Session, keyId: string): Promise<void> {
    const k = this.visible(s, keyId);
    requireOwner(s, k.attrs, 'delete');
    const all = [k, this.pairOf(k)].filter((x): x is StoredKey => x !== undefined);
    // The tombstone is on disk before the key file goes: a crash in between leaves a key the
    // next open drops (its version is below the tombstone), never a deletion without a record.
    const tokens = all.filter((x) => x.attrs.token);
    for (const x of tokens) this.ctx.tombstones.keys.set(x.attrs.keyId, x.version + 1);
    try {
      if (tokens.length > 0) await this.ctx.saveTombstones();
    } catch (e) {
      for (const x of tokens) this.ctx.tombstones.keys.delete(x.attrs.keyId);
      throw e;
    }
    for (const x of all) {
      if (x.attrs.token) await this.ctx.store.deleteKey(x.attrs.keyId);
      this.ctx.objects.delete(x.attrs.keyId);
      this.ctx.audit({ event: 'key.delete', user: s.user, ok: true, keyId: x.attrs.keyId, ...(x.attrs.token ? { version: x.version + 1 } : {}) });
    }
  }

  // Writes changed token objects (both halves of a pair) as their next versions, and audits. On
  // a failed write the versions go back (the caller puts the attributes back).
  private async rewrite(s: Session, keys: StoredKey[], event: string, extra: Record<string, unknown>): Promise<void> {
    const tokens = keys.filter((x) => x.attrs.token);
    for (const x of tokens) x.version++;
    try {
      await Promise.all(tokens.map((x) => this.ctx.store.writeKey(toRecord(x))));
    } catch (e) {
      for (const x of tokens) x.version--;
      throw e;
    }
    for (const x of keys) {
      this.ctx.audit({
        event, user: s.user, ok: true, keyId: x.attrs.keyId, ...(x.attrs.token ? { version: x.version } : {}), ...extra
      });
    }
  }

  /** Shares a key (and its pair half) with another CU (owner only). */
  async share(s: Session, keyId: string, user: string, roleOfUser: string | undefined): Promise<KeyInfo> {
    const k = this.visible(s, keyId);
    requireShareTarget(s, k.attrs, roleOfUser as Session['role'] | undefined, user);
    return withQuorum(this.ctx, s, 'key', `share key ${keyId}`, async () => {
      const all = [k, this.pairOf(k)].filter((x): x is StoredKey => x !== undefined);
      for (const x of all) {
        if (!x.attrs.sharedWith.includes(user)) x.attrs.sharedWith = [...x.attrs.sharedWith, user].sort();
      }
      await this.rewrite(s, all, 'key.share', { with: user });
      return infoOf(k);
    });
  }

  /** Stops sharing a key (and its pair half) with a CU (owner only). */
  async unshare(s: Session, keyId: string, user: string): Promise<KeyInfo> {
    const k = this.visible(s, keyId);
    requireOwner(s, k.attrs, 'unshare');
    if (!k.attrs.sharedWith.includes(user)) throw new InvalidArgumentError(`key ${keyId} is not shared with ${user}`);
    return withQuorum(this.ctx, s, 'key', `unshare key ${keyId}`, async () => {
      const all = [k, this.pairOf(k)].filter((x): x is StoredKey => x !== undefined);
      for (const x of all) x.attrs.sharedWith = x.attrs.sharedWith.filter((u) => u !== user);
      await this.rewrite(s, all, 'key.unshare', { with: user });
      return infoOf(k);
    });
  }

  /** Changes attributes within policy's one-way rules. */
  async setAttributes(s: Session, keyId: string, changes: KeyAttributeChanges): Promise<KeyInfo> {
    const k = this.visible(s, keyId);
    if (!changes || typeof changes !== 'object') throw new InvalidArgumentError('attribute changes must be an object');
    checkAttributeChanges(s, k.attrs, changes);
    if (changes.label !== undefined) checkTemplate({ label: changes.label });
    if (changes.id !== undefined) checkTemplate({ label: 'x', id: changes.id });
    return withQuorum(this.ctx, s, 'key', `change key ${keyId}`, async () => {
      const next: KeyAttributes = {
        ...k.attrs, ...changes, ...(changes.id !== undefined ? { id: changes.id.toLowerCase() } : {})
      };
      const prev = k.attrs;
      k.attrs = next;
      try {
        await this.rewrite(s, [k], 'key.change', { changes: Object.keys(changes) });
      } catch (e) {
        k.attrs = prev;
        throw e;
      }
      return infoOf(k);
    });
  }

  /** SPKI of a key pair half (owner, sharee, CO or AU: public keys are not secret). */
  exportPublicKey(s: Session, keyId: string): { der: Buffer; pem: string } {
    const k = this.visible(s, keyId);
    if (k.attrs.class === 'secret') throw new InvalidArgumentError(`key ${keyId} is a secret key; it has no public key`);
    const pub = k.attrs.class === 'private' ? createPublicKey(k.keyObject) : k.keyObject;
    return { der: pub.export({ format: 'der', type: 'spki' }), pem: pub.export({ format: 'pem', type: 'spki' }).toString() };
  }

  /** Signs or MACs. */
  sign(s: Session, req: SignRequest): Promise<CryptoResult<Buffer>> {
    const k = this.visible(s, req?.keyId);
    requireUse(s, k.attrs, 'sign', req.mechanism);
    const data = asBuffer(req.data, 'data');
    // Checked here, computed on whichever thread of the pool is free (an HMAC right here).
    const plan = signPlan(k, req.mechanism, data, req.prehashed, req.format);
    return this.ctx.capacity.run(
      opKey('sign', k), plan ? () => this.ctx.signing.sign(k.keyObject, plan, data) : () => hmacWith(k, req.mechanism, data),
    );
  }

  /** Verifies a signature or MAC. */
  verify(s: Session, req: VerifyRequest): Promise<CryptoResult<boolean>> {
    const k = this.visible(s, req?.keyId);
    requireUse(s, k.attrs, 'verify', req.mechanism);
    const data = asBuffer(req.data, 'data');
    const sig = asBuffer(req.signature, 'signature');
    return this.ctx.capacity.run(opKey('verify', k), () => verifyWith(k, req.mechanism, data, sig, req.prehashed, req.format));
  }

  /** Encrypts. */
  encrypt(s: Session, req: EncryptRequest): Promise<CryptoResult<Buffer>> {
    const k = this.visible(s, req?.keyId);
    requireUse(s, k.attrs, 'encrypt', req.mechanism);
    const pt = asBuffer(req.plaintext, 'plaintext');
    return this.ctx.capacity.run(opKey('encrypt', k), () => encryptWith(k, req.mechanism, pt, req.aad, req.iv));
  }

  /** Decrypts. */
  decrypt(s: Session, req: DecryptRequest): Promise<CryptoResult<Buffer>> {
    const k = this.visible(s, req?.keyId);
    requireUse(s, k.attrs, 'decrypt', req.mechanism);
    const ct = asBuffer(req.ciphertext, 'ciphertext');
    return this.ctx.capacity.run(opKey('decrypt', k), () => decryptWith(k, req.mechanism, ct, req.aad));
  }

  /** Wraps an extractable key the session owns. */
  wrap(s: Session, req: WrapRequest): Promise<CryptoResult<Buffer>> {
    const wrapping = this.visible(s, req?.wrappingKeyId);
    requireUse(s, wrapping.attrs, 'wrap', req.mechanism);
    const target = this.visible(s, req.keyId);
    requireExport(s, target.attrs);
    return this.ctx.capacity.run(opKey('wrap', wrapping), () => wrapWith(wrapping, req.mechanism, target.material.bytes));
  }

  /** Unwraps into a new key owned by the session user. */
  async unwrap(s: Session, req: UnwrapRequest): Promise<CryptoResult<KeyInfo>> {
    const unwrapping = this.visible(s, req?.unwrappingKeyId);
    requireUse(s, unwrapping.attrs, 'unwrap', req.mechanism);
    const t = checkTemplate(req.template);
    const wrapped = asBuffer(req.wrapped, 'wrapped');
    this.ctx.objects.ensureRoom(req.keyClass === 'private' ? 2 : 1);
    const r = await this.ctx.capacity.run(opKey('unwrap', unwrapping), () => unwrapWith(unwrapping, req.mechanism, wrapped));
    if (req.keyClass === 'private') {
      const m = importPairMaterial(r.result);
      const [priv, pub] = this.pairObjects(s, t, m);
      await this.install(s, [priv, pub], 'key.unwrap');
      return { ...r, result: infoOf(priv) };
    }
    if (req.keyClass !== 'secret') throw new InvalidArgumentError("keyClass must be 'private' or 'secret'");
    const k = this.secretObject(s, t, secretFromBytes(r.result, req.keyType));
    await this.install(s, [k], 'key.unwrap');
    return { ...r, result: infoOf(k) };
  }

  /** Random bytes. */
  random(length: number): Promise<CryptoResult<Buffer>> {
    if (!Number.isInteger(length) || length < 1 || length > 65536) throw new InvalidArgumentError('random length must be 1 to 65536 bytes');
    return this.ctx.capacity.run('random', () => randomBytes(length));
  }

  /** A digest. */
  digest(algorithm: string, data: Buffer): Promise<CryptoResult<Buffer>> {
    if (!['sha256', 'sha384', 'sha512'].includes(algorithm)) throw new InvalidArgumentError('digest algorithm must be sha256, sha384 or sha512');
    const d = asBuffer(data, 'data');
    return this.ctx.capacity.run('digest', () => createHash(algorithm).update(d).digest());
  }
}

function asBuffer(b: unknown, name: string): Buffer {
  if (!Buffer.isBuffer(b)) throw new InvalidArgumentError(`${name} must be bytes (a Buffer)`);
  return b;
}
