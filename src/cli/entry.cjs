#!/usr/bin/env node
// The `hsmproxy` executable: sizes libuv's thread pool, then runs main.ts.
// CommonJS on purpose: libuv reads UV_THREADPOOL_SIZE once, when its pool starts, and Node's ESM
// loader starts the pool while it loads an ESM entry, before the entry's first line (measured).
// Every PKCS#11 signature in flight holds one pool thread (pkcs11js's C_SignAsync), so libuv's
// default of 4, shared with fs, dns and crypto, would cap signing at 4 at once.
// Plain JavaScript (tsc copies it to dist/), so it also runs from source: `node src/cli/entry.cjs`.
/* global require, __dirname */
/* eslint-disable @typescript-eslint/no-require-imports -- require() is synchronous: nothing may start the pool first */
const { existsSync, readFileSync } = require('node:fs');
const { join } = require('node:path');
const { pathToFileURL } = require('node:url');

/** When the command is not `serve --config FILE` with hsm.mode pkcs11 (docs/pkcs11.md). */
const DEFAULT_THREADS = 16;
/** DEFAULTS.hsm.sessions in config/schema.ts. */
const DEFAULT_SESSIONS = 8;

/** hsm.sessions of a `serve --config FILE` whose hsm.mode is pkcs11, else undefined. */
function servedSessions(argv) {
  if (!argv.includes('serve')) return undefined;
  const i = argv.findIndex((a) => a === '--config' || a.startsWith('--config='));
  if (i < 0) return undefined;
  const file = argv[i].startsWith('--config=') ? argv[i].slice('--config='.length) : argv[i + 1];
  try {
    const doc = require('yaml').parse(readFileSync(file, 'utf8'));
    if (doc?.hsm?.mode !== 'pkcs11') return undefined;
    const sessions = doc.hsm.sessions ?? DEFAULT_SESSIONS;
    return Number.isInteger(sessions) && sessions > 0 ? sessions : undefined;
  } catch {
    return undefined; // serve reports an unreadable or invalid config itself, with the field's path
  }
}

/** Threads for `argv`: threadPoolSizeFor(sessions) of engine/pkcs11/backend.ts, at least the default. */
function threadPoolSize(argv) {
  const sessions = servedSessions(argv);
  return sessions === undefined ? DEFAULT_THREADS : Math.min(1024, Math.max(DEFAULT_THREADS, sessions + 2));
}

// A value the user set wins (it is also how to go below the default).
if (!process.env.UV_THREADPOOL_SIZE) process.env.UV_THREADPOOL_SIZE = String(threadPoolSize(process.argv.slice(2)));

async function start() {
  // dist/ holds main.js only; the source tree has main.ts.
  const fromSource = existsSync(join(__dirname, 'main.ts'));
  // From source, TypeScript goes through tsx, registered only now that the pool size is set.
  if (fromSource) {
    (await import('tsx/esm/api')).register();
    // Child processes (HSM nodes, serve workers) are forked with this process's execArgv: give
    // them the loader too, or they cannot load their .ts entry files. By path: node resolves a bare
    // `--import=tsx` from the working directory, which finds no tsx outside the clone.
    if (!process.execArgv.some((a) => /^--(import|loader)(=|$)/.test(a) && a.includes('tsx'))) {
      process.execArgv.push(`--import=${pathToFileURL(require.resolve('tsx')).href}`);
    }
  }
  const main = await import(pathToFileURL(join(__dirname, fromSource ? 'main.ts' : 'main.js')).href);
  main.main();
}
void start();
