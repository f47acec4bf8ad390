// The TLS 1.3 server handshake, one class per state (rustls style). Each state accepts only
// the message types it lists and returns the next state. Reading order follows RFC 8446 §2:
// ClientHello → (HelloRetryRequest → ClientHello) → ServerHello..Certificate → [signature
// from the Signer, asynchronously] → CertificateVerify, Finished → client Finished → traffic.
import { createHash, timingSafeEqual } from 'node:crypto';
import { randomBytesPooled } from './random.js';
import { fatal } from './alert.js';
import { usableCredential, type DelegatedCredential } from './delegated.js';
import { ACME_TLS_ALPN, acmeChallenge, selectCertificate, type CertChoice, type CertEntry } from './certselect.js';
import { CLIENT_SCHEMES_13, clientCertificateVerifyContent, verifyClientChain, verifyClientSignature, type ClientAuthPolicy, type PeerIdentity } from './client-auth.js';
import { decodeCertificateVerify, decodeClientCertificate13, encodeCertificateRequest13 } from './client-auth-messages.js';
import { allowsPskDhe, checkClientHello13, checkRetryHello, chooseAlpn, chooseGroup, chooseSuite, negotiateVersion } from './hello13.js';
import {
  HRR_RANDOM, HandshakeType, decodeClientHello, decodeFinished, decodeKeyUpdate, encodeCertificate,
  encodeCertificateVerify, encodeEncryptedExtensions, encodeFinished, encodeKeyUpdate, encodeNewSessionTicket,
  encodeServerHello, messageHash, type ClientHello, type HandshakeMessage,
} from './messages.js';
import { KeySchedule13, Transcript, finishedVerifyData, nextTrafficSecret, resumptionPsk } from './keyschedule.js';
import { acceptPsk, newAgeAdd, sealTicket, ticketLifetimeS, type AcceptedPsk, type TicketSealer } from './session.js';
import type { SeqLimits } from './record.js';
import { verifyScheme } from './schemes.js';
import type { Signer } from './signer.js';
import { serverKeyShare } from './kex.js';
import type { CipherSuite } from './suites.js';

/** Handshake policy shared by every connection of a server. */
export interface HandshakeConfig {
  certificates: readonly CertEntry[];
  alpnProtocols?: readonly string[];
  ticketKeys?: TicketSealer;
  /** Tickets sent after each handshake (0 disables). */
  ticketCount: number;
  ticketLifetimeS: number;
  /** Verify each signature against the leaf key before sending it. */
  verifyAfterSign: (keyType: 'rsa' | 'ec') => boolean;
  now: () => number;
  /** Client-certificate checking (mTLS); absent = no CertificateRequest. */
  clientAuth?: ClientAuthPolicy;
  /** Per-key record limits in place of the defaults of each version (tests reach them this way). */
  seqLimits?: SeqLimits;
  /** RFC 8737 tls-alpn-01: the validation certificate of a name with a pending challenge (see acmeChallenge). */
  acmeChallenge?: (servername: string) => CertEntry | undefined;
  /** Largest ClientHello accepted, bytes (default MAX_CLIENT_HELLO, the grammar's maximum). */
  maxClientHelloBytes?: number;
  /** Key exchange groups in server preference order (default kex.ts DEFAULT_GROUPS). */
  groups?: readonly number[];
  /** Unknown SNI gets unrecognized_name instead of the first certificate (nginx's default server). */
  sniStrict?: boolean;
}

/** What the handshake settled on; filled in as it progresses. */
export interface Negotiated {
  suite?: CipherSuite;
  group?: number;
  keyType?: 'rsa' | 'ec';
  resumed: boolean;
  servername?: string;
  alpn?: string;
  scheme?: number;
  /** Who signed CertificateVerify: a delegated credential in memory, or the certificate's key. */
  credential?: 'delegated' | 'certificate';
  /** The client's verified certificate identity (mTLS), set once its Finished verified. */
  peer?: PeerIdentity;
}

/** A signature the handshake waits for; `epoch` ties the answer to this request. */
export interface SignRequest { signer: Signer; scheme: number; content: Buffer; epoch: number }

