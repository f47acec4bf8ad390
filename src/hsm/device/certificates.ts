// Certificate objects (docs/hsm-cluster.md, "Certificates"): a DER chain stored under a label
// beside the private key its leaf certifies, as PKCS#11 keeps CKO_CERTIFICATE objects beside
// their keys. Readable by the CUs who may see that key (owner and sharees; CO/AU for copies).
// Every HSM of the cluster gets each certificate from the client (client/leases.ts), and each
// decides for itself: a certificate stored under a fencing token older than the newest this HSM
// granted for its label is refused (leases.ts), so a proxy whose order lease lapsed cannot
// overwrite what a newer holder stored. Persisted sealed like the rest of the directory.
import { createPublicKey, X509Certificate } from 'node:crypto';
import type { DeviceContext } from './context.js';
import { InvalidArgumentError, NoSuchKeyError, PermissionDeniedError, StaleLeaseError } from './errors.js';
import type { KeyOps } from './key-ops.js';
import { checkLeaseName, type Leases } from './leases.js';
import { canSee, requireRole } from './policy.js';
import type { CertificateInfo, Session, StoreCertificateRequest } from './types.js';

/** The sealed table of certificate objects in an HSM's directory (Hsm.restore writes it from a snapshot). */
export const CERTIFICATES_TABLE = 'certificates.sealed';
export const MAX_CERTIFICATES = 1024;
const MAX_CHAIN = 10;
const MAX_DER = 16 * 1024;

export interface CertificateRecord {
  label: string;
  keyId: string;
  chain: string[];
  note: string;
  token: number;
  version: number;
  owner: string;
  storedAt: string;
  /** A tombstone: the certificate was deleted under `token` (no older copy may come back). */
  deleted?: boolean;
}

function infoOf(r: CertificateRecord): CertificateInfo {
  return { ...r, chain: r.chain.map((b) => Buffer.from(b, 'base64')) };
}

/** The certificate objects of one HSM. */
export class Certificates {
  private readonly records = new Map<string, CertificateRecord>();

  constructor(private readonly ctx: DeviceContext, private readonly keys: KeyOps, private readonly leases: Leases) {}

  /** Reads the persisted certificate objects (once, when the HSM opens). */
  async load(): Promise<void> {
    for (const r of (await this.ctx.store.readTable<CertificateRecord[]>(CERTIFICATES_TABLE)) ?? []) {
      this.records.set(r.label, r);
      // A restored HSM has its certificates but no lease table: its next grant must still be
      // above the token each was stored under, or no holder could ever replace them.
      await this.leases.raise(r.label, r.token);
    }
  }

  /**
   * Stores (or replaces) the certificate `label` for a private key the CU may see. The leaf must
   * certify that key. Refused under a token older than the newest granted or stored for `label`.
   */
  async store(s: Session, req: StoreCertificateRequest): Promise<CertificateInfo> {
    requireRole(s, ['CU'], 'store a certificate');
    const label = checkLeaseName(req?.label);
    const key = this.keys.visible(s, req.keyId);
    if (key.attrs.class !== 'private' || !key.attrs.token) throw new InvalidArgumentError(`key ${req.keyId} is not a token private key: a certificate object belongs to one`);
    if (typeof req.token !== 'number' || !Number.isSafeInteger(req.token) || req.token < 1) throw new InvalidArgumentError('a fencing token must be a positive integer');
    const chainOk = Array.isArray(req.chain) && req.chain.length > 0 && req.chain.length <= MAX_CHAIN
      && req.chain.every((d) => Buffer.isBuffer(d) && d.length > 0 && d.length <= MAX_DER);
    if (!chainOk) {
      throw new InvalidArgumentError(`a certificate chain is 1 to ${MAX_CHAIN} DER certificates of at most ${MAX_DER} bytes each`);
    }
    const note = req.note ?? '';
    if (typeof note !== 'string' || note.length > 16_384) throw new InvalidArgumentError('a certificate note is at most 16,384 characters');
    let leaf: X509Certificate;
    try {
      leaf = new X509Certificate(req.chain[0]!);
      for (const d of req.chain.slice(1)) void new X509Certificate(d);
    } catch {
      throw new InvalidArgumentError(`the chain of certificate ${label} does not parse as DER X.509`);
    }
    if (!leaf.publicKey.equals(createPublicKey(key.keyObject))) throw new InvalidArgumentError(`the leaf of certificate ${label} does not certify key ${req.keyId}`);
    const existing = this.records.get(label);
    // Labels are cluster-wide: one crypto user's certificate is never replaced by another's.
    if (existing && existing.owner !== key.attrs.owner) {
      throw new PermissionDeniedError(`store certificate ${label}`, `it belongs to ${existing.owner}'s key; choose another label`);
    }
    const newest = Math.max(this.leases.newestToken(label), existing?.token ?? 0);
    if (req.token < newest) {
      this.ctx.audit({ event: 'certificate.store', user: s.user, ok: false, certificate: label, code: 'HSM_ERR_STALE_LEASE', offered: req.token, newest });
      throw new StaleLeaseError(label, req.token, newest);
    }
    if (!existing && this.records.size >= MAX_CERTIFICATES) throw new InvalidArgumentError(`this HSM keeps at most ${MAX_CERTIFICATES} certificate objects`);
    const rec: CertificateRecord = {
      label, keyId: req.keyId, chain: req.chain.map((d) => d.toString('base64')), note, token: req.token,
      version: (existing?.version ?? 0) + 1, owner: key.attrs.owner, storedAt: new Date().toISOString(),
    };
    await this.leases.raise(label, req.token);
    this.records.set(label, rec);
    await this.save();
    this.ctx.audit({ event: 'certificate.store', user: s.user, ok: true, certificate: label, keyId: req.keyId, token: req.token, version: rec.version });
    return infoOf(rec);
  }

