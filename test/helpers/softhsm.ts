// Throwaway SoftHSMv2 tokens for tests: a temporary token directory and SOFTHSM2_CONF per test
// file, tokens made with softhsm2-util. SoftHSM reads its config at C_Initialize, once per process,
// so a test file creates all its tokens before opening the first backend.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const MODULE_CANDIDATES = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so', '/usr/local/lib/softhsm/libsofthsm2.so'];

/** Path of the SoftHSMv2 module, or undefined when softhsm2 is not installed. */
export const softhsmModule: string | undefined = MODULE_CANDIDATES.find((p) => existsSync(p));

/** Why SoftHSM tests skip, or false when they can run. */
export function softhsmSkipReason(): string | false {
  if (!softhsmModule) return 'softhsm2 is not installed (apt-get install softhsm2); CI installs it';
  try {
    execFileSync('softhsm2-util', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'softhsm2-util is not on PATH';
  }
  return false;
}

export const TEST_PIN = '1234';
export const TEST_SO_PIN = '12345678';

/** A temporary SoftHSM installation for one test file. */
export interface SoftHsmFixture {
  module: string;
  dir: string;
  conf: string;
  /** Environment for child processes (the CLI) that must see the same tokens. */
  env: NodeJS.ProcessEnv;
  /** Initialises a token with the given label (in a free slot) and user PIN. */
  addToken(label: string, pin?: string): void;
  /** Removes the token directory. */
  cleanup(): void;
}

/** Creates the token directory and points this process's SOFTHSM2_CONF at it. */
export function createSoftHsm(): SoftHsmFixture {
  if (!softhsmModule) throw new Error('softhsm2 is not installed');
  const dir = mkdtempSync(join(tmpdir(), 'hsmproxy-softhsm-'));
  const tokens = join(dir, 'tokens');
  mkdirSync(tokens);
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  process.env.SOFTHSM2_CONF = conf;
  const env = { SOFTHSM2_CONF: conf };
  return {
    module: softhsmModule,
    dir,
    conf,
    env,
    addToken(label, pin = TEST_PIN) {
      execFileSync('softhsm2-util', ['--init-token', '--free', '--label', label, '--so-pin', TEST_SO_PIN, '--pin', pin], { env: { ...process.env, ...env }, stdio: 'ignore' });
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
