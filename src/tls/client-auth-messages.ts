// Wire codecs of client-certificate authentication: the server's CertificateRequest (TLS 1.3
// RFC 8446 §4.3.2; TLS 1.2 RFC 5246 §7.4.4) and the client's Certificate and CertificateVerify.
import { fatal } from './alert.js';
import { Reader, Writer } from './codec.js';
import { writeExtension } from './extensions.js';
import { HandshakeType } from './messages.js';
import { MAX_CLIENT_CHAIN } from './client-auth.js';

/** certificate_authorities extension (RFC 8446 §4.2.4). */
const EXT_CERTIFICATE_AUTHORITIES = 47;
/** Largest certificate_authorities list we send; a bigger CA bundle is announced without names. */
const MAX_AUTHORITIES_BYTES = 16 * 1024;

function message(type: number, body: (w: Writer) => void): Buffer {
  const w = new Writer(512);
  w.u8(type).lengthPrefixed(3, body);
  return w.finish();
}

function authoritiesFit(authorities: readonly Buffer[]): boolean {
  return authorities.length > 0 && authorities.reduce((n, a) => n + a.length + 2, 0) <= MAX_AUTHORITIES_BYTES;
}

/** TLS 1.3 CertificateRequest: empty context, signature_algorithms, certificate_authorities. */
export function encodeCertificateRequest13(schemes: readonly number[], authorities: readonly Buffer[]): Buffer {
  return message(HandshakeType.certificate_request, (w) => {
    w.u8(0).lengthPrefixed(2, (e) => {
      writeExtension(
        e, 13 /* signature_algorithms */, (b) => b.lengthPrefixed(2, (l) => schemes.forEach((s) => l.u16(s))),
      );
      if (authoritiesFit(authorities)) {
        writeExtension(
          e, EXT_CERTIFICATE_AUTHORITIES, (b) => b.lengthPrefixed(2, (l) => authorities.forEach((a) => l.vec16(a))),
        );
      }
    });
  });
}

/** TLS 1.2 ClientCertificateType values we accept (RFC 5246 §7.4.4, RFC 8422 §5.5). */
const CERT_TYPE_RSA_SIGN = 1;
const CERT_TYPE_ECDSA_SIGN = 64;

/** TLS 1.2 CertificateRequest: certificate types, signature_algorithms, CA names. */
export function encodeCertificateRequest12(schemes: readonly number[], authorities: readonly Buffer[]): Buffer {
  return message(HandshakeType.certificate_request, (w) => {
    w.vec8(Buffer.from([CERT_TYPE_RSA_SIGN, CERT_TYPE_ECDSA_SIGN]));
    w.lengthPrefixed(2, (l) => schemes.forEach((s) => l.u16(s)));
    w.lengthPrefixed(2, (l) => { if (authoritiesFit(authorities)) authorities.forEach((a) => l.vec16(a)); });
  });
}

function readEntries(list: Reader, withExtensions: boolean): Buffer[] {
  const chain: Buffer[] = [];
  while (list.remaining > 0) {
    if (chain.length === MAX_CLIENT_CHAIN) throw fatal('bad_certificate', `client sent more than ${MAX_CLIENT_CHAIN} certificates`);
    const der = list.vec24('certificate');
    if (der.length === 0) throw fatal('decode_error', 'empty certificate in the client Certificate message');
    // Per-entry extensions (OCSP, SCT) are not requested by us, so none may appear (RFC 8446 §4.4.2).
    if (withExtensions && list.vec16('certificate extensions').length > 0) throw fatal('unsupported_extension', 'client certificate entry carries extensions we did not request');
    chain.push(der);
  }
  return chain;
}

/** TLS 1.3 client Certificate body: the context must echo ours (empty); returns the DER chain (may be empty). */
export function decodeClientCertificate13(body: Buffer): Buffer[] {
  const r = new Reader(body);
  if (r.vec8('certificate_request_context').length !== 0) throw fatal('illegal_parameter', 'client Certificate context differs from the CertificateRequest');
  const chain = readEntries(r.sub(3, 'certificate_list'), true);
  r.expectEnd('Certificate');
  return chain;
}

/** TLS 1.2 client Certificate body: a u24 list of u24 certificates (may be empty). */
export function decodeClientCertificate12(body: Buffer): Buffer[] {
  const r = new Reader(body);
  const chain = readEntries(r.sub(3, 'certificate_list'), false);
  r.expectEnd('Certificate');
  return chain;
}

/** CertificateVerify body (both versions): scheme and signature. */
export function decodeCertificateVerify(body: Buffer): { scheme: number; signature: Buffer } {
  const r = new Reader(body);
  const scheme = r.u16('signature scheme');
  const signature = r.vec16('signature');
  r.expectEnd('CertificateVerify');
  if (signature.length === 0) throw fatal('decode_error', 'empty CertificateVerify signature');
  return { scheme, signature };
}
