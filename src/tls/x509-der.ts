// The few X.509 fields node's X509Certificate does not expose and client-certificate checking
// needs (RFC 5280 §4.1, §4.2.1): the raw subject Name (for certificate_authorities), the
// extensions with their critical flag, keyUsage bits and basicConstraints' pathLenConstraint.
// A bounded DER walker: any malformed structure is reported as `undefined`/an error, never read past.

/** One certificate extension: OID (dotted), criticality and the extnValue content. */
export interface CertExtension { oid: string; critical: boolean; value: Buffer }

/** The parts of a certificate we read ourselves. */
export interface CertFields {
  /** DER of the subject Name (a SEQUENCE), as it goes into certificate_authorities. */
  subjectDer: Buffer;
  extensions: Map<string, CertExtension>;
}

interface Tlv { tag: number; pos: number; start: number; end: number; next: number }

function tlv(der: Buffer, pos: number, limit: number): Tlv {
  if (pos + 2 > limit) throw new RangeError('truncated DER');
  const tag = der[pos]!;
  let len = der[pos + 1]!;
  let start = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || start + n > limit) throw new RangeError('bad DER length');
    len = der.readUIntBE(start, n);
    start += n;
  }
  const end = start + len;
  if (end > limit) throw new RangeError('DER value runs past its container');
  return { tag, pos, start, end, next: end };
}

function children(der: Buffer, outer: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let p = outer.start; p < outer.end;) {
    const c = tlv(der, p, outer.end);
    out.push(c);
    p = c.next;
  }
  return out;
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

/** Reads the subject Name and extensions of a DER certificate; throws RangeError when malformed. */
export function readCertFields(der: Buffer): CertFields {
  const cert = tlv(der, 0, der.length);
  const tbs = tlv(der, cert.start, cert.end);
  const f = children(der, tbs);
  // tbsCertificate: [0] version?, serial, signature, issuer, validity, subject, spki, [1]?, [2]?, [3] extensions?
  let i = f[0]?.tag === 0xa0 ? 1 : 0;
  const subject = f[i + 4];
  if (!subject || subject.tag !== 0x30) throw new RangeError('certificate has no subject Name');
  const subjectDer = der.subarray(subject.pos, subject.end);
  const extensions = new Map<string, CertExtension>();
  for (i += 6; i < f.length; i++) {
    if (f[i]!.tag !== 0xa3) continue;
    const list = tlv(der, f[i]!.start, f[i]!.end);
    for (const e of children(der, list)) {
      const parts = children(der, e);
      const oid = oidString(der.subarray(parts[0]!.start, parts[0]!.end));
      const critical = parts.length === 3 && parts[1]!.tag === 0x01 && der[parts[1]!.start] !== 0;
      const val = parts[parts.length - 1]!;
      if (val.tag !== 0x04) throw new RangeError('extension value is not an OCTET STRING');
      if (extensions.has(oid)) throw new RangeError(`duplicate extension ${oid}`);
      extensions.set(oid, { oid, critical, value: der.subarray(val.start, val.end) });
    }
  }
  return { subjectDer, extensions };
}

/** keyUsage bit numbers (RFC 5280 §4.2.1.3). */
export const KeyUsageBit = { digitalSignature: 0, keyCertSign: 5 } as const;

/** The keyUsage bits that are set, or undefined when the extension is absent. */
export function keyUsageBits(ext: CertExtension | undefined): Set<number> | undefined {
  if (!ext) return undefined;
  const bs = tlv(ext.value, 0, ext.value.length);
  if (bs.tag !== 0x03 || bs.end - bs.start < 1) throw new RangeError('keyUsage is not a BIT STRING');
  const bits = new Set<number>();
  const bytes = ext.value.subarray(bs.start + 1, bs.end);
  bytes.forEach((byte, n) => { for (let b = 0; b < 8; b++) if (byte & (0x80 >> b)) bits.add(n * 8 + b); });
  return bits;
}

/** basicConstraints (RFC 5280 §4.2.1.9): cA and the optional pathLenConstraint. */
export function basicConstraints(ext: CertExtension | undefined): { ca: boolean; pathLen?: number } {
  if (!ext) return { ca: false };
  const seq = tlv(ext.value, 0, ext.value.length);
  let ca = false;
  let pathLen: number | undefined;
  for (const c of children(ext.value, seq)) {
    if (c.tag === 0x01) ca = ext.value[c.start] !== 0;
    else if (c.tag === 0x02 && c.end - c.start <= 4) pathLen = ext.value.readUIntBE(c.start, c.end - c.start);
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
