// `hsmproxy csr`, `hsmproxy cert self-sign`, `hsmproxy ca init|csr|sign`: CSRs and certificates
// signed by keys that stay in the HSM (through the engine's WebCrypto provider).
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { access, readFile, writeFile } from 'node:fs/promises';
import { caCsr, caInit, caSign, certPem, chainPem, checkDays, createCsr, parseCertificate, parseCsr, selfSign, signingKey, type SigningKey } from '../../pki/index.js';
import type { Engine } from '../../engine/index.js';
import { addKeyOptions, keySigner, withEngine, type KeyCommandOptions } from '../engine-options.js';
import { output, UsageError } from '../run.js';

interface PkiOptions extends KeyCommandOptions {
  key: string;
  subject: string;
  san: string[];
  days?: string;
  out: string;
  force?: boolean;
  pss?: boolean;
  pathLength?: string;
  delegationUsage?: boolean;
}

interface SignOptions extends KeyCommandOptions {
  caKey: string;
  caCert: string;
  csr: string;
  days: string;
  out: string;
  force?: boolean;
  profile: string;
  chain?: boolean;
  pss?: boolean;
  delegationUsage?: boolean;
}

const collect = (v: string, prev: string[]): string[] => [...prev, v];

function days(text: string | undefined): number {
  if (text === undefined) throw new UsageError('--days is required (e.g. --days 365)');
  if (!/^\d+$/.test(text)) throw new UsageError(`--days must be a whole number of days, got "${text}"`);
  return checkDays(Number(text));
}

function pathLength(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d{1,2}$/.test(text)) throw new UsageError(`--path-length must be a small whole number, got "${text}"`);
  return Number(text);
}

async function readInput(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${what} ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, 1);
  }
}

