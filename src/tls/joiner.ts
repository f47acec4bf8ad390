// Reassembles handshake messages from record fragments (RFC 8446 §5.1): a message may span
// many records and a record may carry several messages. The declared u24 length is checked
// against the cap as soon as the 4-byte header is visible, before anything is buffered.
import { fatal } from './alert.js';
import type { HandshakeMessage } from './messages.js';

/** Largest handshake message we accept from a client (a ClientHello with big key shares fits). */
export const MAX_HANDSHAKE_MESSAGE = 64 * 1024;
/**
 * Largest ClientHello the grammar allows (OpenSSL's CLIENT_HELLO_MAX_LENGTH): 32767 suites, 255
 * compression methods and 64 KiB of extensions. tlsfuzzer sends exactly that and expects a handshake.
 */
export const MAX_CLIENT_HELLO = 131396;

/** Handshake message reassembly with a size cap. */
export class HandshakeJoiner {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly maxMessage = MAX_HANDSHAKE_MESSAGE, private readonly maxClientHello = maxMessage) {}

  /** True when part of a message is buffered (a key change now is fatal: RFC 8446 §5.1). */
  get pending(): boolean { return this.buffered > 0; }

  /** Adds a handshake record's content. */
  push(fragment: Buffer): void {
    if (fragment.length === 0) return;
    this.chunks.push(fragment);
    this.buffered += fragment.length;
    this.checkHeader();
  }

  private checkHeader(): void {
    if (this.buffered < 4) return;
    const head = this.chunks[0]!.length >= 4 ? this.chunks[0]! : this.flatten();
    const len = head.readUIntBE(1, 3);
    const cap = head[0] === 1 /* client_hello */ ? this.maxClientHello : this.maxMessage;
    // illegal_parameter, as OpenSSL (SSL_R_EXCESSIVE_MESSAGE_SIZE) and BoringSSL send for this.
    if (len > cap) throw fatal('illegal_parameter', `handshake message of ${len} bytes exceeds the ${cap}-byte limit`);
  }

  private flatten(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks, this.buffered)];
    return this.chunks[0]!;
  }

  /** The next complete message, or null. Messages are views: no copy when a record holds them whole. */
  next(): HandshakeMessage | null {
    if (this.buffered < 4) return null;
    let head = this.chunks[0]!;
    if (head.length < 4) head = this.flatten();
    const total = 4 + head.readUIntBE(1, 3);
    if (this.buffered < total) return null;
    if (head.length < total) head = this.flatten();
    const raw = head.subarray(0, total);
    if (head.length === total) this.chunks.shift();
    else this.chunks[0] = head.subarray(total);
    this.buffered -= total;
    if (this.buffered >= 4) this.checkHeader();
    return { type: raw[0]!, body: raw.subarray(4), raw };
  }
}
