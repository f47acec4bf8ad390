// FakeHsm: an in-process test double of the HSM client interface the sim backend codes to
// (SimClient). Keys are real node:crypto keys held here — never in the key reference — and can
// be persisted to a directory so a CLI child process sees the same "HSM" as the test.
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign as nodeSign, type KeyObject } from 'node:crypto';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { CURVES, mechanismHash, nodeKeyOptions, type KeyAlgorithm, type Mechanism, type SimClient, type SimKeyEntry } from '../../src/engine/index.js';

/** An error shaped like the HSM client's: a stable code and a human message. */
export class FakeHsmError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

interface StoredKey { id: string; label: string; owner: string; pkcs8: string }

/** A fake HSM with users, keys and injectable faults. */
export class FakeHsm implements SimClient {
  readonly users = new Map<string, string>([['cu1', 'secret1']]);
  private readonly keys = new Map<string, StoredKey & { privateKey: KeyObject }>();
  private user?: string;
  /** Fault injection: corrupt the next N signatures (flip a byte), or delay each sign. */
  corruptNext = 0;
  signDelayMs = 0;
  ecdsaRaw = false;
  signCalls = 0;

  constructor(private readonly dir?: string) {
    if (dir && existsSync(join(dir, 'fake-hsm.json'))) {
      for (const k of JSON.parse(readFileSync(join(dir, 'fake-hsm.json'), 'utf8')) as StoredKey[]) {
        this.keys.set(k.id, { ...k, privateKey: createPrivateKey(k.pkcs8) });
      }
    }
  }

  private save(): void {
    if (!this.dir) return;
    const data: StoredKey[] = [...this.keys.values()].map(({ id, label, owner, pkcs8 }) => ({ id, label, owner, pkcs8 }));
    writeFileSync(join(this.dir, 'fake-hsm.json'), JSON.stringify(data), { mode: 0o600 });
  }

  async login(user: string, password: string): Promise<void> {
    if (this.users.get(user) !== password) throw new FakeHsmError('HSM_ERR_LOGIN_FAILED', `login failed for user ${user}`);
    this.user = user;
  }

  private need(): string {
    if (!this.user) throw new FakeHsmError('HSM_ERR_NOT_LOGGED_IN', 'not logged in');
    return this.user;
  }

  private key(id: string): StoredKey & { privateKey: KeyObject } {
    const k = this.keys.get(id);
    if (!k || k.owner !== this.need()) throw new FakeHsmError('HSM_ERR_KEY_NOT_FOUND', `no key ${id}`);
    return k;
  }

  async findKeys(filter: { id?: string; label?: string }): Promise<SimKeyEntry[]> {
    const user = this.need();
    return [...this.keys.values()]
      .filter((k) => k.owner === user && (filter.id === undefined || k.id === filter.id) && (filter.label === undefined || k.label === filter.label))
      .map((k) => ({ id: k.id, label: k.label }));
  }

  async exportPublicKey(keyId: string): Promise<Buffer> {
    return createPublicKey(this.key(keyId).privateKey).export({ type: 'spki', format: 'der' });
  }

  async sign(keyId: string, mechanism: Mechanism, data: Buffer, opts: { signal?: AbortSignal } = {}): Promise<Buffer> {
    const k = this.key(keyId);
    this.signCalls++;
    if (this.signDelayMs) {
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(resolve, this.signDelayMs);
        opts.signal?.addEventListener('abort', () => { clearTimeout(t); reject(new FakeHsmError('HSM_ERR_ABORTED', 'aborted')); }, { once: true });
      });
    }
    const sig = nodeSign(mechanismHash(mechanism), data, nodeKeyOptions(k.privateKey, mechanism, this.ecdsaRaw ? 'ieee-p1363' : 'der'));
    if (this.corruptNext > 0) {
      this.corruptNext--;
      sig[sig.length - 1]! ^= 0x01;
    }
    return sig;
  }

  async generateKeyPair(spec: { algorithm: KeyAlgorithm; label: string }): Promise<{ id: string }> {
    const pair = spec.algorithm.type === 'rsa'
      ? generateKeyPairSync('rsa', { modulusLength: spec.algorithm.bits })
      : generateKeyPairSync('ec', { namedCurve: CURVES[spec.algorithm.curve].nodeName });
    return this.store(pair.privateKey, spec.label);
  }

  async importKey(spec: { pkcs8: Buffer; label: string }): Promise<{ id: string }> {
    return this.store(createPrivateKey({ key: spec.pkcs8, format: 'der', type: 'pkcs8' }), spec.label);
  }

  private store(privateKey: KeyObject, label: string): { id: string } {
    const owner = this.need();
    const id = randomBytes(8).toString('hex');
    this.keys.set(id, { id, label, owner, privateKey, pkcs8: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string });
    this.save();
    return { id };
  }

  async deleteKey(keyId: string): Promise<void> {
    this.key(keyId);
    this.keys.delete(keyId);
    this.save();
  }

  async close(): Promise<void> {
    this.user = undefined;
  }
}
