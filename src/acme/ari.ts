// ACME Renewal Information (RFC 9773): the CA's suggested renewal window for a certificate, and the
// certificate identifier a renewal order names in `replaces`. acme-client has no ARI, so the
// directory's `renewalInfo` resource is read here over acme-client's HTTP client (same CA trust).
import { X509Certificate } from 'node:crypto';
import acme from 'acme-client';
import * as x509 from '@peculiar/x509';

/** The CA's suggested window, and when to ask again. */
export interface RenewalWindow { start: string; end: string; retryAfter: string }

const b64url = (b: Buffer): string => b.toString('base64url');

/**
 * RFC 9773 §4.1: base64url(authorityKeyIdentifier keyIdentifier) "." base64url(serial's DER INTEGER
 * content octets); undefined when the certificate has no keyIdentifier in its AKI.
 */
export function ariCertId(pem: string): string | undefined {
  const cert = new x509.X509Certificate(pem);
  const aki = cert.getExtension(x509.AuthorityKeyIdentifierExtension);
  if (!aki?.keyId) return undefined;
  let serial = new X509Certificate(pem).serialNumber.replace(/^(00)+(?=.)/, '');
  if (serial.length % 2) serial = `0${serial}`;
  // A DER INTEGER is signed: a leading byte ≥ 0x80 carries a zero octet in front.
  if (parseInt(serial.slice(0, 2), 16) >= 0x80) serial = `00${serial}`;
  return `${b64url(Buffer.from(aki.keyId, 'hex'))}.${b64url(Buffer.from(serial, 'hex'))}`;
}

/** The directory's renewalInfo URL, or undefined when the CA offers no ARI. */
export async function renewalInfoUrl(directory: string): Promise<string | undefined> {
  const res = await acme.axios.get<Record<string, unknown>>(directory, { validateStatus: (s) => s === 200 });
  const url = res.data?.renewalInfo;
  return typeof url === 'string' ? url : undefined;
}

/** Fetches the suggested window for `certId`; throws when the answer is not one (the caller falls back). */
export async function fetchRenewalWindow(base: string, certId: string): Promise<RenewalWindow> {
  const res = await acme.axios.get<{ suggestedWindow?: { start?: string; end?: string } }>(
    `${base.replace(/\/$/, '')}/${certId}`, { validateStatus: (s) => s === 200 },
  );
  const w = res.data?.suggestedWindow;
  const start = Date.parse(w?.start ?? '');
  const end = Date.parse(w?.end ?? '');
  if (!Number.isFinite(start) || !Number.isFinite(end) || end < start) throw new Error('renewalInfo answered without a valid suggestedWindow');
  // RFC 9773 §4.3: ask again after Retry-After (clamped to between 1 minute and 1 day), else 6 hours.
  const ra = Number(res.headers['retry-after']);
  const again = Number.isFinite(ra) && ra > 0 ? Math.min(Math.max(ra, 60), 86_400) : 6 * 3600;
  const retryAfter = new Date(Date.now() + again * 1000).toISOString();
  return { start: new Date(start).toISOString(), end: new Date(end).toISOString(), retryAfter };
}
