// Turns parsed YAML into a Config: every field type-checked, defaults filled in, cross-references
// (route → upstream pool, unique names and ports) checked, every problem reported with its path.
import { isIP } from 'node:net';
import { checkAcmeCertificates, readAcme, readAcmeCertificate, type AcmeCertificateConfig } from './acme.js';
import { readClientAuth } from './client-auth.js';
import { readDelegatedCredentials } from './delegated-credentials.js';
import { checkFiles } from './files.js';
import { readHttp2 } from './http2.js';
import { ConfigInvalidError } from './errors.js';
import { readHsm } from './hsm.js';
import { readTickets } from './tickets.js';
import { at, Reader } from './reader.js';
import {
  BALANCE_STRATEGIES, DEFAULTS, LOG_LEVELS, SNI_POLICIES, TLS_GROUPS, TLS_VERSIONS, UPSTREAM_PROTOCOLS,
  type Config, type HealthCheckConfig, type ListenerConfig, type ListenerLimits, type RouteConfig, type ServerTimeouts,
  type SniPolicy, type TlsVersion, type UpstreamConfig, type UpstreamProtocol, type UpstreamTimeouts,
} from './schema.js';

/** How to validate: where relative paths start, and whether named files must exist now. */
export interface ValidateOptions { baseDir?: string; checkFiles?: boolean; source?: string }

const TOP_KEYS = [
  'listeners', 'routes', 'upstreams', 'hsm', 'admin', 'workers', 'log', 'timeouts', 'demo', 'trustedProxies', 'http', 'http2', 'acme', 'tickets',
] as const;
const MS_MAX = 86_400_000;
const ALPN_PROTOCOLS = ['h2', 'http/1.1', 'http/1.0'] as const;

