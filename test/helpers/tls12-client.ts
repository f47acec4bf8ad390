// A scripted TLS 1.2 client for state-transition tests over a sans-IO ServerConnection: builds
// ClientHellos byte by byte (so tests can break any field), reads the server flight, verifies
// the ServerKeyExchange signature and the server Finished with an independent computation
// (raw message bytes hashed here, PRF from prf12.ts, which a test checks against openssl),
// and lets a test send the client flight whole or in any broken order.
import { constants, createHash, sign as cryptoSign, verify, X509Certificate, type KeyObject } from 'node:crypto';
import { Reader, Writer } from '../../src/tls/codec.js';
import type { ServerConnection } from '../../src/tls/connection.js';
import { extendedMasterSecret, finishedVerifyData12, keyBlock12, prf12 } from '../../src/tls/prf12.js';
import { ContentType, plaintextRecords } from '../../src/tls/record.js';
import { RecordOpener12, RecordSealer12 } from '../../src/tls/record12.js';
import { SignatureScheme } from '../../src/tls/signer.js';
import { EphemeralKey, NamedGroup } from '../../src/tls/suites.js';
import { suite12ById, type CipherSuite12 } from '../../src/tls/suites12.js';
import { SoftSigner, type SoftSignerOptions } from './soft-signer.js';
import { encodeClientHello, exchange, ext, records, type Ext } from './tls13-client.js';

export const Suite12 = {
  ECDSA_AES128: 0xc02b, ECDSA_AES256: 0xc02c, ECDSA_CHACHA: 0xcca9,
  RSA_AES128: 0xc02f, RSA_AES256: 0xc030, RSA_CHACHA: 0xcca8,
} as const;
export const ALL_SUITES_12 = Object.values(Suite12);

const w = (f: (w: Writer) => void): Buffer => { const x = new Writer(); f(x); return Buffer.from(x.finish()); };

/** TLS 1.2 extension builders (the shared ones are in tls13-client.ts `ext`). */
export const ext12 = {
  ems: (): Ext => [23, Buffer.alloc(0)],
  reneg: (verifyData = Buffer.alloc(0)): Ext => [0xff01, w((x) => x.vec8(verifyData))],
  pointFormats: (f: number[] = [0]): Ext => [11, w((x) => x.vec8(Buffer.from(f)))],
  ticket: (ticket: Buffer = Buffer.alloc(0)): Ext => [35, Buffer.from(ticket)],
};

export const DEFAULT_SIGALGS_12 = [
  SignatureScheme.ecdsa_secp256r1_sha256, SignatureScheme.ecdsa_secp384r1_sha384, SignatureScheme.rsa_pss_rsae_sha256,
  SignatureScheme.rsa_pss_rsae_sha384, SignatureScheme.rsa_pkcs1_sha256, SignatureScheme.rsa_pkcs1_sha384,
];

export interface Hello12Opts {
  suites?: number[];
  groups?: number[];
  sigAlgs?: number[];
  /** Extensions added after the defaults. */
  extra?: Ext[];
  /** Extension types left out of the defaults. */
  omit?: number[];
  sessionId?: Buffer;
  legacyVersion?: number;
  compression?: number[];
  /** A session_ticket extension (empty buffer: ask for a ticket). */
  ticket?: Buffer;
}

/** A TLS 1.2 ClientHello message (header included) with the modern profile's extensions. */
export function hello12(o: Hello12Opts = {}): Buffer {
  const defaults: Ext[] = [
    ext.groups(o.groups ?? [NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1]),
    ext.sigAlgs(o.sigAlgs ?? DEFAULT_SIGALGS_12), ext12.ems(), ext12.reneg(), ext12.pointFormats(),
    ...(o.ticket ? [ext12.ticket(o.ticket)] : []),
  ];
  const extensions = [...defaults.filter(([t]) => !(o.omit ?? []).includes(t)), ...(o.extra ?? [])];
  return encodeClientHello({
    legacyVersion: o.legacyVersion ?? 0x0303, suites: o.suites ?? [...ALL_SUITES_12], compression: o.compression,
    sessionId: o.sessionId, extensions,
  });
}

/** The server's first flight, parsed. */
export interface Flight12 {
  suite: CipherSuite12;
  ch: Buffer;
  clientRandom: Buffer;
  serverRandom: Buffer;
  sessionId: Buffer;
  extensions: Map<number, Buffer>;
  /** Raw handshake messages in order, ClientHello first (the transcript). */
  transcript: Buffer[];
  chain: Buffer[];
  ske?: { group: number; point: Buffer; scheme: number; signature: Buffer; params: Buffer };
  /** Abbreviated handshake: the server's CCS and Finished arrived in the first flight. */
  resumed: boolean;
  /** Raw bytes after the server's CCS (encrypted Finished), for resumption. */
  afterCcs: Buffer[];
}

function handshakeMessages(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  const r = new Reader(buf);
  while (r.remaining) { const start = r.offset; r.u8(); r.vec24(); out.push(buf.subarray(start, r.offset)); }
  return out;
}

