// The pipelined request/response channel over one socket: request ids, a pending map, frames
// encoded straight into one outbox and sent in one socket write per event-loop turn, per-request
// deadlines and AbortSignals. Knows frames, not operations; HsmConnection puts typed methods on top.
import type { Socket } from 'node:net';
import {
  DEFAULT_MAX_RESPONSE_FRAME, FLAG_JSON, FrameDecoder, FrameOutbox, HEADER_BYTES, STATUS_OK, writeHeader, readJson,
  type BodyCodec, type Frame, type WireError,
} from '../protocol/index.js';
import {
  HsmAbortedError, HsmConnectionClosedError, HsmProtocolViolationError, HsmRemoteError, HsmTimeoutError,
  type HsmClientError,
} from './errors.js';

/** A successful response frame with the HSM's timings. */
export interface Reply {
  body: Buffer;
  json: boolean;
  queueWaitUs: number;
  serviceUs: number;
}

/** Per-request options: a deadline and a cancellation signal. */
export interface RequestOptions {
  /** Milliseconds before the request fails with HSM_ERR_TIMEOUT (default: the connection's). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

interface Pending {
  resolve(r: Reply): void;
  reject(e: Error): void;
  /** When a request with the channel's default timeout fails (0: none, or `timer` has its own). */
  deadline: number;
  opLabel: string;
  timer?: NodeJS.Timeout;
  signal?: AbortSignal;
  onAbort?: () => void;
}

// Requests with the channel's default timeout share one timer: their deadlines rise in the order
// they were sent (the pending map's order), so one sweep from the oldest finds every expired one.
// The sweep runs at the oldest deadline, but no more often than every SWEEP_MIN_MS (or an eighth
// of the timeout, if shorter): a timeout fires at most that late. Other timeouts get a timer each.
const SWEEP_MIN_MS = 50;

/** Frames in, frames out, matched by request id. */
export class FrameChannel {
  private readonly pending = new Map<number, Pending>();
  private readonly decoder: FrameDecoder;
  private readonly outbox = new FrameOutbox();
  private flushScheduled = false;
  private sweepTimer: NodeJS.Timeout | undefined;
  private nextId = 1;
  private closedWith: HsmClientError | undefined;
  private readonly closeListeners: Array<(err: HsmClientError) => void> = [];