/** Validates `raw` (parsed YAML) into the complete Config, or throws ConfigInvalidError listing every bad field. */
export function validateConfig(raw: unknown, opts: ValidateOptions = {}): Config {
  const r = new Reader(opts.baseDir ?? process.cwd());
  const o = r.object(raw ?? {}, '', TOP_KEYS);
  if (!o) throw new ConfigInvalidError(r.issues, opts.source);
  const acmeEntries: Array<{ path: string; cert: AcmeCertificateConfig }> = [];
  const listeners = r.list(o.listeners, 'listeners', (v, p) => readListener(r, v, p, acmeEntries), { minItems: 1 });
  const upstreams: Record<string, UpstreamConfig> = {};
  if (o.upstreams !== undefined) {
    const u = r.object(o.upstreams, 'upstreams', Object.keys(o.upstreams as object ?? {}));
    for (const [name, v] of Object.entries(u ?? {})) {
      const pool = readUpstream(r, v, at('upstreams', name), name);
      if (pool) upstreams[name] = pool;
    }
  }
  const routes = r.list(o.routes, 'routes', (v, p) => readRoute(r, v, p, upstreams), { minItems: 1 });
  const hsm = readHsm(r, o.hsm, 'hsm');
  const acme = o.acme === undefined ? undefined : readAcme(r, o.acme, hsm);
  checkAcmeCertificates(r, acme, o.acme !== undefined, acmeEntries);
  const admin = readAdmin(r, o.admin);
  const workers = o.workers === 'auto' ? 'auto' : r.integer(o.workers, 'workers', { def: DEFAULTS.workers, min: 1, max: 256, what: "'auto' or a number of workers" });
  const logObj = o.log === undefined ? {} : r.object(o.log, 'log', ['level']);
  const level = logObj ? r.string(logObj.level, 'log.level', { def: DEFAULTS.log.level, oneOf: LOG_LEVELS }) : undefined;
  const timeouts = readMsFields<ServerTimeouts>(r, o.timeouts, 'timeouts', DEFAULTS.timeouts);
  if (o.demo !== undefined && typeof o.demo !== 'boolean') r.fail('demo', `expected true or false, got ${JSON.stringify(o.demo)}`);
  const demo = o.demo === true;
  const tickets = readTickets(r, o.tickets, hsm?.mode);
  const trustedProxies = r.list(o.trustedProxies, 'trustedProxies', (v, p) => readCidr(r, v, p), { def: [] });
  const httpObj = o.http === undefined ? {} : r.object(o.http, 'http', ['maxHeaderBytes', 'maxHeaders']);
  const maxHeaderBytes = httpObj ? r.integer(httpObj.maxHeaderBytes, 'http.maxHeaderBytes', { def: DEFAULTS.http.maxHeaderBytes, min: 1024, max: 1 << 20, what: 'bytes' }) : undefined;
  const maxHeaders = httpObj ? r.integer(httpObj.maxHeaders, 'http.maxHeaders', { def: DEFAULTS.http.maxHeaders, min: 8, max: 10_000 }) : undefined;
  const http2 = readHttp2(r, o.http2, 'http2');
  // With the simulated cluster each worker is one more proxy of the cluster (challenges and
  // certificates are shared through the HSMs); PKCS#11 tokens cannot share challenges.
  if (acmeEntries.length > 0 && workers !== undefined && workers !== 1 && hsm?.mode === 'pkcs11') {
    r.fail('workers', 'must be 1 with acme certificates and hsm.mode pkcs11: the process that orders a certificate answers its challenges (with the simulated cluster, workers share them through the HSMs)');
  }
  if (demo && !upstreams.demo) r.fail('demo', 'needs upstreams.demo: the address the demo upstream listens on (e.g. { targets: [http://127.0.0.1:8080] })');
  if (listeners) checkListenersUnique(r, listeners);
  if (r.issues.length === 0 && opts.checkFiles !== false) r.issues.push(...checkFiles(r.files));
  if (r.issues.length > 0 || !listeners || !routes || !hsm || !admin || workers === undefined || !level || !timeouts
    || !trustedProxies || !maxHeaderBytes || !maxHeaders || !http2 || !tickets) {
    throw new ConfigInvalidError(r.issues, opts.source);
  }
  return {
    listeners, routes, upstreams, hsm, admin, workers, log: { level: level as Config['log']['level'] }, timeouts, demo,
    trustedProxies, http: { maxHeaderBytes, maxHeaders }, http2, tickets, ...(acme ? { acme } : {}),
  };
}

