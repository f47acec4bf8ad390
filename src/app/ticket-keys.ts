// The session-ticket keys of this proxy (config `tickets`). `local`: TicketKeys makes each epoch's
// key from fresh randomness. `hsm` and `file`: each epoch's key is made from an epoch secret,
// HMAC-SHA256(long-term secret, "hsmproxy session-ticket epoch <rotateEveryMs>/<epoch>"), so every
// proxy with the same secret seals and opens the same tickets. With `hsm` the long-term secret is
// a non-extractable generic-secret key in the cluster and the HMAC is made inside an HSM: one
// request per epoch per proxy (cached for the epoch), never the secret in the clear. The previous,
// current and next two epochs' keys are installed ahead of need; a failed request is retried, and
// meanwhile TicketKeys seals with a key of its own (tickets then resume only on this proxy).
import { createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { TicketsConfig } from '../config/index.js';
import type { ClusterClient } from '../hsm/client/cluster-client.js';
import { TicketKeys, ticketKeyFromEpochSecret } from '../tls/index.js';
import { UsageError } from './errors.js';
import type { HsmSide } from './hsm-side.js';

/** Where epoch secrets come from. */
export interface EpochSecretSource {
  /** For logs: "HSM key "hsmproxy-session-tickets" (id …)", "file /etc/…". */
  describe: string;
  derive(epoch: number): Promise<Buffer>;
}

/** What an epoch secret is the HMAC of; the epoch length is in it, so proxies that disagree on it share nothing. */
export function epochMessage(rotateEveryMs: number, epoch: number): Buffer {
  return Buffer.from(`hsmproxy session-ticket epoch ${rotateEveryMs}/${epoch}`);
}

/**
 * The cluster's ticket secret: the generic-secret key labelled `label` that this crypto user can
 * use, made (token, non-extractable, sensitive, HMAC only) when there is none. Each crypto user a
 * proxy logs in as must own it or have it shared (`key share`); otherwise it makes its own, and
 * its tickets resume only where that user's proxies run.
 */
export async function hsmEpochSource(
  cluster: ClusterClient, label: string, rotateEveryMs: number, log: Logger,
): Promise<EpochSecretSource> {
  const usable = (await cluster.findKeys({ label, class: 'secret' })).filter((k) => k.type === 'generic-secret' && k.sign);
  // Two proxies that both made one on a first start: every proxy picks the same (lowest id).
  usable.sort((a, b) => (a.keyId < b.keyId ? -1 : a.keyId > b.keyId ? 1 : 0));
  let key = usable[0];
  if (!key) {
    key = await cluster.generateKey('generic-secret:256', {
      label, token: true, extractable: false, sensitive: true, sign: true, verify: true,
      encrypt: false, decrypt: false, wrap: false, unwrap: false,
    });
    log.info({ label, keyId: key.keyId }, 'made the session-ticket secret key in the HSM cluster');
  }
  const keyId = key.keyId;
  return {
    describe: `HSM key "${label}" (${keyId})`,
    derive: (epoch) => cluster.hmac({ keyId, mechanism: 'hmac-sha256', data: epochMessage(rotateEveryMs, epoch) }),
  };
}

/** The ticket secret in a file (at least 32 bytes; nginx's 48- and 80-byte key files qualify as they are). */
export async function fileEpochSource(file: string, rotateEveryMs: number): Promise<EpochSecretSource> {
  let secret: Buffer;
  try {
    secret = await readFile(file);
  } catch (err) {
    throw new UsageError(`tickets.file: cannot read ${file}: ${(err as Error).message}`);
  }
  if (secret.length < 32) {
    throw new UsageError(`tickets.file: ${file} holds ${secret.length} bytes; it needs at least 32 random bytes (e.g. openssl rand 80 > ${file})`);
  }
  return {
    describe: `file ${file}`,
    derive: async (epoch) => createHmac('sha256', secret).update(epochMessage(rotateEveryMs, epoch)).digest(),
  };
}

/** Options of EpochKeyFeeder. */
export interface EpochKeyFeederOptions {
  keys: TicketKeys;
  source: EpochSecretSource;
  rotateEveryMs: number;
  log: Logger;
  /** Called after new keys were installed (the primary sends them to its workers). */
  onInstalled?: () => void;
  /** Delay before retrying a failed derivation (default 5 s). */
  retryMs?: number;
}

/** Installs the previous, current and next two epochs' keys in `keys`, and each new one as epochs pass. */
export class EpochKeyFeeder {
  private readonly installed = new Set<number>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly opts: EpochKeyFeederOptions) {}

  /** Installs what is due now; resolves false (and keeps retrying) when the source failed. */
  async start(): Promise<boolean> {
    const ok = await this.feed();
    this.schedule(ok);
    return ok;
  }

  /** Stops the timers; installed keys stay. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private async feed(): Promise<boolean> {
    const { keys, source, log } = this.opts;
    const current = keys.currentEpoch();
    // Epochs before the previous one no longer open tickets: forget that they were installed.
    for (const e of this.installed) if (e < current - 1) this.installed.delete(e);
    // Two epochs ahead: a feed that runs late (a busy process, a slow HSM) still finds the next
    // epoch's key in place, and the primary never hands its workers a key of its own making.
    const due = [current - 1, current, current + 1, current + 2].filter((e) => !this.installed.has(e));
    if (due.length === 0) return true;
    try {
      const shared = await Promise.all(due.map(async (e) => ticketKeyFromEpochSecret(e, await source.derive(e))));
      keys.install(shared);
      for (const e of due) this.installed.add(e);
    } catch (err) {
      log.warn({ err: (err as Error).message, source: source.describe }, 'cannot derive session-ticket keys; tickets issued meanwhile resume only on this proxy; retrying');
      return false;
    }
    this.opts.onInstalled?.();
    return true;
  }

  private schedule(ok: boolean): void {
    if (this.stopped) return;
    const { keys } = this.opts;
    // The next keys are made ahead, so the boundary needs none: feed again once it passed.
    const wait = ok ? Math.max(0, keys.msUntilEpoch(keys.currentEpoch() + 1)) + 10 : this.opts.retryMs ?? 5000;
    this.timer = setTimeout(() => {
      void this.feed().then((next) => this.schedule(next));
    }, wait);
    this.timer.unref();
  }
}

/** This process's ticket keys and what keeps them fed. */
export interface TicketKeyService {
  keys: TicketKeys;
  describe: string;
  stop(): void;
}

/**
 * Builds the ticket keys `config.tickets` asks for. `onInstalled` is told when derived keys are
 * installed (workers: send them on). With hsm/file, a source that cannot be read at all (no such
 * file, HSM refusing to make the key) fails the start; a derivation that fails is retried.
 */
export async function startTicketKeys(
  config: TicketsConfig, hsm: HsmSide, log: Logger, onInstalled?: () => void,
): Promise<TicketKeyService> {
  const keys = new TicketKeys({ rotateEveryMs: config.rotateEveryMs });
  if (config.keys === 'local') return { keys, describe: 'made by this proxy', stop: () => undefined };
  let source: EpochSecretSource;
  if (config.keys === 'file') {
    source = await fileEpochSource(config.file!, config.rotateEveryMs);
  } else {
    if (!hsm.cluster) throw new UsageError('tickets.keys: hsm needs the simulated cluster (hsm.mode embedded or cluster); use keys: file');
    source = await hsmEpochSource(hsm.cluster, config.hsmKeyLabel, config.rotateEveryMs, log);
  }
  const feeder = new EpochKeyFeeder({
    keys, source, rotateEveryMs: config.rotateEveryMs, log, ...(onInstalled ? { onInstalled } : {}),
  });
  await feeder.start();
  log.info({ source: source.describe, rotateEveryMs: config.rotateEveryMs }, 'session-ticket keys derived per epoch');
  return { keys, describe: `derived per epoch from ${source.describe}`, stop: () => feeder.stop() };
}
