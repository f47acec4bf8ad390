// `hsmproxy serve`: runs the HTTPS reverse proxy. With no --config, the embedded default: a
// simulated cluster in ./data, a dev CA and localhost certificates whose keys are in the HSM,
// a demo upstream, https://localhost:8443 and admin on http://127.0.0.1:9464 (the banner prints
// the addresses each listener and the admin server are bound to).
import type { Command } from 'commander';
import { relative } from 'node:path';
import pino from 'pino';
import { adminUrl } from '../../app/admin-record.js';
import { startServing, type Serving } from '../../app/serve.js';
import { output } from '../run.js';

interface ServeOptions { config?: string; json?: boolean; logLevel?: string }

// Bound to loopback or every address: reached locally as "localhost", the name the demo certificates carry.
const LOCAL = new Set(['127.0.0.1', '0.0.0.0', '::1', '::', 'localhost']);

/** The URL a client on this machine reaches a listener at (IPv6 addresses in brackets). */
function listenerUrl(address: string, port: number): string {
  const host = LOCAL.has(address) ? 'localhost' : address.includes(':') ? `[${address}]` : address;
  return `https://${host}:${port}/`;
}

function banner(s: Serving): string {
  // Each listener as it is bound (port 0 picks one), not as the default config has it.
  const urls = s.config.listeners.map((l) => ({
    name: l.name, url: listenerUrl(l.address, s.listenerAddress(l.name)?.port ?? l.port),
  }));
  const port = s.listenerAddress(s.config.listeners[0]!.name)?.port ?? s.config.listeners[0]!.port;
  const lines = [`hsmproxy is serving ${urls[0]!.url} (keys in ${s.hsm.describe})`];
  for (const { name, url } of urls.slice(1)) lines.push(`  and ${url} (listener "${name}")`);
  if (s.demo) {
    const ca = relative(process.cwd(), s.demo.pki.caCert) || s.demo.pki.caCert;
    lines.push(
      s.demo.pkiCreated ? `  made a dev CA and localhost certificates (RSA-2048 and ECDSA P-256); their keys are in the HSM` : `  reused the dev CA and localhost certificates in ${relative(process.cwd(), s.demo.pki.caCert).replace(/\/[^/]*$/, '') || '.'}`,
      `  dev CA certificate: ${ca}`,
      `  demo upstream: ${s.demo.upstream.url}`,
      `  try: curl --cacert ${ca} https://localhost:${port}/`,
    );
  }
  if (s.hsm.pkcs11) lines.push(`  ${s.hsm.pkcs11.sessions} PKCS#11 sessions per token, ${s.hsm.pkcs11.threadPool} libuv threads`);
  if (s.workers > 1) lines.push(`  ${s.workers} worker processes share the listening ports`);
  const admin = s.adminAddress();
  // /scaling answers when the scaling advisor runs: on the simulated cluster (embedded or cluster mode).
  if (admin) lines.push(`  admin: ${adminUrl(admin)}/metrics  /healthz  /readyz${s.hsm.cluster ? '  /scaling' : ''}`);
  lines.push('  stop with Ctrl-C (SIGINT/SIGTERM drain in-flight requests); SIGHUP reloads the config');
  return lines.join('\n');
}

export function register(program: Command): void {
  program
    .command('serve')
    .description('run the HTTPS reverse proxy (default: embedded simulated cluster, demo certificates and upstream)')
    .option('--config <file>', 'YAML configuration (default: the embedded demo, config/hsmproxy.yaml)')
    .option('--log-level <level>', 'override log.level')
    .option('--json', 'print the startup summary as JSON')
    .action(async (opts: ServeOptions) => {
      const explicit = opts.logLevel ?? process.env.HSMPROXY_LOG_LEVEL;
      const log = pino({ level: explicit ?? 'info' });
      const serving = await startServing({
        ...(opts.config ? { configFile: opts.config } : {}), log, logLevelFromConfig: explicit === undefined,
      });
      output(opts, {
        listeners: serving.config.listeners.map((l) => ({ name: l.name, address: serving.listenerAddress(l.name) })),
        admin: serving.adminAddress(),
        workers: serving.workers,
        hsm: serving.hsm.describe,
        ...(serving.hsm.pkcs11 ? { pkcs11: serving.hsm.pkcs11 } : {}),
        ...(serving.demo ? {
          caCert: serving.demo.pki.caCert, upstream: serving.demo.upstream.url, pkiCreated: serving.demo.pkiCreated,
        } : {}),
      }, () => process.stderr.write(banner(serving) + '\n'));
      let stopping = false;
      const stop = (signal: string): void => {
        if (stopping) return;
        stopping = true;
        log.info({ signal }, 'shutting down: draining in-flight requests');
        serving.stop().then(
          () => { log.info('stopped'); process.exit(0); },
          (err: unknown) => { log.error({ err }, 'shutdown failed'); process.exit(1); },
        );
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGHUP', () => {
        serving.reload().then(
          () => { if (serving.workers > 1) log.info({ workers: serving.workers }, 'configuration reloaded'); },
          (err: unknown) => log.error({ err: (err as Error).message }, 'reload refused; the previous configuration keeps serving'),
        );
      });
      // Keep serving until a signal arrives.
      await new Promise<never>(() => undefined);
    });
}
