// Keeps one delegated credential (RFC 9345) per certificate that may delegate: made at start and
// at half-life with one signature by the certificate's key (the HSM), served until it expires.
// A renewal that fails is retried; once the credential has expired the certificate is served the
// old way (an HSM signature per handshake) and that is published for the log, metrics and alerts.
import diagnosticsChannel from 'node:diagnostics_channel';
import type { Logger } from 'pino';
import { X509Certificate } from 'node:crypto';
import {
  makeDelegatedCredential, type CredentialKeyType, type DelegatedCredential,
  type DelegatedCredentialSource, type Signer,
} from '../tls/index.js';

/** Channel of credential lifecycle events (the contract metrics/ restates). */
export const DELEGATED_CREDENTIAL_CHANNEL = 'hsmproxy:tls:delegated-credential';

/** One credential lifecycle event. */
export interface DelegatedCredentialEvent {
  listener: string;
  /** The certificate's subject and serial, as the certificate-expiry gauge names it. */
  certificate: string;
  /**
   * issued: a new credential serves; renewal_failed: the HSM did not sign one; expired: no valid
   * credential, HSM signatures again; stopped: the certificate left (reload, close).
   */
  event: 'issued' | 'renewal_failed' | 'expired' | 'stopped';
  /** Unix ms when the serving credential expires (absent when none serves). */
  expiresAtMs?: number;
  error?: string;
}

const channel = diagnosticsChannel.channel(DELEGATED_CREDENTIAL_CHANNEL);
function publish(e: DelegatedCredentialEvent): void {
  if (channel.hasSubscribers) channel.publish(e);
}

/** Options of one keeper. */
export interface CredentialKeeperOptions {
  listener: string;
  chain: readonly Buffer[];
  signer: Signer;
  keyType: CredentialKeyType;
  validityMs: number;
  now?: () => number;
}

/** The current credential of one certificate, renewed at half-life; a DelegatedCredentialSource. */
export class CredentialKeeper implements DelegatedCredentialSource {
  private cred: DelegatedCredential | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly now: () => number;
  readonly certificate: string;

  constructor(private readonly o: CredentialKeeperOptions) {
    this.now = o.now ?? Date.now;
    const leaf = new X509Certificate(o.chain[0]!);
    this.certificate = `${leaf.subject.split('\n').join(', ')} (serial ${leaf.serialNumber.toLowerCase()})`;
  }

  current(nowMs: number): DelegatedCredential | undefined {
    const c = this.cred;
    return c && c.expiresAtMs > nowMs ? c : undefined;
  }

  /** Makes the first credential; a failure is published and retried, never thrown (HSM signatures serve meanwhile). */
  async start(): Promise<void> {
    await this.renew();
  }

  /** Stops renewing and forgets the credential key. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.renewTimer);
    clearTimeout(this.expiryTimer);
    this.cred = undefined;
    publish({ listener: this.o.listener, certificate: this.certificate, event: 'stopped' });
  }

  private async renew(): Promise<void> {
    if (this.stopped) return;
    const now = this.now();
    try {
      const cred = await makeDelegatedCredential({
        chain: this.o.chain, signer: this.o.signer, keyType: this.o.keyType, validityMs: this.o.validityMs, nowMs: now,
      });
      if (this.stopped) return;
      this.cred = cred;
      publish({ listener: this.o.listener, certificate: this.certificate, event: 'issued', expiresAtMs: cred.expiresAtMs });
      // Half-life: a failing renewal then has the other half to succeed before any client sees a fallback.
      this.schedule(Math.max(1000, (cred.expiresAtMs - now) / 2));
      clearTimeout(this.expiryTimer);
      this.expiryTimer = setTimeout(() => this.expire(cred), Math.max(0, cred.expiresAtMs - now));
      this.expiryTimer.unref();
    } catch (err) {
      if (this.stopped) return;
      const serving = this.current(this.now());
      publish({
        listener: this.o.listener, certificate: this.certificate, event: 'renewal_failed',
        ...(serving ? { expiresAtMs: serving.expiresAtMs } : {}), error: (err as Error).message,
      });
      // Retry often enough to catch an HSM that comes back, at most every 30 s.
      const left = serving ? serving.expiresAtMs - this.now() : 0;
      this.schedule(Math.min(30_000, Math.max(1000, left / 4)));
    }
  }

  private expire(cred: DelegatedCredential): void {
    if (this.stopped || this.cred !== cred) return;
    this.cred = undefined;
    publish({ listener: this.o.listener, certificate: this.certificate, event: 'expired' });
  }

  private schedule(ms: number): void {
    clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(() => void this.renew(), ms);
    this.renewTimer.unref();
  }
}

/** Logs credential events of this process: renewals at debug, failures and fallbacks loudly. */
export function logDelegatedCredentials(logger: Logger): () => void {
  const fn = (msg: unknown) => {
    const e = msg as DelegatedCredentialEvent;
    const at = e.expiresAtMs !== undefined ? new Date(e.expiresAtMs).toISOString() : undefined;
    const fields = { listener: e.listener, certificate: e.certificate, ...(at ? { expires: at } : {}) };
    if (e.event === 'issued') logger.info(fields, 'delegated credential issued');
    else if (e.event === 'renewal_failed') {
      logger.warn({ ...fields, err: e.error }, at
        ? 'delegated credential renewal failed; the current one serves until it expires, retrying'
        : 'delegated credential renewal failed; serving with HSM signatures, retrying');
    } else if (e.event === 'expired') logger.error(fields, 'delegated credential expired before a renewal succeeded; serving with HSM signatures');
  };
  channel.subscribe(fn);
  return () => { channel.unsubscribe(fn); };
}
