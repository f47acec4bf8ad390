// Loading a PKCS#11 module (.so) once per process and finding a token in it.
// PKCS#11 state (C_Initialize, logins, sessions) is per process, not per handle, so every backend
// on the same module path shares one initialised instance, reference-counted: closing one backend
// must not C_Finalize the module under another.
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import pkcs11js from 'pkcs11js';
import { ModuleLoadError, TokenNotFoundError } from './errors.js';

/** The binding's PKCS11 class instance (pkcs11js). */
export type Pkcs11Api = InstanceType<typeof pkcs11js.PKCS11>;
/** The binding's namespace: constants (CKA_*, CKM_*, CKR_*...) and classes. */
export const ck = pkcs11js;

const ckrNames = new Map<number, string>();
for (const [name, value] of Object.entries(pkcs11js)) {
  if (name.startsWith('CKR_') && typeof value === 'number' && !ckrNames.has(value)) ckrNames.set(value, name);
}

/** The CKR_* name of a PKCS#11 return value, e.g. 0xA0 → "CKR_PIN_INCORRECT". */
export function ckrName(code: number): string {
  return ckrNames.get(code) ?? `CKR_0x${code.toString(16).toUpperCase()}`;
}

/** The PKCS#11 return value carried by an error thrown by the binding, or undefined. */
export function ckrOf(err: unknown): number | undefined {
  return err instanceof pkcs11js.Pkcs11Error ? err.code : undefined;
}

/** One loaded and initialised module, shared by every user of the same path. */
export interface LoadedModule {
  readonly path: string;
  readonly api: Pkcs11Api;
  /** Calls C_Initialize again after someone finalised the module underneath us. */
  reinitialize(): void;
  /** Drops this user's reference; the last one finalises and unloads the module. */
  release(): void;
}

interface Entry { api: Pkcs11Api; refs: number }
const loaded = new Map<string, Entry>();

function initialize(api: Pkcs11Api): void {
  try {
    // OS locking: the binding runs C_Sign etc. on libuv worker threads, concurrently.
    api.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  } catch (err) {
    if (ckrOf(err) !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw err;
  }
}

/** Loads (or shares) the module at `modulePath` and initialises it for multi-threaded use. */
export function loadModule(modulePath: string): LoadedModule {
  const path = resolve(modulePath);
  let entry = loaded.get(path);
  if (!entry) {
    if (!existsSync(path)) throw new ModuleLoadError(path, 'file not found');
    if (!statSync(path).isFile()) throw new ModuleLoadError(path, 'not a file');
    const api = new pkcs11js.PKCS11();
    try {
      api.load(path);
    } catch (err) {
      throw new ModuleLoadError(path, `not a loadable PKCS#11 library (${(err as Error).message})`);
    }
    try {
      initialize(api);
    } catch (err) {
      try { api.close(); } catch { /* already failing; report the first error */ }
      throw new ModuleLoadError(path, `C_Initialize failed (${(err as Error).message})`);
    }
    entry = { api, refs: 0 };
    loaded.set(path, entry);
  }
  entry.refs++;
  const e = entry;
  let released = false;
  return {
    path,
    api: e.api,
    reinitialize: () => initialize(e.api),
    release: () => {
      if (released) return;
      released = true;
      if (--e.refs > 0) return;
      loaded.delete(path);
      try { e.api.C_Finalize(); } catch { /* finalised underneath us already */ }
      try { e.api.close(); } catch { /* nothing left to free */ }
    },
  };
}

/** Which token to use: its label (most common), serial number, or slot id. */
export interface TokenSelector { label?: string; serial?: string; slot?: number }

/** A token found in a slot. */
export interface FoundToken {
  slot: Buffer; slotId: number; label: string; serial: string; manufacturer: string; model: string;
}

const trimPad = (s: string): string => s.replace(/[ \0]+$/, '');

/** The slot id as a number (pkcs11js returns CK_SLOT_ID as a native-endian buffer). */
export function slotNumber(slot: Buffer): number {
  return slot.length >= 8 ? Number(slot.readBigUInt64LE(0)) : slot.readUInt32LE(0);
}

/** Lists the initialised tokens the module can see. */
export function listTokens(api: Pkcs11Api): FoundToken[] {
  const out: FoundToken[] = [];
  for (const slot of api.C_GetSlotList(true)) {
    const info = api.C_GetTokenInfo(slot);
    if ((info.flags & pkcs11js.CKF_TOKEN_INITIALIZED) === 0) continue;
    out.push({
      slot, slotId: slotNumber(slot), label: trimPad(info.label), serial: trimPad(info.serialNumber),
      manufacturer: trimPad(info.manufacturerID), model: trimPad(info.model),
    });
  }
  return out;
}

/** Finds the one token matching `sel`; throws TokenNotFoundError listing what is there. */
export function findToken(api: Pkcs11Api, sel: TokenSelector): FoundToken {
  if (sel.label === undefined && sel.serial === undefined && sel.slot === undefined) {
    throw new TokenNotFoundError('(none named)', listTokens(api).map((t) => t.label));
  }
  const tokens = listTokens(api);
  const match = tokens.find((t) =>
    (sel.label === undefined || t.label === sel.label) &&
    (sel.serial === undefined || t.serial === sel.serial) &&
    (sel.slot === undefined || t.slotId === sel.slot));
  if (!match) {
    const what = [sel.label !== undefined ? `label "${sel.label}"` : '', sel.serial !== undefined ? `serial ${sel.serial}` : '', sel.slot !== undefined ? `slot ${sel.slot}` : ''].filter(Boolean).join(', ');
    throw new TokenNotFoundError(`with ${what}`, tokens.map((t) => t.label));
  }
  return match;
}