/** Parses ServerHello .. ServerHelloDone (or ServerHello, CCS, Finished when resuming). */
export function parseFlight12(ch: Buffer, out: Buffer): Flight12 {
  let hs = Buffer.alloc(0);
  let ccs = false;
  const afterCcs: Buffer[] = [];
  for (const rec of records(out)) {
    if (ccs) { afterCcs.push(Buffer.concat([Buffer.from([rec.type, 3, 3, rec.fragment.length >> 8, rec.fragment.length & 0xff]), rec.fragment])); continue; }
    if (rec.type === ContentType.change_cipher_spec) { ccs = true; continue; }
    if (rec.type !== ContentType.handshake) throw new Error(`expected a handshake record, got ${rec.type} ${rec.fragment.toString('hex')}`);
    hs = Buffer.concat([hs, rec.fragment]);
  }
  const msgs = handshakeMessages(hs);
  const sh = new Reader(msgs[0]!);
  if (sh.u8() !== 2) throw new Error('expected ServerHello');
  sh.u24();
  if (sh.u16() !== 0x0303) throw new Error('ServerHello.version is not TLS 1.2');
  const serverRandom = Buffer.from(sh.bytes(32));
  const sessionId = Buffer.from(sh.vec8());
  const suite = suite12ById(sh.u16())!;
  if (sh.u8() !== 0) throw new Error('compression is not null');
  const extensions = new Map<number, Buffer>();
  if (sh.remaining) { const er = sh.sub(2); while (er.remaining) { const t = er.u16(); extensions.set(t, Buffer.from(er.vec16())); } }
  const f: Flight12 = { suite, ch, clientRandom: ch.subarray(6, 38), serverRandom, sessionId, extensions, transcript: [ch, msgs[0]!], chain: [], resumed: ccs, afterCcs };
  for (const m of msgs.slice(1)) {
    f.transcript.push(m);
    const r = new Reader(m.subarray(4));
    if (m[0] === 11) { const l = r.sub(3); while (l.remaining) f.chain.push(Buffer.from(l.vec24())); }
    if (m[0] === 12) {
      if (r.u8() !== 3) throw new Error('SKE curve type is not named_curve');
      const group = r.u16(); const point = Buffer.from(r.vec8());
      const params = Buffer.from(m.subarray(4, 4 + r.offset));
      f.ske = { group, point, params, scheme: r.u16(), signature: Buffer.from(r.vec16()) };
    }
  }
  return f;
}

const HASH: Record<number, string> = { 0x0401: 'sha256', 0x0501: 'sha384', 0x0601: 'sha512', 0x0403: 'sha256', 0x0503: 'sha384', 0x0603: 'sha512', 0x0804: 'sha256', 0x0805: 'sha384', 0x0806: 'sha512' };

/** Verifies the ServerKeyExchange signature with the leaf certificate, as a client does. */
export function skeVerifies(f: Flight12): boolean {
  const { ske } = f;
  if (!ske) return false;
  const key = new X509Certificate(f.chain[0]!).publicKey;
  const content = Buffer.concat([f.clientRandom, f.serverRandom, ske.params]);
  const pss = ske.scheme >= 0x0804 && ske.scheme <= 0x0806;
  return verify(HASH[ske.scheme]!, content, pss ? { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST } : key, ske.signature);
}

const digest = (f: Flight12, msgs: Buffer[]): Buffer => { const h = createHash(f.suite.hash); for (const m of msgs) h.update(m); return h.digest(); };

/** The client's side of a full handshake after the first flight: keys and the messages to send. */
export interface ClientFlight12 {
  cke: Buffer;
  /** The client Finished message (correct); tests may corrupt it. */
  finished: Buffer;
  master: Buffer;
  sealer: RecordSealer12;
  opener: RecordOpener12;
  transcript: Buffer[];
}

/** Computes ClientKeyExchange and Finished for a full handshake (or Finished only when resuming with `master`). */
export function clientFlight12(f: Flight12, master?: Buffer): ClientFlight12 {
  const transcript = [...f.transcript];
  let cke: Buffer = Buffer.alloc(0);
  if (!master) {
    const key = EphemeralKey.generate(f.ske!.group);
    const pms = key.deriveShared(f.ske!.point);
    cke = w((x) => x.u8(16).lengthPrefixed(3, (b) => b.vec8(key.publicBytes())));
    transcript.push(cke);
    // The server's ServerHello says whether the session uses RFC 7627 (it echoes our offer).
    master = f.extensions.has(23)
      ? extendedMasterSecret(f.suite.hash, pms, digest(f, transcript))
      : prf12(f.suite.hash, pms, 'master secret', Buffer.concat([f.clientRandom, f.serverRandom]), 48);
  }
  const kb = keyBlock12(f.suite, master, f.clientRandom, f.serverRandom);
  const vd = finishedVerifyData12(f.suite.hash, master, 'client', digest(f, f.resumed ? [...transcript, serverFinishedOf(f, master)] : transcript));
  const finished = Buffer.concat([Buffer.from([20, 0, 0, 12]), vd]);
  return { cke, finished, master, transcript, sealer: new RecordSealer12(f.suite, kb.client.key, kb.client.iv), opener: new RecordOpener12(f.suite, kb.server.key, kb.server.iv) };
}

