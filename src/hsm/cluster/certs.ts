// Certificates of a cluster, made with @peculiar/x509 over node's WebCrypto: the customer CA
// (self-signed root), the cluster certificate (its CSR signed by the customer CA), node
// certificates (signed by the cluster key, SAN the node's host + 127.0.0.1, ::1, localhost) and the client
// certificate (signed by the customer CA). All keys are ECDSA P-256.
// @peculiar/x509 resolves its ASN.1 schemas through tsyringe, which needs this polyfill loaded first.
import 'reflect-metadata';
import { createHash, randomBytes, webcrypto } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';

// Passed explicitly to every @peculiar/x509 call, so no process-wide provider is set here.
const crypto = webcrypto;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const YEAR_MS = 365 * 24 * 3600 * 1000;

/** A certificate with its key pair. */
export interface Issued {
  cert: x509.X509Certificate;
  keys: CryptoKeyPair;
}

async function newKeys(): Promise<CryptoKeyPair> {
  return (await crypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
}

function serial(): string {
  const b = randomBytes(16);
  b[0] = (b[0] as number) & 0x7f; // positive INTEGER
  return b.toString('hex');
}

function validity(years: number): { notBefore: Date; notAfter: Date } {
  const now = Date.now();
  return { notBefore: new Date(now - 60_000), notAfter: new Date(now + years * YEAR_MS) };
}

/** The customer's root CA (self-signed). */
export async function createCustomerCa(): Promise<Issued> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(), name: 'CN=hsmproxy customer CA, O=hsmproxy', ...validity(20), signingAlgorithm: ALG, keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 1, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
    ],
  }, crypto);
  return { cert, keys };
}

/** The cluster key pair, its CSR, and the certificate the customer CA issues from that CSR. */
export async function createClusterCert(ca: Issued): Promise<Issued & { csr: x509.Pkcs10CertificateRequest }> {
  const keys = await newKeys();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: 'CN=hsmproxy cluster, O=hsmproxy', keys, signingAlgorithm: ALG }, crypto);
  if (!(await csr.verify(crypto))) throw new Error('the cluster CSR does not verify');
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(), subject: csr.subject, issuer: ca.cert.subject, ...validity(10), signingAlgorithm: ALG,
    publicKey: csr.publicKey, signingKey: ca.keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(csr.publicKey, false, crypto),
      await x509.AuthorityKeyIdentifierExtension.create(ca.keys.publicKey, false, crypto),
    ],
  }, crypto);
  return { cert, keys, csr };
}

/** Whether `host` can name an HSM node: an IP address or a DNS name. */
export function isNodeHost(host: string): boolean {
  return isIP(host) !== 0 || (host.length <= 253 && /^(?=.*[a-z])([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i.test(host));
}

/**
 * An HSM node's TLS server certificate, issued by the cluster key. It names `host` (the address
 * in the manifest, which clients verify; an IP or a DNS name) besides the loopback names.
 */
export async function createNodeCert(cluster: Issued, hsmId: string, host = '127.0.0.1'): Promise<Issued> {
  const names: Array<{ type: 'ip' | 'dns'; value: string }> = [{ type: 'ip', value: '127.0.0.1' }, { type: 'ip', value: '::1' }, { type: 'dns', value: 'localhost' }];
  const own = { type: isIP(host) ? 'ip' as const : 'dns' as const, value: host.toLowerCase() };
  if (!names.some((n) => n.type === own.type && n.value === own.value)) names.unshift(own);
  return leaf(cluster, `CN=${hsmId}, O=hsmproxy cluster`, x509.ExtendedKeyUsage.serverAuth, [new x509.SubjectAlternativeNameExtension(names)]);
}

/**
 * A client certificate presented to HSMs, issued by the customer CA: the cluster's own (the CLI's)
 * or one proxy's, whose `name` (letters, digits, '.', '_', '-') is its subject's CN.
 */
export async function createClientCert(ca: Issued, name = 'hsmproxy client'): Promise<Issued> {
  if (!/^[A-Za-z0-9._ -]{1,64}$/.test(name)) throw new RangeError(`a client certificate name is 1-64 letters, digits, '.', '_', '-' or spaces, got "${name}"`);
  return leaf(ca, `CN=${name}, O=hsmproxy`, x509.ExtendedKeyUsage.clientAuth, []);
}

/** An issuer (the customer CA, the cluster key) loaded from its certificate and PKCS#8 key files. */
export async function loadIssued(certFile: string, keyFile: string): Promise<Issued> {
  const [certPem, keyPem] = await Promise.all([readFile(certFile, 'utf8'), readFile(keyFile, 'utf8')]);
  const cert = new x509.X509Certificate(certPem);
  const der = Buffer.from(keyPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  const privateKey = await crypto.subtle.importKey('pkcs8', der, ALG, true, ['sign']);
  const publicKey = await cert.publicKey.export(ALG, ['verify'], crypto);
  return { cert, keys: { privateKey, publicKey } as CryptoKeyPair };
}

async function leaf(issuer: Issued, subject: string, eku: string, extra: x509.Extension[]): Promise<Issued> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(), subject, issuer: issuer.cert.subject, ...validity(5), signingAlgorithm: ALG,
    publicKey: keys.publicKey, signingKey: issuer.keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([eku], false),
      await x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey, false, crypto),
      ...extra,
    ],
  }, crypto);
  return { cert, keys };
}

/** PKCS#8 PEM of a private key. */
export async function privateKeyPem(keys: CryptoKeyPair): Promise<string> {
  const der = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey));
  return `-----BEGIN PRIVATE KEY-----\n${der.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END PRIVATE KEY-----\n`;
}

/** The SHA-256 fingerprint (hex) of a certificate: the cluster's id when it is the cluster cert. */
export function fingerprint(cert: x509.X509Certificate): string {
  return createHash('sha256').update(Buffer.from(cert.rawData)).digest('hex');
}