  constructor(
    private readonly socket: Socket,
    private readonly hsmId: string,
    private readonly defaultTimeoutMs: number,
    maxResponseFrame = DEFAULT_MAX_RESPONSE_FRAME,
    // Maps a socket error to the error pending requests see (e.g. a TLS alert → HsmTlsError).
    private readonly describeSocketError: (err: Error) => HsmClientError =
      (err) => new HsmConnectionClosedError(hsmId, err.message),
  ) {
    this.decoder = new FrameDecoder(maxResponseFrame);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.fail(this.describeSocketError(err)));
    socket.on('close', () => this.fail(new HsmConnectionClosedError(hsmId, 'the HSM closed the connection')));
  }

  /** Requests sent and not yet answered. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** The error that closed the channel, if it is closed. */
  get closedError(): HsmClientError | undefined {
    return this.closedWith;
  }

  /** Called once when the channel closes, with the reason. */
  onClose(listener: (err: HsmClientError) => void): void {
    if (this.closedWith) listener(this.closedWith);
    else this.closeListeners.push(listener);
  }

  /**
   * Sends one request whose body `codec` encodes from `value`, straight into the outbox (a
   * ProtocolError for a value the wire cannot carry). Resolves with the reply or rejects with a
   * typed error.
   */
  request<T>(
    opcode: number, codec: BodyCodec<T>, value: T, json: boolean, opLabel: string, opts: RequestOptions = {},
  ): Promise<Reply> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    if (opts.signal?.aborted) return Promise.reject(new HsmAbortedError(opLabel));
    const bodyLength = codec.size(value);
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    const at = this.outbox.reserve(HEADER_BYTES + bodyLength);
    const buf = this.outbox.buf;
    writeHeader(buf, at, bodyLength, id, opcode, json ? FLAG_JSON : 0);
    codec.write(buf, at + HEADER_BYTES, value);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // Everything queued during this turn of the event loop leaves in one socket write.
      setImmediate(() => this.flush());
    }
    return new Promise<Reply>((resolve, reject) => {
      const p: Pending = { resolve, reject, deadline: 0, opLabel };
      const timeoutMs = opts.timeoutMs ?? this.defaultTimeoutMs;
      if (timeoutMs > 0 && Number.isFinite(timeoutMs)) {
        if (timeoutMs === this.defaultTimeoutMs) {
          p.deadline = performance.now() + timeoutMs;
          this.sweepTimer ??= setTimeout(() => this.sweep(), timeoutMs);
        } else {
          p.timer = setTimeout(() => this.settle(id, new HsmTimeoutError(this.hsmId, opLabel, timeoutMs)), timeoutMs);
        }
      }
      if (opts.signal) {
        p.signal = opts.signal;
        p.onAbort = () => this.settle(id, new HsmAbortedError(opLabel));
        opts.signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.pending.set(id, p);
    });
  }

  /** Closes the channel: pending requests fail with `err` (default: closed by the client). */
  destroy(err: HsmClientError = new HsmConnectionClosedError(this.hsmId, 'closed by the client')): void {
    this.fail(err);
    this.socket.destroy();
  }

  /** Ends the socket after the queued frames are written; pending requests fail. */
  async end(): Promise<void> {
    if (this.closedWith) return;
    this.flush();
    await new Promise<void>((resolve) => {
      this.socket.once('close', () => resolve());
      this.socket.end();
      setTimeout(() => { this.socket.destroy(); resolve(); }, 1000).unref();
    });
    this.fail(new HsmConnectionClosedError(this.hsmId, 'closed by the client'));
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.closedWith) return;
    const out = this.outbox.take();
    if (out) this.socket.write(out);
  }

  // Fails the default-timeout requests past their deadline; re-arms for the oldest one left.
  private sweep(): void {
    this.sweepTimer = undefined;
    const now = performance.now();
    let next = 0;
    for (const [id, p] of this.pending) {
      if (p.deadline === 0) continue;
      if (p.deadline > now) {
        next = p.deadline;
        break;
      }
      this.settle(id, new HsmTimeoutError(this.hsmId, p.opLabel, this.defaultTimeoutMs));
    }
    if (next > 0) this.sweepTimer = setTimeout(
      () => this.sweep(), Math.max(next - now, Math.min(SWEEP_MIN_MS, this.defaultTimeoutMs / 8)),
    );
  }

  private onData(chunk: Buffer): void {
    const frames = this.decoder.push(chunk);
    for (const f of frames) {
      const p = this.pending.get(f.requestId);
      if (!p) continue; // Answer to a request that already timed out or was aborted.
      if (f.code === STATUS_OK) {
        this.settle(f.requestId, undefined, {
          body: f.body, json: (f.flags & FLAG_JSON) !== 0, queueWaitUs: f.queueWaitUs, serviceUs: f.serviceUs,
        });
      } else {
        this.settle(f.requestId, this.remoteError(f));
      }
    }
    const err = this.decoder.error;
    if (err) this.destroy(new HsmProtocolViolationError(this.hsmId, err.message));
  }

  private remoteError(f: Frame): HsmClientError {
    try {
      const e = readJson(f.body) as Partial<WireError> | undefined;
      if (e && typeof e.code === 'string' && typeof e.message === 'string') {
        const err = new HsmRemoteError(e.code, e.message, this.hsmId);
        // Timings of a refused request still tell the caller how loaded the HSM is.
        Object.assign(err, { queueWaitUs: f.queueWaitUs, serviceUs: f.serviceUs });
        return err;
      }
    } catch {
      // fall through
    }
    return new HsmRemoteError('HSM_ERR_PROTOCOL', `HSM ${this.hsmId} sent an unreadable error response`, this.hsmId);
  }

  private settle(id: number, err: Error | undefined, reply?: Reply): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (p.timer) clearTimeout(p.timer);
    if (p.signal && p.onAbort) p.signal.removeEventListener('abort', p.onAbort);
    if (err) p.reject(err);
    else p.resolve(reply as Reply);
  }

  private fail(err: HsmClientError): void {
    if (this.closedWith) return;
    this.closedWith = err;
    clearTimeout(this.sweepTimer);
    this.sweepTimer = undefined;
    for (const id of [...this.pending.keys()]) this.settle(id, err);
    this.outbox.clear();
    for (const l of this.closeListeners.splice(0)) l(err);
  }
}
