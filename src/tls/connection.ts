// The sans-IO TLS server connection: bytes in (`feed`), bytes out (`takeOutput`) and events
// (`takeEvents`), with no sockets or timers inside. It owns the record-layer rules (which
// record types are allowed when, CCS and alert handling, early-data skipping, abuse
// counters), hands complete handshake messages to the current state, and is the one place
// that turns an error into the fatal alert on the wire.
import { HandshakeShedError } from './admit.js';
import { AlertDescription, AlertLevel, TlsAlertError, TlsError, alertName, fatal } from './alert.js';
import {
  AwaitSignature, Traffic, type HandshakeIo, type Negotiated, type SignRequest, type State,
} from './handshake13.js';
import { AwaitSignature12, ExpectClientHelloAny, isState12, type HandshakeIo12 } from './handshake12.js';
import type { ServerHandshakeConfig } from './hello12.js';
import { HandshakeJoiner, MAX_CLIENT_HELLO, MAX_HANDSHAKE_MESSAGE } from './joiner.js';
import { trafficKeys } from './keyschedule.js';
import { ContentType, MAX_PLAINTEXT, RecordDeframer, RecordOpener, RecordSealer, SeqExhaustedError, plaintextRecords } from './record.js';
import { RecordOpener12, type RecordSealer12 } from './record12.js';
import { signFailureAlert } from './signer.js';
import type { CipherSuite } from './suites.js';

/** What the connection tells its driver. */
export type ConnectionEvent =
  | { type: 'sign'; request: SignRequest }
  | { type: 'handshake' }
  | { type: 'data'; data: Buffer }
  | { type: 'close_notify' }
  | { type: 'fatal'; error: TlsError };

/** Limits a hostile peer runs into (empty records, CCS, warnings, early data, input while signing). */
export const Limits = {
  /** Consecutive zero-length application_data records (rustls: 32). */
  emptyRecords: 32,
  /**
   * Unencrypted middlebox CCS records accepted during the handshake. RFC 8446 D.4: a client sends
   * exactly one (before CH2 after an HRR, else before its Finished). tlsfuzzer's
   * test-tls13-multiple-ccs-messages (CVE-2020-25648) expects unexpected_message for a second one,
   * and BoGo only for 33: one satisfies both (rustls tolerates 2).
   */
  compatCcs: 1,
  /** Warning alerts (user_canceled) tolerated. */
  warningAlerts: 4,
  /** Bytes of declined 0-RTT data skipped before giving up (RFC 8446 §4.2.10). */
  earlyDataSkip: 64 * 1024,
  /** Input held while the handshake waits for its signature. */
  pausedInput: 64 * 1024,
} as const;

/** Named abuse counters, exposed for tests and diagnostics. */
export interface Counters {
  emptyRecords: number; compatCcs: number; warningAlerts: number; earlyDataSkipped: number;
  /** KeyUpdates received from and sent to the peer after the handshake. */
  keyUpdatesReceived: number; keyUpdatesSent: number;
}

interface WireRecord { type: number; version: number; fragment: Buffer }
interface InnerRecord { type: number; content: Buffer }
/** Input held during the signature wait: raw records, or protected ones already decrypted (in order). */
type Held = { rec: WireRecord } | { inner: InnerRecord };

const COMPAT_CCS = Buffer.from([ContentType.change_cipher_spec, 3, 3, 0, 1, 1]);

/** One server-side TLS connection, transport-agnostic. */
export class ServerConnection implements HandshakeIo, HandshakeIo12 {
  readonly negotiated: Negotiated = { resumed: false };
  readonly counters: Counters = {
    emptyRecords: 0, compatCcs: 0, warningAlerts: 0, earlyDataSkipped: 0, keyUpdatesReceived: 0, keyUpdatesSent: 0,
  };
  private state: State = new ExpectClientHelloAny();
  private readonly deframer = new RecordDeframer();
  private readonly joiner: HandshakeJoiner;
  private sealer: RecordSealer | null = null;
  private opener: RecordOpener | null = null;
  private readKey: { suite: CipherSuite; key: Buffer; iv: Buffer } | null = null;
  private out: Buffer[] = [];
  private flight: Buffer[] = [];
  private events: ConnectionEvent[] = [];
  private held: Held[] = [];
  private heldBytes = 0;
  private epoch = 0;
  private pendingSign = 0;
  private ccsSent = false;
  private decryptedAny = false;
  /** We asked the peer to replace its current write key (our read key passed its soft limit). */
  private peerUpdateAsked = false;
  private earlySkip = 0;
  private sawHello = false;
  private done = false;
  private readClosed = false;
  private writeClosed = false;
  private dead: TlsError | null = null;

