// A minimal scripted TLS 1.3 client for state-transition tests over a sans-IO ServerConnection:
// builds ClientHellos byte by byte (so tests can break any field), follows the server flight
// with the real key schedule, and lets a test send a good or a bad Finished.
import { createCipheriv, randomBytes, type CipherGCMTypes } from 'node:crypto';
import { Reader, Writer } from '../../src/tls/codec.js';
import { ExtensionType } from '../../src/tls/extensions.js';
import type { ConnectionEvent, ServerConnection } from '../../src/tls/connection.js';
import { KeySchedule13, Transcript, finishedVerifyData, nextTrafficSecret, trafficKeys } from '../../src/tls/keyschedule.js';
import { ContentType, RecordDeframer, RecordOpener, RecordSealer, plaintextRecords } from '../../src/tls/record.js';
import { EphemeralKey, NamedGroup, suiteById, type CipherSuite } from '../../src/tls/suites.js';
import { SignatureScheme } from '../../src/tls/signer.js';

export type Ext = [type: number, body: Buffer];

const w = (f: (w: Writer) => void): Buffer => { const x = new Writer(); f(x); return Buffer.from(x.finish()); };
const u16s = (len: 1 | 2, vals: number[]): Buffer => w((x) => x.lengthPrefixed(len, (l) => vals.forEach((v) => l.u16(v))));

/** Extension body builders. */
export const ext = {
  versions: (v: number[] = [0x0304]): Ext => [ExtensionType.supported_versions, u16s(1, v)],
  groups: (g: number[]): Ext => [ExtensionType.supported_groups, u16s(2, g)],
  sigAlgs: (s: number[]): Ext => [ExtensionType.signature_algorithms, u16s(2, s)],
  keyShares: (shares: Array<{ group: number; key: Buffer }>): Ext => [ExtensionType.key_share, w((x) => x.lengthPrefixed(2, (l) => shares.forEach((s) => l.u16(s.group).vec16(s.key))))],
  sni: (name: string): Ext => [ExtensionType.server_name, w((x) => x.lengthPrefixed(2, (l) => l.u8(0).vec16(Buffer.from(name))))],
  alpn: (p: string[]): Ext => [ExtensionType.alpn, w((x) => x.lengthPrefixed(2, (l) => p.forEach((s) => l.vec8(Buffer.from(s)))))],
  pskModes: (m: number[] = [1]): Ext => [ExtensionType.psk_key_exchange_modes, w((x) => x.vec8(Buffer.from(m)))],
  earlyData: (): Ext => [ExtensionType.early_data, Buffer.alloc(0)],
  psk: (ids: Array<{ identity: Buffer; age: number }>, binders: Buffer[]): Ext => [ExtensionType.pre_shared_key, w((x) => {
    x.lengthPrefixed(2, (l) => ids.forEach((i) => l.vec16(i.identity).u32(i.age)));
    x.lengthPrefixed(2, (l) => binders.forEach((b) => l.vec8(b)));
  })],
};

export interface HelloSpec {
  legacyVersion?: number;
  random?: Buffer;
  sessionId?: Buffer;
  suites?: number[];
  compression?: number[];
  extensions?: Ext[];
}

/** Encodes a ClientHello handshake message (header included). */
export function encodeClientHello(s: HelloSpec): Buffer {
  return w((x) => x.u8(1).lengthPrefixed(3, (b) => {
    b.u16(s.legacyVersion ?? 0x0303).bytes(s.random ?? randomBytes(32)).vec8(s.sessionId ?? Buffer.alloc(0));
    b.lengthPrefixed(2, (l) => (s.suites ?? [0x1301, 0x1302, 0x1303]).forEach((c) => l.u16(c)));
    b.vec8(Buffer.from(s.compression ?? [0]));
    b.lengthPrefixed(2, (l) => (s.extensions ?? []).forEach(([t, body]) => l.u16(t).vec16(body)));
  }));
}

/** A plaintext record. */
export function record(type: number, body: Buffer, version = 0x0303): Buffer {
  return Buffer.concat([Buffer.from([type, version >> 8, version & 0xff, body.length >> 8, body.length & 0xff]), body]);
}

/** A client key share and the extensions of a typical good hello. */
export function goodHello(opts: { group?: number; sigAlgs?: number[]; extra?: Ext[]; sessionId?: Buffer; omit?: number[] } = {}): { spec: HelloSpec; key: EphemeralKey } {
  const group = opts.group ?? NamedGroup.x25519;
  const key = EphemeralKey.generate(group);
  const extensions: Ext[] = [
    ext.versions(), ext.groups([NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1]),
    ext.sigAlgs(opts.sigAlgs ?? [SignatureScheme.ecdsa_secp256r1_sha256, SignatureScheme.rsa_pss_rsae_sha256]),
    ext.keyShares([{ group, key: key.publicBytes() }]), ...(opts.extra ?? []),
  ].filter(([t]) => !(opts.omit ?? []).includes(t));
  return { spec: { extensions, sessionId: opts.sessionId }, key };
}

