// Exports the notAfter of every certificate a listener serves, so an alert can warn weeks before
// a certificate expires (the proxy keeps serving an expired one; clients are the ones that fail).
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { ListenerConfig } from '../config/index.js';
import type { HsmproxyMetrics } from '../metrics/index.js';

/** One served certificate's identity and expiry. */
export interface CertificateExpiry { listener: string; subject: string; serial: string; notAfterSeconds: number }

/** Reads the leaf of each listener certificate; files that cannot be read or parsed are skipped. */
export async function readCertificateExpiry(listeners: readonly ListenerConfig[]): Promise<CertificateExpiry[]> {
  const out: CertificateExpiry[] = [];
  for (const l of listeners) {
    for (const c of l.certificates) {
      try {
        const leaf = new X509Certificate(await readFile(c.cert));
        // One line, as Prometheus labels show it; DN parts come newline-separated from node.
        out.push({ listener: l.name, subject: leaf.subject.split('\n').join(', '), serial: leaf.serialNumber.toLowerCase(), notAfterSeconds: Math.floor(Date.parse(leaf.validTo) / 1000) });
      } catch {
        // The listener itself refuses such a file with a message naming it; nothing to export.
      }
    }
  }
  return out;
}

/** Replaces the certificate-expiry gauge with the certificates `listeners` serve now; never throws. */
export async function recordCertificateExpiry(m: HsmproxyMetrics, listeners: readonly ListenerConfig[]): Promise<void> {
  const expiries = await readCertificateExpiry(listeners);
  // Reset first, so a certificate replaced by a reload stops being reported (and alerted on).
  m.certificateNotAfter.reset();
  for (const e of expiries) {
    m.certificateNotAfter.set({ listener: e.listener, subject: e.subject, serial: e.serial }, e.notAfterSeconds);
  }
}
