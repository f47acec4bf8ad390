// Splits PEM text into the DER certificates it holds (CA bundles, certificate chains).

/** The DER of every CERTIFICATE block in `text`, in order (a chain: leaf first); other blocks are skipped. */
export function pemCertificates(text: string): Buffer[] {
  const out: Buffer[] = [];
  for (const m of text.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g)) {
    out.push(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
  }
  return out;
}
