// The TLS 1.2 server handshake (RFC 5246 §7.3 with RFC 7627, 5746, 8422, 5077), one class per
// state, in protocol order:
//   full:    ClientHello → [sign SKE content, asynchronously] ServerHello, Certificate …
//            ServerKeyExchange, ServerHelloDone → ClientKeyExchange → CCS → client Finished →
//            [NewSessionTicket], CCS, Finished → traffic
//   resumed: ClientHello(ticket) → ServerHello, CCS, Finished → CCS → client Finished → traffic
// ChangeCipherSpec is a state input like a handshake message: only ExpectChangeCipherSpec12
// accepts it (CVE-2014-0224). Also holds ExpectClientHelloAny, the version dispatch.
import { timingSafeEqual } from 'node:crypto';
import { randomBytesPooled } from './random.js';
import { AlertDescription, fatal } from './alert.js';
import { ACME_TLS_ALPN, acmeChallenge, type CertChoice } from './certselect.js';
import { CLIENT_SCHEMES_12, verifyClientChain, verifyClientSignature, type ClientAuthPolicy, type PeerIdentity } from './client-auth.js';
import { decodeCertificateVerify, decodeClientCertificate12, encodeCertificateRequest12 } from './client-auth-messages.js';
import { ExpectClientHello, type HandshakeIo, type State } from './handshake13.js';
import { checkClientHello12, chooseGroup12, chooseSuiteAndCertificate12, enabledVersions, selectVersion, type Hello12Options, type ServerHandshakeConfig } from './hello12.js';
import { chooseAlpn } from './hello13.js';
import { Transcript } from './keyschedule.js';
import { HandshakeType, decodeClientHello, decodeFinished, encodeFinished, type ClientHello, type HandshakeMessage } from './messages.js';
import {
  HandshakeType12, decodeClientKeyExchange, ecdheParams, encodeCertificate12, encodeNewSessionTicket12,
  encodeServerHello12, encodeServerHelloDone, encodeServerKeyExchange, serverKeyExchangeContent,
} from './messages12.js';
import { extendedMasterSecret, finishedVerifyData12, keyBlock12, legacyMasterSecret, type DirectionKeys } from './prf12.js';
import { RecordOpener12, RecordSealer12 } from './record12.js';
import { ticketLifetimeS } from './session.js';
import { verifyScheme } from './schemes.js';
import { EphemeralKey } from './suites.js';
import { suite12ById, type CipherSuite12 } from './suites12.js';
import { openTicket12, sealTicket12 } from './tickets12.js';

/** The connection services the TLS 1.2 states use on top of HandshakeIo. */
export interface HandshakeIo12 extends HandshakeIo {
  readonly config: ServerHandshakeConfig;
  /** Sends ChangeCipherSpec, then protects everything written after it with `sealer`. */
  sendChangeCipherSpec(sealer: RecordSealer12): void;
  /** The client's ChangeCipherSpec arrived: records from now on are opened with `opener`. */
  setReadProtection(opener: RecordOpener12): void;
  /** TLS 1.2 was chosen: record framing follows RFC 5246 from the next record on. */
  useTls12Records(): void;
  /** A warning-level alert under the current write protection (no_renegotiation). */
  sendWarningAlert(description: number): void;
}

/** A TLS 1.2 state: also told about ChangeCipherSpec records, which most states refuse. */
export interface State12 extends State {
  changeCipherSpec(io: HandshakeIo12): State;
}

/** True for the TLS 1.2 states (they take ChangeCipherSpec as an input). */
export function isState12(s: State): s is State12 {
  return 'changeCipherSpec' in s;
}

declare const finished12Proof: unique symbol;
/** Proof that the client's TLS 1.2 Finished verified; only `verifyClientFinished12` makes one. */
export type ClientFinished12Verified = { readonly [finished12Proof]: true };

function verifyClientFinished12(expected: Buffer, got: Buffer): ClientFinished12Verified {
  if (got.length !== expected.length || !timingSafeEqual(got, expected)) throw fatal('decrypt_error', 'client Finished does not verify');
  return {} as ClientFinished12Verified;
}

