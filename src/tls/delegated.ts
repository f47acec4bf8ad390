// Delegated credentials for TLS (RFC 9345): the wire structures, the content the certificate's
// key signs, the credential key pair made in memory, and the check that a handshake may use one.
// tls/ stays HSM-agnostic: the certificate's key signs through the ordinary Signer contract.
import { X509Certificate, generateKeyPairSync, sign as nodeSign, type KeyObject } from 'node:crypto';
import { fatal } from './alert.js';
import { Reader, Writer } from './codec.js';
import { nodeKeyOptions, schemeSpec, SignatureScheme, verifyScheme } from './schemes.js';
import type { Signer } from './signer.js';
import { KeyUsageBit, keyUsageBits, readCertFields } from './x509-der.js';

/** The extension code point (RFC 9345 §4.1, IANA "TLS ExtensionType Values"). */
export const DELEGATED_CREDENTIAL_EXT = 34;
/** DelegationUsage certificate extension, id-pe-delegationUsage (RFC 9345 §4.2). */
export const DELEGATION_USAGE_OID = '1.3.6.1.4.1.44363.44';
/** RFC 9345 §4.1.3: a credential's remaining validity may not exceed 7 days. */
export const MAX_DC_VALIDITY_MS = 7 * 86_400_000;

/**
 * Whether a certificate may delegate (RFC 9345 §4.2): it carries DelegationUsage and, when it has
 * keyUsage, digitalSignature is set. A certificate that does not parse cannot.
 */
export function canDelegate(leafDer: Buffer): boolean {
  try {
    const { extensions } = readCertFields(leafDer);
    if (!extensions.has(DELEGATION_USAGE_OID)) return false;
    const ku = keyUsageBits(extensions.get('2.5.29.15'));
    return ku === undefined || ku.has(KeyUsageBit.digitalSignature);
  } catch {
    return false;
  }
}

/** The key types a credential may have, as `delegatedCredentials.keyType` names them. */
export type CredentialKeyType = 'ec:p256' | 'ec:p384' | 'ed25519';

const SCHEME_FOR: Record<CredentialKeyType, number> = {
  'ec:p256': SignatureScheme.ecdsa_secp256r1_sha256,
  'ec:p384': SignatureScheme.ecdsa_secp384r1_sha384,
  ed25519: SignatureScheme.ed25519,
};

const DC_PREFIX = Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS, server delegated credentials\0', 'latin1')]);

/** The parts of an encoded Credential (RFC 9345 §4). */
export interface CredentialParams { validTime: number; spki: Buffer; dcCertVerifyAlgorithm: number }

/** Credential: u32 valid_time, u16 dc_cert_verify_algorithm, opaque ASN1_subjectPublicKeyInfo<1..2^24-1>. */
export function encodeCredential(c: CredentialParams): Buffer {
  const w = new Writer(c.spki.length + 16);
  w.u32(c.validTime).u16(c.dcCertVerifyAlgorithm).vec24(c.spki);
  return w.finish();
}

/** What the certificate's key signs (RFC 9345 §4): prefix ‖ 0x00 ‖ certificate DER ‖ Credential ‖ algorithm. */
export function delegatedCredentialSignedContent(leafDer: Buffer, credential: Buffer, algorithm: number): Buffer {
  const alg = Buffer.alloc(2);
  alg.writeUInt16BE(algorithm);
  return Buffer.concat([DC_PREFIX, leafDer, credential, alg]);
}

/** DelegatedCredential: Credential, u16 algorithm, opaque signature<1..2^16-1>. */
export function encodeDelegatedCredential(credential: Buffer, algorithm: number, signature: Buffer): Buffer {
  const w = new Writer(credential.length + signature.length + 8);
  w.bytes(credential).u16(algorithm).vec16(signature);
  return w.finish();
}

/** A decoded DelegatedCredential (tests and checks read our own output back). */
export interface DecodedDelegatedCredential extends CredentialParams {
  algorithm: number;
  signature: Buffer;
  credential: Buffer;
}

export function decodeDelegatedCredential(wire: Buffer): DecodedDelegatedCredential {
  const r = new Reader(wire);
  const validTime = r.u32('valid_time');
  const dcCertVerifyAlgorithm = r.u16('dc_cert_verify_algorithm');
  const spki = r.vec24('ASN1_subjectPublicKeyInfo');
  const credential = wire.subarray(0, r.offset);
  const algorithm = r.u16('algorithm');
  const signature = r.vec16('signature');
  r.expectEnd('DelegatedCredential');
  return { validTime, spki, dcCertVerifyAlgorithm, credential, algorithm, signature };
}

/**
 * The ClientHello's delegated_credential body: SignatureSchemeList, a u16-prefixed non-empty
 * list of u16 (RFC 9345 §4.1.1). A bad length or an empty list is decode_error.
 */
export function readDelegatedCredentialExtension(r: Reader): number[] {
  const list = r.sub(2, 'delegated_credential');
  if (list.remaining === 0 || list.remaining % 2 !== 0) throw fatal('decode_error', 'delegated_credential must be a non-empty list of signature schemes');
  const out: number[] = [];
  while (list.remaining > 0) out.push(list.u16('delegated_credential scheme'));
  return out;
}

