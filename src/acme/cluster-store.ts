// The simulated HSM cluster as the CertificateStore of many proxies: each certificate is a
// certificate object beside its HSM key (label `acme/NAME`), the right to order it is a majority
// lease with a fencing token (hsm/client/leases.ts), and the challenges of an order are published
// beside the lease, where every proxy (and worker) of the cluster polls them.
import { hostname } from 'node:os';
import { randomBytes, X509Certificate } from 'node:crypto';
import type { ClusterClient } from '../hsm/client/cluster-client.js';
import { ClusterLeases, type ClusterLease } from '../hsm/client/leases.js';
import type { CertificateStore, OrderLease, PublishedChallenge, StoredCertificate } from './certificate-store.js';
import { AcmeError, AcmeFencedError } from './errors.js';

const PREFIX = 'acme/';

/** What a certificate object's note carries besides the chain and key. */
interface Note { names: string[]; keyType: string; keyLabel: string; account: string; orderedAt: string }

const pemOf = (der: Buffer): string => `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END CERTIFICATE-----\n`;

/** A name for this process as a lease holder: host, pid and a random part (a restarted pid is another holder). */
export function leaseHolder(): string {
  return `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
}

/** Certificates, order leases and challenges kept in the simulated HSM cluster. */
export class ClusterCertificateStore implements CertificateStore {
  readonly kind = 'cluster';
  readonly shared = true;
  readonly sharesChallenges = true;
  private readonly leases: ClusterLeases;

  constructor(client: ClusterClient, readonly holder: string = leaseHolder()) {
    this.leases = new ClusterLeases(client);
  }

  async read(name: string): Promise<StoredCertificate | undefined> {
    const info = await this.leases.getCertificate(PREFIX + name).catch((err: unknown) => {
      throw new AcmeError(`reading certificate ${name} from the HSM cluster failed: ${(err as Error).message}`, 'ACME_ERR_STORE', { cause: err });
    });
    if (!info) return undefined;
    let note: Partial<Note>;
    try {
      note = JSON.parse(info.note) as Partial<Note>;
    } catch {
      note = {};
    }
    const chainPem = info.chain.map(pemOf).join('');
    const names = Array.isArray(note.names) ? note.names.map(String) : (new X509Certificate(info.chain[0]!).subjectAltName ?? '').split(/,\s*/).filter((s) => s.startsWith('DNS:')).map((s) => s.slice(4));
    return {
      name, names, keyType: String(note.keyType ?? ''), keyId: info.keyId, keyLabel: String(note.keyLabel ?? ''),
      chainPem, account: String(note.account ?? ''), orderedAt: String(note.orderedAt ?? info.storedAt),
    };
  }

  async acquire(name: string, ttlMs: number): Promise<OrderLease | undefined> {
    const got = await this.leases.acquire(PREFIX + name, this.holder, ttlMs);
    if (!('token' in got)) return undefined;
    const lease: ClusterLease = got;
    return {
      name, token: lease.token,
      renew: () => this.leases.renew(lease),
      publish: (challenges) => this.leases.renew(lease, challenges),
      release: () => this.leases.release(lease),
    };
  }

  async write(lease: OrderLease, cert: StoredCertificate): Promise<void> {
    const blocks = cert.chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    const chain = blocks.map((b) => Buffer.from(new X509Certificate(b).raw));
    const note: Note = {
      names: cert.names, keyType: cert.keyType, keyLabel: cert.keyLabel,
      account: cert.account, orderedAt: cert.orderedAt,
    };
    try {
      await this.leases.storeCertificate({
        label: PREFIX + cert.name, keyId: cert.keyId, chain, token: lease.token, note: JSON.stringify(note),
      });
    } catch (err) {
      const message = (err as Error).message;
      if ((err as { code?: unknown }).code === 'HSM_ERR_STALE_LEASE') {
        throw new AcmeFencedError(`${cert.name}: this proxy's order lease (token ${lease.token}) lapsed and another proxy took it over; its certificate was not stored (${message})`, { cause: err });
      }
      throw new AcmeError(`storing certificate ${cert.name} in the HSM cluster failed: ${message}`, 'ACME_ERR_STORE', { cause: err });
    }
  }

  async pendingChallenges(): Promise<PublishedChallenge[]> {
    const live = await this.leases.list();
    return live.filter((l) => l.name.startsWith(PREFIX)).flatMap((l) => l.challenges);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