function unexpected(state: string, what: string): never {
  throw fatal('unexpected_message', `${what} is not allowed in state ${state}`);
}

const messageName = (m: HandshakeMessage): string => `handshake message type ${m.type}`;

/** RFC 8446 §4.1.3: the last 8 bytes of ServerHello.random when 1.3 is enabled but 1.2 chosen. */
export const DOWNGRADE_TLS12 = Buffer.from('444f574e47524401', 'hex');

function serverRandom12(config: ServerHandshakeConfig): Buffer {
  const random = randomBytesPooled(32);
  if (enabledVersions(config).tls13) DOWNGRADE_TLS12.copy(random, 24);
  return random;
}

/** Waiting for the first ClientHello: picks the version, then hands over to the 1.3 or 1.2 states. */
export class ExpectClientHelloAny implements State {
  readonly name = 'ExpectClientHello';
  readonly wantsInput = true;

  handle(m: HandshakeMessage, io: HandshakeIo): State {
    if (m.type !== HandshakeType.client_hello) unexpected(this.name, messageName(m));
    const io12 = io as HandshakeIo12; // ServerConnection implements both interfaces
    const ch = decodeClientHello(m.raw);
    // The TLS 1.3 state decodes the hello again: a few microseconds, and handshake13.ts stays as it is.
    if (selectVersion(ch, io12.config) === 'TLSv1.3') return new ExpectClientHello().handle(m, io);
    return startTls12(ch, io12);
  }
}

/** Everything the later states need to know about this handshake. */
interface Context12 {
  ch: ClientHello;
  suite: CipherSuite12;
  serverRandom: Buffer;
  transcript: Transcript;
  alpn: string | undefined;
  servername: string;
  /** A NewSessionTicket goes out before our CCS (full handshakes whose client asked for one). */
  issueTicket: boolean;
  /** The session uses the RFC 7627 extended master secret (the client offered it). */
  ems: boolean;
  /** mTLS: the client's verified chain, once its Certificate arrived (its CertificateVerify is still due). */
  peer?: PeerIdentity;
}

/**
 * A transcript that also keeps the messages: a TLS 1.2 client CertificateVerify signs their
 * concatenation (RFC 5246 §7.4.8), not a hash we could take from a running digest.
 */
class RecordingTranscript extends Transcript {
  messages: Buffer[] = [];
  override update(msg: Buffer): void {
    super.update(msg);
    this.messages.push(Buffer.from(msg));
  }
}

interface Keys12 { master: Buffer; client: DirectionKeys; server: DirectionKeys }

