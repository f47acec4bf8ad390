// TLS 1.3 handshake messages (RFC 8446 §4): the ClientHello decoder and an encoder for each
// message the server sends. Encoders return the whole message (4-byte header included), the
// exact bytes that go into both the transcript and the record layer.
import { fatal } from './alert.js';
import { Reader, Writer } from './codec.js';
import {
  ExtensionType, TLS12_VERSION, TLS13_VERSION, readClientHelloExtensions, writeExtension,
  type ClientHelloExtensions,
} from './extensions.js';

/** Handshake message types (RFC 8446 §4). */
export const HandshakeType = {
  client_hello: 1,
  server_hello: 2,
  new_session_ticket: 4,
  end_of_early_data: 5,
  encrypted_extensions: 8,
  certificate: 11,
  certificate_request: 13,
  certificate_verify: 15,
  finished: 20,
  key_update: 24,
  message_hash: 254,
} as const;

/** RFC 8446 §4.1.3: the ServerHello.random that marks a HelloRetryRequest. */
export const HRR_RANDOM = Buffer.from('cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c', 'hex');

/** One complete handshake message as it came off the wire. */
export interface HandshakeMessage {
  type: number;
  /** Body without the 4-byte header (a view into `raw`). */
  body: Buffer;
  /** Header plus body: what the transcript hashes. */
  raw: Buffer;
}

export interface ClientHello {
  legacyVersion: number;
  random: Buffer;
  sessionId: Buffer;
  cipherSuites: number[];
  compressionMethods: Buffer;
  ext: ClientHelloExtensions;
  /** The whole message, header included. */
  raw: Buffer;
}

/** Decodes a ClientHello message (header included) exactly; any leftover is decode_error. */
export function decodeClientHello(raw: Buffer): ClientHello {
  const outer = new Reader(raw);
  if (outer.u8() !== HandshakeType.client_hello) throw fatal('unexpected_message', 'expected ClientHello');
  const r = outer.sub(3, 'ClientHello');
  outer.expectEnd('ClientHello');
  const legacyVersion = r.u16('legacy_version');
  const random = r.bytes(32, 'random');
  const sessionId = r.vec8('legacy_session_id');
  if (sessionId.length > 32) throw fatal('decode_error', 'legacy_session_id longer than 32 bytes');
  const suites = r.sub(2, 'cipher_suites');
  if (suites.remaining === 0 || suites.remaining % 2 !== 0) throw fatal('decode_error', 'cipher_suites must be a non-empty list of u16');
  const cipherSuites: number[] = [];
  while (suites.remaining > 0) cipherSuites.push(suites.u16());
  const compressionMethods = r.vec8('compression_methods');
  if (compressionMethods.length === 0) throw fatal('decode_error', 'empty compression_methods');
  // Extensions are optional in the TLS 1.2 grammar; an absent block is an empty one.
  const ext = r.remaining === 0
    ? { types: [], earlyData: false, raw: new Map<number, Buffer>() }
    : readClientHelloExtensions(r.sub(2, 'extensions'), 0);
  r.expectEnd('ClientHello');
  return { legacyVersion, random, sessionId, cipherSuites, compressionMethods, ext, raw };
}

function message(type: number, body: (w: Writer) => void, sizeHint = 256): Buffer {
  const w = new Writer(sizeHint);
  w.u8(type).lengthPrefixed(3, body);
  return w.finish();
}

export interface ServerHelloParams {
  random: Buffer;
  sessionId: Buffer;
  suite: number;
  /** Our key share (ServerHello) … */
  keyShare?: { group: number; key: Buffer };
  /** … or the group we ask for (HelloRetryRequest). */
  selectedGroup?: number;
  /** Index of the accepted PSK identity. */
  selectedIdentity?: number;
}

