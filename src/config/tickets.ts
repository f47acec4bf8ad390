// tickets: where the session-ticket keys come from. `local` (default): each proxy makes its own
// (workers of one proxy share them), so a client resumes only on the proxy that issued its ticket.
// `hsm`: every proxy of a cluster derives each epoch's key from one secret key held in the HSM
// cluster, so any proxy resumes any ticket. `file`: the same derivation from a secret in a file
// (like nginx's ssl_session_ticket_key), for PKCS#11 tokens, where hsmproxy does not derive keys.
import { at, type Reader } from './reader.js';
import { DEFAULTS, TICKET_KEY_SOURCES, type HsmMode, type TicketKeySource, type TicketsConfig } from './schema.js';

/** Reads the tickets block (absent: local keys rotated hourly). */
export function readTickets(r: Reader, v: unknown, hsmMode: HsmMode | undefined): TicketsConfig | undefined {
  const d = DEFAULTS.tickets;
  const o = v === undefined ? {} : r.object(v, 'tickets', ['keys', 'file', 'rotateEveryMs', 'hsmKeyLabel']);
  if (!o) return undefined;
  const keys = r.string(o.keys, 'tickets.keys', { def: d.keys, oneOf: TICKET_KEY_SOURCES }) as TicketKeySource | undefined;
  // 1 s at the least (tests); a day at most: a ticket opens for two epochs, and TLS 1.3 caps its life at 7 days.
  const rotateEveryMs = r.integer(o.rotateEveryMs, 'tickets.rotateEveryMs', { def: d.rotateEveryMs, min: 1000, max: 86_400_000, what: 'milliseconds' });
  const file = r.file(o.file, 'tickets.file', { optional: keys !== 'file', secret: true });
  if (file !== undefined && keys !== 'file') r.fail(at('tickets', 'file'), `is read only with keys: file (keys is ${keys ?? '?'})`);
  const hsmKeyLabel = r.string(o.hsmKeyLabel, 'tickets.hsmKeyLabel', { def: d.hsmKeyLabel });
  if (keys === 'hsm' && hsmMode === 'pkcs11') {
    r.fail('tickets.keys', 'keys: hsm needs the simulated cluster (hsm.mode embedded or cluster); with PKCS#11 tokens use keys: file and a 0600 file of at least 32 random bytes');
  }
  if (!keys || rotateEveryMs === undefined || !hsmKeyLabel || (keys === 'file' && !file)) return undefined;
  return { keys, rotateEveryMs, hsmKeyLabel, ...(keys === 'file' && file ? { file } : {}) };
}
