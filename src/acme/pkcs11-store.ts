// A PKCS#11 token as the CertificateStore of the proxies that share it (hsm.mode pkcs11). Per
// certificate NAME, beside its key (all private token objects: only a logged-in user sees or makes them):
//   - the leaf: CKO_CERTIFICATE, CKC_X_509, CKA_LABEL "acme/NAME", CKA_ID equal to the key's CKA_ID
//     (so PKCS#11 tools pair it with its key), CKA_VALUE the DER, category 1 (token user);
//   - each intermediate the CA sent: CKO_CERTIFICATE, CKA_LABEL "acme/NAME chain", category 2
//     (authority), CKA_ID the SHA-1 of its public key (never the leaf key's, so no tool pairs it
//     with that key);
//   - a CKO_DATA object (CKA_APPLICATION "hsmproxy acme", CKA_LABEL "acme/NAME") with what the
//     certificate does not say: serial, names, key type and label, ordering account, when. It is
//     written after the certificates, so a reader takes the newest issue that has one.
// A token offers no compare-and-set to lease an order with: one proxy is the orderer
// (acme.orderer: true) and only it gets leases; the others only read. The orderer publishes its
// pending challenges as CKO_DATA objects (CKA_APPLICATION "hsmproxy acme challenges"), so the CA's
// validation may reach any proxy sharing the token.
import 'reflect-metadata'; // @peculiar/x509 needs it loaded first
import { createHash, X509Certificate } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import type { Pkcs11Backend } from '../engine/pkcs11/backend.js';
import { findCertificates, findData, replaceObjects, destroyObjects, type CertificateObject } from '../engine/pkcs11/objects.js';
import type { CertificateStore, OrderLease, PublishedChallenge, StoredCertificate } from './certificate-store.js';
import { AcmeError, AcmeFencedError } from './errors.js';

const APPLICATION = 'hsmproxy acme';
const CHALLENGES = 'hsmproxy acme challenges';
const leafLabel = (name: string): string => `acme/${name}`;
const chainLabel = (name: string): string => `acme/${name} chain`;

/** The data object of one issue. */
interface IssueNote {
  serial: string; names: string[]; keyType: string; keyLabel: string; account: string; orderedAt: string;
}

/** The DER INTEGER of a certificate serial given in hex. */
function serialDer(hex: string): Buffer {
  let body = Buffer.from(hex.length % 2 ? `0${hex}` : hex, 'hex');
  if (body.length === 0 || body[0]! >= 0x80) body = Buffer.concat([Buffer.from([0]), body]);
  return Buffer.concat([Buffer.from([0x02, body.length]), body]);
}

/** A certificate as a CKO_CERTIFICATE object. */
function certificateObject(der: Buffer, label: string, id: Buffer, category: 1 | 2): CertificateObject {
  const cert = new x509.X509Certificate(der);
  return {
    label, id, der, category,
    subject: Buffer.from(cert.subjectName.toArrayBuffer()), issuer: Buffer.from(cert.issuerName.toArrayBuffer()),
    serial: serialDer(cert.serialNumber),
  };
}

/** An authority's CKA_ID: SHA-1 of its public key (as a subject key identifier usually is). */
function publicKeyId(der: Buffer): Buffer {
  return createHash('sha1').update(new X509Certificate(der).publicKey.export({ type: 'spki', format: 'der' })).digest();
}

const pemOf = (der: Buffer): string => `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END CERTIFICATE-----\n`;

/** Certificates of an ACME chain PEM, leaf first. */
function chainDers(pem: string): Buffer[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((b) => Buffer.from(new X509Certificate(b).raw));
}

/** Certificates, an orderer's leases and its published challenges, on one PKCS#11 token. */
export class Pkcs11CertificateStore implements CertificateStore {
  readonly kind = 'pkcs11';
  readonly shared = true;
  /** The orderer publishes its challenges on the token (CKO_DATA), so every proxy answers them. */
  readonly sharesChallenges = true;
  private newest = 0;

  /** `orderer`: acme.orderer (only the orderer is ever granted a lease). */
  constructor(private readonly backend: Pkcs11Backend, readonly orderer: boolean) {}

  private get token(): Pkcs11Backend['token'] { return this.backend.token; }

