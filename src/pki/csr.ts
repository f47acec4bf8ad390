// Certificate signing requests made with an HSM key, and reading/verifying CSRs from files.
import * as x509 from './x509.js';
import { webcrypto } from 'node:crypto';
import { CsrSignatureError, MalformedInputError } from './errors.js';
import { parseSans, parseSubject } from './names.js';
import type { SigningKey } from './signing-key.js';

/** What goes into a CSR. */
export interface CsrOptions {
  subject: string;
  /** SAN arguments as typed ("DNS:a,IP:1.2.3.4"). */
  sans?: readonly string[];
  /** Extra requested extensions (e.g. basicConstraints for a CA CSR). */
  extensions?: x509.Extension[];
}

/** Builds a PKCS#10 CSR signed in the HSM; returns PEM. */
export async function createCsr(key: SigningKey, opts: CsrOptions): Promise<string> {
  const name = parseSubject(opts.subject);
  const sans = parseSans(opts.sans ?? []);
  const extensions: x509.Extension[] = [...(opts.extensions ?? [])];
  if (sans.length) extensions.push(new x509.SubjectAlternativeNameExtension(sans));
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      name,
      keys: { privateKey: key.privateKey as unknown as webcrypto.CryptoKey, publicKey: key.publicKey },
      signingAlgorithm: key.params,
      extensions,
    },
    key.crypto,
  );
  return csr.toString('pem') + '\n';
}

/** Parses a PEM (or DER) CSR; errors name the file. */
export function parseCsr(data: string | Buffer, file: string): x509.Pkcs10CertificateRequest {
  const text = Buffer.isBuffer(data) ? data.toString('latin1') : data;
  if (!/-----BEGIN (NEW )?CERTIFICATE REQUEST-----/.test(text)) throw new MalformedInputError(file, 'not a PEM certificate signing request (expected "-----BEGIN CERTIFICATE REQUEST-----")');
  try {
    return new x509.Pkcs10CertificateRequest(text.replace(/NEW CERTIFICATE REQUEST/g, 'CERTIFICATE REQUEST'));
  } catch (err) {
    throw new MalformedInputError(file, `the certificate signing request does not parse (${(err as Error).message})`);
  }
}

/** Checks a CSR's self-signature; throws CsrSignatureError if it does not verify. */
export async function verifyCsr(csr: x509.Pkcs10CertificateRequest, file: string): Promise<void> {
  let ok = false;
  try {
    ok = await csr.verify(webcrypto as Parameters<x509.Pkcs10CertificateRequest['verify']>[0]);
  } catch {
    ok = false;
  }
  if (!ok) throw new CsrSignatureError(file);
}

const SUBJECT_ALT_NAME_OID = '2.5.29.17';

/** The SAN entries a CSR requests (from its extensionRequest attribute), as @peculiar JSON. */
export function csrSans(csr: x509.Pkcs10CertificateRequest): x509.JsonGeneralNames {
  const ext = csr.getExtension(SUBJECT_ALT_NAME_OID);
  if (!ext) return [];
  return new x509.SubjectAlternativeNameExtension(ext.rawData).names.toJSON();
}
