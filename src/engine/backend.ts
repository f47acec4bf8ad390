// The backend interface: where keys live and signatures are made. Implemented by `sim`
// (the simulated cluster), `soft` (in-process node:crypto keys, tests and baselines only) and
// `pkcs11` (any PKCS#11 module, see pkcs11/). The engine above it adds schemes, verification,
// admission control and observability, so a backend stays a thin adapter.
import type { KeyObject } from 'node:crypto';
import type { KeyAlgorithm, Mechanism } from './algorithm.js';
import type { KeyRef } from './keyref.js';

export type BackendKind = 'sim' | 'pkcs11' | 'soft';

/** A key as listed by a backend. */
export interface KeyInfo {
  /** Cluster-wide key id (sim), hex CKA_ID (pkcs11) or file path (soft). */
  readonly keyId: string;
  readonly label: string;
  readonly algorithm: KeyAlgorithm;
  readonly publicKey: KeyObject;
}

/**
 * A resolved key: proof that the key exists on the backend and matches its reference.
 * `ref` is the reference to write for it (absent for soft keys, which have none).
 */
export interface KeyHandle extends KeyInfo {
  readonly backend: BackendKind;
  readonly ref?: KeyRef;
}

/** Per-call options: cancellation (and a deadline the backend may pass on to the HSM). */
export interface SignOptions {
  readonly signal?: AbortSignal;
}

/** What to generate: an algorithm and a label; token (persistent, replicated) unless session is set. */
export interface GenerateSpec {
  readonly algorithm: KeyAlgorithm;
  readonly label: string;
  readonly session?: boolean;
}

/** One place private keys live. Every method rejects with an EngineError (ENGINE_ERR_*). */
export interface Backend {
  readonly kind: BackendKind;
  /**
   * How ECDSA signatures come back from `sign`: DER ECDSA-Sig-Value, or raw r‖s (IEEE P1363,
   * what PKCS#11 CKM_ECDSA returns). The engine converts to what its callers need.
   */
  readonly ecdsaEncoding: 'der' | 'raw';
  /**
   * Finds the key a reference names and checks it: same cluster/token, present, same public key,
   * credentials accepted. Fails early with KeyNotFoundError / OtherClusterError / BadCredentialsError.
   */
  resolve(ref: KeyRef, opts?: SignOptions): Promise<KeyHandle>;
  /** Signs `data` (the backend or HSM hashes it) with the mechanism. */
  sign(key: KeyHandle, mechanism: Mechanism, data: Buffer, opts?: SignOptions): Promise<Buffer>;
  /**
   * Optional: signs a digest already computed by the caller (PKCS#11 CKM_ECDSA, CKM_RSA_PKCS_PSS).
   * The engine prefers `sign`; it uses this only when told to hash locally.
   */
  signDigest?(key: KeyHandle, mechanism: Mechanism, digest: Buffer, opts?: SignOptions): Promise<Buffer>;
  /** Generates a key pair inside the HSM; the private key never leaves it. */
  generateKeyPair(spec: GenerateSpec): Promise<KeyHandle>;
  /** Imports a software private key into the HSM (the migration path); returns its handle. */
  importKey(privateKey: KeyObject, label: string): Promise<KeyHandle>;
  /** Lists the private keys this login can use. */
  list(): Promise<KeyInfo[]>;
  /** Deletes a key (by handle or key id) from the HSM (every HSM of the cluster). */
  delete(key: KeyHandle | string): Promise<void>;
  /** Releases connections and sessions; further calls reject with ClosedError. */
  close(): Promise<void>;
}
