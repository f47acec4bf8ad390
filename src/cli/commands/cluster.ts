// `hsmproxy cluster …`: create and activate a cluster of simulated HSMs.
import type { Command } from 'commander';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DEFAULT_BASE_PORT, MAX_HSMS, initCluster } from '../../hsm/cluster/init.js';
import { manifestPath, readManifest, writeManifest, type ManifestProfile } from '../../hsm/cluster/manifest.js';
import { portsInUse } from '../../hsm/cluster/ports.js';
import { clusterDir, connectHsm, readNewPassword, readPin } from '../hsm-session.js';
import { UsageError, output } from '../run.js';

/** The appliance user `cluster activate` creates (the same name embedded mode uses). */
const SYNC_USER = 'sync';

const PROFILES: ManifestProfile[] = ['unlimited', 'hsm1.medium', 'hsm2m.medium'];

function intOption(v: string, name: string): number {
  if (!/^\d+$/.test(v)) throw new UsageError(`${name} must be a whole number, got "${v}"`);
  return Number(v);
}

/** Registers the `cluster` command group. */
export function register(program: Command): void {
  const cluster = program.commands.find((c) => c.name() === 'cluster') ?? program.command('cluster').description('create and manage a cluster of simulated HSMs');

  cluster.command('init')
    .description('create a cluster: customer CA, cluster and node certificates, HSM stores, cluster.json')
    .option('--dir <dir>', 'cluster directory (default $HSMPROXY_DIR or ./data)')
    .option('--hsms <n>', `number of HSMs (1-${MAX_HSMS})`, '1')
    .option('--profile <profile>', `capacity profile: ${PROFILES.join('|')}`, 'unlimited')
    .option('--base-port <port>', 'port of the first HSM; the others follow', String(DEFAULT_BASE_PORT))
    .option('--host <host>', 'address the HSMs listen on and clients reach them at, named in their certificates (IP or DNS name); one for all, or one per HSM separated by commas', '127.0.0.1')
    .option('--json', 'print one JSON document')
    .action(async (
      opts: { dir?: string; hsms: string; profile: string; basePort: string; host: string; json?: boolean },
    ) => {
      if (!PROFILES.includes(opts.profile as ManifestProfile)) throw new UsageError(`--profile must be one of ${PROFILES.join(', ')}`);
      const hsms = intOption(opts.hsms, '--hsms');
      if (hsms < 1 || hsms > MAX_HSMS) throw new UsageError(`--hsms must be from 1 to ${MAX_HSMS}`);
      const dir = clusterDir(opts);
      const hosts = opts.host.split(',').map((h) => h.trim());
      if (hosts.length !== 1 && hosts.length !== hsms) throw new UsageError(`--host names ${hosts.length} addresses for ${hsms} HSMs: give one for all, or one per HSM`);
      const host = hosts.length === 1 ? hosts[0]! : hosts;
      const r = await initCluster({ dir, hsms, profile: opts.profile as ManifestProfile, basePort: intOption(opts.basePort, '--base-port'), host });
      const m = r.manifest;
      // Another cluster's HSM (an earlier quick start, say) may hold these ports: say so now, not when it fails.
      const busy = await portsInUse(m.hsms);
      for (const p of busy) {
        process.stderr.write(`hsmproxy: warning: port ${p.port} on ${p.address} (${p.hsm}) is already in use, perhaps by another cluster's HSM; ` +
          `${p.hsm} cannot start while it is taken: stop what listens there, or delete ${dir} and run cluster init again with --base-port P\n`);
      }
      output(opts, {
        dir, manifest: manifestPath(dir), clusterId: m.clusterId, precoUser: r.precoUser,
        precoPassword: r.precoPassword,
        hsms: m.hsms.map((h) => ({ id: h.id, address: h.address, port: h.port, profile: h.profile })),
        portsInUse: busy,
      }, () => {
        process.stdout.write([
          `cluster ${m.clusterId} created in ${dir}`,
          ...m.hsms.map((h) => `  ${h.id}  ${h.address}:${h.port}  profile ${h.profile}`),
          '',
          `one-time password of the pre-crypto-officer "${r.precoUser}" (shown only now): ${r.precoPassword}`,
          'next:',
          `  hsmproxy hsm serve --dir ${dir} --hsm ${m.hsms[0]?.id ?? 'hsm-1'}        (in another terminal)`,
          `  HSMPROXY_PIN=${r.precoUser}:<one-time password> hsmproxy cluster activate --dir ${dir}`,
          '',
        ].join('\n'));
      });
    });

  cluster.command('activate')
    .description('log in as the pre-crypto-officer (HSMPROXY_PIN=admin:<one-time password>), set the crypto officer password, and create the appliance user that resyncs HSMs')
    .option('--dir <dir>', 'cluster directory (default $HSMPROXY_DIR or ./data)')
    .option('--json', 'print one JSON document')
    .action(async (opts: { dir?: string; json?: boolean }) => {
      const dir = clusterDir(opts);
      const m = await readManifest(dir);
      const pin = await readPin('pre-crypto-officer');
      const newPassword = await readNewPassword(`crypto officer ${pin.user}`);
      const activated: string[] = [];
      let users: Buffer | undefined;
      // The appliance user (AU), as in CloudHSM: clients log in as it to resync an HSM that
      // missed changes (a CU may not copy users or keys). Its generated password lives only in DIR.
      const au = { user: SYNC_USER, password: randomBytes(18).toString('base64url') };
      for (const h of m.hsms) {
        const conn = await connectHsm(dir, m, h);
        try {
          const who = await conn.login(pin.user, pin.password);
          if (who.role !== 'PRECO') throw new UsageError(`${pin.user} on ${h.id} is already a ${who.role}: the cluster is activated`, 1);
          await conn.changePassword(newPassword);
          // Every HSM takes the first one's user table, so password hashes and state digests match: clones.
          if (users) await conn.importUsers(users);
          else {
            await conn.createUser(au.user, 'AU', au.password);
            users = await conn.exportUsers();
          }
          activated.push(h.id);
        } finally {
          conn.destroy();
        }
      }
      const syncFile = join(dir, 'sync-user.json');
      await writeFile(syncFile, JSON.stringify(au) + '\n', { mode: 0o600 });
      await writeManifest(dir, { ...m, activated: true });
      output(opts, { clusterId: m.clusterId, officer: pin.user, role: 'CO', hsms: activated, syncUser: au.user, syncCredentials: syncFile }, () => {
        process.stdout.write(`cluster ${m.clusterId} activated: ${pin.user} is now the crypto officer on ${activated.join(', ')}\n`);
        process.stdout.write(`appliance user "${au.user}" created for resyncing HSMs; its password is in ${syncFile} (0600)\n`);
      });
    });
}