function readListener(
  r: Reader, v: unknown, path: string, acmeEntries: Array<{ path: string; cert: AcmeCertificateConfig }>,
): ListenerConfig | undefined {
  const d = DEFAULTS.listener;
  const o = r.object(v, path, [
    'name', 'address', 'port', 'certificates', 'alpn', 'minVersion', 'maxVersion', 'requireExtendedMasterSecret', 'groups', 'sni',
    'clientAuth', 'limits', 'delegatedCredentials', 'proxyProtocol',
  ]);
  if (!o) return undefined;
  const index = Number(/\[(\d+)\]$/.exec(path)?.[1] ?? 0);
  const name = r.string(o.name, at(path, 'name'), { def: `listener${index}` });
  const address = r.string(o.address, at(path, 'address'), { def: d.address });
  const port = r.integer(o.port, at(path, 'port'), { min: 0, max: 65535, what: 'a TCP port' });
  // Files and ACME orders may be mixed; both kinds are offered to SNI selection alike.
  const acme: AcmeCertificateConfig[] = [];
  const certificates = r.list(o.certificates, at(path, 'certificates'), (c, p) => {
    if (c !== null && typeof c === 'object' && 'acme' in c) {
      if (r.object(c, p, ['acme'])) {
        const a = readAcmeCertificate(r, (c as { acme: unknown }).acme, at(p, 'acme'));
        if (a) { acme.push(a); acmeEntries.push({ path: at(p, 'acme'), cert: a }); }
      }
      return undefined;
    }
    const co = r.object(c, p, ['cert', 'key']);
    if (!co) return undefined;
    const cert = r.file(co.cert, at(p, 'cert'));
    const key = r.file(co.key, at(p, 'key'));
    return cert && key ? { cert, key } : undefined;
  }, { minItems: 1 });
  const alpn = r.list(o.alpn, at(path, 'alpn'), (a, p) => r.string(a, p, { oneOf: ALPN_PROTOCOLS }), { def: [...d.alpn], minItems: 1 });
  const minVersion = r.string(o.minVersion, at(path, 'minVersion'), { def: d.minVersion, oneOf: TLS_VERSIONS }) as TlsVersion | undefined;
  const maxVersion = r.string(o.maxVersion, at(path, 'maxVersion'), { def: d.maxVersion, oneOf: TLS_VERSIONS }) as TlsVersion | undefined;
  if (minVersion && maxVersion && minVersion > maxVersion) r.fail(at(path, 'minVersion'), `must not be above maxVersion (${maxVersion})`);
  const requireExtendedMasterSecret = r.boolean(o.requireExtendedMasterSecret, at(path, 'requireExtendedMasterSecret'), { def: d.requireExtendedMasterSecret });
  const groups = o.groups === undefined ? undefined
    : r.list(o.groups, at(path, 'groups'), (g, p) => r.string(g, p, { oneOf: TLS_GROUPS }), { minItems: 1 });
  groups?.forEach((g, i) => {
    if (groups.indexOf(g) !== i) r.fail(at(at(path, 'groups'), i), `"${g}" is listed twice`);
  });
  const sni = r.string(o.sni, at(path, 'sni'), { def: d.sni, oneOf: SNI_POLICIES }) as SniPolicy | undefined;
  const clientAuth = readClientAuth(r, o.clientAuth, at(path, 'clientAuth'));
  const limits = readListenerLimits(r, o.limits, at(path, 'limits'));
  const delegatedCredentials = readDelegatedCredentials(r, o.delegatedCredentials, at(path, 'delegatedCredentials'));
  // RFC 9345 is a TLS 1.3 mechanism: a listener that never speaks 1.3 could never use a credential.
  if (delegatedCredentials?.enabled && maxVersion === '1.2') r.fail(at(at(path, 'delegatedCredentials'), 'enabled'), 'delegated credentials need TLS 1.3, and maxVersion is 1.2');
  let proxyProtocol: ListenerConfig['proxyProtocol'];
  let proxyProtocolOk = true;
  if (o.proxyProtocol !== undefined) {
    const pp = at(path, 'proxyProtocol');
    const po = r.object(o.proxyProtocol, pp, ['from']);
    const from = po ? r.list(po.from, at(pp, 'from'), (v, p) => readCidr(r, v, p), { minItems: 1 }) : undefined;
    if (from) proxyProtocol = { from };
    else proxyProtocolOk = false;
  }
  if (!proxyProtocolOk || !name || !address || port === undefined || !certificates || !alpn || !minVersion
    || !maxVersion || requireExtendedMasterSecret === undefined || !sni || !clientAuth || !limits
    || !delegatedCredentials || (o.groups !== undefined && !groups)) {
    return undefined;
  }
  return {
    name, address, port, certificates, ...(acme.length > 0 ? { acme } : {}), alpn, minVersion, maxVersion,
    requireExtendedMasterSecret, ...(groups ? { groups } : {}), sni, clientAuth, limits, delegatedCredentials,
    ...(proxyProtocol ? { proxyProtocol } : {}),
  };
}