  /**
   * Deletes the certificate `label` under `token` (at least the newest for the label), leaving a
   * tombstone one version up: no copy stored under an older token comes back. Its key's owner only.
   */
  async delete(s: Session, label: string, token: number): Promise<CertificateInfo> {
    requireRole(s, ['CU'], 'delete a certificate');
    checkLeaseName(label);
    if (typeof token !== 'number' || !Number.isSafeInteger(token) || token < 1) throw new InvalidArgumentError('a fencing token must be a positive integer');
    const rec = this.records.get(label);
    if (!rec || rec.deleted || !this.visible(s, rec)) throw new NoSuchKeyError(`certificate ${label}`);
    if (rec.owner !== s.user) throw new PermissionDeniedError(`delete certificate ${label}`, `it belongs to ${rec.owner}'s key`);
    const newest = Math.max(this.leases.newestToken(label), rec.token);
    if (token < newest) throw new StaleLeaseError(label, token, newest);
    const tomb: CertificateRecord = {
      ...rec, chain: [], token, version: rec.version + 1, storedAt: new Date().toISOString(), deleted: true,
    };
    await this.leases.raise(label, token);
    this.records.set(label, tomb);
    await this.save();
    this.ctx.audit({ event: 'certificate.delete', user: s.user, ok: true, certificate: label, token, version: tomb.version });
    return infoOf(tomb);
  }

  /** The certificate `label` (a tombstone, `deleted` and no chain, once deleted), if the session may see its key. */
  get(s: Session, label: string): CertificateInfo {
    requireRole(s, ['CU', 'CO', 'AU'], 'read a certificate');
    checkLeaseName(label);
    const rec = this.records.get(label);
    if (!rec || !this.visible(s, rec)) throw new NoSuchKeyError(`certificate ${label}`);
    return infoOf(rec);
  }

  /** Every record, tombstones included, for a snapshot (backups and clones keep certificates). */
  snapshotRecords(): CertificateRecord[] {
    return [...this.records.values()].map((r) => ({ ...r, chain: [...r.chain] }));
  }

  /** Labels of the certificates the session may see. */
  list(s: Session): string[] {
    requireRole(s, ['CU', 'CO', 'AU'], 'list certificates');
    return [...this.records.values()].filter((r) => !r.deleted && this.visible(s, r)).map((r) => r.label).sort();
  }

  // A certificate is as visible as its key; one whose key is gone stays visible to its owner.
  private visible(s: Session, rec: CertificateRecord): boolean {
    const key = this.ctx.objects.get(rec.keyId);
    return key ? canSee(s, key.attrs) : s.user === rec.owner || s.role !== 'CU';
  }

  private save(): Promise<void> {
    return this.ctx.store.writeTable(CERTIFICATES_TABLE, () => [...this.records.values()]);
  }
}

/** Checks a snapshot's certificate records before any is written (a malformed backup is refused whole). */
export function checkCertificateRecords(v: unknown, what: string): CertificateRecord[] {
  const bad = (why: string): never => { throw new InvalidArgumentError(`${what} holds a malformed certificate object: ${why}`); };
  if (!Array.isArray(v)) return bad('not a list');
  if (v.length > MAX_CERTIFICATES) bad(`more than ${MAX_CERTIFICATES}`);
  for (const r of v as Partial<CertificateRecord>[]) {
    if (!r || typeof r !== 'object') bad('not an object');
    checkLeaseName(r.label);
    if (typeof r.keyId !== 'string' || typeof r.owner !== 'string' || typeof r.note !== 'string' || typeof r.storedAt !== 'string') bad(`${r.label}: missing fields`);
    if (!Number.isSafeInteger(r.token) || !Number.isSafeInteger(r.version)) bad(`${r.label}: token and version must be integers`);
    if (!Array.isArray(r.chain) || r.chain.length > MAX_CHAIN || !r.chain.every((c) => typeof c === 'string')) bad(`${r.label}: the chain is not a list of base64 DER`);
    if (!r.deleted && r.chain!.length === 0) bad(`${r.label}: a live certificate without a chain`);
  }
  return v as CertificateRecord[];
}
