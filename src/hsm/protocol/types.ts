// Data carried by the protocol: users, keys, requests, results. These mirror hsm/device's
// types on purpose (protocol imports nothing, and hsm/client must not import the device);
// node.ts passes device values straight through, so tsc checks the two stay compatible.

/** CloudHSM roles: PRECO (first login, must change password → CO), CO, CU, AU (cloning/sync). */
export type Role = 'PRECO' | 'CO' | 'CU' | 'AU';

/** A user as listed by a crypto officer. Password hashes never leave the device. */
export interface UserInfo {
  name: string;
  role: Role;
  locked: boolean;
  /** Consecutive failed logins since the last success. */
  failedLogins: number;
}

/** A login session; session keys belong to it and vanish at logout. */
export interface Session {
  readonly id: string;
  readonly user: string;
  readonly role: Role;
}

export type KeyClass = 'private' | 'public' | 'secret';
export type KeyType = 'rsa' | 'ec' | 'aes' | 'generic-secret';
export type Curve = 'P-256' | 'P-384';

/** Key specs accepted by generation: the CLI's `--type` values. */
export type KeyPairSpec = 'rsa:2048' | 'rsa:3072' | 'rsa:4096' | 'ec:p256' | 'ec:p384';
export type SecretKeySpec = 'aes:128' | 'aes:256' | 'generic-secret:128' | 'generic-secret:256' | 'generic-secret:384' | 'generic-secret:512';

/** The boolean usage attributes of a key (PKCS#11 CKA_* names without the prefix). */
export interface KeyUsage {
  sign: boolean;
  verify: boolean;
  encrypt: boolean;
  decrypt: boolean;
  wrap: boolean;
  unwrap: boolean;
}

/** A key object as the owner or a sharee sees it: every attribute, never key material. */
export interface KeyInfo extends KeyUsage {
  /** Per-HSM object number (differs between HSMs of a cluster). */
  handle: number;
  /** Cluster-wide stable id (128-bit random hex); what key references name. */
  keyId: string;
  label: string;
  /** CKA_ID bytes as hex ('' if none). */
  id: string;
  class: KeyClass;
  type: KeyType;
  /** Key size in bits (RSA modulus, EC field, secret length). */
  size: number;
  curve?: Curve;
  /** true: persists and replicates; false: a session key. */
  token: boolean;
  extractable: boolean;
  sensitive: boolean;
  trusted: boolean;
  owner: string;
  sharedWith: string[];
  /** For half of a key pair: the keyId of the other half. */
  pairKeyId?: string;
}

/** Attributes a caller may set at creation (and some later, within the one-way rules). */
export interface KeyTemplate extends Partial<KeyUsage> {
  label: string;
  /** CKA_ID as hex. */
  id?: string;
  /** Default true (a token key). */
  token?: boolean;
  /** Private/secret keys default to false. */
  extractable?: boolean;
  /** Private/secret keys default to true. */
  sensitive?: boolean;
  trusted?: boolean;
}

/** Attribute changes after creation; policy enforces one-way rules and who may change what. */
export type KeyAttributeChanges = Partial<Pick<KeyInfo, 'label' | 'id' | 'extractable' | 'sensitive' | 'trusted' | keyof KeyUsage>>;

/** A generated or imported key pair. */
export interface KeyPairInfo {
  privateKey: KeyInfo;
  publicKey: KeyInfo;
}

/** Filter for listing keys; every field given must match. */
export interface KeyFilter {
  label?: string;
  id?: string;
  class?: KeyClass;
  type?: KeyType;
  token?: boolean;
}

export type SignMechanism =
  | 'rsa-pkcs1-sha256' | 'rsa-pkcs1-sha384' | 'rsa-pkcs1-sha512'
  | 'rsa-pss-sha256' | 'rsa-pss-sha384' | 'rsa-pss-sha512'
  | 'ecdsa-sha256' | 'ecdsa-sha384' | 'ecdsa-sha512'
  | 'hmac-sha256' | 'hmac-sha384' | 'hmac-sha512';
export type CipherMechanism = 'rsa-oaep-sha256' | 'aes-gcm';
export type WrapMechanism = 'rsa-oaep-wrap' | 'aes-key-wrap-pad';
export type Mechanism = SignMechanism | CipherMechanism | WrapMechanism;

/** A signature request. HMAC mechanisms use a secret key and return the MAC. */
export interface SignRequest {
  keyId: string;
  mechanism: SignMechanism;
  /** The message, or its digest when `prehashed` (digest length must match the hash). */
  data: Buffer;
  prehashed?: boolean;
  /** ECDSA output: 'der' (default) or 'raw' r||s (as TLS 1.3 does not use, JOSE does). */
  format?: 'der' | 'raw';
}

/** A verification request (also checks HMACs, in constant time). */
export interface VerifyRequest extends SignRequest {
  signature: Buffer;
}

