// Key pairs on a PKCS#11 token: generate (non-extractable, sensitive, token objects), list,
// find by CKA_ID or label, delete, and read the public half as a node KeyObject.
// A key is named by its CKA_ID (random, 16 bytes) — stable across sessions, restarts and
// re-initialisation, unlike object handles, which are re-resolved per session epoch.
import { createPublicKey, randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import type { Template } from 'pkcs11js';
import { ck } from './module.js';
import type { Pkcs11Api } from './module.js';
import type { Pkcs11Token } from './token.js';
import { KeyNotFoundError, Pkcs11EngineError, UnsupportedError } from './errors.js';

/** Key types the backend generates: RSA sizes and NIST curves TLS uses. */
export type Pkcs11KeySpec = { type: 'rsa'; bits: 2048 | 3072 | 4096 } | { type: 'ec'; curve: 'P-256' | 'P-384' };

/** A private key on the token with its public half. */
export interface Pkcs11KeyInfo {
  /** CKA_ID bytes. */
  id: Buffer;
  label: string;
  keyType: 'rsa' | 'ec';
  bits?: number;
  curve?: 'P-256' | 'P-384';
  publicKey: KeyObject;
}

/** How to find a key: CKA_ID (preferred, unique) and/or CKA_LABEL. */
export interface KeySelector { id?: Buffer; label?: string }

// DER-encoded curve OIDs for CKA_EC_PARAMS.
const CURVES: ReadonlyArray<{ curve: 'P-256' | 'P-384'; oid: Buffer; bytes: number }> = [
  { curve: 'P-256', oid: Buffer.from('06082a8648ce3d030107', 'hex'), bytes: 32 },
  { curve: 'P-384', oid: Buffer.from('06052b81040022', 'hex'), bytes: 48 },
];

/** Parses `rsa:2048`, `ec:p256`, `ec:P-384`… as the CLI's --type accepts them. */
export function parseKeySpec(text: string): Pkcs11KeySpec {
  const m = /^(rsa|ec):(.+)$/i.exec(text.trim());
  const kind = m?.[1]?.toLowerCase();
  const arg = m?.[2]?.toUpperCase().replace(/^P-?/, 'P-');
  if (kind === 'rsa' && (arg === '2048' || arg === '3072' || arg === '4096')) return { type: 'rsa', bits: Number(arg) as 2048 | 3072 | 4096 };
  if (kind === 'ec' && (arg === 'P-256' || arg === 'P-384')) return { type: 'ec', curve: arg };
  throw new UnsupportedError(`unsupported key type "${text}": use rsa:2048, rsa:3072, rsa:4096, ec:p256 or ec:p384`);
}

const b64url = (b: Buffer): string => b.toString('base64url');

/** Builds the public KeyObject from a public-key object's attributes. */
function readPublicKey(api: Pkcs11Api, session: Buffer, pub: Buffer, keyType: number): { publicKey: KeyObject; bits?: number; curve?: 'P-256' | 'P-384' } {
  if (keyType === ck.CKK_RSA) {
    const [n, e] = api.C_GetAttributeValue(
      session, pub, [{ type: ck.CKA_MODULUS }, { type: ck.CKA_PUBLIC_EXPONENT }],
    ).map((a) => a.value);
    const publicKey = createPublicKey({ key: { kty: 'RSA', n: b64url(n!), e: b64url(e!) }, format: 'jwk' });
    return { publicKey, bits: publicKey.asymmetricKeyDetails?.modulusLength };
  }
  if (keyType === ck.CKK_EC) {
    const [params, point] = api.C_GetAttributeValue(
      session, pub, [{ type: ck.CKA_EC_PARAMS }, { type: ck.CKA_EC_POINT }],
    ).map((a) => a.value);
    const c = CURVES.find((x) => x.oid.equals(params!));
    if (!c) throw new UnsupportedError('EC key on an unsupported curve (only P-256 and P-384)');
    const raw = unwrapEcPoint(point!, c.bytes);
    const publicKey = createPublicKey({ key: { kty: 'EC', crv: c.curve, x: b64url(raw.subarray(1, 1 + c.bytes)), y: b64url(raw.subarray(1 + c.bytes)) }, format: 'jwk' });
    return { publicKey, curve: c.curve };
  }
  throw new UnsupportedError(`key type ${keyType} is neither RSA nor EC`);
}

// CKA_EC_POINT is a DER OCTET STRING holding 04||X||Y; some modules return the bare point.
function unwrapEcPoint(value: Buffer, fieldBytes: number): Buffer {
  const len = 1 + 2 * fieldBytes;
  if (value.length === len && value[0] === 0x04) return value;
  if (value[0] === 0x04 && value.length === len + 2 && value[1] === len) return value.subarray(2);
  if (value[0] === 0x04 && value.length === len + 3 && value[1] === 0x81 && value[2] === len) return value.subarray(3);
  throw new UnsupportedError('the token returned an EC point that is not an uncompressed point');
}

/** Every object matching `template` (C_FindObjects in batches of 64). */
export function findObjects(api: Pkcs11Api, session: Buffer, template: Template): Buffer[] {
  api.C_FindObjectsInit(session, template);
  try {
    const out: Buffer[] = [];
    for (;;) {
      const batch = api.C_FindObjects(session, 64);
      if (batch.length === 0) return out;
      out.push(...batch);
    }
  } finally {
    api.C_FindObjectsFinal(session);
  }
}

function selectorTemplate(sel: KeySelector): Template {
  const t: Template = [];
  if (sel.id) t.push({ type: ck.CKA_ID, value: sel.id });
  if (sel.label !== undefined) t.push({ type: ck.CKA_LABEL, value: sel.label });
  return t;
}

function describeSelector(sel: KeySelector): string {
  return ['private key', sel.label !== undefined ? `labelled "${sel.label}"` : '', sel.id ? `with id ${sel.id.toString('hex')}` : ''].filter(Boolean).join(' ');
}

/** Reads id, label, type and public key of the private key `priv` (public half found by CKA_ID). */
function describeKey(api: Pkcs11Api, session: Buffer, priv: Buffer): Pkcs11KeyInfo {
  const [id, label, type] = api.C_GetAttributeValue(
    session, priv, [{ type: ck.CKA_ID }, { type: ck.CKA_LABEL }, { type: ck.CKA_KEY_TYPE }],
  ).map((a) => a.value);
  const keyType = type!.readUInt32LE(0);
  const pubs = findObjects(
    api, session, [{ type: ck.CKA_CLASS, value: ck.CKO_PUBLIC_KEY }, { type: ck.CKA_ID, value: id! }],
  );
  // RSA private keys carry modulus and exponent too, so a lone private key still has a public half.
  const source = pubs[0] ?? (keyType === ck.CKK_RSA ? priv : undefined);
  if (!source) throw new UnsupportedError(`key ${id!.toString('hex')} has no public key object on the token`);
  const pub = readPublicKey(api, session, source, keyType);
  return { id: id!, label: label!.toString('utf8'), keyType: keyType === ck.CKK_RSA ? 'rsa' : 'ec', ...pub };
}

// Attribute templates shared by generation and import: the private key can only sign, never leave.
function templates(id: Buffer, label: string, onToken: boolean): { pubT: Template; privT: Template } {
  const common = [
    { type: ck.CKA_TOKEN, value: onToken }, { type: ck.CKA_ID, value: id }, { type: ck.CKA_LABEL, value: label },
  ];
  const pubT: Template = [
    ...common, { type: ck.CKA_CLASS, value: ck.CKO_PUBLIC_KEY }, { type: ck.CKA_PRIVATE, value: false },
    { type: ck.CKA_VERIFY, value: true }, { type: ck.CKA_ENCRYPT, value: false }, { type: ck.CKA_WRAP, value: false },
  ];
  const privT: Template = [
    ...common, { type: ck.CKA_CLASS, value: ck.CKO_PRIVATE_KEY }, { type: ck.CKA_PRIVATE, value: true },
    { type: ck.CKA_SENSITIVE, value: true }, { type: ck.CKA_EXTRACTABLE, value: false },
    { type: ck.CKA_SIGN, value: true }, { type: ck.CKA_DECRYPT, value: false }, { type: ck.CKA_UNWRAP, value: false },
    { type: ck.CKA_DERIVE, value: false },
  ];
  return { pubT, privT };
}

/**
 * Generates a key pair on the token; the private key is sensitive, non-extractable and sign-only.
 * `session` keys (CKA_TOKEN false) vanish when the backend closes.
 */
export async function generateKey(
  token: Pkcs11Token, spec: Pkcs11KeySpec, label: string, opts: { session?: boolean } = {},
): Promise<Pkcs11KeyInfo> {
  if (!label) throw new Pkcs11EngineError('a key needs a label: pass --label', 'ENGINE_ERR_CONFIG');
  const id = randomBytes(16);
  const { pubT, privT } = templates(id, label, !opts.session);
  let mechanism: number;
  if (spec.type === 'rsa') {
    mechanism = ck.CKM_RSA_PKCS_KEY_PAIR_GEN;
    pubT.push(
      { type: ck.CKA_KEY_TYPE, value: ck.CKK_RSA }, { type: ck.CKA_MODULUS_BITS, value: spec.bits },
      { type: ck.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
    );
    privT.push({ type: ck.CKA_KEY_TYPE, value: ck.CKK_RSA });
  } else {
    mechanism = ck.CKM_EC_KEY_PAIR_GEN;
    const c = CURVES.find((x) => x.curve === spec.curve)!;
    pubT.push({ type: ck.CKA_KEY_TYPE, value: ck.CKK_EC }, { type: ck.CKA_EC_PARAMS, value: c.oid });
    privT.push({ type: ck.CKA_KEY_TYPE, value: ck.CKK_EC });
  }
  if (!token.mechanisms.has(mechanism)) throw new UnsupportedError(`the token cannot generate ${spec.type.toUpperCase()} keys`);
  // Key generation takes seconds for RSA-4096: run it on the thread pool, not the event loop.
  const pair = await token.run('key generation', (s) => token.api.C_GenerateKeyPairAsync(s, { mechanism }, pubT, privT));
  return token.run('reading the new key', (s) => describeKey(token.api, s, pair.privateKey));
}

/** Imports a software private key (the migration path): it becomes sensitive and non-extractable. */
export async function importKey(token: Pkcs11Token, privateKey: KeyObject, label: string): Promise<Pkcs11KeyInfo> {
  if (!label) throw new Pkcs11EngineError('a key needs a label: pass --label', 'ENGINE_ERR_CONFIG');
  if (privateKey.type !== 'private') throw new UnsupportedError('only a private key can be imported');
  const id = randomBytes(16);
  const { pubT, privT } = templates(id, label, true);
  const jwk = privateKey.export({ format: 'jwk' });
  const b = (v: string | undefined): Buffer => Buffer.from(v ?? '', 'base64url');
  if (jwk.kty === 'RSA') {
    const pub = [
      { type: ck.CKA_KEY_TYPE, value: ck.CKK_RSA }, { type: ck.CKA_MODULUS, value: b(jwk.n) },
      { type: ck.CKA_PUBLIC_EXPONENT, value: b(jwk.e) },
    ];
    pubT.push(...pub);
    privT.push(
      ...pub, { type: ck.CKA_PRIVATE_EXPONENT, value: b(jwk.d) },
      { type: ck.CKA_PRIME_1, value: b(jwk.p) }, { type: ck.CKA_PRIME_2, value: b(jwk.q) },
      { type: ck.CKA_EXPONENT_1, value: b(jwk.dp) }, { type: ck.CKA_EXPONENT_2, value: b(jwk.dq) },
      { type: ck.CKA_COEFFICIENT, value: b(jwk.qi) },
    );
  } else if (jwk.kty === 'EC') {
    const c = CURVES.find((x) => x.curve === jwk.crv);
    if (!c) throw new UnsupportedError(`EC curve ${jwk.crv ?? '?'} is not supported (use P-256 or P-384)`);
    const point = Buffer.concat([Buffer.from([0x04]), b(jwk.x), b(jwk.y)]);
    pubT.push(
      { type: ck.CKA_KEY_TYPE, value: ck.CKK_EC }, { type: ck.CKA_EC_PARAMS, value: c.oid },
      { type: ck.CKA_EC_POINT, value: Buffer.concat([Buffer.from([0x04, point.length]), point]) },
    );
    privT.push(
      { type: ck.CKA_KEY_TYPE, value: ck.CKK_EC }, { type: ck.CKA_EC_PARAMS, value: c.oid },
      { type: ck.CKA_VALUE, value: b(jwk.d) },
    );
  } else {
    throw new UnsupportedError(`key type ${jwk.kty ?? '?'} cannot be imported (use RSA or EC P-256/P-384)`);
  }
  return token.run('key import', (s) => {
    const priv = token.api.C_CreateObject(s, privT);
    try {
      token.api.C_CreateObject(s, pubT);
    } catch (err) {
      token.api.C_DestroyObject(s, priv);
      throw err;
    }
    return describeKey(token.api, s, priv);
  });
}

/**
 * Lists the private keys on the token (those this user can see) with their public halves. Keys
 * hsmproxy cannot use (other algorithms or curves, EC keys without a public key object) are left out.
 */
export function listKeys(token: Pkcs11Token): Promise<Pkcs11KeyInfo[]> {
  return token.run('listing keys', (s) => {
    const out: Pkcs11KeyInfo[] = [];
    for (const h of findObjects(token.api, s, [{ type: ck.CKA_CLASS, value: ck.CKO_PRIVATE_KEY }])) {
      try {
        out.push(describeKey(token.api, s, h));
      } catch (err) {
        if (!(err instanceof UnsupportedError)) throw err;
      }
    }
    return out;
  });
}

/** Handle of the one private key matching `sel` in this session; throws KeyNotFoundError. */
export function privateKeyHandle(token: Pkcs11Token, session: Buffer, sel: KeySelector): Buffer {
  const cacheKey = `${sel.id?.toString('hex') ?? ''}/${sel.label ?? ''}`;
  const cached = token.handles.get(cacheKey);
  if (cached) return cached;
  if (!sel.id && sel.label === undefined) throw new KeyNotFoundError('a private key with no id or label');
  const found = findObjects(
    token.api, session, [{ type: ck.CKA_CLASS, value: ck.CKO_PRIVATE_KEY }, ...selectorTemplate(sel)],
  );
  if (found.length === 0) {
    // Private keys are invisible to a session that is not logged in: report that, so run() logs in again.
    if (!token.loggedIn(session)) throw new ck.Pkcs11Error('CKR_USER_NOT_LOGGED_IN:257', ck.CKR_USER_NOT_LOGGED_IN, 'C_FindObjects');
    throw new KeyNotFoundError(describeSelector(sel));
  }
  if (found.length > 1) throw new Pkcs11EngineError(`${found.length} keys match (${describeSelector(sel)}); name the key by its id`, 'ENGINE_ERR_AMBIGUOUS_KEY');
  token.handles.set(cacheKey, found[0]!);
  return found[0]!;
}

/** Finds one key by id or label and reads its public half. */
export function findKey(token: Pkcs11Token, sel: KeySelector): Promise<Pkcs11KeyInfo> {
  return token.run('finding a key', (s) => describeKey(token.api, s, privateKeyHandle(token, s, sel)));
}

/** Deletes the private key matching `sel` and its public key object(s); returns what was deleted. */
export function deleteKey(token: Pkcs11Token, sel: KeySelector): Promise<Pkcs11KeyInfo> {
  return token.run('deleting a key', (s) => {
    const priv = privateKeyHandle(token, s, sel);
    const info = describeKey(token.api, s, priv);
    const pubs = findObjects(
      token.api, s, [{ type: ck.CKA_CLASS, value: ck.CKO_PUBLIC_KEY }, { type: ck.CKA_ID, value: info.id }],
    );
    token.api.C_DestroyObject(s, priv);
    for (const p of pubs) token.api.C_DestroyObject(s, p);
    token.handles.clear();
    return info;
  });
}

/** Modulus (RSA) or field (EC) size in bytes: the size of what the token will return. */
export function signatureUnitBytes(key: { keyType: 'rsa' | 'ec'; bits?: number; curve?: 'P-256' | 'P-384' }): number {
  if (key.keyType === 'rsa') return Math.ceil((key.bits ?? 2048) / 8);
  return CURVES.find((c) => c.curve === key.curve)?.bytes ?? 32;
}
