// Key references ("fake PEM"): files that standard tools read as an RSA or EC private key with the
// real public key, but whose private fields hold a marker and a pointer to a key inside an HSM.
// The exact byte layout is specified in docs/key-reference.md; keep the two in step.
import { createHash, createPrivateKey, createPublicKey, KeyObject } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { CURVES, keyAlgorithmOf, type Curve } from './algorithm.js';
import { DerError, DerReader, Tag, smallUint, tlv, uint } from '../tls/der.js';
import { MalformedKeyRefError, OutputFileError, RealPrivateKeyError, UnsupportedError } from './errors.js';

/** 8-byte marker that starts every reference blob and every fake EC scalar: ASCII "HSMPXREF". */
export const KEYREF_MAGIC = Buffer.from('HSMPXREF', 'ascii');
/** Format version; a parser refuses versions it does not know. */
export const KEYREF_VERSION = 1;
/** PEM label of the block that carries the full reference next to a fake EC key. */
export const REFERENCE_PEM_LABEL = 'HSMPROXY KEY REFERENCE';
const MAX_BLOB = 4096;

interface KeyRefCommon {
  /** Cluster-wide key id (sim) or hex CKA_ID (pkcs11): stable across HSMs, not a per-HSM handle. */
  readonly keyId: string;
  /** The key's label (informational; the key is resolved by id). */
  readonly label: string;
  /** The real public key of the HSM key. */
  readonly publicKey: KeyObject;
  /** Where the reference was read from, for error messages. */
  readonly source?: string;
}

/** A key in the simulated cluster, identified by the cluster's certificate fingerprint. */
export interface SimKeyRef extends KeyRefCommon {
  readonly backend: 'sim';
  readonly clusterId: string;
}

/** A key on a PKCS#11 token: an RFC 7512 URI naming token and object, and the module to load. */
export interface Pkcs11KeyRef extends KeyRefCommon {
  readonly backend: 'pkcs11';
  readonly uri: string;
  readonly module: string;
}

/** A key reference: names a key in an HSM without holding any secret. */
export type KeyRef = SimKeyRef | Pkcs11KeyRef;

// ---------------------------------------------------------------------------------------------
// Reference blob: MAGIC ‖ VERSION ‖ UTF-8 JSON payload (fields in a fixed order).

function payloadOf(ref: KeyRef): Record<string, string> {
  return ref.backend === 'sim'
    ? { backend: 'sim', cluster: ref.clusterId, keyId: ref.keyId, label: ref.label }
    : { backend: 'pkcs11', module: ref.module, uri: ref.uri, keyId: ref.keyId, label: ref.label };
}

/** Encodes the reference blob (marker, version, payload) that the private fields carry. */
export function encodeReferenceBlob(ref: KeyRef): Buffer {
  validateFields(payloadOf(ref), ref.backend, (reason) => new UnsupportedError(`cannot write key reference: ${reason}`));
  const blob = Buffer.concat([KEYREF_MAGIC, Buffer.from([KEYREF_VERSION]), Buffer.from(JSON.stringify(payloadOf(ref)), 'utf8')]);
  if (blob.length > MAX_BLOB) throw new UnsupportedError(`cannot write key reference: it would be ${blob.length} bytes (max ${MAX_BLOB})`);
  return blob;
}

const FIELDS = { sim: ['backend', 'cluster', 'keyId', 'label'], pkcs11: ['backend', 'module', 'uri', 'keyId', 'label'] } as const;
// No control characters anywhere: references end up in logs and error messages.
const PRINTABLE = /^\P{Cc}*$/u;

function validateFields(p: Record<string, unknown>, backend: string, fail: (reason: string) => Error): void {
  const expected: readonly string[] | undefined = FIELDS[backend as keyof typeof FIELDS];
  if (!expected) throw fail(`unknown backend "${backend}"`);
  const keys = Object.keys(p);
  for (const k of keys) if (!expected.includes(k)) throw fail(`unexpected field "${k}"`);
  for (const k of expected) {
    const v = p[k];
    if (typeof v !== 'string') throw fail(`field "${k}" is missing or not a string`);
    if (!PRINTABLE.test(v) || v.length > 1024) throw fail(`field "${k}" has control characters or is too long`);
  }
  if ((p.keyId as string).length === 0) throw fail('keyId is empty');
  if (backend === 'sim' && !/^[0-9a-fA-F:]{16,128}$/.test(p.cluster as string)) throw fail('cluster is not a certificate fingerprint (hex)');
  if (backend === 'pkcs11') {
    if (!(p.uri as string).startsWith('pkcs11:')) throw fail('uri does not start with "pkcs11:"');
    if ((p.module as string).length === 0) throw fail('module path is empty');
  }
}

