// Config validation: every error names the field's path and what was expected there.
import t from 'tap';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigFileError, ConfigInvalidError, ConfigSyntaxError, HTTP2_DEFAULTS, loadConfig, parseConfig } from '../src/config/index.js';

const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-config-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(join(dir, 'a.pem'), 'x');
writeFileSync(join(dir, 'a.key'), 'x');

const minimal = `
listeners:
  - port: 8443
    certificates: [{ cert: a.pem, key: a.key }]
routes:
  - upstream: [http://127.0.0.1:8080]
`;

function errorOf(yaml: string): ConfigInvalidError {
  try {
    parseConfig(yaml, { baseDir: dir });
  } catch (err) {
    if (err instanceof ConfigInvalidError) return err;
    throw err;
  }
  throw new Error('expected the config to be refused');
}

t.test('a minimal config gets the documented defaults', async (t) => {
  const c = parseConfig(minimal, { baseDir: dir });
  t.equal(c.listeners[0]!.name, 'listener0');
  t.equal(c.listeners[0]!.minVersion, '1.2');
  t.equal(c.listeners[0]!.maxVersion, '1.3');
  t.same(c.listeners[0]!.alpn, ['h2', 'http/1.1']);
  t.same(c.http2, HTTP2_DEFAULTS, 'HTTP/2 limits default to 128 streams, 4 KiB HPACK table…');
  t.equal(c.listeners[0]!.certificates[0]!.cert, join(dir, 'a.pem'), 'paths resolve against the base directory');
  t.equal(c.routes[0]!.pathPrefix, '/');
  t.same(c.upstreams[c.routes[0]!.upstream]!.targets, ['http://127.0.0.1:8080'], 'an inline list becomes a pool');
  t.equal(c.hsm.mode, 'embedded');
  t.same(c.hsm.credentials, { env: 'HSMPROXY_PIN' });
  t.same(c.admin, { address: '127.0.0.1', port: 9464 });
  t.equal(c.workers, 1);
});

