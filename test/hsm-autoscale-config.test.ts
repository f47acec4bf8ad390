// `hsm.autoscale` in the config: defaults, durations with units, and errors naming the field.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { advisorConfig } from '../src/app/scaling.js';
import { AUTOSCALE_DEFAULTS, ConfigInvalidError, parseConfig } from '../src/config/index.js';

const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-autoscale-config-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(join(dir, 'a.pem'), 'x');
writeFileSync(join(dir, 'a.key'), 'x');
writeFileSync(join(dir, 'softhsm.so'), 'x');

const base = (hsm: string) => `
listeners:
  - port: 8443
    certificates: [{ cert: a.pem, key: a.key }]
routes:
  - upstream: [http://127.0.0.1:8080]
hsm:
${hsm}
`;

function issues(yaml: string): string[] {
  try {
    parseConfig(yaml, { baseDir: dir });
  } catch (err) {
    if (err instanceof ConfigInvalidError) return err.issues.map((i) => `${i.path}: ${i.message}`);
    throw err;
  }
  throw new Error('expected the config to be refused');
}

t.test('without hsm.autoscale there is no autoscaling (the advisor still advises with its defaults)', async (t) => {
  const c = parseConfig(base('  mode: embedded'), { baseDir: dir });
  t.equal(c.hsm.autoscale, undefined);
  t.equal(AUTOSCALE_DEFAULTS.enabled, false);
  t.equal(advisorConfig().min, 2, 'the advisor keeps at least 2 HSMs by default');
});

t.test('the issue\'s four fields turn autoscaling on; durations take units', async (t) => {
  const c = parseConfig(base('  mode: embedded\n  autoscale: { min: 2, max: 5, sloP99Ms: 25, cooldown: 10m }'), { baseDir: dir });
  t.same(c.hsm.autoscale, { ...AUTOSCALE_DEFAULTS, enabled: true, min: 2, max: 5, sloP99Ms: 25, cooldownMs: 600_000 });
  const d = parseConfig(base('  mode: embedded\n  autoscale: { sustain: 30s, removeAfter: 1h, window: 1500ms, interval: 250, from: live, enabled: false }'), { baseDir: dir });
  t.match(d.hsm.autoscale, { sustainMs: 30_000, removeAfterMs: 3_600_000, windowMs: 1500, intervalMs: 250, from: 'live', enabled: false });
  const a = advisorConfig(c.hsm.autoscale);
  t.match(a, { min: 2, max: 5, sloP99Ms: 25, cooldownMs: 600_000 });
});

t.test('cluster mode takes autoscale too', async (t) => {
  writeFileSync(join(dir, 'cluster.json'), '{}');
  const c = parseConfig(base('  mode: cluster\n  manifest: cluster.json\n  autoscale: { min: 3, max: 6 }'), { baseDir: dir });
  t.equal(c.hsm.autoscale?.min, 3);
});

t.test('bad autoscale fields are named with their path and what to write instead', async (t) => {
  t.same(issues(base('  autoscale: { min: 4, max: 3 }')), ['hsm.autoscale.max: must be at least min (4)']);
  t.match(issues(base('  autoscale: { min: 0 }'))[0], /^hsm\.autoscale\.min: expected a number of HSMs from 1 to 28, got number 0/);
  t.match(issues(base('  autoscale: { cooldown: soon }'))[0], /^hsm\.autoscale\.cooldown: expected milliseconds or a duration like "30s", "5m", "1h", got "soon"/);
  t.match(issues(base('  autoscale: { window: 10ms }'))[0], /^hsm\.autoscale\.window: expected a duration from 1000 ms to 24 h/);
  t.match(issues(base('  autoscale: { from: snapshot }'))[0], /^hsm\.autoscale\.from: expected one of 'auto', 'backup', 'live'/);
  t.match(issues(base('  autoscale: { enabled: yes please }'))[0], /^hsm\.autoscale\.enabled: expected true or false/);
  t.match(issues(base('  autoscale: { minimum: 2 }'))[0], /^hsm\.autoscale\.minimum: unknown key \(expected one of: enabled, min, max, sloP99Ms, cooldown/);
  t.match(issues(base('  autoscale: 3'))[0], /^hsm\.autoscale: expected a mapping/);
});

t.test('autoscale with a PKCS#11 token is refused: there are no simulated HSMs to add', async (t) => {
  const found = issues(base('  mode: pkcs11\n  module: softhsm.so\n  token: t\n  autoscale: { min: 2 }'));
  t.ok(found.includes('hsm.autoscale: only used with mode: embedded or cluster (mode is pkcs11)'), found.join('; '));
});