async function writeOutput(file: string, text: string, opts: { noClobber?: string } = {}): Promise<void> {
  if (opts.noClobber) {
    const exists = await access(file).then(() => true, () => false);
    if (exists) throw new UsageError(`${file} already exists; ${opts.noClobber}`, 1);
  }
  try {
    await writeFile(file, text, { mode: 0o644 });
  } catch (err) {
    throw new UsageError(`cannot write ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, 1);
  }
}

async function hsmKey(engine: Engine, file: string, opts: KeyCommandOptions & { pss?: boolean }): Promise<SigningKey> {
  const signer = await keySigner(engine, file, opts);
  if (opts.pss && signer.algorithm.type !== 'rsa') throw new UsageError(`--pss needs an RSA key; ${file} is an EC key (it signs with ECDSA): drop --pss`);
  return signingKey(signer, engine.webcrypto(), { pss: opts.pss });
}

/** Refuses an existing --out before any HSM work, as `key generate` does, unless --force. */
function checkOut(opts: { out: string; force?: boolean }): void {
  if (!opts.force && existsSync(opts.out)) throw new UsageError(`${opts.out} already exists; remove it, choose another --out, or pass --force`);
}

function keyCommand(cmd: Command, description: string): Command {
  return addKeyOptions(
    cmd
      .description(description)
      .requiredOption('--key <file>', 'key reference (fake PEM) of the HSM key')
      .requiredOption('--subject <dn>', 'subject, e.g. "CN=example.com,O=Example Ltd,C=GB"')
      .requiredOption('--out <file>', 'where to write the PEM')
      .option('--pss', 'sign with RSASSA-PSS (RSA keys; default sha256WithRSAEncryption)')
      .option('--json', 'print the result as JSON'),
  );
}

/** Registers `csr`, `cert` and `ca`. */
export function register(program: Command): void {
  keyCommand(program.command('csr'), 'make a certificate signing request with an HSM key')
    .option('--force', 'overwrite --out if it exists')
    .option('--san <entries>', 'subjectAltName entries: DNS:name, IP:addr, email:addr, URI:uri (comma-separated or repeated)', collect, [])
    .action(async (opts: PkiOptions) => {
      checkOut(opts);
      await withEngine(opts, async (engine) => {
        const pem = await createCsr(await hsmKey(engine, opts.key, opts), { subject: opts.subject, sans: opts.san });
        await writeOutput(opts.out, pem);
        output(opts, { out: opts.out, subject: opts.subject, sans: opts.san }, () => process.stdout.write(`wrote ${opts.out}\n`));
      });
    });

  const cert = program.command('cert').description('certificates signed by HSM keys');
  keyCommand(cert.command('self-sign'), 'make a self-signed server certificate with an HSM key')
    .option('--force', 'overwrite --out if it exists')
    .option('--san <entries>', 'subjectAltName entries: DNS:name, IP:addr, email:addr, URI:uri', collect, [])
    .option('--days <n>', 'validity in days')
    .option('--delegation-usage', 'add DelegationUsage (RFC 9345): the key may sign TLS delegated credentials')
    .action(async (opts: PkiOptions) => {
      const d = days(opts.days);
      checkOut(opts);
      await withEngine(opts, async (engine) => {
        const c = await selfSign(
          await hsmKey(engine, opts.key, opts),
          { subject: opts.subject, sans: opts.san, days: d, delegationUsage: opts.delegationUsage === true },
        );
        await writeOutput(opts.out, certPem(c));
        output(opts, {
          out: opts.out, serial: c.serialNumber, subject: c.subject, notAfter: c.notAfter.toISOString(),
        }, () =>
          process.stdout.write(`wrote ${opts.out} (serial ${c.serialNumber}, valid until ${c.notAfter.toISOString()})\n`));
      });
    });

  const ca = program.command('ca').description('an issuing CA whose key stays in the HSM');
  keyCommand(ca.command('init'), 'make a self-signed CA certificate with an HSM key')
    .option('--days <n>', 'validity in days')
    .option('--path-length <n>', 'basicConstraints pathLenConstraint')
    .action(async (opts: PkiOptions) => {
      const d = days(opts.days);
      const pl = pathLength(opts.pathLength);
      await withEngine(opts, async (engine) => {
        const c = await caInit(
          await hsmKey(engine, opts.key, opts), { subject: opts.subject, days: d, pathLength: pl },
        );
        await writeOutput(opts.out, certPem(c), { noClobber: 'a CA certificate is not overwritten; choose another --out' });
        output(opts, {
          out: opts.out, serial: c.serialNumber, subject: c.subject, notAfter: c.notAfter.toISOString(),
        }, () =>
          process.stdout.write(`wrote CA certificate ${opts.out} (${c.subject}, valid until ${c.notAfter.toISOString()})\n`));
      });
    });

  keyCommand(ca.command('csr'), 'make a CSR for an intermediate CA, to be signed by an offline root')
    .option('--force', 'overwrite --out if it exists')
    .option('--path-length <n>', 'requested basicConstraints pathLenConstraint')
    .action(async (opts: PkiOptions) => {
      const pl = pathLength(opts.pathLength);
      checkOut(opts);
      await withEngine(opts, async (engine) => {
        const pem = await caCsr(await hsmKey(engine, opts.key, opts), { subject: opts.subject, pathLength: pl });
        await writeOutput(opts.out, pem);
        output(opts, { out: opts.out, subject: opts.subject }, () => process.stdout.write(`wrote ${opts.out}\n`));
      });
    });

  addKeyOptions(
    ca.command('sign')
      .description('issue a certificate for a CSR, signed by the CA key in the HSM')
      .requiredOption('--ca-key <file>', 'key reference of the CA key')
      .requiredOption('--ca-cert <file>', 'the CA certificate')
      .requiredOption('--csr <file>', 'the certificate signing request')
      .requiredOption('--days <n>', 'validity in days (cut to the CA certificate\'s)')
      .requiredOption('--out <file>', 'where to write the certificate (PEM)')
      .option('--profile <profile>', 'server or client', 'server')
      .option('--force', 'overwrite --out if it exists')
      .option('--chain', 'write the leaf followed by the CA certificate')
      .option('--delegation-usage', 'add DelegationUsage (RFC 9345): the key may sign TLS delegated credentials')
      .option('--pss', 'sign with RSASSA-PSS (RSA CA keys)')
      .option('--json', 'print the result as JSON'),
  ).action(async (opts: SignOptions) => {
    if (opts.profile !== 'server' && opts.profile !== 'client') throw new UsageError(`--profile must be server or client, got "${opts.profile}"`);
    const d = days(opts.days);
    checkOut(opts);
    const caCert = parseCertificate(await readInput(opts.caCert, 'CA certificate'), opts.caCert);
    const csr = parseCsr(await readInput(opts.csr, 'CSR'), opts.csr);
    await withEngine(opts, async (engine) => {
      const key = await hsmKey(engine, opts.caKey, opts);
      const { record, capped } = await caSign(key, {
        caCert, caCertFile: opts.caCert, csr, csrFile: opts.csr, days: d, profile: opts.profile as 'server' | 'client',
        delegationUsage: opts.delegationUsage === true,
        write: (cert) => writeOutput(opts.out, opts.chain ? chainPem(cert, caCert) : certPem(cert)),
      });
      output(opts, { out: opts.out, ...record, capped }, () => {
        process.stdout.write(`wrote ${opts.out} (serial ${record.serial}, ${record.subject}, valid until ${record.notAfter})\n`);
        if (capped) process.stdout.write('note: validity was cut to the CA certificate\'s end date\n');
      });
    });
  });
}
