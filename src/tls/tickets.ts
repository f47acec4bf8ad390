// Session-ticket encryption keys (RFC 5077 §4 layout, RFC 8446 §4.6.1 stateless tickets).
// Keys rotate on a fixed epoch grid; a key seals during its epoch and opens until acceptForMs
// after its epoch began. A key made here is fresh randomness, so a leaked key opens only its own
// epoch's tickets. Processes that must open each other's tickets (workers) share keys, not a
// secret: one exports each epoch's key as it is made, the others install it (export/install).
// Separate machines install keys made from an epoch secret (ticketKeyFromEpochSecret): a one-way
// function of a long-term secret that stays where it is (an HSM), so a leaked epoch key still
// opens only its epoch's tickets. Imports node:crypto and alert.ts only.
import crypto from 'node:crypto';
import { TlsError } from './alert.js';
import { randomFillPooled } from './random.js';

const NAME_LEN = 16;
const NONCE_LEN = 12;
const TAG_LEN = 16;
const KEY_LEN = 32;

interface TicketKey {
  epoch: number;
  name: Buffer;
  key: Buffer;
  /** Per-purpose keys derived from `key` (e.g. 'tls12'), made on first use. */
  derived?: Map<string, Buffer>;
}

/** The AEAD key for a purpose: the epoch key itself by default (TLS 1.3), else an HKDF-derived one. */
function purposeKey(k: TicketKey, purpose: string | undefined): Buffer {
  if (purpose === undefined) return k.key;
  k.derived ??= new Map();
  let key = k.derived.get(purpose);
  if (!key) {
    key = Buffer.from(crypto.hkdfSync('sha256', k.key, Buffer.alloc(0), Buffer.from(`hsmproxy ticket purpose ${purpose}`), 32));
    k.derived.set(purpose, key);
  }
  return key;
}

/** One epoch's ticket key as handed to another process (hex, so it survives IPC's JSON). */
export interface SharedTicketKey {
  epoch: number;
  name: string;
  key: string;
}

/**
 * An epoch's ticket key from that epoch's secret (e.g. an HMAC over the epoch number made in an
 * HSM): whoever holds the same epoch secret gets the same key name and key (RFC 5869 HKDF, one
 * label each, so the name that travels in every ticket says nothing about the key).
 */
export function ticketKeyFromEpochSecret(epoch: number, secret: Buffer): SharedTicketKey {
  if (secret.length < 32) throw new TlsError('an epoch secret must be at least 32 bytes', 'TLS_ERR_TICKET_CONFIG');
  const derive = (label: string, length: number) => Buffer.from(crypto.hkdfSync('sha256', secret, Buffer.alloc(0), Buffer.from(label), length));
  return { epoch, name: derive('hsmproxy ticket key name', NAME_LEN).toString('hex'), key: derive('hsmproxy ticket key', KEY_LEN).toString('hex') };
}

/** Options for TicketKeys. */
export interface TicketKeysOptions {
  /** How long one key seals new tickets; default 1 h. */
  rotateEveryMs?: number;
  /** How long after its epoch began a key still opens tickets; default 2 × rotateEveryMs. */
  acceptForMs?: number;
  /**
   * How long before its epoch begins `export` includes the next epoch's key, so other processes
   * hold it in time; default a minute (at most a quarter of rotateEveryMs). Until then the next
   * key does not exist anywhere.
   */
  shareAheadMs?: number;
  /** Clock, for tests. */
  now?: () => number;
}

/**
 * Seals and opens session tickets with AES-256-GCM under rotating keys. Ticket layout:
 * key name (16) ‖ nonce (12) ‖ ciphertext ‖ tag (16); the key name is also the AAD.
 */
export class TicketKeys {
  private readonly rotateEveryMs: number;
  private readonly acceptForMs: number;
  private readonly shareAheadMs: number;
  private readonly now: () => number;
  /** Every key that may still open tickets (made here or installed); expired ones are dropped on use. */
  private keys: TicketKey[] = [];
  /** The key each epoch seals with: an installed one wins over one made here. */
  private readonly sealing = new Map<number, TicketKey>();

  constructor(opts: TicketKeysOptions = {}) {
    this.rotateEveryMs = opts.rotateEveryMs ?? 3_600_000;
    this.acceptForMs = opts.acceptForMs ?? 2 * this.rotateEveryMs;
    this.shareAheadMs = opts.shareAheadMs ?? Math.min(60_000, this.rotateEveryMs / 4);
    this.now = opts.now ?? Date.now;
    if (!(this.rotateEveryMs > 0)) throw new TlsError('ticket key rotateEveryMs must be a positive number of milliseconds', 'TLS_ERR_TICKET_CONFIG');
    if (!(this.acceptForMs >= this.rotateEveryMs)) {
      throw new TlsError('ticket key acceptForMs must be at least rotateEveryMs, or fresh tickets would not open', 'TLS_ERR_TICKET_CONFIG');
    }
    if (!(this.shareAheadMs >= 0 && this.shareAheadMs < this.rotateEveryMs)) {
      throw new TlsError('ticket key shareAheadMs must be at least 0 and less than rotateEveryMs', 'TLS_ERR_TICKET_CONFIG');
    }
  }

