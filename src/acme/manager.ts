// Keeps every ACME certificate of a config issued and current: orders the missing ones once the
// listeners are open (tls-alpn-01 is answered by them), renews when a third of the lifetime is
// left (jittered), retries failures with backoff while the old certificate keeps serving, and
// tells the caller when a certificate changed so it swaps it into the listeners.
import { createHash } from 'node:crypto';
import { channel } from 'node:diagnostics_channel';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AcmeCertificateConfig, CertificateConfig, Config } from '../config/index.js';
import { SoftBackend, writeKeyReference, type Backend, type Engine } from '../engine/index.js';
import { configureAcmeHttp } from './account.js';
import { AccountKeeper } from './account-keeper.js';
import { ariCertId, fetchRenewalWindow, renewalInfoUrl } from './ari.js';
import { PendingChallenges } from './challenges.js';
import { AcmeError, describeAcmeFailure } from './errors.js';
import { orderCertificate, type AcmeLog } from './order.js';
import { destroyExpired, retireIssue } from './retire.js';
import { reusableKey } from './reuse-key.js';
import { certificateDir, readState, takeRenewRequest, writeState, type CertificateState } from './store.js';

/** What `acme status` shows for one certificate. */
export interface AcmeCertificateStatus {
  name: string;
  names: string[];
  keyType: string;
  keyLabel?: string;
  keyId?: string;
  serial?: string;
  notAfter?: string;
  nextRenewal?: string;
  account?: string;
  lastError?: { message: string; at: string };
}

/** How the manager is built. */
export interface AcmeManagerOptions {
  config: Config;
  engine: Engine;
  backend: Backend;
  log: AcmeLog;
  /** Called after a certificate was issued or renewed, to load it into the listeners. */
  onChange: () => Promise<void>;
  /** First retry after a failed order, doubling up to `maxRetryMs` (defaults 30 s and 1 h). */
  retryMs?: number;
  maxRetryMs?: number;
  /** Source of randomness for the retry jitter, in [0, 1) (tests make it fixed). */
  random?: () => number;
  /** How often the store is read for renewal requests and certificates issued elsewhere (default 10 s). */
  watchMs?: number;
  /** The clock that decides which retired certificates have expired (tests move it forward). */
  now?: () => number;
}

/** The ACME certificates a config asks for, once each (the same names may serve several listeners). */
export function acmeCertificates(config: Config): AcmeCertificateConfig[] {
  const seen = new Map<string, AcmeCertificateConfig>();
  for (const l of config.listeners) for (const c of l.acme ?? []) seen.set(c.names.join(','), c);
  return [...seen.values()];
}

/** When a certificate is renewed: a third of its lifetime left, minus up to 1/20 of it as jitter. */
export function renewalTime(notBefore: Date, notAfter: Date, random: () => number): Date {
  const lifetime = notAfter.getTime() - notBefore.getTime();
  return new Date(notAfter.getTime() - lifetime / 3 - random() * (lifetime / 20));
}

/** The renewal time of a stored issue; its jitter comes from the serial, so a restart does not move it. */
export function nextRenewal(state: CertificateState | undefined): Date | undefined {
  const cur = state?.current;
  if (!cur) return undefined;
  const jitter = createHash('sha256').update(cur.serial).digest().readUInt32BE(0) / 2 ** 32;
  // RFC 9773 §4.2: a point in the CA's window, chosen at random (here: fixed per serial).
  if (state.ari) {
    const start = Date.parse(state.ari.start);
    return new Date(start + jitter * (Date.parse(state.ari.end) - start));
  }
  return renewalTime(new Date(cur.notBefore), new Date(cur.notAfter), () => jitter);
}

interface Tracked {
  spec: AcmeCertificateConfig;
  dir: string;
  state: CertificateState;
  timer?: NodeJS.Timeout;
  running?: Promise<void>;
  failures: number;
}