function decodeReferenceBlob(blob: Buffer, file: string, publicKey: KeyObject): KeyRef {
  const fail = (reason: string): Error => new MalformedKeyRefError(file, reason);
  if (blob.length > MAX_BLOB) throw fail('reference is too long');
  if (blob.length < KEYREF_MAGIC.length + 1 || !blob.subarray(0, KEYREF_MAGIC.length).equals(KEYREF_MAGIC)) throw fail('reference marker missing');
  const version = blob[KEYREF_MAGIC.length]!;
  if (version !== KEYREF_VERSION) throw fail(`format version ${version} is not supported (this hsmproxy reads version ${KEYREF_VERSION})`);
  let payload: unknown;
  try {
    payload = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(blob.subarray(KEYREF_MAGIC.length + 1)));
  } catch {
    throw fail('reference payload is not UTF-8 JSON');
  }
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) throw fail('reference payload is not a JSON object');
  const p = payload as Record<string, unknown>;
  validateFields(p, String(p.backend), fail);
  const s = p as Record<string, string>;
  return s.backend === 'sim'
    ? { backend: 'sim', clusterId: s.cluster!, keyId: s.keyId!, label: s.label!, publicKey, source: file }
    : { backend: 'pkcs11', module: s.module!, uri: s.uri!, keyId: s.keyId!, label: s.label!, publicKey, source: file };
}

// ---------------------------------------------------------------------------------------------
// PEM

function pemBlock(label: string, der: Buffer): string {
  const b64 = der.toString('base64').match(/.{1,64}/g)!.join('\n');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

interface PemBlock { label: string; headers: boolean; der: Buffer }

function parsePem(text: string, file: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  const re = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END ([A-Z0-9 ]+)-----[ \t]*(?:\r?\n|$)/g;
  let last = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    if (text.slice(last, m.index).trim() !== '') throw new MalformedKeyRefError(file, 'unexpected text outside the PEM blocks');
    if (m[1] !== m[3]) throw new MalformedKeyRefError(file, `PEM block "${m[1]}" ends with "${m[3]}"`);
    let body = m[2]!;
    const headers = /^[A-Za-z-]+:/m.test(body);
    if (headers) body = body.slice(body.search(/\r?\n\r?\n/) + 1);
    const compact = body.replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(compact) || compact.length % 4 !== 0) throw new MalformedKeyRefError(file, `PEM block "${m[1]}" is not valid base64`);
    blocks.push({ label: m[1]!, headers, der: Buffer.from(compact, 'base64') });
    last = re.lastIndex;
  }
  if (text.slice(last).trim() !== '') throw new MalformedKeyRefError(file, blocks.length ? 'unexpected text after the PEM blocks' : 'no PEM block found');
  if (blocks.length === 0) throw new MalformedKeyRefError(file, 'no PEM block found');
  return blocks;
}

// ---------------------------------------------------------------------------------------------
// RSA: PKCS#1 RSAPrivateKey { 0, n, e, d := blob, p := 0, q := 0, dp := 0, dq := 0, qinv := 0 }

function rsaPublicParts(key: KeyObject): { n: Buffer; e: Buffer } {
  const jwk = key.export({ format: 'jwk' });
  return { n: Buffer.from(jwk.n!, 'base64url'), e: Buffer.from(jwk.e!, 'base64url') };
}

function encodeRsa(ref: KeyRef, blob: Buffer): string {
  const { n, e } = rsaPublicParts(ref.publicKey);
  const zero = smallUint(0);
  return pemBlock('RSA PRIVATE KEY', tlv(Tag.SEQUENCE, smallUint(0), uint(n), uint(e), uint(blob), zero, zero, zero, zero, zero));
}

function decodeRsa(der: Buffer, file: string): KeyRef {
  const outer = new DerReader(der);
  const seq = outer.sub(Tag.SEQUENCE, 'RSAPrivateKey');
  outer.end('RSAPrivateKey');
  const version = seq.uint('version');
  if (version.length !== 1 || version[0] !== 0) throw new MalformedKeyRefError(file, 'RSAPrivateKey version is not 0');
  const n = seq.uint('modulus');
  const e = seq.uint('publicExponent');
  const d = seq.uint('privateExponent');
  if (!d.subarray(0, KEYREF_MAGIC.length).equals(KEYREF_MAGIC)) throw new RealPrivateKeyError(file);
  for (const f of ['prime1', 'prime2', 'exponent1', 'exponent2', 'coefficient']) {
    const v = seq.uint(f);
    if (v.length !== 1 || v[0] !== 0) throw new MalformedKeyRefError(file, `${f} must be 0 in a key reference`);
  }
  seq.end('RSAPrivateKey');
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: tlv(Tag.SEQUENCE, uint(n), uint(e)), format: 'der', type: 'pkcs1' });
    keyAlgorithmOf(publicKey);
  } catch (err) {
    throw new MalformedKeyRefError(file, `the RSA public key is unusable (${(err as Error).message})`);
  }
  return decodeReferenceBlob(d, file, publicKey);
}

