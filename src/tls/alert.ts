// TLS alerts and the one error type the TLS core throws. Every protocol violation becomes a
// TlsAlertError carrying the alert RFC 8446 §6 names; one place (the connection) turns it into
// the fatal alert on the wire.

/** AlertDescription values (RFC 8446 §6, RFC 5246 §7.2, RFC 8446 §6.2). */
export const AlertDescription = {
  close_notify: 0,
  unexpected_message: 10,
  bad_record_mac: 20,
  record_overflow: 22,
  handshake_failure: 40,
  bad_certificate: 42,
  unsupported_certificate: 43,
  certificate_revoked: 44,
  certificate_expired: 45,
  certificate_unknown: 46,
  illegal_parameter: 47,
  unknown_ca: 48,
  access_denied: 49,
  decode_error: 50,
  decrypt_error: 51,
  protocol_version: 70,
  insufficient_security: 71,
  internal_error: 80,
  inappropriate_fallback: 86,
  user_canceled: 90,
  no_renegotiation: 100,
  missing_extension: 109,
  unsupported_extension: 110,
  unrecognized_name: 112,
  bad_certificate_status_response: 113,
  unknown_psk_identity: 115,
  certificate_required: 116,
  no_application_protocol: 120,
} as const;
export type AlertName = keyof typeof AlertDescription;

export const AlertLevel = { warning: 1, fatal: 2 } as const;

const alertNames = new Map<number, AlertName>(
  Object.entries(AlertDescription).map(([k, v]) => [v, k as AlertName]),
);

/** Human name of an alert code, e.g. 40 → "handshake_failure". */
export function alertName(code: number): string {
  return alertNames.get(code) ?? `alert_${code}`;
}

/** Base class for errors raised by tls/: a stable code, as undici does with UND_ERR_*. */
export class TlsError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
    this.name = 'TlsError';
  }
}

/** A protocol violation (ours to send) or a fatal alert received from the peer. */
export class TlsAlertError extends TlsError {
  constructor(
    readonly alert: number,
    message: string,
    /** true when the peer sent this alert to us; false when we must send it. */
    readonly received = false,
  ) {
    super(`${received ? 'peer sent' : 'sending'} ${alertName(alert)}: ${message}`, received ? 'TLS_ERR_PEER_ALERT' : 'TLS_ERR_ALERT');
    this.name = 'TlsAlertError';
  }
}

/** Shorthand for throwing the alert a violation deserves. */
export function fatal(alert: AlertName, message: string): TlsAlertError {
  return new TlsAlertError(AlertDescription[alert], message);
}
