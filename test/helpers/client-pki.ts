// Client-certificate PKI for mTLS tests, made in-process with @peculiar/x509 (any validity
// window, any extension set): CAs, intermediates and client leaves, written as PEM files for
// openssl/curl and kept as DER + KeyObject for hand-built clients. Temp dir removed by cleanup().
import { KeyObject, X509Certificate, webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '../../src/pki/x509.js';

const subtle = webcrypto.subtle;
const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;
const RSA = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 } as const;
const DAY = 86_400_000;
let serial = 0x1000;

/** A certificate with its private key, as files and objects. */
export interface Issued {
  certFile: string;
  keyFile: string;
  der: Buffer;
  key: KeyObject;
  subject: string;
  /** Internal: the webcrypto key pair that signs what this certificate issues. */
  keys: webcrypto.CryptoKeyPair;
}

export interface IssueOptions {
  cn: string;
  /** Extra RDNs after CN, e.g. "O=Acme". */
  rdn?: string;
  sans?: Array<{ type: 'dns' | 'email' | 'url' | 'ip'; value: string }>;
  /** EKU OIDs; null = no EKU extension. Default clientAuth. */
  eku?: string[] | null;
  /** keyUsage flags; null = none. Default digitalSignature. */
  keyUsage?: number | null;
  ca?: boolean;
  pathLength?: number;
  notBefore?: Date;
  notAfter?: Date;
  keyType?: 'ec' | 'rsa';
  /** Extra extensions (e.g. an unknown critical one). */
  extra?: x509.Extension[];
}

/** A temp dir of test certificates. */
export class ClientPki {
  readonly dir = mkdtempSync(join(tmpdir(), 'hsmproxy-mtls-'));

  /** Creates a self-signed CA. */
  async ca(cn: string, opts: Partial<IssueOptions> = {}): Promise<Issued> {
    return this.issue(undefined, { cn, ca: true, eku: null, keyUsage: x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, ...opts });
  }

  /** Issues a certificate signed by `issuer` (self-signed when undefined). */
  async issue(issuer: Issued | undefined, o: IssueOptions): Promise<Issued> {
    const rsa = o.keyType === 'rsa';
    const keys = await subtle.generateKey(rsa ? RSA : EC, true, ['sign', 'verify']) as webcrypto.CryptoKeyPair;
    const name = `CN=${o.cn}${o.rdn ? `, ${o.rdn}` : ''}`;
    const extensions: x509.Extension[] = [new x509.BasicConstraintsExtension(o.ca ?? false, o.pathLength, true)];
    const ku = o.keyUsage === undefined ? x509.KeyUsageFlags.digitalSignature : o.keyUsage;
    if (ku !== null) extensions.push(new x509.KeyUsagesExtension(ku, true));
    const eku = o.eku === undefined ? [x509.ExtendedKeyUsage.clientAuth] : o.eku;
    if (eku !== null) extensions.push(new x509.ExtendedKeyUsageExtension(eku, false));
    if (o.sans?.length) extensions.push(new x509.SubjectAlternativeNameExtension(o.sans));
    extensions.push(...(o.extra ?? []));
    const now = Date.now();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: (serial++).toString(16), subject: name, issuer: issuer?.subject ?? name,
      notBefore: o.notBefore ?? new Date(now - DAY), notAfter: o.notAfter ?? new Date(now + 2 * DAY),
      publicKey: keys.publicKey, signingKey: (issuer?.keys ?? keys).privateKey,
      signingAlgorithm: issuer ? this.alg(issuer) : rsa ? RSA : SIGN, extensions,
    });
    const der = Buffer.from(cert.rawData);
    const base = `${o.cn.replace(/\W+/g, '_')}-${serial}`;
    const certFile = join(this.dir, `${base}.crt`);
    const keyFile = join(this.dir, `${base}.key`);
    writeFileSync(certFile, new X509Certificate(der).toString());
    const key = KeyObject.from(keys.privateKey);
    writeFileSync(keyFile, key.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
    return { certFile, keyFile, der, key, subject: name, keys };
  }

  private alg(issuer: Issued): typeof SIGN | typeof RSA {
    return issuer.keys.privateKey.algorithm.name === 'ECDSA' ? SIGN : RSA;
  }

  /** Writes a PEM file holding these certificates (a chain or a CA bundle). */
  bundle(name: string, certs: Issued[]): string {
    const file = join(this.dir, name);
    writeFileSync(file, certs.map((c) => new X509Certificate(c.der).toString()).join(''));
    return file;
  }

  cleanup(): void { rmSync(this.dir, { recursive: true, force: true }); }
}