  async read(name: string): Promise<StoredCertificate | undefined> {
    try {
      const [leaves, notes, authorities] = await Promise.all([
        findCertificates(this.token, leafLabel(name)),
        findData(this.token, APPLICATION, leafLabel(name)),
        findCertificates(this.token, chainLabel(name)),
      ]);
      const parsed = notes.flatMap((n) => {
        try { return [JSON.parse(n.value.toString('utf8')) as IssueNote]; } catch { return []; }
      }).sort((a, b) => Date.parse(b.orderedAt) - Date.parse(a.orderedAt));
      for (const note of parsed) {
        const leaf = leaves.find((l) => new X509Certificate(l.der).serialNumber === note.serial);
        if (!leaf) continue; // an issue being replaced: its leaf is already gone
        // The leaf must certify the token key its CKA_ID names (else it is not an issue of ours).
        const key = await this.backend.find(leaf.id.toString('hex')).catch(() => undefined);
        if (!key?.publicKey.equals(new X509Certificate(leaf.der).publicKey)) continue;
        return {
          name, names: note.names, keyType: note.keyType, keyId: leaf.id.toString('hex'), keyLabel: note.keyLabel,
          chainPem: [leaf.der, ...chainOf(leaf.der, authorities.map((a) => a.der))].map(pemOf).join(''),
          account: note.account, orderedAt: note.orderedAt,
        };
      }
      return undefined;
    } catch (err) {
      throw new AcmeError(`reading certificate ${name} from the PKCS#11 token failed: ${(err as Error).message}`, 'ACME_ERR_STORE', { cause: err });
    }
  }

  /** The orderer always gets the lease (it is the only one ordering); every other proxy never does. */
  acquire(name: string, ttlMs: number): Promise<OrderLease | undefined> {
    if (!this.orderer) return Promise.resolve(undefined);
    const token = ++this.newest;
    let published: PublishedChallenge[] = [];
    const publish = async (list: PublishedChallenge[]): Promise<void> => {
      published = list;
      const sel = { certificateLabels: [], data: { application: CHALLENGES, labels: [leafLabel(name)] } };
      if (list.length === 0) return destroyObjects(this.token, sel);
      // Expiring like a lease, so a crashed orderer's challenges are ignored once it is gone.
      const value = Buffer.from(JSON.stringify({ expires: Date.now() + ttlMs, challenges: list }));
      return replaceObjects(this.token, sel, [], [{ application: CHALLENGES, label: leafLabel(name), value }]);
    };
    return Promise.resolve({
      name, token,
      renew: () => (published.length > 0 ? publish(published) : Promise.resolve()),
      publish,
      release: () => publish([]),
    });
  }

  async write(lease: OrderLease, cert: StoredCertificate): Promise<void> {
    if (!this.orderer) throw new AcmeError('only the proxy with acme.orderer: true stores certificates on the token', 'ACME_ERR_STORE');
    if (lease.token !== this.newest) throw new AcmeFencedError(`certificate ${cert.name}: a newer order of it started meanwhile; this result is not stored`);
    const [leaf, ...intermediates] = chainDers(cert.chainPem);
    if (!leaf) throw new AcmeError(`certificate ${cert.name}: no certificate to store`, 'ACME_ERR_STORE');
    const note: IssueNote = {
      serial: new X509Certificate(leaf).serialNumber, names: cert.names, keyType: cert.keyType, keyLabel: cert.keyLabel,
      account: cert.account, orderedAt: cert.orderedAt,
    };
    const objects = [
      certificateObject(leaf, leafLabel(cert.name), Buffer.from(cert.keyId, 'hex'), 1),
      ...intermediates.map((der) => certificateObject(der, chainLabel(cert.name), publicKeyId(der), 2)),
    ];
    try {
      const replaced = {
        certificateLabels: [leafLabel(cert.name), chainLabel(cert.name)],
        data: { application: APPLICATION, labels: [leafLabel(cert.name)] },
      };
      const value = Buffer.from(JSON.stringify(note));
      const noteObject = { application: APPLICATION, label: leafLabel(cert.name), value };
      await replaceObjects(this.token, replaced, objects, [noteObject]);
    } catch (err) {
      throw new AcmeError(`storing certificate ${cert.name} on the PKCS#11 token failed: ${(err as Error).message}`, 'ACME_ERR_STORE', { cause: err });
    }
  }

  async pendingChallenges(): Promise<PublishedChallenge[]> {
    const now = Date.now();
    return (await findData(this.token, CHALLENGES)).flatMap((d) => {
      try {
        const doc = JSON.parse(d.value.toString('utf8')) as { expires?: number; challenges?: PublishedChallenge[] };
        const live = typeof doc.expires === 'number' && doc.expires > now;
        return live && Array.isArray(doc.challenges) ? doc.challenges : [];
      } catch {
        return [];
      }
    });
  }

  /** The token belongs to the engine (the listeners sign on it): nothing to close here. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** The intermediates that chain `leaf` upward (each the issuer of the one before, by signature). */
function chainOf(leaf: Buffer, authorities: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  let current = new X509Certificate(leaf);
  const pool = authorities.map((der) => ({ der, cert: new X509Certificate(der) }));
  for (let i = 0; i < 8; i++) {
    const issuer = current;
    const signs = (p: { der: Buffer; cert: X509Certificate }): boolean => !out.includes(p.der)
      && p.cert.subject === issuer.issuer && issuer.verify(p.cert.publicKey);
    const next = pool.find(signs);
    if (!next) break;
    out.push(next.der);
    if (next.cert.subject === next.cert.issuer) break;
    current = next.cert;
  }
  return out;
}
