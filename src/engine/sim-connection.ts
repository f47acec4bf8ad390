// Adapts the HSM client (HsmConnection for one HSM, ClusterClient for the cluster; both have this
// method surface) to the SimClient interface the sim backend codes to. Structural types only, so
// engine/ depends on the client's shape, not on its modules.
import type { KeyAlgorithm, Mechanism } from './algorithm.js';
import type { SimClient, SimKeyEntry } from './sim.js';

/** The attributes of an HSM key object the adapter reads. */
interface HsmKeyObject {
  keyId: string;
  label: string;
  class: string;
}

/** The subset of HsmConnection / ClusterClient the sim backend uses. */
export interface HsmKeyApi {
  login(user: string, password: string, opts?: { signal?: AbortSignal }): Promise<unknown>;
  getKey(keyId: string): Promise<HsmKeyObject>;
  findKeys(filter: { label?: string; class?: 'private' }): Promise<HsmKeyObject[]>;
  exportPublicKey(keyId: string): Promise<{ der: Buffer }>;
  sign(req: { keyId: string; mechanism: Mechanism; data: Buffer; format?: 'der' | 'raw' }, opts?: { signal?: AbortSignal }): Promise<Buffer>;
  generateKeyPair(spec: 'rsa:2048' | 'rsa:3072' | 'rsa:4096' | 'ec:p256' | 'ec:p384', template: { label: string; token?: boolean }): Promise<{ privateKey: HsmKeyObject }>;
  importKey(req: { key: Buffer; template: { label: string } }): Promise<{ privateKey: HsmKeyObject }>;
  deleteKey(keyId: string): Promise<unknown>;
  close(): Promise<unknown>;
}

function specOf(alg: KeyAlgorithm): 'rsa:2048' | 'rsa:3072' | 'rsa:4096' | 'ec:p256' | 'ec:p384' {
  if (alg.type === 'ec') return alg.curve === 'P-256' ? 'ec:p256' : 'ec:p384';
  if (alg.bits === 2048 || alg.bits === 3072 || alg.bits === 4096) return `rsa:${alg.bits}`;
  throw new RangeError(`the simulated HSM makes RSA keys of 2048, 3072 or 4096 bits, not ${alg.bits}`);
}

function isMissing(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' && /NO_SUCH_KEY|NOT_FOUND/.test(code);
}

/** A SimClient over an HSM client; `ownsConnection` closes it with the backend. */
export function simClientFrom(api: HsmKeyApi): SimClient {
  const entry = (k: HsmKeyObject): SimKeyEntry => ({ id: k.keyId, label: k.label });
  return {
    login: (user, password) => api.login(user, password),
    async findKeys(filter) {
      if (filter.id !== undefined) {
        try {
          const k = await api.getKey(filter.id);
          return k.class === 'private' && (filter.label === undefined || k.label === filter.label) ? [entry(k)] : [];
        } catch (err) {
          if (isMissing(err)) return [];
          throw err;
        }
      }
      const keys = await api.findKeys(filter.label !== undefined ? { class: 'private', label: filter.label } : { class: 'private' });
      return keys.map(entry);
    },
    exportPublicKey: async (keyId) => (await api.exportPublicKey(keyId)).der,
    // Not async: the client's promise is handed on as it is (no extra promise per signature).
    sign: (keyId, mechanism, data, opts) => api.sign({ keyId, mechanism, data, format: 'der' }, opts?.signal ? { signal: opts.signal } : undefined),
    async generateKeyPair(spec) {
      const pair = await api.generateKeyPair(specOf(spec.algorithm), { label: spec.label, token: !spec.session });
      return { id: pair.privateKey.keyId };
    },
    async importKey(spec) {
      const pair = await api.importKey({ key: spec.pkcs8, template: { label: spec.label } });
      return { id: pair.privateKey.keyId };
    },
    deleteKey: (keyId) => api.deleteKey(keyId),
    close: () => api.close(),
  };
}