/** The connection services a state may use; implemented by ServerConnection. */
export interface HandshakeIo {
  readonly config: HandshakeConfig;
  readonly negotiated: Negotiated;
  sendPlaintextHandshake(msg: Buffer): void;
  /** The middlebox-compatibility CCS; sent at most once per connection. */
  sendCompatCcs(): void;
  /** Appends a message to the flight sealed under the current write key. */
  sendHandshake(msg: Buffer): void;
  setWriteKey(suite: CipherSuite, secret: Buffer): void;
  setReadKey(suite: CipherSuite, secret: Buffer): void;
  /** Throws unexpected_message if handshake bytes follow the current message: keys must change on a record boundary. */
  checkKeyChangeBoundary(): void;
  /** Skip undecryptable early-data records (offered 0-RTT we decline) until one decrypts. */
  skipEarlyData(): void;
  /**
   * A full handshake (one that will cost a signature) is about to start its key exchange: throws
   * HandshakeShedError when admission sheds it, so no key is made and no signature asked for.
   */
  admitFullHandshake(): void;
  requestSignature(req: Omit<SignRequest, 'epoch'>): void;
  handshakeComplete(): void;
}

declare const finishedProof: unique symbol;
/** Proof that the client's Finished verified; only `verifyClientFinished` makes one. */
export type ClientFinishedVerified = { readonly [finishedProof]: true };

function verifyClientFinished(expected: Buffer, got: Buffer): ClientFinishedVerified {
  if (got.length !== expected.length || !timingSafeEqual(got, expected)) throw fatal('decrypt_error', 'client Finished does not verify');
  return {} as ClientFinishedVerified;
}

/** Any handshake state. */
export interface State {
  readonly name: string;
  /** False while paused for the signature: input must be held, not processed. */
  readonly wantsInput: boolean;
  handle(m: HandshakeMessage, io: HandshakeIo): State;
}

function unexpected(state: string, m: HandshakeMessage): never {
  throw fatal('unexpected_message', `handshake message type ${m.type} is not allowed in state ${state}`);
}

const CV_PREFIX = Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS 1.3, server CertificateVerify\0', 'latin1')]);

/** The content a server CertificateVerify signs (RFC 8446 §4.4.3). */
export function certificateVerifyContent(transcriptHash: Buffer): Buffer {
  return Buffer.concat([CV_PREFIX, transcriptHash]);
}

interface RetryContext { ch1: ClientHello; suite: CipherSuite; group: number; transcript: Transcript; prefix: Buffer[] }

/** Waiting for ClientHello (the first, or the one answering our HelloRetryRequest). */
export class ExpectClientHello implements State {
  readonly name = 'ExpectClientHello';
  readonly wantsInput = true;
  constructor(private readonly retry?: RetryContext) {}

