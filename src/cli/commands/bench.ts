// `hsmproxy bench hsm`: HSM operations per second and latency (network / queue / service) over
// a concurrency sweep, against an embedded cluster, a running cluster or a PKCS#11 token; with
// --scaling, throughput and p99 against the number of HSMs. The logic lives in ../bench/.
import type { Command } from 'commander';
import { access, constants, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { formatHsmResult } from '../../bench/format.js';
import { planHsmBench, runHsmBench, type HsmBenchFlags } from '../../bench/hsm.js';
import { InterruptedError, type Progress } from '../../bench/sweep.js';
import { output, UsageError } from '../run.js';

function progressLine(p: Progress): void {
  const of = 'count' in p.budget ? `${p.done}/${p.budget.count} ops` : `${p.elapsedS.toFixed(1)}/${p.budget.seconds} s, ${p.done} ops`;
  const rate = p.elapsedS > 0 ? Math.round(p.done / p.elapsedS) : 0;
  process.stderr.write(`\r\x1b[K${p.op} x${p.concurrency}: ${of}, ${rate} ops/s`);
}

/** Registers the `bench` command group. */
export function register(program: Command): void {
  const bench = program.command('bench').description('measure HSM throughput and latency (see bench/ for TLS and proxy benchmarks)');
  bench.command('hsm')
    .description('operations/s and latency percentiles per concurrency, split into network, HSM queue wait and crypto service time')
    .option('--op <ops>', 'comma list: sign-rsa2048-pss, sign-rsa2048-pkcs1, sign-rsa3072-pss, sign-rsa3072-pkcs1, sign-ec-p256, sign-ec-p384, verify-<same>, aes-gcm, random', 'sign-ec-p256')
    .option('--concurrency <list>', 'requests in flight, a comma list swept in order (default 1,4,16,64,256; 64 with --scaling)')
    .option('--duration <seconds>', 'seconds per point (default 2)')
    .option('--count <n>', 'operations per point (instead of --duration)')
    .option('--embedded', 'a temporary embedded cluster, removed afterwards (the default target)')
    .option('--hsms <n>', 'HSMs in the embedded cluster (default 1)')
    .option('--profile <name>', 'capacity profile of the embedded HSMs: unlimited, hsm1.medium, hsm2m.medium (default unlimited)')
    .option('--scaling <list>', 'compare embedded clusters of these sizes, e.g. 1,2,3: throughput and p99 per HSM count')
    .option('--dir <dir>', 'a running cluster (credentials: $HSMPROXY_PIN or --credentials)')
    .option('--backend <kind>', 'pkcs11: a PKCS#11 token (with --module and --token; PIN from $HSMPROXY_PIN)')
    .option('--module <path>', 'PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so')
    .option('--token <label>', 'PKCS#11 token label')
    .option('--credentials <file>', '0600 file holding user:password (default: $HSMPROXY_PIN)')
    .option('--out <file>', 'also write the JSON result to this file')
    .option('--json', 'print one JSON document')
    .action(async (opts: HsmBenchFlags & { out?: string; json?: boolean }) => {
      const plan = planHsmBench(opts);
      // A bad --out is the user's mistake to hear about before the run, not after it.
      if (opts.out) {
        await access(dirname(resolve(opts.out)), constants.W_OK).catch(() => {
          throw new UsageError(`cannot write ${opts.out}: its directory does not exist or is not writable; pass --out with a writable path`);
        });
      }
      const live = process.stderr.isTTY === true;
      // Ctrl-C ends the run cleanly: the temporary cluster and the keys made for it are removed.
      const interrupt = new AbortController();
      const onSigint = (): void => interrupt.abort();
      process.on('SIGINT', onSigint);
      let result;
      try {
        result = await runHsmBench(plan, live ? progressLine : undefined, interrupt.signal);
      } catch (err) {
        if (err instanceof InterruptedError) throw new UsageError(err.message, 130);
        throw err;
      } finally {
        process.off('SIGINT', onSigint);
        if (live) process.stderr.write('\r\x1b[K');
      }
      if (opts.out) {
        await writeFile(opts.out, JSON.stringify(result, null, 2) + '\n').catch((err: NodeJS.ErrnoException) => {
          throw new UsageError(`cannot write ${opts.out} (${err.code ?? 'error'}); pass --out with a writable path`, 1);
        });
      }
      output(opts, result, () => process.stdout.write(formatHsmResult(result)));
    });
}
