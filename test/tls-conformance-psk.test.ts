// PSK resumption probes (RFC 8446 §4.2.11, TLS.md 42): which offered identity is chosen, which
// tickets are skipped (full handshake, never an error), and which binders are fatal.
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { AlertDescription, TlsAlertError } from '../src/tls/alert.js';
import { prepareCertEntry } from '../src/tls/certselect.js';
import { Reader } from '../src/tls/codec.js';
import { ServerConnection, type ConnectionEvent } from '../src/tls/connection.js';
import { ExtensionType } from '../src/tls/extensions.js';
import type { HandshakeConfig } from '../src/tls/handshake13.js';
import { KeySchedule13, finishedVerifyData, resumptionPsk } from '../src/tls/keyschedule.js';
import { ContentType, plaintextRecords } from '../src/tls/record.js';
import { MAX_PSK_IDENTITIES } from '../src/tls/session.js';
import { suiteById } from '../src/tls/suites.js';
import { TicketKeys } from '../src/tls/tickets.js';
import { makeTestCerts } from './helpers/tls-certs.js';
import { SoftSigner } from './helpers/soft-signer.js';
import { encodeClientHello, ext, fullHandshake, goodHello, readServerFlight, type Ext } from './helpers/tls13-client.js';

const certs = makeTestCerts(['localhost']);
t.teardown(() => certs.cleanup());

let clock = Date.now();
const ticketKeys = new TicketKeys({ now: () => clock });
const TLS13_ONLY = { minVersion: '1.3' as const };
function config(over: Partial<HandshakeConfig> = {}): HandshakeConfig {
  return {
    ...TLS13_ONLY,
    certificates: [prepareCertEntry({ chain: certs.ec.chain, signer: new SoftSigner(certs.ec.key) })],
    ticketKeys, ticketCount: 1, ticketLifetimeS: 600, verifyAfterSign: () => true, now: () => clock, ...over,
  };
}

interface Ticket { ticket: Buffer; ageAdd: number; psk: Buffer; suite: number; lifetime: number }

/** A full handshake (optionally with SNI and suites) and the ticket it yields. */
async function getTicket(opts: { sni?: string; suites?: number[]; config?: Partial<HandshakeConfig> } = {}): Promise<Ticket> {
  const conn = new ServerConnection(config(opts.config));
  const c = await fullHandshake(conn, { extra: [ext.pskModes([1]), ...(opts.sni ? [ext.sni(opts.sni)] : [])] });
  const rec = c.afterFinished;
  const body = c.appOpener.open({ type: 23, version: 0x0303, fragment: rec.subarray(5, 5 + rec.readUInt16BE(3)) }).content;
  const r = new Reader(body);
  r.u8();
  const m = r.sub(3);
  const lifetime = m.u32();
  const ageAdd = m.u32();
  const nonce = Buffer.from(m.vec8());
  const ticket = Buffer.from(m.vec16());
  c.transcript.update(c.finished);
  const rms = c.schedule.resumptionMasterSecret(c.transcript.digest());
  return { ticket, ageAdd, psk: resumptionPsk(c.suite.hash, rms, nonce), suite: c.suite.id, lifetime };
}

/**
 * A resumption ClientHello offering `ids` (the real ticket at `at`, junk elsewhere) with
 * correct binders for the real one; `edit` may corrupt the binder list before it is encoded.
 */
function resumeHello(tk: Ticket, o: { count?: number; at?: number; ageMs?: number; binderLen?: number; extra?: Ext[]; modes?: number[] } = {}): { ch: Buffer; key: ReturnType<typeof goodHello>['key'] } {
  const count = o.count ?? 1;
  const at = o.at ?? 0;
  const age = (tk.ageAdd + (o.ageMs ?? 100)) >>> 0;
  const ids = Array.from({ length: count }, (_, i) => (i === at ? { identity: tk.ticket, age } : { identity: Buffer.from(`junk-${i}`), age: 0 }));
  const binderLen = o.binderLen ?? 32;
  const binders = ids.map(() => Buffer.alloc(binderLen));
  const { spec, key } = goodHello({ extra: [...(o.extra ?? []), ext.pskModes(o.modes ?? [1]), ext.psk(ids, binders)] });
  const ch = encodeClientHello(spec);
  const bindersLen = 2 + binders.length * (1 + binderLen);
  const truncated = ch.subarray(0, ch.length - bindersLen);
  const binder = finishedVerifyData('sha256', new KeySchedule13(suiteById(tk.suite)!, tk.psk).binderKey('res'), createHash('sha256').update(truncated).digest());
  binder.copy(ch, ch.length - bindersLen + 2 + at * (1 + binderLen) + 1, 0, Math.min(binderLen, 32));
  return { ch, key };
}