  /**
   * Encrypts ticket contents under the current key. A `purpose` (e.g. 'tls12') derives a separate
   * key, so a ticket sealed for one purpose never opens for another (a 1.3 ticket is not a 1.2 one).
   */
  seal(plaintext: Buffer, purpose?: string): Buffer {
    const k = this.sealingKey(this.currentEpoch());
    const out = Buffer.allocUnsafe(NAME_LEN + NONCE_LEN + plaintext.length + TAG_LEN);
    k.name.copy(out, 0);
    const nonce = out.subarray(NAME_LEN, NAME_LEN + NONCE_LEN);
    randomFillPooled(nonce);
    const c = crypto.createCipheriv('aes-256-gcm', purposeKey(k, purpose), nonce, { authTagLength: TAG_LEN });
    c.setAAD(k.name);
    c.update(plaintext).copy(out, NAME_LEN + NONCE_LEN);
    c.final();
    c.getAuthTag().copy(out, NAME_LEN + NONCE_LEN + plaintext.length);
    return out;
  }

  /** The ticket contents, or null for an unknown or expired key, another purpose, a short ticket or a bad tag. */
  open(ticket: Buffer, purpose?: string): Buffer | null {
    if (ticket.length < NAME_LEN + NONCE_LEN + TAG_LEN) return null;
    const name = ticket.subarray(0, NAME_LEN);
    const k = this.findKey(name);
    if (!k) return null;
    const nonce = ticket.subarray(NAME_LEN, NAME_LEN + NONCE_LEN);
    const body = ticket.subarray(NAME_LEN + NONCE_LEN, ticket.length - TAG_LEN);
    try {
      const d = crypto.createDecipheriv('aes-256-gcm', purposeKey(k, purpose), nonce, { authTagLength: TAG_LEN });
      d.setAAD(k.name);
      d.setAuthTag(ticket.subarray(ticket.length - TAG_LEN));
      const pt = d.update(body);
      d.final();
      return pt;
    } catch {
      return null;
    }
  }

  /** How long a ticket sealed now will still open: until its epoch began + acceptForMs. */
  sealedTicketOpensForMs(): number {
    return this.currentEpoch() * this.rotateEveryMs + this.acceptForMs - this.now();
  }

  /**
   * The keys other processes need to seal and open tickets now: this process's key of every epoch
   * still accepted and of the current one, and the next epoch's once it begins within shareAheadMs
   * (each made from fresh randomness when first needed).
   */
  export(): SharedTicketKey[] {
    this.prune();
    const current = this.currentEpoch();
    this.sealingKey(current);
    if (this.msUntilEpoch(current + 1) <= this.shareAheadMs) this.sealingKey(current + 1);
    return [...this.sealing.values()].sort((a, b) => a.epoch - b.epoch)
      .map((k) => ({ epoch: k.epoch, name: k.name.toString('hex'), key: k.key.toString('hex') }));
  }

  /** Takes keys another process exported: each seals during its epoch (none made here) and opens until it expires. */
  install(shared: readonly SharedTicketKey[]): void {
    this.prune();
    const oldest = this.oldestAcceptedEpoch();
    for (const s of shared) {
      const name = Buffer.from(typeof s?.name === 'string' ? s.name : '', 'hex');
      const key = Buffer.from(typeof s?.key === 'string' ? s.key : '', 'hex');
      if (!Number.isSafeInteger(s?.epoch) || name.length !== NAME_LEN || key.length !== KEY_LEN) {
        throw new TlsError(`a shared ticket key must have an integer epoch, a ${NAME_LEN}-byte name and a ${KEY_LEN}-byte key`, 'TLS_ERR_TICKET_CONFIG');
      }
      if (s.epoch < oldest || this.keys.some((k) => k.name.equals(name))) continue;
      const k: TicketKey = { epoch: s.epoch, name, key };
      this.keys.push(k);
      this.sealing.set(s.epoch, k);
    }
  }

  /** Milliseconds until `export` next returns a key not yet shared (the next epoch's key is due). */
  msUntilNextShare(): number {
    const due = this.msUntilEpoch(this.currentEpoch() + 1) - this.shareAheadMs;
    return due > 0 ? due : due + this.rotateEveryMs;
  }

  /** The epoch tickets are sealed in now (epoch e runs from e × rotateEveryMs). */
  currentEpoch(): number {
    return Math.floor(this.now() / this.rotateEveryMs);
  }

  /** Milliseconds until `epoch` begins (negative once it has). */
  msUntilEpoch(epoch: number): number {
    return epoch * this.rotateEveryMs - this.now();
  }

  /** Oldest epoch whose key still opens tickets now. */
  private oldestAcceptedEpoch(): number {
    // Epoch e began at e × rotate; it is accepted while now < e × rotate + acceptForMs.
    return Math.floor((this.now() - this.acceptForMs) / this.rotateEveryMs) + 1;
  }

  // Forgets keys whose epoch can no longer open tickets: gone from memory, not only unused.
  private prune(): void {
    const oldest = this.oldestAcceptedEpoch();
    if (!this.keys.some((k) => k.epoch < oldest)) return;
    this.keys = this.keys.filter((k) => k.epoch >= oldest);
    for (const epoch of this.sealing.keys()) if (epoch < oldest) this.sealing.delete(epoch);
  }

  private findKey(name: Buffer): TicketKey | null {
    this.prune();
    const current = this.currentEpoch();
    // Keys of epochs not yet begun (shared ahead) open nothing: no ticket can have been sealed with them.
    return this.keys.find((k) => k.epoch <= current && crypto.timingSafeEqual(k.name, name)) ?? null;
  }

  // The key sealing in `epoch`: an installed one, or else fresh random bytes made here.
  private sealingKey(epoch: number): TicketKey {
    let k = this.sealing.get(epoch);
    if (k) return k;
    k = { epoch, name: crypto.randomBytes(NAME_LEN), key: crypto.randomBytes(KEY_LEN) };
    this.keys.push(k);
    this.sealing.set(epoch, k);
    return k;
  }
}