const MAX_TIMER_MS = 2 ** 31 - 1;

/** Published at the end of every order: { name, challenge, result: 'issued' | 'failed' }. */
export const ACME_ORDER_CHANNEL = channel('hsmproxy:acme:order');
/** Published at start and after each order: { name, notAfterMs?, consecutiveFailures }. */
export const ACME_CERTIFICATE_CHANNEL = channel('hsmproxy:acme:certificate');

/** The ACME client side of a running proxy. */
export class AcmeManager {
  readonly challenges = new PendingChallenges();
  private readonly soft = new SoftBackend();
  private readonly tracked = new Map<string, Tracked>();
  /** The account key file is read again before each order (a rotated key is used at once). */
  private readonly accounts = new AccountKeeper(() => this.acme);
  private stopped = false;
  private readonly random: () => number;
  private watcher?: NodeJS.Timeout;
  private polling?: Promise<void>;
  private ariBase?: Promise<string | undefined>;
  /** The config being followed: the one given, then each that reconfigure() was given (SIGHUP). */
  private config: Config;
  private started = false;
  /** Orders of certificates removed from the config while they ran (stop() waits for them). */
  private readonly detached = new Set<Promise<void>>();

  constructor(private readonly opts: AcmeManagerOptions) {
    this.random = opts.random ?? Math.random;
    this.config = opts.config;
  }

  private get acme(): NonNullable<Config['acme']> {
    const a = this.config.acme;
    if (!a) throw new AcmeError('the configuration has no acme block', 'ACME_ERR_CONFIG');
    return a;
  }

  /** Reads the stored state of every certificate (so the listeners can serve them at once). */
  async load(): Promise<void> {
    for (const spec of acmeCertificates(this.config)) await this.track(spec);
  }

  private async track(spec: AcmeCertificateConfig): Promise<Tracked> {
    const name = spec.names[0]!;
    const dir = certificateDir(this.acme.dir, name);
    const stored = await readState(dir);
    // A changed list of names or key type is a new certificate: order it (the old one serves meanwhile).
    const state: CertificateState = stored ?? { names: spec.names, keyType: spec.keyType, retired: [] };
    const t: Tracked = { spec, dir, state, failures: 0 };
    this.tracked.set(name, t);
    return t;
  }

  /** Schedules every order and renewal; missing certificates are ordered now. Call once the listeners are open. */
  start(): void {
    this.started = true;
    for (const t of this.tracked.values()) this.begin(t);
    this.watcher = setInterval(() => void this.poll(), this.opts.watchMs ?? 10_000);
    this.watcher.unref();
  }

  private begin(t: Tracked): void {
    this.publish(t);
    this.schedule(t);
    if (t.state.current) void this.refreshAri(t);
  }

  /**
   * Follows a reloaded config (SIGHUP): a certificate it adds is loaded from the store (served at
   * once when issued before) and, once started, ordered if missing; a removed one is no longer
   * renewed (its files and HSM key stay in acme.dir); a changed one (names, key type) is ordered
   * anew while the old issue serves. The acme block itself (CA, account, ports) is read at start only.
   */
  async reconfigure(config: Config): Promise<{ added: string[]; removed: string[] }> {
    const wanted = new Map(acmeCertificates(config).map((s) => [s.names[0]!, s]));
    this.config = { ...config, acme: this.config.acme ?? config.acme };
    const added: string[] = [];
    const removed: string[] = [];
    for (const [name, t] of [...this.tracked]) {
      const spec = wanted.get(name);
      if (spec) {
        const changed = JSON.stringify(spec) !== JSON.stringify(t.spec);
        t.spec = spec;
        if (changed && this.started && !t.running) this.schedule(t);
        continue;
      }
      if (t.timer) clearTimeout(t.timer);
      this.tracked.delete(name);
      ACME_CERTIFICATE_CHANNEL.publish({ name, consecutiveFailures: 0, removed: true });
      if (t.running) {
        const p = t.running.catch(() => undefined);
        this.detached.add(p);
        void p.finally(() => this.detached.delete(p));
      }
      removed.push(name);
    }
    for (const [name, spec] of wanted) {
      if (this.tracked.has(name)) continue;
      const t = await this.track(spec);
      if (this.started) this.begin(t);
      added.push(name);
    }
    if (added.length + removed.length > 0) this.opts.log.info({ added, removed }, 'acme certificates changed by the reloaded config');
    return { added, removed };
  }

