// One authenticated client connection of the appliance (hsm/node.ts): its login session, its
// frame decoder, its outbox (answers encoded straight into it, one socket write per event-loop
// turn), and its flow control. Part of hsm/node; may import
// hsm/device, hsm/protocol and node built-ins.
import type { TLSSocket } from 'node:tls';
import { LoginBusyError, type Hsm } from './device/index.js';
import {
  FLAG_JSON, FLAG_RESPONSE, FrameDecoder, FrameOutbox, STATUS_ERROR, STATUS_OK,
  encodeFrame, type Frame, type WireError,
} from './protocol/index.js';
import { handleOp, type ConnectionState, type OpAnswer } from './node-ops.js';
import type { ApplianceLimits, LoginsInProgress } from './node-admission.js';
import type { ApplianceLog, ApplianceStats } from './node.js';

// Flow control: decoded requests start only while the connection is under its in-flight caps
// and its queued answers are under the high-water mark; otherwise the rest wait and the socket
// is not read (TCP then pushes back on the client) until answers, or 'drain', make room.
/** Serves one mTLS connection until it closes (then call `closed()`). */
export class ApplianceConnection {
  private readonly state: ConnectionState;
  private readonly decoder: FrameDecoder;
  private readonly outbox = new FrameOutbox();
  private flushScheduled = false;
  private dead = false;
  // Decoded requests not started yet (at most one chunk's worth: reading pauses while any wait).
  private waiting: Frame[] = [];
  private waitingAt = 0;
  private inFlight = 0;
  private inFlightBytes = 0;
  private paused = false;
  private loginsInProgress = 0;