/** Feeds bytes, answers a pending signature with `signer`, and returns everything the server sent. */
export async function exchange(conn: ServerConnection, bytes: Buffer, events: ConnectionEvent[] = []): Promise<Buffer> {
  conn.feed(bytes);
  const out: Buffer[] = [];
  for (;;) {
    const o = conn.takeOutput();
    if (o) out.push(o);
    const ev = conn.takeEvents();
    events.push(...ev.filter((e) => e.type !== 'sign'));
    const sign = ev.find((e) => e.type === 'sign');
    if (!sign || sign.type !== 'sign') break;
    const r = sign.request;
    conn.resumeWithSignature(r.epoch, await r.signer.sign(r.scheme, r.content));
  }
  return Buffer.concat(out);
}

/** Splits server output into records. */
export function records(bytes: Buffer): Array<{ type: number; fragment: Buffer }> {
  const d = new RecordDeframer();
  d.push(bytes);
  const out: Array<{ type: number; fragment: Buffer }> = [];
  for (let r = d.next(); r; r = d.next()) out.push(r);
  return out;
}

/** The state a test client holds after reading the server's first flight. */
export interface ClientSide {
  suite: CipherSuite;
  transcript: Transcript;
  schedule: KeySchedule13;
  hs: { client: Buffer; server: Buffer };
  messages: Array<{ type: number; body: Buffer }>;
  serverHello: { suite: number; extensions: Map<number, Buffer>; sessionId: Buffer; random: Buffer };
  sealer: RecordSealer;
  /** The client Finished message (correct); tests may corrupt it. */
  finished: Buffer;
  /** Application keys (after the server Finished). */
  app: { client: Buffer; server: Buffer };
  sawCcs: boolean;
}

// An EphemeralKey derives once; remembering the result lets a test retry readServerFlight while
// the flight is still arriving over TCP.
const sharedSecrets = new WeakMap<SharedKey, Buffer>();

/** A client key share: EphemeralKey, or a kex-client.ts key for the groups it does not cover. */
export interface SharedKey { publicBytes(): Buffer; deriveShared(serverShare: Buffer): Buffer }

/** Parses ServerHello, decrypts the server flight, and prepares the client Finished. */
export function readServerFlight(chRaw: Buffer, key: SharedKey, out: Buffer, psk?: Buffer, prefix: Buffer[] = []): ClientSide {
  const recs = records(out);
  const sh = recs.shift()!;
  if (sh.type !== ContentType.handshake) throw new Error(`expected ServerHello, got record ${sh.type} ${sh.fragment.toString('hex')}`);
  const r = new Reader(sh.fragment);
  r.u8(); r.u24(); r.u16();
  const random = r.bytes(32); const sessionId = r.vec8(); const suiteId = r.u16(); r.u8();
  const extensions = new Map<number, Buffer>();
  const er = r.sub(2);
  while (er.remaining) { const t = er.u16(); extensions.set(t, er.vec16()); }
  const suite = suiteById(suiteId)!;
  const ks = new Reader(extensions.get(ExtensionType.key_share)!); ks.u16();
  const shared = sharedSecrets.get(key) ?? key.deriveShared(ks.vec16());
  sharedSecrets.set(key, shared);
  const transcript = new Transcript(suite.hash);
  for (const p of prefix) transcript.update(p);
  transcript.update(chRaw); transcript.update(sh.fragment);
  const schedule = new KeySchedule13(suite, psk);
  const hs = schedule.handshakeSecrets(shared, transcript.digest());
  const k = trafficKeys(suite, hs.server);
  const opener = new RecordOpener(suite, k.key, k.iv);
  let sawCcs = false;
  let hsBytes = Buffer.alloc(0);
  for (const rec of recs) {
    if (rec.type === ContentType.change_cipher_spec) { sawCcs = true; continue; }
    const inner = opener.open({ type: rec.type, version: 0x0303, fragment: rec.fragment });
    hsBytes = Buffer.concat([hsBytes, inner.content]);
  }
  const messages: Array<{ type: number; body: Buffer }> = [];
  let fin: Buffer | undefined;
  const m = new Reader(hsBytes);
  while (m.remaining) {
    const start = m.offset; const type = m.u8(); const body = m.vec24();
    messages.push({ type, body });
    const raw = hsBytes.subarray(start, m.offset);
    if (type === 20) {
      const expected = finishedVerifyData(suite.hash, hs.server, transcript.digest());
      if (!expected.equals(body)) throw new Error('server Finished does not verify');
      transcript.update(raw);
      fin = raw;
    } else transcript.update(raw);
  }
  if (!fin) throw new Error('no server Finished');
  const app = schedule.applicationSecrets(transcript.digest());
  const clientFin = finishedVerifyData(suite.hash, hs.client, transcript.digest());
  const ck = trafficKeys(suite, hs.client);
  return {
    suite, transcript, schedule, hs, messages, sawCcs, app,
    serverHello: { suite: suiteId, extensions, sessionId: Buffer.from(sessionId), random: Buffer.from(random) },
    sealer: new RecordSealer(suite, ck.key, ck.iv),
    finished: Buffer.concat([Buffer.from([20, 0, 0, clientFin.length]), clientFin]),
  };
}