function startTls12(ch: ClientHello, io: HandshakeIo12): State {
  const { config, negotiated } = io;
  io.useTls12Records();
  const opts = checkClientHello12(ch, config);
  const ems = opts.extendedMasterSecret;
  const servername = ch.ext.serverName ?? '';
  negotiated.servername = ch.ext.serverName;
  const challenge = acmeChallenge(ch, config);
  const alpn = challenge ? ACME_TLS_ALPN : chooseAlpn(ch, config.alpnProtocols);
  negotiated.alpn = alpn;

  // No resumption under mTLS: an abbreviated handshake has no client Certificate to verify.
  // A validation handshake must present the challenge certificate, so it never resumes either.
  if (opts.sessionTicket && config.ticketKeys && !config.clientAuth && !challenge) {
    const t = openTicket12(config.ticketKeys, opts.sessionTicket, config.now());
    // RFC 7627 §5.3: a session resumes only with the EMS state it was made with; else a full handshake.
    const usable = t && t.servername === servername && t.extendedMasterSecret === ems
      && ch.cipherSuites.includes(t.suite);
    const suite = usable ? suite12ById(t.suite) : undefined;
    if (t && suite) {
      const ctx: Context12 = {
        ch, suite, serverRandom: serverRandom12(config), transcript: new Transcript(suite.hash),
        alpn, servername, issueTicket: false, ems,
      };
      return resumeSession(ctx, t.masterSecret, opts, io);
    }
  }

  const { suite, cert } = chooseSuiteAndCertificate12(ch, challenge ? [challenge] : config.certificates);
  const group = chooseGroup12(ch);
  io.admitFullHandshake();
  Object.assign(negotiated, { suite, group, keyType: cert.entry.keyType, scheme: cert.scheme });
  const ctx: Context12 = {
    ch, suite, serverRandom: serverRandom12(config),
    transcript: config.clientAuth ? new RecordingTranscript(suite.hash) : new Transcript(suite.hash),
    alpn, servername,
    issueTicket: opts.sessionTicket !== undefined && config.ticketKeys !== undefined && config.ticketCount > 0
      && !config.clientAuth && !challenge,
    ems,
  };
  // Where the asynchronous signature fits: the signed content is known once the
  // ephemeral key exists, so the request goes out before the rest of the flight is encoded.
  const eph = EphemeralKey.generate(group);
  const params = ecdheParams(group, eph.publicBytes());
  const content = serverKeyExchangeContent(ch.random, ctx.serverRandom, params);
  io.requestSignature({ signer: cert.entry.certified.signer, scheme: cert.scheme, content });

  const sh = encodeServerHello12({
    random: ctx.serverRandom, sessionId: Buffer.alloc(0), suite: suite.id, renegotiationInfo: opts.secureRenegotiation,
    pointFormats: opts.pointFormats, ackServerName: ch.ext.serverName !== undefined, sessionTicket: ctx.issueTicket,
    extendedMasterSecret: ems, alpn,
  });
  const certMsg = encodeCertificate12(cert.entry.certified.chain);
  ctx.transcript.update(ch.raw);
  ctx.transcript.update(sh);
  ctx.transcript.update(certMsg);
  io.sendPlaintextHandshake(Buffer.concat([sh, certMsg]));
  return new AwaitSignature12(ctx, cert, content, params, eph);
}

/** RFC 5077 §3.1 abbreviated handshake: our CCS and Finished follow ServerHello at once. */
function resumeSession(ctx: Context12, master: Buffer, opts: Hello12Options, io: HandshakeIo12): State {
  const { ch, suite, transcript } = ctx;
  Object.assign(io.negotiated, { suite, resumed: true });
  // RFC 5077 §3.4: echo the client's session id so it recognises the resumption.
  const sh = encodeServerHello12({
    random: ctx.serverRandom, sessionId: ch.sessionId, suite: suite.id, renegotiationInfo: opts.secureRenegotiation,
    pointFormats: opts.pointFormats, ackServerName: false, sessionTicket: false,
    extendedMasterSecret: ctx.ems, alpn: ctx.alpn,
  });
  transcript.update(ch.raw);
  transcript.update(sh);
  io.sendPlaintextHandshake(sh);
  const keys: Keys12 = { master, ...keyBlock12(suite, master, ch.random, ctx.serverRandom) };
  sendServerFinished(ctx, keys, io);
  return new ExpectChangeCipherSpec12(ctx, keys, true);
}

function sendServerFinished(ctx: Context12, keys: Keys12, io: HandshakeIo12): void {
  io.sendChangeCipherSpec(new RecordSealer12(ctx.suite, keys.server.key, keys.server.iv, io.config.seqLimits));
  const fin = encodeFinished(finishedVerifyData12(ctx.suite.hash, keys.master, 'server', ctx.transcript.digest()));
  ctx.transcript.update(fin);
  io.sendHandshake(fin);
}

/** Paused: ServerHello and Certificate are out; the ServerKeyExchange signature is being produced. */
export class AwaitSignature12 implements State12 {
  readonly name = 'AwaitSignature12';
  readonly wantsInput = false;
  constructor(
    private readonly ctx: Context12, private readonly cert: CertChoice, private readonly content: Buffer,
    private readonly params: Buffer, private readonly eph: EphemeralKey,
  ) {}

  handle(m: HandshakeMessage): State { return unexpected(this.name, messageName(m)); }
  changeCipherSpec(): State { return unexpected(this.name, 'ChangeCipherSpec'); }