  constructor(
    private readonly socket: TLSSocket,
    private readonly device: Hsm,
    maxFrame: number,
    private readonly limits: ApplianceLimits,
    private readonly stats: ApplianceStats,
    private readonly log: ApplianceLog,
    /** The SHA-256 fingerprint of the peer's client certificate. */
    private readonly certificate: string,
    private readonly logins: LoginsInProgress,
  ) {
    this.state = { session: undefined, loginAttempt: { admit: () => this.admitLogin(), client: certificate } };
    this.decoder = new FrameDecoder(maxFrame);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.pump());
    socket.on('error', () => socket.destroy());
  }

  closed(): void {
    this.dead = true;
    this.state.closed = true;
    this.outbox.clear();
    this.waiting = [];
    // Session keys belong to the login session, which ends with the connection.
    if (this.state.session) {
      const s = this.state.session;
      this.state.session = undefined;
      this.device.logout(s).catch(() => undefined);
    }
  }

  // Called by the device before it hashes a password: a login over either cap is refused unhashed
  // (a connection logs in once, so more at a time can only be guesses; a certificate's cap bounds
  // the hashing one holder of it can make the node do). Held until the login's verdict.
  private admitLogin(): () => void {
    if (this.loginsInProgress >= this.limits.maxLoginsPerConnection) {
      this.stats.loginsOverCap++;
      throw new LoginBusyError('connection', this.limits.maxLoginsPerConnection);
    }
    if (!this.logins.enter(this.certificate)) {
      this.stats.loginsOverCap++;
      throw new LoginBusyError('certificate', this.limits.maxLoginsPerCertificate);
    }
    this.loginsInProgress++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.loginsInProgress--;
      this.logins.leave(this.certificate);
    };
  }

  private onData(chunk: Buffer): void {
    this.stats.reads++;
    for (const f of this.decoder.push(chunk)) {
      this.stats.frames++;
      this.waiting.push(f);
    }
    this.pump();
    const pe = this.decoder.error;
    if (pe) {
      // The stream cannot be resynchronised: answer the oversized request by its id, then close.
      // (Answers to the frames before it still in flight are dropped with the connection, and
      // those still waiting for room never start.)
      this.stats.protocolErrors++;
      this.log('warn', 'closing a connection after an oversized frame', { peer: this.socket.remoteAddress, code: pe.code, reason: pe.message });
      this.socket.removeAllListeners('data');
      this.waiting = [];
      const answer = encodeFrame(
        pe.requestId ?? 0, STATUS_ERROR, FLAG_RESPONSE | FLAG_JSON,
        Buffer.from(JSON.stringify({ code: pe.code, message: pe.message })),
      );
      this.flush();
      this.dead = true;
      // Read on (discarding) so the peer's FIN is seen and the socket closes.
      this.socket.resume();
      this.socket.end(answer);
    }
  }

  // Starts waiting requests while there is room, and reads the socket only while there is.
  private pump(): void {
    if (this.dead) return;
    while (this.waitingAt < this.waiting.length && this.hasRoom()) this.serve(this.waiting[this.waitingAt++] as Frame);
    if (this.waitingAt > 0 && this.waitingAt === this.waiting.length) {
      this.waiting = [];
      this.waitingAt = 0;
    }
    const hold = this.waiting.length > 0 || !this.hasRoom();
    if (hold === this.paused) return;
    this.paused = hold;
    if (hold) {
      this.stats.readPauses++;
      this.socket.pause();
    } else {
      this.socket.resume();
    }
  }

  private hasRoom(): boolean {
    const l = this.limits;
    // The socket's buffer only counts once a write was refused: 'drain' is then sure to come and
    // call pump(); below that point the buffer is under its 16 KiB high-water mark anyway.
    const queued = this.outbox.bytes + (this.socket.writableNeedDrain ? this.socket.writableLength : 0);
    return this.inFlight < l.maxInFlightPerConnection
      // One request always fits, however large, or a frame over the byte cap could never start.
      && (this.inFlight === 0 || this.inFlightBytes < l.maxInFlightBytesPerConnection)
      && queued <= l.replyHighWaterBytes;
  }

  private serve(f: Frame): void {
    if ((f.flags & FLAG_RESPONSE) !== 0) {
      this.queueError(f.requestId, { code: 'HSM_ERR_PROTOCOL', message: 'a client sent a response frame' });
      return;
    }
    this.inFlight++;
    this.inFlightBytes += f.body.length;
    if (this.inFlight > this.stats.peakInFlight) this.stats.peakInFlight = this.inFlight;
    handleOp(this.device, this.state, f.code, f.body).then(
      (a) => this.answered(f, a),
      (err: unknown) => this.answered(f, undefined, err),
    );
  }

  // One request finished: its answer (or error) joins this turn's batch, and its room is free again.
  private answered(f: Frame, a: OpAnswer | undefined, err?: unknown): void {
    this.inFlight--;
    this.inFlightBytes -= f.body.length;
    if (a) {
      const flags = FLAG_RESPONSE | (a.json ? FLAG_JSON : 0);
      if (!this.dead) {
        if (a.json) this.outbox.pushText(f.requestId, STATUS_OK, flags, a.body, a.queueWaitUs, a.serviceUs);
        else this.outbox.push(f.requestId, STATUS_OK, flags, a.body, a.queueWaitUs, a.serviceUs);
        this.queued();
      }
    } else {
      this.queueError(f.requestId, this.wireError(err), err as { queueWaitUs?: number; serviceUs?: number });
    }
    this.pump();
  }

  private wireError(err: unknown): WireError {
    const e = err as { code?: unknown; message?: unknown };
    if (typeof e?.code === 'string' && e.code.startsWith('HSM_ERR_') && typeof e.message === 'string') return { code: e.code, message: e.message };
    this.log('error', 'internal error serving a request', { error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    return { code: 'HSM_ERR_INTERNAL', message: 'internal error in the HSM; see its log' };
  }

  private queueError(requestId: number, e: WireError, timing?: { queueWaitUs?: number; serviceUs?: number }): void {
    if (this.dead) return;
    this.outbox.pushText(
      requestId, STATUS_ERROR, FLAG_RESPONSE | FLAG_JSON, JSON.stringify(e),
      timing?.queueWaitUs ?? 0, timing?.serviceUs ?? 0,
    );
    this.queued();
  }

  // An answer joined the outbox: it leaves with the others of this turn.
  private queued(): void {
    this.notePeak();
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // Answers finishing in the same turn of the event loop leave in one socket write.
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.dead) return;
    const out = this.outbox.take();
    if (!out) return;
    this.stats.writes++;
    this.socket.write(out);
    this.notePeak();
    // The outbox is empty now; if the socket took it all, there may be room again.
    this.pump();
  }

  private notePeak(): void {
    const queued = this.outbox.bytes + this.socket.writableLength;
    if (queued > this.stats.peakQueuedReplyBytes) this.stats.peakQueuedReplyBytes = queued;
  }
}