/**
 * The handshake secrets from the ServerHello alone (the first record of `out`): what a client
 * has before the server's Finished, e.g. to send an encrypted alert while the server waits to sign.
 */
export function handshakeSecretsFromServerHello(chRaw: Buffer, key: EphemeralKey, out: Buffer): { suite: CipherSuite; hs: { client: Buffer; server: Buffer } } {
  const sh = records(out)[0]!;
  const r = new Reader(sh.fragment);
  r.u8(); r.u24(); r.u16(); r.bytes(32); r.vec8();
  const suite = suiteById(r.u16())!; r.u8();
  const er = r.sub(2);
  let share: Buffer | undefined;
  while (er.remaining) { const t = er.u16(); const body = er.vec16(); if (t === ExtensionType.key_share) share = body.subarray(4); }
  const transcript = new Transcript(suite.hash);
  transcript.update(chRaw); transcript.update(sh.fragment);
  return { suite, hs: new KeySchedule13(suite).handshakeSecrets(key.deriveShared(share!), transcript.digest()) };
}

/** Feeds a hello, reads the flight, sends a correct Finished: an established connection. */
export async function fullHandshake(conn: ServerConnection, opts: Parameters<typeof goodHello>[0] = {}): Promise<ClientSide & { appSealer: RecordSealer; appOpener: RecordOpener; afterFinished: Buffer }> {
  const { spec, key } = goodHello(opts);
  const ch = encodeClientHello(spec);
  const out = await exchange(conn, plaintextRecords(ContentType.handshake, ch));
  const c = readServerFlight(ch, key, out);
  const afterFinished = await exchange(conn, c.sealer.seal(ContentType.handshake, c.finished));
  const ak = trafficKeys(c.suite, c.app.client);
  const sk = trafficKeys(c.suite, c.app.server);
  return { ...c, appSealer: new RecordSealer(c.suite, ak.key, ak.iv), appOpener: new RecordOpener(c.suite, sk.key, sk.iv), afterFinished };
}

/**
 * Seals one TLS 1.3 record by hand: `inner` is the whole TLSInnerPlaintext (content ‖ type ‖
 * padding), so tests can send padding-only or unknown inner types, under any outer type and
 * legacy_record_version, at an explicit sequence number.
 */
export function sealRaw(suite: CipherSuite, secret: Buffer, seq: bigint, inner: Buffer, header: { type?: number; version?: number } = {}): Buffer {
  const { key, iv } = trafficKeys(suite, secret);
  const nonce = Buffer.from(iv);
  nonce.writeBigUInt64BE(iv.readBigUInt64BE(4) ^ seq, 4);
  const head = Buffer.from([header.type ?? ContentType.application_data, 0, 0, 0, 0]);
  head.writeUInt16BE(header.version ?? 0x0303, 1);
  head.writeUInt16BE(inner.length + 16, 3);
  const c = createCipheriv(suite.aead as CipherGCMTypes, key, nonce, { authTagLength: 16 });
  c.setAAD(head);
  const ct = Buffer.concat([c.update(inner), c.final()]);
  return Buffer.concat([head, ct, c.getAuthTag()]);
}

/** A client-side write key that can be rolled forward with KeyUpdate (post-handshake tests). */
export class ClientWriter {
  private sealer: RecordSealer;
  constructor(private readonly suite: CipherSuite, private secret: Buffer) {
    const k = trafficKeys(suite, secret);
    this.sealer = new RecordSealer(suite, k.key, k.iv);
  }

  /** Seals content of inner type `type` under the current key. */
  seal(type: number, content: Buffer, padding = 0): Buffer { return this.sealer.seal(type, content, padding); }

  /** Switches to the next traffic secret (call after sending a KeyUpdate). */
  roll(): void {
    this.secret = nextTrafficSecret(this.suite.hash, this.secret);
    const k = trafficKeys(this.suite, this.secret);
    this.sealer = new RecordSealer(this.suite, k.key, k.iv);
  }
}

/** A KeyUpdate message (request_update 0 or 1, or any byte for negative tests). */
export function keyUpdateMsg(requestUpdate: number): Buffer {
  return Buffer.from([24, 0, 0, 1, requestUpdate]);
}