  /** Admission's say on a full handshake (a refusal reason sheds it); set by the driver. */
  admitFull: (() => string | undefined) | null = null;

  constructor(readonly config: ServerHandshakeConfig) {
    this.joiner = new HandshakeJoiner(MAX_HANDSHAKE_MESSAGE, config.maxClientHelloBytes ?? MAX_CLIENT_HELLO);
  }

  /** True once the client's Finished verified. */
  get established(): boolean { return this.done && !this.dead; }
  /** The error that killed the connection, if any. */
  get error(): TlsError | null { return this.dead; }
  /** False while waiting for the signature or after the end: the driver may stop reading. */
  get wantsInput(): boolean { return !this.dead && !this.readClosed && this.state.wantsInput; }
  /** True once close_notify was received. */
  get peerClosed(): boolean { return this.readClosed; }
  get stateName(): string { return this.state.name; }
  /** True while the handshake waits for the signer. */
  get awaitingSignature(): boolean { return this.pendingSign !== 0; }

  /** Feeds bytes received from the peer. Errors become a fatal alert plus a 'fatal' event. */
  feed(data: Buffer): void {
    if (this.dead || this.readClosed) return;
    try {
      // A bad header fails only after the records before it: a close_notify there means the
      // rest of the stream is ignored (RFC 8446 §6.1), garbage included.
      let framingError: unknown = null;
      try { this.deframer.push(data); } catch (e) { framingError = e; }
      this.pump();
      if (framingError && !this.readClosed) throw framingError;
    } catch (e) {
      this.fail(e);
    }
  }

  /** Everything to transmit since the last call, as one buffer (one socket write per flight). */
  takeOutput(): Buffer | null {
    if (!this.dead) {
      try { this.flushFlight(); } catch (e) { this.fail(e); }
    }
    const out = this.out;
    if (out.length === 0) return null;
    this.out = [];
    return out.length === 1 ? out[0]! : Buffer.concat(out);
  }

  /** Events since the last call. */
  takeEvents(): ConnectionEvent[] {
    const ev = this.events;
    this.events = [];
    return ev;
  }

  /** Delivers the signature for request `epoch`; a stale or late answer is dropped (returns false). */
  resumeWithSignature(epoch: number, signature: Buffer): boolean {
    const paused = this.state;
    if (this.dead || epoch !== this.pendingSign
      || !(paused instanceof AwaitSignature || paused instanceof AwaitSignature12)) return false;
    this.pendingSign = 0;
    try {
      this.state = paused.resume(signature, this);
      this.pump();
    } catch (e) {
      this.fail(e);
    }
    return true;
  }

  /**
   * The signer failed or timed out for request `epoch` (`error`: its rejection, or a reason):
   * handshake_failure if it has no compatible key or mechanism, else internal_error; this handshake only.
   */
  failSignature(epoch: number, error: unknown): boolean {
    if (this.dead || epoch !== this.pendingSign) return false;
    this.pendingSign = 0;
    const reason = error instanceof Error ? error.message : String(error);
    this.fail(fatal(signFailureAlert(error), `signature failed: ${reason}`));
    return true;
  }

  /** Encrypts application data (fragmented at 2^14). Throws the original error once dead. */
  writeApplicationData(data: Buffer): void {
    if (this.dead) throw this.dead;
    if (this.writeClosed) throw new TlsError('write after close_notify', 'TLS_ERR_WRITE_AFTER_CLOSE');
    if (!this.done || !this.sealer) throw new TlsError('handshake not complete', 'TLS_ERR_NOT_ESTABLISHED');
    try {
      if (this.sealer.needsKeyUpdate && this.state instanceof Traffic) this.state.updateWriteKey(this, false);
      this.flushFlight();
      if (data.length > 0) this.out.push(this.sealer.seal(ContentType.application_data, data));
    } catch (e) {
      // An exhausted key (TLS 1.2 cannot rekey) ends the connection like any other failure.
      this.fail(e);
      throw this.dead ?? e;
    }
  }

  /** Sends a KeyUpdate (optionally asking the peer to update too). */
  keyUpdate(requestPeer: boolean): void {
    if (this.dead) throw this.dead;
    if (!(this.state instanceof Traffic) || this.writeClosed) throw new TlsError('KeyUpdate needs an established TLS 1.3 connection (TLS 1.2 has no KeyUpdate)', 'TLS_ERR_NOT_ESTABLISHED');
    try {
      this.state.updateWriteKey(this, requestPeer);
    } catch (e) {
      this.fail(e);
      throw this.dead ?? e;
    }
  }

