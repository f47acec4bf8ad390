// TLS 1.2 handshake messages the server sends (RFC 5246 §7.4, RFC 8422 §5.4, RFC 5077 §3.3)
// and the ClientKeyExchange it reads. Encoders return whole messages (header included): the
// exact bytes for both the transcript and the record layer. ClientHello and Finished are shared
// with TLS 1.3 (messages.ts).
import { fatal } from './alert.js';
import { Reader, Writer } from './codec.js';
import { ExtensionType, TLS12_VERSION, writeExtension } from './extensions.js';
import { HandshakeType } from './messages.js';

/** TLS 1.2-only handshake message types. */
export const HandshakeType12 = { server_key_exchange: 12, server_hello_done: 14, client_key_exchange: 16 } as const;

/** RFC 8422 §5.4 ECCurveType named_curve. */
const NAMED_CURVE = 3;

function message(type: number, body: (w: Writer) => void, sizeHint = 256): Buffer {
  const w = new Writer(sizeHint);
  w.u8(type).lengthPrefixed(3, body);
  return Buffer.from(w.finish());
}

/** What the TLS 1.2 ServerHello says besides version, random, session id and suite. */
export interface ServerHello12Params {
  random: Buffer;
  sessionId: Buffer;
  suite: number;
  /** Empty renegotiation_info (RFC 5746 §3.6): the client signalled secure renegotiation. */
  renegotiationInfo: boolean;
  /** ec_point_formats [uncompressed]: the client sent the extension (RFC 8422 §5.2). */
  pointFormats: boolean;
  /** Empty server_name: SNI was used to pick the certificate (RFC 6066 §3). */
  ackServerName: boolean;
  /** Empty session_ticket: a NewSessionTicket follows (RFC 5077 §3.2). */
  sessionTicket: boolean;
  /** Empty extended_master_secret: the client offered it (RFC 7627 §5.1), so the session uses it. */
  extendedMasterSecret: boolean;
  alpn?: string;
}

/** ServerHello for TLS 1.2, null compression. */
export function encodeServerHello12(p: ServerHello12Params): Buffer {
  return message(HandshakeType.server_hello, (w) => {
    w.u16(TLS12_VERSION).bytes(p.random).vec8(p.sessionId).u16(p.suite).u8(0);
    w.lengthPrefixed(2, (e) => {
      if (p.renegotiationInfo) writeExtension(e, ExtensionType.renegotiation_info, (b) => b.u8(0));
      if (p.extendedMasterSecret) writeExtension(e, ExtensionType.extended_master_secret, () => undefined);
      if (p.pointFormats) writeExtension(e, ExtensionType.ec_point_formats, (b) => b.vec8(Buffer.of(0)));
      if (p.ackServerName) writeExtension(e, ExtensionType.server_name, () => undefined);
      if (p.sessionTicket) writeExtension(e, ExtensionType.session_ticket, () => undefined);
      if (p.alpn !== undefined) {
        const proto = Buffer.from(p.alpn, 'latin1');
        writeExtension(e, ExtensionType.alpn, (b) => b.lengthPrefixed(2, (l) => l.vec8(proto)));
      }
    });
  });
}

/** Certificate (RFC 5246 §7.4.2): a u24 list of u24 DER certificates, leaf first. */
export function encodeCertificate12(chain: readonly Buffer[]): Buffer {
  const size = chain.reduce((n, c) => n + c.length + 3, 16);
  return message(
    HandshakeType.certificate, (w) => w.lengthPrefixed(3, (l) => { for (const c of chain) l.vec24(c); }), size,
  );
}

/** ServerECDHParams: curve_type named_curve, the group, our public point (RFC 8422 §5.4). */
export function ecdheParams(group: number, publicKey: Buffer): Buffer {
  const w = new Writer(8 + publicKey.length);
  w.u8(NAMED_CURVE).u16(group).vec8(publicKey);
  return Buffer.from(w.finish());
}

/** The bytes a ServerKeyExchange signature covers: client_random ‖ server_random ‖ params (RFC 8422 §5.4). */
export function serverKeyExchangeContent(clientRandom: Buffer, serverRandom: Buffer, params: Buffer): Buffer {
  return Buffer.concat([clientRandom, serverRandom, params]);
}

/** ServerKeyExchange: params, then the digitally-signed struct (scheme, signature). */
export function encodeServerKeyExchange(params: Buffer, scheme: number, signature: Buffer): Buffer {
  return message(
    HandshakeType12.server_key_exchange, (w) => w.bytes(params).u16(scheme).vec16(signature),
    params.length + signature.length + 16,
  );
}

/** ServerHelloDone: empty body. */
export function encodeServerHelloDone(): Buffer {
  return Buffer.from([HandshakeType12.server_hello_done, 0, 0, 0]);
}

/** NewSessionTicket (RFC 5077 §3.3): lifetime hint and the opaque ticket. */
export function encodeNewSessionTicket12(lifetimeHintS: number, ticket: Buffer): Buffer {
  return message(HandshakeType.new_session_ticket, (w) => w.u32(lifetimeHintS).vec16(ticket), ticket.length + 16);
}

/** ClientKeyExchange for ECDHE: the client's public point, u8-length-prefixed, nothing after it. */
export function decodeClientKeyExchange(body: Buffer): Buffer {
  const r = new Reader(body);
  const point = r.vec8('ClientKeyExchange point');
  r.expectEnd('ClientKeyExchange');
  if (point.length === 0) throw fatal('decode_error', 'empty ECDHE public key in ClientKeyExchange');
  return point;
}