/** ServerHello or HelloRetryRequest (HRR = ServerHello with HRR_RANDOM and selected_group). */
export function encodeServerHello(p: ServerHelloParams): Buffer {
  return message(HandshakeType.server_hello, (w) => {
    w.u16(TLS12_VERSION).bytes(p.random).vec8(p.sessionId).u16(p.suite).u8(0);
    w.lengthPrefixed(2, (e) => {
      writeExtension(e, ExtensionType.supported_versions, (b) => b.u16(TLS13_VERSION));
      if (p.keyShare) {
        const ks = p.keyShare;
        writeExtension(e, ExtensionType.key_share, (b) => b.u16(ks.group).vec16(ks.key));
      }
      if (p.selectedGroup !== undefined) {
        const g = p.selectedGroup;
        writeExtension(e, ExtensionType.key_share, (b) => b.u16(g));
      }
      if (p.selectedIdentity !== undefined) {
        const i = p.selectedIdentity;
        writeExtension(e, ExtensionType.pre_shared_key, (b) => b.u16(i));
      }
    });
  });
}

/** EncryptedExtensions: SNI acknowledgement (empty server_name) and the chosen ALPN protocol. */
export function encodeEncryptedExtensions(p: { ackServerName: boolean; alpn?: string }): Buffer {
  return message(HandshakeType.encrypted_extensions, (w) => {
    w.lengthPrefixed(2, (e) => {
      if (p.ackServerName) writeExtension(e, ExtensionType.server_name, () => undefined);
      if (p.alpn !== undefined) {
        const proto = Buffer.from(p.alpn, 'latin1');
        writeExtension(e, ExtensionType.alpn, (b) => b.lengthPrefixed(2, (l) => l.vec8(proto)));
      }
    });
  });
}

/** Certificate with an empty request context; only the end entity may carry an extension (a delegated credential). */
export function encodeCertificate(chain: readonly Buffer[], delegatedCredential?: Buffer): Buffer {
  const size = chain.reduce((n, c) => n + c.length + 5, 16) + (delegatedCredential?.length ?? 0) + 4;
  return message(HandshakeType.certificate, (w) => {
    w.u8(0).lengthPrefixed(3, (l) => {
      chain.forEach((cert, i) => {
        l.vec24(cert);
        // RFC 9345 §4.1.1: the credential rides in the end-entity CertificateEntry's extensions.
        if (i === 0 && delegatedCredential) l.lengthPrefixed(2, (e) => e.u16(34).vec16(delegatedCredential));
        else l.u16(0);
      });
    });
  }, size);
}

/** CertificateVerify: scheme and signature. */
export function encodeCertificateVerify(scheme: number, signature: Buffer): Buffer {
  return message(HandshakeType.certificate_verify, (w) => w.u16(scheme).vec16(signature), signature.length + 16);
}

/** Finished: the verify_data. */
export function encodeFinished(verifyData: Buffer): Buffer {
  return message(HandshakeType.finished, (w) => w.bytes(verifyData), verifyData.length + 4);
}

/** NewSessionTicket (RFC 8446 §4.6.1), no extensions: we never offer early data. */
export function encodeNewSessionTicket(p: { lifetime: number; ageAdd: number; nonce: Buffer; ticket: Buffer }): Buffer {
  return message(HandshakeType.new_session_ticket, (w) => {
    w.u32(p.lifetime).u32(p.ageAdd).vec8(p.nonce).vec16(p.ticket).u16(0);
  }, p.ticket.length + 32);
}

/** KeyUpdate with request_update 0 (not requested) or 1 (requested). */
export function encodeKeyUpdate(requestUpdate: boolean): Buffer {
  return message(HandshakeType.key_update, (w) => w.u8(requestUpdate ? 1 : 0), 5);
}

/** Reads a Finished body of exactly `hashLen` bytes. */
export function decodeFinished(body: Buffer, hashLen: number): Buffer {
  if (body.length !== hashLen) throw fatal('decode_error', `Finished must be ${hashLen} bytes, got ${body.length}`);
  return body;
}

/** Reads a KeyUpdate body: one byte, 0 or 1. */
export function decodeKeyUpdate(body: Buffer): boolean {
  const r = new Reader(body);
  const v = r.u8('request_update');
  r.expectEnd('KeyUpdate');
  if (v > 1) throw fatal('illegal_parameter', `KeyUpdate request_update must be 0 or 1, got ${v}`);
  return v === 1;
}

/** The synthetic message_hash message that replaces ClientHello1 after an HRR (RFC 8446 §4.4.1). */
export function messageHash(hashOfCh1: Buffer): Buffer {
  return message(HandshakeType.message_hash, (w) => w.bytes(hashOfCh1), hashOfCh1.length + 4);
}
