// The proxy of bench/abuse.ts, in its own process so its RSS and CPU are its own: hsmproxy's Proxy
// on the offloading TLS listener with the certificate's key in a 2-HSM embedded cluster (the
// default config's cluster: `unlimited` profile), the default signing admission (256 in flight,
// 1,024 queued, 2 s), and either the default listener limits (`on`) or none (`off`: every cap out
// of reach, the per-client limits and the pressure shedding off), for a before/after.
// Prints {"port":…,"adminPort":…,"clusterDir":…} on one stdout line when listening; stops on
// SIGTERM or when its stdin closes.
// Usage: abuse-proxy.ts CERT_FILE KEY_FILE on|off
import { dirname } from 'node:path';
import pino from 'pino';
import { DEFAULTS, parseConfig } from '../../src/config/index.js';
import { Proxy } from '../../src/proxy/index.js';
import { offloadListenerFactory } from '../../src/proxy/offload-listener.js';
import { serveUntilStopped } from './children.js';
import { clusterKey } from './servers.js';

const [certFile, keyFile, mode] = process.argv.slice(2);
if (!certFile || !keyFile || (mode !== 'on' && mode !== 'off')) {
  process.stderr.write('usage: abuse-proxy.ts CERT_FILE KEY_FILE on|off\n');
  process.exit(2);
}
const signing = DEFAULTS.hsm.signing;
const key = await clusterKey(keyFile, DEFAULTS.hsm.hsms, 'unlimited', {
  maxInFlight: signing.maxInFlight, maxQueue: signing.maxQueue, queueTimeoutMs: signing.timeoutMs,
});
const limits = mode === 'on' ? '' : `, limits: { maxConnections: 10000000, maxHandshakes: 10000000,
  perClient: { maxConnections: 0, maxHandshakes: 0, handshakesPerSecond: 0 } }`;
const config = parseConfig(`
listeners: [{ name: bench, address: 127.0.0.1, port: 0, certificates: [{ cert: "${certFile}", key: "${key.refFile}" }]${limits} }]
routes: [{ upstream: [ "http://127.0.0.1:9" ] }]
admin: { address: 127.0.0.1, port: 0 }
`);
const logger = pino({ level: 'info' }, pino.destination({ dest: '/dev/null', sync: false }));
const proxy = new Proxy({
  config, logger,
  tlsListenerFactory: offloadListenerFactory({
    engine: key.engine, signTimeoutMs: signing.timeoutMs,
    shedFullHandshakesAt: mode === 'on' ? signing.shedFullHandshakesAt : signing.maxQueue,
  }),
});
await proxy.start();

serveUntilStopped(proxy, () => key.close(), {
  port: proxy.listenerAddress('bench')!.port, adminPort: proxy.adminAddress()!.port, clusterDir: dirname(key.refFile), hsmPids: key.hsmPids,
});
