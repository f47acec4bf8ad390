// The client certificates an appliance refuses: the revoked entries of the cluster's client
// register (DIR/pki/clients.json, written by `cluster revoke-client`; format below). The node
// reads the file when it starts (an unreadable one stops the start: fail closed) and again
// whenever its identity (inode, size, mtime) has changed, checked with one stat per
// authenticated connection and on a timer for the connections already open. The writer
// replaces the file by rename, so every change is a new inode and none is missed, even two
// within one mtime tick. A file that later cannot be read or parsed leaves the last good list
// in force. Part of hsm/node; imports node built-ins only.
import { readFileSync, statSync } from 'node:fs';

/** One client certificate the cluster's customer CA issued (an entry of DIR/pki/clients.json). */
export interface ClientRecord {
  /** The proxy's name, also the certificate subject's CN. */
  name: string;
  /** The certificate's serial number in hex (normaliseSerial's form). */
  serial: string;
  /** SHA-256 of the certificate, colon-separated hex (as node:tls reports it). */
  fingerprint256: string;
  issuedAt: string;
  notAfter: string;
  /** Set when the certificate was revoked; HSM nodes refuse it from then on. */
  revokedAt?: string;
}

/** DIR/pki/clients.json. */
export interface ClientRegister {
  version: 1;
  clients: ClientRecord[];
}

/** A serial number as compared everywhere: lowercase hex, no separators, no leading zeros. */
export function normaliseSerial(serial: string): string {
  return serial.replace(/[:\s]/g, '').toLowerCase().replace(/^0+(?=.)/, '');
}

/** Parses DIR/pki/clients.json; throws with what is wrong. */
export function parseClientRegister(text: string): ClientRegister {
  const doc = JSON.parse(text) as Partial<ClientRegister> | null;
  if (!doc || doc.version !== 1 || !Array.isArray(doc.clients)) throw new Error('not an hsmproxy client register (version 1)');
  for (const c of doc.clients) {
    if (typeof c?.serial !== 'string' || typeof c.name !== 'string') throw new Error('an entry has no serial or name');
  }
  return doc as ClientRegister;
}

/** The revoked client certificates by serial, re-read when the register file changes. */
export class RevokedClients {
  private identity = '';
  private revoked = new Map<string, ClientRecord>();

  /** `file` absent: nothing is revoked (a cluster made before the register existed). */
  constructor(readonly file: string) {}

  /** Revoked certificates known now. */
  get size(): number {
    return this.revoked.size;
  }

  /**
   * Re-reads the file if it changed since the last read. Returns whether the list changed; throws
   * if the file cannot be read or parsed (the previous list stays in force).
   */
  refresh(): boolean {
    let identity: string;
    try {
      const st = statSync(this.file);
      identity = `${st.ino}:${st.size}:${st.mtimeMs}`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      // Never written (no client certificate issued yet). Once a list was read, a missing file
      // is more likely a mistake than an amnesty: keep it (the file is only ever replaced).
      if (this.identity !== '') throw new Error(`${this.file} has disappeared; the last revocation list read stays in force`);
      return false;
    }
    if (identity === this.identity) return false;
    const register = parseClientRegister(readFileSync(this.file, 'utf8'));
    const next = new Map<string, ClientRecord>();
    for (const c of register.clients) if (c.revokedAt) next.set(normaliseSerial(c.serial), c);
    const changed = next.size !== this.revoked.size || [...next.keys()].some((s) => !this.revoked.has(s));
    this.revoked = next;
    this.identity = identity;
    return changed;
  }

  /** The revoked certificate with this serial (node:tls's `serialNumber` form is fine), if revoked. */
  lookup(serial: string | undefined): ClientRecord | undefined {
    return serial ? this.revoked.get(normaliseSerial(serial)) : undefined;
  }
}