// ---------------------------------------------------------------------------------------------
// EC: SEC1 ECPrivateKey { 1, scalar := MAGIC ‖ VERSION ‖ SHA-512(blob)[..size-9], [0] curve, [1] point }
// followed by a "HSMPROXY KEY REFERENCE" PEM block holding the blob. The scalar must be exactly
// the curve size: OpenSSL (and so node and nginx) refuses longer ones ("private key too large").

function ecBinding(blob: Buffer, size: number): Buffer {
  const digest = createHash('sha512').update(blob).digest();
  return Buffer.concat([
    KEYREF_MAGIC, Buffer.from([KEYREF_VERSION]), digest.subarray(0, size - KEYREF_MAGIC.length - 1),
  ]);
}

function ecPoint(key: KeyObject): Buffer {
  const jwk = key.export({ format: 'jwk' });
  return Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
}

const EC_PUBLIC_KEY_OID = Buffer.from('06072a8648ce3d0201', 'hex');

function encodeEc(ref: KeyRef, curve: Curve, blob: Buffer): string {
  const facts = CURVES[curve];
  const sec1 = tlv(
    Tag.SEQUENCE,
    smallUint(1),
    tlv(Tag.OCTET_STRING, ecBinding(blob, facts.size)),
    tlv(Tag.CONTEXT_0, facts.oid),
    tlv(Tag.CONTEXT_1, tlv(Tag.BIT_STRING, Buffer.from([0]), ecPoint(ref.publicKey))),
  );
  return pemBlock('EC PRIVATE KEY', sec1) + pemBlock(REFERENCE_PEM_LABEL, blob);
}

function decodeEc(der: Buffer, blocks: PemBlock[], file: string): KeyRef {
  const outer = new DerReader(der);
  const seq = outer.sub(Tag.SEQUENCE, 'ECPrivateKey');
  outer.end('ECPrivateKey');
  const version = seq.uint('version');
  if (version.length !== 1 || version[0] !== 1) throw new MalformedKeyRefError(file, 'ECPrivateKey version is not 1');
  const scalar = seq.read(Tag.OCTET_STRING, 'privateKey');
  if (!seq.peek(Tag.CONTEXT_0)) throw new MalformedKeyRefError(file, 'the EC key does not name its curve');
  const oid = seq.sub(Tag.CONTEXT_0, 'parameters').read(Tag.OID, 'namedCurve');
  const curve = (Object.keys(CURVES) as Curve[]).find((c) => CURVES[c].oid.subarray(2).equals(oid));
  if (!scalar.subarray(0, KEYREF_MAGIC.length).equals(KEYREF_MAGIC)) throw new RealPrivateKeyError(file);
  if (!curve) throw new MalformedKeyRefError(file, 'the EC curve is not P-256 or P-384');
  if (!seq.peek(Tag.CONTEXT_1)) throw new MalformedKeyRefError(file, 'the EC key has no public point');
  const bits = seq.sub(Tag.CONTEXT_1, 'publicKey').read(Tag.BIT_STRING, 'publicKey');
  seq.end('ECPrivateKey');
  const size = CURVES[curve].size;
  if (scalar[KEYREF_MAGIC.length] !== KEYREF_VERSION) throw new MalformedKeyRefError(file, `format version ${scalar[KEYREF_MAGIC.length]} is not supported (this hsmproxy reads version ${KEYREF_VERSION})`);
  if (scalar.length !== size) throw new MalformedKeyRefError(file, `the marker field must be ${size} bytes for ${curve}`);
  if (bits[0] !== 0 || bits.length !== 2 + 2 * size || bits[1] !== 4) throw new MalformedKeyRefError(file, 'the EC public point is not an uncompressed point');
  const refBlocks = blocks.filter((b) => b.label === REFERENCE_PEM_LABEL);
  if (refBlocks.length !== 1) throw new MalformedKeyRefError(file, `an EC key reference needs exactly one "${REFERENCE_PEM_LABEL}" block after the key`);
  const blob = refBlocks[0]!.der;
  if (!ecBinding(blob, size).equals(scalar)) throw new MalformedKeyRefError(file, 'the reference block does not belong to this key (binding digest mismatch)');
  let publicKey: KeyObject;
  try {
    const spki = tlv(Tag.SEQUENCE, tlv(Tag.SEQUENCE, EC_PUBLIC_KEY_OID, CURVES[curve].oid), tlv(Tag.BIT_STRING, bits));
    publicKey = createPublicKey({ key: spki, format: 'der', type: 'spki' });
  } catch (err) {
    throw new MalformedKeyRefError(file, `the EC public point is not on ${curve} (${(err as Error).message})`);
  }
  return decodeReferenceBlob(blob, file, publicKey);
}