/** A credential ready to serve: what goes on the wire and the in-memory key that signs CertificateVerify. */
export interface DelegatedCredential {
  /** The encoded DelegatedCredential for the end-entity CertificateEntry's extensions. */
  readonly wire: Buffer;
  /** dc_cert_verify_algorithm: the scheme of CertificateVerify made with the credential key. */
  readonly scheme: number;
  /** The scheme the certificate's key signed the credential with. */
  readonly algorithm: number;
  /** The DER of the certificate the credential is bound to. */
  readonly leafDer: Buffer;
  /** Unix ms when the credential expires (notBefore + valid_time). */
  readonly expiresAtMs: number;
  readonly publicKey: KeyObject;
  /** Signs CertificateVerify content with the credential key, in process (no HSM). */
  signLocally(content: Buffer): Buffer;
}

/** Where a certificate's current credential comes from; undefined = serve the certificate's own signature. */
export interface DelegatedCredentialSource {
  current(nowMs: number): DelegatedCredential | undefined;
}

function generateCredentialKey(keyType: CredentialKeyType): { publicKey: KeyObject; privateKey: KeyObject } {
  if (keyType === 'ed25519') return generateKeyPairSync('ed25519');
  return generateKeyPairSync('ec', { namedCurve: keyType === 'ec:p256' ? 'P-256' : 'P-384' });
}

/** Options for one credential. */
export interface MakeCredentialOptions {
  /** The certificate chain (leaf first) and the signer of the leaf's key (the HSM). */
  chain: readonly Buffer[];
  signer: Signer;
  keyType: CredentialKeyType;
  /** Requested lifetime; cut to 7 days and to the certificate's notAfter. */
  validityMs: number;
  nowMs: number;
  signal?: AbortSignal;
}

/** The scheme the certificate's key signs a credential with (TLS 1.3 schemes only). */
export function credentialSigningScheme(signer: Signer): number {
  if (signer.keyType === 'ec') {
    if (signer.curve === 'P-384') return SignatureScheme.ecdsa_secp384r1_sha384;
    return SignatureScheme.ecdsa_secp256r1_sha256;
  }
  return SignatureScheme.rsa_pss_rsae_sha256;
}

/**
 * Makes a credential: a fresh key pair in memory, the Credential, and one signature by the
 * certificate's key through `signer` (RFC 9345 §4). The signature is verified under the
 * certificate's public key before the credential is returned, so a faulty signer never
 * yields a credential a client would reject.
 */
export async function makeDelegatedCredential(o: MakeCredentialOptions): Promise<DelegatedCredential> {
  const leafDer = o.chain[0];
  if (!leafDer) throw new TypeError('the chain is empty: the certificate is required');
  const leaf = new X509Certificate(leafDer);
  const notBefore = Date.parse(leaf.validFrom);
  const notAfter = Date.parse(leaf.validTo);
  const expiresAtMs = Math.min(o.nowMs + Math.min(o.validityMs, MAX_DC_VALIDITY_MS), notAfter);
  if (expiresAtMs <= o.nowMs) throw new RangeError('the certificate has expired: no credential can be made for it');
  // valid_time counts whole seconds from notBefore; round down so the credential never outlives the cap.
  const validTime = Math.floor((expiresAtMs - notBefore) / 1000);
  if (validTime <= 0 || validTime > 0xffffffff) throw new RangeError('the credential validity does not fit valid_time');
  const keys = generateCredentialKey(o.keyType);
  const scheme = SCHEME_FOR[o.keyType];
  const algorithm = credentialSigningScheme(o.signer);
  const spki = keys.publicKey.export({ type: 'spki', format: 'der' });
  const credential = encodeCredential({ validTime, spki, dcCertVerifyAlgorithm: scheme });
  const content = delegatedCredentialSignedContent(leafDer, credential, algorithm);
  const signature = await o.signer.sign(algorithm, content, o.signal);
  if (!verifyScheme(leaf.publicKey, algorithm, content, signature)) {
    throw new Error('the certificate key returned a credential signature that does not verify under the certificate');
  }
  return credentialFrom(leafDer, credential, algorithm, signature, scheme, notBefore + validTime * 1000, keys);
}

/** Wraps the parts of a credential; tests use it to serve forged ones. */
export function credentialFrom(
  leafDer: Buffer, credential: Buffer, algorithm: number, signature: Buffer, scheme: number, expiresAtMs: number,
  keys: { publicKey: KeyObject; privateKey: KeyObject },
): DelegatedCredential {
  const spec = schemeSpec(scheme);
  if (!spec) throw new TypeError(`unknown credential scheme 0x${scheme.toString(16)}`);
  const { privateKey } = keys;
  const signLocally = spec.kind === 'eddsa'
    ? (content: Buffer) => nodeSign(null, content, privateKey)
    : (content: Buffer) => nodeSign(spec.hash, content, nodeKeyOptions(privateKey, spec));
  return {
    wire: encodeDelegatedCredential(credential, algorithm, signature), scheme, algorithm, leafDer,
    expiresAtMs, publicKey: keys.publicKey, signLocally,
  };
}

/**
 * The credential a TLS 1.3 handshake may use, or undefined for the certificate's own signature:
 * the client offered delegated_credential listing the credential's scheme, its
 * signature_algorithms list the scheme the certificate key signed the credential with
 * (RFC 9345 §4.1.1), the credential is bound to this certificate and has not expired.
 */
export function usableCredential(
  source: DelegatedCredentialSource | undefined, leafDer: Buffer, offered: readonly number[] | undefined,
  sigAlgs: readonly number[], nowMs: number,
): DelegatedCredential | undefined {
  if (!source || !offered) return undefined;
  const dc = source.current(nowMs);
  if (!dc || dc.expiresAtMs <= nowMs || !dc.leafDer.equals(leafDer)) return undefined;
  if (!offered.includes(dc.scheme) || !sigAlgs.includes(dc.algorithm)) return undefined;
  return dc;
}
