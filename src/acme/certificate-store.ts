// Where a proxy finds the current certificate of each ACME name, takes the right to order it, and
// publishes the challenges of its order so that any proxy of the cluster answers the CA. Three
// homes: files under acme.dir (one proxy; FileCertificateStore), the simulated HSM cluster (many
// proxies; cluster-store.ts: certificate objects, a majority lease with fencing tokens) and PKCS#11
// tokens (CKO_CERTIFICATE objects; one proxy is the orderer). The manager keeps its files under
// acme.dir as the local cache the listeners load from, whichever store is the source of truth.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { certificateDir, readState } from './store.js';

/** One issue of a certificate as the store holds it. */
export interface StoredCertificate {
  /** The certificate's name (its first DNS name). */
  name: string;
  names: string[];
  keyType: string;
  /** The HSM key it certifies (cluster-wide key id) and that key's label. */
  keyId: string;
  keyLabel: string;
  /** Leaf first, then the CA's intermediates (PEM). */
  chainPem: string;
  /** The ACME account URL that ordered it. */
  account: string;
  orderedAt: string;
}

/** A pending challenge as the cluster publishes it: never a private key, only what the CA checks. */
export type PublishedChallenge =
  | { type: 'tls-alpn-01'; name: string; keyAuthorization: string }
  | { type: 'http-01'; token: string; keyAuthorization: string };

/** The right to order one certificate, held until `release` or until its time runs out. */
export interface OrderLease {
  readonly name: string;
  /** The fencing token: strictly increasing per name; a store refuses results of older ones. */
  readonly token: number;
  /** Extends the lease; rejects when it was lost (expired and taken by another proxy). */
  renew(): Promise<void>;
  /** Replaces the challenges published for this order (an empty list withdraws them). */
  publish(challenges: PublishedChallenge[]): Promise<void>;
  /** Gives the lease up (withdrawing its challenges). */
  release(): Promise<void>;
}

/** The source of truth for ACME certificates shared by the proxies that use it. */
export interface CertificateStore {
  /** 'file', 'cluster', 'pkcs11': for logs and `acme status`. */
  readonly kind: string;
  /**
   * Whether other proxies use this store too: the manager then takes up what they stored (at
   * start, every 10 s, at once on SIGHUP) and orders only what is due there.
   */
  readonly shared: boolean;
  /**
   * Whether orders publish their challenges here for every proxy to answer (and so wait for the
   * others to look before the CA validates). The files do not; the cluster does, and so does a
   * PKCS#11 token (the orderer's challenges as CKO_DATA objects, pkcs11-store.ts).
   */
  readonly sharesChallenges: boolean;
  /** The current issue of `name`, or undefined when none was stored. */
  read(name: string): Promise<StoredCertificate | undefined>;
  /** Takes the order lease of `name` for `ttlMs`; undefined when another proxy holds it. */
  acquire(name: string, ttlMs: number): Promise<OrderLease | undefined>;
  /** Stores a new issue under `lease`; rejects (AcmeFencedError) when a newer lease was granted meanwhile. */
  write(lease: OrderLease, cert: StoredCertificate): Promise<void>;
  /** Challenges that orders anywhere in the cluster are waiting on (this process answers them too). */
  pendingChallenges(): Promise<PublishedChallenge[]>;
  close(): Promise<void>;
}

/**
 * The files under acme.dir as the store: one proxy (or proxies sharing the directory and ordering
 * nothing at the same time). Every lease is granted (nobody else orders), challenges stay in the
 * ordering process, and the manager's own files are what is read.
 */
export class FileCertificateStore implements CertificateStore {
  readonly kind = 'file';
  readonly shared = false;
  readonly sharesChallenges = false;
  private token = 0;

  constructor(private readonly acmeDir: string) {}

  async read(name: string): Promise<StoredCertificate | undefined> {
    const dir = certificateDir(this.acmeDir, name);
    const state = await readState(dir);
    const cur = state?.current;
    if (!state || !cur) return undefined;
    return {
      name, names: state.names, keyType: state.keyType, keyId: cur.keyId, keyLabel: cur.keyLabel,
      chainPem: await readFile(join(dir, cur.chainFile), 'utf8'), account: cur.account, orderedAt: cur.orderedAt,
    };
  }

  acquire(name: string): Promise<OrderLease> {
    const token = ++this.token;
    return Promise.resolve({
      name, token,
      renew: () => Promise.resolve(),
      publish: () => Promise.resolve(),
      release: () => Promise.resolve(),
    });
  }

  /** The manager's files are this store: they are written by the manager itself. */
  write(): Promise<void> {
    return Promise.resolve();
  }

  pendingChallenges(): Promise<PublishedChallenge[]> {
    return Promise.resolve([]);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
