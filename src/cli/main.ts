#!/usr/bin/env node
// cli/: the `hsmproxy` command. Parses arguments, calls the library, prints. No logic of its own.
// May import everything under src/. Each command group lives in commands/<group>.ts and
// registers itself through a `register(program)` function listed below.
import { Command } from 'commander';
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { runMain } from './run.js';

/** A command module: the top-level commands it registers (name → description) and how to load it. */
interface CommandModule {
  commands: Record<string, string>;
  load(): Promise<{ register(p: Command): void }>;
}

const CLUSTER = 'create and manage a cluster of simulated HSMs';
const KEY = 'keys in the HSM';

/**
 * Every command module, in help order. A module is loaded only when its command runs (or asks
 * for its help): loading them all costs seconds (pino, undici, prom-client, @peculiar/x509...),
 * and `hsmproxy --help` needs only the names and descriptions. test/cli-lazy.test.ts checks that
 * these descriptions are the ones the modules register.
 */
export const COMMAND_MODULES: readonly CommandModule[] = [
  { commands: { acme: 'certificates ordered from an ACME CA, keys in the HSM' }, load: () => import('./commands/acme.js') },
  { commands: { bench: 'measure HSM throughput and latency (see bench/ for TLS and proxy benchmarks)' }, load: () => import('./commands/bench.js') },
  { commands: { cluster: CLUSTER }, load: () => import('./commands/cluster-clients.js') },
  { commands: { cluster: CLUSTER }, load: () => import('./commands/cluster-ops.js') },
  { commands: { cluster: CLUSTER }, load: () => import('./commands/cluster-scaling.js') },
  { commands: { cluster: CLUSTER }, load: () => import('./commands/cluster.js') },
  { commands: { config: 'validate and inspect hsmproxy configuration files' }, load: () => import('./commands/config.js') },
  { commands: { crypto: 'sign and verify with keys in the HSM' }, load: () => import('./commands/crypto.js') },
  {
    commands: { 'demo-pki': "make a dev CA and localhost certificates (ECDSA and RSA) whose keys live in the cluster's HSMs; reuses them when present and usable" },
    load: () => import('./commands/demo-pki.js'),
  },
  { commands: { hsm: 'run one HSM of the cluster, read its audit log' }, load: () => import('./commands/hsm.js') },
  { commands: { pkcs11: 'keys on a PKCS#11 token (SoftHSMv2, CloudHSM, Luna…); PIN from HSMPROXY_PIN' }, load: () => import('./commands/key-pkcs11.js') },
  { commands: { key: KEY }, load: () => import('./commands/key.js') },
  { commands: { key: KEY }, load: () => import('./commands/keyref.js') },
  { commands: { key: KEY }, load: () => import('./commands/key-wrap.js') },
  {
    commands: { csr: 'make a certificate signing request with an HSM key', cert: 'certificates signed by HSM keys', ca: 'an issuing CA whose key stays in the HSM' },
    load: () => import('./commands/pki.js'),
  },
  { commands: { quorum: 'M of N approval by crypto officers for user management and key policy changes' }, load: () => import('./commands/quorum.js') },
  { commands: { serve: 'run the HTTPS reverse proxy (default: embedded simulated cluster, demo certificates and upstream)' }, load: () => import('./commands/serve.js') },
  { commands: { user: 'HSM users (the crypto officer manages them; login from HSMPROXY_PIN)' }, load: () => import('./commands/user.js') },
];

/** The top-level command `argv` runs (or asks help for), if any: its first word that is not an option. */
export function requestedCommand(argv: readonly string[]): string | undefined {
  const words = argv.filter((a) => !a.startsWith('-'));
  return words[0] === 'help' ? words[1] : words[0];
}

/**
 * Builds the command tree; exported so tests can parse argv without spawning. With `argv`, only
 * the modules of the command it names are loaded, the others stand in by name and description;
 * without, every module is loaded.
 */
export async function buildProgram(argv?: readonly string[]): Promise<Command> {
  const program = new Command('hsmproxy')
    .description('TLS-terminating reverse proxy whose private keys stay in an HSM')
    .version('0.1.0')
    // runMain prints usage errors itself: one line, with the `hsmproxy:` prefix (and JSON with --json).
    .configureOutput({ outputError: () => undefined })
    .exitOverride();
  const wanted = argv ? requestedCommand(argv) : undefined;
  for (const m of COMMAND_MODULES) {
    const names = Object.keys(m.commands);
    if (!argv || (wanted !== undefined && names.includes(wanted))) {
      (await m.load()).register(program);
      continue;
    }
    for (const name of names) {
      if (!program.commands.some((c) => c.name() === name)) program.command(name).description(m.commands[name]!);
    }
  }
  return program;
}

/** Runs the command line; the executable is entry.cjs, which sizes the thread pool first. */
export function main(): void {
  runMain(() => buildProgram(process.argv.slice(2)));
}

// Also run as the entry point itself (node --import=tsx src/cli/main.ts), so tests can import buildProgram.
const entry = process.argv[1];
if (entry && import.meta.url === pathToFileURL(realpathSync(entry)).href) main();
