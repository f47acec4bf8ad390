// Certificate signing requests made with an HSM key, and reading/verifying CSRs from files.
import * as x509 from './x509.js';
import { AsnConvert } from '@peculiar/asn1-schema';
import { CertificationRequest } from '@peculiar/asn1-csr';
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

const CSR_PEM = /-----BEGIN (NEW )?CERTIFICATE REQUEST-----([^-]*)-----END \1CERTIFICATE REQUEST-----/;

/**
 * Parses a PEM CSR, refusing anything but a DER CertificationRequest (RFC 2986): an issuing CA
 * must not sign what other tools would read differently. Text around the PEM block is ignored;
 * errors name the file.
 */
export function parseCsr(data: string | Buffer, file: string): x509.Pkcs10CertificateRequest {
  const text = Buffer.isBuffer(data) ? data.toString('latin1') : data;
  const block = CSR_PEM.exec(text);
  if (!block) throw new MalformedInputError(file, 'not a PEM certificate signing request (expected "-----BEGIN CERTIFICATE REQUEST-----" ... "-----END CERTIFICATE REQUEST-----")');
  const der = pemBody(block[2]!, file);
  let reencoded: Buffer;
  try {
    reencoded = Buffer.from(AsnConvert.serialize(AsnConvert.parse(der, CertificationRequest)));
  } catch (err) {
    throw new MalformedInputError(file, `the certificate signing request does not parse (${(err as Error).message})`);
  }
  // The schema decoder tolerates wrong tags, trailing bytes and BER lengths; DER has exactly
  // one encoding per value, so re-encoding must give back the very same bytes.
  if (!reencoded.equals(der)) throw new MalformedInputError(file, `not a DER certificate signing request (RFC 2986): ${derMismatch(der, reencoded)}; refusing it (ask for a CSR made by a standard tool, e.g. openssl req -new)`);
  try {
    return new x509.Pkcs10CertificateRequest(new Uint8Array(der));
  } catch (err) {
    throw new MalformedInputError(file, `the certificate signing request does not parse (${(err as Error).message})`);
  }
}

/** Decodes a PEM body; refuses anything but canonical base64 (so it stands for exactly one DER). */
function pemBody(body: string, file: string): Buffer {
  const b64 = body.replace(/\s+/g, '');
  const der = Buffer.from(b64, 'base64');
  // Buffer.from skips characters it does not know, stops at '=' and ignores stray bits:
  // only canonical base64 encodes back to itself.
  if (der.toString('base64') !== b64) {
    throw new MalformedInputError(file, 'the body of the CERTIFICATE REQUEST block is not valid base64');
  }
  return der;
}

/** Says how `der` differs from the DER encoding of what it decodes to. */
function derMismatch(der: Buffer, reencoded: Buffer): string {
  if (der.length > reencoded.length && der.subarray(0, reencoded.length).equals(reencoded)) {
    return `${der.length - reencoded.length} byte(s) follow the end of the CSR`;
  }
  if (der.length !== reencoded.length) {
    // Every later offset shifts, so a first differing byte would point at an enclosing length.
    return `it is ${der.length} bytes long where its DER encoding is ${reencoded.length} (a long-form or non-minimal length, or another non-DER encoding)`;
  }
  let at = 0;
  while (der[at] === reencoded[at]) at++;
  const hex = (b: number): string => `0x${b.toString(16).padStart(2, '0')}`;
  return `byte ${at} is ${hex(der[at]!)} where DER has ${hex(reencoded[at]!)} (a wrong tag or another non-DER encoding)`;
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