  /** Sends close_notify; reading continues until the peer's close_notify (half-close). */
  close(): void {
    if (this.dead || this.writeClosed) return;
    try {
      this.flushFlight();
      this.sendAlert(AlertLevel.warning, AlertDescription.close_notify);
    } catch (e) {
      this.fail(e);
      return;
    }
    this.writeClosed = true;
  }

  /** Ends the connection without an alert (timeout, transport gone); cancels a pending sign. */
  abort(error: TlsError): void {
    if (this.dead) return;
    this.dead = error;
    this.epoch++;
    this.pendingSign = 0;
  }

  // ---- the record layer ----

  private pump(): void {
    while (!this.dead && !this.readClosed) {
      if (!this.state.wantsInput) {
        // Paused for the signature: hold records in order, except that an alert (the only thing
        // a client can say before our Finished) is acted on at once. In TLS 1.3 it may
        // come under the handshake key (unknown_ca after our Certificate), so protected records are
        // decrypted as they arrive, which keeps the read sequence in order, and held decrypted.
        const rec = this.deframer.next();
        if (!rec) break;
        if (rec.type === ContentType.alert && !this.decryptedAny) { this.handleRecord(rec); continue; }
        let held: Held;
        if (this.isProtected(rec)) {
          const inner = this.openProtected(rec);
          if (!inner) continue; // declined early data
          if (inner.type === ContentType.alert) { this.handleInner(inner); continue; }
          held = { inner };
        } else {
          held = { rec: { type: rec.type, version: rec.version, fragment: Buffer.from(rec.fragment) } };
        }
        this.heldBytes += rec.fragment.length;
        if (this.heldBytes > Limits.pausedInput) throw fatal('unexpected_message', 'too much input while the handshake is waiting for its signature');
        this.held.push(held);
        continue;
      }
      const h = this.held.shift();
      if (this.held.length === 0) this.heldBytes = 0;
      if (h) {
        if ('inner' in h) this.handleInner(h.inner);
        else this.handleRecord(h.rec);
        continue;
      }
      const rec = this.deframer.next();
      if (!rec) break;
      this.handleRecord(rec);
    }
    // While the signature is pending the flight stays open: the driver may send it with
    // CertificateVerify and Finished in one record (takeOutput seals it if asked earlier).
    if (this.pendingSign === 0) this.flushFlight();
  }

  /** TLS 1.3 hides the real type inside application_data records; TLS 1.2 protects every record after CCS. */
  private isProtected(rec: WireRecord): boolean {
    return this.opener !== null && (rec.type === ContentType.application_data || this.opener instanceof RecordOpener12);
  }

  private handleRecord(rec: WireRecord): void {
    const { type, fragment } = rec;
    if (this.isProtected(rec)) {
      const inner = this.openProtected(rec);
      if (inner) this.handleInner(inner);
      return;
    }
    // Everything below is unprotected. The deframer checks the size on the header too, except in
    // TLS 1.2, where a header cannot tell a protected record from a plaintext one. (application_data
    // here is declined 0-RTT after an HRR: ciphertext, up to 2^14+256.)
    if (fragment.length > MAX_PLAINTEXT && type !== ContentType.application_data) throw fatal('record_overflow', `plaintext record of ${fragment.length} bytes exceeds ${MAX_PLAINTEXT}`);
    if (this.joiner.pending && type !== ContentType.handshake) throw fatal('unexpected_message', 'record interleaved with a fragmented handshake message');
    switch (type) {
      case ContentType.change_cipher_spec:
        if (fragment.length !== 1 || fragment[0] !== 1) throw fatal('unexpected_message', 'ChangeCipherSpec must be the single byte 0x01');
        // TLS 1.2: a real protocol message, which only the state expecting it accepts (CVE-2014-0224).
        if (isState12(this.state)) { this.state = this.state.changeCipherSpec(this); return; }
        if (!this.sawHello || this.done) throw fatal('unexpected_message', 'ChangeCipherSpec outside the handshake');
        if (++this.counters.compatCcs > Limits.compatCcs) throw fatal('unexpected_message', 'too many ChangeCipherSpec records');
        return;
      case ContentType.alert:
        // rustls' rule: once keys are in place, only an early plaintext alert is tolerated.
        if (this.opener && this.decryptedAny) throw fatal('unexpected_message', 'plaintext alert after encryption started');
        return this.handleAlert(fragment);
      case ContentType.handshake:
        if (this.opener) throw fatal('unexpected_message', 'plaintext handshake record after keys changed');
        if (fragment.length === 0) throw fatal('unexpected_message', 'empty handshake record');
        this.joiner.push(fragment);
        return this.processMessages();
      case ContentType.application_data:
        if (this.earlySkip > 0) return this.skipEarly(fragment.length);
        throw fatal('unexpected_message', 'application data before the handshake');
      default:
        throw fatal('unexpected_message', `unknown record type ${type}`);
    }
  }