function readListenerLimits(r: Reader, v: unknown, path: string): ListenerLimits | undefined {
  const d = DEFAULTS.listenerLimits;
  const o = v === undefined ? {} : r.object(v, path, ['maxConnections', 'maxHandshakes', 'maxClientHelloBytes', 'perClient']);
  if (!o) return undefined;
  const maxConnections = r.integer(o.maxConnections, at(path, 'maxConnections'), { def: d.maxConnections, min: 1, max: 10_000_000 });
  const maxHandshakes = r.integer(o.maxHandshakes, at(path, 'maxHandshakes'), { def: d.maxHandshakes, min: 1, max: 10_000_000 });
  // The smallest real ClientHello is ~200 bytes; one with post-quantum key shares and a ticket ~3 KiB.
  const maxClientHelloBytes = r.integer(o.maxClientHelloBytes, at(path, 'maxClientHelloBytes'), { def: d.maxClientHelloBytes, min: 4096, max: 131_396, what: 'bytes' });
  const pp = at(path, 'perClient');
  const pc = o.perClient === undefined ? {} : r.object(o.perClient, pp, ['maxConnections', 'maxHandshakes', 'handshakesPerSecond', 'handshakeBurst']);
  if (!pc) return undefined;
  const dc = d.perClient;
  const perClient = {
    maxConnections: r.integer(pc.maxConnections, at(pp, 'maxConnections'), { def: dc.maxConnections, min: 0, max: 10_000_000 }),
    maxHandshakes: r.integer(pc.maxHandshakes, at(pp, 'maxHandshakes'), { def: dc.maxHandshakes, min: 0, max: 10_000_000 }),
    handshakesPerSecond: r.integer(pc.handshakesPerSecond, at(pp, 'handshakesPerSecond'), { def: dc.handshakesPerSecond, min: 0, max: 10_000_000 }),
    handshakeBurst: r.integer(pc.handshakeBurst, at(pp, 'handshakeBurst'), { def: dc.handshakeBurst, min: 1, max: 10_000_000 }),
  };
  if (maxConnections === undefined || maxHandshakes === undefined || maxClientHelloBytes === undefined
    || Object.values(perClient).some((n) => n === undefined)) return undefined;
  return { maxConnections, maxHandshakes, maxClientHelloBytes, perClient: perClient as ListenerLimits['perClient'] };
}

function checkListenersUnique(r: Reader, listeners: ListenerConfig[]): void {
  const names = new Set<string>();
  const binds = new Set<string>();
  listeners.forEach((l, i) => {
    if (names.has(l.name)) r.fail(`listeners[${i}].name`, `duplicate listener name "${l.name}"`);
    names.add(l.name);
    const bind = `${l.address}:${l.port}`;
    if (l.port !== 0 && binds.has(bind)) r.fail(`listeners[${i}].port`, `another listener already uses ${bind}`);
    binds.add(bind);
  });
}

function readTarget(r: Reader, v: unknown, path: string): string | undefined {
  const s = r.string(v, path);
  if (s === undefined) return undefined;
  let url: URL;
  try { url = new URL(s); } catch { return r.fail(path, `expected a URL like http://127.0.0.1:8080, got "${s}"`); }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return r.fail(path, `expected an http:// or https:// URL, got "${s}"`);
  if (url.search || url.hash || url.username) return r.fail(path, `expected a URL without query, fragment or credentials, got "${s}"`);
  return url.href.replace(/\/$/, '');
}

/** An IPv4/IPv6 address or CIDR block (`10.0.0.0/8`, `2001:db8::/32`, `127.0.0.1`). */
function readCidr(r: Reader, v: unknown, path: string): string | undefined {
  const s = r.string(v, path, {});
  if (s === undefined) return undefined;
  const [addr, bits, extra] = s.split('/');
  const family = isIP(addr ?? '');
  const max = family === 6 ? 128 : 32;
  if (family === 0 || extra !== undefined || (bits !== undefined && !(/^\d{1,3}$/.test(bits) && Number(bits) <= max))) {
    return r.fail(path, `expected an IP address or CIDR block like 10.0.0.0/8, got "${s}"`);
  }
  return s;
}

