// `hsmproxy cluster client-cert | revoke-client | clients`: one client certificate per proxy,
// issued into a client bundle, revoked in the cluster's register that every HSM node reads.
import type { Command } from 'commander';
import { issueClientCert, readClientRegister, refreshClientBundle, revokeClient } from '../../hsm/cluster/clients.js';
import { readManifest } from '../../hsm/cluster/manifest.js';
import { clusterDir } from '../hsm-session.js';
import { UsageError, output } from '../run.js';

/** Registers the client-certificate commands in the `cluster` group. */
export function register(program: Command): void {
  const cluster = program.commands.find((c) => c.name() === 'cluster') ?? program.command('cluster').description('create and manage a cluster of simulated HSMs');

  cluster.command('client-cert')
    .description("issue a proxy's own client certificate (signed by the customer CA) into a client bundle: CA certificate, cluster.json, client.crt, client.key (0600)")
    .requiredOption('--name <name>', "the proxy's name: the certificate's CN, and how it is revoked")
    .option('--dir <dir>', 'cluster directory (default $HSMPROXY_DIR or ./data)')
    .option('--out-dir <dir>', 'where the bundle goes, empty or new (default DIR/clients/NAME)')
    .option('--refresh', "rewrite the cluster.json of the existing bundle in --out-dir with the cluster's current HSMs (no new certificate)")
    .option('--json', 'print one JSON document')
    .action(async (opts: { name: string; dir?: string; outDir?: string; refresh?: boolean; json?: boolean }) => {
      const dir = clusterDir(opts);
      if (opts.refresh) {
        if (!opts.outDir) throw new UsageError('--refresh needs --out-dir (the bundle to update)');
        const m = await refreshClientBundle(dir, opts.outDir, opts.name);
        output(opts, { outDir: opts.outDir, client: m.client, hsms: m.hsms }, () => {
          process.stdout.write(`updated ${opts.outDir}/cluster.json: ${m.hsms.map((h) => `${h.id} ${h.address}:${h.port}`).join(', ')}\n`);
        });
        return;
      }
      const r = await issueClientCert(
        dir, { name: opts.name, ...(opts.outDir !== undefined ? { outDir: opts.outDir } : {}) },
      );
      output(opts, { ...r.record, outDir: r.outDir, files: r.files }, () => {
        process.stdout.write([
          `issued client certificate "${r.record.name}" (serial ${r.record.serial}, valid until ${r.record.notAfter})`,
          `client bundle in ${r.outDir}: ${['customer-ca.crt', 'cluster.json', 'client.crt', 'client.key (0600)'].join(', ')}`,
          `give that directory (and the crypto user's credentials) to the proxy: hsm.manifest: ${r.files.manifest}`,
          `revoke it with: hsmproxy cluster revoke-client --dir ${dir} --name ${r.record.name}`,
          '',
        ].join('\n'));
      });
    });

  cluster.command('revoke-client')
    .description('revoke a client certificate: every HSM node refuses it from its next connection and closes the open ones within a second')
    .option('--name <name>', 'the proxy whose certificate to revoke')
    .option('--serial <hex>', 'the serial of the certificate to revoke')
    .option('--dir <dir>', 'cluster directory (default $HSMPROXY_DIR or ./data)')
    .option('--json', 'print one JSON document')
    .action(async (opts: { name?: string; serial?: string; dir?: string; json?: boolean }) => {
      if ((opts.name === undefined) === (opts.serial === undefined)) throw new UsageError('name the certificate to revoke: --name NAME or --serial SERIAL (one of them)');
      const r = await revokeClient(clusterDir(opts), {
        ...(opts.name !== undefined ? { name: opts.name } : {}),
        ...(opts.serial !== undefined ? { serial: opts.serial } : {}),
      });
      output(opts, r, () => {
        for (const c of r.revoked) process.stdout.write(`revoked "${c.name}" (serial ${c.serial}): HSM nodes refuse it from now on\n`);
        for (const c of r.alreadyRevoked) process.stdout.write(`"${c.name}" (serial ${c.serial}) was already revoked on ${c.revokedAt ?? '?'}\n`);
      });
    });

  cluster.command('clients')
    .description('list the client certificates issued to proxies, and which are revoked')
    .option('--dir <dir>', 'cluster directory (default $HSMPROXY_DIR or ./data)')
    .option('--json', 'print one JSON document')
    .action(async (opts: { dir?: string; json?: boolean }) => {
      const dir = clusterDir(opts);
      await readManifest(dir);
      const { clients } = await readClientRegister(dir);
      output(opts, { clients }, () => {
        if (clients.length === 0) process.stdout.write('no client certificates issued (hsmproxy cluster client-cert --name NAME issues one)\n');
        for (const c of clients) process.stdout.write(`${c.name}  serial ${c.serial}  issued ${c.issuedAt}  ${c.revokedAt ? `REVOKED ${c.revokedAt}` : `valid until ${c.notAfter}`}\n`);
      });
    });
}
