// `hsmproxy cluster start|status|backup|restore|add-hsm|remove-hsm`: running and operating a
// cluster (the `init`/`activate` subcommands live in cluster.ts; both add to the same group).
import type { Command } from 'commander';
import { DEFAULT_RETENTION_DAYS } from '../../hsm/cluster/backup.js';
import { addHsm, removeHsm } from '../../hsm/cluster/add-remove.js';
import { isNodeHost } from '../../hsm/cluster/certs.js';
import { adminCredentials, backupCluster, restoreCluster } from '../../hsm/cluster/lifecycle.js';
import { connectCluster } from '../../hsm/cluster/membership.js';
import { clusterStatus, type HsmStatus } from '../../hsm/cluster/status.js';
import { Supervisor, type SupervisorEvent } from '../../hsm/cluster/supervisor.js';
import { clusterDir, readPin } from '../hsm-session.js';
import { UsageError, output } from '../run.js';

function intOption(v: string, name: string, min: number): number {
  if (!/^\d+$/.test(v) || Number(v) < min) throw new UsageError(`${name} must be a whole number of at least ${min}, got "${v}"`);
  return Number(v);
}

// HSMPROXY_PIN when given; otherwise the cluster's own sync user (adminCredentials decides).
async function optionalPin(): Promise<{ user: string; password: string } | undefined> {
  return process.env.HSMPROXY_PIN ? readPin('crypto officer') : undefined;
}

function statusLine(s: HsmStatus, activated: boolean): string {
  if (!s.up) return `  ${s.id.padEnd(7)} ${s.address.padEnd(21)} DOWN      ${s.error ?? ''}`;
  const keys = `keys ${s.keysToken}+${s.keysSession}/${s.keysMax}`;
  const sync = !activated ? 'not activated' : s.inSync === undefined ? 'sync unproven' : s.inSync ? 'in sync' : 'OUT OF SYNC';
  return `  ${s.id.padEnd(7)} ${s.address.padEnd(21)} up        ${keys.padEnd(18)} users ${String(s.users).padEnd(5)} ${sync}  util ${((s.utilisation ?? 0) * 100).toFixed(0)}%`;
}

/** What `cluster status` says of a cluster not activated yet, and what to run. */
function notActivatedLine(dir: string): string {
  return `not activated yet: the crypto officer activates it with \`HSMPROXY_PIN=admin:<one-time password> hsmproxy cluster activate --dir ${dir}\`` +
    ' (the HSMs agree on their state from then on)';
}