async function outcome(ch: Buffer, cfg = config()): Promise<{ conn: ServerConnection; resumed: boolean; signed: boolean; out: Buffer }> {
  const conn = new ServerConnection(cfg);
  conn.feed(plaintextRecords(ContentType.handshake, ch));
  const ev: ConnectionEvent[] = conn.takeEvents();
  return { conn, resumed: conn.negotiated.resumed, signed: ev.some((e) => e.type === 'sign'), out: conn.takeOutput() ?? Buffer.alloc(0) };
}

function selectedIdentity(out: Buffer): number | undefined {
  const sh = out.subarray(5, 5 + out.readUInt16BE(3));
  const i = sh.indexOf(Buffer.from([0, ExtensionType.pre_shared_key, 0, 2]));
  return i < 0 ? undefined : sh.readUInt16BE(i + 4);
}

function fallsBack(t: Test, r: Awaited<ReturnType<typeof outcome>>): void {
  t.equal(r.conn.error, null, 'no error');
  t.notOk(r.resumed, 'not resumed');
  t.ok(r.signed, 'a full handshake (signature requested)');
}

t.test('the first usable identity is chosen and named in ServerHello', async (t) => {
  const tk = await getTicket();
  const { ch, key } = resumeHello(tk, { count: 3, at: 1 });
  const r = await outcome(ch);
  t.ok(r.resumed);
  t.notOk(r.signed, 'no signature on a resumed handshake');
  t.equal(selectedIdentity(r.out), 1, 'selected_identity = 1');
  const c = readServerFlight(ch, key, r.out, tk.psk);
  r.conn.feed(c.sealer.seal(ContentType.handshake, c.finished));
  t.ok(r.conn.established);
});

t.test(`at most ${MAX_PSK_IDENTITIES} identities are tried: a good ticket after that is ignored`, async (t) => {
  const tk = await getTicket();
  fallsBack(t, await outcome(resumeHello(tk, { count: MAX_PSK_IDENTITIES + 1, at: MAX_PSK_IDENTITIES }).ch));
  t.ok((await outcome(resumeHello(tk, { count: MAX_PSK_IDENTITIES, at: MAX_PSK_IDENTITIES - 1 }).ch)).resumed, `position ${MAX_PSK_IDENTITIES - 1} still resumes`);
});

t.test('tickets that cannot be used fall back to a full handshake', async (t) => {
  const tk = await getTicket();
  await t.test('another server name than the ticket was issued for', async (t) => fallsBack(t, await outcome(resumeHello(tk, { extra: [ext.sni('localhost')] }).ch)));
  await t.test('a ticket age off by more than the allowed skew', async (t) => fallsBack(t, await outcome(resumeHello(tk, { ageMs: 10 * 60_000 }).ch)));
  await t.test('only psk_ke offered (we require psk_dhe_ke)', async (t) => fallsBack(t, await outcome(resumeHello(tk, { modes: [0] }).ch)));
  await t.test('an expired ticket', async (t) => {
    const saved = clock;
    clock += 601_000;
    t.teardown(() => { clock = saved; });
    fallsBack(t, await outcome(resumeHello(tk, { ageMs: 601_000 }).ch));
  });
});

t.test('binders of the chosen identity must verify → decrypt_error', async (t) => {
  const tk = await getTicket();
  await t.test('a binder of the wrong length (48 bytes for a SHA-256 PSK)', async (t) => {
    const r = await outcome(resumeHello(tk, { binderLen: 48 }).ch);
    t.ok(r.conn.error instanceof TlsAlertError && r.conn.error.alert === AlertDescription.decrypt_error, r.conn.error?.message ?? 'no error');
  });
  await t.test('a flipped bit in the ClientHello covered by the binder', async (t) => {
    const { ch } = resumeHello(tk);
    ch[10]! ^= 1; // inside the random, which the binder covers
    const r = await outcome(ch);
    t.ok(r.conn.error instanceof TlsAlertError && r.conn.error.alert === AlertDescription.decrypt_error, r.conn.error?.message ?? 'no error');
    t.same([...r.out.subarray(-7)], [21, 3, 3, 0, 2, 2, 51]);
  });
});

t.test('the advertised ticket_lifetime never outlives the ticket keys: a ticket resumes until its lifetime ends', async (t) => {
  // A week configured (TlsServer's default), keys that rotate hourly and open for two hours (TicketKeys' defaults).
  const week = { ticketLifetimeS: 7 * 24 * 3600 };
  for (const intoEpochMs of [1_000, 3_599_000]) {
    clock = Math.ceil(clock / 3_600_000) * 3_600_000 + intoEpochMs;
    const tk = await getTicket({ config: week });
    t.ok(tk.lifetime <= 7200 - intoEpochMs / 1000 && tk.lifetime >= 3600, `lifetime ${tk.lifetime} s fits the key's accept window (sealed ${intoEpochMs / 1000} s into the epoch)`);
    const ageMs = tk.lifetime * 1000 - 1000;
    clock += ageMs;
    const r = await outcome(resumeHello(tk, { ageMs }).ch, config(week));
    t.ok(r.resumed, `resumed ${ageMs / 1000} s later, within the advertised lifetime (${r.conn.error?.message ?? 'no error'})`);
  }
});