  /**
   * Looks at the store now (also on SIGHUP): runs renewal requests `acme renew` left, and loads a
   * certificate that another proxy sharing `acme.dir` issued.
   */
  poll(): Promise<void> {
    this.polling ??= this.pollOnce().finally(() => { this.polling = undefined; });
    return this.polling;
  }

  private async pollOnce(): Promise<void> {
    let changed = false;
    for (const t of this.tracked.values()) {
      if (this.stopped) return;
      const req = await takeRenewRequest(t.dir).catch(() => undefined);
      if (req) {
        const due = nextRenewal(t.state);
        if (req.force || !this.matches(t) || !due || due.getTime() <= Date.now()) {
          this.opts.log.info({ acme: t.spec.names[0], force: req.force }, 'acme renewal requested');
          void this.run(t, true).catch(() => undefined);
        }
        continue;
      }
      if (t.running) continue;
      const ariStale = !t.state.ari || Date.parse(t.state.ari.retryAfter) <= Date.now();
      if (t.state.current && ariStale) await this.refreshAri(t);
      const stored = await readState(t.dir).catch(() => undefined);
      if (stored?.current && stored.current.serial !== t.state.current?.serial) {
        t.state = stored;
        changed = true;
        this.publish(t);
        this.schedule(t);
      }
    }
    if (changed && !this.stopped) await this.opts.onChange().catch((err: unknown) => {
      this.opts.log.error({ err: (err as Error).message }, 'could not load a certificate issued elsewhere');
    });
  }

  /** The listener config with its ACME certificates' current files added to its file certificates. */
  withCertificates(config: Config): Config {
    return {
      ...config,
      listeners: config.listeners.map((l) => ({
        ...l,
        certificates: [...l.certificates, ...(l.acme ?? []).flatMap((spec) => this.files(spec))],
      })),
    };
  }

  private files(spec: AcmeCertificateConfig): CertificateConfig[] {
    const t = this.tracked.get(spec.names[0]!);
    const cur = t && this.matches(t) ? t.state.current : undefined;
    return cur ? [{ cert: join(t!.dir, cur.chainFile), key: join(t!.dir, cur.keyFile) }] : [];
  }

  /** The stored certificate is the one the config asks for (same names and key type). */
  private matches(t: Tracked): boolean {
    return t.state.names.join(',') === t.spec.names.join(',') && t.state.keyType === t.spec.keyType;
  }

  /** Every certificate's state, for `acme status` and tests. */
  status(): AcmeCertificateStatus[] {
    return [...this.tracked.values()].map((t) => statusOf(
      t.spec, t.state, this.matches(t) ? nextRenewal(t.state) : undefined,
    ));
  }

  /** Orders `name` now (a forced renewal); resolves once it is issued and swapped in, or rejects with why not. */
  async renew(name: string): Promise<void> {
    const t = this.tracked.get(name);
    if (!t) throw new AcmeError(`no acme certificate named ${name} (configured: ${[...this.tracked.keys()].join(', ') || 'none'})`, 'ACME_ERR_UNKNOWN_NAME');
    await this.run(t, true);
  }

