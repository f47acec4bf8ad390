// Test fixture for the simulated HSM device: a fresh HSM in a temp dir, activated (PRECO → CO),
// with helpers to make crypto users. Cheap scrypt so tests stay fast; removed at teardown.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Hsm, type HsmOpenOptions, type Session } from '../../src/hsm/device/index.js';

export const PRECO_PASSWORD = 'one-time-pw';
export const CO_PASSWORD = 'officer-pw1';
export const TEST_SCRYPT_COST = 1024;

/** Something with a teardown hook (a tap Test). */
export interface Teardown { teardown(fn: () => unknown): void }

export interface Fixture {
  hsm: Hsm;
  dir: string;
  co: Session;
  /** Creates a CU (password `${name}-password`) and logs it in. */
  cu(name: string): Promise<Session>;
  opts: HsmOpenOptions;
}

/** A temp dir removed at teardown. */
export async function tempDir(t: Teardown): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'hsmproxy-device-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A fresh, activated HSM (closed at teardown). */
export async function freshHsm(t: Teardown, extra: Partial<HsmOpenOptions> = {}): Promise<Fixture> {
  const dir = await tempDir(t);
  const opts: HsmOpenOptions = { dir, hsmId: 'hsm-test', initialPassword: PRECO_PASSWORD, scryptCost: TEST_SCRYPT_COST, ...extra };
  const hsm = await Hsm.open(opts);
  t.teardown(() => hsm.close());
  const preco = await hsm.login('admin', PRECO_PASSWORD);
  const co = await hsm.changePassword(preco, CO_PASSWORD);
  return {
    hsm, dir, co, opts,
    async cu(name: string) {
      await hsm.createUser(co, name, 'CU', `${name}-password`);
      return hsm.login(name, `${name}-password`);
    },
  };
}