  handle(m: HandshakeMessage, io: HandshakeIo): State {
    if (m.type !== HandshakeType.client_hello) unexpected(this.name, m);
    const ch = decodeClientHello(m.raw);
    negotiateVersion(ch);
    checkClientHello13(ch);
    if (this.retry) checkRetryHello(this.retry.ch1, ch, this.retry.group);
    const suite = chooseSuite(ch);
    if (this.retry && suite.id !== this.retry.suite.id) throw fatal('illegal_parameter', 'cipher suite changed after HelloRetryRequest');
    const transcript = this.retry?.transcript ?? new Transcript(suite.hash);
    const { config, negotiated } = io;
    negotiated.suite = suite;
    negotiated.servername = ch.ext.serverName;
    const challenge = acmeChallenge(ch, config);
    const alpn = challenge ? ACME_TLS_ALPN : chooseAlpn(ch, config.alpnProtocols);

    let psk: AcceptedPsk | null = null;
    // No resumption under mTLS: a PSK handshake has no client Certificate (see docs: tickets are off there).
    // A validation handshake must present the challenge certificate, so it never resumes either.
    const mayResume = !config.clientAuth && !challenge;
    if (ch.ext.preSharedKey && config.ticketKeys && mayResume && allowsPskDhe(ch)) {
      psk = acceptPsk({
        keys: config.ticketKeys, offered: ch.ext.preSharedKey, chRaw: ch.raw,
        transcriptPrefix: this.retry?.prefix ?? [],
        suite, servername: ch.ext.serverName ?? '', nowMs: config.now(),
      });
    }
    let cert: CertChoice | undefined;
    let dc: ReturnType<typeof usableCredential>;
    if (!psk) {
      if (!ch.ext.signatureAlgorithms) throw fatal('missing_extension', 'ClientHello lacks signature_algorithms');
      cert = selectCertificate(
        challenge ? [challenge] : config.certificates, ch.ext.serverName,
        ch.ext.signatureAlgorithms, ch.ext.signatureAlgorithmsCert, config.sniStrict,
      );
      const { certified } = cert.entry;
      dc = usableCredential(
        certified.delegated, certified.chain[0]!, ch.ext.delegatedCredential, ch.ext.signatureAlgorithms, config.now(),
      );
    }

    const group = chooseGroup(ch, config.groups);
    if ('retryWith' in group) {
      if (this.retry) throw fatal('illegal_parameter', 'second ClientHello still has no usable key share');
      return this.helloRetry(ch, suite, group.retryWith, transcript, io);
    }
    // Only a handshake that will wait for the certificate's key is admission's to shed: a resumption
    // or a delegated credential signs nothing there.
    if (!psk && !dc) io.admitFullHandshake();
    negotiated.group = group.share.group;
    // RFC 8446 §5.1: the read key changes after this hello; refuse leftover bytes before anything is sent.
    io.checkKeyChangeBoundary();
    const { key: ourShare, shared } = serverKeyShare(group.share);
    const sh = encodeServerHello({
      random: randomBytesPooled(32), sessionId: ch.sessionId, suite: suite.id,
      keyShare: { group: group.share.group, key: ourShare }, selectedIdentity: psk?.index,
    });
    transcript.update(ch.raw);
    transcript.update(sh);
    const schedule = psk?.schedule ?? new KeySchedule13(suite);
    const hs = schedule.handshakeSecrets(shared, transcript.digest());
    io.sendPlaintextHandshake(sh);
    if (ch.sessionId.length > 0) io.sendCompatCcs();
    io.setWriteKey(suite, hs.server);
    io.setReadKey(suite, hs.client);
    if (ch.ext.earlyData) io.skipEarlyData();

    const ee = encodeEncryptedExtensions({ ackServerName: ch.ext.serverName !== undefined && !psk, alpn });
    transcript.update(ee);
    io.sendHandshake(ee);
    negotiated.alpn = alpn;
    const keys: FlightKeys = { suite, schedule, transcript, hs, alpn, servername: ch.ext.serverName ?? '', pskDhe: allowsPskDhe(ch) };
    if (psk) {
      negotiated.resumed = true;
      return sendServerFinished(keys, io);
    }
    const chosen = cert!;
    if (config.clientAuth) {
      // RFC 8446 §4.3.2: after EncryptedExtensions, never on a PSK handshake (§4.6.2 is for later).
      const req = encodeCertificateRequest13(CLIENT_SCHEMES_13, config.clientAuth.authorities);
      transcript.update(req);
      io.sendHandshake(req);
      keys.clientAuth = config.clientAuth;
    }
    negotiated.keyType = chosen.entry.keyType;
    const { certified } = chosen.entry;
    negotiated.credential = dc ? 'delegated' : 'certificate';
    negotiated.scheme = dc?.scheme ?? chosen.scheme;
    const certMsg = encodeCertificate(certified.chain, dc?.wire);
    transcript.update(certMsg);
    io.sendHandshake(certMsg);
    const content = certificateVerifyContent(transcript.digest());
    // RFC 9345 §4.1.1: under a credential, CertificateVerify is signed with the credential key,
    // held in memory: no round trip to the certificate's key, so no pause.
    if (dc) {
      return new AwaitSignature(keys, chosen, content, transcript.appended, dc).resume(dc.signLocally(content), io);
    }
    io.requestSignature({ signer: certified.signer, scheme: chosen.scheme, content });
    return new AwaitSignature(keys, chosen, content, transcript.appended);
  }

  private helloRetry(
    ch: ClientHello, suite: CipherSuite, group: number, transcript: Transcript, io: HandshakeIo,
  ): State {
    const hrr = encodeServerHello({
      random: HRR_RANDOM, sessionId: ch.sessionId, suite: suite.id, selectedGroup: group,
    });
    transcript.update(ch.raw);
    transcript.replaceWithMessageHash();
    transcript.update(hrr);
    io.sendPlaintextHandshake(hrr);
    if (ch.sessionId.length > 0) io.sendCompatCcs();
    if (ch.ext.earlyData) io.skipEarlyData();
    // Binders in ClientHello2 cover message_hash(CH1) || HRR || truncated CH2.
    const prefix = [messageHash(createHash(suite.hash).update(ch.raw).digest()), hrr];
    return new ExpectClientHello({ ch1: ch, suite, group, transcript, prefix });
  }
}

interface FlightKeys {
  suite: CipherSuite;
  schedule: KeySchedule13;
  transcript: Transcript;
  hs: { client: Buffer; server: Buffer };
  alpn: string | undefined;
  servername: string;
  /** The client offered psk_dhe_ke, the only mode we resume with: tickets are of use to it. */
  pskDhe: boolean;
  /** Set when we sent a CertificateRequest. */
  clientAuth?: ClientAuthPolicy;
}

