// The alert rules evaluated on what hsmproxy really exports: events go through the real
// diagnostics_channel contract into a running proxy's metrics, /metrics is scraped before and
// after, and promtool replays the two scrapes as series (counters keep growing at the observed
// rate). Then exactly the expected alerts fire — so a label name or value the rules expect but the
// subscriber does not produce (outcome, op, result, kind…) fails here, not in production.
import t, { type Test } from 'tap';
import { channel } from 'node:diagnostics_channel';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { CHANNELS, type EngineSignEvent, type HsmRequestEvent, type HsmStateEvent, type TlsHandshakeEvent } from '../src/metrics/index.js';
import { repoRoot } from './helpers/cli.js';
import { promtool, seriesFromScrapes, skipWithout } from './helpers/prometheus.js';
import { baseYaml, startHarness } from './helpers/proxy-harness.js';

const STEPS = 30;

const publish = {
  state: (e: HsmStateEvent) => channel(CHANNELS.hsmState).publish(e),
  request: (e: HsmRequestEvent) => channel(CHANNELS.hsmRequest).publish(e),
  handshake: (e: TlsHandshakeEvent) => channel(CHANNELS.tlsHandshake).publish(e),
  sign: (e: EngineSignEvent) => channel(CHANNELS.engineSign).publish(e),
};

const sign = (hsm: string, rttMs: number, outcome = 'ok'): HsmRequestEvent => ({ op: 'sign', mechanism: 'ecdsa', hsm, rttMs, queueWaitMs: rttMs * 0.8, serviceMs: rttMs * 0.1, outcome });
const handshake = (result: TlsHandshakeEvent['result']): TlsHandshakeEvent => ({ version: 'TLSv1.3', suite: 'TLS_AES_128_GCM_SHA256', group: 'x25519', keyType: 'ec', resumed: false, result, durationMs: 3, signWaitMs: 1, listener: 'main' });

/**
 * Scrapes a fresh proxy, runs `events`, scrapes again, and returns the alerts promtool finds
 * firing after 20 minutes of the observed rates (sorted names).
 */
async function firingAfter(t: Test, events: () => void): Promise<string[]> {
  const h = await startHarness(t, baseYaml('  - upstream: [ "{{up0}}" ]'));
  const scrape = async () => (await fetch(`http://127.0.0.1:${h.proxy.adminAddress()!.port}/metrics`)).text();
  const before = await scrape();
  events();
  const after = await scrape();
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-rules-live-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // An expectation that cannot match (no samples): promtool's failure report lists what fired.
  await writeFile(join(dir, 'live.test.yml'), stringify({
    rule_files: [join(repoRoot, 'deploy', 'prometheus', 'alerts.yml')],
    evaluation_interval: '1m',
    tests: [{
      interval: '1m',
      input_series: seriesFromScrapes(before, after, STEPS),
      promql_expr_test: [{ expr: 'max by (alertname) (ALERTS{alertstate="firing"})', eval_time: '20m', exp_samples: [{ labels: '{alertname="none"}', value: 1 }] }],
    }],
  }));
  const r = promtool(['test', 'rules', 'live.test.yml'], dir);
  const got = /^\s*got: (.*)$/m.exec(r.out)?.[1];
  if (got === undefined) throw new Error(`promtool did not evaluate the rules: ${r.out}`);
  return [...got.matchAll(/alertname="(\w+)"/g)].map((m) => m[1]!).sort();
}

t.test('a healthy cluster raises nothing but the expiry of the 2-day test certificate', { skip: skipWithout('promtool') }, async (t) => {
  const fired = await firingAfter(t, () => {
    for (const hsm of ['hsm-1', 'hsm-2']) publish.state({ hsm, address: '127.0.0.1:1', up: true, inFlight: 1, keysToken: 40, keysSession: 2, keysMax: 3500, utilisation: 0.2 });
    for (let i = 0; i < 200; i++) publish.request(sign(i % 2 ? 'hsm-1' : 'hsm-2', 4));
    for (let i = 0; i < 200; i++) publish.handshake(handshake('ok'));
    for (let i = 0; i < 200; i++) publish.sign({ backend: 'sim', keyType: 'ec', scheme: 0x0403, durationMs: 4, outcome: 'ok' });
  });
  t.same(fired, ['HsmproxyCertificateExpiringSoon']);
});

t.test('an overloaded, failing cluster raises every HSM, handshake and capacity alert', { skip: skipWithout('promtool') }, async (t) => {
  const fired = await firingAfter(t, () => {
    publish.state({ hsm: 'hsm-1', address: '127.0.0.1:1', up: true, inFlight: 200, keysToken: 3200, keysSession: 10, keysMax: 3500, utilisation: 0.99 });
    publish.state({ hsm: 'hsm-2', address: '127.0.0.1:2', up: false, inFlight: 0 });
    for (let i = 0; i < 200; i++) publish.request(sign('hsm-1', 60));
    for (let i = 0; i < 20; i++) publish.request(sign('hsm-1', 1, 'HSM_ERR_BUSY'));
    for (let i = 0; i < 200; i++) publish.handshake(handshake(i % 5 ? 'ok' : 'sign_error'));
    for (let i = 0; i < 20; i++) publish.sign({ backend: 'sim', keyType: 'ec', scheme: 0x0403, durationMs: 0, outcome: 'ENGINE_ERR_OVERLOADED' });
  });
  t.same(fired, [
    'HsmproxyCertificateExpiringSoon', 'HsmproxyFewerThanTwoHealthyHsms', 'HsmproxyHandshakeFailuresRising', 'HsmproxyHsmBusyRejections',
    'HsmproxyHsmDown', 'HsmproxyHsmKeysNearCapacity', 'HsmproxyHsmSignLatencyOverSlo', 'HsmproxySignOverloaded',
  ]);
});
