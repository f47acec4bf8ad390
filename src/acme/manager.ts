// Keeps every ACME certificate of a config issued and current: orders the missing ones once the
// listeners are open (tls-alpn-01 is answered by them), renews when a third of the lifetime is
// left (jittered), retries failures with backoff while the old certificate keeps serving, and
// tells the caller when a certificate changed so it swaps it into the listeners. With a shared
// CertificateStore (the HSM cluster) an order runs only under the store's lease, its challenges
// are published there, and certificates other proxies stored are taken up (files under acme.dir
// stay this process's cache, which the listeners load).
import { createHash, X509Certificate } from 'node:crypto';
import { channel } from 'node:diagnostics_channel';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AcmeCertificateConfig, CertificateConfig, Config } from '../config/index.js';
import { SoftBackend, writeKeyReference, type Backend, type Engine, type KeyHandle } from '../engine/index.js';
import { configureAcmeHttp } from './account.js';
import { AccountKeeper } from './account-keeper.js';
import { ariCertId, fetchRenewalWindow, renewalInfoUrl } from './ari.js';
import { FileCertificateStore, type CertificateStore, type OrderLease, type PublishedChallenge } from './certificate-store.js';
import { PendingChallenges } from './challenges.js';
import { AcmeError, describeAcmeFailure } from './errors.js';
import { alpnChallengeCertificate, orderCertificate, type AcmeLog } from './order.js';
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
  /** Where certificates are shared and orders leased (default: the files under acme.dir, one proxy). */
  store?: CertificateStore;
  /** How long an order lease lasts unless renewed (default acme.leaseSeconds). */
  leaseTtlMs?: number;
  /** How often a shared store is read for challenges other proxies are waiting on (default 1 s). */
  challengePollMs?: number;
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
  /** The store certificates are shared through (the source of truth when it is shared). */
  readonly store: CertificateStore;
  private challengeTimer?: NodeJS.Timeout;
  /** Challenges other proxies published that this process answers too, by key; and its own. */
  private readonly remote = new Map<string, () => void>();
  private readonly own = new Set<string>();

  constructor(private readonly opts: AcmeManagerOptions) {
    this.random = opts.random ?? Math.random;
    this.config = opts.config;
    this.store = opts.store ?? new FileCertificateStore(this.acme.dir);
  }

  private get leaseTtlMs(): number {
    return this.opts.leaseTtlMs ?? (this.acme.leaseSeconds ?? 120) * 1000;
  }

  private get challengePollMs(): number {
    return this.opts.challengePollMs ?? 1000;
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
    // A certificate another proxy of the cluster stored is served from the start, without an order.
    if (this.store.shared) await this.adopt(t).catch((err: unknown) => this.adoptFailed(t, err));
    return t;
  }

  /** Schedules every order and renewal; missing certificates are ordered now. Call once the listeners are open. */
  start(): void {
    this.started = true;
    for (const t of this.tracked.values()) this.begin(t);
    this.watcher = setInterval(() => void this.poll(), this.opts.watchMs ?? 10_000);
    this.watcher.unref();
    if (this.store.sharesChallenges && this.tracked.size > 0) {
      this.challengeTimer = setInterval(() => void this.syncChallenges(), this.challengePollMs);
      this.challengeTimer.unref();
    }
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
      if (this.store.shared) {
        if (await this.adopt(t).catch((err: unknown) => this.adoptFailed(t, err))) changed = true;
        continue;
      }
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
    if (this.challengeTimer) clearInterval(this.challengeTimer);
    for (const remove of this.remote.values()) remove();
    this.remote.clear();
    for (const t of this.tracked.values()) if (t.timer) clearTimeout(t.timer);
    await this.polling;
    await Promise.all([...this.tracked.values()].map((t) => t.running?.catch(() => undefined)));
    await Promise.all([...this.detached]);
    await this.soft.close();
    await this.store.close();
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
    const p = this.order(t, forced).finally(() => { t.running = undefined; });
    t.running = p;
    return p;
  }

  private async order(t: Tracked, forced: boolean): Promise<void> {
    const name = t.spec.names[0]!;
    let lease: OrderLease | undefined;
    let keepAlive: NodeJS.Timeout | undefined;
    try {
      await mkdir(t.dir, { recursive: true, mode: 0o700 });
      // At most one proxy of the cluster orders a name at a time; the others pick its result up.
      lease = await this.store.acquire(name, this.leaseTtlMs);
      if (!lease) {
        this.opts.log.info({ acme: name }, 'another proxy of the cluster holds the order lease; its certificate is taken up once stored');
        this.schedule(t, Math.min(this.leaseTtlMs, 10_000) * (0.5 + this.random()));
        return;
      }
      const held = lease;
      this.opts.log.info({ acme: name, token: held.token, store: this.store.kind }, 'acme order lease taken');
      keepAlive = setInterval(() => {
        held.renew().catch((err: unknown) => this.opts.log.warn({ acme: name, err: (err as Error).message }, 'could not renew the order lease'));
      }, Math.max(100, this.leaseTtlMs / 3));
      keepAlive.unref();
      if (this.store.shared) {
        // Another proxy may have stored a new issue while this one waited: take it instead.
        const adopted = await this.adopt(t);
        const due = nextRenewal(t.state);
        const notDue = !forced && t.state.current !== undefined && this.matches(t)
          && due !== undefined && due.getTime() > Date.now();
        if ((adopted && forced) || notDue) {
          if (adopted) await this.opts.onChange();
          this.schedule(t);
          return;
        }
      }
      // Only a proxy that orders needs the account (a PKCS#11 proxy that is not the orderer never does).
      const account = await this.accounts.get();
      const issued = await orderCertificate(
        {
          account, engine: this.opts.engine, backend: this.opts.backend, soft: this.soft,
          challenges: this.challenges, log: this.opts.log,
          ...(this.store.sharesChallenges ? { announce: this.announcer(held) } : {}),
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
      const orderedAt = new Date().toISOString();
      try {
        await this.store.write(held, {
          name, names: t.spec.names, keyType: t.spec.keyType, keyId: issued.key.keyId, keyLabel: issued.key.label,
          chainPem: issued.chainPem, account: account.url, orderedAt,
        });
      } catch (err) {
        // Not stored (a newer lease holder's certificate stands): this issue is never served. Its
        // key goes too, unless reuseKey carried over the key the current issue still uses.
        if (issued.key.keyId !== t.state.current?.keyId) {
          await this.opts.backend.delete(issued.key).catch(() => undefined);
          await rm(join(t.dir, `key-${issued.key.keyId}.pem`), { force: true });
        }
        throw err;
      }
      const chainFile = `chain-${serial}.pem`;
      await writeFile(join(t.dir, chainFile), issued.chainPem);
      const retired = retireIssue(t.state);
      t.state = {
        names: t.spec.names, keyType: t.spec.keyType, retired,
        current: {
          chainFile, keyFile: `key-${issued.key.keyId}.pem`, keyId: issued.key.keyId, keyLabel: issued.key.label, serial,
          notBefore: new Date(issued.leaf.validFrom).toISOString(),
          notAfter: new Date(issued.leaf.validTo).toISOString(),
          orderedAt, account: account.url,
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
    } finally {
      if (keepAlive) clearInterval(keepAlive);
      await lease?.release().catch((err: unknown) => this.opts.log.warn({ acme: name, err: (err as Error).message }, 'could not release the order lease; it expires'));
    }
  }

  /**
   * Publishes an order's challenges beside its lease, then waits two looks of the other proxies
   * (challengePollMs each) so that whichever the CA's validation reaches answers it.
   */
  private announcer(lease: OrderLease): (c: PublishedChallenge) => Promise<() => Promise<void>> {
    const published: PublishedChallenge[] = [];
    return async (c) => {
      published.push(c);
      const key = challengeKey(c);
      this.own.add(key);
      await lease.publish([...published]);
      await new Promise((r) => setTimeout(r, 2 * this.challengePollMs + 250));
      return async () => {
        published.splice(published.indexOf(c), 1);
        this.own.delete(key);
        await lease.publish([...published]).catch(() => undefined);
      };
    };
  }

  /** Answers here too the challenges other proxies of the cluster published (and stops when they are gone). */
  private async syncChallenges(): Promise<void> {
    let list: PublishedChallenge[];
    try {
      list = await this.store.pendingChallenges();
    } catch {
      return; // the next look tries again
    }
    const want = new Map(list.map((c) => [challengeKey(c), c]));
    for (const [k, remove] of this.remote) {
      if (!want.has(k)) { remove(); this.remote.delete(k); }
    }
    for (const [k, c] of want) {
      if (this.remote.has(k) || this.own.has(k) || this.stopped) continue;
      if (c.type === 'http-01') {
        this.remote.set(k, this.challenges.addHttp(c.token, c.keyAuthorization));
        continue;
      }
      try {
        const made = await alpnChallengeCertificate(this.opts.engine, this.soft, c.name, c.keyAuthorization);
        const { certified, dispose } = made;
        const remove = this.challenges.addTlsAlpn(c.name, certified);
        this.remote.set(k, () => { remove(); dispose(); });
      } catch (err) {
        this.opts.log.warn({ name: c.name, err: (err as Error).message }, 'could not make the tls-alpn-01 certificate of a challenge published in the cluster');
      }
    }
  }

  /**
   * Takes the store's issue of `t` into the local cache when it is another than the one served here
   * (another proxy ordered it); true when it changed. Never goes back to an older issue.
   */
  private async adopt(t: Tracked): Promise<boolean> {
    const name = t.spec.names[0]!;
    const stored = await this.store.read(name);
    if (!stored || stored.names.join(',') !== t.spec.names.join(',') || stored.keyType !== t.spec.keyType) return false;
    const leaf = new X509Certificate(stored.chainPem);
    const cur = this.matches(t) ? t.state.current : undefined;
    if (leaf.serialNumber === cur?.serial) return false;
    // Never an older issue than the one served here, nor an expired one (it is ordered anew instead).
    if (cur && Date.parse(leaf.validFrom) < Date.parse(cur.notBefore)) return false;
    if (Date.parse(leaf.validTo) <= Date.now()) return false;
    const find = (this.opts.backend as { find?: (id: string) => Promise<KeyHandle> }).find;
    if (!find) throw new AcmeError(`the ${this.opts.backend.kind} backend cannot look keys up by id`, 'ACME_ERR_STORE');
    const key = await find.call(this.opts.backend, stored.keyId);
    await mkdir(t.dir, { recursive: true, mode: 0o700 });
    const chainFile = `chain-${leaf.serialNumber}.pem`;
    const keyFile = `key-${stored.keyId}.pem`;
    await writeFile(join(t.dir, chainFile), stored.chainPem);
    await writeKeyReference(key, join(t.dir, keyFile), { overwrite: true });
    const retired = cur ? retireIssue(t.state) : [...t.state.retired];
    t.state = {
      names: t.spec.names, keyType: t.spec.keyType, retired,
      current: {
        chainFile, keyFile, keyId: stored.keyId, keyLabel: stored.keyLabel, serial: leaf.serialNumber,
        notBefore: new Date(leaf.validFrom).toISOString(), notAfter: new Date(leaf.validTo).toISOString(),
        orderedAt: stored.orderedAt, account: stored.account,
      },
    };
    await writeState(t.dir, t.state);
    this.opts.log.info({ acme: name, serial: leaf.serialNumber, store: this.store.kind }, 'acme certificate taken up from the store (ordered by another proxy)');
    this.publish(t);
    if (!t.running) this.schedule(t);
    return true;
  }

  private adoptFailed(t: Tracked, err: unknown): false {
    this.opts.log.warn({ acme: t.spec.names[0], err: (err as Error).message }, 'could not read the certificate store; the local copy keeps serving');
    return false;
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

/** One challenge's identity: an http-01 token, or a tls-alpn-01 name with its key authorization. */
function challengeKey(c: PublishedChallenge): string {
  return c.type === 'http-01' ? `http-01 ${c.token}` : `tls-alpn-01 ${c.name.toLowerCase()} ${c.keyAuthorization}`;
}