/** Paused: SH..Certificate are sent, the CertificateVerify signature is being produced. */
export class AwaitSignature implements State {
  readonly name = 'AwaitSignature';
  readonly wantsInput = false;
  constructor(
    private readonly keys: FlightKeys,
    private readonly cert: CertChoice,
    private readonly content: Buffer,
    /** Transcript messages when the content was signed (the transcript only grows, so equal = unchanged). */
    private readonly signedAt: number,
    private readonly dc?: DelegatedCredential,
  ) {}

  handle(m: HandshakeMessage): State { return unexpected(this.name, m); }

  /** Appends CertificateVerify and Finished once the signer answered. */
  resume(signature: Buffer, io: HandshakeIo): State {
    const { transcript } = this.keys;
    // The hash that was signed must be the one CertificateVerify follows.
    if (transcript.appended !== this.signedAt) throw fatal('internal_error', 'transcript changed while waiting for the signature');
    const { dc } = this;
    const [publicKey, scheme] = dc ? [dc.publicKey, dc.scheme] : [this.cert.entry.leafPublicKey, this.cert.scheme];
    const verify = io.config.verifyAfterSign(this.cert.entry.keyType);
    if (verify && !verifyScheme(publicKey, scheme, this.content, signature)) {
      throw fatal('internal_error', this.dc ? 'the credential key made a signature that does not verify under the credential'
        : 'the signer returned a signature that does not verify under the certificate key');
    }
    const cv = encodeCertificateVerify(scheme, signature);
    transcript.update(cv);
    io.sendHandshake(cv);
    return sendServerFinished(this.keys, io);
  }
}

function sendServerFinished(k: FlightKeys, io: HandshakeIo): State {
  const { transcript, suite } = k;
  const fin = encodeFinished(finishedVerifyData(suite.hash, k.hs.server, transcript.digest()));
  transcript.update(fin);
  io.sendHandshake(fin);
  const afterServerFinished = transcript.digest();
  const app = k.schedule.applicationSecrets(afterServerFinished);
  io.setWriteKey(suite, app.server);
  return k.clientAuth ? new ExpectClientCertificate(k, app, k.clientAuth) : new ExpectFinished(k, app);
}

/** mTLS: waiting for the client's Certificate (empty = none). */
export class ExpectClientCertificate implements State {
  readonly name = 'ExpectClientCertificate';
  readonly wantsInput = true;
  constructor(
    private readonly k: FlightKeys,
    private readonly app: { client: Buffer; server: Buffer },
    private readonly policy: ClientAuthPolicy,
  ) {}

  handle(m: HandshakeMessage, io: HandshakeIo): State {
    if (m.type !== HandshakeType.certificate) unexpected(this.name, m);
    const chain = decodeClientCertificate13(m.body);
    if (chain.length === 0) {
      if (this.policy.mode === 'require') throw fatal('certificate_required', 'this listener requires a client certificate and the client sent none');
      this.k.transcript.update(m.raw);
      return new ExpectFinished(this.k, this.app);
    }
    const peer = verifyClientChain(this.policy, chain, io.config.now());
    this.k.transcript.update(m.raw);
    return new ExpectClientCertificateVerify(this.k, this.app, peer);
  }
}

/** mTLS: waiting for the client's CertificateVerify over the transcript up to its Certificate. */
export class ExpectClientCertificateVerify implements State {
  readonly name = 'ExpectClientCertificateVerify';
  readonly wantsInput = true;
  constructor(
    private readonly k: FlightKeys,
    private readonly app: { client: Buffer; server: Buffer },
    private readonly peer: PeerIdentity,
  ) {}

  handle(m: HandshakeMessage): State {
    if (m.type !== HandshakeType.certificate_verify) unexpected(this.name, m);
    const { scheme, signature } = decodeCertificateVerify(m.body);
    const content = clientCertificateVerifyContent(this.k.transcript.digest());
    verifyClientSignature(this.peer.publicKey, CLIENT_SCHEMES_13, scheme, content, signature);
    this.k.transcript.update(m.raw);
    return new ExpectFinished(this.k, this.app, this.peer);
  }
}

/** Waiting for the client's Finished (encrypted under the client handshake key). */
export class ExpectFinished implements State {
  readonly name = 'ExpectFinished';
  readonly wantsInput = true;
  constructor(
    private readonly k: FlightKeys,
    private readonly app: { client: Buffer; server: Buffer },
    private readonly peer?: PeerIdentity,
  ) {}

