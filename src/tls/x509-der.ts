// The few X.509 fields node's X509Certificate does not expose and client-certificate checking
// needs (RFC 5280 §4.1, §4.2.1): the raw subject Name (for certificate_authorities), the
// extensions with their critical flag, keyUsage bits and basicConstraints' pathLenConstraint.
// Read with the strict DER reader of der.ts: a malformed structure is an error, never read past.
import { DerError, DerReader, Tag } from './der.js';

/** One certificate extension: OID (dotted), criticality and the extnValue content. */
export interface CertExtension { oid: string; critical: boolean; value: Buffer }

/** The parts of a certificate we read ourselves. */
export interface CertFields {
  /** DER of the subject Name (a SEQUENCE), as it goes into certificate_authorities. */
  subjectDer: Buffer;
  extensions: Map<string, CertExtension>;
}

function oidString(b: Buffer): string {
  const parts: number[] = [];
  let v = 0;
  for (const byte of b) {
    v = v * 128 + (byte & 0x7f);
    if (!(byte & 0x80)) { parts.push(v); v = 0; }
  }
  const first = parts.shift() ?? 0;
  const head = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  return [...head, ...parts].join('.');
}

/** Reads the subject Name and extensions of a DER certificate; throws DerError (a RangeError) when malformed. */
export function readCertFields(der: Buffer): CertFields {
  const tbs = new DerReader(der).sub(Tag.SEQUENCE, 'Certificate').sub(Tag.SEQUENCE, 'tbsCertificate');
  // tbsCertificate: [0] version?, serial, signature, issuer, validity, subject, spki, [1]?, [2]?, [3] extensions?
  if (tbs.peek(Tag.CONTEXT_0)) tbs.skip('version');
  for (const what of ['serialNumber', 'signature', 'issuer', 'validity']) tbs.skip(what);
  const subject = tbs.next('subject');
  if (subject.tag !== Tag.SEQUENCE) throw new DerError('certificate has no subject Name');
  tbs.skip('subjectPublicKeyInfo');
  const extensions = new Map<string, CertExtension>();
  while (!tbs.atEnd()) {
    if (!tbs.peek(Tag.CONTEXT_3)) {
      tbs.skip('tbsCertificate field');
      continue;
    }
    const list = tbs.sub(Tag.CONTEXT_3, 'extensions').sub(Tag.SEQUENCE, 'extensions');
    while (!list.atEnd()) {
      const e = list.sub(Tag.SEQUENCE, 'Extension');
      const oid = oidString(e.read(Tag.OID, 'extnID'));
      const critical = e.peek(Tag.BOOLEAN) && e.read(Tag.BOOLEAN, 'critical')[0] !== 0;
      const val = e.next('extnValue');
      if (val.tag !== Tag.OCTET_STRING) throw new DerError('extension value is not an OCTET STRING');
      e.end('Extension');
      if (extensions.has(oid)) throw new DerError(`duplicate extension ${oid}`);
      extensions.set(oid, { oid, critical, value: val.content });
    }
  }
  return { subjectDer: subject.raw, extensions };
}

/** keyUsage bit numbers (RFC 5280 §4.2.1.3). */
export const KeyUsageBit = { digitalSignature: 0, keyCertSign: 5 } as const;

/** The keyUsage bits that are set, or undefined when the extension is absent. */
export function keyUsageBits(ext: CertExtension | undefined): Set<number> | undefined {
  if (!ext) return undefined;
  const bs = new DerReader(ext.value).next('keyUsage');
  if (bs.tag !== Tag.BIT_STRING || bs.content.length < 1) throw new DerError('keyUsage is not a BIT STRING');
  const bits = new Set<number>();
  const bytes = bs.content.subarray(1);
  bytes.forEach((byte, n) => { for (let b = 0; b < 8; b++) if (byte & (0x80 >> b)) bits.add(n * 8 + b); });
  return bits;
}

/** basicConstraints (RFC 5280 §4.2.1.9): cA and the optional pathLenConstraint. */
export function basicConstraints(ext: CertExtension | undefined): { ca: boolean; pathLen?: number } {
  if (!ext) return { ca: false };
  const seq = new DerReader(new DerReader(ext.value).next('basicConstraints').content);
  let ca = false;
  let pathLen: number | undefined;
  while (!seq.atEnd()) {
    const c = seq.next('basicConstraints field');
    const n = c.content.length;
    if (c.tag === Tag.BOOLEAN) ca = c.content[0] !== 0;
    else if (c.tag === Tag.INTEGER && n >= 1 && n <= 4) pathLen = c.content.readUIntBE(0, n);
  }
  return pathLen === undefined ? { ca } : { ca, pathLen };
}

/** Extension OIDs a verifier must understand when marked critical. */
export const Oid = {
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  anyExtendedKeyUsage: '2.5.29.37.0',
} as const;