/** Registers the cluster operations subcommands. */
export function register(program: Command): void {
  const cluster = program.commands.find((c) => c.name() === 'cluster') ?? program.command('cluster').description('create and manage a cluster of simulated HSMs');

  cluster.command('start')
    .description('run every HSM of the manifest as supervised child processes (restart on crash; SIGTERM stops them)')
    .option('--dir <dir>', 'cluster directory (default $HSMPROXY_DIR or ./data)')
    .option('--json', 'print events as JSON lines')
    .action(async (opts: { dir?: string; json?: boolean }) => {
      const dir = clusterDir(opts);
      const log = (e: SupervisorEvent): void => {
        if (opts.json) process.stdout.write(JSON.stringify({ time: new Date().toISOString(), ...e }) + '\n');
        else if (e.event === 'started') process.stdout.write(`${e.hsm} running (pid ${e.pid}) on port ${e.port}\n`);
        else if (e.event === 'exited') process.stdout.write(`${e.hsm} exited (${e.signal ?? `code ${e.code}`})\n`);
        else if (e.event === 'restarting') process.stdout.write(`${e.hsm} restarting in ${e.inMs} ms\n`);
        else process.stdout.write(`${e.hsm} stopped\n`);
      };
      const sup = new Supervisor({ dir, onEvent: log });
      await sup.start();
      if (!opts.json) process.stdout.write(`cluster running from ${dir}; stop with Ctrl-C or SIGTERM\n`);
      await new Promise<void>((resolve) => {
        const onSignal = (): void => {
          process.off('SIGTERM', onSignal);
          process.off('SIGINT', onSignal);
          sup.stop().then(resolve, resolve);
        };
        process.on('SIGTERM', onSignal);
        process.on('SIGINT', onSignal);
      });
    });

  cluster.command('status')
    .description("each HSM's health, address, keys (token+session) against the limit, users, and whether it is in sync")
    .option('--dir <dir>', 'cluster directory (default $HSMPROXY_DIR or ./data)')
    .option('--json', 'print one JSON document')
    .action(async (opts: { dir?: string; json?: boolean }) => {
      const dir = clusterDir(opts);
      const s = await clusterStatus(dir);
      output(opts, s, () => {
        process.stdout.write([
          `cluster ${s.clusterId}`, ...s.hsms.map((h) => statusLine(h, s.activated)),
          ...(!s.activated ? [notActivatedLine(dir)] : s.syncUnproven ? [`in sync: unproven: ${s.syncUnproven}`] : []),
          `backups: ${s.backups}${s.latestBackup ? ` (latest ${s.latestBackup})` : ''}`, '',
        ].join('\n'));
      });
      if (s.hsms.every((h) => !h.up)) process.exitCode = 1;
    });

  cluster.command('backup')
    .description('write an encrypted, integrity-protected backup of users, keys and policy to DIR/backups')
    .option('--dir <dir>', 'cluster directory (default $HSMPROXY_DIR or ./data)')
    .option('--retention-days <days>', 'delete backups older than this (the newest is always kept)', String(DEFAULT_RETENTION_DAYS))
    .option('--json', 'print one JSON document')
    .action(async (opts: { dir?: string; retentionDays: string; json?: boolean }) => {
      const retentionDays = intOption(opts.retentionDays, '--retention-days', 1);
      const r = await backupCluster(clusterDir(opts), { retentionDays, ...(await credentialsOption()) });
      output(opts, r, () => {
        process.stdout.write(`backup ${r.file}\n  from ${r.sourceHsm}: ${r.users} users, ${r.tokenKeys} token keys${r.pruned.length ? `\n  pruned ${r.pruned.length} backup(s) older than ${retentionDays} days` : ''}\n`);
      });
    });

  cluster.command('restore')
    .description('create a new cluster in NEWDIR from a backup (needs the source cluster key; new certificates)')
    .requiredOption('--backup <file>', 'backup file (DIR/backups/*.hsmbak)')
    .requiredOption('--dir <newdir>', 'new cluster directory (must not exist or be empty)')
    .option('--cluster-key <file>', "the source cluster's cluster-masking.key (default: found next to the backup)")
    .option('--hsms <n>', 'HSMs in the new cluster (default: as many as the source)')
    .option('--base-port <port>', 'port of the first HSM; the others follow')
    .option('--json', 'print one JSON document')
    .action(async (
      opts: { backup: string; dir: string; clusterKey?: string; hsms?: string; basePort?: string; json?: boolean },
    ) => {
      const r = await restoreCluster({
        backup: opts.backup, dir: opts.dir,
        ...(opts.clusterKey ? { clusterKeyFile: opts.clusterKey } : {}),
        ...(opts.hsms ? { hsms: intOption(opts.hsms, '--hsms', 1) } : {}),
        ...(opts.basePort ? { basePort: intOption(opts.basePort, '--base-port', 1) } : {}),
      });
      output(opts, r, () => {
        process.stdout.write(`cluster ${r.clusterId} restored in ${r.dir} from a backup of ${r.fromClusterId} taken ${r.backupCreatedAt}\n  ${r.hsms.join(', ')}: ${r.users} users, ${r.tokenKeys} token keys\n  start it with \`hsmproxy cluster start --dir ${r.dir}\`; key references name the old cluster id: re-export them\n`);
      });
    });

  cluster.command('add-hsm')
    .description('add an HSM cloned from the latest backup (or a live HSM), bring it in sync, add it to the manifest')
    .option('--dir <dir>', 'cluster directory (default $HSMPROXY_DIR or ./data)')
    .option('--from <source>', 'backup | live', 'backup')
    .option('--host <host>', 'address the new HSM listens on, named in its certificate (IP or DNS name; default: the first HSM\'s)')
    .option('--json', 'print one JSON document')
    .action(async (opts: { dir?: string; from: string; host?: string; json?: boolean }) => {
      if (opts.from !== 'backup' && opts.from !== 'live') throw new UsageError('--from must be backup or live');
      if (opts.host !== undefined && !isNodeHost(opts.host)) throw new UsageError(`--host takes an IP address or a DNS name, got "${opts.host}"`);
      const dir = clusterDir(opts);
      const creds = await credentialsOption();
      const r = await addHsm(
        dir, { from: opts.from, ...creds, ...(opts.host !== undefined ? { host: opts.host } : {}) },
      );
      const inSync = await bringInSync(dir, r.hsm.id, creds.credentials);
      output(opts, { ...r, inSync }, () => {
        process.stdout.write(`added ${r.hsm.id} (${r.hsm.address}:${r.hsm.port}) from ${r.from === 'backup' ? `backup ${r.source}` : `a live clone of ${r.source}`}, ${r.tokenKeys} token keys\n` +
          (inSync ? '  in sync and serving\n' : `  it joins when the cluster runs (\`hsmproxy cluster start --dir ${dir}\` starts it; clients resync it first)\n`));
      });
    });

  cluster.command('remove-hsm')
    .description('take an HSM out of the cluster (refuses to remove the last one)')
    .option('--dir <dir>', 'cluster directory (default $HSMPROXY_DIR or ./data)')
    .requiredOption('--hsm <id>', 'the HSM to remove')
    .option('--json', 'print one JSON document')
    .action(async (opts: { dir?: string; hsm: string; json?: boolean }) => {
      const r = await removeHsm(clusterDir(opts), opts.hsm);
      output(opts, r, () => {
        process.stdout.write(`removed ${r.removed.id}; the cluster now has ${r.remaining.join(', ')}; its data stays in ${r.removed.dataDir} until you delete it\n`);
      });
    });
}

async function credentialsOption(): Promise<{ credentials?: { user: string; password: string } }> {
  const pin = await optionalPin();
  return pin ? { credentials: pin } : {};
}

// When the cluster is running, waits for the supervisor to start the new HSM and lets a
// cluster client admit it (resync from a healthy peer first). false when it is not running.
async function bringInSync(dir: string, id: string, given?: { user: string; password: string }): Promise<boolean> {
  const before = await clusterStatus(dir, 1000);
  if (!before.hsms.some((h) => h.up && h.id !== id)) return false;
  const end = Date.now() + 15_000;
  while (Date.now() < end) {
    const s = await clusterStatus(dir, 1000);
    if (s.hsms.find((h) => h.id === id)?.up) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const client = await connectCluster(dir, { credentials: await adminCredentials(dir, given), watch: false });
  try {
    await client.waitInRotation(id, 15_000);
    return true;
  } catch {
    return false;
  } finally {
    await client.close();
  }
}
