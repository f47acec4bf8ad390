// The proxy measured by bench/flood.ts and bench/stream.ts, run as their child process so its RSS
// and CPU are its own: hsmproxy's Proxy on the offloading TLS listener (tls/ TlsServer), the
// certificate's key imported into a 1-HSM embedded cluster (`unlimited` profile: the HSM is not
// what is measured; its node processes are this process's children), one route to UPSTREAM_URL,
// every other setting at its default, the admin server on an ephemeral loopback port.
// Prints {"port":…,"adminPort":…,"clusterDir":…} on one stdout line when listening. Stops on
// SIGTERM, or when its stdin closes (the parent died); if it crashes instead, the parent removes
// clusterDir.
// Usage: flood-proxy.ts CERT_FILE KEY_FILE UPSTREAM_URL
//   env PROXY_LOG_LEVEL (default info): the log is formatted as in production but goes to /dev/null.
import { dirname } from 'node:path';
import pino from 'pino';
import { parseConfig } from '../../src/config/index.js';
import { Proxy } from '../../src/proxy/index.js';
import { offloadListenerFactory } from '../../src/proxy/offload-listener.js';
import { serveUntilStopped } from './children.js';
import { clusterKey } from './servers.js';

const [certFile, keyFile, upstream] = process.argv.slice(2);
if (!certFile || !keyFile || !upstream) {
  process.stderr.write('usage: flood-proxy.ts CERT_FILE KEY_FILE UPSTREAM_URL\n');
  process.exit(2);
}
const level = process.env.PROXY_LOG_LEVEL ?? 'info';

const key = await clusterKey(keyFile, 1, 'unlimited');
const config = parseConfig(`
listeners: [{ name: bench, address: 127.0.0.1, port: 0, certificates: [{ cert: "${certFile}", key: "${key.refFile}" }] }]
routes: [{ upstream: [ "${upstream}" ] }]
admin: { address: 127.0.0.1, port: 0 }
`);
// Logging costs CPU per bad request under a flood, as it would in production; only the sink differs.
const logger = pino({ level }, pino.destination({ dest: '/dev/null', sync: false }));
const proxy = new Proxy({ config, tlsListenerFactory: offloadListenerFactory({ engine: key.engine }), logger });
await proxy.start();

serveUntilStopped(proxy, () => key.close(), { port: proxy.listenerAddress('bench')!.port, adminPort: proxy.adminAddress()!.port, clusterDir: dirname(key.refFile) });