  private skipEarly(n: number): void {
    this.counters.earlyDataSkipped += n;
    if (this.counters.earlyDataSkipped > Limits.earlyDataSkip) throw fatal('unexpected_message', 'too much declined early data');
  }

  /** Decrypts a protected record; null when it was declined early data, skipped. */
  private openProtected(rec: WireRecord): InnerRecord | null {
    let inner: InnerRecord;
    try {
      inner = this.opener!.open(rec);
    } catch (e) {
      // Declined 0-RTT: records under the early key fail to decrypt and are skipped (§4.2.10).
      if (this.earlySkip > 0 && e instanceof TlsAlertError && e.alert === AlertDescription.bad_record_mac) {
        // Nothing has decrypted under this key yet, so its sequence number must stay at 0.
        const k = this.readKey!;
        this.opener = new RecordOpener(k.suite, k.key, k.iv, this.config.seqLimits);
        this.skipEarly(rec.fragment.length);
        return null;
      }
      throw e;
    }
    this.earlySkip = 0;
    this.decryptedAny = true;
    // RFC 8446 §5.5: the peer's key is wearing out; ask once for a new one (the hard limit closes).
    if (this.opener!.needsKeyUpdate && !this.peerUpdateAsked && this.state instanceof Traffic && !this.writeClosed) {
      this.peerUpdateAsked = true;
      this.state.updateWriteKey(this, true);
    }
    return inner;
  }

  private handleInner(inner: InnerRecord): void {
    const { type, content } = inner;
    if (type !== ContentType.handshake && this.joiner.pending) throw fatal('unexpected_message', 'record interleaved with a fragmented handshake message');
    switch (type) {
      case ContentType.handshake:
        if (content.length === 0) throw fatal('unexpected_message', 'empty handshake record');
        this.joiner.push(content);
        return this.processMessages();
      case ContentType.alert:
        return this.handleAlert(content);
      case ContentType.application_data:
        if (!this.done) throw fatal('unexpected_message', 'application data before the client Finished');
        if (content.length === 0) {
          if (++this.counters.emptyRecords > Limits.emptyRecords) throw fatal('unexpected_message', 'too many empty records');
          return;
        }
        this.counters.emptyRecords = 0;
        if (this.state instanceof Traffic) this.state.sawApplicationData();
        this.events.push({ type: 'data', data: content });
        return;
      default:
        throw fatal('unexpected_message', `record type ${type} is not allowed encrypted`);
    }
  }

  private processMessages(): void {
    while (this.state.wantsInput && !this.dead) {
      const m = this.joiner.next();
      if (!m) return;
      this.sawHello = true;
      if (this.done && m.type === 24 /* key_update */) this.counters.keyUpdatesReceived++;
      this.state = this.state.handle(m, this);
      if (this.state instanceof Traffic) this.state.answerKeyUpdate(this, !this.writeClosed);
    }
  }

  private handleAlert(body: Buffer): void {
    if (body.length !== 2) throw fatal('decode_error', 'alert record must be exactly 2 bytes');
    const [level, desc] = [body[0]!, body[1]!];
    if (level !== AlertLevel.warning && level !== AlertLevel.fatal) throw fatal('illegal_parameter', `unknown alert level ${level}`);
    if (desc === AlertDescription.close_notify) {
      this.readClosed = true;
      this.events.push({ type: 'close_notify' });
      return;
    }
    // TLS 1.2 (RFC 5246 §7.2.2) lets warnings pass; like rustls we count them and tolerate a few.
    if (level === AlertLevel.warning && (desc === AlertDescription.user_canceled || this.negotiated.suite?.version === 'TLSv1.2')) {
      if (++this.counters.warningAlerts > Limits.warningAlerts) throw fatal('unexpected_message', 'too many warning alerts');
      return;
    }
    // TLS 1.3 (§6): every other alert, whatever its level, ends the connection.
    throw new TlsAlertError(desc, `peer sent ${alertName(desc)}`, true);
  }

