// Session-ticket encryption keys (RFC 5077 §4 layout, RFC 8446 §4.6.1 stateless tickets).
// Keys rotate on a fixed epoch grid; a key seals during its epoch and opens until acceptForMs
// after its epoch began. Imports node:crypto and alert.ts only.
import crypto from 'node:crypto';
import { TlsError } from './alert.js';

const NAME_LEN = 16;
const NONCE_LEN = 12;
const TAG_LEN = 16;
const SECRET_LEN = 48;

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

/** Options for TicketKeys. */
export interface TicketKeysOptions {
  /** How long one key seals new tickets; default 1 h. */
  rotateEveryMs?: number;
  /** How long after its epoch began a key still opens tickets; default 2 × rotateEveryMs. */
  acceptForMs?: number;
  /** Clock, for tests. */
  now?: () => number;
  /**
   * A 48-byte secret shared by several workers or hosts so they all open each other's tickets.
   * Without it every key is random and lives in this process only.
   */
  secret?: Buffer;
}

/**
 * Seals and opens session tickets with AES-256-GCM under rotating keys. Ticket layout:
 * key name (16) ‖ nonce (12) ‖ ciphertext ‖ tag (16); the key name is also the AAD.
 */
export class TicketKeys {
  private readonly rotateEveryMs: number;
  private readonly acceptForMs: number;
  private readonly now: () => number;
  private readonly secret: Buffer | null;
  /** Keys by epoch; older than the accept window are dropped on use. */
  private readonly keys = new Map<number, TicketKey>();

  constructor(opts: TicketKeysOptions = {}) {
    this.rotateEveryMs = opts.rotateEveryMs ?? 3_600_000;
    this.acceptForMs = opts.acceptForMs ?? 2 * this.rotateEveryMs;
    this.now = opts.now ?? Date.now;
    if (!(this.rotateEveryMs > 0)) throw new TlsError('ticket key rotateEveryMs must be a positive number of milliseconds', 'TLS_ERR_TICKET_CONFIG');
    if (!(this.acceptForMs >= this.rotateEveryMs)) {
      throw new TlsError('ticket key acceptForMs must be at least rotateEveryMs, or fresh tickets would not open', 'TLS_ERR_TICKET_CONFIG');
    }
    if (opts.secret && opts.secret.length !== SECRET_LEN) {
      throw new TlsError(`ticket key secret must be ${SECRET_LEN} bytes, got ${opts.secret.length}`, 'TLS_ERR_TICKET_CONFIG');
    }
    this.secret = opts.secret ? Buffer.from(opts.secret) : null;
  }

  /**
   * Encrypts ticket contents under the current key. A `purpose` (e.g. 'tls12') derives a separate
   * key, so a ticket sealed for one purpose never opens for another (a 1.3 ticket is not a 1.2 one).
   */
  seal(plaintext: Buffer, purpose?: string): Buffer {
    const k = this.keyFor(this.currentEpoch());
    const out = Buffer.allocUnsafe(NAME_LEN + NONCE_LEN + plaintext.length + TAG_LEN);
    k.name.copy(out, 0);
    const nonce = out.subarray(NAME_LEN, NAME_LEN + NONCE_LEN);
    crypto.randomFillSync(nonce);
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

  private currentEpoch(): number {
    return Math.floor(this.now() / this.rotateEveryMs);
  }

  /** Oldest epoch whose key still opens tickets now. */
  private oldestAcceptedEpoch(): number {
    // Epoch e began at e × rotate; it is accepted while now < e × rotate + acceptForMs.
    return Math.floor((this.now() - this.acceptForMs) / this.rotateEveryMs) + 1;
  }

  private findKey(name: Buffer): TicketKey | null {
    const oldest = this.oldestAcceptedEpoch();
    const current = this.currentEpoch();
    for (const [epoch] of this.keys) if (epoch < oldest) this.keys.delete(epoch);
    for (let e = current; e >= oldest; e--) {
      // Random keys exist only for epochs in which we sealed; derived keys can be recomputed.
      const k = this.secret ? this.keyFor(e) : this.keys.get(e);
      if (k && k.name.equals(name)) return k;
    }
    return null;
  }

  private keyFor(epoch: number): TicketKey {
    let k = this.keys.get(epoch);
    if (k) return k;
    if (this.secret) {
      const info = Buffer.alloc(8);
      info.writeBigUInt64BE(BigInt(epoch));
      const okm = Buffer.from(crypto.hkdfSync('sha256', this.secret, Buffer.from('hsmproxy ticket keys v1'), info, NAME_LEN + 32));
      k = { epoch, name: okm.subarray(0, NAME_LEN), key: okm.subarray(NAME_LEN) };
    } else {
      k = { epoch, name: crypto.randomBytes(NAME_LEN), key: crypto.randomBytes(32) };
    }
    this.keys.set(epoch, k);
    return k;
  }
}
