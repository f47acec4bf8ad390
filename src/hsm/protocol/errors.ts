// Errors of the wire format itself (not of the HSM's answers): malformed or oversized frames.
// The HSM's own errors travel as { code, message } in error responses; see client/errors.ts.

/** A frame or body that does not decode. `requestId` is set when the header was readable. */
export class ProtocolError extends Error {
  constructor(readonly code: 'HSM_ERR_PROTOCOL' | 'HSM_ERR_FRAME_TOO_LARGE' | 'HSM_ERR_UNKNOWN_OP', message: string, readonly requestId?: number) {
    super(message);
    this.name = 'ProtocolError';
  }
}