  /** Appends ServerKeyExchange and ServerHelloDone once the signer answered. */
  resume(signature: Buffer, io: HandshakeIo12): State {
    if (io.config.verifyAfterSign(this.cert.entry.keyType)
      && !verifyScheme(this.cert.entry.leafPublicKey, this.cert.scheme, this.content, signature)) {
      throw fatal('internal_error', 'the signer returned a signature that does not verify under the certificate key');
    }
    const ske = encodeServerKeyExchange(this.params, this.cert.scheme, signature);
    const shd = encodeServerHelloDone();
    const policy = io.config.clientAuth;
    // RFC 5246 §7.4.4: CertificateRequest between ServerKeyExchange and ServerHelloDone.
    const req = policy ? encodeCertificateRequest12(CLIENT_SCHEMES_12, policy.authorities) : undefined;
    for (const msg of req ? [ske, req, shd] : [ske, shd]) this.ctx.transcript.update(msg);
    io.sendPlaintextHandshake(Buffer.concat(req ? [ske, req, shd] : [ske, shd]));
    return policy
      ? new ExpectClientCertificate12(this.ctx, this.eph, policy)
      : new ExpectClientKeyExchange(this.ctx, this.eph);
  }
}

/** mTLS: waiting for the client's Certificate, which comes first in its flight (empty = none). */
export class ExpectClientCertificate12 implements State12 {
  readonly name = 'ExpectClientCertificate12';
  readonly wantsInput = true;
  constructor(
    private readonly ctx: Context12,
    private readonly eph: EphemeralKey,
    private readonly policy: ClientAuthPolicy,
  ) {}

  changeCipherSpec(): State { return unexpected(this.name, 'ChangeCipherSpec before the client Certificate'); }

  handle(m: HandshakeMessage, io: HandshakeIo12): State {
    if (m.type !== HandshakeType.certificate) unexpected(this.name, messageName(m));
    const chain = decodeClientCertificate12(m.body);
    // TLS 1.2 has no certificate_required; RFC 5246 §7.4.6 names handshake_failure.
    if (chain.length === 0 && this.policy.mode === 'require') throw fatal('handshake_failure', 'this listener requires a client certificate and the client sent none');
    if (chain.length > 0) this.ctx.peer = verifyClientChain(this.policy, chain, io.config.now());
    this.ctx.transcript.update(m.raw);
    return new ExpectClientKeyExchange(this.ctx, this.eph);
  }
}

/** mTLS: waiting for the client's CertificateVerify over every handshake message so far (a CCS here is early). */
export class ExpectCertificateVerify12 implements State12 {
  readonly name = 'ExpectCertificateVerify12';
  readonly wantsInput = true;
  constructor(private readonly ctx: Context12, private readonly keys: Keys12) {}

  changeCipherSpec(): State { return unexpected(this.name, 'ChangeCipherSpec before the client CertificateVerify'); }

  handle(m: HandshakeMessage): State {
    if (m.type !== HandshakeType.certificate_verify) unexpected(this.name, messageName(m));
    const { ctx } = this;
    const { scheme, signature } = decodeCertificateVerify(m.body);
    const recorded = ctx.transcript as RecordingTranscript;
    verifyClientSignature(
      ctx.peer!.publicKey, CLIENT_SCHEMES_12, scheme, Buffer.concat(recorded.messages), signature, true,
    );
    recorded.messages = []; // verified: the copies are no longer needed
    ctx.transcript.update(m.raw);
    return new ExpectChangeCipherSpec12(ctx, this.keys, false);
  }
}

/** Waiting for ClientKeyExchange (a CCS here is CVE-2014-0224's early CCS). */
export class ExpectClientKeyExchange implements State12 {
  readonly name = 'ExpectClientKeyExchange';
  readonly wantsInput = true;
  constructor(private readonly ctx: Context12, private readonly eph: EphemeralKey) {}

  changeCipherSpec(): State { return unexpected(this.name, 'ChangeCipherSpec before ClientKeyExchange'); }