  /** The one place a failure becomes the fatal alert on the wire. */
  private fail(e: unknown): void {
    if (this.dead) return;
    const err = e instanceof TlsError ? e
      : new TlsAlertError(AlertDescription.internal_error, `internal error: ${e instanceof Error ? e.message : String(e)}`);
    this.flight = []; // a half-built flight is never sent
    if (err instanceof TlsAlertError && !err.received && !this.writeClosed) {
      try { this.sendAlert(AlertLevel.fatal, err.alert); } catch { /* nothing more to say */ }
    } else if (err instanceof SeqExhaustedError && !this.writeClosed) {
      // No alert means "key used up": close_notify, if the write key can still carry one.
      try { this.sendAlert(AlertLevel.warning, AlertDescription.close_notify); } catch { /* it is the exhausted one */ }
    }
    this.dead = err;
    this.writeClosed = true;
    this.epoch++;
    this.pendingSign = 0;
    this.events.push({ type: 'fatal', error: err });
  }

  private sendAlert(level: number, desc: number): void {
    const body = Buffer.from([level, desc]);
    this.out.push(this.sealer ? this.sealer.seal(ContentType.alert, body) : plaintextRecords(ContentType.alert, body));
  }

  private flushFlight(): void {
    if (this.flight.length === 0 || !this.sealer) return;
    const content = this.flight.length === 1 ? this.flight[0]! : Buffer.concat(this.flight);
    this.flight = [];
    this.out.push(this.sealer.seal(ContentType.handshake, content));
  }

  // ---- HandshakeIo, used by the states ----

  sendPlaintextHandshake(msg: Buffer): void {
    this.flushFlight();
    this.out.push(plaintextRecords(ContentType.handshake, msg));
  }

  sendCompatCcs(): void {
    if (this.ccsSent) return;
    this.ccsSent = true;
    this.out.push(COMPAT_CCS);
  }

  sendHandshake(msg: Buffer): void { this.flight.push(msg); }

  setWriteKey(suite: CipherSuite, secret: Buffer): void {
    this.flushFlight();
    if (this.done) this.counters.keyUpdatesSent++;
    const { key, iv } = trafficKeys(suite, secret);
    this.sealer = new RecordSealer(suite, key, iv, this.config.seqLimits);
  }

  checkKeyChangeBoundary(): void {
    // rustls' KeyEpochWithPendingFragment (RFC 8446 §5.1): a key change must fall on a record boundary.
    if (this.joiner.pending) throw fatal('unexpected_message', 'handshake data left over at a key change');
  }

  setReadKey(suite: CipherSuite, secret: Buffer): void {
    this.checkKeyChangeBoundary();
    const { key, iv } = trafficKeys(suite, secret);
    this.readKey = { suite, key, iv };
    this.opener = new RecordOpener(suite, key, iv, this.config.seqLimits);
    this.peerUpdateAsked = false;
    // Declined 0-RTT can only precede the first key change (after an HRR it precedes ClientHello2):
    // from here on an undecryptable record is bad_record_mac. The caller re-arms skipping if needed.
    this.earlySkip = 0;
  }

  skipEarlyData(): void { this.earlySkip = Limits.earlyDataSkip; }

  // ---- HandshakeIo12, used by the TLS 1.2 states ----

  sendChangeCipherSpec(sealer: RecordSealer12): void {
    this.flushFlight();
    this.out.push(COMPAT_CCS);
    this.sealer = sealer;
  }

  useTls12Records(): void { this.deframer.useTls12Limits(); }

  setReadProtection(opener: RecordOpener12): void {
    if (this.joiner.pending) throw fatal('unexpected_message', 'handshake data left over at ChangeCipherSpec');
    this.opener = opener;
  }

  sendWarningAlert(description: number): void {
    this.flushFlight();
    this.sendAlert(AlertLevel.warning, description);
  }

  admitFullHandshake(): void {
    const reason = this.admitFull?.();
    if (reason !== undefined) throw new HandshakeShedError(reason);
  }

  requestSignature(req: Omit<SignRequest, 'epoch'>): void {
    this.pendingSign = ++this.epoch;
    this.events.push({ type: 'sign', request: { ...req, epoch: this.pendingSign } });
  }

  handshakeComplete(): void {
    this.done = true;
    this.events.push({ type: 'handshake' });
  }
}
