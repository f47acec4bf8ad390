// `hsmproxy demo-pki`: the dev CA and localhost certificates (ECDSA and RSA) that the embedded
// default makes on first start, made here for a cluster of separate HSMs (cluster mode, the
// compose stack): keys generated inside the HSMs, key references and certificates written to
// --out. One command instead of a dozen key/csr/ca calls. The work is pki/demo.ts's.
import type { Command } from 'commander';
import { Engine } from '../../engine/index.js';
import { ensureDemoPki } from '../../pki/demo.js';
import { openSimFromManifest, type KeyCommandOptions } from '../engine-options.js';
import { output, UsageError } from '../run.js';

interface DemoPkiOptions extends KeyCommandOptions { out: string; name: string[]; days?: string }

const collect = (v: string, prev: string[]): string[] => [...prev, v];

/** Registers `demo-pki`. */
export function register(program: Command): void {
  program.command('demo-pki')
    .description("make a dev CA and localhost certificates (ECDSA and RSA) whose keys live in the cluster's HSMs; reuses them when present and usable")
    .requiredOption('--out <dir>', 'where to write the certificates and key references (the files config/hsmproxy.yaml names)')
    .option('--dir <dir>', 'cluster directory (default: $HSMPROXY_DIR or ./data)')
    .option('--credentials <file>', '0600 file holding user:password of a crypto user (default: $HSMPROXY_PIN)')
    .option('--name <name>', 'a DNS name or IP the certificates are for (repeatable; default localhost, 127.0.0.1, ::1)', collect, [])
    .option('--days <n>', 'validity of the certificates in days (at most 397)')
    .option('--json', 'print one JSON document')
    .action(async (opts: DemoPkiOptions) => {
      const days = opts.days === undefined ? undefined : Number(opts.days);
      if (days !== undefined && (!Number.isInteger(days) || days < 1 || days > 397)) throw new UsageError(`--days must be a whole number from 1 to 397, got "${opts.days}"`);
      const backend = await openSimFromManifest({ ...opts, hsm: undefined });
      const engine = new Engine({ backends: { sim: backend } });
      try {
        const r = await ensureDemoPki(
          engine, backend, opts.out, { ...(days ? { days } : {}), ...(opts.name.length ? { names: opts.name } : {}) },
        );
        output(opts, { created: r.created, ...r.files }, () => {
          process.stdout.write(`${r.created ? 'made' : 'reusing'} the demo PKI in ${opts.out}: trust ${r.files.caCert}\n`);
        });
      } finally {
        await engine.close();
      }
    });
}