t.test('an unknown key is an error naming its path', async (t) => {
  const e = errorOf(minimal.replace('port: 8443', 'port: 8443\n    prot: 1'));
  t.match(e.message, /^listeners\[0\]\.prot: unknown key \(expected one of: name, address, port/);
  t.equal(e.code, 'CONFIG_ERR_INVALID');
});

t.test('an unknown top-level key is an error', async (t) => {
  t.match(errorOf(minimal + 'lsteners: []\n').message, /^lsteners: unknown key/);
});

t.test('a wrong type names the field and the expected type', async (t) => {
  t.match(errorOf(minimal.replace('port: 8443', 'port: "https"')).message, /^listeners\[0\]\.port: expected a TCP port from 0 to 65535, got "https"/);
  t.match(errorOf(minimal + 'workers: many\n').message, /^workers: expected 'auto' or a number of workers/);
});

t.test('a port out of range is refused', async (t) => {
  t.match(errorOf(minimal.replace('port: 8443', 'port: 70000')).message, /^listeners\[0\]\.port: expected a TCP port from 0 to 65535, got number 70000/);
});

t.test('a missing certificate file names the field and the path as written', async (t) => {
  const e = errorOf(minimal.replace('certificates: [{ cert: a.pem, key: a.key }]', 'certificates: [{ cert: a.pem, key: a.key }, { cert: a.pem, key: certs/api.key.pem }]'));
  t.equal(e.message, 'listeners[0].certificates[1].key: file not found: certs/api.key.pem');
});

t.test('file checks can be skipped for configs whose files are generated later', async (t) => {
  const c = parseConfig(minimal.replace('key: a.key', 'key: missing.key'), { baseDir: dir, checkFiles: false });
  t.equal(c.listeners[0]!.certificates[0]!.key, join(dir, 'missing.key'));
});

t.test('a credentials file readable by others is refused with the chmod to run', async (t) => {
  const pin = join(dir, 'pin');
  writeFileSync(pin, '1234');
  chmodSync(pin, 0o644);
  t.equal(errorOf(minimal + 'hsm: { credentials: { file: pin } }\n').message, 'hsm.credentials.file: pin is readable by others (mode 644); run: chmod 600 pin');
  chmodSync(pin, 0o600);
  t.same(parseConfig(minimal + 'hsm: { credentials: { file: pin } }\n', { baseDir: dir }).hsm.credentials, { file: pin });
});

t.test('credentials need exactly one source', async (t) => {
  t.match(errorOf(minimal + 'hsm: { credentials: { env: A, file: pin } }\n').message, /^hsm\.credentials: expected exactly one of env/);
});

t.test('a route naming an undefined pool says which pools exist', async (t) => {
  const e = errorOf(minimal.replace('upstream: [http://127.0.0.1:8080]', 'upstream: api') + 'upstreams:\n  web: { targets: [http://127.0.0.1:1] }\n');
  t.equal(e.message, 'routes[0].upstream: no upstream pool named "api" (defined: web); name one under upstreams: or give a list of URLs');
});

t.test('an upstream target must be an http(s) URL', async (t) => {
  t.match(errorOf(minimal.replace('http://127.0.0.1:8080', 'ftp://x')).message, /^routes\[0\]\.upstream\[0\]: expected an http:\/\/ or https:\/\/ URL/);
});

t.test('enumerations list the accepted values', async (t) => {
  t.match(errorOf(minimal.replace('port: 8443', 'port: 8443\n    minVersion: "1.1"')).message, /^listeners\[0\]\.minVersion: expected one of '1\.2', '1\.3', got "1\.1"/);
  t.match(errorOf(minimal + 'hsm: { profile: huge }\n').message, /^hsm\.profile: expected one of 'unlimited', 'hsm1\.medium', 'hsm2m\.medium'/);
});

t.test('ALPN may only offer the protocols the proxy serves: h2 and HTTP/1.x', async (t) => {
  t.same(parseConfig(minimal.replace('port: 8443', 'port: 8443\n    alpn: [http/1.1]'), { baseDir: dir }).listeners[0]!.alpn, ['http/1.1']);
  t.match(errorOf(minimal.replace('port: 8443', 'port: 8443\n    alpn: [h3, http/1.1]')).message, /^listeners\[0\]\.alpn\[0\]: expected one of 'h2', 'http\/1\.1', 'http\/1\.0', got "h3"/);
});

t.test('http2: limits are checked with the path of the bad field', async (t) => {
  const c = parseConfig(`${minimal}\nhttp2: { maxConcurrentStreams: 64, resetBurst: 10 }\n`, { baseDir: dir });
  t.equal(c.http2!.maxConcurrentStreams, 64);
  t.equal(c.http2!.resetBurst, 10);
  t.equal(c.http2!.headerTableSize, 4096, 'the rest keep their defaults');
  t.match(errorOf(`${minimal}\nhttp2: { maxConcurrentStreams: 0 }\n`).message, /http2\.maxConcurrentStreams: expected a number of streams from 1 to 10000, got number 0/);
  t.match(errorOf(`${minimal}\nhttp2: { streamWindow: 1 }\n`).message, /http2\.streamWindow: unknown key/);
});

t.test('an upstream opts into HTTP/2: h2 needs https:// targets, h2c http://', async (t) => {
  const up = (protocol: string, url: string) => minimal.replace(/routes:[\s\S]*$/, `routes:\n  - upstream: app\nupstreams:\n  app: { targets: [ "${url}" ], protocol: ${protocol} }\n`);
  t.equal(parseConfig(up('h2c', 'http://127.0.0.1:50051'), { baseDir: dir }).upstreams.app!.protocol, 'h2c');
  t.equal(parseConfig(up('h2', 'https://api.example.com'), { baseDir: dir }).upstreams.app!.protocol, 'h2');
  t.match(errorOf(up('h2', 'http://127.0.0.1:50051')).message, /upstreams\.app\.targets\[0\]: protocol h2 needs a https:\/\/ URL/);
  t.match(errorOf(up('h2c', 'https://api.example.com')).message, /protocol h2c needs a http:\/\/ URL/);
  t.match(errorOf(up('spdy', 'http://x')).message, /upstreams\.app\.protocol: expected one of 'http1', 'h2', 'h2c'/);
});

t.test('TLS 1.2 is accepted and minVersion may not exceed maxVersion', async (t) => {
  t.equal(parseConfig(minimal.replace('port: 8443', 'port: 8443\n    minVersion: "1.2"'), { baseDir: dir }).listeners[0]!.minVersion, '1.2');
  t.match(errorOf(minimal.replace('port: 8443', 'port: 8443\n    minVersion: "1.3"\n    maxVersion: "1.2"')).message, /^listeners\[0\]\.minVersion: must not be above maxVersion/);
  t.equal(parseConfig(minimal.replace('port: 8443', 'port: 8443\n    maxVersion: "1.2"'), { baseDir: dir }).listeners[0]!.maxVersion, '1.2', 'TLS 1.2 only');
});

t.test('requireExtendedMasterSecret defaults to true and takes a boolean', async (t) => {
  t.equal(parseConfig(minimal, { baseDir: dir }).listeners[0]!.requireExtendedMasterSecret, true);
  t.equal(parseConfig(minimal.replace('port: 8443', 'port: 8443\n    requireExtendedMasterSecret: false'), { baseDir: dir }).listeners[0]!.requireExtendedMasterSecret, false);
  t.match(errorOf(minimal.replace('port: 8443', 'port: 8443\n    requireExtendedMasterSecret: "no"')).message, /^listeners\[0\]\.requireExtendedMasterSecret: expected true or false, got "no"/);
});

t.test('clientAuth require needs a CA file', async (t) => {
  t.match(errorOf(minimal.replace('port: 8443', 'port: 8443\n    clientAuth: { mode: require }')).message, /^listeners\[0\]\.clientAuth\.caFile: required/);
});

t.test('mode-specific hsm fields are refused under another mode', async (t) => {
  t.match(errorOf(minimal + 'hsm: { mode: embedded, manifest: m.json }\n').message, /^hsm\.manifest: only used with mode: cluster/);
  t.match(errorOf(minimal + 'hsm: { mode: embedded, token: t }\n').message, /^hsm\.token: only used with mode: pkcs11/);
});

t.test('hsm.mode pkcs11 needs no token (references record it); the module comes from hsm.module or hsm.allowedModules', async (t) => {
  const c = parseConfig(minimal + 'hsm: { mode: pkcs11, allowedModules: [/usr/lib/softhsm/libsofthsm2.so] }\n', { baseDir: dir, checkFiles: false });
  t.equal(c.hsm.mode, 'pkcs11');
  t.equal(c.hsm.module, undefined);
  t.equal(c.hsm.token, undefined);
  t.equal(parseConfig(minimal + 'hsm: { mode: pkcs11, module: m.so, token: web }\n', { baseDir: dir, checkFiles: false }).hsm.token, 'web');
});

t.test('hsm.sessions: PKCS#11 sessions per token, 8 by default, a positive integer, pkcs11 only', async (t) => {
  t.equal(parseConfig(minimal + 'hsm: { mode: pkcs11, module: m.so }\n', { baseDir: dir, checkFiles: false }).hsm.sessions, 8);
  t.equal(parseConfig(minimal + 'hsm: { mode: pkcs11, module: m.so, sessions: 64 }\n', { baseDir: dir, checkFiles: false }).hsm.sessions, 64);
  t.match(errorOf(minimal + 'hsm: { mode: pkcs11, module: m.so, sessions: 0 }\n').message, /^hsm\.sessions: /);
  t.match(errorOf(minimal + 'hsm: { mode: pkcs11, module: m.so, sessions: many }\n').message, /^hsm\.sessions: /);
  t.match(errorOf(minimal + 'hsm: { mode: embedded, sessions: 4 }\n').message, /^hsm\.sessions: only used with mode: pkcs11/);
});

t.test('two listeners on the same address and port are refused', async (t) => {
  const y = minimal.replace('listeners:\n', 'listeners:\n  - { name: b, port: 8443, certificates: [{ cert: a.pem, key: a.key }] }\n');
  t.match(errorOf(y).message, /^listeners\[1\]\.port: another listener already uses 0\.0\.0\.0:8443/);
});

t.test('every problem is collected, the message counts the rest', async (t) => {
  const e = errorOf(minimal + 'workers: 0\nlog: { level: loud }\n');
  t.equal(e.issues.length, 2);
  t.match(e.message, /\(and 1 more problem\)$/);
});

t.test('invalid YAML reports line and column', async (t) => {
  t.throws(() => parseConfig('listeners: [\n', { source: 'x.yaml' }), ConfigSyntaxError);
  t.throws(() => parseConfig('a: 1\na: 2\n', { source: 'x.yaml' }), { message: /x\.yaml: not valid YAML: line 2/ });
});

t.test('a missing config file is a file error, not a stack trace', async (t) => {
  t.throws(() => loadConfig(join(dir, 'nope.yaml')), ConfigFileError);
  t.throws(() => loadConfig(join(dir, 'nope.yaml')), { code: 'CONFIG_ERR_FILE', message: /config file not found/ });
});

t.test('demo: off by default, true or false only, and it needs upstreams.demo', async (t) => {
  t.equal(parseConfig(minimal, { baseDir: dir }).demo, false);
  t.match(errorOf(minimal + 'demo: yes please\n').message, /^demo: expected true or false, got "yes please"/);
  t.match(errorOf(minimal + 'demo: true\n').message, /^demo: needs upstreams\.demo/);
  const withDemo = minimal.replace('  - upstream: [http://127.0.0.1:8080]', '  - upstream: demo') + 'upstreams: { demo: { targets: [http://127.0.0.1:8080] } }\ndemo: true\n';
  t.equal(parseConfig(withDemo, { baseDir: dir }).demo, true);
});

t.test('listener limits: documented defaults, per-field errors with their paths', async (t) => {
  const c = parseConfig(minimal, { baseDir: dir });
  t.same(c.listeners[0]!.limits, {
    maxConnections: 8192, maxHandshakes: 512, maxClientHelloBytes: 131_396,
    perClient: { maxConnections: 256, maxHandshakes: 32, handshakesPerSecond: 100, handshakeBurst: 200 },
  });
  t.same(c.hsm.signing, { maxInFlight: 256, timeoutMs: 2000, maxQueue: 1024, shedFullHandshakesAt: 256, hedge: { enabled: true, maxShare: 0.05, minDelayMs: 5 } });
  t.equal(c.timeouts.bodyIdleMs, 60_000);
  const set = (limits: string) => minimal.replace('    certificates:', `    limits: ${limits}\n    certificates:`);
  const custom = parseConfig(set('{ maxHandshakes: 64, perClient: { handshakesPerSecond: 0 } }'), { baseDir: dir });
  t.equal(custom.listeners[0]!.limits!.maxHandshakes, 64);
  t.equal(custom.listeners[0]!.limits!.perClient.handshakesPerSecond, 0, '0 turns the rate limit off');
  t.equal(custom.listeners[0]!.limits!.perClient.maxHandshakes, 32, 'unset fields keep their defaults');
  t.match(errorOf(set('{ maxClientHelloBytes: 1000 }')).message, /listeners\[0\]\.limits\.maxClientHelloBytes/);
  t.match(errorOf(set('{ perClient: { handshakeBurst: 0 } }')).message, /listeners\[0\]\.limits\.perClient\.handshakeBurst/);
  t.match(errorOf(set('{ perClient: { perSecond: 5 } }')).message, /listeners\[0\]\.limits\.perClient\.perSecond/);
  t.match(errorOf(`${minimal}hsm: { signing: { maxQueue: 10, shedFullHandshakesAt: 20 } }\n`).message,
    /hsm\.signing\.shedFullHandshakesAt: must not be above maxQueue \(10\)/);
});

t.test('hsm.signing.hedge: on by default at 5% and a 5 ms floor; every field checked with its path', async (t) => {
  const hedge = (v: string): string => `${minimal}hsm: { signing: { hedge: ${v} } }\n`;
  t.same(parseConfig(hedge('{ maxShare: 0.1, minDelayMs: 20 }'), { baseDir: dir }).hsm.signing.hedge, { enabled: true, maxShare: 0.1, minDelayMs: 20 });
  t.same(parseConfig(hedge('{ enabled: false }'), { baseDir: dir }).hsm.signing.hedge, { enabled: false, maxShare: 0.05, minDelayMs: 5 });
  t.match(errorOf(hedge('{ maxShare: 0 }')).message, /hsm\.signing\.hedge\.maxShare: expected a share of signs above 0 and at most 0\.5/);
  t.match(errorOf(hedge('{ maxShare: 5 }')).message, /hsm\.signing\.hedge\.maxShare: .*got 5/);
  t.match(errorOf(hedge('{ maxShare: "5%" }')).message, /hsm\.signing\.hedge\.maxShare: .*got "5%"/);
  t.match(errorOf(hedge('{ minDelayMs: -1 }')).message, /hsm\.signing\.hedge\.minDelayMs: expected milliseconds from 0 to 60000/);
  t.match(errorOf(hedge('{ enabled: yes }')).message, /hsm\.signing\.hedge\.enabled: expected true or false/);
  t.match(errorOf(hedge('{ delay: 5 }')).message, /hsm\.signing\.hedge\.delay: unknown key/);
  t.match(errorOf(hedge('true')).message, /hsm\.signing\.hedge: expected a mapping/);
});