// On resumption the server Finished (already received) precedes the client's in the transcript.
function serverFinishedOf(f: Flight12, master: Buffer): Buffer {
  const kb = keyBlock12(f.suite, master, f.clientRandom, f.serverRandom);
  const opener = new RecordOpener12(f.suite, kb.server.key, kb.server.iv);
  const rec = records(Buffer.concat(f.afterCcs))[0]!;
  const fin = opener.open({ type: rec.type, version: 0x0303, fragment: rec.fragment }).content;
  const expected = finishedVerifyData12(f.suite.hash, master, 'server', digest(f, f.transcript));
  if (!fin.subarray(4).equals(expected)) throw new Error('server Finished (resumption) does not verify');
  return fin;
}

export const CCS = Buffer.from([20, 3, 3, 0, 1, 1]);

/** The whole client flight as bytes: CKE (plaintext), CCS, encrypted Finished. */
export function clientFlightBytes(c: ClientFlight12): Buffer {
  return Buffer.concat([c.cke.length ? plaintextRecords(ContentType.handshake, c.cke) : Buffer.alloc(0), CCS, c.sealer.seal(ContentType.handshake, c.finished)]);
}

/** The server's answer to the client flight: optional NewSessionTicket, CCS, verified Finished. */
export function readServerFinish12(f: Flight12, c: ClientFlight12, out: Buffer): { ticket?: Buffer; lifetime?: number } {
  const recs = records(out);
  let ticket: Buffer | undefined;
  let lifetime: number | undefined;
  const transcript = [...c.transcript, c.finished];
  let i = 0;
  if (recs[i]?.type === ContentType.handshake) {
    const nst = Buffer.from(recs[i++]!.fragment);
    if (nst[0] !== 4) throw new Error(`expected NewSessionTicket, got ${nst[0]}`);
    const r = new Reader(nst.subarray(4)); lifetime = r.u32(); ticket = Buffer.from(r.vec16());
    transcript.push(nst);
  }
  if (recs[i++]?.type !== ContentType.change_cipher_spec) throw new Error(`expected the server CCS: ${out.toString('hex').slice(0, 80)}`);
  const rec = recs[i]!;
  const fin = c.opener.open({ type: rec.type, version: 0x0303, fragment: rec.fragment }).content;
  const expected = finishedVerifyData12(f.suite.hash, c.master, 'server', digest(f, transcript));
  if (!fin.subarray(4).equals(expected)) throw new Error('server Finished does not verify');
  return { ticket, lifetime };
}

/** Sends a hello and returns the parsed first flight (the signature answered by the signer). */
export async function start12(conn: ServerConnection, o: Hello12Opts = {}): Promise<{ f: Flight12; out: Buffer }> {
  const ch = hello12(o);
  const out = await exchange(conn, plaintextRecords(ContentType.handshake, ch));
  return { f: parseFlight12(ch, out), out };
}

/** A complete full handshake; returns the client state with traffic keys. */
export async function full12(conn: ServerConnection, o: Hello12Opts = {}): Promise<{ f: Flight12; c: ClientFlight12; ticket?: Buffer; lifetime?: number }> {
  const { f } = await start12(conn, o);
  const c = clientFlight12(f);
  const out = await exchange(conn, clientFlightBytes(c));
  const { ticket, lifetime } = readServerFinish12(f, c, out);
  return { f, c, ...(ticket ? { ticket, lifetime } : {}) };
}

/** A SoftSigner for RSA keys that also does PKCS#1 v1.5 (as the engine's signers do), for TLS 1.2 tests. */
export class Pkcs1SoftSigner extends SoftSigner {
  override readonly schemes: readonly number[];
  constructor(private readonly rsaKey: KeyObject, opts?: SoftSignerOptions) {
    super(rsaKey, opts);
    this.schemes = [SignatureScheme.rsa_pss_rsae_sha256, SignatureScheme.rsa_pss_rsae_sha384, SignatureScheme.rsa_pss_rsae_sha512, SignatureScheme.rsa_pkcs1_sha256, SignatureScheme.rsa_pkcs1_sha384, SignatureScheme.rsa_pkcs1_sha512];
  }

  override async sign(scheme: number, data: Buffer, signal?: AbortSignal): Promise<Buffer> {
    const hash = { [SignatureScheme.rsa_pkcs1_sha256]: 'sha256', [SignatureScheme.rsa_pkcs1_sha384]: 'sha384', [SignatureScheme.rsa_pkcs1_sha512]: 'sha512' }[scheme];
    if (!hash) return super.sign(scheme, data, signal);
    this.calls++;
    return cryptoSign(hash, data, { key: this.rsaKey, padding: constants.RSA_PKCS1_PADDING });
  }
}