  handle(m: HandshakeMessage): State {
    if (m.type !== HandshakeType12.client_key_exchange) unexpected(this.name, messageName(m));
    const { ctx } = this;
    const preMaster = this.eph.deriveShared(decodeClientKeyExchange(m.body));
    ctx.transcript.update(m.raw);
    const master = ctx.ems
      ? extendedMasterSecret(ctx.suite.hash, preMaster, ctx.transcript.digest())
      : legacyMasterSecret(ctx.suite.hash, preMaster, ctx.ch.random, ctx.serverRandom);
    const keys: Keys12 = { master, ...keyBlock12(ctx.suite, master, ctx.ch.random, ctx.serverRandom) };
    // A client that sent a certificate proves it holds the key next (RFC 5246 §7.4.8).
    return ctx.peer ? new ExpectCertificateVerify12(ctx, keys) : new ExpectChangeCipherSpec12(ctx, keys, false);
  }
}

/** Waiting for the client's ChangeCipherSpec; a Finished (or anything) before it is unexpected_message. */
export class ExpectChangeCipherSpec12 implements State12 {
  readonly name = 'ExpectChangeCipherSpec';
  readonly wantsInput = true;
  constructor(private readonly ctx: Context12, private readonly keys: Keys12, private readonly resumed: boolean) {}

  handle(m: HandshakeMessage): State { return unexpected(this.name, `${messageName(m)} before ChangeCipherSpec`); }

  changeCipherSpec(io: HandshakeIo12): State {
    io.setReadProtection(
      new RecordOpener12(this.ctx.suite, this.keys.client.key, this.keys.client.iv, io.config.seqLimits),
    );
    return new ExpectFinished12(this.ctx, this.keys, this.resumed);
  }
}

/** Waiting for the client's Finished, the first record under the new read key. */
export class ExpectFinished12 implements State12 {
  readonly name = 'ExpectFinished12';
  readonly wantsInput = true;
  constructor(private readonly ctx: Context12, private readonly keys: Keys12, private readonly resumed: boolean) {}

  changeCipherSpec(): State { return unexpected(this.name, 'a second ChangeCipherSpec'); }

  handle(m: HandshakeMessage, io: HandshakeIo12): State {
    if (m.type !== HandshakeType.finished) unexpected(this.name, messageName(m));
    const { ctx, keys } = this;
    const expected = finishedVerifyData12(ctx.suite.hash, keys.master, 'client', ctx.transcript.digest());
    const proof = verifyClientFinished12(expected, decodeFinished(m.body, expected.length));
    if (ctx.peer) io.negotiated.peer = ctx.peer;
    ctx.transcript.update(m.raw);
    if (!this.resumed) {
      if (ctx.issueTicket) sendTicket(ctx, keys.master, io);
      sendServerFinished(ctx, keys, io);
    }
    io.handshakeComplete();
    return new Traffic12(proof);
  }
}

function sendTicket(ctx: Context12, master: Buffer, io: HandshakeIo12): void {
  const { ticketKeys, now } = io.config;
  const lifetime = ticketLifetimeS(ticketKeys!, io.config.ticketLifetimeS);
  const ticket = sealTicket12(ticketKeys!, {
    suite: ctx.suite.id, masterSecret: master, extendedMasterSecret: ctx.ems,
    issuedAtMs: now(), lifetimeS: lifetime, servername: ctx.servername,
  });
  const nst = encodeNewSessionTicket12(lifetime, ticket);
  ctx.transcript.update(nst);
  io.sendPlaintextHandshake(nst);
}

/**
 * Handshake complete. TLS 1.2 has no post-handshake messages we accept: the first ClientHello
 * (a renegotiation attempt) gets a no_renegotiation warning and the connection carries on; a
 * second one is fatal. Everything else is unexpected_message.
 */
export class Traffic12 implements State12 {
  readonly name = 'Traffic12';
  readonly wantsInput = true;
  /** Abuse counter: renegotiation attempts seen. */
  renegotiationAttempts = 0;
  constructor(_proof: ClientFinished12Verified) {}

  changeCipherSpec(): State { return unexpected(this.name, 'ChangeCipherSpec after the handshake'); }

  handle(m: HandshakeMessage, io: HandshakeIo12): State {
    if (m.type !== HandshakeType.client_hello) unexpected(this.name, messageName(m));
    if (++this.renegotiationAttempts > 1) throw fatal('unexpected_message', 'renegotiation is not supported (second attempt)');
    io.sendWarningAlert(AlertDescription.no_renegotiation);
    return this;
  }
}
