// The object store: key objects as attribute bags plus their material, indexed by the
// cluster-wide key id, with per-HSM handles and the per-HSM object limit. No access rules
// here (policy.ts) and no disk (persist.ts).
import { createPrivateKey, createPublicKey, createSecretKey, type KeyObject } from 'node:crypto';
import { InvalidArgumentError, KeyLimitError } from './errors.js';
import type { KeyInfo } from './types.js';

/** Everything about a key except its handle and material. */
export type KeyAttributes = Omit<KeyInfo, 'handle'>;

/** Key material in a serialisable form: PKCS#8 / SPKI DER, or raw secret bytes. */
export interface KeyMaterial {
  format: 'pkcs8' | 'spki' | 'raw';
  bytes: Buffer;
}

/** A key object held by the HSM. `session` is the login session owning a session key. */
export interface StoredKey {
  handle: number;
  attrs: KeyAttributes;
  material: KeyMaterial;
  /** node:crypto form of the material, built once. */
  keyObject: KeyObject;
  session?: string;
  /** Raised by one on every change of a token key (versions.ts); 0 for keys stored before versions existed. */
  version: number;
}

/** A key as serialised for disk or masking (material base64). */
export interface KeyRecord {
  attrs: KeyAttributes;
  handle: number;
  material: { format: KeyMaterial['format']; b64: string };
  /** Absent in records written before versions existed (version 0). Inside the masking, so it cannot be edited. */
  version?: number;
}

/** node:crypto KeyObject for some material. */
export function keyObjectOf(m: KeyMaterial): KeyObject {
  switch (m.format) {
    case 'pkcs8':
      return createPrivateKey({ key: m.bytes, format: 'der', type: 'pkcs8' });
    case 'spki':
      return createPublicKey({ key: m.bytes, format: 'der', type: 'spki' });
    case 'raw':
      return createSecretKey(m.bytes);
  }
}

/** Serialises a key for disk or masking. */
export function toRecord(k: StoredKey): KeyRecord {
  return { attrs: k.attrs, handle: k.handle, material: { format: k.material.format, b64: k.material.bytes.toString('base64') }, version: k.version };
}

/** Rebuilds a key from its record (handle may be replaced by the caller). */
export function fromRecord(r: KeyRecord): StoredKey {
  if (!r || typeof r !== 'object' || !r.attrs || !r.material || typeof r.attrs.keyId !== 'string') {
    throw new InvalidArgumentError('malformed key record');
  }
  const version = r.version ?? 0;
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 0) throw new InvalidArgumentError(`key record ${r.attrs.keyId} has a malformed version`);
  const material: KeyMaterial = { format: r.material.format, bytes: Buffer.from(r.material.b64, 'base64') };
  // Parsed on first use: parsing thousands of keys at open would take seconds (~1 ms each).
  let parsed: KeyObject | undefined;
  return {
    handle: r.handle,
    attrs: { ...r.attrs, sharedWith: [...r.attrs.sharedWith] },
    material,
    version,
    get keyObject(): KeyObject {
      parsed ??= keyObjectOf(material);
      return parsed;
    },
  };
}

/** Public view of a stored key. */
export function infoOf(k: StoredKey): KeyInfo {
  return { handle: k.handle, ...k.attrs, sharedWith: [...k.attrs.sharedWith] };
}

/** Key objects of one HSM, bounded by `maxKeys` (token + session). */
export class ObjectStore {
  private readonly keys = new Map<string, StoredKey>();
  private nextHandle = 1;

  constructor(readonly maxKeys: number) {}

  /** A fresh per-HSM handle. */
  allocateHandle(): number {
    return this.nextHandle++;
  }

  /** Throws KeyLimitError unless `n` more objects fit. */
  ensureRoom(n: number): void {
    if (this.keys.size + n > this.maxKeys) throw new KeyLimitError(this.maxKeys);
  }

  /** Adds (or replaces, same key id) an object. Replacing does not count against the limit. */
  put(k: StoredKey): void {
    if (!this.keys.has(k.attrs.keyId)) this.ensureRoom(1);
    if (k.handle >= this.nextHandle) this.nextHandle = k.handle + 1;
    this.keys.set(k.attrs.keyId, k);
  }

  get(keyId: string): StoredKey | undefined {
    return this.keys.get(keyId);
  }

  delete(keyId: string): boolean {
    return this.keys.delete(keyId);
  }

  all(): StoredKey[] {
    return [...this.keys.values()];
  }

  /** Objects by kind, against the limit. */
  occupancy(): { token: number; session: number; max: number } {
    let token = 0;
    for (const k of this.keys.values()) if (k.attrs.token) token++;
    return { token, session: this.keys.size - token, max: this.maxKeys };
  }
}