  /** Stops scheduling; an order in flight finishes but changes nothing afterwards. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.watcher) clearInterval(this.watcher);
    for (const t of this.tracked.values()) if (t.timer) clearTimeout(t.timer);
    await this.polling;
    await Promise.all([...this.tracked.values()].map((t) => t.running?.catch(() => undefined)));
    await Promise.all([...this.detached]);
    await this.soft.close();
  }

  /** The renewalInfo URL of the CA's directory (undefined: no ARI, or the directory did not answer). */
  private renewalInfo(): Promise<string | undefined> {
    const read = async (): Promise<string | undefined> => {
      await configureAcmeHttp(this.acme);
      return renewalInfoUrl(this.acme.directory);
    };
    this.ariBase ??= read().catch((err: unknown) => {
      this.ariBase = undefined;
      this.opts.log.warn({ err: describeAcmeFailure(err) }, 'could not read the ACME directory for renewalInfo');
      return undefined;
    });
    return this.ariBase;
  }

  /** Asks the CA for the current issue's renewal window (RFC 9773) and reschedules by it. */
  private async refreshAri(t: Tracked): Promise<void> {
    const cur = t.state.current;
    if (!cur || this.stopped) return;
    const base = await this.renewalInfo();
    if (!base) return;
    try {
      const certId = ariCertId(await readFile(join(t.dir, cur.chainFile), 'utf8'));
      if (!certId) return;
      const w = await fetchRenewalWindow(base, certId);
      if (t.state.current?.serial !== cur.serial) return; // renewed meanwhile
      t.state = { ...t.state, ari: { certId, ...w } };
      await writeState(t.dir, t.state);
      this.opts.log.info({ acme: t.spec.names[0], window: [w.start, w.end] }, 'acme renewal window from the CA (ARI)');
      if (!t.running) this.schedule(t);
    } catch (err) {
      this.opts.log.warn({ acme: t.spec.names[0], err: describeAcmeFailure(err) }, 'renewalInfo did not answer; renewing when a third of the lifetime is left');
    }
  }

  /** Still in the config (reconfigure() drops removed certificates: nothing is scheduled or exported for them). */
  private current(t: Tracked): boolean {
    return this.tracked.get(t.spec.names[0]!) === t;
  }

  private publish(t: Tracked, result?: 'issued' | 'failed'): void {
    const name = t.spec.names[0]!;
    if (!this.current(t)) return;
    if (result) ACME_ORDER_CHANNEL.publish({ name, challenge: t.spec.challenge, result });
    const cur = this.matches(t) ? t.state.current : undefined;
    ACME_CERTIFICATE_CHANNEL.publish({
      name, consecutiveFailures: t.failures, ...(cur ? { notAfterMs: Date.parse(cur.notAfter) } : {}),
    });
  }

  private renewAt(t: Tracked): Date | undefined {
    return nextRenewal(t.state);
  }

  private schedule(t: Tracked, delayMs?: number): void {
    if (this.stopped || !this.current(t)) return;
    if (t.timer) clearTimeout(t.timer);
    const at = this.matches(t) ? this.renewAt(t) : undefined;
    const wait = delayMs ?? (at ? Math.max(0, at.getTime() - Date.now()) : 0);
    t.timer = setTimeout(() => {
      if (wait >= MAX_TIMER_MS) return this.schedule(t);
      void this.run(t, false).catch(() => undefined);
    }, Math.min(wait, MAX_TIMER_MS));
    t.timer.unref();
  }

  private run(t: Tracked, forced: boolean): Promise<void> {
    if (t.running) return forced ? t.running.then(() => this.run(t, true)) : t.running;
    const p = this.order(t).finally(() => { t.running = undefined; });
    t.running = p;
    return p;
  }

