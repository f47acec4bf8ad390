// Certificate (CKO_CERTIFICATE, CKC_X_509) and data (CKO_DATA) objects on a PKCS#11 token: what
// other software finds next to a key (a certificate whose CKA_ID equals the key's), and small
// documents an application keeps on the token. Token objects with CKA_PRIVATE true, and only such
// objects are read back: their content is public, but an object a session without the user's PIN
// could plant (a public object) must never be taken for one of ours.
import type { Template } from 'pkcs11js';
import { findObjects } from './keys.js';
import { ck } from './module.js';
import type { Pkcs11Api } from './module.js';
import type { Pkcs11Token } from './token.js';

/** An X.509 certificate to store: its DER and the fields PKCS#11 wants beside it. */
export interface CertificateObject {
  label: string;
  /** CKA_ID: the key's id for a leaf (so it is found with its key); empty for an authority. */
  id: Buffer;
  der: Buffer;
  /** DER of the subject and issuer Names, and of the serial INTEGER. */
  subject: Buffer;
  issuer: Buffer;
  serial: Buffer;
  /** CKA_CERTIFICATE_CATEGORY: 1 token user (a leaf of ours), 2 authority. */
  category: 1 | 2;
}

/** A data object: application and label name it, value is its content. */
export interface DataObject { application: string; label: string; value: Buffer }

/** A certificate found on the token. */
export interface FoundCertificate { label: string; id: Buffer; der: Buffer }

/** What to replace: objects of these labels (certificates) and this application + labels (data). */
export interface ObjectSelection { certificateLabels: string[]; data?: { application: string; labels: string[] } }

/** Private token objects matching `template` (see the header: public ones are never ours). */
function find(api: Pkcs11Api, session: Buffer, template: Template): Buffer[] {
  const ours = [{ type: ck.CKA_PRIVATE, value: true }, { type: ck.CKA_TOKEN, value: true }];
  return findObjects(api, session, [...template, ...ours]);
}

function certificateTemplate(c: CertificateObject): Template {
  return [
    { type: ck.CKA_CLASS, value: ck.CKO_CERTIFICATE }, { type: ck.CKA_CERTIFICATE_TYPE, value: ck.CKC_X_509 },
    { type: ck.CKA_TOKEN, value: true }, { type: ck.CKA_PRIVATE, value: true },
    { type: ck.CKA_LABEL, value: c.label }, { type: ck.CKA_ID, value: c.id },
    { type: ck.CKA_VALUE, value: c.der }, { type: ck.CKA_SUBJECT, value: c.subject },
    { type: ck.CKA_ISSUER, value: c.issuer }, { type: ck.CKA_SERIAL_NUMBER, value: c.serial },
    { type: ck.CKA_CERTIFICATE_CATEGORY, value: c.category },
  ];
}

function dataTemplate(d: DataObject): Template {
  return [
    { type: ck.CKA_CLASS, value: ck.CKO_DATA }, { type: ck.CKA_TOKEN, value: true },
    { type: ck.CKA_PRIVATE, value: true }, { type: ck.CKA_APPLICATION, value: d.application },
    { type: ck.CKA_LABEL, value: d.label }, { type: ck.CKA_VALUE, value: d.value },
  ];
}

/** Handles of the objects `sel` names, in this session. */
function selected(api: Pkcs11Api, s: Buffer, sel: ObjectSelection): Buffer[] {
  const out: Buffer[] = [];
  for (const label of sel.certificateLabels) {
    out.push(...find(api, s, [
      { type: ck.CKA_CLASS, value: ck.CKO_CERTIFICATE }, { type: ck.CKA_LABEL, value: label },
    ]));
  }
  for (const label of sel.data?.labels ?? []) {
    out.push(...find(api, s, [
      { type: ck.CKA_CLASS, value: ck.CKO_DATA }, { type: ck.CKA_APPLICATION, value: sel.data!.application },
      { type: ck.CKA_LABEL, value: label },
    ]));
  }
  return out;
}

/**
 * Creates `certificates` and `data` (in that order: a reader takes the data object as the sign that
 * the certificates beside it are complete), then destroys what `replace` selected before.
 */
export function replaceObjects(
  token: Pkcs11Token, replace: ObjectSelection, certificates: CertificateObject[], data: DataObject[],
): Promise<void> {
  return token.run('storing certificate objects', (s) => {
    const old = selected(token.api, s, replace);
    const made: Buffer[] = [];
    try {
      for (const c of certificates) made.push(token.api.C_CreateObject(s, certificateTemplate(c)));
      for (const d of data) made.push(token.api.C_CreateObject(s, dataTemplate(d)));
    } catch (err) {
      for (const h of made) token.api.C_DestroyObject(s, h);
      throw err;
    }
    for (const h of old) token.api.C_DestroyObject(s, h);
  });
}

/** Destroys the objects `sel` names. */
export function destroyObjects(token: Pkcs11Token, sel: ObjectSelection): Promise<void> {
  return token.run('removing objects', (s) => {
    for (const h of selected(token.api, s, sel)) token.api.C_DestroyObject(s, h);
  });
}

/** The certificates labelled `label`. */
export function findCertificates(token: Pkcs11Token, label: string): Promise<FoundCertificate[]> {
  return token.run('reading certificate objects', (s) => find(token.api, s, [
    { type: ck.CKA_CLASS, value: ck.CKO_CERTIFICATE }, { type: ck.CKA_LABEL, value: label },
  ]).map((h) => {
    const attrs = token.api.C_GetAttributeValue(s, h, [{ type: ck.CKA_ID }, { type: ck.CKA_VALUE }]);
    const [id, der] = attrs.map((a) => a.value);
    return { label, id: id ?? Buffer.alloc(0), der: der! };
  }));
}

/** The data objects of `application` (with `label` only, if given). */
export function findData(token: Pkcs11Token, application: string, label?: string): Promise<DataObject[]> {
  return token.run('reading data objects', (s) => find(token.api, s, [
    { type: ck.CKA_CLASS, value: ck.CKO_DATA }, { type: ck.CKA_APPLICATION, value: application },
    ...(label !== undefined ? [{ type: ck.CKA_LABEL, value: label }] : []),
  ]).map((h) => {
    const attrs = token.api.C_GetAttributeValue(s, h, [{ type: ck.CKA_LABEL }, { type: ck.CKA_VALUE }]);
    const [l, v] = attrs.map((a) => a.value);
    return { application, label: l!.toString('utf8'), value: v ?? Buffer.alloc(0) };
  }));
}