// ---------------------------------------------------------------------------------------------

/** Formats a key reference as PEM text (RSA: one block; EC: key block + reference block). */
export function formatKeyRef(ref: KeyRef): string {
  const alg = keyAlgorithmOf(ref.publicKey);
  const blob = encodeReferenceBlob(ref);
  return alg.type === 'rsa' ? encodeRsa(ref, blob) : encodeEc(ref, alg.curve, blob);
}

/** True when a key parsed by node:crypto is really a key reference (its private field starts with the marker). */
export function hasKeyRefMarker(privateKey: KeyObject): boolean {
  if (privateKey.type !== 'private') return false;
  const d = privateKey.export({ format: 'jwk' }).d;
  return d !== undefined && Buffer.from(d, 'base64url').subarray(0, KEYREF_MAGIC.length).equals(KEYREF_MAGIC);
}

/** True when PEM text is a key reference, even a damaged one; false for real keys and other text. */
export function looksLikeKeyRef(text: string): boolean {
  try {
    parseKeyRef(text, 'input');
    return true;
  } catch {
    try {
      return hasKeyRefMarker(createPrivateKey(text));
    } catch {
      return false;
    }
  }
}

/** Parses PEM text as a key reference; `file` names the source in errors. Strict. */
export function parseKeyRef(text: string, file: string): KeyRef {
  const blocks = parsePem(text, file);
  const first = blocks[0]!;
  if (/^(ENCRYPTED )?PRIVATE KEY$/.test(first.label) || first.headers) throw new RealPrivateKeyError(file);
  if (blocks.some((b) => b !== first && b.label !== REFERENCE_PEM_LABEL)) throw new MalformedKeyRefError(file, 'it holds more than one key or certificate');
  try {
    if (first.label === 'RSA PRIVATE KEY') {
      if (blocks.length !== 1) throw new MalformedKeyRefError(file, 'an RSA key reference has exactly one PEM block');
      return decodeRsa(first.der, file);
    }
    if (first.label === 'EC PRIVATE KEY') return decodeEc(first.der, blocks, file);
  } catch (err) {
    if (err instanceof DerError) throw new MalformedKeyRefError(file, err.message);
    throw err;
  }
  throw new MalformedKeyRefError(file, `a "${first.label}" PEM block is not a key (expected RSA PRIVATE KEY or EC PRIVATE KEY)`);
}

/** Reads and parses a key reference file; errors name the file. */
export async function readKeyRef(path: string): Promise<KeyRef> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new MalformedKeyRefError(path, `cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  return parseKeyRef(text, path);
}

/**
 * Writes a key reference file for a key (a KeyRef, or a backend key handle carrying one).
 * Refuses to overwrite an existing file unless `overwrite` is set. Returns the PEM written.
 */
export async function writeKeyReference(
  key: KeyRef | { readonly ref?: KeyRef; readonly keyId: string }, path: string, opts: { overwrite?: boolean } = {},
): Promise<string> {
  const ref = 'backend' in key && 'publicKey' in key && !('algorithm' in key) ? (key as KeyRef) : (key as { ref?: KeyRef }).ref;
  if (!ref) throw new UnsupportedError(`key ${key.keyId} has no key reference (soft keys live in a file, not an HSM)`);
  const pem = formatKeyRef(ref);
  try {
    await writeFile(path, pem, { mode: 0o644, flag: opts.overwrite ? 'w' : 'wx' });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new OutputFileError(`${path} already exists; remove it or choose another --out`);
    throw new OutputFileError(`cannot write ${path}: ${code ?? (err as Error).message}`);
  }
  return pem;
}

/** Public key of a reference as SPKI PEM (what `openssl pkey -pubout` prints). */
export function publicKeyPem(ref: KeyRef): string {
  return ref.publicKey.export({ type: 'spki', format: 'pem' }) as string;
}

/** Wraps a public key given as KeyObject, SPKI DER or PEM into a KeyObject. */
export function toPublicKey(key: KeyObject | Buffer | string): KeyObject {
  if (key instanceof KeyObject) return key.type === 'public' ? key : createPublicKey(key);
  return typeof key === 'string' ? createPublicKey(key) : createPublicKey({ key, format: 'der', type: 'spki' });
}