  handle(m: HandshakeMessage, io: HandshakeIo): State {
    if (m.type !== HandshakeType.finished) unexpected(this.name, m);
    // Over the transcript through the server Finished, plus the client's Certificate and CertificateVerify under mTLS.
    const expected = finishedVerifyData(this.k.suite.hash, this.k.hs.client, this.k.transcript.digest());
    const proof = verifyClientFinished(expected, decodeFinished(m.body, this.k.suite.hashLen));
    if (this.peer) io.negotiated.peer = this.peer;
    this.k.transcript.update(m.raw);
    // The transcript's last use: its final hash, without copying the hash state.
    const rms = this.k.schedule.resumptionMasterSecret(this.k.transcript.finish());
    const traffic = new Traffic(proof, this.k.suite, this.app, io);
    sendTickets(this.k, rms, io);
    io.handshakeComplete();
    return traffic;
  }
}

function sendTickets(k: FlightKeys, rms: Buffer, io: HandshakeIo): void {
  const { ticketKeys, ticketCount, now } = io.config;
  // RFC 8446 §4.2.9: no psk_key_exchange_modes means no tickets; a psk_ke-only client could never use ours.
  if (!ticketKeys || io.config.clientAuth || !k.pskDhe || k.alpn === ACME_TLS_ALPN) return;
  const lifetime = ticketLifetimeS(ticketKeys, io.config.ticketLifetimeS);
  if (lifetime === 0) return; // it would never resume
  for (let i = 0; i < ticketCount; i++) {
    const nonce = Buffer.from([i]);
    const ageAdd = newAgeAdd();
    const ticket = sealTicket(ticketKeys, {
      suite: k.suite.id, psk: resumptionPsk(k.suite.hash, rms, nonce), issuedAtMs: now(), ageAdd,
      lifetimeS: lifetime, alpn: k.alpn ?? '', servername: k.servername,
    });
    io.sendHandshake(encodeNewSessionTicket({ lifetime, ageAdd, nonce, ticket }));
  }
}

/** Consecutive KeyUpdates without application data in between before we call it a flood. */
export const MAX_CONSECUTIVE_KEY_UPDATES = 32;

/** Handshake complete: only post-handshake KeyUpdate is accepted from a client. */
export class Traffic implements State {
  readonly name = 'Traffic';
  readonly wantsInput = true;
  private clientSecret: Buffer;
  private serverSecret: Buffer;
  /** Abuse counter: KeyUpdates since the last application data record. */
  consecutiveKeyUpdates = 0;
  private answerOwed = false;

  constructor(
    _proof: ClientFinishedVerified,
    private readonly suite: CipherSuite,
    app: { client: Buffer; server: Buffer },
    io: HandshakeIo,
  ) {
    this.clientSecret = app.client;
    this.serverSecret = app.server;
    io.setReadKey(suite, this.clientSecret);
  }

  handle(m: HandshakeMessage, io: HandshakeIo): State {
    if (m.type !== HandshakeType.key_update) unexpected(this.name, m);
    const requested = decodeKeyUpdate(m.body);
    if (++this.consecutiveKeyUpdates > MAX_CONSECUTIVE_KEY_UPDATES) throw fatal('unexpected_message', 'too many KeyUpdates without application data');
    this.clientSecret = nextTrafficSecret(this.suite.hash, this.clientSecret);
    io.setReadKey(this.suite, this.clientSecret);
    // Each request gets its own answer, as OpenSSL does and tlsfuzzer's test-tls13-keyupdate expects
    // (32 requests, 32 answers) rather than merging them; the 32-in-a-row cap bounds the cost.
    if (requested) this.answerOwed = true;
    return this;
  }

  /** Answers the KeyUpdate just received if it asked for one; nothing may follow our close_notify. */
  answerKeyUpdate(io: HandshakeIo, canWrite: boolean): void {
    if (this.answerOwed && canWrite) this.updateWriteKey(io, false);
    this.answerOwed = false;
  }

  /** Sends our KeyUpdate under the current key, then switches the write key. */
  updateWriteKey(io: HandshakeIo, requestPeer: boolean): void {
    io.sendHandshake(encodeKeyUpdate(requestPeer));
    this.serverSecret = nextTrafficSecret(this.suite.hash, this.serverSecret);
    io.setWriteKey(this.suite, this.serverSecret);
  }

  /** Application data arrived: resets the KeyUpdate flood counter. */
  sawApplicationData(): void { this.consecutiveKeyUpdates = 0; }
}