function readUpstream(r: Reader, v: unknown, path: string, name: string): UpstreamConfig | undefined {
  const d = DEFAULTS.upstream;
  const o = r.object(v, path, ['targets', 'balance', 'healthCheck', 'timeouts', 'maxConnections', 'maxQueue', 'protocol']);
  if (!o) return undefined;
  const targets = r.list(o.targets, at(path, 'targets'), (t, p) => readTarget(r, t, p), { minItems: 1 });
  const balance = r.string(o.balance, at(path, 'balance'), { def: d.balance, oneOf: BALANCE_STRATEGIES }) as UpstreamConfig['balance'] | undefined;
  let healthCheck: HealthCheckConfig | undefined;
  if (o.healthCheck !== undefined) {
    const hp = at(path, 'healthCheck');
    const h = r.object(o.healthCheck, hp, ['path', 'intervalMs', 'timeoutMs', 'unhealthyAfter', 'healthyAfter']);
    if (h) {
      const hpath = r.string(h.path, at(hp, 'path'), { def: d.healthCheck.path });
      if (hpath !== undefined && !hpath.startsWith('/')) r.fail(at(hp, 'path'), `expected a path starting with '/', got "${hpath}"`);
      const intervalMs = r.integer(h.intervalMs, at(hp, 'intervalMs'), { def: d.healthCheck.intervalMs, min: 100, max: MS_MAX, what: 'milliseconds' });
      const timeoutMs = r.integer(h.timeoutMs, at(hp, 'timeoutMs'), { def: d.healthCheck.timeoutMs, min: 10, max: MS_MAX, what: 'milliseconds' });
      const unhealthyAfter = r.integer(h.unhealthyAfter, at(hp, 'unhealthyAfter'), { def: d.healthCheck.unhealthyAfter, min: 1, max: 100 });
      const healthyAfter = r.integer(h.healthyAfter, at(hp, 'healthyAfter'), { def: d.healthCheck.healthyAfter, min: 1, max: 100 });
      if (hpath && intervalMs && timeoutMs && unhealthyAfter && healthyAfter) {
        healthCheck = { path: hpath, intervalMs, timeoutMs, unhealthyAfter, healthyAfter };
      }
    }
  }
  const timeouts = readMsFields<UpstreamTimeouts>(r, o.timeouts, at(path, 'timeouts'), d.timeouts);
  const maxConnections = r.integer(o.maxConnections, at(path, 'maxConnections'), { def: d.maxConnections, min: 1, max: 65_536 });
  const maxQueue = r.integer(o.maxQueue, at(path, 'maxQueue'), { def: d.maxQueue, min: 0, max: 1_000_000 });
  const protocol = r.string(o.protocol, at(path, 'protocol'), { def: 'http1', oneOf: UPSTREAM_PROTOCOLS }) as UpstreamProtocol | undefined;
  // h2 is negotiated by ALPN inside TLS; h2c is prior knowledge on cleartext (RFC 9113 §3.3).
  const scheme = protocol === 'h2' ? 'https:' : protocol === 'h2c' ? 'http:' : undefined;
  targets?.forEach((t, i) => {
    if (scheme && new URL(t).protocol !== scheme) r.fail(at(at(path, 'targets'), i), `protocol ${protocol} needs a ${scheme}// URL, got "${t}"`);
  });
  if (!targets || !balance || !timeouts || maxConnections === undefined || maxQueue === undefined || !protocol) {
    return undefined;
  }
  return {
    name, targets, balance, timeouts, maxConnections, maxQueue, protocol, ...(healthCheck ? { healthCheck } : {}),
  };
}

