// `hsmproxy hsm …`: run one HSM node in the foreground, read and verify its audit log.
import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readAuditKey, verifyAuditLog } from '../../hsm/device/index.js';
import { clusterPath, findHsm, readManifest } from '../../hsm/cluster/manifest.js';
import { serveForeground } from '../../hsm/cluster/run-node.js';
import { DEFAULT_APPLIANCE_LIMITS, type ApplianceLimits } from '../../hsm/node.js';
import { clusterDir } from '../hsm-session.js';
import { UsageError, output } from '../run.js';

/** A flag's value as a positive whole number, or a usage error naming what was given. */
function positiveInt(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new UsageError(`expected a positive whole number, got "${v}"`);
  return Number(v);
}

// The appliance limits `hsm serve` exposes as flags (commander's camel-cased option names).
const LIMIT_FLAGS = ['handshakeTimeoutMs', 'maxPending', 'maxPendingPerSource', 'maxInFlightPerConnection', 'maxLoginsPerCertificate'] as const;

/** Registers the `hsm` command group. */
export function register(program: Command): void {
  const hsm = program.commands.find((c) => c.name() === 'hsm') ?? program.command('hsm').description('run one HSM of the cluster, read its audit log');

  hsm.command('serve')
    .description('serve one HSM on its mTLS port in the foreground (logs JSON lines; stops on SIGTERM/SIGINT)')
    .option('--dir <dir>', 'cluster directory (default $HSMPROXY_DIR or ./data)')
    .option('--hsm <id>', 'HSM id from cluster.json (default: the first)')
    .option('--json', 'accepted for uniformity: logs are always JSON lines')
    .option('--handshake-timeout-ms <ms>', `close a peer that has not finished mTLS by then (default ${DEFAULT_APPLIANCE_LIMITS.handshakeTimeoutMs})`, positiveInt)
    .option('--max-pending <n>', `connections still handshaking, all sources (default ${DEFAULT_APPLIANCE_LIMITS.maxPending})`, positiveInt)
    .option('--max-pending-per-source <n>', `connections still handshaking from one address (default ${DEFAULT_APPLIANCE_LIMITS.maxPendingPerSource})`, positiveInt)
    .option('--max-in-flight-per-connection <n>', `requests one connection may have in flight before the node stops reading it (default ${DEFAULT_APPLIANCE_LIMITS.maxInFlightPerConnection})`, positiveInt)
    .option('--max-logins-per-certificate <n>', `logins in progress at once with one client certificate (default ${DEFAULT_APPLIANCE_LIMITS.maxLoginsPerCertificate})`, positiveInt)
    .action(async (
      opts: { dir?: string; hsm?: string } & Partial<Pick<ApplianceLimits, typeof LIMIT_FLAGS[number]>>,
    ) => {
      const limits: Partial<ApplianceLimits> = {};
      for (const k of LIMIT_FLAGS) if (opts[k] !== undefined) limits[k] = opts[k];
      await serveForeground({ dir: clusterDir(opts), limits, ...(opts.hsm !== undefined ? { hsmId: opts.hsm } : {}) });
    });

  hsm.command('audit')
    .description("print an HSM's MAC-chained audit log, or check it with --verify (where the HSM's files are)")
    .option('--dir <dir>', 'cluster directory (default $HSMPROXY_DIR or ./data)')
    .option('--hsm <id>', 'HSM id from cluster.json (default: the first)')
    .option('--verify', "check the MAC chain under the HSM's audit key (needs its master key); exit 1 and name the first bad line if it was edited")
    .option('--json', 'print one JSON document')
    .action(async (opts: { dir?: string; hsm?: string; verify?: boolean; json?: boolean }) => {
      const dir = clusterDir(opts);
      const h = findHsm(await readManifest(dir), opts.hsm);
      const dataDir = clusterPath(dir, h.dataDir);
      const path = join(dataDir, 'audit.log');
      if (opts.verify) {
        // The chain is keyed from the HSM's master key, so verifying runs where its files are.
        const key = await readAuditKey(dataDir).catch((err: Error) => {
          throw new UsageError(`cannot open the audit key of ${h.id}: ${err.message}`, 1);
        });
        const v = await verifyAuditLog(path, key).catch((err: NodeJS.ErrnoException) => {
          throw new UsageError(`cannot read the audit log ${path} (${err.code ?? err.message})`, 1);
        });
        output(opts, { hsm: h.id, path, ...v }, () => {
          if (v.ok) process.stdout.write(`audit log of ${h.id} intact: ${v.entries} entries, MAC chain verified\n`);
        });
        if (!v.ok && v.unkeyed) throw new UsageError(`audit log of ${h.id} cannot be verified: ${v.reason}`, 1);
        if (!v.ok) throw new UsageError(`audit log of ${h.id} was tampered with: line ${v.line}: ${v.reason}`, 1);
        return;
      }
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (err) {
        throw new UsageError(`cannot read the audit log ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, 1);
      }
      const entries = text.split('\n').filter((l) => l.length > 0).map((l) => {
        try {
          return JSON.parse(l) as Record<string, unknown>;
        } catch {
          return { unreadable: l };
        }
      });
      output(opts, { hsm: h.id, path, entries }, () => {
        for (const e of entries) {
          const { seq, time, event, user, ok, prev: _p, hash: _h, mac: _m, hsm: _hsm, ...rest } = e;
          const extra = Object.entries(rest).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ');
          process.stdout.write(`${String(seq ?? '?').padStart(5)} ${String(time ?? '')} ${ok === false ? 'DENIED' : 'ok    '} ${String(event ?? '')} ${user ? `user=${String(user)} ` : ''}${extra}\n`);
        }
      });
    });
}
