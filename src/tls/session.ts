// Stateless session resumption (RFC 8446 §4.6.1, §4.2.11): what a ticket carries, sealing
// it under TicketKeys, and choosing an offered PSK: at most MAX_PSK_IDENTITIES tried, ticket
// age checked, binder compared in constant time against the truncated ClientHello transcript.
import { createHash, timingSafeEqual } from 'node:crypto';
import { randomBytesPooled } from './random.js';
import { fatal } from './alert.js';
import { Reader, Writer } from './codec.js';
import type { OfferedPsks } from './extensions.js';
import { KeySchedule13, finishedVerifyData } from './keyschedule.js';
import { suiteById, type CipherSuite } from './suites.js';

/** What sealing tickets needs from TicketKeys (tickets.ts): AEAD under rotating keys. */
export interface TicketSealer {
  /** `purpose` separates ticket kinds (TLS 1.2 passes 'tls12'; TLS 1.3 none). */
  seal(plaintext: Buffer, purpose?: string): Buffer;
  open(ticket: Buffer, purpose?: string): Buffer | null;
  /** How long (ms) a ticket sealed now will still open: its key's remaining accept window. */
  sealedTicketOpensForMs(): number;
}

/** Ticket lifetime cap (RFC 8446 §4.6.1: at most 7 days). */
export const MAX_TICKET_LIFETIME_S = 7 * 24 * 3600;
/**
 * The ticket_lifetime to advertise: the configured one, capped at 7 days and at what the ticket
 * keys accept, so a client that resumes within the lifetime we told it is never turned away.
 */
export function ticketLifetimeS(keys: TicketSealer, configuredS: number): number {
  return Math.max(0, Math.min(configuredS, MAX_TICKET_LIFETIME_S, Math.floor(keys.sealedTicketOpensForMs() / 1000)));
}

/** Identities tried per ClientHello (Go tries 5): bounds the work one hello can demand. */
export const MAX_PSK_IDENTITIES = 4;
/** Tolerated difference between the client's and our view of the ticket age. */
export const TICKET_AGE_SKEW_MS = 60_000;
const TICKET_FORMAT = 1;

/** The resumption state a ticket carries. */
export interface TicketState {
  suite: number;
  psk: Buffer;
  issuedAtMs: number;
  ageAdd: number;
  lifetimeS: number;
  alpn: string;
  servername: string;
}

/** Serialises and seals a ticket. */
export function sealTicket(keys: TicketSealer, s: TicketState): Buffer {
  const w = new Writer(128);
  w.u8(TICKET_FORMAT).u16(s.suite).vec8(s.psk);
  w.u32(Math.floor(s.issuedAtMs / 2 ** 32)).u32(s.issuedAtMs % 2 ** 32);
  w.u32(s.ageAdd).u32(s.lifetimeS).vec8(Buffer.from(s.alpn, 'latin1')).vec16(Buffer.from(s.servername, 'latin1'));
  return keys.seal(w.finish());
}

/** Opens a ticket; null when it is not ours, expired keys, or malformed. */
export function openTicket(keys: TicketSealer, ticket: Buffer): TicketState | null {
  const plain = keys.open(ticket);
  if (!plain) return null;
  try {
    const r = new Reader(plain);
    if (r.u8() !== TICKET_FORMAT) return null;
    const suite = r.u16();
    const psk = Buffer.from(r.vec8());
    const issuedAtMs = r.u32() * 2 ** 32 + r.u32();
    const ageAdd = r.u32();
    const lifetimeS = r.u32();
    const alpn = r.vec8().toString('latin1');
    const servername = r.vec16().toString('latin1');
    r.expectEnd('ticket');
    return { suite, psk, issuedAtMs, ageAdd, lifetimeS, alpn, servername };
  } catch {
    return null; // sealed by us, so malformed means a format change: treat as unknown
  }
}

/** A fresh random ticket_age_add. */
export function newAgeAdd(): number { return randomBytesPooled(4).readUInt32BE(0); }

/** An accepted PSK: which identity, its key schedule and ticket. */
export interface AcceptedPsk { index: number; schedule: KeySchedule13; ticket: TicketState }

/**
 * Finds the first usable ticket among the offered identities and verifies its binder.
 * `transcriptPrefix` holds the transcript bytes before this ClientHello (message_hash + HRR
 * after a retry). Unusable tickets are skipped (full handshake); a usable ticket whose binder
 * does not verify is fatal decrypt_error (RFC 8446 §4.2.11).
 */
export function acceptPsk(opts: {
  keys: TicketSealer; offered: OfferedPsks; chRaw: Buffer; transcriptPrefix: Buffer[];
  suite: CipherSuite; servername: string; nowMs: number;
}): AcceptedPsk | null {
  const { offered, suite } = opts;
  const n = Math.min(offered.identities.length, MAX_PSK_IDENTITIES);
  for (let i = 0; i < n; i++) {
    const id = offered.identities[i]!;
    const t = openTicket(opts.keys, id.identity);
    if (!t) continue;
    // A PSK may be used with any suite of the same hash (RFC 8446 §4.2.11).
    if (suiteById(t.suite)?.hash !== suite.hash || t.servername !== opts.servername) continue;
    const serverAge = opts.nowMs - t.issuedAtMs;
    if (serverAge < -TICKET_AGE_SKEW_MS || serverAge > t.lifetimeS * 1000) continue;
    const clientAge = (id.obfuscatedAge - t.ageAdd) >>> 0;
    if (Math.abs(clientAge - serverAge) > TICKET_AGE_SKEW_MS) continue;
    const schedule = new KeySchedule13(suite, t.psk);
    const h = createHash(suite.hash);
    for (const m of opts.transcriptPrefix) h.update(m);
    h.update(opts.chRaw.subarray(0, offered.bindersStart));
    const expected = finishedVerifyData(suite.hash, schedule.binderKey('res'), h.digest());
    const got = offered.binders[i]!;
    if (got.length !== expected.length || !timingSafeEqual(got, expected)) {
      throw fatal('decrypt_error', 'PSK binder does not verify');
    }
    return { index: i, schedule, ticket: t };
  }
  return null;
}