  private async order(t: Tracked): Promise<void> {
    const name = t.spec.names[0]!;
    try {
      await mkdir(t.dir, { recursive: true, mode: 0o700 });
      const account = await this.accounts.get();
      const issued = await orderCertificate(
        {
          account, engine: this.opts.engine, backend: this.opts.backend, soft: this.soft,
          challenges: this.challenges, log: this.opts.log,
        },
        t.spec,
        {
          write: (key) => writeKeyReference(key, join(t.dir, `key-${key.keyId}.pem`)),
          remove: (key) => rm(join(t.dir, `key-${key.keyId}.pem`), { force: true }),
        },
        await this.replaces(t),
        await reusableKey(t.spec, t.state, t.dir, this.opts.engine, this.opts.log),
      );
      if (this.stopped) return;
      const serial = issued.leaf.serialNumber;
      const chainFile = `chain-${serial}.pem`;
      await writeFile(join(t.dir, chainFile), issued.chainPem);
      const retired = retireIssue(t.state);
      t.state = {
        names: t.spec.names, keyType: t.spec.keyType, retired,
        current: {
          chainFile, keyFile: `key-${issued.key.keyId}.pem`, keyId: issued.key.keyId, keyLabel: issued.key.label, serial,
          notBefore: new Date(issued.leaf.validFrom).toISOString(),
          notAfter: new Date(issued.leaf.validTo).toISOString(),
          orderedAt: new Date().toISOString(), account: account.url,
        },
      };
      await writeState(t.dir, t.state);
      t.failures = 0;
      this.publish(t, 'issued');
      await this.opts.onChange();
      await this.destroyExpired(t);
      this.schedule(t);
      void this.refreshAri(t);
    } catch (err) {
      const message = err instanceof AcmeError ? err.message : `ordering ${name} failed: ${describeAcmeFailure(err)}`;
      t.failures++;
      this.publish(t, 'failed');
      const base = this.opts.retryMs ?? 30_000;
      const backoff = Math.min(base * 2 ** (t.failures - 1), this.opts.maxRetryMs ?? 3_600_000);
      const delay = backoff * (0.8 + 0.4 * this.random());
      const keepsServing = t.state.current?.serial ?? null;
      this.opts.log.error({ acme: name, retryInMs: Math.round(delay), keepsServing }, message);
      t.state = { ...t.state, lastError: { message, at: new Date().toISOString() } };
      await writeState(t.dir, t.state).catch(() => undefined);
      this.schedule(t, delay);
      throw err;
    }
  }

  /** The certificate a renewal replaces (RFC 9773 §5), when the CA offers ARI. */
  private async replaces(t: Tracked): Promise<string | undefined> {
    const cur = t.state.current;
    if (!cur || !this.matches(t) || !(await this.renewalInfo())) return undefined;
    return t.state.ari?.certId ?? ariCertId(await readFile(join(t.dir, cur.chainFile), 'utf8'));
  }

  /** Keys of earlier issues are destroyed in the HSM once their certificate has expired (unless reused). */
  private async destroyExpired(t: Tracked): Promise<void> {
    const now = (this.opts.now ?? Date.now)();
    const log = this.opts.log;
    const keep = await destroyExpired(t.dir, t.state, this.opts.backend, {
      info: (o, m) => log.info({ acme: t.spec.names[0], ...o }, m),
      warn: (o, m) => log.warn({ acme: t.spec.names[0], ...o }, m),
      error: (o, m) => log.error({ acme: t.spec.names[0], ...o }, m),
    }, now);
    if (keep.length !== t.state.retired.length) {
      t.state = { ...t.state, retired: keep };
      await writeState(t.dir, t.state);
    }
  }
}

/** A certificate's row of `acme status`. */
export function statusOf(
  spec: { names: string[]; keyType: string }, state: CertificateState | undefined, next?: Date,
): AcmeCertificateStatus {
  const cur = state?.current;
  return {
    name: spec.names[0]!, names: spec.names, keyType: spec.keyType,
    ...(cur ? {
      keyLabel: cur.keyLabel, keyId: cur.keyId, serial: cur.serial, notAfter: cur.notAfter, account: cur.account,
    } : {}),
    ...(next ? { nextRenewal: next.toISOString() } : {}),
    ...(state?.lastError ? { lastError: state.lastError } : {}),
  };
}
