#!/usr/bin/env node
// cli/: the `hsmproxy` command. Parses arguments, calls the library, prints. No logic of its own.
// May import everything under src/. Each command group lives in commands/<group>.ts and
// registers itself through a `register(program)` function listed below.
import { Command } from 'commander';
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { runMain } from './run.js';

/** Builds the command tree; exported so tests can parse argv without spawning. */
export async function buildProgram(): Promise<Command> {
  const program = new Command('hsmproxy')
    .description('TLS-terminating reverse proxy whose private keys stay in an HSM')
    .version('0.1.0')
    // runMain prints usage errors itself: one line, with the `hsmproxy:` prefix (and JSON with --json).
    .configureOutput({ outputError: () => undefined })
    .exitOverride();
  // Command groups, one module each. Keep this list sorted; each register() adds one group.
  const groups: Array<() => Promise<{ register(p: Command): void }>> = [
    () => import('./commands/bench.js'),
    () => import('./commands/cluster-clients.js'),
    () => import('./commands/cluster-ops.js'),
    () => import('./commands/cluster-scaling.js'),
    () => import('./commands/cluster.js'),
    () => import('./commands/config.js'),
    () => import('./commands/crypto.js'),
    () => import('./commands/demo-pki.js'),
    () => import('./commands/hsm.js'),
    () => import('./commands/key-pkcs11.js'),
    () => import('./commands/key.js'),
    () => import('./commands/keyref.js'),
    () => import('./commands/pki.js'),
    () => import('./commands/serve.js'),
    () => import('./commands/user.js'),
  ];
  for (const load of groups) (await load()).register(program);
  return program;
}

/** Runs the command line; the executable is entry.cts, which sizes the thread pool first. */
export function main(): void {
  runMain(buildProgram);
}

// Also run as the entry point itself (node --import=tsx src/cli/main.ts), so tests can import buildProgram.
const entry = process.argv[1];
if (entry && import.meta.url === pathToFileURL(realpathSync(entry)).href) main();