/** Encrypt. For 'aes-gcm' the device picks the IV; the result is iv(12) || ciphertext || tag(16). */
export interface EncryptRequest {
  keyId: string;
  mechanism: CipherMechanism;
  plaintext: Buffer;
  /** AES-GCM additional authenticated data. */
  aad?: Buffer;
  /** Refused (FIPS mode): present only so a caller passing one gets a clear error. */
  iv?: Buffer;
}

/** Decrypt; for 'aes-gcm' the input is iv || ciphertext || tag as encrypt returned it. */
export interface DecryptRequest {
  keyId: string;
  mechanism: CipherMechanism;
  ciphertext: Buffer;
  aad?: Buffer;
}

/** Wrap (export encrypted) an extractable key under a wrapping key. */
export interface WrapRequest {
  wrappingKeyId: string;
  keyId: string;
  mechanism: WrapMechanism;
}

/** Unwrap a wrapped key into a new key object owned by the session user. */
export interface UnwrapRequest {
  unwrappingKeyId: string;
  mechanism: WrapMechanism;
  wrapped: Buffer;
  /** What the wrapped bytes are: a PKCS#8 private key, or raw secret bytes. */
  keyClass: 'private' | 'secret';
  /** For secrets: 'aes' or 'generic-secret' (default 'aes' for 16/32 bytes). */
  keyType?: KeyType;
  template: KeyTemplate;
}

/** Import of an existing private key (migration path: `hsmproxy key import`). */
/** Import of a public key (SPKI PEM or DER), e.g. another cluster's RSA key to wrap keys for it. */
export interface ImportPublicKeyRequest {
  key: string | Buffer;
  template: KeyTemplate;
}

export interface ImportPrivateKeyRequest {
  /** PEM (PKCS#1, SEC1 or PKCS#8) or PKCS#8 DER. */
  key: string | Buffer;
  template: KeyTemplate;
}

/** A crypto operation's answer, with the time it queued and the time it was served. */
export interface CryptoResult<T> {
  result: T;
  /** Microseconds spent waiting for a crypto unit. */
  queueWaitUs: number;
  /** Microseconds of service on a unit (real crypto plus the profile's remainder). */
  serviceUs: number;
}

/** Key slots in use against the per-HSM limit. */
export interface Occupancy {
  token: number;
  session: number;
  max: number;
}

/** Whether two HSMs hold the same users and token keys. */
export interface StateDigest {
  /**
   * The HSM's change sequence: the sum of the versions of its users, token keys and deletions.
   * Persisted (it survives restarts), equal on HSMs that took the same changes, higher on one that
   * took a change another missed: what decides which of two disagreeing HSMs is current.
   */
  version: number;
  /** SHA-256 hex of the sorted users (name, role, hash, version) and token keys (id, attributes, material, version). */
  digest: string;
  users: number;
  tokenKeys: number;
}

/** What the HSM reports about itself (health checks, the scaling advisor). */
export interface HsmInfo {
  hsmId: string;
  profile: string;
  units: number;
  /** Busy fraction of crypto units over the recent window, 0..1. */
  utilisation: number;
  queued: number;
  inService: number;
  occupancy: Occupancy;
  users: number;
  state: StateDigest;
}

export type LeaseChallenge =
  | { type: 'tls-alpn-01'; name: string; keyAuthorization: string }
  | { type: 'http-01'; token: string; keyAuthorization: string };

/** An HSM's answer to a lease request: granted with a fencing token, or held by another holder. */
export interface LeaseGrant {
  granted: boolean;
  name: string;
  /** The holder it is granted to, or the other holder that has it. */
  holder: string;
  /** The fencing token of the grant (or of the other holder's lease). */
  token: number;
  /** Time left on this HSM's clock. */
  expiresInMs: number;
}

/** A live lease as listed, with the challenges its holder published. */
export interface LeaseInfo {
  name: string;
  holder: string;
  token: number;
  expiresInMs: number;
  challenges: LeaseChallenge[];
}

/** A certificate object: a DER chain stored under a label beside the key it certifies. */
export interface CertificateInfo {
  /** Cluster-wide name of the certificate (an ACME certificate's first DNS name). */
  label: string;
  /** The private key the leaf certifies. */
  keyId: string;
  /** DER certificates, leaf first. */
  chain: Buffer[];
  /** Free text kept with the certificate (the ACME account URL that ordered it). */
  note: string;
  /** The fencing token it was stored under. */
  token: number;
  /** Raised by one on every replacement on this HSM. */
  version: number;
  owner: string;
  storedAt: string;
  /** A tombstone: deleted under `token`, with no chain. */
  deleted?: boolean;
}

/** What storing a certificate object takes. */
export interface StoreCertificateRequest {
  label: string;
  keyId: string;
  chain: Buffer[];
  note?: string;
  /** The fencing token of the lease the certificate was ordered under. */
  token: number;
}
