// RFC 5077 session tickets for TLS 1.2: what a ticket carries (suite, master secret, issue
// time, lifetime, server name) sealed under the shared rotating TicketKeys with the 'tls12'
// purpose, so TLS 1.3 tickets and TLS 1.2 tickets never open as each other. Stateless: a
// resumed handshake needs nothing but the ticket (and no HSM signature).
import { Reader, Writer } from './codec.js';
import { MAX_TICKET_LIFETIME_S, type TicketSealer } from './session.js';

/** TicketKeys purpose for TLS 1.2 tickets (a separately derived key). */
export const TICKET_PURPOSE_12 = 'tls12';
/** 0x12: tickets from before EMS was optional (always extended); 0x13 records it. */
const FORMAT_12_EMS_ONLY = 0x12;
const FORMAT_12 = 0x13;
/** Tolerated clock difference for a ticket issued "in the future" (another worker's clock). */
const ISSUE_SKEW_MS = 60_000;

/** The resumption state of a TLS 1.2 session. */
export interface Ticket12 {
  suite: number;
  masterSecret: Buffer;
  /** The master secret is an extended one (RFC 7627); resumption requires the same (§5.3). */
  extendedMasterSecret: boolean;
  issuedAtMs: number;
  lifetimeS: number;
  servername: string;
}

/** Serialises and seals a TLS 1.2 ticket. */
export function sealTicket12(keys: TicketSealer, t: Ticket12): Buffer {
  const w = new Writer(96);
  w.u8(FORMAT_12).u16(t.suite).vec8(t.masterSecret).u8(t.extendedMasterSecret ? 1 : 0);
  w.u32(Math.floor(t.issuedAtMs / 2 ** 32)).u32(t.issuedAtMs % 2 ** 32);
  w.u32(Math.min(t.lifetimeS, MAX_TICKET_LIFETIME_S)).vec16(Buffer.from(t.servername, 'latin1'));
  return keys.seal(Buffer.from(w.finish()), TICKET_PURPOSE_12);
}

/** Opens a ticket that is ours, for TLS 1.2, and not expired; null otherwise (→ full handshake). */
export function openTicket12(keys: TicketSealer, ticket: Buffer, nowMs: number): Ticket12 | null {
  if (ticket.length === 0) return null;
  const plain = keys.open(ticket, TICKET_PURPOSE_12);
  if (!plain) return null;
  try {
    const r = new Reader(plain);
    const format = r.u8();
    if (format !== FORMAT_12 && format !== FORMAT_12_EMS_ONLY) return null;
    const suite = r.u16();
    const masterSecret = Buffer.from(r.vec8());
    const ems = format === FORMAT_12_EMS_ONLY ? 1 : r.u8();
    if (ems > 1) return null;
    const issuedAtMs = r.u32() * 2 ** 32 + r.u32();
    const lifetimeS = r.u32();
    const servername = r.vec16().toString('latin1');
    r.expectEnd('ticket');
    if (masterSecret.length !== 48) return null;
    const age = nowMs - issuedAtMs;
    if (age < -ISSUE_SKEW_MS || age > lifetimeS * 1000) return null;
    return { suite, masterSecret, extendedMasterSecret: ems === 1, issuedAtMs, lifetimeS, servername };
  } catch {
    return null; // sealed by us, so malformed means a format change: treat as unknown
  }
}
