// Errors of pki/: one base class with a stable PKI_ERR_* code and a subclass per failure.

/** Base class of every error pki/ throws. */
export class PkiError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
    this.name = 'PkiError';
  }
}

/** A subject distinguished name that does not parse. */
export class SubjectSyntaxError extends PkiError {
  constructor(subject: string, reason: string) {
    super(`bad --subject "${subject}": ${reason} (example: "CN=example.com,O=Example Ltd,C=GB"; escape , + = \\ with a backslash)`, 'PKI_ERR_SUBJECT');
    this.name = 'SubjectSyntaxError';
  }
}

/** A subjectAltName entry that does not parse or has an unknown type. */
export class SanSyntaxError extends PkiError {
  constructor(entry: string, reason: string) {
    super(`bad --san entry "${entry}": ${reason} (use DNS:name, IP:address, email:address or URI:uri)`, 'PKI_ERR_SAN');
    this.name = 'SanSyntaxError';
  }
}

/** A certificate or CSR file that is not what it should be. */
export class MalformedInputError extends PkiError {
  constructor(file: string, reason: string) {
    super(`${file}: ${reason}`, 'PKI_ERR_MALFORMED');
    this.name = 'MalformedInputError';
  }
}

/** A CSR whose self-signature does not verify: it was altered, or not made with the key it names. */
export class CsrSignatureError extends PkiError {
  constructor(file: string) {
    super(`${file}: the CSR's signature does not verify (altered, or not signed by the key it carries); refusing to sign it`, 'PKI_ERR_CSR_SIGNATURE');
    this.name = 'CsrSignatureError';
  }
}

/** The CA key and CA certificate do not belong together, or the certificate is not a CA. */
export class CaError extends PkiError {
  constructor(message: string) {
    super(message, 'PKI_ERR_CA');
    this.name = 'CaError';
  }
}

/** Bad option values (days, profile). */
export class PkiOptionError extends PkiError {
  constructor(message: string) {
    super(message, 'PKI_ERR_OPTION');
    this.name = 'PkiOptionError';
  }
}
