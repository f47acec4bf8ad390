// A listener's certificate files: the chain read from each cert file, and the web server's
// certificate/key match (as nginx does at start). `serve` checks the match with the key the HSM
// holds (offload-listener.ts), `config check` with the public key the key reference carries, so
// a mismatch shows before anything starts.
import { readFile } from 'node:fs/promises';
import { X509Certificate, type KeyObject } from 'node:crypto';
import type { Config, ConfigIssue, ListenerConfig } from '../config/index.js';
import { readKeyRef } from '../engine/index.js';
import { canDelegate, pemCertificates } from '../tls/index.js';

type CertificateFiles = ListenerConfig['certificates'][number];

/** A certificate entry that is wrong; `field` is the part of the entry at fault ('cert', 'key', or '' for both). */
export class CertificateFileError extends Error {
  constructor(readonly field: 'cert' | 'key' | '', message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CertificateFileError';
  }

  /** The config path of the fault, under the entry's path `where`. */
  pathUnder(where: string): string {
    return this.field ? `${where}.${this.field}` : where;
  }
}

/** The chain of `c.cert` and its leaf. */
export async function readCertificateChain(c: CertificateFiles): Promise<{ chain: Buffer[]; leaf: X509Certificate }> {
  let chain: Buffer[];
  try {
    chain = pemCertificates(await readFile(c.cert, 'utf8'));
  } catch (err) {
    throw new CertificateFileError('cert', `cannot read ${c.cert}: ${(err as Error).message}`, { cause: err });
  }
  if (chain.length === 0) throw new CertificateFileError('cert', `${c.cert} holds no PEM certificate`);
  try {
    return { chain, leaf: new X509Certificate(chain[0]!) };
  } catch (err) {
    throw new CertificateFileError('cert', `${c.cert} is not a valid certificate: ${(err as Error).message}`, { cause: err });
  }
}

/** Refuses a key whose public key is not the certificate's. */
export function checkKeyMatchesCertificate(c: CertificateFiles, leaf: X509Certificate, publicKey: KeyObject): void {
  if (!leaf.publicKey.equals(publicKey)) throw new CertificateFileError('', `the key ${c.key} does not match the certificate ${c.cert}`);
}

/**
 * Every listener certificate checked against the public key of its key reference, without the
 * HSM: the problems as config issues, none when every pair matches.
 */
export async function certificateIssues(config: Config): Promise<ConfigIssue[]> {
  const issues: ConfigIssue[] = [];
  for (const [l, listener] of config.listeners.entries()) {
    for (const [i, c] of listener.certificates.entries()) {
      const where = `listeners[${l}].certificates[${i}]`;
      try {
        const { leaf } = await readCertificateChain(c);
        const ref = await readKeyRef(c.key).catch((err: unknown) => {
          throw new CertificateFileError('key', (err as Error).message, { cause: err });
        });
        checkKeyMatchesCertificate(c, leaf, ref.publicKey);
      } catch (err) {
        if (!(err instanceof CertificateFileError)) throw err;
        issues.push({ path: err.pathUnder(where), message: err.message });
      }
    }
  }
  for (const [l, listener] of config.listeners.entries()) {
    const report = await delegationReport(listener);
    if (listener.delegatedCredentials?.enabled && report.length > 0 && !report.some((r) => r.canDelegate)) {
      issues.push({
        path: `listeners[${l}].delegatedCredentials.enabled`,
        message: `none of the listener's certificates (${report.map((r) => r.cert).join(', ')}) carries the DelegationUsage `
          + 'extension (RFC 9345); issue them with `ca sign --delegation-usage` or set enabled: false',
      });
    }
  }
  return issues;
}

/** Whether one listener certificate may sign delegated credentials. */
export interface DelegationStatus { cert: string; canDelegate: boolean }

/** Each readable certificate of a listener and whether it carries DelegationUsage (unreadable ones are left out). */
export async function delegationReport(listener: ListenerConfig): Promise<DelegationStatus[]> {
  const out: DelegationStatus[] = [];
  for (const c of listener.certificates) {
    try {
      const { chain } = await readCertificateChain(c);
      out.push({ cert: c.cert, canDelegate: canDelegate(chain[0]!) });
    } catch {
      // The same file's problem is already an issue of certificateIssues.
    }
  }
  return out;
}