function readRoute(
  r: Reader, v: unknown, path: string, upstreams: Record<string, UpstreamConfig>,
): RouteConfig | undefined {
  const o = r.object(v, path, ['name', 'host', 'pathPrefix', 'upstream', 'timeouts']);
  if (!o) return undefined;
  const host = r.string(o.host, at(path, 'host'), { optional: true })?.toLowerCase();
  if (host !== undefined && !/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(host)) {
    r.fail(at(path, 'host'), `expected a host name like api.example.com or *.example.com, got "${host}"`);
  }
  const pathPrefix = r.string(o.pathPrefix, at(path, 'pathPrefix'), { def: DEFAULTS.route.pathPrefix });
  if (pathPrefix !== undefined && !pathPrefix.startsWith('/')) r.fail(at(path, 'pathPrefix'), `expected a path starting with '/', got "${pathPrefix}"`);
  let upstream: string | undefined;
  const up = at(path, 'upstream');
  if (Array.isArray(o.upstream)) {
    // An inline URL list is an anonymous pool with default settings, named after the route.
    const targets = r.list(o.upstream, up, (t, p) => readTarget(r, t, p), { minItems: 1 });
    if (targets) {
      upstream = path;
      upstreams[path] = {
        name: path, targets, balance: DEFAULTS.upstream.balance, timeouts: { ...DEFAULTS.upstream.timeouts },
        maxConnections: DEFAULTS.upstream.maxConnections, maxQueue: DEFAULTS.upstream.maxQueue,
      };
    }
  } else if (typeof o.upstream === 'string') {
    upstream = o.upstream;
    if (!upstreams[upstream]) {
      const known = Object.keys(upstreams).filter((k) => !k.startsWith('routes['));
      upstream = r.fail(up, `no upstream pool named "${o.upstream}" (defined: ${known.join(', ') || 'none'}); name one under upstreams: or give a list of URLs`);
    }
  } else {
    r.fail(up, o.upstream === undefined ? 'required (a pool name from upstreams: or a list of URLs)' : 'expected a pool name or a list of URLs');
  }
  const name = r.string(o.name, at(path, 'name'), { def: `${host ?? '*'}${pathPrefix ?? '/'}` });
  const timeouts = o.timeouts === undefined ? {} : readPartialMs(r, o.timeouts, at(path, 'timeouts'));
  if (!name || !pathPrefix || !upstream || !timeouts) return undefined;
  return { name, pathPrefix, upstream, timeouts, ...(host ? { host } : {}) };
}

function readAdmin(r: Reader, v: unknown): Config['admin'] | undefined {
  const o = v === undefined ? {} : r.object(v, 'admin', ['address', 'port']);
  if (!o) return undefined;
  const address = r.string(o.address, 'admin.address', { def: DEFAULTS.admin.address });
  const port = r.integer(o.port, 'admin.port', { def: DEFAULTS.admin.port, min: 0, max: 65535, what: 'a TCP port' });
  return address && port !== undefined ? { address, port } : undefined;
}

function readMsFields<T extends object>(r: Reader, v: unknown, path: string, defaults: T): T | undefined {
  const keys = Object.keys(defaults);
  const o = v === undefined ? {} : r.object(v, path, keys);
  if (!o) return undefined;
  const out: Record<string, number> = {};
  let ok = true;
  for (const k of keys) {
    const n = r.integer(o[k], at(path, k), { def: (defaults as Record<string, number>)[k], min: 1, max: MS_MAX, what: 'milliseconds' });
    if (n === undefined) ok = false;
    else out[k] = n;
  }
  return ok ? (out as T) : undefined;
}

function readPartialMs(r: Reader, v: unknown, path: string): Partial<UpstreamTimeouts> | undefined {
  const o = r.object(v, path, ['connectMs', 'responseMs', 'idleMs']);
  if (!o) return undefined;
  const out: Partial<UpstreamTimeouts> = {};
  for (const k of ['connectMs', 'responseMs', 'idleMs'] as const) {
    const n = r.integer(o[k], at(path, k), { optional: true, min: 1, max: MS_MAX, what: 'milliseconds' });
    if (n !== undefined) out[k] = n;
  }
  return out;
}
